#!/usr/bin/env bash
# Build every fuzz target with the nightly toolchain (libFuzzer, AddressSanitizer,
# debug assertions: the flags `cargo fuzz build` uses) and run each for a fixed
# time on its seed corpus (fuzz/corpus/<target>). Exits non-zero when a target
# crashes, leaks, times out or fails to build.
#
#   fuzz/run.sh [SECONDS] [TARGET...]     default: 30 s for every target
#
# Environment: FUZZ_TARGET_DIR (build and scratch directory, default
# fuzz/target), FUZZ_MAX_LEN (largest input, default 16384), FUZZ_TOOLCHAIN
# (default nightly).
#
# Why not `cargo fuzz run`: mail-auth 0.15 pulls mail-parser 1.0, which declares
# rust-version 1.98, newer than the installed nightly; cargo-fuzz has no way to
# pass --ignore-rust-version. The flags below are cargo-fuzz 0.13's.
#
# New inputs go to a scratch corpus under the target directory, never into
# fuzz/corpus. A crash input is written to <scratch>/artifacts/<target>/; to
# keep it as a regression, copy it to fuzz/corpus/<target>/regress-<name>
# (`cargo test --test properties` replays every corpus file).
set -euo pipefail
cd "$(dirname "$0")"

SECONDS_EACH="${1:-30}"
shift || true
TOOLCHAIN="${FUZZ_TOOLCHAIN:-nightly}"
TARGET_DIR="${FUZZ_TARGET_DIR:-$PWD/target}"
MAX_LEN="${FUZZ_MAX_LEN:-16384}"
TRIPLE="$(rustc +"$TOOLCHAIN" -vV | sed -n 's/^host: //p')"

ALL_TARGETS=$(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^rmilter-fuzz$')
TARGETS="${*:-$ALL_TARGETS}"

RUSTFLAGS="-Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 --cfg fuzzing \
 -Zsanitizer=address \
 -Cllvm-args=-sanitizer-coverage-stack-depth \
 -Cdebug-assertions \
 -Ccodegen-units=1 ${RUSTFLAGS:-}"
export RUSTFLAGS
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0"

echo "fuzz/run.sh: building ${TARGETS//$'\n'/ } ($TOOLCHAIN, $TRIPLE)"
bins=()
for t in $TARGETS; do bins+=(--bin "$t"); done
# --target keeps RUSTFLAGS away from build scripts and proc macros.
cargo +"$TOOLCHAIN" build --release --ignore-rust-version \
    --config 'profile.release.debug="line-tables-only"' \
    --target "$TRIPLE" --target-dir "$TARGET_DIR" "${bins[@]}"

scratch="$TARGET_DIR/fuzz-run"
failed=()
summary=()
for t in $TARGETS; do
    mkdir -p "$scratch/corpus/$t" "$scratch/artifacts/$t"
    log="$scratch/$t.log"
    echo "== $t: ${SECONDS_EACH}s"
    set +e
    "$TARGET_DIR/$TRIPLE/release/$t" \
        -max_total_time="$SECONDS_EACH" -max_len="$MAX_LEN" -timeout=10 \
        -print_final_stats=1 -artifact_prefix="$scratch/artifacts/$t/" \
        "$scratch/corpus/$t" "corpus/$t" >"$log" 2>&1
    status=$?
    set -e
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    line="$t: ${runs:-?} runs, ${speed:-?} exec/s, cov ${cov:-?}, ft ${ft:-?}"
    if [ "$status" -ne 0 ]; then
        failed+=("$t")
        line="$line, FAILED (exit $status, log $log)"
        grep -E 'ERROR|panicked|Test unit written|SUMMARY' "$log" | head -20 || true
    fi
    echo "$line"
    summary+=("$line")
done

echo
echo "fuzz/run.sh summary (${SECONDS_EACH}s per target):"
printf '  %s\n' "${summary[@]}"
if [ "${#failed[@]}" -ne 0 ]; then
    echo "fuzz/run.sh: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz/run.sh: no crash"
