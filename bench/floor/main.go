// Command floor answers every request with the same body and does nothing
// else: the least a Go HTTP server spends per request, with no upstream.
//
//	floor -stack nethttp|fasthttp -listen 127.0.0.1:PORT [-size 1024]
package main

import (
	"bytes"
	"flag"
	"log"
	"net/http"
	"strconv"

	"github.com/valyala/fasthttp"
)

func main() {
	stack := flag.String("stack", "nethttp", "the HTTP server: nethttp or fasthttp")
	listen := flag.String("listen", "127.0.0.1:0", "listen address")
	size := flag.Int("size", 1024, "the body's size in bytes")
	flag.Parse()
	body := bytes.Repeat([]byte("x"), *size)
	n := strconv.Itoa(len(body))
	switch *stack {
	case "nethttp":
		log.Fatal(http.ListenAndServe(*listen, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header()["Content-Length"] = []string{n}
			w.Write(body)
		})))
	case "fasthttp":
		log.Fatal(fasthttp.ListenAndServe(*listen, func(ctx *fasthttp.RequestCtx) { ctx.SetBody(body) }))
	default:
		log.Fatalf("floor: -stack %q: want nethttp or fasthttp", *stack)
	}
}
