package election_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/etcdlock/etcdlock/election"
	"github.com/etcdlock/etcdlock/integration"
)

// A liveness probe (a Kubernetes livenessProbe, say) served from Check:
// 200 while Run's leader work behaves, 503 once it runs on more than the
// tolerance after it should have stopped, so that the supervisor restarts
// the process before the next leader's work overlaps it for long. Check
// does no I/O; give it a tolerance below the probe's period times its
// failure threshold.
func ExampleElection_Check() {
	cli, stop := integration.StartExample()
	defer stop()
	el, err := election.New(cli, "my-controller")
	if err != nil {
		log.Fatal(err)
	}
	defer el.Close()

	healthz := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if err := el.Check(100 * time.Millisecond); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	}))
	defer healthz.Close()
	probe := func() {
		resp, err := http.Get(healthz.URL)
		if err != nil {
			log.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		fmt.Println(resp.StatusCode, strings.SplitN(string(body), "\n", 2)[0])
	}

	ctx, cancel := context.WithCancel(context.Background())
	leading, release := make(chan struct{}), make(chan struct{})
	ran := make(chan error, 1)
	go func() {
		ran <- el.Run(ctx, "replica-1", election.Callbacks{
			Lead: func(ctx context.Context, term *election.Term) error {
				close(leading)
				<-release // a stuck leader: it ignores ctx
				return nil
			},
		})
	}()
	<-leading
	probe()
	cancel()                           // Run's context ends: the work should stop...
	time.Sleep(200 * time.Millisecond) // ...but runs on past the tolerance
	probe()
	close(release)
	if err := <-ran; !errors.Is(err, context.Canceled) {
		log.Fatal(err)
	}
	probe() // Run has returned: nothing left to watch
	// Output:
	// 200 ok
	// 503 election: leader work unhealthy
	// 200 ok
}
