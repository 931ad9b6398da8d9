"""FSDP2 (``fully_shard``, DTensor parameters) with this optimizer: two gloo processes on 127.0.0.1, bit-identical
to one process training the same model with ``torch.optim.Adagrad(fused=True)``; distributed checkpoints
(``torch.distributed.checkpoint``) between this optimizer and torch's, in both directions. The comparisons run in
the ranks (fsdp_worker.py), which fail on the first differing bit; the summaries say what was compared."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ranks import run_ranks

WORKER = Path(__file__).with_name("fsdp_worker.py")


def launch(scenario: str, tmp: Path, steps: int, threads: int, *extra: str) -> list[dict[str, Any]]:
    """Runs ``scenario`` on two ranks; returns both ranks' summaries. Fails (never hangs) if a rank fails or
    exceeds 180 s."""
    args = ["--scenario", scenario, "--steps", str(steps), "--threads", str(threads), "--dir", str(tmp), *extra]
    run_ranks(WORKER, [args, args], 180)
    return [json.loads((tmp / f"{scenario}-{r}.json").read_text()) for r in range(2)]


@pytest.mark.parametrize("threads", [1, 2])
def test_fsdp2_matches_single_process_fused(threads: int, tmp_path: Path) -> None:
    """24 steps, two groups (weight decay, lr_decay), uneven shards: after every step the full parameters are the
    single-process fused run's, and at the end so is every DTensor ``sum``."""
    for summary in launch("train", tmp_path, 24, threads):
        assert summary == {"steps_compared": 24, "state_compared": 8, "dtensor_sums": 8}


def test_fsdp2_cpu_offload_policy(tmp_path: Path) -> None:
    """``fully_shard(..., offload_policy=CPUOffloadPolicy())``, the shards kept in FSDP2's offload buffers: the same
    bits. (Here the mesh is the CPU's own, so nothing moves between devices; with an accelerator the shards and
    gradients arrive in these CPU buffers the same way.)"""
    for summary in launch("train", tmp_path, 24, 2, "--offload"):
        assert summary == {"steps_compared": 24, "state_compared": 8, "dtensor_sums": 8}


def test_distributed_checkpoints_both_directions(tmp_path: Path) -> None:
    """Saved by ours and loaded by ours: the uninterrupted trajectory. Saved by torch's default Adagrad and loaded
    by ours, or the reverse: the same state, and training continues as one process continues from it."""
    for summary in launch("dcp", tmp_path, 10, 2):
        assert summary == {
            "ours_to_ours_state": 8,
            "ours_to_ours_steps": 10,
            "torch_to_ours_state": 8,
            "torch_to_ours_steps": 10,
            "ours_to_torch_state": 8,
            "ours_to_torch_steps": 10,
        }
