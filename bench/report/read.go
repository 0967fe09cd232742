package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// wrkRun is what one wrk run printed.
type wrkRun struct {
	RPS      float64 // Requests/sec
	Requests int64   // "N requests in ..."
	Non2xx   int64   // "Non-2xx or 3xx responses: N"
	SockErrs int64   // connect + read + write + timeout socket errors
}

var (
	wrkRequests = regexp.MustCompile(`(?m)^\s*(\d+) requests in `)
	wrkRPS      = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)`)
	wrkNon2xx   = regexp.MustCompile(`(?m)^\s*Non-2xx or 3xx responses: (\d+)`)
	wrkSocket   = regexp.MustCompile(`(?m)^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

// parseWrk reads wrk 4's text output; a run without "Requests/sec" (wrk
// failed to connect) is an error naming the file.
func parseWrk(name string, text []byte) (wrkRun, error) {
	var r wrkRun
	m := wrkRPS.FindSubmatch(text)
	if m == nil {
		return r, fmt.Errorf("%s: no Requests/sec line (wrk failed?): %.200q", name, text)
	}
	r.RPS, _ = strconv.ParseFloat(string(m[1]), 64)
	if m := wrkRequests.FindSubmatch(text); m != nil {
		r.Requests, _ = strconv.ParseInt(string(m[1]), 10, 64)
	}
	if m := wrkNon2xx.FindSubmatch(text); m != nil {
		r.Non2xx, _ = strconv.ParseInt(string(m[1]), 10, 64)
	}
	if m := wrkSocket.FindSubmatch(text); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.ParseInt(string(s), 10, 64)
			r.SockErrs += n
		}
	}
	return r, nil
}

// vegetaRun is the part of `vegeta report -type=json` the report uses;
// latencies are in nanoseconds.
type vegetaRun struct {
	Latencies struct {
		P50 float64 `json:"50th"`
		P90 float64 `json:"90th"`
		P99 float64 `json:"99th"`
		Max float64 `json:"max"`
	} `json:"latencies"`
	Requests    int64            `json:"requests"`
	Rate        float64          `json:"rate"`
	Success     float64          `json:"success"`
	StatusCodes map[string]int64 `json:"status_codes"`
	Errors      []string         `json:"errors"`
}

func parseVegeta(name string, text []byte) (vegetaRun, error) {
	var r vegetaRun
	if err := json.Unmarshal(text, &r); err != nil {
		return r, fmt.Errorf("%s: not a vegeta JSON report: %w", name, err)
	}
	if r.Requests == 0 {
		return r, fmt.Errorf("%s: vegeta made no requests", name)
	}
	return r, nil
}

// hdrPoint is one row of `vegeta report -type=hdrplot`: the latency at a
// percentile (a fraction).
type hdrPoint struct{ Ms, Percentile float64 }

// parseHDR reads hdrplot rows ("Value(ms) Percentile TotalCount
// 1/(1-Percentile)"), skipping the header.
func parseHDR(name string, r io.Reader) ([]hdrPoint, error) {
	var pts []hdrPoint
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || strings.HasPrefix(f[0], "Value") {
			continue
		}
		ms, err1 := strconv.ParseFloat(f[0], 64)
		p, err2 := strconv.ParseFloat(f[1], 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("%s:%d: want two numbers, got %q", name, line, sc.Text())
		}
		pts = append(pts, hdrPoint{ms, p})
	}
	if len(pts) == 0 {
		return nil, fmt.Errorf("%s: no hdrplot rows", name)
	}
	return pts, sc.Err()
}

// sample is one line of samples.tsv, written by run.sh: metric, target,
// variant (a body size or "-"), run ("-" when there is one) and value.
type sample struct{ Metric, Target, Variant, Run, Value string }

func parseSamples(name string, r io.Reader) ([]sample, error) {
	var out []sample
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		if sc.Text() == "" {
			continue
		}
		f := strings.Split(sc.Text(), "\t")
		if len(f) != 5 {
			return nil, fmt.Errorf("%s:%d: want 5 tab-separated fields, got %d", name, line, len(f))
		}
		out = append(out, sample{f[0], f[1], f[2], f[3], f[4]})
	}
	return out, sc.Err()
}

// parseEnv reads key=value lines (machine.env).
func parseEnv(r io.Reader) map[string]string {
	env := map[string]string{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			env[k] = v
		}
	}
	return env
}

// results is everything run.sh left in its output directory.
type results struct {
	Env     map[string]string
	Samples []sample
	// Wrk[target][size] holds the runs in run order.
	Wrk map[string]map[string][]wrkRun
	// Lat[target] holds the runs in run order.
	Lat map[string][]vegetaRun
	// HDR[target] holds each run's latency by percentile, in run order.
	HDR map[string][][]hdrPoint
	// Targets in the order of the run's TARGETS.
	Targets []string
	Sizes   []string
}

var (
	wrkName = regexp.MustCompile(`^([a-z]+)_([0-9]+[km]?)_([0-9]+)\.txt$`)
	latName = regexp.MustCompile(`^([a-z]+)_([0-9]+)\.json$`)
)

func load(dir string) (*results, error) {
	res := &results{Wrk: map[string]map[string][]wrkRun{}, Lat: map[string][]vegetaRun{}, HDR: map[string][][]hdrPoint{}}
	f, err := os.Open(filepath.Join(dir, "machine.env"))
	if err != nil {
		return nil, err
	}
	res.Env = parseEnv(f)
	f.Close()
	res.Targets = strings.Fields(res.Env["targets"])
	res.Sizes = strings.Fields(res.Env["sizes"])
	if len(res.Targets) == 0 || len(res.Sizes) == 0 {
		return nil, fmt.Errorf("%s: no targets= or sizes= line", filepath.Join(dir, "machine.env"))
	}
	if f, err = os.Open(filepath.Join(dir, "samples.tsv")); err != nil {
		return nil, err
	}
	res.Samples, err = parseSamples(f.Name(), f)
	f.Close()
	if err != nil {
		return nil, err
	}

	wrk, err := readRuns(filepath.Join(dir, "raw", "wrk", "*.txt"), wrkName, 3,
		func(m []string) [2]string { return [2]string{m[1], m[2]} }, parseWrk)
	if err != nil {
		return nil, err
	}
	for k, runs := range wrk {
		if res.Wrk[k[0]] == nil {
			res.Wrk[k[0]] = map[string][]wrkRun{}
		}
		res.Wrk[k[0]][k[1]] = runs
	}
	if res.Lat, err = readRuns(filepath.Join(dir, "raw", "lat", "*.json"), latName, 2,
		func(m []string) string { return m[1] }, parseVegeta); err != nil {
		return nil, err
	}
	for t, runs := range res.Lat {
		for i := range runs {
			f, err := os.Open(filepath.Join(dir, "raw", "lat", fmt.Sprintf("%s_%d.hdr", t, i+1)))
			if err != nil {
				return nil, err
			}
			pts, err := parseHDR(f.Name(), f)
			f.Close()
			if err != nil {
				return nil, err
			}
			res.HDR[t] = append(res.HDR[t], pts)
		}
	}
	return res, nil
}

// readRuns parses every file matching glob whose name name matches, with
// parse, into runs grouped by key(match), each group in the order of the
// run number in submatch num (numbered from 1; 10 comes after 9, not after
// 1). Other files are left out.
func readRuns[K comparable, T any](glob string, name *regexp.Regexp, num int, key func([]string) K, parse func(string, []byte) (T, error)) (map[K][]T, error) {
	type numbered struct {
		n int
		v T
	}
	files, _ := filepath.Glob(glob)
	found := map[K][]numbered{}
	for _, p := range files {
		m := name.FindStringSubmatch(filepath.Base(p))
		if m == nil {
			continue
		}
		text, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		r, err := parse(p, text)
		if err != nil {
			return nil, err
		}
		n, _ := strconv.Atoi(m[num])
		found[key(m)] = append(found[key(m)], numbered{n, r})
	}
	out := make(map[K][]T, len(found))
	for k, runs := range found {
		sortBy(runs, func(r numbered) int { return r.n })
		for _, r := range runs {
			out[k] = append(out[k], r.v)
		}
	}
	return out, nil
}

// values returns the numeric values of metric for target, optionally one
// variant ("" for any).
func (r *results) values(metric, target, variant string) []float64 {
	var out []float64
	for _, s := range r.Samples {
		if s.Metric == metric && s.Target == target && (variant == "" || s.Variant == variant) {
			if v, err := strconv.ParseFloat(s.Value, 64); err == nil {
				out = append(out, v)
			}
		}
	}
	return out
}

// text returns the first value of metric for target as written.
func (r *results) text(metric, target string) string {
	for _, s := range r.Samples {
		if s.Metric == metric && s.Target == target {
			return s.Value
		}
	}
	return ""
}
