#!/usr/bin/env bash
# Builds every fuzz target with libFuzzer's coverage instrumentation and
# AddressSanitizer on the stable toolchain, runs each for FUZZ_SECONDS and
# prints, per target, executions and coverage. Exits non-zero when a
# target does not build, crashes, leaks, or hangs past FUZZ_TIMEOUT.
#
#   tests/fuzz/run.sh [TARGET...]      (default: all of them)
#
# FUZZ_SECONDS (default 600) per target; FUZZ_TIMEOUT (default 10) seconds
# one input may take; FUZZ_SANITIZER=none leaves ASan out (faster).
# Outputs under target/fuzz: the build, each target's growing corpus
# (corpus/TARGET, read with the committed seeds in CRATE/fuzz/corpus/TARGET)
# and crash reproducers (artifacts/TARGET), logs (logs/TARGET.log).
set -euo pipefail
cd "$(dirname "$0")/../.."

SECONDS_EACH=${FUZZ_SECONDS:-600}
TIMEOUT=${FUZZ_TIMEOUT:-10}
SANITIZER=${FUZZ_SANITIZER:-address}
OUT=target/fuzz
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')

# crate dir : targets
CRATES=(
    "blockstore:blk_request blk_worker"
    "vswitch:frame_path"
    "vmm:pci_transport"
    "mgmt:api_request"
)

# What cargo-fuzz passes (its `build` with -O -a), spelled out: sancov
# with 8-bit counters, PC table and compare tracing; --cfg fuzzing for the
# crates' fuzz bodies. RUSTC_BOOTSTRAP lets the stable compiler take -Z.
# Given with --target, they reach neither build scripts nor proc macros.
export RUSTC_BOOTSTRAP=1
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
RUSTFLAGS+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters"
RUSTFLAGS+=" -Cllvm-args=-sanitizer-coverage-pc-table"
RUSTFLAGS+=" -Cllvm-args=-sanitizer-coverage-trace-compares"
RUSTFLAGS+=" --cfg fuzzing -Cdebug-assertions -Coverflow-checks -Cforce-frame-pointers"
if [[ $SANITIZER != none ]]; then
    RUSTFLAGS+=" -Zsanitizer=$SANITIZER"
fi
export RUSTFLAGS
export CARGO_PROFILE_RELEASE_DEBUG=line-tables-only

wanted=("$@")
selected() {
    [[ ${#wanted[@]} -eq 0 ]] && return 0
    local w
    for w in "${wanted[@]}"; do [[ $w == "$1" ]] && return 0; done
    return 1
}

mkdir -p "$OUT/logs"
runs=()
for entry in "${CRATES[@]}"; do
    crate=${entry%%:*}
    bins=()
    for t in ${entry#*:}; do
        if selected "$t"; then bins+=(--bin "$t"); runs+=("$crate:$t"); fi
    done
    [[ ${#bins[@]} -eq 0 ]] && continue
    echo "== building $crate/fuzz (${bins[*]})"
    cargo build --release --locked --manifest-path "$crate/fuzz/Cargo.toml" \
        --target "$TRIPLE" --target-dir "$OUT" "${bins[@]}"
done
[[ ${#runs[@]} -gt 0 ]] || { echo "no such fuzz target: ${wanted[*]}" >&2; exit 2; }

failed=()
summary=()
for run in "${runs[@]}"; do
    crate=${run%%:*} t=${run#*:}
    corpus="$OUT/corpus/$t" artifacts="$OUT/artifacts/$t/" log="$OUT/logs/$t.log"
    mkdir -p "$corpus" "$artifacts"
    echo "== fuzzing $t for ${SECONDS_EACH}s (seeds: $crate/fuzz/corpus/$t)"
    status=0
    # ASan: leaks are findings too; the VM and io_uring rigs live for the process.
    ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 \
        "$OUT/$TRIPLE/release/$t" "$corpus" "$crate/fuzz/corpus/$t" \
        -max_total_time="$SECONDS_EACH" -timeout="$TIMEOUT" -rss_limit_mb=4096 \
        -max_len=65536 -artifact_prefix="$artifacts" -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p' <<<"$last")
    line=$(printf '%-14s %6ss  execs %-10s cov %-6s ft %-7s corpus %-12s' \
        "$t" "$SECONDS_EACH" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}")
    if [[ $status -ne 0 ]]; then
        line+="  FAILED (exit $status; see $log, reproducer in $artifacts)"
        failed+=("$t")
        grep -E '^(==[0-9]+==ERROR|SUMMARY|ALARM|thread .* panicked|artifact_prefix)' "$log" | head -5 >&2 || true
    else
        line+="  ok"
    fi
    echo "$line"
    summary+=("$line")
done

echo
echo "fuzzing summary (target, time each, executions, edges covered, features, corpus):"
printf '  %s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz targets that failed: ${failed[*]}" >&2
    exit 1
fi
