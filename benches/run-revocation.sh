#!/usr/bin/env bash
# Revocation latency on three proxies (issue 6): builds the `revocation` benchmark in release and
# runs it (results in Markdown on stdout, progress on stderr), after the machine, the date and the
# load. Extra arguments go to `revocation`, e.g.:
#
#   benches/run-revocation.sh                      # the recorded run: 200 rounds on SQLite
#   benches/run-revocation.sh --store both         # SQLite, then PostgreSQL (initdb and postgres on PATH)
#   benches/run-revocation.sh --rounds 20          # a quick look (or INFRA_REVOCATION_ROUNDS=20)
#   benches/run-revocation.sh --help
#
# Loopback only; everything (control plane, three proxies, stand-in apiservers) runs in the one
# process and stops when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."

# INFRA_REVOCATION_SKIP_BUILD=1 runs the binary already in target/release (on a shared working
# tree whose other packages are mid-edit).
if [[ -z "${INFRA_REVOCATION_SKIP_BUILD:-}" ]]; then
    cargo build --release -p infra-benches --bin revocation >&2
fi

mem_kib=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
echo "## Machine"
echo
echo "- CPUs: $(nproc) (nproc), $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
echo "- Memory: $(awk -v k="$mem_kib" 'BEGIN {printf "%.1f GiB", k / 1048576}') (MemTotal: $mem_kib kB)"
echo "- Kernel: $(uname -sr); $(rustc --version)"
echo "- Date: $(date -u)"
echo "- Load at start: $(uptime)"
echo
binary="${CARGO_TARGET_DIR:-target}/release/revocation"
"$binary" "$@"
echo "- Load at end: $(uptime)"
echo "- Binary: $binary, built $(date -u -r "$binary")"
