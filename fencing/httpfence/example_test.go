package httpfence_test

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/etcdlock/etcdlock/fencing"
	"github.com/etcdlock/etcdlock/fencing/httpfence"
)

// A service guards its handler; each client attaches its hold's token (a
// lock.Hold's Token method in a real program). The paused holder, whose
// lock passed to another client, is refused with 409 Conflict; a request
// without a token, with 428 Precondition Required.
func ExampleGuard() {
	var highest fencing.Fence // one replica; a *sqlfence.Store to share it between replicas
	guard := &httpfence.Guard{Store: httpfence.Memory(&highest)}
	srv := httptest.NewServer(guard.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t, _ := httpfence.TokenFrom(r.Context())
		fmt.Fprintf(w, "stored by %d", t.Revision)
	})))
	defer srv.Close()

	paused := fencing.Token{Key: "etcdlock/mutex/orders/694d7a3c1e2f0a11-1", Revision: 17}
	current := fencing.Token{Key: "etcdlock/mutex/orders/694d7a3c1e2f0b42-1", Revision: 23}
	put := func(c *http.Client) {
		resp, err := c.Post(srv.URL, "text/plain", strings.NewReader("order 1"))
		if err != nil {
			log.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		fmt.Printf("%d %s\n", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	put(&http.Client{Transport: &httpfence.Transport{Token: func() fencing.Token { return paused }}})
	put(&http.Client{Transport: &httpfence.Transport{Token: func() fencing.Token { return current }}})
	put(&http.Client{Transport: &httpfence.Transport{Token: func() fencing.Token { return paused }}})
	put(http.DefaultClient)
	// Output:
	// 200 stored by 17
	// 200 stored by 23
	// 409 fencing: stale token 17@etcdlock/mutex/orders/694d7a3c1e2f0a11-1 for "http": highest admitted is 23
	// 428 httpfence: no fencing token
}
