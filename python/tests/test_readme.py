"""The Python examples of README.md and python/README.md run as printed: each ```python block, whole, in a fresh
interpreter, as a launcher such as torchrun would start it on one rank (RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT
set, for the distributed example)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ranks import free_port

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def blocks() -> list[tuple[str, str]]:
    """Every Python block of the two READMEs: (where, code)."""
    out = []
    for readme in (ROOT / "README.md", ROOT / "python" / "README.md"):
        text = readme.read_text()
        for m in BLOCK.finditer(text):
            line = text[: m.start()].count("\n") + 1
            out.append((f"{readme.relative_to(ROOT)}:{line}", m.group(1)))
    return out


def test_both_readmes_have_examples() -> None:
    """The READMEs' Python examples are found (a changed fence would otherwise skip them all)."""
    where = [w for w, _ in blocks()]
    assert sum(w.startswith("README.md") for w in where) >= 2 and any(w.startswith("python/") for w in where)


@pytest.mark.parametrize(("where", "code"), blocks(), ids=[w for w, _ in blocks()])
def test_readme_example_runs(where: str, code: str, tmp_path: Path) -> None:
    """The example exits 0."""
    env = {
        **os.environ,
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "OMP_NUM_THREADS": "1",
    }
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert r.returncode == 0, f"{where}:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
