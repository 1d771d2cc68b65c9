#!/usr/bin/env bash
# The dashboard at scale: server time and weight of its pages for a mesh of 200 services and about
# 1,000 calls (`grayscope loadgen --services`), against `serve` as users run it (release build,
# SQLite store, default settings).
#
#   scripts/dashboard-bench.sh [REQUESTS_PER_PAGE]     (default 20)
#
# Per page: the response time on loopback (curl's time_total: server time plus a local round
# trip), min / median / max over the requests, and the bytes sent; then, with chromedriver, the
# first contentful paint of the overview and of a service page (scripts/first-paint.py).
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${1:-20}
cargo build --release --locked --quiet
bin=target/release/grayscope

work=$(mktemp -d /tmp/grayscope-dashboard-bench.XXXXXX)
pid=""
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

"$bin" serve --otlp-grpc 127.0.0.1:0 --otlp-http 127.0.0.1:0 --http 127.0.0.1:0 \
    --trace-idle 1s --data "$work/data" --log warn >"$work/out" &
pid=$!
for _ in $(seq 100); do grep -q "dashboard at" "$work/out" 2>/dev/null && break; sleep 0.1; done
field() { grep -o "$1[^ ,]*" "$work/out" | head -1 | sed "s|$1||"; }
grpc=$(field "OTLP/gRPC on ")
api=$(field "metrics on http://")

"$bin" loadgen --grpc "$grpc" --services 200 --edges 1000 --depth 8 --fault-rate 0.05 \
    --spans-per-request 1000 --templates 16 --requests 32 --concurrency 2 | sed 's/^/  /'
# Until every trace is finalised and stored.
sleep 2
for _ in $(seq 600); do
    left=$(curl -s "http://$api/metrics" | awk '
        /^grayscope_buffered_spans/ || /^grayscope_store_queued_spans/ { s += $2 }
        END { print s + 0 }')
    [ "$left" = 0 ] && break
    sleep 0.1
done
sleep 2
services=$(curl -s "http://$api/api/v1/graph?since=1h" | python3 -c 'import json,sys; g=json.load(sys.stdin); print(len(g["nodes"]), "services,", len(g["edges"]), "calls")')
echo "graph: $services"
service=$(curl -s "http://$api/api/v1/services" | python3 -c 'import json,sys; print([s["name"] for s in json.load(sys.stdin)["services"] if len(s["instances"]) > 1][0])')

measure() {
    local name=$1 path=$2 times=() bytes=0
    for _ in $(seq "$requests"); do
        read -r t b < <(curl -s -o /dev/null -w '%{time_total} %{size_download}\n' "http://$api$path")
        times+=("$t")
        bytes=$b
    done
    printf '%s\n' "${times[@]}" | sort -n | awk -v name="$name" -v bytes="$bytes" \
        '{a[NR]=$1*1000} END {printf "%-28s min %6.1f ms, median %6.1f ms, max %6.1f ms; %d KiB\n", name, a[1], a[int((NR+1)/2)], a[NR], bytes/1024}'
}
measure "overview (broken part)" "/?window=1h"
measure "overview by group" "/?window=1h&view=groups"
measure "overview, whole graph" "/?window=1h&view=all"
measure "service page ($service)" "/services/$service?window=1h"
measure "service page, depth 2" "/services/$service?window=1h&depth=2"
measure "service API" "/api/v1/services/$service?since=1h"
# Time to first paint in headless Chromium, when chromedriver is here (Debian's chromium-driver).
if command -v chromedriver >/dev/null; then
    python3 scripts/first-paint.py "http://$api/?window=1h" "http://$api/services/$service?window=1h"
fi
