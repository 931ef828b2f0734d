#!/usr/bin/env bash
# Control-plane fan-out (issue 16, goal 6): builds the `fanout` benchmark in release and runs it
# once per size (results in Markdown on stdout, progress on stderr), after the machine, the date
# and the load. Sizes are `users:sessions:streams`; extra arguments go to every `fanout` run:
#
#   benches/run-fanout.sh                                  # the recorded sizes
#   FANOUT_SIZES="1000:2000:300" benches/run-fanout.sh     # one size
#   benches/run-fanout.sh --changes 5 --rate 0             # fewer changes, no sustained phase
#   target/release/fanout --help
#
# Loopback only. The control plane runs in a child process (its CPU time is what is reported);
# its SQLite store is filled once per size under $FANOUT_STATE (default /tmp/infra-fanout) and
# reused by later runs of the same size: delete that folder to start over.
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-target}"
if [[ -z "${FANOUT_SKIP_BUILD:-}" ]]; then
    cargo build --release -p infra-benches --no-default-features --bin fanout >&2
fi
sizes="${FANOUT_SIZES:-1000:2000:300 10000:20000:100 50000:100000:300}"
state="${FANOUT_STATE:-/tmp/infra-fanout}"

mem_kib=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
echo "## Machine"
echo
echo "- CPUs: $(nproc) (nproc), $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
echo "- Memory: $(awk -v k="$mem_kib" 'BEGIN {printf "%.1f GiB", k / 1048576}') (MemTotal: $mem_kib kB)"
echo "- Kernel: $(uname -sr); $(rustc --version)"
echo "- Date: $(date -u)"
echo "- Commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "- Load at start: $(uptime)"
echo
for size in $sizes; do
    IFS=: read -r users sessions streams <<<"$size"
    "$target/release/fanout" --users "$users" --sessions "$sessions" --streams "$streams" \
        --state-dir "$state" "$@"
    echo
done
echo "- Load at end: $(uptime)"
echo "- Binary: $target/release/fanout, built $(date -u -r "$target/release/fanout")"
