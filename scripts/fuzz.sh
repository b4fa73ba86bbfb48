#!/usr/bin/env bash
# Fuzzes every parser of vitals for a bounded time with cargo-fuzz (libFuzzer).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     default: 20 s, every target
#
# Each target runs on its corpus in fuzz/corpus/<target>/, which grows in place (commit it
# after `FUZZ_CMIN=1 scripts/fuzz.sh ...`, which minimises it at the end). A crash, an
# assertion, an input that takes more than FUZZ_TIMEOUT seconds, or memory above
# FUZZ_RSS_LIMIT_MB fails the target; the input is saved under fuzz/artifacts/<target>/ and
# the script exits 1 after running the other targets. The last lines are a table:
# target | seconds | executions | result.
#
# Environment: FUZZ_RSS_LIMIT_MB (default 1024), FUZZ_TIMEOUT (default 10), FUZZ_MAX_LEN
# (default 32768), FUZZ_CMIN=1 to minimise corpora after the run, CARGO_TARGET_DIR to keep
# the (release, instrumented) build somewhere else than fuzz/target, FUZZ_SEED=N for
# libFuzzer's -seed (CI sets it: the same mutations every run, so a red CI reproduces and a
# new crash is found by a developer's random-seed run, not by chance in someone's CI).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=${1:-20}
shift || true
CARGO_FUZZ_VERSION=0.13.2
RSS_LIMIT_MB=${FUZZ_RSS_LIMIT_MB:-1024}
TIMEOUT=${FUZZ_TIMEOUT:-10}
MAX_LEN=${FUZZ_MAX_LEN:-32768}

if ! [[ "$SECONDS_EACH" =~ ^[0-9]+$ ]] || [ "$SECONDS_EACH" -lt 1 ]; then
    echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]" >&2
    exit 2
fi

if ! cargo fuzz --version 2>/dev/null | grep -q "cargo-fuzz $CARGO_FUZZ_VERSION"; then
    echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

# cargo-fuzz passes unstable -Z flags to rustc; this machine has a stable toolchain only.
export RUSTC_BOOTSTRAP=1
# No sanitizer: the library forbids unsafe code, and leaving ASan out halves build time.
# Dev profile (fuzz/Cargo.toml: opt-level 1): fast to build, with debug assertions and
# overflow checks, since integer overflow is a defect too.
FUZZ_FLAGS=(--dev --sanitizer none)
SEED_ARGS=()
if [ -n "${FUZZ_SEED:-}" ]; then
    if ! [[ "$FUZZ_SEED" =~ ^[0-9]+$ ]]; then
        echo "FUZZ_SEED must be a number, not '$FUZZ_SEED'" >&2
        exit 2
    fi
    SEED_ARGS=(-seed="$FUZZ_SEED")
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

start=$(date +%s)
cargo fuzz build "${FUZZ_FLAGS[@]}"
echo "fuzz: build took $(($(date +%s) - start)) s"

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
failed=0
rows=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t"
    echo "fuzz: $t for ${SECONDS_EACH} s"
    t0=$(date +%s)
    status=ok
    if ! cargo fuzz run "${FUZZ_FLAGS[@]}" "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$SECONDS_EACH" -rss_limit_mb="$RSS_LIMIT_MB" \
        -malloc_limit_mb="$RSS_LIMIT_MB" -timeout="$TIMEOUT" -max_len="$MAX_LEN" \
        -print_final_stats=1 "${SEED_ARGS[@]}" >"$logs/$t.log" 2>&1; then
        status=FAILED
        failed=1
        grep -E "panicked|ERROR: libFuzzer|SUMMARY|Test unit written|out-of-memory|timeout" \
            "$logs/$t.log" | head -20 || true
    fi
    took=$(($(date +%s) - t0))
    execs=$(sed -n -e 's/^stat::number_executed_units: *//p' -e 's/^Done \([0-9]*\) runs.*/\1/p' \
        "$logs/$t.log" | tail -1)
    grep -E "^(Done|stat::number_executed_units)" "$logs/$t.log" || true
    rows+=("$t | $took | ${execs:-?} | $status")
    if [ "${FUZZ_CMIN:-0}" = 1 ] && [ "$status" = ok ]; then
        cargo fuzz cmin "${FUZZ_FLAGS[@]}" "$t" "fuzz/corpus/$t" >"$logs/$t.cmin.log" 2>&1 \
            || echo "fuzz: cmin of $t failed (corpus kept as is)"
    fi
done

echo
echo "target | seconds run | executions | result"
for r in "${rows[@]}"; do
    echo "$r"
done
if [ "$failed" != 0 ]; then
    echo "fuzz: FAILED (inputs under fuzz/artifacts/; reproduce with: RUSTC_BOOTSTRAP=1 cargo fuzz run ${FUZZ_FLAGS[*]} TARGET fuzz/artifacts/TARGET/FILE)"
    exit 1
fi
echo "fuzz: ${#targets[@]} targets, no failure"
