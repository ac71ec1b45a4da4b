#!/usr/bin/env bash
# Runs every fuzz target in turn for a short time (default 45 s each), one
# at a time and with a one-job build, so it fits a shared 2-core machine.
# Usage: fuzz/scripts/run_all.sh [seconds-per-target] [extra libFuzzer flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-45}"
shift || true
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"
status=0
for target in bencode wire_message peer_session mse_responder tracker_response tracker_scrape catalog_row krpc dht_node dht_sweep evidence conninfo ledger_block; do
    echo "== $target (${secs}s)"
    if ! cargo +nightly fuzz run "$target" -- -max_total_time="$secs" -rss_limit_mb=2048 "$@"; then
        echo "!! $target failed: see fuzz/artifacts/$target/" >&2
        status=1
    fi
done
exit "$status"
