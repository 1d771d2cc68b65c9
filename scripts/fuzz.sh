#!/usr/bin/env bash
# Fuzzes OTLP protobuf and OTLP/JSON decoding through verification, and the in-place protobuf
# decoder against prost (fuzz/fuzz_targets), each for SECONDS, from a seed corpus written from the test suite's requests. Prints each target's runs.
#
#   scripts/fuzz.sh [SECONDS]        (default 60)
#
# Needs cargo-fuzz (installed here if missing) and a nightly toolchain for AddressSanitizer; with
# only a stable toolchain it fuzzes without a sanitizer (Rust code is memory-safe; the sanitizer
# matters for the C inside dependencies). A crash fails the script and leaves its input under
# fuzz/artifacts/TARGET/: turn it into a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    if ! cargo install cargo-fuzz --locked; then
        echo "fuzz: cargo-fuzz cannot be installed here; not fuzzing" >&2
        exit 0
    fi
fi
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    run=(cargo +nightly fuzz run --sanitizer address)
else
    # cargo-fuzz's flags without a sanitizer are accepted by stable rustc in bootstrap mode.
    export RUSTC_BOOTSTRAP=1
    run=(cargo fuzz run --sanitizer none)
fi

# Built by `cargo test` already (an example of the collector's crate).
cargo run --quiet --locked --example fuzz_seeds
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# decode_differential starts from the protobuf seeds: it needs OTLP/protobuf, not JSON.
for target in otlp_protobuf otlp_json decode_differential; do
    corpus=fuzz/corpus/$target
    if [ "$target" = decode_differential ]; then
        mkdir -p "$corpus"
        cp -n fuzz/corpus/otlp_protobuf/* "$corpus"/ 2>/dev/null || true
    fi
    "${run[@]}" --release "$target" "$corpus" -- \
        -max_total_time="$secs" -max_len=262144 -rss_limit_mb=4096 -print_final_stats=1 2>"$log" || {
        tail -n 60 "$log" >&2
        echo "fuzz: $target failed; the input is under fuzz/artifacts/$target/" >&2
        exit 1
    }
    runs=$(awk '/stat::number_of_executed_units/ { print $2 }' "$log")
    echo "fuzz: $target: $runs runs in $secs s, no crash"
done
