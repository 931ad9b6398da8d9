"""This package against PyTorch's fused CPU Adagrad, in one process.

``.venv/bin/python benches/python_bench.py [--json FILE] [--kinds ...]``, in the test environment (``scripts/test``
makes it), whose build of the package has the ``bench`` feature this needs (``_native.rust_step_seconds``).

Every comparison alternates the two sides in short rounds (A, B, B, A, ...) and reports the median over rounds of
the per-round ratio, so that the noise of a shared machine falls on both sides alike. The kinds of rows:

- ``kernel``: the crate's step through the binding (one native call reading the tensors, as the optimizer makes
  it, without the optimizer's Python layer) against bare ``torch._foreach_add_(steps, 1); torch._fused_adagrad_(...)``
  (what ``torch.optim.Adagrad(fused=True)`` runs, without its Python layer): one tensor of N elements, or many.
- ``optimizer``: ``adagrad_cpu.torch.Adagrad.step()`` against ``torch.optim.Adagrad(fused=True).step()``.
- ``python_vs_rust``: the Python-level step against the Rust-level step (the same memory, stepped in a Rust loop).
- ``native_vs_rust``: the same, with the optimizer's Python layer left out: one native call with its arguments
  built beforehand (what the ``kernel`` rows time), against the Rust-level step. What remains over 1 is the
  crossing itself (reading the tensors, releasing the GIL, the caches the large step left cold).
- ``cold_call``: what caches cost the Python side: a native step over one 16-element tensor right after a Rust-level
  step over N elements (which streams the step's memory through the caches), against the same call warm (after
  itself). ``tensors`` counts the large step's tensors.

Ratios above 1 mean this package is faster (or, for ``python_vs_rust`` and ``native_vs_rust``, that the Python
step or the native call is slower than the Rust step by that factor; for ``cold_call``, that the call after a large
step is slower than warm by that factor).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import adagrad_cpu
from adagrad_cpu import _native
from adagrad_cpu.torch import Adagrad

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (or the platform's answer)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def timed(fn: Callable[[], object], reps: int) -> float:
    """Seconds per call, the median of ``reps`` calls."""
    samples = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def reps_for(elements: int) -> int:
    """Calls per side per round: enough for a few milliseconds of work at any size, and never fewer than 15, so
    that the median is the side's own steady state. The first calls after the other side's turn run beside its
    threads still spinning (torch's OpenMP workers spin for milliseconds after a parallel region; this package's
    helpers for up to ``LINGER``), which with a handful of calls per turn would decide the median."""
    return max(15, min(200, 4_000_000 // max(elements, 1)))


def tensors(dtype: torch.dtype, n: int, count: int, seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``count`` parameters of ``n`` elements with gradients."""
    g = torch.Generator().manual_seed(seed)
    ps = [torch.randn(n, generator=g, dtype=dtype).requires_grad_() for _ in range(count)]
    for p in ps:
        p.grad = torch.randn(n, generator=g, dtype=dtype)
    return ps, [p.grad for p in ps if p.grad is not None]


def alternate(ours: Callable[[], float], other: Callable[[], float], rounds: int, ratio: str) -> dict[str, Any]:
    """Interleaved rounds of two measurements (each returns seconds; order alternating): both sides' medians and
    the per-round ratio, ``other/ours`` or ``ours/other`` as ``ratio`` says."""
    ratios, to, tt = [], [], []
    for r in range(rounds):
        if r % 2 == 0:
            x, y = ours(), other()
        else:
            y, x = other(), ours()
        to.append(x)
        tt.append(y)
        ratios.append(y / x if ratio == "other/ours" else x / y)
    return {
        "ours_s": statistics.median(to),
        "other_s": statistics.median(tt),
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
    }


def compare(a: Callable[[], object], b: Callable[[], object], rounds: int, reps: int) -> dict[str, Any]:
    """Interleaved rounds of ``a`` and ``b`` (``reps`` calls each per round); the per-round ratio b/a."""
    a()
    b()
    return alternate(lambda: timed(a, reps), lambda: timed(b, reps), rounds, "other/ours")


def bare_step(opt: Adagrad) -> Callable[[], None]:
    """``opt``'s native step with its arguments built once (lr 0.01, no decay, eps 1e-10): one native call reading
    the tensors, without the optimizer's Python layer. ``opt`` has stepped once (its state exists)."""
    groups = [(s.keys, s.backs, 0.01, 0.0, 0.0, 1e-10, False, 0.0) for s in opt._snapshot(None)]
    engine, cache = opt._engine, opt._cache

    def step() -> None:
        engine.torch_step(cache, groups)

    return step


def rust_steps(opt: Adagrad, ps: list[torch.Tensor], gs: list[torch.Tensor], reps: int) -> Callable[[], float]:
    """The Rust-level step over ``opt``'s memory (parameters ``ps``, gradients ``gs``, its accumulators): the median
    of ``reps`` steps, each timed by the Rust side's own clock inside the Rust loop."""
    engine = opt._engine
    arrays = [p.detach().numpy() for p in ps]
    garrays = [g.numpy() for g in gs]
    sums = [opt.state[p]["sum"].numpy() for p in ps]

    def rust() -> float:
        return statistics.median(_native.rust_step_seconds(engine, arrays, garrays, sums, reps))

    return rust


def kernel_row(dtype: str, n: int, count: int, threads: int, rounds: int) -> dict[str, Any]:
    """The crate's step through the binding against torch's bare fused kernel, the same sizes and threads."""
    torch.set_num_threads(threads)
    ps, _ = tensors(DTYPES[dtype], n, count, 1)
    tps, tgs = tensors(DTYPES[dtype], n, count, 1)
    ours = Adagrad(ps, lr=0.01, threads=threads)
    sums = [torch.zeros_like(p) for p in tps]
    steps = [torch.zeros((), dtype=torch.float32) for _ in tps]
    tparams = [p.detach() for p in tps]

    def theirs() -> None:
        torch._foreach_add_(steps, 1)
        torch._fused_adagrad_(
            tparams, tgs, sums, steps, lr=0.01, lr_decay=0.0, weight_decay=0.0, eps=1e-10, maximize=False
        )

    ours.step()
    row = compare(bare_step(ours), theirs, rounds, reps_for(n * count))
    return {"kind": "kernel", "dtype": dtype, "elements": n, "tensors": count, "threads": threads, **row}


def optimizer_row(dtype: str, n: int, count: int, threads: int, rounds: int) -> dict[str, Any]:
    """Ours against torch.optim.Adagrad(fused=True), both whole optimizers."""
    torch.set_num_threads(threads)
    ps, _ = tensors(DTYPES[dtype], n, count, 2)
    tps, _ = tensors(DTYPES[dtype], n, count, 2)
    ours = Adagrad(ps, lr=0.01, threads=threads)
    theirs = torch.optim.Adagrad(tps, lr=0.01, fused=True)
    row = compare(ours.step, theirs.step, rounds, reps_for(n * count))
    return {"kind": "optimizer", "dtype": dtype, "elements": n, "tensors": count, "threads": threads, **row}


def python_vs_rust_row(dtype: str, n: int, count: int, threads: int, rounds: int) -> dict[str, Any]:
    """The Python-level step against the Rust-level step on the same memory (ratio: Python time / Rust time)."""
    ps, gs = tensors(DTYPES[dtype], n, count, 3)
    opt = Adagrad(ps, lr=0.01, threads=threads)
    opt.step()
    reps = reps_for(n * count)
    row = alternate(lambda: timed(opt.step, reps), rust_steps(opt, ps, gs, reps), rounds, "ours/other")
    return {"kind": "python_vs_rust", "dtype": dtype, "elements": n, "tensors": count, "threads": threads, **row}


def native_vs_rust_row(dtype: str, n: int, count: int, threads: int, rounds: int) -> dict[str, Any]:
    """The bare native step (arguments built beforehand) against the Rust-level step on the same memory (ratio:
    native-call time / Rust time)."""
    ps, gs = tensors(DTYPES[dtype], n, count, 3)
    opt = Adagrad(ps, lr=0.01, threads=threads)
    opt.step()
    reps = reps_for(n * count)
    native = bare_step(opt)
    row = alternate(lambda: timed(native, reps), rust_steps(opt, ps, gs, reps), rounds, "ours/other")
    return {"kind": "native_vs_rust", "dtype": dtype, "elements": n, "tensors": count, "threads": threads, **row}


def cold_call_row(dtype: str, n: int, count: int, threads: int, rounds: int) -> dict[str, Any]:
    """A tiny native step right after a Rust-level step over ``count`` tensors of ``n`` elements, against the same
    tiny step warm (ratio: cold / warm)."""
    big, big_grads = tensors(DTYPES[dtype], n, count, 5)
    big_opt = Adagrad(big, lr=0.01, threads=threads)
    big_opt.step()
    big_step = rust_steps(big_opt, big, big_grads, 1)
    tiny, _ = tensors(DTYPES[dtype], 16, 1, 6)
    opt = Adagrad(tiny, lr=0.01, threads=threads)
    opt.step()
    call = bare_step(opt)

    def after_big() -> float:
        big_step()
        t = time.perf_counter()
        call()
        return time.perf_counter() - t

    row = alternate(
        lambda: statistics.median(after_big() for _ in range(100)), lambda: timed(call, 100), rounds, "ours/other"
    )
    return {"kind": "cold_call", "dtype": dtype, "elements": n, "tensors": count, "threads": threads, **row}


DEFAULT = [
    ("kernel", "float32", 4096, 1),
    ("kernel", "float32", 65536, 1),
    ("kernel", "float32", 1 << 20, 1),
    ("kernel", "float32", 1 << 24, 1),
    ("kernel", "float64", 65536, 1),
    ("kernel", "float64", 1 << 20, 1),
    ("kernel", "float32", 1024, 1024),
    ("optimizer", "float32", 1024, 1024),
    ("optimizer", "float32", 1 << 20, 1),
    ("python_vs_rust", "float32", 1 << 20, 1),
    ("python_vs_rust", "float32", 1024, 1024),
    ("native_vs_rust", "float32", 1 << 20, 1),
    ("cold_call", "float32", 1 << 20, 1),
]


def main(argv: list[str] | None = None) -> None:
    """Runs the rows and prints the table (and writes JSON with ``--json``)."""
    ap = argparse.ArgumentParser(prog="benches/python_bench.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=9, help="interleaved rounds per row (default 9)")
    ap.add_argument("--threads", default="1,2", help="thread counts, comma-separated (default 1,2)")
    ap.add_argument("--quick", action="store_true", help="small sizes only (a smoke run)")
    ap.add_argument("--json", help="write the rows and the machine to this file")
    ap.add_argument("--kinds", help="only these kinds of rows, comma-separated (default: every kind)")
    a = ap.parse_args(argv)
    threads = [int(t) for t in a.threads.split(",") if t]
    kinds = set(a.kinds.split(",")) if a.kinds else {r[0] for r in DEFAULT}
    unknown = kinds - {r[0] for r in DEFAULT}
    if unknown:
        ap.error(f"unknown kinds {sorted(unknown)}; kinds: {sorted({r[0] for r in DEFAULT})}")
    rows_spec = [r for r in DEFAULT if (not a.quick or r[2] * r[3] <= 1 << 20) and r[0] in kinds]
    makers = {
        "kernel": kernel_row,
        "optimizer": optimizer_row,
        "python_vs_rust": python_vs_rust_row,
        "native_vs_rust": native_vs_rust_row,
        "cold_call": cold_call_row,
    }
    engine = _native.Engine()
    print(f"cpu: {cpu_name()}; {os.cpu_count()} logical CPUs; path {engine.isa}; torch {torch.__version__}; ")
    print(f"adagrad_cpu {adagrad_cpu.__version__}; numpy {np.__version__}; rounds {a.rounds}; tuning {engine.tuning}")
    print(
        f"{'kind':15} {'dtype':8} {'elements':>9} {'tensors':>7} {'thr':>3} {'ours µs':>10} {'other µs':>10} "
        f"{'ratio':>6} {'range':>13}"
    )
    rows = []
    for kind, dtype, n, count in rows_spec:
        for t in threads:
            row = makers[kind](dtype, n, count, t, a.rounds)
            rows.append(row)
            print(
                f"{kind:15} {dtype:8} {n:>9} {count:>7} {t:>3} {row['ours_s'] * 1e6:>10.1f} "
                f"{row['other_s'] * 1e6:>10.1f} {row['ratio_median']:>6.2f} "
                f"{row['ratio_min']:>6.2f}–{row['ratio_max']:<6.2f}",
                flush=True,
            )
    if a.json:
        meta = {
            "schema": "adagrad-python-bench/v1",
            "cpu": cpu_name(),
            "logical_cpus": os.cpu_count(),
            "isa": engine.isa,
            "tuning": engine.tuning,
            "torch": torch.__version__,
            "adagrad_cpu": adagrad_cpu.__version__,
            "rounds": a.rounds,
            "ratio": (
                "kernel/optimizer: other/ours (>1: ours faster); python_vs_rust: python/rust;"
                " native_vs_rust: native call/rust; cold_call: cold/warm"
            ),
        }
        with open(a.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
