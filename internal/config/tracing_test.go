package config

import (
	"strings"
	"testing"
)

func TestTracingDefaults(t *testing.T) {
	cfg, err := Parse([]byte(minimal + "tracing: {endpoint: \"http://otel-collector:4318\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if tr := cfg.Tracing; tr.SampleRatio != 1 || tr.ServiceName != "tokenproxy" {
		t.Errorf("defaults: sample_ratio %v, service_name %q", tr.SampleRatio, tr.ServiceName)
	}
	// An explicit 0 is kept: follow callers' traces, start none.
	cfg, err = Parse([]byte(minimal + "tracing: {endpoint: \"https://c:4318/v1/traces\", sample_ratio: 0, service_name: edge}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if tr := cfg.Tracing; tr.SampleRatio != 0 || tr.ServiceName != "edge" {
		t.Errorf("explicit: sample_ratio %v, service_name %q", tr.SampleRatio, tr.ServiceName)
	}
	if off, _ := Parse([]byte(minimal)); off.Tracing != nil {
		t.Error("tracing is on without a tracing section")
	}
}

func TestTracingProblems(t *testing.T) {
	for text, want := range map[string]string{
		"tracing: {}":                    "tracing.endpoint: required",
		"tracing: {endpoint: otel:4318}": "tracing.endpoint: must be an http(s) URL",
		"tracing: {endpoint: \"grpc://user:pw@otel:4317\"}":            "tracing.endpoint: must be an http(s) URL",
		"tracing: {endpoint: \"http://user:pw@otel:4318\"}":            "tracing.endpoint: must not carry user info",
		"tracing: {endpoint: \"http://otel:4318/?k=v\"}":               "tracing.endpoint: must not have a query",
		"tracing: {endpoint: \"http://otel:4318\", sample_ratio: 1.5}": "tracing.sample_ratio: must be between 0 and 1",
		"tracing: {endpoint: \"http://otel:4318\", sample_ratio: all}": "tracing.sample_ratio: must be a number",
		"tracing: {endpont: \"http://otel:4318\"}":                     `tracing.endpont: unknown key (line`,
	} {
		got := problems(t, minimal+text+"\n")
		found := false
		for _, g := range got {
			found = found || strings.HasPrefix(g, want)
		}
		if !found {
			t.Errorf("%s: no problem starts with %q:\n%s", text, want, strings.Join(got, "\n"))
		}
		for _, g := range got {
			if strings.Contains(g, "pw@") || strings.Contains(g, ":pw") {
				t.Errorf("a problem shows the URL's password: %s", g)
			}
		}
	}
}
