"""One rank of the FSDP2 tests (run by test_fsdp.py): a model sharded with ``fully_shard`` over gloo on 127.0.0.1,
its parameters DTensors, stepped by this package's Adagrad and compared, bit for bit, with the same model trained
in this process without sharding. Every mismatch raises (the rank exits non-zero); a JSON summary of what was
compared is written for the test to check."""

from __future__ import annotations

import argparse
import datetime
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard

import adagrad_cpu.torch as at

WORLD = 2
#: Two groups, each with its own learning rate, decay and weight decay (the accumulators start at 0.1).
WEIGHTS = {"lr": 0.05, "lr_decay": 0.01, "weight_decay": 0.01}
BIASES = {"lr": 0.1, "lr_decay": 0.001, "weight_decay": 0.0}
INIT = 0.1


def build() -> torch.nn.Module:
    """The model, initialised from a fixed seed (the same on every rank); odd widths, so that shards are uneven
    (the third layer's bias: 3 elements on rank 0, 2 on rank 1) and the last layer's are empty on rank 1."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(16, 33),
        torch.nn.Tanh(),
        torch.nn.Linear(33, 64),
        torch.nn.Tanh(),
        torch.nn.Linear(64, 5),
        torch.nn.Tanh(),
        torch.nn.Linear(5, 1),
    )


#: ``fully_shard``'s keyword arguments (``--offload`` adds FSDP2's CPU offload policy).
SHARDING: dict[str, Any] = {}


def shard(model: torch.nn.Module) -> torch.nn.Module:
    """FSDP2: each linear layer and the whole model, over every rank."""
    mesh = init_device_mesh("cpu", (WORLD,))
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh, **SHARDING)
    fully_shard(model, mesh=mesh, **SHARDING)
    return model


def groups(model: torch.nn.Module) -> list[dict[str, Any]]:
    """The weights and the biases as two parameter groups."""
    named = list(model.named_parameters())
    return [
        {"params": [p for n, p in named if n.endswith("weight")], **WEIGHTS},
        {"params": [p for n, p in named if n.endswith("bias")], **BIASES},
    ]


def optimizer(kind: str, model: torch.nn.Module, threads: int) -> torch.optim.Optimizer:
    """``ours`` (this package), ``fused`` (torch's fused Adagrad, unsharded models only) or ``torch`` (torch's
    default Adagrad, which runs on DTensors)."""
    if kind == "ours":
        opt = at.Adagrad(groups(model), initial_accumulator_value=INIT, threads=threads)
        return opt
    return torch.optim.Adagrad(groups(model), initial_accumulator_value=INIT, fused=kind == "fused" or None)


def batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` batches, the same on every rank (so the averaged gradient is the single-process one)."""
    gen = torch.Generator().manual_seed(100)
    return [(torch.randn(32, 16, generator=gen), torch.randn(32, 1, generator=gen)) for _ in range(n)]


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """One forward, backward and optimizer step."""
    opt.zero_grad()
    x, y = batch
    torch.nn.functional.mse_loss(model(x), y).backward()
    opt.step()


def full(t: torch.Tensor) -> torch.Tensor:
    """The whole value of a (possibly distributed) tensor."""
    return t.full_tensor() if isinstance(t, dist.tensor.DTensor) else t.detach()


def bits(t: torch.Tensor) -> torch.Tensor:
    """The bit patterns of a float32 tensor's whole value."""
    return full(t).contiguous().view(torch.int32)


def same_params(a: torch.nn.Module, b: torch.nn.Module, what: str) -> None:
    """Raises unless every parameter of ``a`` and ``b`` has the same bits."""
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        if not torch.equal(bits(pa), bits(pb)):
            diff = (full(pa) - full(pb)).abs().max().item()
            raise AssertionError(f"{what}: parameter {name} differs (max |Δ| {diff:g})")


def same_state(a: torch.optim.Optimizer, b: torch.optim.Optimizer, what: str) -> int:
    """Raises unless both optimizers' state (``sum``, ``step``) has the same bits for the same parameters in the
    same order; returns how many parameters' state was compared."""
    pa = [p for g in a.param_groups for p in g["params"]]
    pb = [p for g in b.param_groups for p in g["params"]]
    assert len(pa) == len(pb), what
    for i, (x, y) in enumerate(zip(pa, pb)):
        sa, sb = a.state[x], b.state[y]
        if not torch.equal(bits(sa["sum"]), bits(sb["sum"])):
            raise AssertionError(f"{what}: state 'sum' of parameter {i} differs")
        if float(sa["step"]) != float(sb["step"]):
            raise AssertionError(f"{what}: state 'step' of parameter {i}: {float(sa['step'])} vs {float(sb['step'])}")
    return len(pa)


def check_dtensor_state(opt: at.Adagrad) -> int:
    """Raises unless every ``sum`` is a DTensor laid out as its parameter, whose shard is the memory the step
    updates; returns how many were checked."""
    n = 0
    for g in opt.param_groups:
        for p in g["params"]:
            s = opt.state[p]["sum"]
            assert isinstance(s, dist.tensor.DTensor), type(s)
            assert s.placements == p.placements and s.device_mesh == p.device_mesh and s.shape == p.shape
            assert s.to_local().shape == p.to_local().shape
            n += 1
    return n


def run_train(steps: int, threads: int) -> dict[str, Any]:
    """FSDP2 + this optimizer against one process + ``torch.optim.Adagrad(fused=True)``, after every step."""
    ref = build()
    model = shard(build())
    ours = optimizer("ours", model, threads)
    fused = optimizer("fused", ref, 1)
    assert ours.threads == threads
    moved = 0
    for i, batch in enumerate(batches(steps)):
        train_step(model, ours, batch)
        train_step(ref, fused, batch)
        same_params(model, ref, f"step {i + 1}")
        moved += 1
    compared = same_state(ours, fused, "after training")
    checked = check_dtensor_state(ours)
    # Training moved the parameters (a comparison of untouched parameters would prove nothing).
    start = build()
    assert all(not torch.equal(full(p), q) for p, q in zip(model.parameters(), start.parameters()))
    # The state dict keeps torch.optim.Adagrad's layout, with DTensor sums.
    sd = ours.state_dict()
    assert sorted(sd["state"]) == list(range(8)) and all(sorted(v) == ["step", "sum"] for v in sd["state"].values())
    assert all(isinstance(v["sum"], dist.tensor.DTensor) for v in sd["state"].values())
    return {"steps_compared": moved, "state_compared": compared, "dtensor_sums": checked}


def save(model: torch.nn.Module, opt: torch.optim.Optimizer, path: Path) -> None:
    """A distributed checkpoint of the model and the optimizer, as torch documents it."""
    msd, osd = get_state_dict(model, opt)
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(path))


def load(model: torch.nn.Module, opt: torch.optim.Optimizer, path: Path) -> None:
    """Loads a checkpoint written by ``save`` into ``model`` and ``opt``."""
    msd, osd = get_state_dict(model, opt)
    sd = {"model": msd, "optim": osd}
    dcp.load(sd, checkpoint_id=str(path))
    set_state_dict(model, opt, model_state_dict=sd["model"], optim_state_dict=sd["optim"])


def unsharded_copy(model: torch.nn.Module, opt: torch.optim.Optimizer, kind: str) -> tuple[Any, Any]:
    """The same model and optimizer state in one process, unsharded, under an optimizer of ``kind``."""
    ref = build()
    with torch.no_grad():
        for p, q in zip(ref.parameters(), model.parameters(), strict=True):
            p.copy_(full(q))
    ref_opt = optimizer(kind, ref, 1)
    for p, q in zip(
        [p for g in ref_opt.param_groups for p in g["params"]],
        [p for g in opt.param_groups for p in g["params"]],
        strict=True,
    ):
        ref_opt.state[p]["sum"].copy_(full(opt.state[q]["sum"]))
        ref_opt.state[p]["step"].copy_(opt.state[q]["step"])
    if isinstance(ref_opt, at.Adagrad):
        ref_opt.load_state_dict(ref_opt.state_dict())
    return ref, ref_opt


def continue_both(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    ref: torch.nn.Module,
    ref_opt: torch.optim.Optimizer,
    data: list[tuple[torch.Tensor, torch.Tensor]],
    what: str,
) -> int:
    """Steps both pairs on ``data``, comparing parameters after every step; returns the steps compared."""
    for i, batch in enumerate(data):
        train_step(model, opt, batch)
        train_step(ref, ref_opt, batch)
        same_params(model, ref, f"{what}, step {i + 1} after loading")
    return len(data)


def run_dcp(steps: int, threads: int, root: Path) -> dict[str, Any]:
    """Distributed checkpoints: ours → ours (the uninterrupted trajectory), torch → ours and ours → torch (the
    state loads bit for bit and training continues as one process would with the same state)."""
    data = batches(2 * steps)
    first, rest = data[:steps], data[steps:]
    out: dict[str, Any] = {}

    # ours → ours: save mid-run; a fresh model and optimizer load it and continue as the uninterrupted run did.
    model = shard(build())
    opt = optimizer("ours", model, threads)
    for batch in first:
        train_step(model, opt, batch)
    save(model, opt, root / "ours")
    saved = unsharded_copy(model, opt, "ours")
    trajectory = []
    for batch in rest:
        train_step(model, opt, batch)
        trajectory.append([bits(p) for p in model.parameters()])
    model2 = shard(build())
    opt2 = optimizer("ours", model2, threads)
    load(model2, opt2, root / "ours")
    out["ours_to_ours_state"] = same_state(opt2, saved[1], "ours → ours, loaded")
    check_dtensor_state(opt2)
    for i, batch in enumerate(rest):
        train_step(model2, opt2, batch)
        for j, p in enumerate(model2.parameters()):
            if not torch.equal(bits(p), trajectory[i][j]):
                raise AssertionError(f"ours → ours: parameter {j} differs from the uninterrupted run at step {i + 1}")
    out["ours_to_ours_steps"] = len(rest)

    # torch → ours: torch's default Adagrad under FSDP2 saves; ours loads the same state and continues as
    # torch's fused Adagrad does from it in one process.
    model = shard(build())
    opt = optimizer("torch", model, 1)
    for batch in first:
        train_step(model, opt, batch)
    save(model, opt, root / "torch")
    model2 = shard(build())
    opt2 = optimizer("ours", model2, threads)
    load(model2, opt2, root / "torch")
    out["torch_to_ours_state"] = same_state(opt2, opt, "torch → ours, loaded")
    same_params(model2, model, "torch → ours, loaded")
    check_dtensor_state(opt2)
    ref, ref_opt = unsharded_copy(model2, opt2, "fused")
    out["torch_to_ours_steps"] = continue_both(model2, opt2, ref, ref_opt, rest, "torch → ours")

    # ours → torch: torch's default Adagrad under FSDP2 loads our checkpoint and continues as it does from the
    # same state in one process.
    model3 = shard(build())
    opt3 = optimizer("torch", model3, 1)
    load(model3, opt3, root / "ours")
    out["ours_to_torch_state"] = same_state(opt3, saved[1], "ours → torch, loaded")
    ref, ref_opt = unsharded_copy(model3, opt3, "torch")
    out["ours_to_torch_steps"] = continue_both(model3, opt3, ref, ref_opt, rest, "ours → torch")
    return out


def main() -> None:
    """Runs one scenario on this rank and writes its summary."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--rank", type=int, required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--scenario", choices=["train", "dcp"], required=True)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--offload", action="store_true", help="shard with CPUOffloadPolicy (pinned memory off)")
    a = ap.parse_args()
    if a.offload:
        SHARDING["offload_policy"] = CPUOffloadPolicy(pin_memory=False)
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{a.port}",
        rank=a.rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=60),
    )
    root = Path(a.dir)
    scenarios: dict[str, Callable[[], dict[str, Any]]] = {
        "train": lambda: run_train(a.steps, a.threads),
        "dcp": lambda: run_dcp(a.steps, a.threads, root),
    }
    summary = scenarios[a.scenario]()
    (root / f"{a.scenario}-{a.rank}.json").write_text(json.dumps(summary))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
