#!/usr/bin/env bash
# Coverage-guided fuzzing of the token decoders and the verifier's decision, with
# the stable toolchain and nothing to install beyond crates:
#
#   deploy/fuzz.sh [SECONDS]   build verifier/fuzz, run each target SECONDS (default 60)
#   deploy/fuzz.sh --seeds     rewrite the committed seed corpus from the fixture
#
# libFuzzer comes from the libfuzzer-sys crate (compiled from its C++ source); the
# coverage it steers by comes from rustc's SanitizerCoverage pass, switched on with
# stable -C flags (what `cargo fuzz build -s none` passes, minus its -Z flags).
# Safe Rust needs no sanitizer: a panic aborts and libFuzzer reports it.
#
# New inputs go to a temporary corpus, never into verifier/fuzz/corpus/. A crash,
# timeout or memory blow-up fails the script; the input is kept under
# target/fuzz/artifacts/<target>/ with the command that replays it.
set -euo pipefail
cd "$(dirname "$0")/.."

targets=(token request)
seconds=${1:-60}
if [ "$seconds" != --seeds ] && ! [[ "$seconds" =~ ^[0-9]+$ ]]; then
    echo "usage: deploy/fuzz.sh [SECONDS | --seeds]" >&2
    exit 2
fi

host=$(rustc -vV | sed -n 's/^host: //p')
export CARGO_TARGET_DIR=$PWD/target/fuzz
unset CARGO_ENCODED_RUSTFLAGS
export RUSTFLAGS="-Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
--cfg fuzzing"
# An explicit --target keeps RUSTFLAGS off build scripts and proc macros: rustc
# cannot load a proc macro that calls the coverage hooks.
build=(cargo build --manifest-path verifier/fuzz/Cargo.toml --release --locked --target "$host")
bin=$CARGO_TARGET_DIR/$host/release

if [ "$seconds" = --seeds ]; then
    "${build[@]}" -q --bin token
    fresh=$(mktemp -d)
    trap 'rm -rf "$fresh"' EXIT
    SOFTPHONE_FUZZ_SEEDS=$fresh "$bin/token" 2>/dev/null
    rm -rf verifier/fuzz/corpus
    mkdir verifier/fuzz/corpus
    cp -r "$fresh"/. verifier/fuzz/corpus/
    echo "seed corpus rewritten under verifier/fuzz/corpus/"
    exit 0
fi

start=$SECONDS
"${build[@]}" -q --bin token --bin request
echo "fuzz: built in $((SECONDS - start)) s"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
for target in "${targets[@]}"; do
    artifacts=$CARGO_TARGET_DIR/artifacts/$target
    mkdir -p "$work/$target/corpus" "$artifacts"
    touch "$work/$target/started"
    log=$work/$target/log
    # The first corpus directory receives new inputs; the committed seeds are
    # only read.
    status=0
    SOFTPHONE_FUZZ_DIR=$work/$target/data "$bin/$target" \
        "$work/$target/corpus" "verifier/fuzz/corpus/$target" \
        -max_total_time="$seconds" -rss_limit_mb=512 -timeout=5 -max_len=4096 \
        -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    counters=$(sed -n 's/.*Loaded 1 modules *(\([0-9]*\) inline 8-bit counters).*/\1/p' "$log" | head -n 1)
    cov=$(grep -E '^#[0-9]+' "$log" | tail -n 1 | grep -oE 'cov: [0-9]+ ft: [0-9]+' || true)
    if [ "$status" -ne 0 ] || [ -z "$runs" ] || [ "${counters:-0}" -eq 0 ] || [ -z "$cov" ]; then
        failed=1
        echo "fuzz $target: FAILED (exit $status)" >&2
        tail -n 40 "$log" >&2
        # The panic message sits above a long backtrace: repeat it last.
        grep -A1 -m1 'panicked at' "$log" >&2 || true
        find "$artifacts" -type f -newer "$work/$target/started" | while read -r input; do
            echo "fuzz $target: replay with: $bin/$target $input" >&2
        done
        continue
    fi
    echo "fuzz $target: $runs executions, $cov, no crash"
done
echo "fuzz: done in $((SECONDS - start)) s"
exit "$failed"
