#!/usr/bin/env bash
# Throughput and memory of `grayscope serve` (verification on) under `grayscope loadgen` on this
# machine. Each row runs against a fresh collector; the generator runs on the same machine.
#
#   scripts/bench.sh [SECONDS] [SPANS_PER_REQUEST] [CLIENTS]     (defaults: 10 1000 4)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
spans=${2:-1000}
clients=${3:-4}

cargo build --release --locked --quiet
bin=target/release/grayscope
work=$(mktemp -d)
pid=
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# Starts a collector on OS-chosen ports; sets pid, grpc, http, api.
start() {
    "$bin" serve --otlp-grpc 127.0.0.1:0 --otlp-http 127.0.0.1:0 --http 127.0.0.1:0 --log warn \
        --data "$(mktemp -d -p "$work")" "$@" \
        >"$work/out" 2>"$work/err" &
    pid=$!
    for _ in $(seq 100); do grep -q "metrics on" "$work/out" 2>/dev/null && break; sleep 0.05; done
    line=$(head -n1 "$work/out")
    grpc=$(sed -E 's/.*OTLP\/gRPC on ([^,]+),.*/\1/' <<<"$line")
    http=$(sed -E 's/.*OTLP\/HTTP on ([^,]+),.*/\1/' <<<"$line")
    api=$(sed -E 's/.*metrics on http:\/\/(.+)$/\1/' <<<"$line")
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }
buffered() { curl -s "http://$api/metrics" | awk '/^grayscope_buffered_spans/ {s += $2} END {print s + 0}'; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$pid/status"; }

echo "| protocol | spans/request | clients | spans/s | p50 ms | p99 ms | server CPU s per 1M spans | peak RSS MiB |"
echo "|---|---|---|---|---|---|---|---|"
for proto in grpc http; do
    start
    "$bin" loadgen --protocol "$proto" --grpc "$grpc" --http "$http" --spans-per-request "$spans" \
        --concurrency "$clients" --duration "${secs}s" --server-pid "$pid" >"$work/run"
    stop
    awk -v p="$proto" -v s="$spans" -v c="$clients" '
        /throughput/ { tput = $2; p50 = $6; p99 = $9 }
        /server:/    { cpu = $5; rss = $(NF-1) }
        END { printf "| %s | %s | %s | %d | %s | %s | %s | %s |\n", p, s, c, tput, p50, p99, cpu, rss }' "$work/run"
done

# Memory per buffered span: nothing finalises (long idle time), 2 million spans in.
start --trace-idle 1h --max-buffered-spans 10000000
"$bin" loadgen --protocol http --http "$http" --requests 20 --concurrency 1 >/dev/null
sleep 0.5
r0=$(rss_kib); b0=$(buffered)
"$bin" loadgen --protocol http --http "$http" --requests 1985 --concurrency "$clients" >/dev/null
sleep 1
r1=$(rss_kib); b1=$(buffered)
stop
awk -v r0="$r0" -v r1="$r1" -v b0="$b0" -v b1="$b1" 'BEGIN {
    printf "\nbuffered spans: %d -> %d, RSS %d -> %d KiB: %.1f bytes per buffered span (RSS)\n",
        b0, b1, r0, r1, (r1 - r0) * 1024 / (b1 - b0) }'
