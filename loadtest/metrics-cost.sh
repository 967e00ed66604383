#!/usr/bin/env bash
# metrics-cost.sh: what Prometheus metrics cost on the request path. Runs
# two dflockd servers on free loopback ports — A with the HTTP side port
# (metrics on) scraped once a second, B without (metrics off) — and compares
# them with `dflockd-loadtest ab` (A B A B …). Knobs: RUNS (5), DURATION (5s),
# WORKERS (100), SCENARIO ("bench"), SWAP=1 (metrics off as A, to rule out
# an order effect). Stops only the processes it started.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
RUNS=${RUNS:-5}
DURATION=${DURATION:-5s}
WORKERS=${WORKERS:-100}
SCENARIO=${SCENARIO:-bench}
mkdir -p bin
$GO build -o bin/dflockd ./cmd/dflockd
$GO build -o bin/dflockd-loadtest ./cmd/dflockd-loadtest
LT=bin/dflockd-loadtest
read -r PA PB PH < <("$LT" freeport 3 | xargs)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
bin/dflockd --port "$PA" --http-addr "127.0.0.1:$PH" >bin/metrics-cost-a.log 2>&1 &
APID=$!
pids+=("$APID")
bin/dflockd --port "$PB" >bin/metrics-cost-b.log 2>&1 &
BPID=$!
pids+=("$BPID")
"$LT" wait --timeout 10s "127.0.0.1:$PA" "127.0.0.1:$PB"
# Scrape A once a second for the whole comparison, as Prometheus would.
(
	while sleep 1; do
		exec 3<>"/dev/tcp/127.0.0.1/$PH" || continue
		printf 'GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
		cat <&3 >/dev/null
		exec 3<&-
	done
) &
pids+=("$!")
on=(--a "127.0.0.1:$PA" --a-name metrics-on --a-pid "$APID")
off=(--b "127.0.0.1:$PB" --b-name metrics-off --b-pid "$BPID")
if [ "${SWAP:-0}" = 1 ]; then
	on=(--b "127.0.0.1:$PA" --b-name metrics-on --b-pid "$APID")
	off=(--a "127.0.0.1:$PB" --a-name metrics-off --a-pid "$BPID")
fi
echo "metrics on (scraped every 1 s): pid $APID    metrics off: pid $BPID"
"$LT" ab "${on[@]}" "${off[@]}" \
	--runs "$RUNS" --label metrics-cost "$SCENARIO" --workers "$WORKERS" --duration "$DURATION" "$@"
