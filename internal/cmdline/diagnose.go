package cmdline

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path"
	"strings"
	"sync"
	"syscall"
	"time"
)

// diagnoseTimeout bounds the look at why etcd did not answer, after
// --dial-timeout passed.
const diagnoseTimeout = time.Second

// diagnose tells why no endpoint answered: it dials each, with TLS if the
// client would, and names what failed first (DNS, connection, TLS
// handshake), as "<endpoint>: <cause>" joined by "; ". It returns "" if
// every endpoint can be reached (etcd then did not answer for another
// reason). It takes at most d, dialling the endpoints at once.
func diagnose(ctx context.Context, endpoints []string, tlsCfg *tls.Config, d time.Duration) string {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	causes := make([]string, len(endpoints))
	var wg sync.WaitGroup
	for i, ep := range endpoints {
		wg.Go(func() { causes[i] = diagnoseEndpoint(ctx, ep, tlsCfg) })
	}
	wg.Wait()
	var out []string
	for i, c := range causes {
		if c == "" {
			continue
		}
		if len(endpoints) > 1 {
			c = endpoints[i] + ": " + c
		}
		out = append(out, c)
	}
	return strings.Join(out, "; ")
}

// diagnoseEndpoint returns why ep cannot be reached, or "".
func diagnoseEndpoint(ctx context.Context, ep string, tlsCfg *tls.Config) string {
	network, addr, serverName, secure := splitEndpoint(ep, tlsCfg != nil)
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, network, addr)
	if err != nil {
		return dialCause(err, addr)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if !secure {
		if speaksTLS(conn) {
			return "etcd hung up on a plaintext request: it expects TLS (use an https:// endpoint and --cacert)"
		}
		return ""
	}
	cfg := &tls.Config{}
	if tlsCfg != nil {
		cfg = tlsCfg.Clone()
	}
	cfg.ServerName = serverName
	cfg.NextProtos = []string{"h2"}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return tlsCause(err, tlsCfg != nil)
	}
	// A server that wants a client certificate says so in an alert that
	// TLS 1.3 sends after the handshake: read for it.
	_, _ = tc.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
	_ = tc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := tc.Read(make([]byte, 1)); err != nil && !isTimeout(err) && !errors.Is(err, io.EOF) {
		return tlsCause(err, tlsCfg != nil)
	}
	return ""
}

// splitEndpoint returns what clientv3 dials for ep: the network, the
// address, the name it checks etcd's certificate against, and whether it
// uses TLS (https and unixs always, http never, unix and a bare host:port
// when TLS settings are given).
func splitEndpoint(ep string, withTLS bool) (network, addr, serverName string, secure bool) {
	for _, s := range []string{"unixs://", "unix://", "unixs:", "unix:"} {
		if rest, ok := strings.CutPrefix(ep, s); ok {
			return "unix", rest, path.Base(rest), withTLS || strings.HasPrefix(s, "unixs")
		}
	}
	if u, err := url.Parse(ep); err == nil && (u.Scheme == "http" || u.Scheme == "https") {
		return "tcp", u.Host, u.Hostname(), u.Scheme == "https"
	}
	host, _, err := net.SplitHostPort(ep)
	if err != nil {
		host = ep
	}
	return "tcp", ep, host, withTLS
}

// dialCause names why dialling addr failed.
func dialCause(err error, addr string) string {
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &dnsErr):
		if dnsErr.IsNotFound {
			return fmt.Sprintf("DNS lookup of %s failed: no such host", dnsErr.Name)
		}
		return fmt.Sprintf("DNS lookup of %s failed: %v", dnsErr.Name, dnsErr.Err)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("connection refused by %s (is etcd running and listening there?)", addr)
	case errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOENT):
		return fmt.Sprintf("no socket at %s", addr)
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return fmt.Sprintf("connecting to %s timed out", addr)
	case errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH):
		return fmt.Sprintf("no route to %s", addr)
	}
	return fmt.Sprintf("connecting to %s: %v", addr, err)
}

// tlsCause names why the TLS handshake with etcd failed.
func tlsCause(err error, withTLS bool) string {
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	var record tls.RecordHeaderError
	var alert tls.AlertError
	switch {
	case errors.As(err, &unknown):
		if withTLS {
			return "TLS handshake failed: certificate signed by unknown authority (--cacert does not hold the CA that signed etcd's certificate)"
		}
		return "TLS handshake failed: certificate signed by unknown authority (pass the CA that signed etcd's certificate with --cacert)"
	case errors.As(err, &host):
		return fmt.Sprintf("TLS handshake failed: etcd's certificate is not valid for %q (name the endpoint as its certificate does)", host.Host)
	case errors.As(err, &invalid):
		return "TLS handshake failed: etcd's certificate is invalid: " + invalid.Error()
	case errors.As(err, &record):
		return "TLS handshake failed: etcd does not speak TLS there (use an http:// endpoint and no --cacert)"
	case errors.As(err, &alert) || strings.Contains(err.Error(), "remote error: tls:"):
		msg := err.Error()
		if strings.Contains(msg, "certificate required") || strings.Contains(msg, "bad certificate") ||
			strings.Contains(msg, "unknown certificate authority") {
			return "TLS handshake failed: etcd refused the client certificate (" + strings.TrimPrefix(msg, "remote error: ") + "): pass one its CA signed with --cert and --key"
		}
		return "TLS handshake failed: " + msg
	case errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET):
		return "TLS handshake failed: the server hung up (a plain etcd there? use an http:// endpoint and no --cacert)"
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return "TLS handshake timed out"
	}
	return "TLS handshake failed: " + err.Error()
}

// speaksTLS reports whether the server at the other end of conn answers
// a plaintext HTTP request as a TLS server would: by hanging up without a
// word (etcd's), with a TLS alert record, or with Go's "Client sent an
// HTTP request to an HTTPS server".
func speaksTLS(conn net.Conn) bool {
	if _, err := conn.Write([]byte("GET /version HTTP/1.0\r\n\r\n")); err != nil {
		return false
	}
	buf := make([]byte, 128)
	n, err := io.ReadAtLeast(conn, buf, 1)
	if n == 0 && errors.Is(err, io.EOF) {
		return true // etcd's TLS listener hangs up without a word
	}
	b := buf[:n]
	return (len(b) >= 2 && b[0] == 0x15 && b[1] == 0x03) || strings.Contains(string(b), "HTTPS server")
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
