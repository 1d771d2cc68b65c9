#!/usr/bin/env bash
# CPU per span of grayscope behind the OpenTelemetry Collector's load balancer, against one
# instance fed directly, and the Collector's own CPU per span: the cost of the extra hop.
#
#   scripts/scaleout-bench.sh [SECONDS] [SPANS_PER_SECOND]     (default 20 s at 60000 spans/s)
#
# Release build; a throwaway PostgreSQL (scripts/postgres.sh) for the three instances; the same
# paced load (`grayscope loadgen --rate`) for both setups. CPU is user + system time from /proc,
# read after the load and the trace idle time, so deferred work (finalising, writing) counts.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
rate=${2:-60000}
cargo build --release --quiet
tests/otelcol/build.sh
bin=target/release/grayscope
col=target/otelcol/grayscope-otelcol
work=$(mktemp -d /tmp/grayscope-scaleout.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    scripts/postgres.sh stop "$work/pg" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

cpu() { # user+system seconds of a pid
    awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"
}
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pgcpu() { # user+system seconds of the PostgreSQL server and its backends
    local pm; pm=$(head -1 "$work/pg/data/postmaster.pid")
    local t; t=$(cpu "$pm")
    for c in $(ps -o pid= --ppid "$pm"); do t=$(echo "$t + $(cpu "$c" 2>/dev/null || echo 0)" | bc); done
    echo "$t"
}
accepted() { # spans accepted, from /metrics at $1
    curl -s "http://$1/metrics" | awk '/^grayscope_receiver_accepted_spans_total/ {s += $2} END {print s + 0}'
}
args=(--trace-idle 2s --log warn)

admin=$(scripts/postgres.sh start "$work/pg")
db="${admin%/*}/scaleout"
psql -q "$admin" -c "CREATE DATABASE scaleout"

# Three instances on PostgreSQL behind the Collector.
backends=()
apis=()
gpids=()
for i in 1 2 3; do
    g=$(port); h=$(port)
    "$bin" serve --data "$db" --otlp-grpc "127.0.0.1:$g" --otlp-http 127.0.0.1:0 --http "127.0.0.1:$h" "${args[@]}" >/dev/null &
    pids+=($!); gpids+=($!)
    backends+=("127.0.0.1:$g"); apis+=("127.0.0.1:$h")
done
cp=$(port)
cat >"$work/otelcol.yaml" <<YAML
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:$cp
exporters:
  load_balancing:
    routing_key: traceID
    protocol:
      otlp:
        tls:
          insecure: true
    resolver:
      static:
        hostnames: [$(IFS=,; echo "${backends[*]}")]
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [load_balancing]
YAML
"$col" --config "$work/otelcol.yaml" 2>"$work/otelcol.log" &
pids+=($!); colpid=$!
sleep 3
before=0; for p in "${gpids[@]}"; do before=$(echo "$before + $(cpu "$p")" | bc); done
colbefore=$(cpu "$colpid")
pgbefore=$(pgcpu)
"$bin" loadgen --protocol grpc --grpc "127.0.0.1:$cp" --duration "${secs}s" --rate "$rate" --spans-per-request 990 >"$work/lg-cluster.txt"
sleep 5
after=0; for p in "${gpids[@]}"; do after=$(echo "$after + $(cpu "$p")" | bc); done
colafter=$(cpu "$colpid")
pgafter=$(pgcpu)
spans=0; for a in "${apis[@]}"; do spans=$((spans + $(accepted "$a"))); done
echo "three instances behind the Collector: $spans spans accepted"
echo "  grayscope CPU s per million spans: $(echo "scale=3; ($after - $before) * 1000000 / $spans" | bc) (three instances together)"
echo "  PostgreSQL CPU s per million spans: $(echo "scale=3; ($pgafter - $pgbefore) * 1000000 / $spans" | bc)"
echo "  Collector CPU s per million spans: $(echo "scale=3; ($colafter - $colbefore) * 1000000 / $spans" | bc)"

# One instance fed directly, same load (SQLite).
g=$(port); h=$(port)
"$bin" serve --data "$work/single" --otlp-grpc "127.0.0.1:$g" --otlp-http 127.0.0.1:0 --http "127.0.0.1:$h" "${args[@]}" >/dev/null &
pids+=($!); spid=$!
sleep 2
before=$(cpu "$spid")
"$bin" loadgen --protocol grpc --grpc "127.0.0.1:$g" --duration "${secs}s" --rate "$rate" --spans-per-request 990 >"$work/lg-single.txt"
sleep 5
after=$(cpu "$spid")
spans=$(accepted "127.0.0.1:$h")
echo "one instance fed directly: $spans spans accepted"
echo "  grayscope CPU s per million spans: $(echo "scale=3; ($after - $before) * 1000000 / $spans" | bc)"
