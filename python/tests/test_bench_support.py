"""The measurement support of the ``bench`` build (``python/src/bench.rs``), which the benches in ``benches/`` call.

These functions exist only in a build with the ``bench`` feature, as ``scripts/test`` makes it; the wheel users
install has none of them. Run against another build, this file fails at import, saying so.
"""

from __future__ import annotations

import numpy as np
import pytest

import adagrad_cpu.numpy
from adagrad_cpu import _native
from adagrad_cpu._native import AdagradError

if not hasattr(_native, "embedding_ceiling"):
    raise ImportError(
        "adagrad_cpu._native was built without the bench feature: "
        "maturin develop --release --features bench -m python/Cargo.toml (scripts/test does)"
    )

from adagrad_cpu._native import EMBEDDING_CEILING_VARIANTS, embedding_ceiling


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("row_wise", [True, False])
def test_ceiling_pass_adds_each_lookup_once(threads: int, row_wise: bool) -> None:
    """The benchmark's memory ceiling adds every lookup's gradient row into its table row and state, each variant."""
    rows, dim = 40, 3
    ids = np.array([4, 9, 4, 39, 0, 9, 9, 17], dtype=np.int64)
    grads = np.arange(len(ids) * dim, dtype=np.float32).reshape(len(ids), dim)
    want = np.zeros((rows, dim), np.float32)
    for p, r in enumerate(ids):
        want[r] += grads[p]
    per_row = 1 if row_wise else dim
    # Row-wise: column 0 of each row's sum; element-wise: the sums themselves.
    want_state = want[:, 0].copy() if row_wise else want.ravel().copy()
    for ahead in EMBEDDING_CEILING_VARIANTS:
        table = np.zeros((rows, dim), np.float32)
        state = np.zeros(rows * per_row, np.float32)
        seconds = embedding_ceiling(table, state, ids, grads, per_row, threads, ahead)
        assert seconds > 0.0
        assert table.tolist() == want.tolist(), ahead
        assert state.tolist() == want_state.tolist(), ahead


def test_ceiling_refusals_change_nothing() -> None:
    """Arguments the ceiling cannot use are refused before it writes anything."""
    rows, dim = 10, 4
    ids = np.array([1, 2], dtype=np.int64)
    grads = np.ones((2, dim), np.float32)
    good = EMBEDDING_CEILING_VARIANTS[0]
    table = np.zeros((rows, dim), np.float32)
    state = np.zeros(rows * dim, np.float32)
    cases = [
        ((table, state, ids[:0], grads[:0], dim, 1, good), "at least one lookup"),
        ((table, state, ids, np.ones((2, 0), np.float32), dim, 1, good), "at least one lookup"),
        ((table, state, ids, np.ones(7, np.float32), dim, 1, good), "at least one lookup"),
        ((table, state, ids, grads, 2, 1, good), "per_row must be 1"),
        ((table, state, ids, grads, 0, 1, good), "per_row must be 1"),
        ((table, state, ids, grads, dim, 0, good), "threads must be 1 to 256"),
        ((table, state, ids, grads, dim, 257, good), "threads must be 1 to 256"),
        ((table, state, ids, grads, dim, 1, (3, 5, False)), "ahead must be one of"),
        ((table, state, ids, grads, dim, 1, (2**63, 0, False)), "ahead must be one of"),
        ((table, state[:-1], ids, grads, dim, 1, good), "table and state do not match"),
        ((table.ravel()[:-1], state, ids, grads, dim, 1, good), "table and state do not match"),
        ((table, state, np.array([1, 10], np.int64), grads, dim, 1, good), "an id is outside the table"),
        ((table, state, np.array([1, -1], np.int64), grads, dim, 1, good), "an id is outside the table"),
        ((table[:, ::2], state, ids, np.ones((2, 2), np.float32), 2, 1, good), "table is not C-contiguous"),
        ((table, state, ids, grads[:, ::2], 2, 1, good), "grads is not C-contiguous"),
        ((table, state, ids[::-1], grads, dim, 1, good), "ids is not C-contiguous"),
        ((table, state[::2], ids, grads, 1, 1, good), "state is not C-contiguous"),
    ]
    for args, message in cases:
        with pytest.raises(AdagradError, match=message):
            embedding_ceiling(*args)
    assert not table.any() and not state.any()
    # The upper bounds themselves are accepted.
    embedding_ceiling(table, state, ids, grads, dim, 256, good)
    assert table[1].tolist() == [1.0] * dim


@pytest.mark.parametrize("threads", [1, 2])
def test_rust_step_loop_is_the_numpy_step_repeated(threads: int) -> None:
    """The Rust-level step loop runs ``reps`` steps (each as step 1, lr as given) on the arrays in place, bit for bit
    the numpy step's, and returns one positive duration per step; a refused call changes nothing."""
    rng = np.random.default_rng(3)
    params = [rng.standard_normal(n).astype(np.float32) for n in (1000, 37)]
    grads = [rng.standard_normal(p.size).astype(np.float32) for p in params]
    sums = [np.zeros_like(p) for p in params]
    want_p, want_s = [p.copy() for p in params], [s.copy() for s in sums]
    engine = _native.Engine(threads=threads)
    seconds = _native.rust_step_seconds(engine, params, grads, sums, 3, lr=0.05)
    assert len(seconds) == 3 and all(s > 0.0 for s in seconds)
    for _ in range(3):
        adagrad_cpu.numpy.step(want_p, grads, want_s, 1, lr=0.05, eps=1e-10, threads=threads)
    assert [p.view(np.uint32).tolist() for p in params] == [p.view(np.uint32).tolist() for p in want_p]
    assert [s.view(np.uint32).tolist() for s in sums] == [s.view(np.uint32).tolist() for s in want_s]
    before = [p.copy() for p in params]
    with pytest.raises(AdagradError):
        _native.rust_step_seconds(engine, params, grads[:1], sums, 2)
    assert [p.tolist() for p in params] == [p.tolist() for p in before]
