#!/usr/bin/env bash
# Builds the OpenTelemetry Collector of the scale-out test (tests/scaleout.rs) into
# target/otelcol/grayscope-otelcol, once: it is rebuilt only when main.go, go.mod or go.sum change.
# Modules and build cache live under target/go, so a clean clone downloads them once.
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)
out=$root/target/otelcol/grayscope-otelcol
stamp=$root/target/otelcol/sources.sha256
sum=$(cat main.go go.mod go.sum | sha256sum | cut -d' ' -f1)
if [ -x "$out" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sum" ]; then
    exit 0
fi
if ! command -v go >/dev/null 2>&1; then
    echo "otelcol: Go is not installed; the scale-out test needs it to build the Collector" >&2
    exit 1
fi
mkdir -p "$root/target/otelcol"
export GOMODCACHE=$root/target/go/mod GOCACHE=$root/target/go/cache GOFLAGS=-mod=readonly
echo "otelcol: building the OpenTelemetry Collector (first time: a few minutes)" >&2
go build -trimpath -o "$out.tmp" .
mv "$out.tmp" "$out"
echo "$sum" >"$stamp"
