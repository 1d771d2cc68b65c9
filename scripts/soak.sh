#!/usr/bin/env bash
# A soak: `grayscope serve` (release, default settings) under steady paced load for MINUTES, with
# its resident memory sampled every 10 s. Prints the curve and what was accepted and refused.
#
#   scripts/soak.sh [MINUTES] [SPANS_PER_SECOND] [PROTOCOL]     (defaults: 10 350000 http)
#   SERVE_ARGS="--trace-idle 5s" scripts/soak.sh                 (more `serve` flags)
#
# The default rate is half of what one collector takes on a 2-core machine with the load generator
# beside it (scripts/bench.sh); memory should rise while the first traces fill the buffers (one
# --trace-idle) and then stay flat.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-10}
rate=${2:-350000}
proto=${3:-http}

cargo build --release --locked --quiet
bin=target/release/grayscope
work=$(mktemp -d)
pid=
sampler=
cleanup() {
    if [ -n "$sampler" ]; then kill "$sampler" 2>/dev/null || true; fi
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

"$bin" serve --otlp-grpc 127.0.0.1:0 --otlp-http 127.0.0.1:0 --http 127.0.0.1:0 --log warn \
    --data "$work/data" ${SERVE_ARGS:-} >"$work/out" 2>"$work/err" &
pid=$!
for _ in $(seq 200); do grep -q "metrics on" "$work/out" 2>/dev/null && break; sleep 0.05; done
line=$(head -n1 "$work/out")
grpc=$(sed -E 's/.*OTLP\/gRPC on ([^,]+),.*/\1/' <<<"$line")
http=$(sed -E 's/.*OTLP\/HTTP on ([^,]+),.*/\1/' <<<"$line")
api=$(sed -E 's/.*metrics on http:\/\/(.+)$/\1/' <<<"$line")

(
    start=$(date +%s)
    while kill -0 "$pid" 2>/dev/null; do
        sleep 10
        rss=$(awk '/^VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$pid/status")
        buffered=$(curl -s "http://$api/metrics" | awk '/^grayscope_buffered_spans/ { s += $2 } END { print s + 0 }')
        echo "$(( $(date +%s) - start )) $rss $buffered"
    done
) >"$work/samples" &
sampler=$!

"$bin" loadgen --protocol "$proto" --grpc "$grpc" --http "$http" --rate "$rate" \
    --duration "${minutes}m" --concurrency 4 --server-pid "$pid" | tee "$work/run"
kill "$sampler" 2>/dev/null || true
sampler=

echo
echo "| s | RSS MiB | buffered spans |"
echo "|---|---|---|"
awk '{ printf "| %s | %s | %s |\n", $1, $2, $3 }' "$work/samples"
awk 'NR == 1 { first = $2 } { last = $2 } NR > 6 { if (min == "" || $2 < min) min = $2; if ($2 > max) max = $2 }
     END { printf "\nRSS: %s MiB at 10 s, %s MiB at the end; after the first minute between %s and %s MiB\n", first, last, min, max }' \
    "$work/samples"
