#!/usr/bin/env python3
"""Mutation testing for the Python binding's Rust code (python/src), judged by the pytest suite.

cargo-mutants lists the mutants (it cannot run them here: the binding's tests are pytest, not cargo test). This
script applies each one to a scratch copy of the repository, builds the extension module (with the ``bench``
feature, as scripts/test does: the suite tests it), and runs the Python tests against it: a mutant is caught when
the tests fail, missed when they pass, unviable when it does not build. The unmutated build must pass the same
tests first, or nothing is run (every mutant would otherwise count as caught).

Usage, from the repository root (after scripts/test has created .venv):

    python3 scripts/mutants_python.py [--functions REGEX] [--out DIR]

Writes DIR/caught.txt, missed.txt, unviable.txt, timeout.txt (one mutant name per line).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = [
    "python/src/bench.rs",
    "python/src/embedding.rs",
    "python/src/lib.rs",
    "python/src/mem.rs",
    "python/src/numpy.rs",
    "python/src/openmp.rs",
    "python/src/torch.rs",
]


def splice(text: str, span: dict, replacement: str) -> str:
    """Replaces the 1-based line/column span of ``text`` with ``replacement``."""
    lines = text.split("\n")
    s, e = span["start"], span["end"]
    before = "\n".join(lines[: s["line"] - 1] + [lines[s["line"] - 1][: s["column"] - 1]])
    after = "\n".join([lines[e["line"] - 1][e["column"] - 1 :]] + lines[e["line"] :])
    return before + replacement + after


def main() -> None:
    """Runs every selected mutant and writes the outcome lists."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--functions", default=".", help="regex on the mutated function's name")
    ap.add_argument("--out", default="mutants-python.out")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per build and per test run")
    ap.add_argument("-k", dest="select", default=None, help="pytest -k expression (e.g. 'not zero' to save time)")
    a = ap.parse_args()
    cmd = ["cargo", "mutants", "--no-config", "--workspace", "--list", "--json"]
    for f in FILES:
        cmd += ["-f", f]
    mutants = json.loads(subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout)
    pattern = re.compile(a.functions)
    mutants = [m for m in mutants if pattern.search(m["function"]["function_name"] if m.get("function") else "")]
    print(f"{len(mutants)} mutants", flush=True)
    python = ROOT / ".venv" / "bin" / "python"
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[str]] = {"caught": [], "missed": [], "unviable": [], "timeout": []}
    with tempfile.TemporaryDirectory(prefix="mutants-python-") as tmp:
        scratch = Path(tmp) / "repo"
        shutil.copytree(
            ROOT,
            scratch,
            ignore=shutil.ignore_patterns("target", "target-*", ".venv", ".git", "*.so", "__pycache__"),
        )
        env = {
            **os.environ,
            "CARGO_TARGET_DIR": str(ROOT / "target-mutants-python"),
            "PYTHONPATH": str(scratch / "python"),
        }
        originals = {f: (scratch / f).read_text() for f in FILES}

        def run(cmd: list[str]) -> subprocess.CompletedProcess[bytes] | None:
            """Runs ``cmd`` in the scratch copy; ``None`` when it exceeds the timeout."""
            try:
                return subprocess.run(cmd, cwd=scratch, check=False, env=env, capture_output=True, timeout=a.timeout)
            except subprocess.TimeoutExpired:
                return None

        def judge() -> str:
            """Builds the scratch copy as it stands and runs the tests: the outcome for a mutant."""
            build = run(["cargo", "build", "--release", "-p", "adagrad-python", "--features", "bench"])
            if build is None:
                return "timeout"
            if build.returncode != 0:
                return "unviable"
            lib = ROOT / "target-mutants-python" / "release" / "lib_native.so"
            dest = scratch / "python" / "adagrad_cpu" / "_native.cpython-311-x86_64-linux-gnu.so"
            shutil.copyfile(lib, dest)
            test = run(
                [str(python), "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "python/tests"]
                + (["-k", a.select] if a.select else [])
            )
            if test is None:
                return "timeout"
            return "missed" if test.returncode == 0 else "caught"

        baseline = judge()
        if baseline != "missed":
            print(f"the unmutated build does not pass the tests ({baseline}); no mutant run", file=sys.stderr)
            sys.exit(1)
        print("the unmutated build passes the tests", flush=True)
        for i, m in enumerate(mutants):
            for f, text in originals.items():
                (scratch / f).write_text(text)
            (scratch / m["file"]).write_text(splice(originals[m["file"]], m["span"], m["replacement"]))
            t0 = time.time()
            outcome = judge()
            results[outcome].append(m["name"])
            print(f"[{i + 1}/{len(mutants)}] {outcome:8} {m['name']} ({time.time() - t0:.0f} s)", flush=True)
    for k, v in results.items():
        (out / f"{k}.txt").write_text("".join(n + "\n" for n in v))
    print({k: len(v) for k, v in results.items()})
    sys.exit(0)


if __name__ == "__main__":
    main()
