"""ZeRO: DDP + ZeroRedundancyOptimizer with this optimizer, two gloo processes on 127.0.0.1, bit-identical to
the same run with torch.optim.Adagrad(fused=True)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

WORKER = Path(__file__).with_name("zero_worker.py")


def free_port() -> int:
    """A port free on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def train(optimizer: str, bucket_view: bool, tmp: Path) -> list[dict[str, Any]]:
    """Both ranks' saved results; fails (never hangs) if a rank fails or exceeds 120 s."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    procs = []
    for rank in range(2):
        cmd = [
            sys.executable,
            str(WORKER),
            "--rank",
            str(rank),
            "--port",
            str(port),
            "--optimizer",
            optimizer,
            "--out",
            str(tmp / f"{optimizer}-{rank}.pt"),
        ]
        if bucket_view:
            cmd.append("--bucket-view")
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    try:
        for p in procs:
            out, _ = p.communicate(timeout=120)
            assert p.returncode == 0, out.decode(errors="replace")[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
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
