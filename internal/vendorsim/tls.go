package vendorsim

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"time"
)

// TLSServer serves a handler over HTTPS on loopback, for `tokenproxy dev`: the proxy talks
// to the vendors over HTTPS only, so the simulators must too.
type TLSServer struct {
	srv   *http.Server
	url   string
	caPEM []byte
	done  chan struct{}
}

// ListenTLS serves h over HTTPS on 127.0.0.1:0 with a freshly generated certificate
// (ECDSA P-256, valid for 127.0.0.1, ::1 and localhost), signed by a CA generated in memory.
func ListenTLS(h http.Handler) (*TLSServer, error) {
	caDER, caKey, err := newCertificate(nil, nil)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("vendorsim: parse CA: %w", err)
	}
	leafDER, leafKey, err := newCertificate(ca, caKey)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("vendorsim: listen: %w", err)
	}
	t := &TLSServer{
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 10 * time.Second,
			TLSConfig: &tls.Config{
				MinVersion: tls.VersionTLS12,
				Certificates: []tls.Certificate{{
					Certificate: [][]byte{leafDER, caDER},
					PrivateKey:  leafKey,
				}},
			},
			// Clients that do not trust the CA are expected in tests; their failed
			// handshakes are not worth a log line.
			ErrorLog: log.New(io.Discard, "", 0),
		},
		url:   "https://" + ln.Addr().String(),
		caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		done:  make(chan struct{}),
	}
	go func() {
		defer close(t.done)
		t.srv.ServeTLS(ln, "", "") // returns ErrServerClosed on Close
	}()
	return t, nil
}

// URL is the server's base URL, https://127.0.0.1:PORT.
func (t *TLSServer) URL() string { return t.url }

// CAPEM is the PEM of the CA that signed the server's certificate, for clients to trust.
func (t *TLSServer) CAPEM() []byte { return append([]byte(nil), t.caPEM...) }

// Close stops the server, drops its connections and waits for it to finish.
func (t *TLSServer) Close() error {
	err := t.srv.Close()
	<-t.done
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// newCertificate makes a CA certificate when parent is nil, else a loopback server
// certificate signed by parent.
func newCertificate(parent *x509.Certificate, parentKey *ecdsa.PrivateKey) ([]byte, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("vendorsim: generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("vendorsim: serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// Backdated a little so a client whose clock is slightly behind still accepts it.
		NotBefore: now.Add(-time.Hour),
		NotAfter:  now.Add(365 * 24 * time.Hour),
	}
	if parent == nil {
		tmpl.Subject = pkix.Name{CommonName: "tokenproxy dev CA"}
		tmpl.IsCA = true
		tmpl.BasicConstraintsValid = true
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
		parent, parentKey = tmpl, key
	} else {
		tmpl.Subject = pkix.Name{CommonName: "localhost"}
		tmpl.DNSNames = []string{"localhost"}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, fmt.Errorf("vendorsim: create certificate: %w", err)
	}
	return der, key, nil
}
