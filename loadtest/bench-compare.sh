#!/usr/bin/env bash
# bench-compare: dflockd against the ceiling server (a no-logic responder of
# the same request/response shape), every scenario, A/B-alternated rounds,
# then one table of ratios. Everything runs on loopback and stops by itself;
# the two servers are stopped by PID on exit.
#
# Environment (defaults in brackets):
#   GO [go]                 Go command
#   BENCH_OUT [bin/bench-compare]   where logs, JSON and HTML reports go
#   BENCH_RUNS [5]          A/B rounds per scenario (per-round CPU ratios
#                           on the shared 2-core machine spread ±10-15%)
#   BENCH_DURATION [2s]     measured time of the timed scenarios
#   BENCH_CONNS [19000]     connections of the conns scenario (see below)
#   BENCH_WAITERS [10000]   waiters of the waiters scenario
#   BENCH_B_BIN             compare against another server binary taking
#                           dflockd's --host/--port flags instead of the
#                           ceiling (e.g. another build of dflockd)
#
# Open files: this machine's hard limit is 20,000 per process. Each server
# raises its soft limit to the hard limit itself, and so does the load
# generator, so 19,000 connections fit on both sides with room to spare
# (dflockd keeps 64 descriptors in reserve, plus two per event loop). The generator binds its
# connections to 127.0.0.1, 127.0.0.2, … (8,000 per source address here) to
# show the spread that larger runs need once one address runs out of ports.
set -euo pipefail

cd "$(dirname "$0")/.."
GO=${GO:-go}
OUT=${BENCH_OUT:-bin/bench-compare}
RUNS=${BENCH_RUNS:-5}
DUR=${BENCH_DURATION:-2s}
CONNS=${BENCH_CONNS:-19000}
WAITERS=${BENCH_WAITERS:-10000}

mkdir -p "$OUT" bin
echo "building bin/dflockd and bin/dflockd-loadtest"
"$GO" build -o bin/dflockd ./cmd/dflockd
"$GO" build -o bin/dflockd-loadtest ./cmd/dflockd-loadtest
LT=bin/dflockd-loadtest

# Raise our soft open-file limit so that the children inherit it.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

pids=()
stop_servers() {
	local p
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	pids=()
}
trap stop_servers EXIT
trap 'exit 130' INT TERM

read -r PA PB < <("$LT" freeport 2 | xargs)
A=127.0.0.1:$PA
B=127.0.0.1:$PB
if [[ -n "${BENCH_B_BIN:-}" ]]; then
	BNAME=$(basename "$BENCH_B_BIN")
else
	BNAME=ceiling
fi

# start_servers starts dflockd and B on their ports (fresh processes: the
# memory figures are growth over a fresh server's footprint).
start_servers() {
	bin/dflockd --host 127.0.0.1 --port "$PA" --shutdown-timeout 1 >>"$OUT/dflockd.log" 2>&1 &
	APID=$!
	pids+=("$APID")
	if [[ -n "${BENCH_B_BIN:-}" ]]; then
		"$BENCH_B_BIN" --host 127.0.0.1 --port "$PB" >>"$OUT/b.log" 2>&1 &
	else
		"$LT" ceiling --host 127.0.0.1 --port "$PB" >>"$OUT/ceiling.log" 2>&1 &
	fi
	BPID=$!
	pids+=("$BPID")
	"$LT" wait --timeout 10s "$A" "$B"
	echo "A = dflockd  $A (pid $APID)    B = $BNAME  $B (pid $BPID)    rounds: $RUNS, order A B A B …"
	echo
}
: >"$OUT/dflockd.log"
start_servers

files=()
ab() {
	local label=$1
	shift
	echo "== $label: $*"
	"$LT" ab --a "$A" --a-name dflockd --a-pid "$APID" --b "$B" --b-name "$BNAME" --b-pid "$BPID" \
		--runs "$RUNS" --label "$label" --json-file "$OUT/$label.json" --report "$OUT/$label.html" "$@" |
		tee "$OUT/$label.txt"
	files+=("$OUT/$label.json")
	echo
}

start=$SECONDS
# conns first, on fresh servers: its RSS-per-connection figure is round 1's
# growth (later rounds reuse memory the first left behind). The spread
# waiters next, on restarted servers, for the same reason (RSS per parked
# waiter, round 1).
ab "conns-$CONNS" conns --conns "$CONNS" --per-source 8000 --hold 1s
stop_servers
start_servers
ab "waiters-spread-$WAITERS" waiters --waiters "$WAITERS" --wait-timeout 2 --spread 1s --handoffs 20
ab "waiters-at-once-$WAITERS" waiters --waiters "$WAITERS" --wait-timeout 2 --handoffs -1
ab bench-1 bench --workers 1 --duration "$DUR"
ab bench-10 bench --workers 10 --duration "$DUR"
ab bench-100 bench --workers 100 --duration "$DUR"
ab bench-1000 bench --workers 1000 --duration "$DUR"
ab contended contended --workers 50 --duration "$DUR"
ab pipeline pipeline --connections 10 --depth 32 --duration "$DUR"
ab rate-5k rate --rate 5000 --connections 4 --duration "$DUR"

echo "== summary (medians over $RUNS rounds; A/B = dflockd / $BNAME; took $((SECONDS - start))s)"
"$LT" summary "${files[@]}" | tee "$OUT/summary.txt"
echo
# Allocations per request, from the in-process benchmark (server and
# generator in one process; the generator allocates nothing per request).
echo "== allocations per request (go test -bench BenchmarkInProcessServer)"
"$GO" test -run '^$' -bench 'BenchmarkInProcessServer' -benchtime 20000x ./loadtest | tee "$OUT/allocs.txt"
echo
echo "== targets (README, Benchmarks; the A side, dflockd)"
status=0
if [[ -z "${BENCH_B_BIN:-}" ]]; then
	"$LT" targets --gobench "$OUT/allocs.txt" "${files[@]}" | tee "$OUT/targets.txt" || status=$?
else
	echo "(skipped: the targets are ratios against the ceiling)"
fi
echo
echo "reports: $OUT/*.html, JSON: $OUT/*.json, server logs: $OUT/*.log"
exit "$status"
