#!/usr/bin/env python3
"""Scrape latency of a vitals exporter while SSH refreshes run (used by ssh_disk.sh).

Scrapes --url back to back for --seconds over one keep-alive connection and prints, for
scrapes made while sshd on --ssh-port had established connections ("during refresh") and
for the others ("between rounds"):
  - the client's latency (request sent to body read), p50 / p95 / p99 / max;
  - vitals' own handler time for the same scrapes, from the change of
    vitals_http_request_duration_seconds{handler="metrics"} over the phase (share of scrapes
    answered within 1, 5 and 10 ms, and the mean);
  - CPU seconds used by vitals' threads over the phase, by thread name.
Whether sshd had connections is read from /proc/net/tcp between scrapes (not timed).
"""

import argparse
import http.client
import os
import re
import time
import urllib.parse

HZ = os.sysconf("SC_CLK_TCK")


def established(port_hex):
    """Whether a TCP connection on the given local port (hex) is established."""
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[3] == "01" and fields[1].endswith(":" + port_hex):
                return True
    return False


def thread_cpu(pid):
    """CPU seconds (user+system) of each thread name of a process."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        rest = stat[stat.rindex(")") + 2 :].split()
        out[name] = out.get(name, 0.0) + (int(rest[11]) + int(rest[12])) / HZ
    return out


HIST = re.compile(
    r'^vitals_http_request_duration_seconds_(bucket|sum|count)\{([^}]*)\} (\S+)$', re.M
)


def handler_histogram(body):
    """{le: count}, sum, count of the metrics handler's duration histogram."""
    buckets, total, count = {}, 0.0, 0.0
    for kind, labels, value in HIST.findall(body):
        if 'handler="metrics"' not in labels:
            continue
        if kind == "bucket":
            le = re.search(r'le="([^"]+)"', labels).group(1)
            buckets[le] = float(value)
        elif kind == "sum":
            total = float(value)
        else:
            count = float(value)
    return buckets, total, count


def stats(ts):
    if not ts:
        return "none"
    ts = sorted(ts)
    pick = lambda q: ts[min(len(ts) - 1, int(q * len(ts)))] * 1000
    return (
        f"n={len(ts)} p50 {pick(0.5):.2f} ms, p95 {pick(0.95):.2f} ms, "
        f"p99 {pick(0.99):.2f} ms, max {ts[-1] * 1000:.2f} ms"
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--ssh-port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--label", required=True)
    a = ap.parse_args()
    u = urllib.parse.urlsplit(a.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    port_hex = f"{a.ssh_port:04X}"

    def get():
        conn.request("GET", u.path)
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            raise SystemExit(f"scrape answered {r.status}")
        return body

    before_hist = handler_histogram(get().decode())
    before_cpu = thread_cpu(a.pid)
    during, idle = [], []
    end = time.monotonic() + a.seconds
    while time.monotonic() < end:
        busy = established(port_hex)
        t0 = time.perf_counter()
        get()
        (during if busy else idle).append(time.perf_counter() - t0)
    after_cpu = thread_cpu(a.pid)
    after_hist = handler_histogram(get().decode())

    print(f"== {a.label}: load average {open('/proc/loadavg').read().split()[0]}")
    print(f"  scrape during refresh (client): {stats(during)}")
    print(f"  scrape between rounds (client): {stats(idle)}")
    (b0, s0, c0), (b1, s1, c1) = before_hist, after_hist
    n = c1 - c0
    if n > 0:
        share = lambda le: 100.0 * (b1.get(le, 0) - b0.get(le, 0)) / n
        print(
            f"  vitals handler, all {n:.0f} scrapes: {share('0.001'):.1f}% within 1 ms, "
            f"{share('0.005'):.1f}% within 5 ms, {share('0.01'):.1f}% within 10 ms, "
            f"mean {(s1 - s0) / n * 1000:.2f} ms"
        )
    used = {k: after_cpu.get(k, 0.0) - before_cpu.get(k, 0.0) for k in after_cpu}
    shown = ", ".join(f"{k} {v:.2f}" for k, v in sorted(used.items(), key=lambda x: -x[1]) if v > 0)
    print(f"  vitals CPU seconds by thread over {a.seconds:.0f} s: {shown}")


if __name__ == "__main__":
    main()
