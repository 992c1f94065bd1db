package embedded

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
)

// ClientCertName is the common name of the client certificate that
// [WithTLS] makes. With authentication on ([WithAuth]) etcd takes a client
// certificate's common name as the user name of requests that carry no
// password token; no user of this name exists, so such requests are denied.
const ClientCertName = "etcdlock-client"

// TLSFiles names the PEM files of a server or cluster started
// [WithTLS]: the certificate authority that signed the server and client
// certificates, and a client certificate and key. The files live in a
// directory removed at Close.
type TLSFiles struct {
	CAFile   string // the CA's certificate: pass to clients as their trusted CA
	CertFile string // a client certificate signed by the CA (common name ClientCertName)
	KeyFile  string // the client certificate's key

	dir    string
	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
}

// ClientConfig returns a client TLS configuration that trusts the CA and
// presents the client certificate.
func (f *TLSFiles) ClientConfig() (*tls.Config, error) {
	return f.ClientConfigFor(f.CertFile, f.KeyFile)
}

// ClientConfigFor returns a client TLS configuration that trusts the CA
// and presents the certificate in certFile (one [TLSFiles.ClientCert]
// made, say), with its key in keyFile.
func (f *TLSFiles) ClientConfigFor(certFile, keyFile string) (*tls.Config, error) {
	info := transport.TLSInfo{CertFile: certFile, KeyFile: keyFile, TrustedCAFile: f.CAFile}
	cfg, err := info.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("integration: client TLS configuration: %w", err)
	}
	return cfg, nil
}

// ClientCert makes another client certificate signed by the CA, with the
// common name cn (under [WithAuth], etcd authenticates a request without a
// password token as the user cn), and returns its certificate and key
// files.
func (f *TLSFiles) ClientCert(cn string) (certFile, keyFile string, err error) {
	base := filepath.Join(f.dir, "client-"+fmt.Sprintf("%x", cn))
	return issue(f.caCert, f.caKey, base, cn, nil, x509.ExtKeyUsageClientAuth)
}

// serverTLSInfo is the TLS configuration of the members' client listeners:
// server certificate, and client certificates required and checked against
// the CA.
func (f *TLSFiles) serverTLSInfo() transport.TLSInfo {
	return transport.TLSInfo{
		CertFile:       filepath.Join(f.dir, "server.pem"),
		KeyFile:        filepath.Join(f.dir, "server-key.pem"),
		TrustedCAFile:  f.CAFile,
		ClientCertAuth: true,
	}
}

// makeTLS makes a CA in a new directory, a server certificate for hosts
// (DNS names or IP addresses) and a client certificate, all ECDSA P-256.
func makeTLS(hosts []string) (*TLSFiles, error) {
	dir, err := os.MkdirTemp("", "etcdlock-tls")
	if err != nil {
		return nil, fmt.Errorf("integration: creating TLS directory: %w", err)
	}
	f, err := writeTLS(dir, hosts)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("integration: making TLS certificates: %w", err)
	}
	return f, nil
}

func writeTLS(dir string, hosts []string) (*TLSFiles, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "etcdlock test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	f := &TLSFiles{CAFile: filepath.Join(dir, "ca.pem"), dir: dir, caCert: caCert, caKey: caKey}
	if err := writePEM(f.CAFile, "CERTIFICATE", der); err != nil {
		return nil, err
	}
	// The server's certificate serves as a client one too: etcd's gateway
	// and proxies dial the server with it.
	if _, _, err := issue(caCert, caKey, filepath.Join(dir, "server"), "etcdlock server", hosts,
		x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth); err != nil {
		return nil, err
	}
	f.CertFile, f.KeyFile, err = issue(caCert, caKey, filepath.Join(dir, "client"), ClientCertName, nil, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// issue writes base+".pem" and base+"-key.pem": a certificate for cn and
// hosts signed by the CA, and its key.
func issue(ca *x509.Certificate, caKey *ecdsa.PrivateKey, base, cn string, hosts []string, usage ...x509.ExtKeyUsage) (string, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return "", "", err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  usage,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return "", "", err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile := base+".pem", base+"-key.pem"
	if err := writePEM(certFile, "CERTIFICATE", der); err != nil {
		return "", "", err
	}
	if err := writePEM(keyFile, "PRIVATE KEY", keyDER); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

// tlsHosts returns the names a server certificate needs: clientv3 checks
// a unix socket's certificate against the socket's file name (etcd.sock,
// m0.sock, ...), and TCP ones against the URL's host.
func tlsHosts(n int, clientURL string) []string {
	hosts := []string{"localhost", "127.0.0.1", "::1", "etcd.sock"}
	for i := range n {
		hosts = append(hosts, fmt.Sprintf("m%d.sock", i))
	}
	if clientURL != "" {
		if u, err := url.Parse(clientURL); err == nil && u.Hostname() != "" {
			hosts = append(hosts, u.Hostname())
		}
	}
	return hosts
}
