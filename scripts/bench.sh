#!/usr/bin/env bash
# grayscope against a peer collector that does no verification, on this machine, with the same
# pre-built load (`grayscope loadgen`, same seed) for both.
#
#   scripts/bench.sh [SECONDS]          (default 10 s per row)
#
# The peer is rotel (a Rust OTLP collector) with its blackhole exporter, fetched from PyPI at run
# time into a cache directory (ROTEL_VERSION, default below; GRAYSCOPE_BENCH_CACHE to move the cache).
# grayscope runs as users run it: `serve` with verification and the store on, default settings.
#
# COLLECTORS (default "grayscope rotel otelcol otelcol-spanmetrics") may also hold grayscope-tls.
# otelcol is the OpenTelemetry Collector built from its official modules (tests/otelcol/build.sh)
# with the otlp receiver into the nop exporter: the plain cost of a Go collector. otelcol-spanmetrics
# is the same Collector turning spans into metrics by stage (the spanmetrics connector with
# dimensions x-release-stage and deployment.stage, into its Prometheus exporter): the nearest thing
# a user would run instead of grayscope (the servicegraph connector is not served by the module
# proxy here). grayscope-tls: grayscope with TLS on every listener
# and bearer tokens for ingest and reading (certificates made with the openssl command), the load
# generator sending over TLS with the token, for the cost of TLS next to the plain rows.
#
# Per row: spans/s accepted, p50/p99 request latency, server CPU seconds per million spans and peak
# RSS. grayscope's CPU is read once every accepted span has been judged and every finalised trace
# written to the store (buffered spans and store queue both 0), so deferred work is counted; rotel's
# once its batches have gone to the blackhole (1 s after the load ends).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
rotel_version=${ROTEL_VERSION:-0.0.1a15}
cache=${GRAYSCOPE_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/grayscope-bench}
protocols=${PROTOCOLS:-grpc http}
span_counts=${SPANS:-100 1000}
client_counts=${CLIENTS:-4 16}
collectors=${COLLECTORS:-grayscope rotel otelcol otelcol-spanmetrics}

cargo build --release --locked --quiet
bin=target/release/grayscope

rotel=$cache/rotel-$rotel_version/rotel/rotel-agent
if [ ! -x "$rotel" ]; then
    mkdir -p "$cache/dl-$rotel_version"
    python3 -m pip download --quiet --no-deps "rotel==$rotel_version" -d "$cache/dl-$rotel_version"
    python3 -m zipfile -e "$cache"/dl-"$rotel_version"/rotel-*.whl "$cache/rotel-$rotel_version"
    chmod +x "$rotel"
fi

work=$(mktemp -d)
pid=
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on $1" >&2
    exit 1
}
tick=$(getconf CLK_TCK)
cpu_s() { awk -v t="$tick" '{ sub(/.*\) /, ""); print ($12 + $13) / t }' "/proc/$pid/stat"; }
peak_mib() { awk '/^VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$pid/status"; }

# TLS material for grayscope-tls: a CA, a certificate for 127.0.0.1 signed by it, token files.
tls_files() {
    [ -f "$work/tls/ca.pem" ] && return 0
    mkdir -p "$work/tls"
    (
        cd "$work/tls"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
            -subj /CN=bench-ca -keyout ca.key -out ca.pem 2>/dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
            -keyout server.key -out server.csr 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
            -extfile ext -out server.pem 2>/dev/null
        openssl rand -hex 32 >ingest.tokens
        openssl rand -hex 32 >read.tokens
    )
}
start_grayscope() { serve_grayscope; }
start_grayscope-tls() {
    tls_files
    serve_grayscope --tls-cert "$work/tls/server.pem" --tls-key "$work/tls/server.key" \
        --ingest-tokens "$work/tls/ingest.tokens" --read-tokens "$work/tls/read.tokens"
}
serve_grayscope() {
    "$bin" serve --otlp-grpc 127.0.0.1:0 --otlp-http 127.0.0.1:0 --http 127.0.0.1:0 --log warn \
        --data "$(mktemp -d -p "$work")" "$@" >"$work/out" 2>"$work/err" &
    pid=$!
    for _ in $(seq 200); do grep -q "metrics on" "$work/out" 2>/dev/null && break; sleep 0.05; done
    line=$(head -n1 "$work/out")
    grpc=$(sed -E 's/.*OTLP\/gRPC on ([^,]+),.*/\1/' <<<"$line")
    http=$(sed -E 's/.*OTLP\/HTTP on ([^,]+),.*/\1/' <<<"$line")
    api=$(sed -E 's/.*metrics on (https?:\/\/.+)$/\1/' <<<"$line")
}
# Until every accepted span is judged and stored.
drain_grayscope() {
    sleep 1
    for _ in $(seq 600); do
        left=$(curl -s "${curl_auth[@]}" "$api/metrics" | awk '
            /^grayscope_buffered_spans/ || /^grayscope_store_queued_spans/ { s += $2 }
            END { print s + 0 }')
        [ "$left" = 0 ] && return 0
        sleep 0.1
    done
    echo "grayscope did not drain" >&2
}
start_rotel() {
    grpc=127.0.0.1:$(free_port)
    http=127.0.0.1:$(free_port)
    "$rotel" start --exporter blackhole --otlp-grpc-endpoint "$grpc" --otlp-http-endpoint "$http" \
        --pid-file "$work/rotel.pid" >"$work/out" 2>"$work/err" &
    pid=$!
    wait_port "$grpc"
    wait_port "$http"
}
drain_grayscope-tls() {
    curl_auth=(--cacert "$work/tls/ca.pem" -H "Authorization: Bearer $(cat "$work/tls/read.tokens")")
    drain_grayscope
    curl_auth=()
}
curl_auth=()
drain_rotel() { sleep 1; }
otelcol=target/otelcol/grayscope-otelcol
# $1: components besides the receiver; $2: the pipelines.
start_otelcol_with() {
    tests/otelcol/build.sh
    grpc=127.0.0.1:$(free_port)
    http=127.0.0.1:$(free_port)
    {
        printf 'receivers:\n  otlp:\n    protocols:\n'
        printf '      grpc: { endpoint: "%s" }\n      http: { endpoint: "%s" }\n' "$grpc" "$http"
        printf '%s\n' "$1"
        printf 'service:\n  telemetry: { metrics: { level: none } }\n  pipelines:\n%s\n' "$2"
    } >"$work/otelcol.yaml"
    "$otelcol" --config "$work/otelcol.yaml" >"$work/out" 2>"$work/err" &
    pid=$!
    wait_port "$grpc"
    wait_port "$http"
}
start_otelcol() {
    start_otelcol_with 'exporters:
  nop: {}' '    traces: { receivers: [otlp], exporters: [nop] }'
}
start_otelcol-spanmetrics() {
    start_otelcol_with "connectors:
  spanmetrics:
    dimensions: [{ name: x-release-stage }, { name: deployment.stage }]
exporters:
  prometheus: { endpoint: \"127.0.0.1:$(free_port)\" }" '    traces: { receivers: [otlp], exporters: [spanmetrics] }
    metrics: { receivers: [spanmetrics], exporters: [prometheus] }'
}
drain_otelcol() { sleep 1; }
drain_otelcol-spanmetrics() { sleep 1; }
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }

results=$work/results
for proto in $protocols; do
    for spans in $span_counts; do
        for clients in $client_counts; do
            for collector in $collectors; do
                "start_$collector"
                c0=$(cpu_s)
                tls=()
                if [ "$collector" = grayscope-tls ]; then
                    tls=(--tls --ca-file "$work/tls/ca.pem" --token-file "$work/tls/ingest.tokens")
                fi
                "$bin" loadgen --protocol "$proto" --grpc "$grpc" --http "$http" --seed 7 \
                    --spans-per-request "$spans" --concurrency "$clients" --duration "${secs}s" \
                    "${tls[@]}" >"$work/run"
                "drain_$collector"
                c1=$(cpu_s)
                rss=$(peak_mib)
                stop
                awk -v col="$collector" -v p="$proto" -v s="$spans" -v c="$clients" \
                    -v c0="$c0" -v c1="$c1" -v rss="$rss" '
                    /accepted/   { n = $4 }
                    /refused/    { refused = $(NF-4) }
                    /throughput/ { tput = $2; p50 = $6; p99 = $9 }
                    END { printf "%s %s %s %s %d %s %s %.2f %s %d\n", col, p, s, c, tput, p50, p99,
                                 (c1 - c0) / (n / 1e6), rss, refused }' "$work/run" >>"$results"
                echo "  $(tail -n1 "$results")" >&2
            done
        done
    done
done

echo
echo "grayscope $(git rev-parse --short HEAD) vs rotel $rotel_version (blackhole exporter) and the OpenTelemetry Collector v0.161.0 (nop; spanmetrics), ${secs} s per row, $(nproc) cores, load generator on the same machine"
echo
echo "| protocol | spans/req | clients | collector | spans/s | p50 ms | p99 ms | CPU s per 1M spans | peak RSS MiB | refused |"
echo "|---|---|---|---|---|---|---|---|---|---|"
awk '{ printf "| %s | %s | %s | %s | %d | %s | %s | %s | %s | %s |\n", $2, $3, $4, $1, $5, $6, $7, $8, $9, $10 }' "$results"
# Ratios of collector $1 to collector $2, row by row.
ratios() {
    awk -v a="$1" -v b="$2" '
        $1 == a { k = $2 " " $3 " " $4; at[k] = $5; ac[k] = $8; order[++n] = k }
        $1 == b { k = $2 " " $3 " " $4; bt[k] = $5; bc[k] = $8 }
        END {
            for (i = 1; i <= n; i++) {
                k = order[i]; split(k, f, " ")
                if (bt[k] > 0 && bc[k] > 0)
                    printf "| %s | %s | %s | %.2f | %.2f |\n", f[1], f[2], f[3], at[k] / bt[k], ac[k] / bc[k]
            }
        }' "$results"
}
if grep -q '^rotel ' "$results"; then
    echo
    echo "| protocol | spans/req | clients | spans/s grayscope/rotel (>= 1) | CPU per span grayscope/rotel (<= 1) |"
    echo "|---|---|---|---|---|"
    ratios grayscope rotel
fi
if grep -q '^grayscope-tls ' "$results"; then
    echo
    echo "| protocol | spans/req | clients | spans/s TLS+tokens/plain | CPU per span TLS+tokens/plain |"
    echo "|---|---|---|---|---|"
    ratios grayscope-tls grayscope
fi
