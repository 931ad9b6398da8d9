"""One rank of the ZeRO test: DDP + ZeroRedundancyOptimizer on gloo over 127.0.0.1 (run by test_zero.py)."""

from __future__ import annotations

import argparse
import datetime

import torch
import torch.distributed as dist
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.nn.parallel import DistributedDataParallel

import adagrad_cpu.torch as at


def main() -> None:
    """Trains a small model for a few steps and saves the parameters and the consolidated optimizer state."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--rank", type=int, required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--optimizer", choices=["ours", "torch"], required=True)
    ap.add_argument("--bucket-view", action="store_true")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{a.port}",
        rank=a.rank,
        world_size=2,
        timeout=datetime.timedelta(seconds=60),
    )
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(16, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(), torch.nn.Linear(64, 4)
    )
    ddp = DistributedDataParallel(model)
    kwargs = {"lr": 0.05, "weight_decay": 0.01, "lr_decay": 0.01}
    cls = at.Adagrad if a.optimizer == "ours" else torch.optim.Adagrad
    if a.optimizer == "torch":
        kwargs["fused"] = True
    opt = ZeroRedundancyOptimizer(
        ddp.parameters(), optimizer_class=cls, parameters_as_bucket_view=a.bucket_view, **kwargs
    )
    if a.optimizer == "ours":
        assert isinstance(opt.optim, at.Adagrad)
    gen = torch.Generator().manual_seed(100 + a.rank)
    for _ in range(6):
        x = torch.randn(32, 16, generator=gen)
        y = torch.randn(32, 4, generator=gen)
        opt.zero_grad()
        torch.nn.functional.mse_loss(ddp(x), y).backward()
        opt.step()
    opt.consolidate_state_dict(to=0)
    state = opt.state_dict() if a.rank == 0 else None
    torch.save({"params": [p.detach().clone() for p in model.parameters()], "state": state}, a.out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
