// Package tracing owns OpenTelemetry tracing: the tracer provider that the
// config's tracing section asks for, exporting spans over OTLP/HTTP in
// batches, and what a span of tokenproxy may carry. Tracing is off unless
// the section is there; the data plane then makes no span at all.
//
// A span never carries a credential or a token: no header value but the
// request id, no query string (CONTRACT.md §6 holds for spans as for logs).
package tracing

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/tokenproxy/tokenproxy/internal/config"
)

// Provider is a running tracer provider; Shutdown flushes the spans not
// yet sent, within ctx.
type Provider interface {
	trace.TracerProvider
	Shutdown(ctx context.Context) error
}

// Start returns the tracer provider of cfg: spans are sampled by the
// caller's traceparent when it has one, else at cfg.SampleRatio (the W3C
// Trace Context parent-based rule), and sent in batches to cfg.Endpoint.
// version and instance name the service in each span's resource. It does
// no I/O: export failures surface later, through otel's error handler.
func Start(cfg *config.Tracing, version, instance string) (Provider, error) {
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(EndpointURL(cfg.Endpoint)))
	if err != nil {
		return nil, fmt.Errorf("tracing.endpoint: %w", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		attribute.String("service.name", cfg.ServiceName),
		attribute.String("service.version", version),
		attribute.String("service.instance.id", instance)))
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	return sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.SampleRatio))),
	), nil
}

// EndpointURL is the traces URL of endpoint: as written when it has a path,
// else with the OTLP/HTTP traces path, /v1/traces, as a collector's base
// URL (OTEL_EXPORTER_OTLP_ENDPOINT) is read.
func EndpointURL(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil || strings.Trim(u.Path, "/") != "" {
		return endpoint
	}
	u.Path = "/v1/traces"
	return u.String()
}
