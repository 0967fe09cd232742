package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

func sortBy[T any](s []T, key func(T) int) {
	slices.SortStableFunc(s, func(a, b T) int { return key(a) - key(b) })
}

// median of xs (the mean of the middle two for an even count); NaN for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// spread formats a median with the lowest and highest run in brackets
// (nothing in brackets for one run).
func spread(xs []float64, f func(float64) string) string {
	if len(xs) == 0 {
		return "–"
	}
	if len(xs) == 1 {
		return f(xs[0])
	}
	return fmt.Sprintf("%s (%s–%s)", f(median(xs)), f(slices.Min(xs)), f(slices.Max(xs)))
}

// thousands writes n rounded to a whole number with comma separators.
func thousands(x float64) string {
	s := fmt.Sprintf("%.0f", x)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 && s[i-1] != '-' {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func ms(x float64) string { return fmt.Sprintf("%.2f", x) }

func signedMs(x float64) string {
	if math.IsNaN(x) {
		return "–"
	}
	return fmt.Sprintf("%+.2f ms", x)
}

func mib(kib float64) string {
	if math.IsNaN(kib) {
		return "–"
	}
	return fmt.Sprintf("%.1f MiB", kib/1024)
}

func ratio(a, b float64) string {
	if math.IsNaN(a) || math.IsNaN(b) || b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", a/b)
}

// label is a target's row name.
func label(t string, env map[string]string) string {
	switch t {
	case "direct":
		return "direct to the upstream (the client speaks TLS)"
	case "tokenproxy":
		log := "request log on"
		if env["tp_log"] != "info" {
			log = "request log off (log_level " + env["tp_log"] + ")"
		}
		return "tokenproxy (default config, " + log + ")"
	}
	if v := env[t]; v != "" {
		return t + " " + v
	}
	return t
}

// sizeLabel turns run.sh's "1k" into "1 KiB".
func sizeLabel(s string) string {
	switch {
	case strings.HasSuffix(s, "k"):
		return strings.TrimSuffix(s, "k") + " KiB"
	case strings.HasSuffix(s, "m"):
		return strings.TrimSuffix(s, "m") + " MiB"
	}
	return s + " B"
}

func (r *results) rps(t, size string) []float64 {
	var out []float64
	for _, w := range r.Wrk[t][size] {
		out = append(out, w.RPS)
	}
	return out
}

func (r *results) latency(t string, pick func(vegetaRun) float64) []float64 {
	var out []float64
	for _, v := range r.Lat[t] {
		out = append(out, pick(v)/1e6)
	}
	return out
}

var (
	p50 = func(v vegetaRun) float64 { return v.Latencies.P50 }
	p90 = func(v vegetaRun) float64 { return v.Latencies.P90 }
	p99 = func(v vegetaRun) float64 { return v.Latencies.P99 }
	pmx = func(v vegetaRun) float64 { return v.Latencies.Max }
)

// coresPerKRPS is, per open-loop run, the CPU a target's processes used
// divided by the wall time and by the rate in thousands of requests per
// second.
func (r *results) coresPerKRPS(t string) []float64 {
	cpu, wall := r.values("cpu_s_lat", t, ""), r.values("wall_s_lat", t, "")
	var out []float64
	for i := range min(len(cpu), len(wall), len(r.Lat[t])) {
		if wall[i] > 0 && r.Lat[t][i].Rate > 0 {
			out = append(out, cpu[i]/wall[i]/(r.Lat[t][i].Rate/1000))
		}
	}
	return out
}

// cpuPerRequest is, per wrk run of size, the CPU microseconds a target's
// processes used per request answered.
func (r *results) cpuPerRequest(t, size string) []float64 {
	cpu := r.values("cpu_s_wrk", t, size)
	var out []float64
	for i := range min(len(cpu), len(r.Wrk[t][size])) {
		if n := r.Wrk[t][size][i].Requests; n > 0 {
			out = append(out, cpu[i]/float64(n)*1e6)
		}
	}
	return out
}

// markdown writes the results section: the machine and command, the
// throughput and latency tables, tokenproxy's memory, and the goals of
// issue 12 against what was measured.
func (r *results) markdown(pngLink string) string {
	var b strings.Builder
	e := r.Env
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	// fasthttp= is the version in the measured binary's build info: what
	// its data plane serves on (none in a binary from before the move).
	dataPlane := ""
	if v := e["fasthttp"]; v != "" {
		dataPlane = ", its data plane on fasthttp " + v
	}
	w("Measured %s on %s cores (%s), %s, %s; tokenproxy %s%s; load average %s at the start, %s at the end.\n\n",
		e["date"], e["cores"], e["cpu"], e["kernel"], e["go"], e["binary"], dataPlane, e["loadavg_start"], e["loadavg"])
	w("```sh\n%s\n# %s\n```\n\n", e["command"], e["settings"])
	var peers []string
	for _, t := range []string{"nginx", "haproxy", "caddy"} {
		if e[t] != "" {
			peers = append(peers, t+" "+e[t])
		}
	}
	if len(peers) > 0 {
		w("Peers: %s (Debian packages); ", strings.Join(peers, ", "))
	}
	w("wrk %s, vegeta %s.\n\n", e["wrk"], e["vegeta"])

	// Throughput.
	w("### Throughput\n\nwrk -t%s -c%s, each run %s; median of %s runs (lowest–highest). ×nginx is the ratio of medians.\n\n",
		e["threads"], e["conns"], e["dur"], e["runs"])
	w("| path |")
	for _, s := range r.Sizes {
		w(" %s (req/s) | ×nginx |", sizeLabel(s))
	}
	w(" CPU per request, %s | RSS idle | RSS under load | to the upstream |\n|---|", sizeLabel(r.Sizes[0]))
	for range r.Sizes {
		w("---:|---:|")
	}
	w("---:|---:|---:|---|\n")
	for _, t := range r.Targets {
		w("| %s |", label(t, e))
		for _, s := range r.Sizes {
			w(" %s | %s |", spread(r.rps(t, s), thousands), ratio(median(r.rps(t, s)), median(r.rps("nginx", s))))
		}
		cpu, idle, rss := "–", "–", "–"
		if t != "direct" {
			cpu = spread(r.cpuPerRequest(t, r.Sizes[0]), func(x float64) string { return fmt.Sprintf("%.0f µs", x) })
			idle = mib(maxOf(r.values("rss_idle_kib", t, "")))
			rss = mib(maxOf(r.values("rss_load_kib", t, "")))
		}
		w(" %s | %s | %s | %s |\n", cpu, idle, rss, r.text("proto", t))
	}
	w("\nCPU per request is the user and system time of the proxy's processes (nginx: master and workers) during the runs, over the requests wrk counted; RSS is the highest resident size sampled every 0.2 s during the runs, all sizes.\n\n")

	// Latency.
	w("### Latency at %s req/s, open loop\n\nvegeta, %s bodies over HTTP/1.1 keep-alive, at most %s connections, each run %s after a second not counted; for each percentile the median of %s runs (lowest–highest), in milliseconds. Added: the path's median minus direct's.\n\n",
		thousands(rate(r)), sizeLabel(r.Sizes[0]), e["conns"], e["lat_dur"], e["lat_runs"])
	w("| path | p50 | p90 | p99 | max | added p50 | added p99 | CPU, cores per 1,000 req/s |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
	d50, d99 := median(r.latency("direct", p50)), median(r.latency("direct", p99))
	for _, t := range r.Targets {
		a50, a99 := "–", "–"
		if t != "direct" {
			a50 = signedMs(median(r.latency(t, p50)) - d50)
			a99 = signedMs(median(r.latency(t, p99)) - d99)
		}
		cpu := "–"
		if t != "direct" {
			cpu = spread(r.coresPerKRPS(t), func(x float64) string { return fmt.Sprintf("%.3f", x) })
		}
		w("| %s | %s | %s | %s | %s | %s | %s | %s |\n", label(t, e),
			spread(r.latency(t, p50), ms), spread(r.latency(t, p90), ms), spread(r.latency(t, p99), ms), spread(r.latency(t, pmx), ms),
			a50, a99, cpu)
	}
	if pngLink != "" {
		w("\n![Latency by percentile at %s req/s, one line per run](%s)\n", thousands(rate(r)), pngLink)
	}

	// tokenproxy's memory.
	if slices.Contains(r.Targets, "tokenproxy") {
		w("\n### tokenproxy's memory\n\n| when | RSS |\n|---|---:|\n")
		w("| idle, warm token | %s |\n", mib(maxOf(r.values("rss_idle_kib", "tokenproxy", ""))))
		w("| under the %s-connection load (highest) | %s |\n", e["conns"], mib(maxOf(r.values("rss_load_kib", "tokenproxy", ""))))
		w("| growth while %s MiB go down (GET) | %s |\n", e["big_mib"], mib(maxOf(r.values("big_down_growth_kib", "tokenproxy", ""))))
		w("| growth while %s MiB go up (POST) | %s |\n", e["big_mib"], mib(maxOf(r.values("big_up_growth_kib", "tokenproxy", ""))))
		w("\n### Against the goals of issue 12\n\nOn the medians, and on the best runs (the highest throughput, the lowest latency and CPU: the runs a stall disturbed least). A goal is judged only where both agree.\n\n| goal | median | best run | met |\n|---|---|---|---|\n")
		for _, g := range r.goals() {
			w("| %s | %s | %s | %s |\n", g.goal, g.median, g.best, g.met)
		}
	}
	return b.String()
}

func rate(r *results) float64 {
	var x float64
	fmt.Sscan(r.Env["rate"], &x)
	return x
}

func maxOf(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	return slices.Max(xs)
}

type goal struct {
	goal, median, best string
	met                string
}

// judge says whether a goal is met by the medians and by the best runs
// alike; when they disagree, a stall on the shared machine decides, and the
// run cannot say.
func judge(median, best bool) string {
	switch {
	case median && best:
		return "yes"
	case !median && !best:
		return "no"
	}
	return "unclear: the median and the best run disagree"
}

// goals compares tokenproxy with the goals of issue 12, on the medians and
// on the best runs (the least disturbed: the highest throughput, the lowest
// latency and CPU). MB is read as MiB.
func (r *results) goals() []goal {
	var gs []goal
	for _, s := range r.Sizes {
		tp := r.rps("tokenproxy", s)
		for _, peer := range []struct {
			name string
			want float64
		}{{"nginx", 0.8}, {"caddy", 2}} {
			if !slices.Contains(r.Targets, peer.name) {
				continue
			}
			m := median(tp) / median(r.rps(peer.name, s))
			b := maxOf(tp) / maxOf(r.rps(peer.name, s))
			gs = append(gs, goal{fmt.Sprintf("throughput, %s: ≥ %g× %s", sizeLabel(s), peer.want, peer.name),
				fmt.Sprintf("%.2f×", m), fmt.Sprintf("%.2f×", b), judge(m >= peer.want, b >= peer.want)})
		}
	}
	if slices.Contains(r.Targets, "direct") {
		for _, pc := range []struct {
			name string
			pick func(vegetaRun) float64
			want float64
		}{{"p50", p50, 0.15}, {"p99", p99, 1}} {
			tp, d := r.latency("tokenproxy", pc.pick), r.latency("direct", pc.pick)
			m, b := median(tp)-median(d), minOf(tp)-minOf(d)
			met := judge(m <= pc.want, b <= pc.want)
			if m < 0 || b < 0 {
				// A proxy is never faster than the call it makes: direct's
				// runs were disturbed more than the proxy's.
				met = "unclear: less than direct, so direct's runs were disturbed"
			}
			gs = append(gs, goal{fmt.Sprintf("added %s at %s req/s ≤ %g ms", pc.name, thousands(rate(r)), pc.want),
				signedMs(m), signedMs(b), met})
		}
	}
	cpu := r.coresPerKRPS("tokenproxy")
	gs = append(gs, goal{"CPU ≤ 0.05 core per 1,000 req/s", fmt.Sprintf("%.3f", median(cpu)), fmt.Sprintf("%.3f", minOf(cpu)),
		judge(median(cpu) <= 0.05, minOf(cpu) <= 0.05)})
	// One value each: the highest sample is what a memory limit meets.
	idle, load := maxOf(r.values("rss_idle_kib", "tokenproxy", "")), maxOf(r.values("rss_load_kib", "tokenproxy", ""))
	growth := math.Max(maxOf(r.values("big_down_growth_kib", "tokenproxy", "")), maxOf(r.values("big_up_growth_kib", "tokenproxy", "")))
	for _, g := range []struct {
		goal string
		kib  float64
		ok   bool
	}{
		{"RSS idle ≤ 25 MiB", idle, idle <= 25<<10},
		{"RSS under load ≤ 40 MiB", load, load <= 40<<10},
		{fmt.Sprintf("growth with %s MiB either way < 10 MiB", r.Env["big_mib"]), growth, growth < 10<<10},
	} {
		gs = append(gs, goal{g.goal, mib(g.kib), "–", judge(g.ok, g.ok)})
	}
	return gs
}

func minOf(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	return slices.Min(xs)
}

// problems lists what makes the run invalid: requests that reached the
// upstream without the headers, answers other than 2xx, failed transfers.
func (r *results) problems() []string {
	var out []string
	if n := r.values("missing_total", "upstream", ""); len(n) == 0 || n[0] != 0 {
		out = append(out, fmt.Sprintf("the upstream counted %v API requests without the injected headers", n))
	}
	for _, t := range r.Targets {
		for _, s := range r.Sizes {
			for i, w := range r.Wrk[t][s] {
				if w.Non2xx > 0 {
					out = append(out, fmt.Sprintf("%s, %s, wrk run %d: %d answers not 2xx or 3xx", t, s, i+1, w.Non2xx))
				}
			}
			if len(r.Wrk[t][s]) == 0 {
				out = append(out, fmt.Sprintf("%s, %s: no wrk runs", t, s))
			}
		}
		for i, v := range r.Lat[t] {
			if v.Success < 1 {
				out = append(out, fmt.Sprintf("%s, vegeta run %d: success %.4f, status codes %v, errors %q", t, i+1, v.Success, v.StatusCodes, v.Errors))
			}
		}
		if len(r.Lat[t]) == 0 {
			out = append(out, fmt.Sprintf("%s: no vegeta runs", t))
		}
	}
	if slices.Contains(r.Targets, "tokenproxy") {
		for _, dir := range []string{"down", "up"} {
			if ok := r.values("big_"+dir+"_ok", "tokenproxy", ""); len(ok) == 0 || ok[0] != 1 {
				out = append(out, fmt.Sprintf("the %s MiB transfer %s through tokenproxy did not complete", r.Env["big_mib"], dir))
			}
		}
	}
	return out
}

// notes lists what a reader should know but does not invalidate the run:
// wrk's socket errors (timeouts under saturation).
func (r *results) notes() []string {
	var out []string
	for _, t := range r.Targets {
		for _, s := range r.Sizes {
			var n int64
			for _, w := range r.Wrk[t][s] {
				n += w.SockErrs
			}
			if n > 0 {
				out = append(out, fmt.Sprintf("%s, %s: %d wrk socket errors over all runs", t, s, n))
			}
		}
	}
	return out
}
