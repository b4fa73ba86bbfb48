#!/usr/bin/env python3
"""Grouping accuracy of `vitals logs fingerprint` against drain3 on loghub 2k files.

For each system folder X under the data directory that holds X_2k.log_structured.csv, the
Content column (the message without its header, one line per message) is fed to
`vitals logs fingerprint --parser raw` and to drain3's TemplateMiner with its default
configuration. Both get exactly the same lines. Grouping accuracy is the standard loghub
metric: a line is correct when the set of lines in its predicted group equals the set of
lines in its ground-truth group (same EventId).

Exit status: 0 when vitals is at least as accurate as drain3 on every system evaluated,
1 otherwise, 2 on a usage or run error.
"""

import argparse
import csv
import datetime
import os
import subprocess
import sys
from collections import defaultdict

# The ten systems of the acceptance criteria, in loghub's usual order; others found in the
# data folder are evaluated too, after these.
REFERENCE_SYSTEMS = [
    "HDFS", "Hadoop", "Spark", "Zookeeper", "BGL",
    "Android", "HealthApp", "Windows", "Linux", "OpenSSH",
]


def load_system(data_dir, system):
    """Returns (contents, event_ids) from X_2k.log_structured.csv."""
    path = os.path.join(data_dir, system, f"{system}_2k.log_structured.csv")
    contents, events = [], []
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        for row in csv.DictReader(f):
            # One message per line: a stray newline inside Content would shift every later
            # line, so it is folded to a space for both miners alike.
            contents.append(row["Content"].replace("\r", " ").replace("\n", " "))
            events.append(row["EventId"])
    return contents, events


def grouping_accuracy(predicted, truth):
    """Share of lines whose predicted group is exactly their true group."""
    pred_groups = defaultdict(list)
    for i, p in enumerate(predicted):
        pred_groups[p].append(i)
    true_sizes = defaultdict(int)
    for t in truth:
        true_sizes[t] += 1
    correct = 0
    for members in pred_groups.values():
        labels = {truth[i] for i in members}
        if len(labels) == 1 and true_sizes[next(iter(labels))] == len(members):
            correct += len(members)
    return correct / len(truth) if truth else 1.0


def run_vitals(binary, lines):
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    proc = subprocess.run(
        [binary, "logs", "fingerprint", "--parser", "raw"],
        input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"vitals exited {proc.returncode}: {proc.stderr.decode(errors='replace')}")
    ids = proc.stdout.decode().split()
    if len(ids) != len(lines):
        raise RuntimeError(f"vitals printed {len(ids)} ids for {len(lines)} lines")
    return ids


def run_drain3(lines):
    import logging
    from drain3 import TemplateMiner
    from drain3.template_miner_config import TemplateMinerConfig

    logging.getLogger("drain3").setLevel(logging.WARNING)
    # The default configuration, set explicitly so that no drain3.ini in the working
    # directory can change it.
    miner = TemplateMiner(config=TemplateMinerConfig())
    return [miner.add_log_message(line)["cluster_id"] for line in lines]


def systems_in(data_dir, only):
    found = [
        d for d in sorted(os.listdir(data_dir))
        if os.path.isfile(os.path.join(data_dir, d, f"{d}_2k.log_structured.csv"))
    ]
    ordered = [s for s in REFERENCE_SYSTEMS if s in found] + [s for s in found if s not in REFERENCE_SYSTEMS]
    if only:
        ordered = [s for s in ordered if s in only]
    return ordered


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vitals", required=True, help="path to the vitals binary")
    ap.add_argument("--data", required=True, help="loghub folder (one sub-folder per system)")
    ap.add_argument("--system", action="append", help="only this system (repeatable)")
    ap.add_argument("--markdown", help="also write the table as Markdown to this file")
    ap.add_argument("--no-drain3", action="store_true", help="skip drain3 (vitals only, never fails)")
    args = ap.parse_args()

    systems = systems_in(args.data, args.system)
    if not systems:
        print(f"no X/X_2k.log_structured.csv under {args.data}", file=sys.stderr)
        return 2

    header = ["system", "lines", "true templates", "vitals groups", "vitals accuracy",
              "drain3 groups", "drain3 accuracy"]
    rows, worse = [], []
    sums = [0.0, 0.0]
    for system in systems:
        lines, truth = load_system(args.data, system)
        v = run_vitals(args.vitals, lines)
        v_acc = grouping_accuracy(v, truth)
        sums[0] += v_acc
        row = [system, str(len(lines)), str(len(set(truth))), str(len(set(v))), f"{v_acc:.4f}"]
        if args.no_drain3:
            row += ["-", "-"]
        else:
            d = run_drain3(lines)
            d_acc = grouping_accuracy(d, truth)
            sums[1] += d_acc
            row += [str(len(set(d))), f"{d_acc:.4f}"]
            if v_acc < d_acc:
                worse.append(system)
        rows.append(row)
        print("  ".join(row), file=sys.stderr, flush=True)
    n = len(systems)
    rows.append(["mean", "", "", "", f"{sums[0] / n:.4f}", "", "-" if args.no_drain3 else f"{sums[1] / n:.4f}"])

    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
    print(fmt(header))
    for r in rows:
        print(fmt(r))

    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write("| " + " | ".join(header) + " |\n")
            f.write("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|\n")
            for r in rows:
                f.write("| " + " | ".join(r) + " |\n")
            f.write(f"\n({datetime.date.today().isoformat()})\n")

    if worse:
        print(f"FAIL: vitals below drain3 on: {', '.join(worse)}")
        return 1
    print("OK: vitals at least as accurate as drain3 on every system" if not args.no_drain3 else "OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
