// Command upstream serves the benchmark's HTTPS API (package
// internal/upstream) on one address, after writing its certificate as a CA
// bundle for the proxies under test. It runs until killed.
//
//	upstream -addr 127.0.0.1:PORT -ca FILE -api-key KEY -token TOKEN [-h1]
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"os"

	"github.com/tokenproxy/tokenproxy/bench/internal/upstream"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	caFile := flag.String("ca", "", "where to write the certificate, PEM (required)")
	apiKey := flag.String("api-key", "", "the hgem-api-key every API request must carry (required)")
	token := flag.String("token", "", "the static bearer token the peers inject (required)")
	h1 := flag.Bool("h1", false, "offer HTTP/1.1 only (no h2 in ALPN)")
	flag.Parse()
	if *caFile == "" || *apiKey == "" || *token == "" {
		fmt.Fprintln(os.Stderr, "upstream: -ca, -api-key and -token are required")
		os.Exit(2)
	}
	cert, pemBytes, err := upstream.Certificate()
	if err != nil {
		log.Fatalf("upstream: certificate: %v", err)
	}
	if err := os.WriteFile(*caFile, pemBytes, 0o644); err != nil {
		log.Fatalf("upstream: %v", err)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("upstream: %v", err)
	}
	api := &upstream.API{APIKey: *apiKey, StaticToken: *token}
	srv := api.Server(cert, *h1)
	log.Printf("upstream: serving https://%s", ln.Addr())
	log.Fatal(srv.ServeTLS(ln, "", ""))
}
