"""The step where users run it: inside one Python process that also runs PyTorch, right after other work.

Two benchmarks, both interleaved in one process (the sides alternate within every round; medians of the
per-round ratios), ours being ``adagrad_cpu.torch.Adagrad`` with its default threads (as many as
``torch.get_num_threads()``):

- ``loop``: real models trained side by side on identical copies — a dense MLP (8.4M parameters), a transformer
  encoder (3.2M in 50 tensors) and an embedding-bag model (a 1M x 64 table with sparse gradients and an MLP) —
  iterations alternating between ours and ``torch.optim.Adagrad`` (``fused=True`` for the dense models; the
  sparse-gradient model's torch side runs torch's default step, the only one it has for sparse gradients). It
  reports the median step time, the median whole-iteration time and the medians of the per-iteration ratios, and
  checks that the dense copies stay bit-identical to torch's. ``--variants`` adds copies of ours with other
  settings, in the same rounds: ``pool`` (the crate's own threads), ``openmp`` (torch's OpenMP team),
  ``pool-no-linger`` (own threads that do not linger after a step, ``ADAGRAD_TUNE=linger=0``).
- ``gap``: one step of 786,432 f32 elements (3 tensors) or 16.7M (4 tensors) after a precondition — nothing, a
  5 ms sleep, a 5 ms single-threaded busy loop, or a torch parallel op — for ours on N threads, ours on one
  thread, and ``torch.optim.Adagrad(fused=True)``. ``torch/ours`` > 1: ours is faster; ``1T/NT`` > 1: our N-thread
  step is faster than our one-thread step.

Run from the project root with the test environment (``.venv``, which has torch)::

    .venv/bin/python benches/inloop.py --json docs/results/inloop-intel-spr.json | tee docs/results/inloop-intel-spr.txt
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import adagrad_cpu
import adagrad_cpu.torch as at


def cpu_model() -> str:
    """The CPU as /proc/cpuinfo names it, with its family and model numbers."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
                if not line.strip():
                    break
    except OSError:
        return platform.processor()
    return f"{fields.get('model name', '?')} (family {fields.get('cpu family', '?')} model {fields.get('model', '?')})"


def header() -> None:
    """The first line of a run's output: the machine and the versions measured."""
    print(
        f"# {cpu_model()}, {os.cpu_count() or 1} CPUs; torch {torch.__version__}, adagrad_cpu "
        f"{adagrad_cpu.__version__}, python {platform.python_version()}",
        flush=True,
    )


def store(path: str | None, rows: list[dict[str, Any]], argv: argparse.Namespace) -> None:
    """Writes ``rows`` with the machine and the arguments to ``path`` as JSON (nothing when ``path`` is None)."""
    if path:
        meta = {"cpu": cpu_model(), "cpus": os.cpu_count() or 1, "torch": torch.__version__, "argv": vars(argv)}
        with open(path, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)


def load() -> float:
    """The one-minute load average (others' work on this shared machine shows here)."""
    return os.getloadavg()[0]


def ratio(a: list[float], b: list[float]) -> float:
    """Median of the per-round ratios a[i] / b[i]."""
    return statistics.median(x / y for x, y in zip(a, b))


# --- models ------------------------------------------------------------------------------------------------------


class Mlp(nn.Module):
    """A dense MLP of 8.4M parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(1024, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 1024)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network's output."""
        return self.net(x)


class Encoder(nn.Module):
    """A transformer encoder of 3.2M parameters in 50 tensors (many small ones: biases and norms)."""

    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(d_model=256, nhead=4, dim_feedforward=1024, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, num_layers=4, enable_nested_tensor=False)
        self.head = nn.Linear(256, 256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's output."""
        return self.head(self.enc(x))


class Bags(nn.Module):
    """An embedding-bag model: a 1M x 64 table with sparse gradients, then an MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.EmbeddingBag(1_000_000, 64, mode="sum", sparse=True)
        self.mlp = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 1))

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """The model's score per bag."""
        return self.mlp(self.table(ids, offsets))


def batches(name: str, n: int) -> list[tuple[torch.Tensor, ...]]:
    """``n`` input batches (inputs and target) for model ``name``, the same for every side."""
    g = torch.Generator().manual_seed(1)
    out: list[tuple[torch.Tensor, ...]] = []
    for _ in range(n):
        if name == "mlp":
            out.append((torch.randn(256, 1024, generator=g), torch.randn(256, 1024, generator=g)))
        elif name == "transformer":
            out.append((torch.randn(16, 64, 256, generator=g), torch.randn(16, 64, 256, generator=g)))
        else:
            bags, per = 2048, 16
            # Zipf-like ids: a few hot rows, a long tail.
            ids = (torch.rand(bags * per, generator=g) ** 3 * 1_000_000).long()
            offsets = torch.arange(0, bags * per, per)
            out.append((ids, offsets, torch.randn(bags, 1, generator=g)))
    return out


def make(name: str) -> nn.Module:
    """Model ``name``, with weights from a fixed seed."""
    torch.manual_seed(0)
    return {"mlp": Mlp, "transformer": Encoder, "dlrm": Bags}[name]()


# --- the in-loop benchmark ---------------------------------------------------------------------------------------


#: Variants of ours besides the default (``--variants``): the optimizer's keyword arguments and ``ADAGRAD_TUNE``.
VARIANTS: dict[str, tuple[dict[str, Any], str]] = {
    "pool": ({"team": "pool"}, ""),
    "openmp": ({"team": "openmp"}, ""),
    "pool-no-linger": ({"team": "pool"}, "linger=0"),
}


def ours(params: Any, variant: str, **kw: Any) -> at.Adagrad:
    """Our optimizer over ``params``: the default settings (``variant`` "ours") or one of ``VARIANTS``."""
    args, tune = VARIANTS.get(variant, ({}, ""))
    if tune:
        os.environ["ADAGRAD_TUNE"] = tune
    try:
        return at.Adagrad(params, lr=0.01, **args, **kw)
    finally:
        if tune:
            del os.environ["ADAGRAD_TUNE"]


def alternate(
    sides: dict[str, tuple[nn.Module, torch.optim.Optimizer]], data: list[tuple[torch.Tensor, ...]]
) -> dict[str, tuple[list[float], list[float]]]:
    """Trains every side on every batch, the sides taking turns in a rotating order; per side the step times and
    the whole-iteration times (forward, backward, step) of every iteration after the first three (warm-up)."""
    times: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in sides}
    order = list(sides)
    for i, batch in enumerate(data):
        for k in order[i % len(order) :] + order[: i % len(order)]:
            model, opt = sides[k]
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            out = model(*batch[:-1])
            loss = nn.functional.mse_loss(out, batch[-1])
            loss.backward()
            t1 = time.perf_counter()
            opt.step()
            t2 = time.perf_counter()
            if i >= 3:
                times[k][0].append(t2 - t1)
                times[k][1].append(t2 - t0)
    return times


def loop_row(name: str, threads: int, iters: int, variants: list[str]) -> dict[str, Any]:
    """``iters`` training iterations of model ``name`` per side on ``threads`` torch threads, alternating."""
    torch.set_num_threads(threads)
    data = batches(name, iters)
    base = make(name)
    sides: dict[str, tuple[nn.Module, torch.optim.Optimizer]] = {}
    dense = name != "dlrm"
    for v in ["ours", *variants]:
        m = copy.deepcopy(base)
        sides[v] = (m, ours(m.parameters(), v))
    m = copy.deepcopy(base)
    sides["torch"] = (m, torch.optim.Adagrad(m.parameters(), lr=0.01, fused=True if dense else None))
    times = alternate(sides, data)
    identical = None
    if dense:
        identical = all(
            torch.equal(a.detach().view(torch.int32), b.detach().view(torch.int32))
            for v in ["ours", *variants]
            for a, b in zip(sides[v][0].parameters(), sides["torch"][0].parameters())
        )
    row: dict[str, Any] = {
        "bench": "loop",
        "model": name,
        "params": sum(p.numel() for p in base.parameters()),
        "tensors": len(list(base.parameters())),
        "threads": threads,
        "ours_threads": sides["ours"][1].threads,  # type: ignore[attr-defined]
        "iterations": len(times["ours"][0]),
        "load": load(),
        "bit_identical": identical,
    }
    for k, (step, it) in times.items():
        row[f"{k}_step_ms"] = statistics.median(step) * 1e3
        row[f"{k}_iter_ms"] = statistics.median(it) * 1e3
    for v in ["ours", *variants]:
        row[f"step_torch_over_{v}"] = ratio(times["torch"][0], times[v][0])
        row[f"iter_torch_over_{v}"] = ratio(times["torch"][1], times[v][1])
    row["variants"] = variants
    return row


def print_loop(r: dict[str, Any]) -> None:
    """One line of the in-loop table."""
    line = (
        f"{r['model']:<12} {r['params'] / 1e6:6.2f}M {r['tensors']:3d}t T={r['threads']} "
        f"step ours {r['ours_step_ms']:7.3f} ms torch {r['torch_step_ms']:7.3f} ms "
        f"torch/ours {r['step_torch_over_ours']:5.2f}x | iteration ours {r['ours_iter_ms']:7.2f} "
        f"torch {r['torch_iter_ms']:7.2f} torch/ours {r['iter_torch_over_ours']:5.2f}x | "
        f"bit-identical {r['bit_identical']}"
    )
    for v in r["variants"]:
        line += (
            f" | {v}: step {r[f'{v}_step_ms']:7.3f} ms torch/{v} {r[f'step_torch_over_{v}']:5.2f}x"
            f" iteration {r[f'iter_torch_over_{v}']:5.2f}x"
        )
    print(line + f" | load {r['load']:.1f}", flush=True)


# --- the step-after-gap benchmark --------------------------------------------------------------------------------


def busy(seconds: float) -> None:
    """Keeps this thread busy (in Python, single-threaded) for ``seconds``."""
    end = time.perf_counter() + seconds
    x = 0
    while time.perf_counter() < end:
        x += 1


def preconditions() -> dict[str, Callable[[], None]]:
    """What runs just before each timed step."""
    a = torch.randn(512, 512)
    big = torch.randn(4_000_000)

    def torch_op() -> None:
        """torch's OpenMP team at work: a matrix product and an element-wise op over 16 MB."""
        torch.mm(a, a)
        big.mul_(1.0000001)

    return {
        "none": lambda: None,
        "sleep": lambda: time.sleep(0.005),
        "busy": lambda: busy(0.005),
        "torch_op": torch_op,
    }


def gap_row(n: int, tensors: int, threads: int, pre: str, rounds: int, variants: list[str]) -> dict[str, Any]:
    """``rounds`` steps per side of ``n`` f32 elements in ``tensors`` tensors after precondition ``pre``."""
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(2)
    shapes = [n // tensors] * tensors
    init = [torch.randn(s, generator=g) for s in shapes]
    grads = [torch.randn(s, generator=g) * 1e-2 for s in shapes]

    def params() -> list[torch.Tensor]:
        ps = [p.clone().requires_grad_() for p in init]
        for p, gr in zip(ps, grads):
            p.grad = gr.clone()
        return ps

    sides: dict[str, torch.optim.Optimizer] = {v: ours(params(), v) for v in ["ours", *variants]}
    sides["ours1"] = at.Adagrad(params(), lr=0.01, threads=1)
    sides["torch"] = torch.optim.Adagrad(params(), lr=0.01, fused=True)
    before = preconditions()[pre]
    times: dict[str, list[float]] = {k: [] for k in sides}
    order = list(sides)
    for i in range(rounds + 2):
        for k in order[i % len(order) :] + order[: i % len(order)]:
            before()
            t0 = time.perf_counter()
            sides[k].step()
            t1 = time.perf_counter()
            if i >= 2:
                times[k].append(t1 - t0)
    return {
        "bench": "gap",
        "elements": n,
        "tensors": tensors,
        "threads": threads,
        "ours_threads": sides["ours"].threads,  # type: ignore[attr-defined]
        "before": pre,
        "rounds": rounds,
        "load": load(),
        **{f"{k}_ms": statistics.median(v) * 1e3 for k, v in times.items()},
        **{f"torch_over_{v}": ratio(times["torch"], times[v]) for v in ["ours", *variants]},
        **{f"one_over_{v}": ratio(times["ours1"], times[v]) for v in ["ours", *variants]},
        "variants": variants,
    }


def print_gap(r: dict[str, Any]) -> None:
    """One line of the step-after-gap table."""
    line = (
        f"{r['elements']:>9} T={r['threads']} {r['before']:<9} ours {r['ours_ms']:7.3f} ours1 {r['ours1_ms']:7.3f} "
        f"torch {r['torch_ms']:7.3f} ms  torch/ours {r['torch_over_ours']:5.2f}x  1T/NT {r['one_over_ours']:5.2f}"
    )
    for v in r["variants"]:
        line += f" | {v} {r[f'{v}_ms']:7.3f} torch/{v} {r[f'torch_over_{v}']:5.2f}x 1T/NT {r[f'one_over_{v}']:5.2f}"
    print(line + f" | load {r['load']:.1f}", flush=True)


def main() -> None:
    """Runs the chosen benchmarks and prints (and optionally stores) their rows."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cores = os.cpu_count() or 1
    ap.add_argument("--bench", default="loop,gap", help="loop, gap or both (default loop,gap)")
    ap.add_argument("--threads", default=None, help=f"thread counts, comma-separated (default 1,2,{cores})")
    ap.add_argument("--models", default="mlp,transformer,dlrm", help="models of the loop benchmark")
    ap.add_argument("--iters", type=int, default=33, help="iterations per side and model (3 of them warm-up)")
    ap.add_argument("--rounds", type=int, default=41, help="timed steps per side in the gap benchmark")
    ap.add_argument("--sizes", default="786432:3,16777216:4", help="gap benchmark: elements:tensors, ...")
    ap.add_argument(
        "--variants",
        default="",
        help=f"more copies of ours, besides the default, comma-separated: {', '.join(VARIANTS)}",
    )
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    a = ap.parse_args()
    threads = sorted({int(t) for t in (a.threads or f"1,2,{cores}").split(",") if t})
    variants = [v for v in a.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    header()
    rows: list[dict[str, Any]] = []
    benches = set(a.bench.split(","))
    if "loop" in benches:
        for name in a.models.split(","):
            for t in threads:
                rows.append(loop_row(name, t, a.iters, variants))
                print_loop(rows[-1])
    if "gap" in benches:
        for spec in a.sizes.split(","):
            n, k = (int(x) for x in spec.split(":"))
            for t in threads:
                for pre in preconditions():
                    rows.append(gap_row(n, k, t, pre, a.rounds, variants))
                    print_gap(rows[-1])
    store(a.json, rows, a)


if __name__ == "__main__":
    main()
