#!/usr/bin/env bash
# tokenproxy side by side with nginx, HAProxy and Caddy on this machine, all on
# 127.0.0.1: one HTTPS upstream (bench/upstream), reached directly (the
# baseline), through tokenproxy (an HGEM upstream with a warm token, so two
# headers are injected: Authorization and hgem-api-key) and through each peer
# configured to inject the same two headers as static values.
#
# Throughput: wrk -t2 -c64, 1 KiB and 64 KiB bodies, median of RUNS runs of
# DUR. Latency: vegeta, open loop at RATE req/s for LAT_DUR, LAT_RUNS times;
# p50/p90/p99/max. Each proxy's CPU (from /proc/<pid>/stat) over the open-loop
# runs, and its RSS idle and under load; tokenproxy's RSS growth while a
# BIG_MIB body goes down and another goes up through it. The upstream counts
# API requests that arrive without the two headers; any such request, any
# non-2xx answer or an incomplete transfer fails the run. Writes report.md and latency.png (by
# bench/report) and the raw outputs to the output directory.
#
# Usage: bench/run.sh [--check-only | --quick] [--no-request-log] [--out DIR] [--publish]
#        bench/run.sh --report DIR [--publish]
set -euo pipefail

# Everything runs inside main, which bash reads whole before it starts: an
# edit to this file during a run does not change the run.
main() {

usage() {
	cat <<'EOF'
usage: bench/run.sh [--check-only | --quick] [--no-request-log] [--out DIR] [--publish]
       bench/run.sh --report DIR [--publish]

  --check-only      start everything, check that every path injects both headers, exit
  --quick           one short run of everything (about a minute): tries the kit, not a measurement
  --no-request-log  tokenproxy at log_level warn (the request log is on, at info, by default)
  --out DIR         where results go (default bench/results/<UTC time>)
  --publish         also write the results into BENCHMARKS.md and docs/benchmarks-latency.png
  --report DIR      measure nothing: write DIR's report (and publish it) again from its raw outputs

Settings (environment): RUNS=3 DUR=6s SIZES="1k 64k" THREADS=2 CONNS=64 RATE=1000
LAT_DUR=10s LAT_RUNS=3 BIG_MIB=100 TARGETS="direct tokenproxy nginx haproxy caddy"
TOKENPROXY_BIN=<a built binary to measure instead of building this checkout>
UPSTREAM_H1=1 offers HTTP/1.1 only (no h2) at the upstream, so every proxy speaks HTTP/1.1 to it.
KEEP=1 keeps the scratch directory (configs, logs) for a look afterwards.
EOF
}

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
check_only='' publish='' out='' quick='' report_only=''
cmdline="bench/run.sh $*"
while [ $# -gt 0 ]; do
	case $1 in
	--check-only) check_only=1 ;;
	--quick) quick=1 ;;
	--no-request-log) TP_LOG=warn ;;
	--out)
		[ $# -ge 2 ] || { echo "bench/run.sh: --out needs a directory" >&2; exit 2; }
		out=$2
		shift
		;;
	--publish) publish=1 ;;
	--report)
		[ $# -ge 2 ] || { echo "bench/run.sh: --report needs a results directory" >&2; exit 2; }
		report_only=$2
		shift
		;;
	-h | --help) usage; exit 0 ;;
	*) echo "bench/run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
	esac
	shift
done
if [ -n "$quick" ]; then
	: "${RUNS:=1}" "${DUR:=2s}" "${LAT_DUR:=2s}" "${LAT_RUNS:=1}" "${BIG_MIB:=16}"
fi
RUNS=${RUNS:-3} DUR=${DUR:-6s} SIZES=${SIZES:-1k 64k} THREADS=${THREADS:-2} CONNS=${CONNS:-64}
RATE=${RATE:-1000} LAT_DUR=${LAT_DUR:-10s} LAT_RUNS=${LAT_RUNS:-3} BIG_MIB=${BIG_MIB:-100}
TARGETS=${TARGETS:-direct tokenproxy nginx haproxy caddy} TP_LOG=${TP_LOG:-info}
read -r -a targets <<<"$TARGETS"
for t in "${targets[@]}"; do
	case $t in direct | tokenproxy | nginx | haproxy | caddy) ;; *)
		echo "bench/run.sh: TARGETS: unknown target $t (known: direct tokenproxy nginx haproxy caddy)" >&2
		exit 2
		;;
	esac
done
has() { case " ${targets[*]} " in *" $1 "*) return 0 ;; esac; return 1; }

step() { printf '\n== %s\n' "$*" >&2; }
die() { echo "bench/run.sh: $*" >&2; exit 1; }

# need installs the Debian packages for missing commands, as scripts/test.sh does.
need() {
	local missing=()
	while [ $# -gt 0 ]; do
		command -v "$1" >/dev/null || missing+=("$2")
		shift 2
	done
	[ ${#missing[@]} -eq 0 ] && return
	step "installing Debian's ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

cache=${TOKENPROXY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tokenproxy}/bench
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tokenproxy-bench.XXXXXX")
pids=()
cleanup() {
	local p
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	if [ -n "${KEEP:-}" ]; then echo "scratch kept in $tmp" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

# report DIR: DIR's report.md and latency.png from its raw outputs, shown;
# with --publish, also BENCHMARKS.md's results and the plot in docs/. Exits
# 1 when the run was invalid (after writing the report, which says why).
report() {
	local status=0
	"$tmp/report" -in "$1" -md "$1/report.md" -png "$1/latency.png" || status=$?
	cat "$1/report.md"
	echo "results in $1" >&2
	if [ -n "$publish" ]; then
		cp "$1/latency.png" "$root/docs/benchmarks-latency.png"
		"$tmp/report" -in "$1" -md "$tmp/published.md" -png-link docs/benchmarks-latency.png -publish "$root/BENCHMARKS.md" || true
		echo "wrote BENCHMARKS.md and docs/benchmarks-latency.png" >&2
	fi
	exit "$status"
}

if [ -n "$report_only" ]; then
	(cd "$here" && go build -o "$tmp/report" ./report)
	report "$(cd "$report_only" && pwd)"
fi

tools=(curl curl)
[ -n "$check_only" ] || tools+=(wrk wrk)
for t in nginx:nginx-light haproxy:haproxy caddy:caddy; do has "${t%%:*}" && tools+=("${t%%:*}" "${t#*:}"); done
[ ${#tools[@]} -eq 0 ] || need "${tools[@]}"

step "building"
(cd "$here" && go build -o "$tmp/upstream" ./upstream && go build -o "$tmp/report" ./report)
if [ -n "${TOKENPROXY_BIN:-}" ]; then
	cp "$TOKENPROXY_BIN" "$tmp/tokenproxy"
	binary="$TOKENPROXY_BIN: $("$tmp/tokenproxy" version | head -n 1)"
else
	(cd "$root" && CGO_ENABLED=0 go build -o "$tmp/tokenproxy" ./cmd/tokenproxy)
	binary="built from commit $(cd "$root" && git describe --always --dirty 2>/dev/null || echo unknown)"
fi
vegeta_version=v12.13.0
vegeta=$cache/vegeta-$vegeta_version/vegeta
if [ -z "$check_only" ] && [ ! -x "$vegeta" ]; then
	step "vegeta $vegeta_version from the Go module proxy, into $(dirname "$vegeta")"
	GOBIN=$(dirname "$vegeta") go install "github.com/tsenart/vegeta/v12@$vegeta_version"
fi

# Ports: free ones, picked at random (other people's benchmarks may run on
# this machine at the same time) below the ephemeral range, where outgoing
# connections would take them.
read -r eph _ </proc/sys/net/ipv4/ip_local_port_range
declare -A port
for name in upstream tokenproxy admin nginx haproxy caddy; do
	while :; do
		p=$((10000 + RANDOM % (eph - 10000)))
		case " ${port[*]} " in *" $p "*) continue ;; esac
		(: <>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue # taken
		port[$name]=$p
		break
	done
done
api_key=bench-api-key-0001
static_token=bench-static-token
up=127.0.0.1:${port[upstream]}
declare -A url=(
	[direct]=https://$up
	[tokenproxy]=http://127.0.0.1:${port[tokenproxy]}/up
	[nginx]=http://127.0.0.1:${port[nginx]}/up
	[haproxy]=http://127.0.0.1:${port[haproxy]}/up
	[caddy]=http://127.0.0.1:${port[caddy]}/up
)
declare -A pid

# start NAME CMD...: runs CMD in the background, its output in $tmp/NAME.log.
start() {
	local name=$1
	shift
	"$@" >"$tmp/$name.log" 2>&1 &
	pids+=($!)
	pid[$name]=$!
}

# wait_up NAME URL [CURL ARGS]: until URL answers at all (the checks below
# judge the answer), for at most 30 s.
wait_up() {
	local name=$1 u=$2 deadline=$((SECONDS + 30))
	shift 2
	until [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" "$u")" != 000 ]; do
		kill -0 "${pid[$name]}" 2>/dev/null || { cat "$tmp/$name.log" >&2; die "$name exited; its log is above"; }
		[ $SECONDS -lt $deadline ] || { cat "$tmp/$name.log" >&2; die "$name did not answer $u within 30 s"; }
		sleep 0.1
	done
}

step "starting the upstream and the proxies"
start upstream "$tmp/upstream" -addr "$up" -ca "$tmp/ca.pem" -api-key "$api_key" -token "$static_token" ${UPSTREAM_H1:+-h1}
wait_up upstream "https://$up/stats" --cacert "$tmp/ca.pem"

if has tokenproxy; then
	printf '{"api_key": "%s", "client_id": "bench-client", "client_secret": "bench-client-secret"}\n' "$api_key" >"$tmp/hgem.json"
	cat >"$tmp/tokenproxy.yaml" <<-EOF
		listen: 127.0.0.1:${port[tokenproxy]}
		admin_listen: 127.0.0.1:${port[admin]}
		log_level: $TP_LOG
		upstreams:
		  up:
		    type: hgem
		    base_url: https://$up
		    ca_file: $tmp/ca.pem
		    credentials: file:$tmp/hgem.json
	EOF
	# The request log goes to a file: a pipe to a collector costs the same
	# write per line.
	start tokenproxy "$tmp/tokenproxy" run --config "$tmp/tokenproxy.yaml"
	wait_up tokenproxy "http://127.0.0.1:${port[admin]}/healthz"
	# A warm token: /readyz is 200 once the upstream holds one.
	deadline=$((SECONDS + 30))
	until curl -sf -o /dev/null "http://127.0.0.1:${port[admin]}/readyz"; do
		[ $SECONDS -lt $deadline ] || { cat "$tmp/tokenproxy.log" >&2; die "tokenproxy held no token within 30 s"; }
		sleep 0.1
	done
fi

if has nginx; then
	mkdir -p "$tmp/nginx"
	cat >"$tmp/nginx.conf" <<-EOF
		worker_processes auto;
		pid $tmp/nginx/nginx.pid;
		error_log $tmp/nginx/error.log warn;
		events { worker_connections 4096; }
		http {
		  access_log off;
		  client_body_temp_path $tmp/nginx/body;
		  proxy_temp_path $tmp/nginx/proxy;
		  upstream api { server $up; keepalive 64; }
		  server {
		    listen 127.0.0.1:${port[nginx]};
		    location /up/ {
		      proxy_pass https://api/;
		      proxy_http_version 1.1;
		      proxy_set_header Connection "";
		      proxy_set_header Host $up;
		      proxy_set_header Authorization "Bearer $static_token";
		      proxy_set_header hgem-api-key "$api_key";
		      proxy_ssl_trusted_certificate $tmp/ca.pem;
		      proxy_ssl_verify on;
		      proxy_ssl_name localhost;
		      proxy_ssl_server_name on;
		      proxy_ssl_session_reuse on;
		      proxy_buffering off;
		      proxy_request_buffering off;
		    }
		  }
		}
	EOF
	start nginx nginx -c "$tmp/nginx.conf" -g 'daemon off;'
	wait_up nginx "${url[nginx]}/p/1k"
fi

if has haproxy; then
	cat >"$tmp/haproxy.cfg" <<-EOF
		global
		  nbthread $(nproc)
		  maxconn 4096
		defaults
		  mode http
		  timeout connect 5s
		  timeout client 30s
		  timeout server 30s
		  http-reuse always
		frontend in
		  bind 127.0.0.1:${port[haproxy]}
		  default_backend api
		backend api
		  http-request set-path "%[path,regsub(^/up/,/)]"
		  http-request set-header Authorization "Bearer $static_token"
		  http-request set-header hgem-api-key "$api_key"
		  server up $up ssl verify required ca-file $tmp/ca.pem sni str(localhost) verifyhost localhost
	EOF
	start haproxy haproxy -f "$tmp/haproxy.cfg" -db
	wait_up haproxy "${url[haproxy]}/p/1k"
fi

if has caddy; then
	cat >"$tmp/Caddyfile" <<-EOF
		{
		  admin off
		  auto_https off
		}
		http://127.0.0.1:${port[caddy]} {
		  handle_path /up/* {
		    reverse_proxy https://$up {
		      header_up Host $up
		      header_up Authorization "Bearer $static_token"
		      header_up hgem-api-key "$api_key"
		      transport http {
		        tls_trusted_ca_certs $tmp/ca.pem
		        tls_server_name localhost
		      }
		    }
		  }
		}
	EOF
	XDG_DATA_HOME=$tmp XDG_CONFIG_HOME=$tmp start caddy caddy run --config "$tmp/Caddyfile" --adapter caddyfile
	wait_up caddy "${url[caddy]}/p/1k"
fi

stat_field() { curl -sf --cacert "$tmp/ca.pem" "https://$up/stats" | sed -E "s/.*\"$1\":([0-9]+).*/\\1/"; }
stat_proto() { curl -sf --cacert "$tmp/ca.pem" "https://$up/stats" | sed -E "s/.*\"HTTP\\/$1\":([0-9]+).*/\\1/"; }
direct_args=(--cacert "$tmp/ca.pem" -H "Authorization: Bearer $static_token" -H "hgem-api-key: $api_key")

step "checking that every path injects both headers"
samples=$tmp/samples.tsv
: >"$samples"
sample() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$samples"; }
bad=''
# The control: a request without the headers must be counted, or the check
# below proves nothing.
before=$(stat_field missing)
code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$tmp/ca.pem" "https://$up/p/1k")
[ "$code" = 401 ] && [ "$(stat_field missing)" = $((before + 1)) ] ||
	die "the upstream did not count a request without the headers (answered $code)"
echo "control: a request without the headers is answered 401 and counted" >&2
for t in "${targets[@]}"; do
	# HTTP/1.1, as wrk and vegeta talk; a caller's own Authorization must
	# be replaced, not passed on.
	args=(--http1.1 -H "Authorization: Bearer caller-own")
	[ "$t" = direct ] && args=(--http1.1 "${direct_args[@]}")
	m0=$(stat_field missing) r0=$(stat_field requests) h2=$(stat_proto 2.0)
	got=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' "${args[@]}" "${url[$t]}/p/1k")
	m1=$(stat_field missing) r1=$(stat_field requests)
	proto=1.1
	[ "$(stat_proto 2.0)" = "$h2" ] || proto=2
	if [ "$got" = "200 1024" ] && [ "$m1" = "$m0" ] && [ "$r1" = $((r0 + 1)) ]; then
		what="injects both headers"
		[ "$t" = direct ] && what="the client sends both headers"
		echo "$t: $what (HTTP/$proto to the upstream)" >&2
	else
		echo "$t: FAILS: answered '$got'; the upstream saw $((r1 - r0)) request(s), $((m1 - m0)) without the headers" >&2
		bad=1
	fi
	sample proto "$t" - - "HTTP/$proto"
done
[ -z "$bad" ] || die "a path under test does not inject the headers (KEEP=1 keeps $tmp for its configs and logs)"
[ -z "$check_only" ] || { echo "check passed" >&2; exit 0; }
missing0=$(stat_field missing)

out=${out:-$here/results/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out/raw/wrk" "$out/raw/lat"
out=$(cd "$out" && pwd)

# The process tree a target runs as (nginx's workers are the master's children).
tree() {
	local p=$1 c
	echo "$p"
	if [ -r "/proc/$p/task/$p/children" ]; then
		for c in $(<"/proc/$p/task/$p/children"); do tree "$c"; done
	fi
}
# rss_kib PID: resident KiB of PID's tree, read with builtins (this runs
# beside the load).
rss_kib() {
	local sum=0 p k v _
	for p in $(tree "$1"); do
		while read -r k v _; do [ "$k" = VmRSS: ] && sum=$((sum + v)); done 2>/dev/null <"/proc/$p/status" || true
	done
	echo "$sum"
}
# cpu_ticks PID: user + system clock ticks of PID's tree.
cpu_ticks() {
	local sum=0 p f
	for p in $(tree "$1"); do
		read -r -a f 2>/dev/null <"/proc/$p/stat" || continue
		# Fields 14 and 15 (utime, stime) counted from 1; comm, field 2, holds
		# no space for these processes.
		sum=$((sum + f[13] + f[14]))
	done
	echo "$sum"
}
hz=$(getconf CLK_TCK)
# peak_rss PID FILE SECONDS: the highest rss_kib, sampled every SECONDS,
# kept in FILE, until killed.
peak_rss() {
	local max=0 v
	echo 0 >"$2"
	while :; do
		v=$(rss_kib "$1")
		[ "$v" -le "$max" ] || { max=$v; echo "$max" >"$2"; }
		sleep "$3"
	done
}
secs() { local ns=$(($(date +%s%N) - $1)); printf '%d.%09d' $((ns / 1000000000)) $((ns % 1000000000)); }
proxy_pid() { [ "$1" = direct ] && return 1; echo "${pid[$1]}"; }

loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)
for t in "${targets[@]}"; do
	p=$(proxy_pid "$t") || continue
	sample rss_idle_kib "$t" - - "$(rss_kib "$p")"
done

step "throughput: wrk -t$THREADS -c$CONNS -d$DUR, ${SIZES// /, } bodies, $RUNS runs"
for run in $(seq 1 "$RUNS"); do
	for size in $SIZES; do
		for t in "${targets[@]}"; do
			args=()
			[ "$t" = direct ] && args=(-H "Authorization: Bearer $static_token" -H "hgem-api-key: $api_key")
			sampler='' c0=''
			if p=$(proxy_pid "$t"); then
				# Every 0.2 s: RSS under a steady load moves slowly, and
				# the sampler's own forks take CPU from the run.
				peak_rss "$p" "$tmp/peak" 0.2 &
				sampler=$!
				c0=$(cpu_ticks "$p")
			fi
			f=$out/raw/wrk/${t}_${size}_$run.txt
			wrk -t"$THREADS" -c"$CONNS" -d"$DUR" "${args[@]}" "${url[$t]}/p/$size" >"$f" 2>&1 || true
			if [ -n "$sampler" ]; then
				sample cpu_s_wrk "$t" "$size" "$run" "$(awk -v t=$(($(cpu_ticks "$p") - c0)) -v hz="$hz" 'BEGIN{print t/hz}')"
				kill "$sampler"
				wait "$sampler" 2>/dev/null || true
				sample rss_load_kib "$t" "$size" "$run" "$(cat "$tmp/peak")"
			fi
			printf '%-10s %-4s run %d: %s req/s\n' "$t" "$size" "$run" "$(awk '/^Requests\/sec/{print $2}' "$f")" >&2
		done
	done
done

step "latency: vegeta, open loop at $RATE req/s for $LAT_DUR, 1 KiB bodies, $LAT_RUNS runs"
# HTTP/1.1 with keep-alive, as wrk and a service's client talk to a sidecar;
# direct too, so that it is the same client. At most CONNS connections: when
# a stall on this shared machine holds answers back, an uncapped vegeta opens
# connections by the hundred, and direct's TLS handshakes then feed the stall
# (seen: direct's p90 at 1.2 s). A request that waits for a connection still
# counts the wait.
attack=(-http2=false -keepalive=true -max-connections="$CONNS")
for run in $(seq 1 "$LAT_RUNS"); do
	for t in "${targets[@]}"; do
		args=()
		[ "$t" = direct ] && args=(-root-certs "$tmp/ca.pem" -header "Authorization: Bearer $static_token" -header "hgem-api-key: $api_key")
		# A second at the rate first, not measured: connections are set up
		# and whatever the previous target left behind (GC, buffers) settles.
		echo "GET ${url[$t]}/p/1k" | "$vegeta" attack -rate="$RATE" -duration=1s "${attack[@]}" "${args[@]}" >/dev/null
		c0='' t0=$(date +%s%N)
		p=$(proxy_pid "$t") && c0=$(cpu_ticks "$p")
		echo "GET ${url[$t]}/p/1k" | "$vegeta" attack -rate="$RATE" -duration="$LAT_DUR" "${attack[@]}" "${args[@]}" >"$out/raw/lat/${t}_$run.bin"
		if [ -n "$c0" ]; then
			sample cpu_s_lat "$t" 1k "$run" "$(awk -v t=$(($(cpu_ticks "$p") - c0)) -v hz="$hz" 'BEGIN{print t/hz}')"
			sample wall_s_lat "$t" 1k "$run" "$(secs "$t0")"
		fi
		"$vegeta" report -type=json <"$out/raw/lat/${t}_$run.bin" >"$out/raw/lat/${t}_$run.json"
		"$vegeta" report -type=hdrplot <"$out/raw/lat/${t}_$run.bin" >"$out/raw/lat/${t}_$run.hdr"
		printf '%-10s run %d: %s\n' "$t" "$run" "$("$vegeta" report <"$out/raw/lat/${t}_$run.bin" | awk '/^Latencies/{print}')" >&2
	done
done

if has tokenproxy; then
	step "tokenproxy's memory while $BIG_MIB MiB go down, then up"
	p=${pid[tokenproxy]}
	n=$((BIG_MIB << 20))
	for dir in down up; do
		before=$(rss_kib "$p")
		echo "$before" >"$tmp/peak"
		peak_rss "$p" "$tmp/peak" 0.05 &
		sampler=$!
		if [ "$dir" = down ]; then
			got=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' "${url[tokenproxy]}/big/$n")
		else
			truncate -s "$n" "$tmp/body" # sparse: reads as zeros, takes no disk
			sunk=$(stat_field sink_bytes)
			got=$(curl -s -o /dev/null -T "$tmp/body" -X POST -w '%{http_code} %{size_upload}' "${url[tokenproxy]}/sink")
			[ "$(stat_field sink_bytes)" = $((sunk + n)) ] || got="$got, but the upstream received $(($(stat_field sink_bytes) - sunk)) bytes"
			rm -f "$tmp/body"
		fi
		kill "$sampler"
		wait "$sampler" 2>/dev/null || true
		echo "$dir: $got; RSS $before KiB before, $(cat "$tmp/peak") KiB at most" >&2
		sample big_"$dir"_ok tokenproxy - - "$([ "$got" = "200 $n" ] && echo 1 || echo 0)"
		sample big_"$dir"_growth_kib tokenproxy - - $(($(cat "$tmp/peak") - before))
	done
	sample log_lines tokenproxy - - "$(wc -l <"$tmp/tokenproxy.log")"
fi
sample missing_total upstream - - "$(($(stat_field missing) - missing0))"

{
	echo "date=$(date -u +%Y-%m-%dT%H:%MZ)"
	echo "command=${cmdline% }"
	echo "settings=RUNS=$RUNS DUR=$DUR SIZES=\"$SIZES\" THREADS=$THREADS CONNS=$CONNS RATE=$RATE LAT_DUR=$LAT_DUR LAT_RUNS=$LAT_RUNS BIG_MIB=$BIG_MIB TP_LOG=$TP_LOG${UPSTREAM_H1:+ UPSTREAM_H1=1}"
	echo "cores=$(nproc)"
	echo "cpu=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)"
	echo "kernel=$(uname -sr)"
	echo "go=$(go version | awk '{print $3}')"
	echo "binary=$binary"
	has nginx && echo "nginx=$(nginx -v 2>&1 | sed 's/.*nginx\///')"
	has haproxy && echo "haproxy=$(haproxy -v | awk 'NR==1{sub(/-.*/, "", $3); print $3}')"
	has caddy && echo "caddy=$(caddy version | awk '{print $1}')"
	# What tokenproxy's data plane runs on, read from the binary measured
	# (TOKENPROXY_BIN may be another revision's): its fasthttp version.
	has tokenproxy && echo "fasthttp=$(go version -m "$tmp/tokenproxy" | awk '$1 == "dep" && $2 == "github.com/valyala/fasthttp" {print $3}')"
	echo "wrk=$(wrk -v 2>&1 | awk 'NR==1{print $2}')"
	echo "vegeta=$vegeta_version"
	echo "loadavg_start=$loadavg_start"
	echo "loadavg=$(cut -d' ' -f1-3 /proc/loadavg)"
	echo "targets=${targets[*]}"
	echo "sizes=$SIZES"
	echo "runs=$RUNS"
	echo "dur=$DUR"
	echo "threads=$THREADS"
	echo "conns=$CONNS"
	echo "rate=$RATE"
	echo "lat_dur=$LAT_DUR"
	echo "lat_runs=$LAT_RUNS"
	echo "big_mib=$BIG_MIB"
	echo "tp_log=$TP_LOG"
	echo "upstream_h1=${UPSTREAM_H1:-}"
} >"$out/machine.env"
cp "$samples" "$out/samples.tsv"

report "$out"
}

main "$@"
