#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ with libFuzzer for a fixed time each, on the stable toolchain:
# cargo-fuzz builds the targets with SanitizerCoverage (`-Cpasses=sancov-module`, stable flags) and
# without a sanitizer (`--sanitizer none`: AddressSanitizer would need nightly; the parsers are
# `unsafe`-free). libFuzzer is coverage-guided as usual; a panic, a failed assertion, an input slower
# than TIMEOUT seconds (a hang) or a leak of memory past RSS_MB fails the run, and the script exits
# non-zero naming the target; the crashing input is left under fuzz/artifacts/<target>/.
#
# Usage: scripts/fuzz-run.sh [SECONDS_PER_TARGET]   (default 15; TIMEOUT=10, RSS_MB=2048)
# Needs cargo-fuzz (`cargo install cargo-fuzz --version 0.13.2 --locked`) and a C++ compiler
# (libfuzzer-sys builds libFuzzer from source).
set -euo pipefail

seconds=${1:-15}
timeout=${TIMEOUT:-10}
rss_mb=${RSS_MB:-2048}
cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz"

# Built once for all targets; each run below then starts at once.
cargo fuzz build --sanitizer none
failed=()
for target in $(cargo fuzz list); do
    printf -- '--- %s (%ss)\n' "$target" "$seconds"
    mkdir -p "corpus/$target"
    if ! cargo fuzz run --sanitizer none "$target" -- \
        -max_total_time="$seconds" -timeout="$timeout" -rss_limit_mb="$rss_mb" \
        -print_final_stats=1 2>"corpus/$target.log"; then
        tail -n 40 "corpus/$target.log" >&2
        failed+=("$target")
    fi
    grep -E '^stat::(number_of_executed_units|new_units_added)|^Done' "corpus/$target.log" || true
    rm -f "corpus/$target.log"
done
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz: ${failed[*]} failed (inputs under fuzz/artifacts/)" >&2
    exit 1
fi
