#!/usr/bin/env python3
"""Mutation testing for the Python package's own code (python/adagrad_cpu), judged by chosen pytest files.

cargo-mutants covers the Rust code (and scripts/mutants_python.py the binding's Rust code under pytest); this does
the same for the Python layer's functions. Each mutant changes one thing in one function matched by --functions
(a comparison or boolean operator swapped, an ``if`` condition negated, a ``not`` dropped, a returned value
replaced by ``None``, a statement replaced by ``pass``, a boolean constant flipped), is written into a scratch
copy of the package (the built native module included) that ``PYTHONPATH`` puts ahead of the installed one — for
subprocesses the tests start too — and the tests run against it: caught when they fail, missed when they pass.

Usage, from the repository root (after scripts/test has built the package into .venv):

    python3 scripts/mutants_pysrc.py --file python/adagrad_cpu/torch.py --functions 'REGEX' \\
        --tests python/tests/test_dtensor.py python/tests/test_fsdp.py --out DIR

Writes DIR/caught.txt, DIR/missed.txt and DIR/timeout.txt (one mutant per line: function, line, change).
"""

from __future__ import annotations

import argparse
import ast
import copy
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SWAPS: dict[type, type] = {
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Lt: ast.GtE,
    ast.GtE: ast.Lt,
    ast.Gt: ast.LtE,
    ast.LtE: ast.Gt,
}


def sites(func: ast.AST) -> Iterator[tuple[ast.AST, str, str]]:
    """Every mutation site in ``func``: (node, kind, description)."""
    for node in ast.walk(func):
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                if type(op) in SWAPS:
                    yield node, f"cmp{i}", f"{type(op).__name__} -> {SWAPS[type(op)].__name__}"
        elif isinstance(node, ast.BoolOp):
            yield node, "boolop", f"{type(node.op).__name__} swapped"
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            yield node, "dropnot", "not dropped"
        elif isinstance(node, ast.If):
            yield node, "negif", "if condition negated"
        elif isinstance(node, ast.Return) and not (node.value is None or _is_none(node.value)):
            yield node, "retnone", "return None"
        elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
            yield node, "flip", f"{node.value} -> {not node.value}"
        if isinstance(node, (ast.Expr, ast.Assign, ast.AugAssign, ast.Raise)) and not (
            isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        ):
            yield node, "pass", f"{type(node).__name__} statement -> pass"


def _is_none(node: ast.AST) -> bool:
    """Whether ``node`` is the constant ``None`` (a return of it has no ``return None`` mutant)."""
    return isinstance(node, ast.Constant) and node.value is None


def apply(node: ast.AST, kind: str) -> None:
    """Applies mutation ``kind`` to ``node`` in place."""
    if kind.startswith("cmp"):
        i = int(kind[3:])
        node.ops[i] = SWAPS[type(node.ops[i])]()  # type: ignore[attr-defined]
    elif kind == "boolop":
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()  # type: ignore[attr-defined]
    elif kind == "dropnot":
        node.op = ast.UAdd()  # type: ignore[attr-defined]  # +x: truthiness kept, negation gone
        node.operand = ast.Call(ast.Name("bool", ast.Load()), [node.operand], [])  # type: ignore[attr-defined]
    elif kind == "negif":
        node.test = ast.UnaryOp(ast.Not(), node.test)  # type: ignore[attr-defined]
    elif kind == "retnone":
        node.value = ast.Constant(None)  # type: ignore[attr-defined]
    elif kind == "flip":
        node.value = not node.value  # type: ignore[attr-defined]
    elif kind == "pass":
        node.__class__ = ast.Pass
        for field in list(node._fields):
            delattr(node, field)


def mutants(source: str, pattern: str) -> Iterator[tuple[str, str]]:
    """(description, mutated source) for every site in the functions whose qualified name matches ``pattern``."""
    tree = ast.parse(source)
    funcs = _funcs(tree, pattern)
    for name, func in funcs:
        for index, (node, kind, what) in enumerate(list(sites(func))):
            mutated = copy.deepcopy(tree)
            # The same walk over the copy finds the same node at the same index.
            target = next(f for n, f in _funcs(mutated, pattern) if n == name)
            node2 = list(sites(target))[index][0]
            apply(node2, kind)
            ast.fix_missing_locations(mutated)
            yield f"{name} line {node.lineno}: {what}", ast.unparse(mutated)


def _funcs(tree: ast.AST, pattern: str) -> list[tuple[str, ast.AST]]:
    """The functions (qualified ``Class.method``) of ``tree`` whose names match ``pattern``, in source order."""
    out: list[tuple[str, ast.AST]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if isinstance(child, ast.FunctionDef) and re.search(pattern, name):
                    out.append((name, child))
                visit(child, f"{name}.")

    visit(tree, "")
    return out


def changed_lines(rev: str, path: str) -> set[int]:
    """The line numbers of ``path`` (as it is now) added or changed since git revision ``rev``."""
    diff = subprocess.run(
        ["git", "diff", "-U0", rev, "--", path], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    lines: set[int] = set()
    for m in re.finditer(r"^@@ -\S+ \+(\d+)(?:,(\d+))? @@", diff, re.MULTILINE):
        start, count = int(m.group(1)), int(m.group(2) or 1)
        lines.update(range(start, start + count))
    return lines


def main() -> None:
    """Runs every mutant and writes the verdicts."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--file", required=True, help="a module of python/adagrad_cpu")
    ap.add_argument("--functions", required=True, help="regex over qualified function names (Class.method)")
    ap.add_argument("--tests", nargs="+", required=True, help="pytest files that judge the mutants")
    ap.add_argument("--since", default=None, help="only mutants on lines added or changed since this git revision")
    ap.add_argument("--timeout", type=int, default=300, help="seconds per mutant")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    module = ROOT / a.file
    package = ROOT / "python" / "adagrad_cpu"
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    verdicts: dict[str, list[str]] = {"caught": [], "missed": [], "timeout": []}
    python = str(ROOT / ".venv" / "bin" / "python")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp) / "adagrad_cpu"
        shutil.copytree(package, scratch)
        target = scratch / module.relative_to(package)
        env = {**os.environ, "PYTHONPATH": tmp}
        # The unmutated copy must pass, or every verdict would be meaningless.
        base = subprocess.run(
            [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *a.tests], check=False, env=env
        )
        if base.returncode != 0:
            raise SystemExit("the tests fail without any mutant")
        todo = list(mutants(module.read_text(), a.functions))
        if a.since:
            lines = changed_lines(a.since, a.file)
            todo = [(w, src) for w, src in todo if int(w.split(" line ")[1].split(":")[0]) in lines]
        print(f"{len(todo)} mutants", flush=True)
        for i, (what, source) in enumerate(todo):
            target.write_text(source)
            t0 = time.monotonic()
            try:
                r = subprocess.run(
                    [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *a.tests],
                    check=False,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=a.timeout,
                )
                verdict = "caught" if r.returncode != 0 else "missed"
            except subprocess.TimeoutExpired:
                verdict = "timeout"
            verdicts[verdict].append(what)
            print(f"[{i + 1}/{len(todo)}] {verdict:7} {time.monotonic() - t0:5.1f}s {what}", flush=True)
    for k, v in verdicts.items():
        (out / f"{k}.txt").write_text("".join(f"{w}\n" for w in v))
    print({k: len(v) for k, v in verdicts.items()})


if __name__ == "__main__":
    main()
