package main

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/etcdlock/etcdlock/integration"
)

// secureE2E starts a server of its own that requires TLS with client
// certificates and a login, adds the user "app" (password "app-pw") who
// may use the test's namespace only, and returns the end-to-end
// environment whose children connect as that user with the test's
// certificates, from the environment as etcdctl's settings.
func secureE2E(t *testing.T, user string) *e2eEnv {
	t.Helper()
	needUnix(t)
	srv := integration.NewServer(t, integration.WithTLS(), integration.WithAuth(), integration.WithoutFsync())
	f := srv.TLS()
	e := newE2EOn(t, srv,
		"ETCDCTL_CACERT="+f.CAFile, "ETCDCTL_CERT="+f.CertFile, "ETCDCTL_KEY="+f.KeyFile,
		"ETCDCTL_USER="+user, "ETCDLOCK_PASSWORD=app-pw")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := integration.AddPrefixUser(ctx, e.cli, "app", "app-pw", e.ns); err != nil {
		t.Fatal(err)
	}
	if err := integration.AddPrefixUser(ctx, e.cli, "other", "app-pw", e.ns+"other/"); err != nil {
		t.Fatal(err)
	}
	return e
}

// requireNoLeases fails the test if a lease is left on e's server.
func (e *e2eEnv) requireNoLeases() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := e.cli.Leases(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	if n := len(resp.Leases); n > 0 {
		e.t.Errorf("%d leases left behind", n)
	}
}

// TestCommandsOverTLSAsPrefixUser runs run, elect, status and observe over
// TLS with client certificates, logged in as a user who may read and write
// the namespace only (unixs:// endpoint): each does its work, and nothing
// is left behind.
func TestCommandsOverTLSAsPrefixUser(t *testing.T) {
	t.Parallel()
	e := secureE2E(t, "app")
	if ep := e.srv.Endpoint(); !strings.HasPrefix(ep, "unixs://") {
		t.Fatalf("endpoint %q, want unixs://", ep)
	}
	obs := e.start("o", "observe", "el")
	// run: CMD runs under the lock, with a token.
	e.start("R", "run", "job", "--", "sh", "-c", shStart).expect(0, 30*time.Second)
	// elect: CMD runs as leader, and elect exits with its status, while
	// observe sees the leader.
	el := e.start("E", "elect", "--value", "tls-leader", "el", "--", "sh", "-c", shStart+shGate+"exit 3")
	e.waitEvents(30*time.Second, "start", 2)
	e.waitFor(30*time.Second, "observe to print the leader", func() bool {
		return strings.Contains(obs.outText(), "tls-leader")
	})
	// status: shows the leader.
	st := e.start("S", "status", "el")
	st.expect(0, 30*time.Second)
	if !strings.Contains(st.outText(), "tls-leader") {
		t.Errorf("status output lacks the leader:\n%s", st.outText())
	}
	e.openGate()
	el.expect(3, 30*time.Second)
	obs.signal(syscall.SIGTERM)
	obs.expect(0, 30*time.Second)
	for _, ev := range e.events() {
		tok, _, _ := strings.Cut(ev.more, " ")
		if n, err := strconv.ParseInt(tok, 10, 64); ev.kind == "start" && (err != nil || n <= 0) {
			t.Errorf("event %+v: no fencing token", ev)
		}
	}
	for _, p := range []*proc{obs, el, st} {
		if p.errText() != "" {
			t.Errorf("%s wrote to stderr: %s", p.name, p.errText())
		}
	}
	e.requireEmpty()
	e.requireNoLeases()
}

// TestCommandsWithoutPermission: a user whose role covers another prefix
// gets, from every command, one line naming etcd's refusal and what the
// role needs, exit status 125 (run, elect) or 1, and leaves nothing
// behind.
func TestCommandsWithoutPermission(t *testing.T) {
	t.Parallel()
	e := secureE2E(t, "other")
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"run", "job", "--", "true"}, exitRunFailure},
		{[]string{"elect", "el", "--", "true"}, exitRunFailure},
		{[]string{"status", "job"}, exitFailure},
		{[]string{"observe", "el"}, exitFailure},
	} {
		p := e.start("p", tc.args...)
		p.expect(tc.code, 30*time.Second)
		msg := p.errText()
		if strings.Count(msg, "\n") != 1 || !strings.Contains(msg, `etcd user "other" may not read`) ||
			!strings.Contains(msg, "etcdserver: permission denied") || !strings.Contains(msg, "readwrite") {
			t.Errorf("etcdlock %s: stderr %q, want one line naming the refusal", tc.args[0], msg)
		}
	}
	if n := count(e.events(), "start"); n != 0 {
		t.Errorf("%d CMDs ran", n)
	}
	e.requireEmpty()
	e.requireNoLeases()
}

// TestConnectErrorsNameTheCause: when etcd cannot be used, the one line
// on stderr says why: a refused connection, an unknown host, a CA file
// that is not one or is not etcd's CA, https against a plain server, http
// against a TLS one, a missing client certificate, and authentication on
// with no --user.
func TestConnectErrorsNameTheCause(t *testing.T) {
	needUnix(t)
	plain := e2eServer(t)
	tlsSrv := integration.NewServer(t, integration.WithTLS(), integration.WithAuth(),
		integration.WithClientURL("https://127.0.0.1:0"), integration.WithoutFsync())
	other := integration.NewServer(t, integration.WithTLS(), integration.WithoutFsync())
	authSrv := integration.NewServer(t, integration.WithAuth(), integration.WithoutFsync())
	f, o := tlsSrv.TLS(), other.TLS()
	junk := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(junk, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	certs := []string{"--cert", f.CertFile, "--key", f.KeyFile}
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"refused", []string{"--endpoints", "127.0.0.1:1"}, exitUnreachable,
			"cannot reach etcd at 127.0.0.1:1 within 1s: connection refused by 127.0.0.1:1"},
		{"unknown host", []string{"--endpoints", "no-such-host.invalid:2379"}, exitUnreachable,
			"DNS lookup of no-such-host.invalid failed"},
		{"CA file not a certificate", append([]string{"--endpoints", tlsSrv.Endpoint(), "--cacert", junk}, certs...), exitUsage,
			"--cacert " + junk + " holds no PEM certificate"},
		{"CA file missing", append([]string{"--endpoints", tlsSrv.Endpoint(), "--cacert", junk + ".nope"}, certs...), exitUsage,
			"TLS: cannot read " + junk + ".nope: no such file or directory"},
		{"wrong CA", append([]string{"--endpoints", tlsSrv.Endpoint(), "--cacert", o.CAFile}, certs...), exitUnreachable,
			"TLS handshake failed: certificate signed by unknown authority (--cacert does not hold the CA that signed etcd's certificate)"},
		{"https against plain", []string{"--endpoints", strings.Replace(plain.Endpoint(), "http://", "https://", 1), "--cacert", f.CAFile}, exitUnreachable,
			"TLS handshake failed: the server hung up (a plain etcd there? use an http:// endpoint and no --cacert)"},
		{"http against TLS", []string{"--endpoints", strings.Replace(tlsSrv.Endpoint(), "https://", "http://", 1)}, exitUnreachable,
			"etcd hung up on a plaintext request: it expects TLS (use an https:// endpoint and --cacert)"},
		{"no client certificate", []string{"--endpoints", tlsSrv.Endpoint(), "--cacert", f.CAFile}, exitUnreachable,
			"TLS handshake failed: etcd refused the client certificate (tls: certificate required): pass one its CA signed with --cert and --key"},
		{"auth and no user", []string{"--endpoints", authSrv.Endpoint()}, exitFailure,
			"etcd requires authentication (etcdserver: user name is empty): pass --user NAME"},
		{"auth, certificate and no user", append([]string{"--endpoints", tlsSrv.Endpoint(), "--cacert", f.CAFile}, certs...), exitFailure,
			"no --user given, and the client certificate's common name is no user allowed to; pass --user NAME"},
	} {
		args := append(append([]string{"status", "--dial-timeout", "1s"}, tc.args...), "x")
		code, _, errOut := runCmd(t, time.Minute, args...)
		lines := strings.Count(errOut, "\n")
		if code != tc.code || lines != 1 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%s: exit %d, stderr %q; want %d and one line containing %q", tc.name, code, errOut, tc.code, tc.want)
		}
	}
}

// TestDevTLSAuth starts etcdlock dev with --tls and --auth, and runs a
// command with the settings it prints: it works as root, and without the
// user it is refused with a line saying to pass --user.
func TestDevTLSAuth(t *testing.T) {
	t.Parallel()
	e := newE2E(t)
	p := e.start("d", "dev", "--listen", "127.0.0.1:0", "--tls", "--auth")
	var exports string
	e.waitFor(30*time.Second, "dev's exports", func() bool {
		_, exports, _ = strings.Cut(p.errText(), "export ")
		exports, _, _ = strings.Cut(exports, "\n")
		return strings.Contains(p.errText(), "stop with Ctrl-C")
	})
	vars := map[string]string{}
	for _, kv := range strings.Fields(exports) {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	if !strings.HasPrefix(vars["ETCDLOCK_ENDPOINTS"], "https://127.0.0.1:") || vars["ETCDCTL_CACERT"] == "" ||
		vars["ETCDCTL_USER"] != integration.RootUser {
		t.Fatalf("dev exports %q, want the https endpoint, the certificates and the user", exports)
	}
	conn := []string{"--endpoints", vars["ETCDLOCK_ENDPOINTS"], "--cacert", vars["ETCDCTL_CACERT"],
		"--cert", vars["ETCDCTL_CERT"], "--key", vars["ETCDCTL_KEY"]}
	user := []string{"--user", vars["ETCDCTL_USER"] + ":" + vars["ETCDLOCK_PASSWORD"]}
	q := e.start("x", append(append(append([]string{"run"}, conn...), user...), "j", "--", "sh", "-c", shStart)...)
	q.expect(0, 30*time.Second)
	if count(e.events(), "start") != 1 {
		t.Errorf("run against dev --tls --auth did not run its child: %s", q.errText())
	}
	r := e.start("y", append(append([]string{"run"}, conn...), "j", "--", "sh", "-c", shStart)...)
	r.expect(exitRunFailure, 30*time.Second)
	if msg := r.errText(); strings.Count(msg, "\n") != 1 || !strings.Contains(msg, "pass --user NAME") {
		t.Errorf("run without --user: stderr %q, want one line saying to pass --user", msg)
	}
	p.signal(syscall.SIGINT)
	p.expect(0, 20*time.Second)
}
