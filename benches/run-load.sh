#!/usr/bin/env bash
# End-to-end load benchmark of infra-proxy: builds the release binaries, raises the open-files
# limit for the 10,000-watch memory figure, and runs `load run` (results in Markdown on stdout,
# progress on stderr). Extra arguments go to `load run`, e.g.:
#
#   benches/run-load.sh                          # the recorded run (a few minutes)
#   benches/run-load.sh --rounds 1 --watches 0   # a quick look
#   benches/run-load.sh --help
#
# Loopback only; it starts the upstream and the proxy itself and stops them when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."

# The watch phase holds 10,000 client connections in the load process and as many in the proxy;
# each process needs a little over that many descriptors. Ask for 65536, settle for the hard
# limit (a container may cap it, at 20000 for instance), and let the harness say if it is short.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# The peers measured beside infra-proxy (nginx and HAProxy from Debian's packages): installed
# here, once, when missing; INFRA_LOAD_NO_PEERS=1 (or --no-peers) skips them.
if [ -z "${INFRA_LOAD_NO_PEERS:-}" ] && { [ ! -x /usr/sbin/nginx ] || [ ! -x /usr/sbin/haproxy ]; }; then
    apt-get update >&2
    apt-get install -y nginx haproxy >&2
fi

cargo build --release -p infra-proxy -p infra-benches --bin infra-proxy --bin load >&2

echo "open files limit: $(ulimit -n); $(uptime)" >&2
exec target/release/load run "$@"
