#!/usr/bin/env bash
# Time from start to verdict of `grayscope probe`: 20 requests per stage (canary and stable)
# through the demo mesh, against `serve --demo` (--trace-idle 2s, the default --flush-interval).
#
#   scripts/probe-bench.sh [RUNS] [REQUESTS_PER_STAGE]      (default 5 runs of 20)
#
# Release build; every port chosen by the OS; the demo's own traffic at 1 request/s. Prints each
# run's wall time (the probe's own, from its first request) and the spread.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
requests=${2:-20}
cargo build --release --quiet
bin=target/release/grayscope
work=$(mktemp -d /tmp/grayscope-probe-bench.XXXXXX)
pid=""
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

"$bin" serve --demo --fault none --demo-rate 1 --demo-gateway 127.0.0.1:0 \
    --otlp-grpc 127.0.0.1:0 --otlp-http 127.0.0.1:0 --http 127.0.0.1:0 \
    --data "$work/data" --log warn >"$work/out" &
pid=$!
for _ in $(seq 100); do grep -q "dashboard at" "$work/out" 2>/dev/null && break; sleep 0.1; done
field() { grep -o "$1[^ ,]*" "$work/out" | head -1 | sed "s|$1||"; }
grpc=$(field "OTLP/gRPC on ")
api=$(field "metrics on http://")
gateway=$(grep -o 'gateway    HTTP http://[0-9.:]*' "$work/out" | awk '{print $3}')

times=()
for i in $(seq "$runs"); do
    "$bin" probe --url "$gateway/checkout?user=bench&item=book" --collector "http://$api" \
        --otlp-endpoint "http://$grpc" --stage canary --stage stable --requests "$requests" \
        --expect-services gateway,users,orders,payments,inventory \
        --expect-instance-stage orders=canary --format json >"$work/report.json"
    ms=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["elapsed_ms"])' "$work/report.json")
    echo "run $i: $requests requests per stage, verdict after $ms ms"
    times+=("$ms")
done
printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "min %d ms, median %d ms, max %d ms over %d runs\n", a[1], a[int((NR+1)/2)], a[NR], NR}'
