package vendorsim

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func trustingClient(t *testing.T, caPEM []byte) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("CAPEM holds no certificate")
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func TestListenTLS(t *testing.T) {
	sim, err := New(HGEM, demoCreds(HGEM))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ListenTLS(sim)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	defer sim.Close()
	if !strings.HasPrefix(srv.URL(), "https://127.0.0.1:") {
		t.Errorf("URL = %q", srv.URL())
	}
	client := trustingClient(t, srv.CAPEM())

	// Both names the certificate is valid for.
	port := strings.TrimPrefix(srv.URL(), "https://127.0.0.1:")
	for _, base := range []string{srv.URL(), "https://localhost:" + port} {
		if base != srv.URL() && !localhostResolves() {
			continue
		}
		a := do(t, client, goodTokenReq(HGEM, demoCreds(HGEM)).build(t, base, sim.TokenPath()))
		if a.status != 200 {
			t.Errorf("%s: token %d %s", base, a.status, a.body)
		}
	}

	resp, err := client.Do(goodTokenReq(HGEM, demoCreds(HGEM)).build(t, srv.URL(), sim.TokenPath()))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	leaf := resp.TLS.PeerCertificates[0]
	key, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || key.Curve != elliptic.P256() || len(leaf.IPAddresses) != 2 || !leaf.IPAddresses[1].Equal(net.IPv6loopback) {
		t.Errorf("leaf certificate: key %T, IPs %v, names %v", leaf.PublicKey, leaf.IPAddresses, leaf.DNSNames)
	}
	block, _ := pem.Decode(srv.CAPEM())
	if ca, err := x509.ParseCertificate(block.Bytes); err != nil || !ca.IsCA {
		t.Errorf("CA certificate: %v", err)
	}

	// A client that does not trust the CA is refused.
	_, err = http.Get(srv.URL() + "/api/visits")
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("untrusting client: %v, want an unknown authority error", err)
	}

	// A truncated answer is a read error over HTTP/2 as well.
	sim.SetTokenFault(&Fault{Truncate: true})
	resp, err = client.Do(goodTokenReq(HGEM, demoCreds(HGEM)).build(t, srv.URL(), sim.TokenPath()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(resp.Body); err == nil || resp.ProtoMajor != 2 {
		t.Errorf("truncated over %s: read error %v", resp.Proto, err)
	}
	resp.Body.Close()

	if err := srv.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := client.Get(srv.URL()); err == nil {
		t.Error("server still answers after Close")
	}
}

// localhostResolves reports whether "localhost" resolves here, so the test does not
// depend on a resolver quirk.
func localhostResolves() bool {
	addrs, err := net.LookupHost("localhost")
	return err == nil && len(addrs) > 0
}
