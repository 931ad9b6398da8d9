#!/usr/bin/env python3
"""Two builds compared in interleaved rounds: before and after a change, on this machine, in one run.

Each side is a command printing one JSON object whose ``times`` maps a workload's name to seconds (as
``examples/embedding_step.rs`` does). Every round runs both, in alternating order (A then B, then B then A), and
takes per workload the ratio of that round's times; the table gives the median of the per-round ratios (B ÷ A:
above 1 means B is slower) and their range, next to the median times::

    scripts/ab.py --rounds 7 --json out.json --name before --name after \\
        "/tmp/ab/before/embedding_step" "/tmp/ab/after/embedding_step"
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
from typing import Any


def run(command: str) -> dict[str, float]:
    """Runs one side once and returns its ``times``."""
    done = subprocess.run(shlex.split(command), check=True, capture_output=True, text=True)
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return {k: float(v) for k, v in out["times"].items()}


def main() -> int:
    """Runs the rounds and prints the table (and writes the JSON)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", help="the first side's command (the baseline)")
    ap.add_argument("b", help="the second side's command")
    ap.add_argument("--rounds", type=int, default=7, help="rounds, each running both sides once (default 7)")
    ap.add_argument("--name", action="append", help="names of the two sides (default: A, B)")
    ap.add_argument("--json", help="write every round's times and the summary here")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    names = args.name or ["A", "B"]
    if len(names) != 2:
        ap.error("give --name twice, or not at all")
    rounds: list[dict[str, dict[str, float]]] = []
    for r in range(args.rounds):
        order = [(names[0], args.a), (names[1], args.b)]
        if r % 2:
            order.reverse()
        got = {name: run(cmd) for name, cmd in order}
        rounds.append(got)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    a, b = names
    keys = list(rounds[0][a])
    summary = []
    width = max(len(k) for k in keys)
    print(f"{'workload':<{width}}  {a + ' ms':>10}  {b + ' ms':>10}  {b + ' ÷ ' + a:>10}  range")
    for k in keys:
        ratios = [rd[b][k] / rd[a][k] for rd in rounds]
        ta = statistics.median(rd[a][k] for rd in rounds)
        tb = statistics.median(rd[b][k] for rd in rounds)
        ratio = statistics.median(ratios)
        summary.append({"workload": k, a: ta, b: tb, "ratio": ratio, "min": min(ratios), "max": max(ratios)})
        print(f"{k:<{width}}  {ta * 1e3:10.3f}  {tb * 1e3:10.3f}  {ratio:10.3f}  {min(ratios):.3f}–{max(ratios):.3f}")
    all_ratios = [s["ratio"] for s in summary]
    print(f"median over workloads of the median ratio {b} ÷ {a}: {statistics.median(all_ratios):.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"sides": {a: args.a, b: args.b}, "rounds": rounds, "summary": summary}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
