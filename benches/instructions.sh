#!/bin/sh
# Instructions per decision request, counted by callgrind (user space, every thread of the
# bench process: gateway, webhook, load generator): a repeatable figure on a shared machine,
# where req/s is noise. Runs the bench's profile phase twice, with N1 and N2 answers, and
# prints (I(N2) - I(N1)) / (N2 - N1), so start-up and warm-up cancel out.
#
#   benches/instructions.sh [gateway|passthrough] [N1] [N2]
#
# Needs valgrind. Builds the bench with `cargo bench --no-run` first, unless BENCH_BIN names a
# bench binary to count (a copy kept to compare two builds).
set -eu
which="${1:-gateway}"
n1="${2:-1000}"
n2="${3:-3000}"
cd "$(dirname "$0")/.."
bin=${BENCH_BIN:-}
[ -n "$bin" ] || bin=$(cargo bench --bench gateway --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*\/gateway-[0-9a-f]*\)".*/\1/p' | tail -n 1)
[ -x "$bin" ] || { echo "bench binary not found" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
count() {
    IVRGATE_BENCH_PROFILE="$which" IVRGATE_BENCH_REQUESTS="$1" \
        valgrind --tool=callgrind --callgrind-out-file="$out/cg.$1" "$bin" \
        >"$out/log.$1" 2>&1 || { cat "$out/log.$1" >&2; exit 1; }
    grep -E '^(summary|totals):' "$out/cg.$1" | head -n 1 | awk '{print $2}'
}
i1=$(count "$n1")
i2=$(count "$n2")
grep -h 'req/s' "$out/log.$n2" >&2 || true
echo "$which: $(( (i2 - i1) / (n2 - n1) )) instructions/request ($n1: $i1, $n2: $i2)"
if [ -n "${KEEP_PROFILE:-}" ]; then cp "$out/cg.$n2" "$KEEP_PROFILE"; fi
