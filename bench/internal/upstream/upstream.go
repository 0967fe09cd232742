// Package upstream is the HTTPS API that every path under test reaches: an
// HGEM-shaped token endpoint, payloads of fixed sizes, a large download and an
// upload sink. It counts the API requests that arrive without the two headers
// an HGEM upstream needs (Authorization: Bearer ..., hgem-api-key), so that a
// proxy that does not inject them is caught rather than measured.
package upstream

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Certificate makes a self-signed certificate for 127.0.0.1 and localhost,
// valid for a day, and returns it with its PEM form (the CA bundle a proxy
// under test is given).
func Certificate() (tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "tokenproxy bench upstream"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// Stats is what /stats answers: API requests (payloads, downloads, uploads)
// counted since start. Missing counts those that lacked an injected header;
// they were answered 401.
type Stats struct {
	Requests    int64            `json:"requests"`
	Missing     int64            `json:"missing"`
	Tokens      int64            `json:"tokens"`
	Connections int64            `json:"connections"`
	SinkBytes   int64            `json:"sink_bytes"`
	ByProto     map[string]int64 `json:"by_proto"`
}

// API serves the routes. Every API request must carry APIKey as hgem-api-key
// and, as its bearer token, StaticToken (what the peers inject) or a token
// this API minted (what tokenproxy injects): a caller's own Authorization
// passed on unchanged does not count as injected.
type API struct {
	APIKey, StaticToken string

	requests, missing, tokens, conns, sink atomic.Int64
	h1, h2                                 atomic.Int64
	payloads                               sync.Map // size in bytes -> []byte
}

// Handler routes:
//
//	POST /connect/token   an RFC 6749 token answer (a day's lifetime)
//	GET  /p/{size}        a body of size bytes ("1k", "64k" or a number)
//	GET  /big/{bytes}     a body of that many bytes, streamed
//	POST /sink            reads the body, answers its length
//	GET  /stats           Stats as JSON
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /connect/token", a.token)
	mux.HandleFunc("GET /p/{size}", a.api(a.payload))
	mux.HandleFunc("GET /big/{bytes}", a.api(a.big))
	mux.HandleFunc("POST /sink", a.api(a.sinkBody))
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(a.Stats())
	})
	return mux
}

// Stats reads the counters.
func (a *API) Stats() Stats {
	return Stats{
		Requests: a.requests.Load(), Missing: a.missing.Load(), Tokens: a.tokens.Load(),
		Connections: a.conns.Load(), SinkBytes: a.sink.Load(),
		ByProto: map[string]int64{"HTTP/1.1": a.h1.Load(), "HTTP/2.0": a.h2.Load()},
	}
}

// Server returns an HTTPS server for the handler with cert; h1only leaves
// HTTP/2 out of ALPN (nginx and HAProxy speak HTTP/1.1 to upstreams,
// tokenproxy and Caddy take HTTP/2 when offered).
func (a *API) Server(cert tls.Certificate, h1only bool) *http.Server {
	srv := &http.Server{
		Handler:   a.Handler(),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				a.conns.Add(1)
			}
		},
		ReadHeaderTimeout: 10 * time.Second,
	}
	if h1only {
		srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
		srv.TLSConfig.NextProtos = []string{"http/1.1"}
	}
	return srv
}

func (a *API) token(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("hgem-api-key") != a.APIKey {
		http.Error(w, `{"error":"invalid_client"}`, http.StatusUnauthorized)
		return
	}
	n := a.tokens.Add(1)
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"access_token":"%s%d","token_type":"Bearer","expires_in":86400}`, tokenPrefix, n)
}

// api counts a request and refuses it, 401, unless it carries both headers.
func (a *API) api(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		a.requests.Add(1)
		if r.ProtoMajor == 2 {
			a.h2.Add(1)
		} else {
			a.h1.Add(1)
		}
		if !a.injected(r.Header) {
			a.missing.Add(1)
			http.Error(w, "missing injected headers", http.StatusUnauthorized)
			return
		}
		next(w, r)
	}
}

func (a *API) injected(h http.Header) bool {
	if len(h.Values("Authorization")) != 1 || len(h.Values("hgem-api-key")) != 1 || h.Get("hgem-api-key") != a.APIKey {
		return false
	}
	bearer, ok := strings.CutPrefix(h.Get("Authorization"), "Bearer ")
	if !ok {
		return false
	}
	if bearer == a.StaticToken {
		return true
	}
	n, ok := strings.CutPrefix(bearer, tokenPrefix)
	if !ok {
		return false
	}
	i, err := strconv.ParseInt(n, 10, 64)
	return err == nil && i >= 1 && i <= a.tokens.Load()
}

func (a *API) payload(w http.ResponseWriter, r *http.Request) {
	n, err := ParseSize(r.PathValue("size"))
	if err != nil || n > 16<<20 {
		http.Error(w, "bad size", http.StatusBadRequest)
		return
	}
	b, ok := a.payloads.Load(n)
	if !ok {
		b, _ = a.payloads.LoadOrStore(n, filler(int(n)))
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	w.Write(b.([]byte))
}

const tokenPrefix = "minted-"

var chunk = filler(64 << 10)

func (a *API) big(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.ParseInt(r.PathValue("bytes"), 10, 64)
	if err != nil || n < 0 {
		http.Error(w, "bad length", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	for n > 0 {
		m := min(n, int64(len(chunk)))
		if _, err := w.Write(chunk[:m]); err != nil {
			return
		}
		n -= m
	}
}

func (a *API) sinkBody(w http.ResponseWriter, r *http.Request) {
	n, err := io.Copy(io.Discard, r.Body)
	a.sink.Add(n)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	fmt.Fprintf(w, "%d\n", n)
}

// ParseSize reads "1k" (KiB), "64k", "1m" (MiB) or a plain byte count.
func ParseSize(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "k"):
		mult, s = 1<<10, strings.TrimSuffix(s, "k")
	case strings.HasSuffix(s, "m"):
		mult, s = 1<<20, strings.TrimSuffix(s, "m")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("size %q: want a byte count, or a number followed by k or m", s)
	}
	return n * mult, nil
}

func filler(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}
