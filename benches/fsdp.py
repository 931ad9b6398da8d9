"""The step on FSDP2 shards, where FSDP2 users run it: ours against ``torch.optim.Adagrad()`` on each rank.

Models of the in-loop benchmark (``inloop.py``: the 8.4M MLP, the 3.2M transformer encoder in 50 tensors) are
sharded with ``fully_shard`` (each layer, then the model) over gloo ranks on this machine; every rank trains
identical copies side by side, iterations alternating (forward, backward with FSDP2's gradient reduce-scatter,
then the step): ``ours`` (``adagrad_cpu.torch.Adagrad``, default settings), ``torch`` (``torch.optim.Adagrad()``,
torch's default step, the one that runs on DTensors) and ``foreach`` (``torch.optim.Adagrad(foreach=True)``).
torch's fused step has no DTensor support. Per rank: median step and iteration times, medians of the per-iteration
ratios (``torch/ours`` > 1: ours is faster).

``--configs`` lists world sizes and torch threads per rank (``2x1``: two ranks of one thread). Run from the project
root with the test environment::

    .venv/bin/python benches/fsdp.py --json docs/results/fsdp-intel-spr.json | tee docs/results/fsdp-intel-spr.txt
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import socket
import statistics
import subprocess
import sys
from typing import Any

import torch
import torch.distributed as dist
from inloop import alternate, batches, header, load, make, ratio, store
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

import adagrad_cpu.torch as at

SIDES = ("ours", "torch", "foreach")


def shard(model: nn.Module, world: int) -> nn.Module:
    """FSDP2 over ``world`` ranks: each linear layer (MLP) or encoder layer (transformer), then the model."""
    mesh = init_device_mesh("cpu", (world,))
    units = list(model.enc.layers) + [model.head] if hasattr(model, "enc") else list(model.net)
    for unit in units:
        if any(True for _ in unit.parameters()):
            fully_shard(unit, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def optimizer(side: str, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer of ``side`` over ``model``'s (sharded) parameters."""
    if side == "ours":
        return at.Adagrad(model.parameters(), lr=0.01)
    return torch.optim.Adagrad(model.parameters(), lr=0.01, foreach=True if side == "foreach" else None)


def rank_row(name: str, world: int, threads: int, iters: int) -> dict[str, Any]:
    """This rank's timings of ``iters`` iterations per side of model ``name``."""
    torch.set_num_threads(threads)
    base = make(name)
    sides = {}
    for side in SIDES:
        m = shard(copy.deepcopy(base), world)
        sides[side] = (m, optimizer(side, m))
    times = alternate(sides, batches(name, iters))
    local = sum(p.to_local().numel() for p in sides["ours"][0].parameters())
    row: dict[str, Any] = {
        "model": name,
        "params": sum(p.numel() for p in base.parameters()),
        "tensors": len(list(base.parameters())),
        "local_elements": local,
        "world": world,
        "rank": dist.get_rank(),
        "threads": threads,
        "ours_threads": sides["ours"][1].threads,  # type: ignore[attr-defined]
        "ours_team": sides["ours"][1].team,  # type: ignore[attr-defined]
        "iterations": len(times["ours"][0]),
        "load": load(),
    }
    for k, (step, it) in times.items():
        row[f"{k}_step_ms"] = statistics.median(step) * 1e3
        row[f"{k}_iter_ms"] = statistics.median(it) * 1e3
    for k in ("torch", "foreach"):
        row[f"step_{k}_over_ours"] = ratio(times[k][0], times["ours"][0])
        row[f"iter_{k}_over_ours"] = ratio(times[k][1], times["ours"][1])
    return row


def print_row(r: dict[str, Any]) -> None:
    """One line of the table."""
    print(
        f"{r['model']:<12} {r['params'] / 1e6:5.2f}M {r['tensors']:3d}t world {r['world']} rank {r['rank']} "
        f"T={r['threads']} shard {r['local_elements'] / 1e6:5.2f}M | step ours {r['ours_step_ms']:7.3f} ms "
        f"torch {r['torch_step_ms']:8.3f} ms foreach {r['foreach_step_ms']:8.3f} ms | torch/ours "
        f"{r['step_torch_over_ours']:6.2f}x foreach/ours {r['step_foreach_over_ours']:6.2f}x | iteration ours "
        f"{r['ours_iter_ms']:7.2f} ms torch/ours {r['iter_torch_over_ours']:5.2f}x foreach/ours "
        f"{r['iter_foreach_over_ours']:5.2f}x | load {r['load']:.1f}",
        flush=True,
    )


def rank_main(a: argparse.Namespace) -> None:
    """One rank: every model, rows gathered to rank 0 and written to ``--out``."""
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{a.port}",
        rank=a.rank,
        world_size=a.world,
        timeout=datetime.timedelta(seconds=600),
    )
    rows = [rank_row(name, a.world, a.rank_threads, a.iters) for name in a.models.split(",")]
    gathered: list[Any] = [None] * a.world
    dist.all_gather_object(gathered, rows)
    if a.rank == 0:
        with open(a.out, "w") as f:
            json.dump([r for rs in gathered for r in rs], f)
    dist.destroy_process_group()


def free_port() -> int:
    """A port free on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(world: int, threads: int, a: argparse.Namespace, out: str) -> list[dict[str, Any]]:
    """Runs ``world`` ranks of ``threads`` threads each; returns their rows."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--rank", str(r), "--world", str(world), "--port", str(port)]
            + ["--rank-threads", str(threads), "--models", a.models, "--iters", str(a.iters), "--out", out],
            env=env,
        )
        for r in range(world)
    ]
    if any(p.wait() != 0 for p in procs):
        raise SystemExit("a rank failed")
    with open(out) as f:
        return json.load(f)


def main() -> None:
    """Launches every configuration and prints (and optionally stores) the rows."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="1x1,1x2,2x1", help="world x threads per rank, comma-separated")
    ap.add_argument("--models", default="mlp,transformer", help="models (from inloop.py)")
    ap.add_argument("--iters", type=int, default=33, help="iterations per side (3 of them warm-up)")
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    ap.add_argument("--rank", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--world", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--rank-threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--out", default="", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.rank is not None:
        rank_main(a)
        return
    configs = []
    for spec in a.configs.split(","):
        try:
            world, threads = (int(x) for x in spec.split("x"))
        except ValueError:
            ap.error(f"--configs: {spec!r} is not WORLDxTHREADS")
        if world < 1 or threads < 1:
            ap.error(f"--configs: {spec!r} needs at least one rank and one thread")
        configs.append((world, threads))
    header()
    rows: list[dict[str, Any]] = []
    out = f"/tmp/adagrad-fsdp-bench-{os.getpid()}.json"
    try:
        for world, threads in configs:
            for r in launch(world, threads, a, out):
                rows.append(r)
                print_row(r)
    finally:
        if os.path.exists(out):
            os.remove(out)
    store(a.json, rows, a)


if __name__ == "__main__":
    main()
