#!/usr/bin/env python3
"""How much slower an embedding pass gets when its rows have sat untouched for a while, caches flushed either way.

Found while reading ``benches/embedding_vs_fbgemm.py``: on this workplace's VMs, memory nobody touched for a second or
more is much slower to reach again than memory touched a moment ago, even when the caches are flushed in both cases
(the cause lies below the guest: the timed passes take no page fault, the guest has no swap, and its DAMON
scheme applied nothing). A benchmark whose rounds last seconds then
times that, not the step. This script shows it on the crate's element-wise step and on the independent ceiling
(``embedding_ceiling``), each on its own arrays, in three protocols per round:

- ``prepass``: run the same pass once untimed, flush the caches (read twice the last-level cache), time the pass —
  its rows were touched a fraction of a second before;
- ``idle``: wait ``--idle`` seconds, flush, time the pass — its rows untouched for longer than that;
- ``idle+prepass``: wait, then as ``prepass``.

Run with the package installed (``.venv/bin/python benches/idle_memory.py``); prints the median milliseconds of
each and, per protocol, the median of the per-round ratios to ``prepass``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from cache_flush import Flush, llc_bytes

from adagrad_cpu._native import embedding_ceiling
from adagrad_cpu.embedding import EmbeddingAdagrad

ROWS = 1_000_000
PROTOCOLS = ("prepass", "idle", "idle+prepass")


def main() -> None:
    """Times both passes under the three protocols in interleaved rounds and prints (and optionally stores) them."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--lookups", type=int, default=16384)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--idle", type=float, default=1.5, help="seconds the rows sit untouched (default 1.5)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    d, b = args.dim, args.lookups
    rng = np.random.default_rng(1234)
    ids = rng.integers(0, ROWS, size=b, dtype=np.int64)
    grads = rng.standard_normal((b, d)).astype(np.float32) * 0.01
    table = rng.standard_normal((ROWS, d)).astype(np.float32) * 0.01
    ours = EmbeddingAdagrad(ROWS, d, lr=0.01, eps=1e-8, accumulator="elementwise", threads=args.threads)
    ceil_table, ceil_state = np.ones((ROWS, d), np.float32), np.ones(ROWS * d, np.float32)
    flush = Flush(2 * llc_bytes() >> 20)

    def step() -> float:
        t0 = time.perf_counter()
        ours.step(table, ids, grads)
        return time.perf_counter() - t0

    def ceiling() -> float:
        return embedding_ceiling(ceil_table, ceil_state, ids, grads, d, args.threads, (8, 8))

    passes: dict[str, Callable[[], float]] = {"step": step, "ceiling": ceiling}
    for fn in passes.values():
        fn()
    times = {(p, n): [] for p in PROTOCOLS for n in passes}
    for _ in range(args.rounds):
        for protocol in PROTOCOLS:
            for name, fn in passes.items():
                if protocol != "prepass":
                    time.sleep(args.idle)
                if protocol != "idle":
                    fn()
                flush()
                times[protocol, name].append(fn())
    print(f"D={d}, {b} uniform lookups, {args.threads} thread(s), idle {args.idle} s, {args.rounds} rounds")
    out = {"dim": d, "lookups": b, "threads": args.threads, "idle_s": args.idle, "rounds": args.rounds, "rows": []}
    for protocol in PROTOCOLS:
        for name in passes:
            v = times[protocol, name]
            ratio = statistics.median(x / r for x, r in zip(v, times["prepass", name], strict=True))
            ms = statistics.median(v) * 1e3
            print(f"{protocol:>13} {name:>8}: {ms:8.3f} ms  ({ratio:4.2f}x prepass)")
            out["rows"].append(
                {"protocol": protocol, "pass": name, "ms": ms, "vs_prepass": ratio, "all_ms": [x * 1e3 for x in v]}
            )
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
