#!/usr/bin/env python3
"""Self time of a `perf record` profile, grouped into the buckets the README's load section uses.

    python3 benches/perf-summary.py PERF_DATA [MICROSECONDS_PER_REQUEST]

Reads `perf report --no-children --sort dso,sym`; with the proxy's CPU µs per request (from
the load table) it also prints each bucket's share in µs. The buckets are regular expressions
over "dso symbol", tried in order; the first match wins.
"""
import collections
import re
import subprocess
import sys

BUCKETS = [
    ("kernel: scheduler, futex, epoll, wake-ups",
     r"\[kernel\].*(finish_task_switch|_raw_spin_unlock_irq|schedule|futex|epoll|ep_|wake|ttwu|"
     r"enqueue|dequeue|pick_next|update_curr|sched|select_task|hrtimer|irqentry|switch_to|switch_mm)"),
    ("kernel: TCP/IP over loopback (both ends of each packet)",
     r"\[kernel\].*(tcp|ip_|skb|dev_|net_|inet|sock|loopback|napi|netif|nf_|sk_|bbr|csum|copy_|"
     r"_copy|iter|dst_|neigh|xmit|eth_|kmem|kmalloc|slab|alloc|page|memcg|check_|rcu|bh_|"
     r"softirq|memset|memcpy|fib_|raw_)"),
    ("kernel: syscall entry/exit, other", r"\[kernel\]"),
    ("libc malloc/free", r"libc.*(malloc|free|_int_|unlink_chunk|tcache|consolidate|realloc|calloc)"),
    ("libc memmove/memcpy/memcmp", r"libc.*(mem|str)"),
    ("libc other (syscall wrappers, clock)", r"(libc|vdso|libm)"),
    ("crypto (ring AES-GCM)", r"ring_core|ring::"),
    ("rustls (records, buffers)", r"rustls"),
    ("h2 + hyper HTTP/2", r"\bh2::|hyper::proto::h2|hpack"),
    ("hyper HTTP/1.1 and common", r"hyper::|httparse"),
    ("http crate (header maps, names, URIs)", r"\bhttp::"),
    ("tokio runtime", r"tokio|mio"),
    ("infra-proxy / infra-authz", r"infra_proxy|infra_authz"),
    ("moka, uuid, prometheus, tracing", r"moka|uuid|prometheus|tracing|crossbeam|getrandom"),
    ("other user code (core, alloc, bytes, ...)", r"."),
]


def main():
    data = sys.argv[1]
    per_request = float(sys.argv[2]) if len(sys.argv) > 2 else None
    report = subprocess.run(
        ["perf", "report", "-i", data, "--no-children", "--sort", "dso,sym", "--stdio",
         "-g", "none", "--percent-limit", "0"],
        capture_output=True, text=True, check=True).stdout
    shares = collections.OrderedDict((name, 0.0) for name, _ in BUCKETS)
    tops = collections.defaultdict(list)
    for line in report.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)$", line)
        if not m:
            continue
        percent, dso, symbol = float(m.group(1)), m.group(2), m.group(4).strip()
        key = f"[kernel] {symbol}" if dso.startswith("[kernel") else f"{dso} {symbol}"
        for name, pattern in BUCKETS:
            if re.search(pattern, key):
                shares[name] += percent
                tops[name].append((percent, symbol.split("<")[0][:60]))
                break
    print("| bucket | share of samples | µs per request | largest symbols |")
    print("| --- | ---: | ---: | --- |")
    for name, percent in sorted(shares.items(), key=lambda item: -item[1]):
        us = f"{percent * per_request / 100:.1f}" if per_request else ""
        top = ", ".join(f"`{s}` {p:.1f}%" for p, s in sorted(tops[name], reverse=True)[:3])
        print(f"| {name} | {percent:.1f}% | {us} | {top} |")


if __name__ == "__main__":
    main()
