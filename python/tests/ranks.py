"""Starting the gloo ranks of a distributed test on 127.0.0.1: a free port, and processes that fail (never hang)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    """A port free on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_ranks(worker: Path, args: list[list[str]], timeout: float) -> None:
    """Runs ``worker`` once per rank with ``--rank R --port P`` and that rank's ``args``, one OpenMP thread each;
    fails with the rank's output if a rank fails or exceeds ``timeout`` seconds (the others are killed)."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    procs = []
    for rank, extra in enumerate(args):
        cmd = [sys.executable, str(worker), "--rank", str(rank), "--port", str(port), *extra]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    try:
        for p in procs:
            out, _ = p.communicate(timeout=timeout)
            assert p.returncode == 0, out.decode(errors="replace")[-4000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
