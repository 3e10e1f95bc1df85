#!/usr/bin/env bash
# Fuzzes each target in turn (one job at a time, lowest CPU priority) until RUNS executions
# or MAX_SECONDS, whichever comes first; libFuzzer's output goes to fuzz/logs/{target}.log.
# New inputs land in fuzz/corpus/{target}; minimise afterwards with `cargo fuzz cmin`.
#   RUNS=10000000 MAX_SECONDS=0 fuzz/run.sh [target ...]   (RUNS=-1: no limit)
set -euo pipefail
cd "$(dirname "$0")"
RUNS=${RUNS:-10000000}
MAX_SECONDS=${MAX_SECONDS:-0}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(xmlrpc json form charset voicenter ptk_soap soap soap_write ctips openscape command config path redact forwarded)
fi
mkdir -p logs
for t in "${targets[@]}"; do
    nice -n 19 cargo +nightly fuzz run -s none "$t" -- \
        -runs="$RUNS" -max_total_time="$MAX_SECONDS" -timeout=1 -rss_limit_mb=512 \
        -print_final_stats=1 >"logs/$t.log" 2>&1 || echo "$t: libFuzzer stopped (see logs/$t.log)"
    grep -E "^(#[0-9]+\s+DONE|stat::number_of_executed_units|stat::average_exec_per_sec)" "logs/$t.log" | sed "s/^/$t: /" || true
done
