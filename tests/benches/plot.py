"""Draw docs/perf/loopback.png from the loopback benchmark's CSV files.

Usage: python plot.py DIR [SOFT_DIR] [OUT.png]
  DIR       where `cargo bench -p duet-tests --bench loopback` wrote summary.csv and
            rtt_samples.csv (it prints the folder; default target/tmp/loopback)
  SOFT_DIR  optional: the same benchmark built with RUSTFLAGS="--cfg poly1305_force_soft";
            its duet figures are drawn beside the default build's ("-" to skip)
  OUT.png   default docs/perf/loopback.png

Top row: throughput per message size (median of rounds); bottom row: the distribution of
round trips of a 200-byte message (the last round's samples); left column both ends on one
CPU, right column on two.

Needs matplotlib: `/usr/bin/python3 -m venv /tmp/plot && /tmp/plot/bin/pip install
matplotlib`, then run this with /tmp/plot/bin/python.
"""

import csv
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PLACEMENTS = [
    ("same", "both ends on one CPU"),
    ("split", "ends on two CPUs"),
]
RATES = [
    ("raw_rate", "raw UDP, one way"),
    ("python_rate", "Python tutorial loop, one way"),
    ("duet_rate", "duet: sealed, acknowledged"),
]
RTTS = [
    ("raw", "raw UDP ping-pong"),
    ("python", "Python tutorial ping-pong"),
    ("duet", "duet: message → Delivered"),
]
SOFT = "duet, poly1305_force_soft"


def load(src, rates, samples, only_duet=False):
    with open(src / "summary.csv") as f:
        for row in csv.DictReader(f):
            for key, name in RATES:
                if only_duet and key != "duet_rate":
                    continue
                if row[key]:
                    name = SOFT if only_duet else name
                    rates[row["placement"]][name][int(row["size"])].append(float(row[key]))
    with open(src / "rtt_samples.csv") as f:
        for row in csv.DictReader(f):
            what = row["what"]
            if only_duet and what != "duet":
                continue
            what = "soft" if only_duet else what
            key = (row["placement"], what, int(row["size"]))
            samples[key].append(float(row["rtt_us"]))


def main():
    args = sys.argv[1:]
    src = Path(args[0])
    soft = Path(args[1]) if len(args) > 1 and args[1] != "-" else None
    out = Path(args[2]) if len(args) > 2 else Path("docs/perf/loopback.png")

    rates = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    samples = defaultdict(list)
    load(src, rates, samples)
    if soft:
        load(soft, rates, samples, only_duet=True)

    placements = [p for p in PLACEMENTS if p[0] in rates]
    fig, axes = plt.subplots(2, len(placements), figsize=(6 * len(placements), 8), dpi=100,
                             squeeze=False)
    for col, (placement, label) in enumerate(placements):
        top, bottom = axes[0][col], axes[1][col]
        series = rates[placement]
        sizes = sorted({s for by_size in series.values() for s in by_size})
        width = 0.8 / max(len(series), 1)
        highest = 0
        for i, (name, by_size) in enumerate(series.items()):
            xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(sizes))]
            ys = [statistics.median(by_size[s]) / 1000 if by_size[s] else 0 for s in sizes]
            highest = max([highest] + ys)
            bars = top.bar(xs, ys, width, label=name)
            top.bar_label(bars, fmt="%.0f", fontsize=7)
        top.set_xticks(range(len(sizes)), [f"{s} B" for s in sizes])
        top.set_xlabel("message size")
        top.set_ylabel("thousand messages (datagrams) per second")
        top.set_title(f"Throughput, {label}")
        top.set_ylim(0, highest * 1.3)
        top.legend(fontsize=8, loc="upper center", ncol=2)

        size = 200
        for what, name in RTTS + ([("soft", SOFT + ": → Delivered")] if soft else []):
            xs = sorted(samples.get((placement, what, size), []))
            if not xs:
                continue
            ys = [(i + 1) / len(xs) for i in range(len(xs))]
            bottom.plot(xs, ys, label=f"{name} (p50 {xs[len(xs) // 2]:.1f} µs)")
        bottom.set_xscale("log")
        bottom.set_xlabel("round trip, µs (log scale)")
        bottom.set_ylabel("share of round trips at or below")
        bottom.set_title(f"Round trip of a {size}-byte message, {label}")
        bottom.grid(True, which="both", alpha=0.3)
        bottom.legend(fontsize=8, loc="lower right")

    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
