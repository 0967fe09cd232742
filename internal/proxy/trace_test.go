package proxy

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/tokenproxy/tokenproxy/internal/broker"
)

const (
	callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	callerSpan  = "00f067aa0ba902b7"
)

func traced(t *testing.T) (*observed, *tracetest.SpanRecorder) {
	t.Helper()
	o := newObserved(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	o.h.SetTracer(tp)
	return o, rec
}

// send makes a request with the caller's traceparent and credentials of its
// own, which no span may show.
func (o *observed) send(t *testing.T, path string) {
	t.Helper()
	req, _ := http.NewRequest("GET", o.srv.URL+path+"?q=query-canary-0d1e", nil)
	req.Header.Set("Traceparent", "00-"+callerTrace+"-"+callerSpan+"-01")
	req.Header.Set("Authorization", "Bearer caller-canary-99aa")
	req.Header.Set("X-Request-Id", "trace-req-1")
	resp, err := o.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

func TestSpansContinueTheCallersTrace(t *testing.T) {
	o, rec := traced(t)
	o.send(t, "/up/a")
	spans := rec.Ended()
	byName := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		byName[s.Name()] = s
	}
	server, wait, client := byName["GET /up/*"], byName["token wait"], byName["GET"]
	if len(spans) != 3 || server == nil || wait == nil || client == nil {
		t.Fatalf("spans %v, want the request's, a token wait and the upstream call", names(spans))
	}
	if server.SpanKind() != trace.SpanKindServer || client.SpanKind() != trace.SpanKindClient {
		t.Errorf("kinds: server %v, client %v", server.SpanKind(), client.SpanKind())
	}
	if got := server.SpanContext().TraceID().String(); got != callerTrace || server.Parent().SpanID().String() != callerSpan || !server.Parent().IsRemote() {
		t.Errorf("the request's span is in trace %s under %s, want the caller's %s under %s", got, server.Parent().SpanID(), callerTrace, callerSpan)
	}
	for _, s := range []sdktrace.ReadOnlySpan{wait, client} {
		if s.Parent().SpanID() != server.SpanContext().SpanID() {
			t.Errorf("%s is not a child of the request's span", s.Name())
		}
	}
	want := fmt.Sprintf("00-%s-%s-01", callerTrace, client.SpanContext().SpanID())
	o.mu.Lock()
	got := o.parent[len(o.parent)-1]
	o.mu.Unlock()
	if got != want {
		t.Errorf("the upstream got traceparent %q, want %q (the upstream call's span)", got, want)
	}
	attrs := map[string]string{}
	for _, kv := range server.Attributes() {
		attrs[string(kv.Key)] = kv.Value.String()
	}
	for k, v := range map[string]string{"http.route": "/up/*", "tokenproxy.upstream": "up", "url.path": "/up/a",
		"http.response.status_code": "200", "tokenproxy.request_id": "trace-req-1"} {
		if attrs[k] != v {
			t.Errorf("request span %s = %q, want %q", k, attrs[k], v)
		}
	}
	noSecretIn(t, spans)
}

func TestSpansOfAProxyError(t *testing.T) {
	o, rec := traced(t)
	o.tok.fail(&broker.Error{Code: broker.CodeUnavailable, Msg: "up: no token", RetryAfter: time.Second})
	o.send(t, "/up/a")
	o.send(t, "/nosuch/a")
	spans := rec.Ended()
	if n := names(spans); n != "token wait,GET /up/*,GET" {
		t.Fatalf("spans %s, want the two requests' and one token wait", n)
	}
	for _, s := range spans {
		var code string
		for _, kv := range s.Attributes() {
			if kv.Key == "tokenproxy.error" {
				code = kv.Value.AsString()
			}
		}
		if want := map[string]string{"GET /up/*": CodeUnavailable, "token wait": CodeUnavailable, "GET": CodeUnknownUpstream}[s.Name()]; code != want {
			t.Errorf("%s: tokenproxy.error %q, want %q", s.Name(), code, want)
		}
	}
	noSecretIn(t, spans)
}

// Without a tracer, no span is made and the caller's traceparent reaches
// the upstream as it was sent.
func TestNoTracingPassesTraceparentThrough(t *testing.T) {
	o := newObserved(t)
	o.send(t, "/up/a")
	o.mu.Lock()
	defer o.mu.Unlock()
	if got := o.parent[0]; got != "00-"+callerTrace+"-"+callerSpan+"-01" {
		t.Errorf("the upstream got traceparent %q", got)
	}
}

func names(spans []sdktrace.ReadOnlySpan) string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name())
	}
	return strings.Join(out, ",")
}

// noSecretIn fails when any span's name, attribute or status holds a
// credential, a token or the query.
func noSecretIn(t *testing.T, spans []sdktrace.ReadOnlySpan) {
	t.Helper()
	for _, s := range spans {
		text := fmt.Sprint(s.Name(), s.Attributes(), s.Status(), s.Events(), s.Resource().Attributes())
		for _, c := range []string{tokenCanary, keyCanary, "caller-canary", "query-canary"} {
			if strings.Contains(text, c) {
				t.Errorf("span %s holds %s: %s", s.Name(), c, text)
			}
		}
	}
}

// A method the caller invents does not name a span: span names stay a
// small set (OpenTelemetry's HTTP conventions: _OTHER), and the method is
// kept as an attribute.
func TestSpanNamesOfInventedMethods(t *testing.T) {
	o, rec := traced(t)
	req, _ := http.NewRequest("FROBNICATE", o.srv.URL+"/up/a", nil)
	resp, err := o.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	spans := rec.Ended()
	if n := names(spans); n != "token wait,_OTHER,_OTHER /up/*" {
		t.Fatalf("spans %s, want _OTHER names", n)
	}
	for _, s := range spans {
		if s.Name() == "token wait" {
			continue
		}
		var orig string
		for _, kv := range s.Attributes() {
			if kv.Key == "http.request.method_original" {
				orig = kv.Value.AsString()
			}
		}
		if s.SpanKind() == trace.SpanKindServer && orig != "FROBNICATE" {
			t.Errorf("%s: http.request.method_original %q, want FROBNICATE", s.Name(), orig)
		}
	}
}
