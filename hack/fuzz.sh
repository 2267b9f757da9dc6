#!/usr/bin/env bash
# Fuzzes the agent's parsers of untrusted input: the targets in fuzz/ (what
# each asserts: docs/fuzzing.md).
#   hack/fuzz.sh [SECONDS_PER_TARGET [TARGET...]]
# Installs cargo-fuzz (pinned) if missing, builds every target, runs each for
# SECONDS_PER_TARGET (default 20) from its seed corpus in fuzz/corpus/TARGET,
# and fails on any crash, assertion or hang, naming the reproducer. hack/test.sh
# runs it short; docs/fuzzing.md has the long run.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
seconds=${1:-20}
shift || true
[[ $seconds =~ ^[0-9]+$ && $seconds -gt 0 ]] || {
    echo "usage: hack/fuzz.sh [SECONDS_PER_TARGET [TARGET...]]" >&2
    exit 2
}

# cargo-fuzz and libFuzzer's instrumentation want nightly flags (-Z...); this
# machine has only the stable toolchain, which takes them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
if [[ $(cargo fuzz --version 2>/dev/null) != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
    echo "installing cargo-fuzz $CARGO_FUZZ_VERSION" >&2
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --quiet
fi

# NSDEBUG_FUZZ_TARGET_DIR keeps the build outside the work tree (fuzz/target
# becomes a link to it): CI's clone is fresh every time, and the instrumented
# release build of the agent and all its dependencies takes 6-13 minutes from
# nothing on two cores, under 3 when only the agent changed.
if [[ -n ${NSDEBUG_FUZZ_TARGET_DIR:-} && ! -e fuzz/target ]]; then
    mkdir -p "$NSDEBUG_FUZZ_TARGET_DIR"
    ln -s "$NSDEBUG_FUZZ_TARGET_DIR" fuzz/target
fi

# No sanitizer: the agent denies unsafe code, so AddressSanitizer would only
# slow the build and each run; libFuzzer still catches panics (every failed
# assertion), overflows (debug assertions stay on), hangs and memory blow-ups.
# Four codegen units: a build several times faster than one on two cores, for
# a slightly slower fuzzer.
flags=(--sanitizer none --codegen-units 4)
# NSDEBUG_FUZZ_DEV=1: an unoptimized build, 3 minutes from nothing here
# instead of 6 to 13, for runs of seconds (CI); fewer executions a second.
if [[ ${NSDEBUG_FUZZ_DEV:-} == 1 ]]; then
    flags+=(--dev)
fi
if (($# == 0)); then
    mapfile -t targets < <(cargo fuzz list)
else
    targets=("$@")
fi
# cargo fuzz has no --locked: check fuzz/Cargo.lock is up to date first.
cargo metadata --locked --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null
cargo fuzz build "${flags[@]}" 2>&1 | grep -v '^\s*Compiling ' || true
[[ ${PIPESTATUS[0]} == 0 ]] || exit 1

failed=()
for target in "${targets[@]}"; do
    # The committed seeds stay as they are; what the run finds goes to a
    # scratch corpus (listed first, so libFuzzer writes there).
    scratch=fuzz/target/corpus/$target
    mkdir -p "$scratch" "fuzz/artifacts/$target"
    log=fuzz/target/$target.log
    status=0
    cargo fuzz run "${flags[@]}" "$target" "$scratch" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    done_line=$(grep -E '^#[0-9]+\s+DONE' "$log" | tail -1 || true)
    rate=$(sed -n 's/^stat::average_exec_per_sec:\s*//p' "$log" | tail -1)
    execs=$(sed -n 's/^stat::number_of_executed_units:\s*//p' "$log" | tail -1)
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' <<<"$done_line" || true)
    printf '%-12s %s execs in %ss, %s/s, %s\n' "$target" "${execs:-?}" "$seconds" "${rate:-?}" "${cov:-no coverage line}"
    if ((status != 0)); then
        failed+=("$target")
        grep -E 'panicked at|ERROR: libFuzzer|SUMMARY' "$log" | head -5 >&2 || true
        reproducer=$(sed -n 's/.*Test unit written to \(\S*\).*/\1/p' "$log" | tail -1)
        echo "hack/fuzz.sh: $target failed (log: $log)" >&2
        if [[ -n $reproducer ]]; then
            echo "  reproducer: $reproducer" >&2
            echo "  replay: RUSTC_BOOTSTRAP=1 cargo fuzz run ${flags[*]} $target $reproducer" >&2
        fi
    fi
done
if ((${#failed[@]})); then
    echo "hack/fuzz.sh: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
    exit 1
fi
