#!/usr/bin/env python3
"""The crate's embedding step against FBGEMM and torch sparse, in interleaved rounds in one process.

Run with the FBGEMM environment of ``../shared/bench/fbgemm`` (torch 2.14.1 + fbgemm-gpu-cpu 1.9.0) after
installing this package's wheel into it::

    maturin build --release --features bench -m python/Cargo.toml -o /tmp/wheels
    ~/fbgemm-venv/bin/pip install --force-reinstall --no-deps /tmp/wheels/adagrad_cpu-*-cp311-*.whl
    ~/fbgemm-venv/bin/python benches/embedding_vs_fbgemm.py --json docs/results/embedding-vs-fbgemm-<cpu>.json

Per configuration (1,000,000-row f32 table; D, B lookups, Zipf(1.05) or uniform ids; threads), each round times one
update of every implementation in turn (ours row-wise, FBGEMM ``EXACT_ROWWISE_ADAGRAD``, ours element-wise, FBGEMM
``EXACT_ADAGRAD``, torch sparse), then the ratios of that round are taken; the table reports medians of the
per-round ratios. Each round also measures the independent memory ceiling (``adagrad_ceiling::rows``: the same rows'
bytes with trivial arithmetic, best of its variants — prefetch distances, vector widths — same threads) for both accumulators; "%" is ceiling
time / our time, per round, median; "ceiling vs fbgemm" (last columns) is FBGEMM's time over the ceiling's: the most any step
with this grouped order's bytes could reach against it on this machine (a target above it asks for fewer bytes or
another order, not a faster step). Every pass (each implementation and each
ceiling variant) starts from caches flushed by reading a buffer of twice the last-level cache (``--flush-mib``), so
that no pass finds the rows, state or gradients a previous pass left in cache (without it, two ceiling variants run
back to back over the same arrays, and the second found the first one's rows in a large L3). Before its flush, every
pass is preceded by the same call once more, untimed (``--no-prepass``: not): on these VMs memory left untouched for
a second or more is several times slower to reach again, caches flushed either way (``benches/idle_memory.py``: 2.8x
for the step, 4.6x for the ceiling after 1.5 s idle in ``docs/results/idle-memory-intel-spr.txt``), and a round here
lasts one to several seconds, so without it every implementation's rows had idled a round while the ceiling's,
touched by ten passes a round, had not — the ceiling was flattered and every ratio pulled towards 1. In a training
loop the forward pass reads the step's rows just before it. FBGEMM runs with its ISA flags fixed
(``fbgemm_isa.fix_fbgemm_cpuinfo``: its JIT kernels, as designed), through the fused backward op with one index per
bag (sort, duplicate sum and update), the same thing ours does. GB/s counts the touched rows' weights and state read
and written and the gradients read.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared" / "bench" / "fbgemm"
sys.path.insert(0, str(SHARED))

import fbgemm_bench
import fbgemm_isa
from cache_flush import Flush, llc_bytes
from fbgemm_gpu.split_embedding_configs import EmbOptimType

from adagrad_cpu._native import EMBEDDING_CEILING_VARIANTS, embedding_ceiling
from adagrad_cpu.embedding import EmbeddingAdagrad

ROWS = fbgemm_bench.ROWS
LR, EPS = fbgemm_bench.LR, fbgemm_bench.EPS


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call takes."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def config_rows(
    d: int,
    b: int,
    dist: str,
    threads: int,
    rounds: int,
    rng: np.random.Generator,
    flush: Callable[[], None],
    prepass: bool,
) -> dict:
    """Times every implementation on one configuration in interleaved rounds."""
    torch.set_num_threads(threads)
    perm = rng.permutation(ROWS)
    if dist == "zipf1.05":
        ids = fbgemm_bench.zipf_indices(rng, b, ROWS, 1.05, perm)
    else:
        ids = rng.integers(0, ROWS, size=b, dtype=np.int64)
    grads = rng.standard_normal((b, d)).astype(np.float32) * 0.01
    unique = int(np.unique(ids).size)
    ids_t, grads_t = torch.from_numpy(ids), torch.from_numpy(grads)
    offsets_t = torch.arange(b + 1, dtype=torch.int64)

    table_rw = rng.standard_normal((ROWS, d)).astype(np.float32) * 0.01
    table_ew = table_rw.copy()
    ours_rw = EmbeddingAdagrad(ROWS, d, lr=LR, eps=EPS, threads=threads)
    ours_ew = EmbeddingAdagrad(ROWS, d, lr=LR, eps=EPS, threads=threads, accumulator="elementwise")
    tbe_rw = fbgemm_bench.make_tbe(EmbOptimType.EXACT_ROWWISE_ADAGRAD, d)
    tbe_ew = fbgemm_bench.make_tbe(EmbOptimType.EXACT_ADAGRAD, d)
    fb_rw = fbgemm_bench.bwd_op_call(tbe_rw, EmbOptimType.EXACT_ROWWISE_ADAGRAD)
    fb_ew = fbgemm_bench.bwd_op_call(tbe_ew, EmbOptimType.EXACT_ADAGRAD)
    param = torch.nn.Parameter(torch.from_numpy(table_rw.copy()))
    opt_t = torch.optim.Adagrad([param], lr=LR, eps=EPS)
    sparse = torch.sparse_coo_tensor(ids_t[None], grads_t, (ROWS, d))

    def torch_step() -> None:
        param.grad = sparse
        opt_t.step()

    impls = {
        "ours_rowwise": lambda: ours_rw.step(table_rw, ids, grads),
        "fbgemm_rowwise": lambda: fb_rw(grads_t, ids_t, offsets_t),
        "ours_elementwise": lambda: ours_ew.step(table_ew, ids, grads),
        "fbgemm_elementwise": lambda: fb_ew(grads_t, ids_t, offsets_t),
        "torch_sparse": torch_step,
    }
    # The ceilings' own arrays (the ceiling adds the gradients into them).
    ceil_table = np.ones((ROWS, d), dtype=np.float32)
    ceil_state = {1: np.ones(ROWS, dtype=np.float32), d: np.ones(ROWS * d, dtype=np.float32)}

    # The ceiling's variants (prefetch distances) run as separate entries of the round, between the
    # implementations, so that each of its passes starts as cold as theirs; its time is its best variant's.
    variants = [f"{rows}-{lookups}{'-wide' if wide else ''}" for rows, lookups, wide in EMBEDDING_CEILING_VARIANTS]
    for per_row, name in ((1, "rowwise"), (d, "elementwise")):
        for ahead, key in zip(EMBEDDING_CEILING_VARIANTS, variants, strict=True):
            impls[f"ceiling_{name}_{key}"] = lambda per_row=per_row, ahead=ahead: embedding_ceiling(
                ceil_table, ceil_state[per_row], ids, grads, per_row, threads, ahead
            )
    # Ours and the others first, each followed by ceiling passes, the rest of the ceiling passes after them.
    others = ["ours_rowwise", "fbgemm_rowwise", "ours_elementwise", "fbgemm_elementwise", "torch_sparse"]
    ceilings = [k for k in impls if k.startswith("ceiling")]
    order = []
    for i, k in enumerate(others):
        order += [k, *ceilings[2 * i : 2 * i + 2]]
    order += ceilings[2 * len(others) :]
    assert sorted(order) == sorted(impls), "every implementation and ceiling variant runs once per round"
    for fn in impls.values():  # warm-up: first-touch of state, scratch, thread pools
        fn()
    times: dict[str, list[float]] = {k: [] for k in impls}
    for _ in range(rounds):
        for k in order:
            fn = impls[k]
            if prepass:  # the same rows touched just before, as a forward pass would (see the module docstring)
                fn()
            flush()
            times[k].append(fn() if k.startswith("ceiling") else timed(fn))
    for name in ("rowwise", "elementwise"):
        best = min(variants, key=lambda a, name=name: statistics.median(times[f"ceiling_{name}_{a}"]))
        times[f"ceiling_{name}"] = times[f"ceiling_{name}_{best}"]
    ratios = {
        "rowwise_vs_fbgemm": [f / o for f, o in zip(times["fbgemm_rowwise"], times["ours_rowwise"], strict=True)],
        "elementwise_vs_fbgemm": [
            f / o for f, o in zip(times["fbgemm_elementwise"], times["ours_elementwise"], strict=True)
        ],
        "elementwise_vs_torch": [t / o for t, o in zip(times["torch_sparse"], times["ours_elementwise"], strict=True)],
        "rowwise_of_ceiling": [c / o for c, o in zip(times["ceiling_rowwise"], times["ours_rowwise"], strict=True)],
        "elementwise_of_ceiling": [
            c / o for c, o in zip(times["ceiling_elementwise"], times["ours_elementwise"], strict=True)
        ],
        # What the ceiling itself reaches against the others: no step with these bytes can go further.
        "ceiling_rowwise_vs_fbgemm": [
            f / c for f, c in zip(times["fbgemm_rowwise"], times["ceiling_rowwise"], strict=True)
        ],
        "ceiling_elementwise_vs_fbgemm": [
            f / c for f, c in zip(times["fbgemm_elementwise"], times["ceiling_elementwise"], strict=True)
        ],
        "ceiling_elementwise_vs_torch": [
            t / c for t, c in zip(times["torch_sparse"], times["ceiling_elementwise"], strict=True)
        ],
    }
    bytes_rw = 2 * unique * d * 4 + 2 * unique * 4 + b * d * 4
    bytes_ew = 4 * unique * d * 4 + b * d * 4
    out = {"D": d, "B": b, "dist": dist, "threads": threads, "unique_rows": unique, "rounds": rounds}
    for k, v in times.items():
        out[f"{k}_ms"] = statistics.median(v) * 1e3  # ceiling_*: the seconds the binding returned
    for k, v in ratios.items():
        out[k] = statistics.median(v)
        out[k + "_range"] = [min(v), max(v)]
    out["ours_rowwise_gbps"] = bytes_rw / statistics.median(times["ours_rowwise"]) / 1e9
    out["ours_elementwise_gbps"] = bytes_ew / statistics.median(times["ours_elementwise"]) / 1e9
    out["ceiling_rowwise_gbps"] = bytes_rw / statistics.median(times["ceiling_rowwise"]) / 1e9
    out["ceiling_elementwise_gbps"] = bytes_ew / statistics.median(times["ceiling_elementwise"]) / 1e9
    return out


def main() -> None:
    """Run every configuration and print (and optionally store) the table."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--quick", action="store_true", help="D = 64, B = 16,384 only")
    ap.add_argument(
        "--flush-mib",
        type=int,
        default=2 * llc_bytes() >> 20,
        help="MiB read before every pass to evict the caches (default: twice the largest cache; 0: none)",
    )
    ap.add_argument(
        "--no-prepass",
        action="store_true",
        help="time each pass without first running the same call untimed (the protocol before the pre-pass)",
    )
    args = ap.parse_args()
    flush: Callable[[], None] = Flush(args.flush_mib) if args.flush_mib > 0 else (lambda: None)
    print(f"cache flush before every pass: {args.flush_mib} MiB read", flush=True)
    print(f"untimed pre-pass before each flush: {not args.no_prepass}", flush=True)
    isa = fbgemm_isa.fix_fbgemm_cpuinfo()
    print(f"fbgemm ISA flags: {isa}", flush=True)
    rng = np.random.default_rng(1234)
    results = []
    dims = [64] if args.quick else [64, 128]
    batches = [16384] if args.quick else [16384, 262144]
    hdr = (
        f"{'D':>4} {'B':>7} {'ids':>8} {'thr':>3} | {'ours rw ms':>10} {'fbgemm rw':>9} {'ratio':>6} | "
        f"{'ours ew ms':>10} {'fbgemm ew':>9} {'ratio':>6} {'torch':>8} {'ratio':>6} | "
        f"{'rw GB/s':>7} {'ceil':>5} {'%':>4} | {'ew GB/s':>7} {'ceil':>5} {'%':>4} | ceiling vs fbgemm rw, ew; torch"
    )
    print(hdr)
    for d in dims:
        for b in batches:
            for dist in ["zipf1.05", "uniform"]:
                for threads in [1, 2]:
                    r = config_rows(d, b, dist, threads, args.rounds, rng, flush, not args.no_prepass)
                    results.append(r)
                    print(
                        f"{d:>4} {b:>7} {dist:>8} {threads:>3} | {r['ours_rowwise_ms']:>10.3f} "
                        f"{r['fbgemm_rowwise_ms']:>9.3f} {r['rowwise_vs_fbgemm']:>5.2f}x | "
                        f"{r['ours_elementwise_ms']:>10.3f} {r['fbgemm_elementwise_ms']:>9.3f} "
                        f"{r['elementwise_vs_fbgemm']:>5.2f}x {r['torch_sparse_ms']:>8.2f} "
                        f"{r['elementwise_vs_torch']:>5.2f}x | {r['ours_rowwise_gbps']:>7.2f} "
                        f"{r['ceiling_rowwise_gbps']:>5.2f} {100 * r['rowwise_of_ceiling']:>3.0f}% | "
                        f"{r['ours_elementwise_gbps']:>7.2f} {r['ceiling_elementwise_gbps']:>5.2f} "
                        f"{100 * r['elementwise_of_ceiling']:>3.0f}% | {r['ceiling_rowwise_vs_fbgemm']:>5.2f}x "
                        f"{r['ceiling_elementwise_vs_fbgemm']:>5.2f}x "
                        f"{r['ceiling_elementwise_vs_torch']:>5.2f}x",
                        flush=True,
                    )
    if args.json:
        meta = {
            "cpu": fbgemm_bench.cpu_model(),
            "fbgemm_isa": isa,
            "torch": torch.__version__,
            "rows": ROWS,
            "lr": LR,
            "eps": EPS,
            "flush_mib": args.flush_mib,
            "prepass": not args.no_prepass,
        }
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=1))


if __name__ == "__main__":
    main()
