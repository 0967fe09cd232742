package main

import (
	"bytes"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseWrk(t *testing.T) {
	for _, tc := range []struct {
		file string
		want wrkRun
	}{
		{"wrk-ok.txt", wrkRun{RPS: 38156.38, Requests: 39200}},
		{"wrk-non2xx.txt", wrkRun{RPS: 25805.61, Requests: 28420, Non2xx: 28420}},
	} {
		text, err := os.ReadFile(filepath.Join("testdata", tc.file))
		if err != nil {
			t.Fatal(err)
		}
		got, err := parseWrk(tc.file, text)
		if err != nil || got != tc.want {
			t.Errorf("%s: got %+v, %v; want %+v", tc.file, got, err, tc.want)
		}
	}
	got, err := parseWrk("x", []byte("  2 threads and 64 connections\n  Socket errors: connect 1, read 2, write 3, timeout 4\n  10 requests in 1.00s, 1MB read\nRequests/sec:     10.00\n"))
	if err != nil || got.SockErrs != 10 || got.Requests != 10 {
		t.Errorf("socket errors: got %+v, %v", got, err)
	}
	if _, err := parseWrk("runs/x.txt", []byte("unable to connect to 127.0.0.1:1 Connection refused\n")); err == nil || !strings.Contains(err.Error(), "runs/x.txt") {
		t.Errorf("a failed wrk run: got %v, want an error naming the file", err)
	}
}

func TestParseVegeta(t *testing.T) {
	text, err := os.ReadFile("testdata/vegeta.json")
	if err != nil {
		t.Fatal(err)
	}
	got, err := parseVegeta("vegeta.json", text)
	if err != nil {
		t.Fatal(err)
	}
	if got.Requests != 100 || got.Success != 1 || got.Latencies.P50 <= 0 || got.Latencies.Max < got.Latencies.P99 || got.StatusCodes["200"] != 100 {
		t.Errorf("got %+v", got)
	}
	if _, err := parseVegeta("x.json", []byte(`{"requests":0}`)); err == nil {
		t.Error("a report of no requests: want an error")
	}
}

func TestParseHDR(t *testing.T) {
	f, err := os.Open("testdata/vegeta.hdr")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pts, err := parseHDR(f.Name(), f)
	if err != nil {
		t.Fatal(err)
	}
	if pts[0].Percentile != 0 || pts[len(pts)-1].Percentile != 1 {
		t.Errorf("want rows from percentile 0 to 1, got %v ... %v", pts[0], pts[len(pts)-1])
	}
	for i := 1; i < len(pts); i++ {
		if pts[i].Ms < pts[i-1].Ms {
			t.Fatalf("row %d: latency falls from %v to %v", i, pts[i-1], pts[i])
		}
	}
	if _, err := parseHDR("x.hdr", strings.NewReader("Value(ms) Percentile\n0.1 zero\n")); err == nil || !strings.Contains(err.Error(), "x.hdr:2") {
		t.Errorf("a bad row: got %v, want an error naming x.hdr:2", err)
	}
}

func TestMedianSpread(t *testing.T) {
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median of 3 1 2 = %v", m)
	}
	if m := median([]float64{4, 1, 2, 3}); m != 2.5 {
		t.Errorf("median of 4 1 2 3 = %v", m)
	}
	if s := spread([]float64{15100, 14800, 15612}, thousands); s != "15,100 (14,800–15,612)" {
		t.Errorf("spread = %q", s)
	}
	if s := spread([]float64{1234567}, thousands); s != "1,234,567" {
		t.Errorf("one run: %q", s)
	}
}

// fakeRun lays out what run.sh leaves, from the fixtures: every target the
// same wrk and vegeta run, tokenproxy's samples, and missing headers as given.
func fakeRun(t *testing.T, missing string) string {
	dir := t.TempDir()
	for _, d := range []string{"raw/wrk", "raw/lat"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	wrk, _ := os.ReadFile("testdata/wrk-ok.txt")
	vj, _ := os.ReadFile("testdata/vegeta.json")
	hdr, _ := os.ReadFile("testdata/vegeta.hdr")
	targets := []string{"direct", "tokenproxy", "nginx", "haproxy", "caddy"}
	for _, tg := range targets {
		for _, size := range []string{"1k", "64k"} {
			for _, run := range []string{"1", "2", "3"} {
				os.WriteFile(filepath.Join(dir, "raw/wrk", tg+"_"+size+"_"+run+".txt"), wrk, 0o644)
			}
		}
		os.WriteFile(filepath.Join(dir, "raw/lat", tg+"_1.json"), vj, 0o644)
		os.WriteFile(filepath.Join(dir, "raw/lat", tg+"_1.hdr"), hdr, 0o644)
	}
	os.WriteFile(filepath.Join(dir, "machine.env"), []byte(strings.Join([]string{
		"date=2026-11-30T11:00Z", "command=bench/run.sh", "cores=2", "cpu=AMD EPYC", "targets=" + strings.Join(targets, " "),
		"sizes=1k 64k", "runs=3", "dur=6s", "threads=2", "conns=64", "rate=1000", "lat_dur=10s", "lat_runs=1", "big_mib=100",
		"tp_log=info", "nginx=1.22.1", "haproxy=2.6.12", "caddy=2.6.2", "go=go1.26.0",
		"binary=built from commit abc1234", "fasthttp=v1.78.0"}, "\n")), 0o644)
	samples := strings.Join([]string{
		"proto\ttokenproxy\t-\t-\tHTTP/2",
		"rss_idle_kib\ttokenproxy\t-\t-\t20480",
		"rss_load_kib\ttokenproxy\t1k\t1\t30720",
		"rss_load_kib\ttokenproxy\t64k\t1\t35840",
		"cpu_s_wrk\ttokenproxy\t1k\t1\t1.9",
		"cpu_s_lat\ttokenproxy\t1k\t1\t0.5",
		"wall_s_lat\ttokenproxy\t1k\t1\t1.0",
		"big_down_ok\ttokenproxy\t-\t-\t1",
		"big_down_growth_kib\ttokenproxy\t-\t-\t2048",
		"big_up_ok\ttokenproxy\t-\t-\t1",
		"big_up_growth_kib\ttokenproxy\t-\t-\t1024",
		"missing_total\tupstream\t-\t-\t" + missing,
	}, "\n")
	os.WriteFile(filepath.Join(dir, "samples.tsv"), []byte(samples+"\n"), 0o644)
	return dir
}

func TestRun(t *testing.T) {
	dir := fakeRun(t, "0")
	bm := filepath.Join(dir, "BENCHMARKS.md")
	os.WriteFile(bm, []byte("# Benchmarks\n\nprose\n\n<!-- bench:begin -->\nold results\n<!-- bench:end -->\n\nmore prose\n"), 0o644)
	md, pngFile := filepath.Join(dir, "report.md"), filepath.Join(dir, "latency.png")
	if err := run(dir, md, pngFile, "docs/latency.png", bm); err != nil {
		t.Fatal(err)
	}
	text, _ := os.ReadFile(md)
	for _, want := range []string{
		"| tokenproxy (default config, request log on) | 38,156 (38,156–38,156) | 1.00 |",
		"; tokenproxy built from commit abc1234, its data plane on fasthttp v1.78.0; load average",
		"| 48 µs | 20.0 MiB | 35.0 MiB | HTTP/2 |", // 1.9 s of CPU over 39,200 requests
		"| idle, warm token | 20.0 MiB |",
		"| CPU ≤ 0.05 core per 1,000 req/s | 4.945 | 4.945 | no |", // 0.5 core at 101.1 req/s
		"| RSS idle ≤ 25 MiB | 20.0 MiB | – | yes |",
		"![Latency by percentile at 1,000 req/s, one line per run](docs/latency.png)",
	} {
		if !strings.Contains(string(text), want) {
			t.Errorf("report.md lacks %q:\n%s", want, text)
		}
	}
	f, err := os.Open(pngFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if img, err := png.Decode(f); err != nil || img.Bounds().Dx() < 500 {
		t.Errorf("latency.png: %v", err)
	}
	published, _ := os.ReadFile(bm)
	if !bytes.HasPrefix(published, []byte("# Benchmarks\n\nprose\n\n<!-- bench:begin -->\n")) ||
		!bytes.HasSuffix(published, []byte("<!-- bench:end -->\n\nmore prose\n")) ||
		bytes.Contains(published, []byte("old results")) || !bytes.Contains(published, text) {
		t.Errorf("BENCHMARKS.md after -publish:\n%s", published)
	}
}

// A run in which requests reached the upstream without the headers is
// invalid: the report says so, and run fails.
func TestRunInvalid(t *testing.T) {
	dir := fakeRun(t, "3")
	md := filepath.Join(dir, "report.md")
	err := run(dir, md, "", "", "")
	if err == nil || !strings.Contains(err.Error(), "without the injected headers") {
		t.Fatalf("got %v, want the run refused for missing headers", err)
	}
	text, _ := os.ReadFile(md)
	if !strings.Contains(string(text), "### Problems in this run") {
		t.Errorf("report.md does not list the problem:\n%s", text)
	}
}

func TestJudge(t *testing.T) {
	for _, tc := range []struct {
		median, best bool
		want         string
	}{{true, true, "yes"}, {false, false, "no"}, {true, false, "unclear"}, {false, true, "unclear"}} {
		if got := judge(tc.median, tc.best); !strings.HasPrefix(got, tc.want) {
			t.Errorf("judge(%v, %v) = %q, want %s", tc.median, tc.best, got, tc.want)
		}
	}
}

func TestReplaceMarkedWithoutMarkers(t *testing.T) {
	p := filepath.Join(t.TempDir(), "B.md")
	os.WriteFile(p, []byte("no markers\n"), 0o644)
	if err := replaceMarked(p, "x"); err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("got %v, want an error naming the file", err)
	}
}

// A run of tokenproxy alone names no peers (it read "Peers:  (Debian
// packages)").
func TestRunWithoutPeers(t *testing.T) {
	dir := fakeRun(t, "0")
	env := filepath.Join(dir, "machine.env")
	editEnv(env, func(l string) (string, bool) {
		switch {
		case strings.HasPrefix(l, "targets="):
			return "targets=direct tokenproxy", true
		case strings.HasPrefix(l, "nginx="), strings.HasPrefix(l, "haproxy="), strings.HasPrefix(l, "caddy="):
			return "", false
		}
		return l, true
	})
	md := filepath.Join(dir, "report.md")
	if err := run(dir, md, filepath.Join(dir, "latency.png"), "", ""); err != nil {
		t.Fatal(err)
	}
	text, _ := os.ReadFile(md)
	if bytes.Contains(text, []byte("Peers:")) || !bytes.Contains(text, []byte("\nwrk ")) {
		t.Errorf("report.md names peers, or not wrk:\n%s", text)
	}
}

// A binary without fasthttp in its build info (TOKENPROXY_BIN from before
// the data plane moved to it) is named without a data plane.
func TestRunWithoutFasthttp(t *testing.T) {
	dir := fakeRun(t, "0")
	env := filepath.Join(dir, "machine.env")
	editEnv(env, func(l string) (string, bool) { return l, !strings.HasPrefix(l, "fasthttp=") })
	md := filepath.Join(dir, "report.md")
	if err := run(dir, md, filepath.Join(dir, "latency.png"), "", ""); err != nil {
		t.Fatal(err)
	}
	text, _ := os.ReadFile(md)
	if !bytes.Contains(text, []byte("; tokenproxy built from commit abc1234; load average")) {
		t.Errorf("report.md names a data plane the binary lacks:\n%s", text)
	}
}

// editEnv rewrites a run's machine.env line by line: edit returns a line's
// replacement and whether to keep it.
func editEnv(env string, edit func(line string) (string, bool)) {
	b, _ := os.ReadFile(env)
	var kept []string
	for _, l := range strings.Split(string(b), "\n") {
		if l, ok := edit(l); ok {
			kept = append(kept, l)
		}
	}
	os.WriteFile(env, []byte(strings.Join(kept, "\n")+"\n"), 0o644)
}
