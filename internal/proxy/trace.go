package proxy

import (
	"context"
	"net/http"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Tracing, when on (SetTracer), gives each caller request a server span
// that continues the caller's W3C traceparent, with a child span for each
// wait for a token and a client span for each call to the upstream, whose
// own traceparent is sent on. Attributes hold the route, the path without
// its query, statuses, the error code and the request id: never a header
// value besides that id, a query string, a credential or a token.
//
// Without a tracer the data plane makes no span and leaves a caller's
// traceparent as it came.

// traceContext is the W3C Trace Context propagator (traceparent,
// tracestate).
var traceContext propagation.TraceContext

// SetTracer turns tracing on with tp's tracer; call it before serving.
func (h *Handler) SetTracer(tp trace.TracerProvider) {
	h.tracer = tp.Tracer("github.com/tokenproxy/tokenproxy/internal/proxy")
}

// startSpan starts a request's server span under the caller's trace, if
// it sent one, and returns the request carrying it.
func (h *Handler) startSpan(r *http.Request, x *exchange) *http.Request {
	ctx := traceContext.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	x.tracer = h.tracer
	method := spanMethod(r.Method)
	attrs := []attribute.KeyValue{
		attribute.String("http.request.method", method),
		attribute.String("url.path", logPath(r)),
		attribute.String("tokenproxy.request_id", x.id),
	}
	if method != r.Method {
		attrs = append(attrs, attribute.String("http.request.method_original", r.Method))
	}
	ctx, x.span = h.tracer.Start(ctx, method, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attrs...))
	return r.WithContext(ctx)
}

// spanMethod is the method as OpenTelemetry's HTTP conventions name spans
// by: one of the known methods, or _OTHER, so that a caller inventing
// methods cannot make an unbounded set of span names.
func spanMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return m
	}
	return "_OTHER"
}

// endSpan ends the server span with what the log line says; its name
// becomes "{method} {route}" once the request was routed (OpenTelemetry's
// HTTP conventions).
func (x *exchange) endSpan(status int) {
	if x.span == nil {
		return
	}
	if x.route != nil {
		route := "/" + x.route.Name + "/*"
		x.span.SetName(spanMethod(x.in.Method) + " " + route)
		x.span.SetAttributes(attribute.String("http.route", route), attribute.String("tokenproxy.upstream", x.route.Name))
	}
	x.span.SetAttributes(attribute.Int("http.response.status_code", status))
	if !x.switched {
		x.span.SetAttributes(attribute.Int64("http.response.body.size", x.bytes))
	}
	if x.replayed {
		x.span.SetAttributes(attribute.Bool("tokenproxy.replayed", true))
	}
	if x.errCode != "" {
		x.span.SetAttributes(attribute.String("tokenproxy.error", x.errCode))
	}
	if status >= 500 {
		x.span.SetStatus(codes.Error, strconv.Itoa(status)+" "+x.errCode)
	}
	x.span.End()
}

// childSpan starts a span under the request's; only when tracing is on
// (x.tracer set), so that the attributes are not even built otherwise.
func (x *exchange) childSpan(ctx context.Context, name string, kind trace.SpanKind, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	return x.tracer.Start(ctx, name, trace.WithSpanKind(kind), trace.WithAttributes(attrs...))
}
