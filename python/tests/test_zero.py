"""ZeRO: DDP + ZeroRedundancyOptimizer with this optimizer, two gloo processes on 127.0.0.1, bit-identical to
the same run with torch.optim.Adagrad(fused=True)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from ranks import run_ranks

WORKER = Path(__file__).with_name("zero_worker.py")


def train(optimizer: str, bucket_view: bool, tmp: Path) -> list[dict[str, Any]]:
    """Both ranks' saved results; fails (never hangs) if a rank fails or exceeds 120 s."""
    args = []
    for rank in range(2):
        args.append(["--optimizer", optimizer, "--out", str(tmp / f"{optimizer}-{rank}.pt")])
        if bucket_view:
            args[-1].append("--bucket-view")
    run_ranks(WORKER, args, 120)
    return [torch.load(tmp / f"{optimizer}-{r}.pt", weights_only=False) for r in range(2)]


@pytest.mark.parametrize("bucket_view", [False, True], ids=["params", "bucket_view"])
def test_zero_matches_torch_fused(bucket_view: bool, tmp_path: Path) -> None:
    """Parameters on both ranks and the consolidated state: the same bits as torch's fused Adagrad."""
    ours = train("ours", bucket_view, tmp_path)
    ref = train("torch", bucket_view, tmp_path)
    for r in range(2):
        for a, b in zip(ref[r]["params"], ours[r]["params"]):
            assert torch.equal(a.view(torch.int32), b.view(torch.int32))
    sa, sb = ref[0]["state"], ours[0]["state"]
    assert sorted(sa["state"]) == sorted(sb["state"]) and len(sa["state"]) == 6
    for k in sa["state"]:
        assert torch.equal(sa["state"][k]["sum"].view(torch.int32), sb["state"][k]["sum"].view(torch.int32))
        assert torch.equal(sa["state"][k]["step"], sb["state"][k]["step"])
