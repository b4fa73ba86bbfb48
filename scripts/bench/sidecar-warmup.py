#!/usr/bin/env python3
"""How the sidecar's detector warm-up on coarse older history changes its scores.

When a signal starts, the sidecar loads the history older than `history_full_resolution`
(8 days) once an hour and the rest every 5 minutes, and its detector learns from those
points before it scores live ones. This script scores, with `vitals backtest` (the same
detector code), the week after 30 days of warm-up on three synthetic series kinds (a daily
and weekly seasonal pattern, a noisy level with routine spikes, a random walk; each with
injected anomalies in the scored week), warmed up three ways:

  30d full      every 5-minute point of the 30 days (what a full-resolution load gives)
  coarse+full   the point at the middle of each hour before the last 8 days 1 hour, then
                every point (what the sidecar does by default)
  full only     the last 8 days 1 hour of points only (the alternative: warm up on the
                full-resolution part alone)
  coarse+1d     the point at the middle of each hour before the last day, then every point
                (what the first cycle loads when the full-resolution days before it are
                filled in over the following cycles)

and prints, per variant, how far its scores of the scored week are from the 30d-full ones
and how many points it raises (two consecutive scores at the warning / critical threshold).

  VITALS_BIN=target/release/vitals scripts/bench/sidecar-warmup.py
"""
import csv
import datetime
import math
import os
import random
import subprocess
import sys
import tempfile

STEP = 300
DAY = 86400
WEEK = 7 * DAY
END = 1_704_067_200 + 5 * WEEK  # a Monday, 00:00 UTC
T0 = END - 37 * DAY  # 30 days of warm-up, then the scored week
SCORED = END - 7 * DAY
FULL_FROM = SCORED - 7 * DAY - 3600
WARNING, CRITICAL = 0.26, 0.5
BIN = os.environ.get("VITALS_BIN", "target/release/vitals")


def series(kind, seed):
    rnd = random.Random(seed)
    out = []
    for t in range(T0, END, STEP):
        hour = (t % DAY) / 3600
        weekday = ((t // DAY) + 3) % 7  # 0 = Monday
        if kind == "seasonal":
            peak = 40 if weekday < 5 else 10
            v = 50 + peak * math.exp(-(((hour - 12) / 3) ** 2)) + rnd.gauss(0, 2)
        elif kind == "spiky":
            v = 10 + rnd.gauss(0, 1) + (rnd.random() < 0.01) * rnd.uniform(5, 15)
        else:
            v = (out[-1][1] if out else 100) + rnd.gauss(0, 0.5)
        if t >= SCORED:
            k = (t - SCORED) // STEP
            if kind == "seasonal" and 2 * 288 + 36 <= k < 2 * 288 + 42:
                v = 80  # a noon level at 3 a.m. (Wednesday)
            if kind == "seasonal" and 4 * 288 + 100 <= k < 4 * 288 + 103:
                v += 60
            if kind == "spiky" and 3 * 288 <= k < 3 * 288 + 12:
                v = 30
            if kind == "walk" and 5 * 288 <= k < 5 * 288 + 6:
                v += 15
        out.append((t, v))
    return out


def score(points, work):
    src, dst = os.path.join(work, "in.csv"), os.path.join(work, "out.csv")
    with open(src, "w") as f:
        f.write("timestamp,value\n")
        for t, v in points:
            ts = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
            f.write(f"{ts:%Y-%m-%d %H:%M:%S},{v}\n")
    subprocess.run([BIN, "backtest", "--input", src, "--output", dst], check=True)
    scores = {}
    with open(dst) as f:
        for row in csv.DictReader(f):
            ts = datetime.datetime.strptime(row["timestamp"], "%Y-%m-%d %H:%M:%S")
            t = int(ts.replace(tzinfo=datetime.timezone.utc).timestamp())
            if t >= SCORED:
                scores[t] = float(row["anomaly_score"])
    return scores


def raised(scores, threshold):
    ts = sorted(scores)
    return sum(1 for a, b in zip(ts, ts[1:]) if scores[a] >= threshold and scores[b] >= threshold)


def main():
    print(f"{'series':<12} {'warm-up':<12} {'max |d|':>8} {'mean |d|':>9} {'warn':>9} {'crit':>9}")
    with tempfile.TemporaryDirectory() as work:
        for kind in ["seasonal", "spiky", "walk"]:
            for seed in [1, 2, 3]:
                full = series(kind, seed)
                ref = score(full, work)
                variants = {
                    "coarse+full": [p for p in full if p[0] >= FULL_FROM or p[0] % 3600 == 1800],
                    "full only": [p for p in full if p[0] >= FULL_FROM],
                    "coarse+1d": [p for p in full if p[0] >= SCORED - DAY or p[0] % 3600 == 1800],
                }
                for name, pts in variants.items():
                    got = score(pts, work)
                    d = [abs(got[t] - ref[t]) for t in ref]
                    print(
                        f"{kind + ' ' + str(seed):<12} {name:<12} {max(d):8.3f} {sum(d) / len(d):9.4f}"
                        f" {raised(ref, WARNING):>4}->{raised(got, WARNING):<3} {raised(ref, CRITICAL):>4}->{raised(got, CRITICAL):<3}"
                    )
                if kind == "seasonal":
                    for name, pts in [("30d full", full)] + list(variants.items()):
                        s = score(pts, work)
                        peak = max(s[SCORED + k * STEP] for d in (0, 1) for k in range(d * 288 + 120, d * 288 + 170))
                        night = max(s[SCORED + k * STEP] for k in range(2 * 288 + 36, 2 * 288 + 42))
                        print(f"{'':<12} {name:<12} weekday peaks (normal) max {peak:.3f}, noon level at 3 a.m. max {night:.3f}")


if __name__ == "__main__":
    sys.exit(main())
