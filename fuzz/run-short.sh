#!/usr/bin/env bash
# Build every fuzz target and run each for a short while (FUZZ_SECONDS, default 20) from the
# committed seed corpus. Exits non-zero if any target crashed, hung or ran out of memory;
# the input that did it is left in fuzz/artifacts/<target>/.
#
# New inputs go to a temporary directory, never into fuzz/corpus/: the committed corpus
# changes only by hand (examples/write_corpus.rs, or a crash kept as a regression seed).
set -euo pipefail
cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-20}"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo +nightly install cargo-fuzz --locked
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cargo +nightly fuzz build
failed=()
for target in $(cargo +nightly fuzz list); do
    mkdir -p "$work/$target"
    echo "== fuzz $target for ${seconds}s"
    # -timeout: one input running 10 s is a hang; -rss_limit_mb: memory that only grows.
    if ! cargo +nightly fuzz run "$target" "$work/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 2>"$work/$target.log"; then
        failed+=("$target")
        tail -n 60 "$work/$target.log"
    fi
    grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb)" "$work/$target.log" || true
done
if ((${#failed[@]})); then
    echo "fuzz: crashes in ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz: every target ran ${seconds}s without a crash"
