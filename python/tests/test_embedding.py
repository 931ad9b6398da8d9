"""The embedding optimizer from Python: FBGEMM's row-wise trajectory bit for bit, bags, and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from adagrad_cpu._native import AdagradError
from adagrad_cpu.embedding import EmbeddingAdagrad

GOLDEN = Path(__file__).resolve().parents[2] / "tests" / "golden-sparse"


def _bits(values: list[str]) -> np.ndarray:
    return np.array([int(v, 16) for v in values], dtype=np.uint32).view(np.float32)


@pytest.mark.parametrize("threads", [1, 2])
def test_fbgemm_rowwise_trajectory_bit_for_bit(isa: str, threads: int) -> None:
    """FBGEMM 1.9.0's EXACT_ROWWISE_ADAGRAD trajectory, every step, every path."""
    data = json.loads((GOLDEN / "fbgemm_exact_rowwise_adagrad_d16.json").read_text())
    rows, dim = data["meta"]["rows"], data["meta"]["D"]
    table = _bits(data["initial_weights_bits"]).reshape(rows, dim).copy()
    opt = EmbeddingAdagrad(rows, dim, lr=0.1, eps=1e-8, threads=threads, isa=isa)
    for step in data["steps"]:
        ids = np.array(step["indices"], dtype=np.int64)
        grads = _bits(step["grads_bits"]).reshape(len(ids), dim)
        opt.step(table, ids, grads)
        assert table.view(np.uint32).ravel().tolist() == _bits(step["weights_bits"]).view(np.uint32).tolist()
        assert opt.state.view(np.uint32).tolist() == _bits(step["state_bits"]).view(np.uint32).tolist()
    assert opt.step_count == 5


def test_bags_with_weights_equal_expanded_rows() -> None:
    """Pooled bags with per-lookup weights are the rows ``weight · bag row``."""
    rng = np.random.default_rng(0)
    rows, dim = 100, 8
    ids = rng.integers(0, rows, 60).astype(np.int64)
    offsets = np.array([0, 10, 10, 45, 60], dtype=np.int64)
    weights = rng.standard_normal(60).astype(np.float32)
    bag_grads = rng.standard_normal((4, dim)).astype(np.float32)
    bag_of = np.searchsorted(offsets, np.arange(60), side="right") - 1
    expanded = (weights[:, None] * bag_grads[bag_of]).astype(np.float32)
    a = rng.standard_normal((rows, dim)).astype(np.float32)
    b = a.copy()
    EmbeddingAdagrad(rows, dim, lr=0.1).step(a, ids, bag_grads, offsets, weights)
    EmbeddingAdagrad(rows, dim, lr=0.1).step(b, ids, expanded)
    assert a.tobytes() == b.tobytes()


def test_refusals_change_nothing() -> None:
    """Bad ids, shapes, aliasing and settings raise AdagradError and leave table and state alone."""
    rows, dim = 10, 4
    table = np.ones((rows, dim), dtype=np.float32)
    opt = EmbeddingAdagrad(rows, dim)
    grads = np.ones((2, dim), dtype=np.float32)
    bad = [
        (np.array([1, 10], dtype=np.int64), grads, None, None, "position 1"),
        (np.array([-3, 1], dtype=np.int64), grads, None, None, "id -3"),
        (np.array([1, 2], dtype=np.int64), np.ones((3, dim), dtype=np.float32), None, None, "gradients"),
        (np.array([1, 2], dtype=np.int64), grads[:1], np.array([0, 1], dtype=np.int64), None, "last offset"),
        (np.array([1, 2], dtype=np.int64), grads, None, np.ones(2, dtype=np.float32), "offsets"),
    ]
    for ids, g, offsets, weights, message in bad:
        with pytest.raises(AdagradError, match=message):
            opt.step(table, ids, g, offsets, weights)
    # Gradients that are a view of the table: refused by numpy's borrow tracking (or the step's own check).
    with pytest.raises((AdagradError, TypeError), match="borrowed|shares memory"):
        opt.step(table, np.array([1, 2], dtype=np.int64), table[:2])
    with pytest.raises(AdagradError, match="table"):
        opt.step(table[:, :2], np.array([1], dtype=np.int64), np.ones((1, 2), dtype=np.float32))
    assert (table == 1).all() and (opt.state == 0).all() and opt.step_count == 0
    with pytest.raises(AdagradError, match="dim"):
        EmbeddingAdagrad(10, 0)
    with pytest.raises(AdagradError, match="accumulator"):
        EmbeddingAdagrad(10, 4, accumulator="per-row")


def test_fbgemm_rowwise_f16_table_with_l2_decay_bit_for_bit(isa: str) -> None:
    """FBGEMM's f16-weight trajectory (generic template, L2 weight decay), every step."""
    data = json.loads((GOLDEN / "fbgemm_exact_rowwise_adagrad_d16_fp16w_wdL2.json").read_text())
    rows, dim = data["meta"]["rows"], data["meta"]["D"]
    bits16 = np.array([int(v, 16) for v in data["initial_weights_bits"]], dtype=np.uint16)
    table = bits16.view(np.float16).reshape(rows, dim).copy()
    opt = EmbeddingAdagrad(rows, dim, lr=0.1, eps=1e-8, weight_decay=0.1, isa=isa, table_dtype="float16")
    for step in data["steps"]:
        ids = np.array(step["indices"], dtype=np.int64)
        grads = _bits(step["grads_bits"]).reshape(len(ids), dim)
        opt.step(table, ids, grads)
        want = np.array([int(v, 16) for v in step["weights_bits"]], dtype=np.uint16)
        assert table.view(np.uint16).ravel().tolist() == want.tolist()
        assert opt.state.view(np.uint32).tolist() == _bits(step["state_bits"]).view(np.uint32).tolist()


def test_bfloat16_tables_with_stochastic_rounding_are_reproducible() -> None:
    """bfloat16 tables (uint16 bits): the same bits at any thread count; stochastic differs from nearest-even."""
    rng = np.random.default_rng(3)
    rows, dim = 5000, 16
    start = (rng.standard_normal(rows * dim).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    ids = rng.integers(0, rows, 40000).astype(np.int64)
    grads = rng.standard_normal((40000, dim)).astype(np.float32) * 0.01

    def run(threads: int, seed: int | None) -> bytes:
        table = start.copy()
        opt = EmbeddingAdagrad(rows, dim, lr=0.01, threads=threads, table_dtype="bfloat16", stochastic_seed=seed)
        for _ in range(3):
            opt.step(table, ids, grads)
        return table.tobytes()

    sr = run(1, 7)
    assert run(2, 7) == sr
    assert run(1, 8) != sr
    assert run(1, None) != sr
    with pytest.raises(AdagradError, match="bfloat16"):
        EmbeddingAdagrad(rows, dim, table_dtype="bfloat16").step(start.view(np.int16), ids, grads)
    with pytest.raises(AdagradError, match="table_dtype"):
        EmbeddingAdagrad(rows, dim, table_dtype="float64")


def test_inputs_sharing_the_tables_memory_are_refused() -> None:
    """Memory shared with the table through separate buffer objects (which numpy's borrow tracking does not
    connect, as with views of one torch tensor) is refused, naming the input; memory right next to the table, or
    an empty input inside it, is not shared and is accepted."""
    rows, dim = 6, 4
    row = dim * 4  # bytes
    buf = bytearray(3 * rows * row)
    whole = memoryview(buf)

    def floats(start: int, count: int) -> np.ndarray:
        """``count`` float32 at byte ``start`` of ``buf``, through a buffer object of its own."""
        return np.frombuffer(whole[start : start + 4 * count], dtype=np.float32)

    def ints(start: int, count: int) -> np.ndarray:
        return np.frombuffer(whole[start : start + 8 * count], dtype=np.int64)

    base = rows * row  # the table is the middle third of buf
    table = floats(base, rows * dim).reshape(rows, dim)
    table[:] = 1.0
    opt = EmbeddingAdagrad(rows, dim, lr=0.1)
    ids_ok = np.array([1, 2], dtype=np.int64)
    grads_ok = np.full((2, dim), 0.5, dtype=np.float32)
    shared = [
        ("grads", lambda: opt.step(table, ids_ok, floats(base + row, 2 * dim).reshape(2, dim))),
        ("grads", lambda: opt.step(table, ids_ok, floats(base - row, 2 * dim).reshape(2, dim))),  # ends inside
        ("ids", lambda: opt.step(table, ints(base + 2 * row - 8, 2), grads_ok)),  # starts inside
        (
            "offsets",
            lambda: opt.step(table, ids_ok, grads_ok[:1], ints(base + rows * row - 8, 2)),
        ),
        (
            "weights",
            lambda: opt.step(table, ids_ok, grads_ok[:1], np.array([0, 2]), floats(base, 2)),
        ),
    ]
    for what, call in shared:
        with pytest.raises(AdagradError, match=f"{what} shares memory with the table"):
            call()
    assert (table == 1).all() and opt.step_count == 0
    # Right before and right after the table, and an empty gradient array inside it: not shared.
    before = floats(base - 2 * row, 2 * dim).reshape(2, dim)
    before[:] = 0.5
    opt.step(table, ids_ok, before)
    after = floats(base + rows * row, 2 * dim).reshape(2, dim)
    after[:] = 0.5
    opt.step(table, ids_ok, after)
    opt.step(table, np.zeros(0, dtype=np.int64), floats(base + row, 0).reshape(0, dim))
    assert opt.step_count == 3
    assert (table[1:3] < 1).all() and (table[[0, 3, 4, 5]] == 1).all()


def test_settings_are_reported() -> None:
    """The optimizer says which path and how many threads it runs on, as configured."""
    for threads in (1, 3):
        opt = EmbeddingAdagrad(10, 4, threads=threads, isa="scalar")
        assert (opt.threads, opt.isa, opt.step_count) == (threads, "scalar", 0)


@pytest.mark.parametrize("dtype", [np.int32, np.uint32, np.uint64])
def test_every_id_dtype_gives_the_int64_bits(dtype: type) -> None:
    """int32, uint32 and uint64 ids (and offsets of the same dtype) update exactly as int64 ones do."""
    rng = np.random.default_rng(7)
    rows, dim = 50, 5
    ids = rng.integers(0, rows, size=40).astype(np.int64)
    grads = rng.standard_normal((40, dim)).astype(np.float32)
    offsets = np.array([0, 3, 3, 17, 40], dtype=np.int64)
    bag_grads = rng.standard_normal((4, dim)).astype(np.float32)
    weights = rng.standard_normal(40).astype(np.float32)
    start = rng.standard_normal((rows, dim)).astype(np.float32)
    for accumulator in ("rowwise", "elementwise"):
        want, got = start.copy(), start.copy()
        ref = EmbeddingAdagrad(rows, dim, lr=0.1, accumulator=accumulator)
        ours = EmbeddingAdagrad(rows, dim, lr=0.1, accumulator=accumulator)
        ref.step(want, ids, grads)
        ref.step(want, ids, bag_grads, offsets, weights)
        ours.step(got, ids.astype(dtype), grads)
        ours.step(got, ids.astype(dtype), bag_grads, offsets.astype(dtype), weights)
        assert got.view(np.uint32).tolist() == want.view(np.uint32).tolist()
        assert ours.state.view(np.uint32).tolist() == ref.state.view(np.uint32).tolist()


def test_id_dtype_refusals_change_nothing() -> None:
    """Ids of another type, offsets of another dtype than the ids, and out-of-range ids of every type are refused."""
    rows, dim = 10, 4
    table = np.ones((rows, dim), dtype=np.float32)
    opt = EmbeddingAdagrad(rows, dim)
    grads = np.ones((2, dim), dtype=np.float32)
    bag = np.ones((1, dim), dtype=np.float32)
    bad = [
        ((np.array([1.0, 2.0]), grads), "ids: must be a numpy array of int64, int32, uint64 or uint32"),
        (([1, 2], grads), "ids: must be a numpy array of"),
        ((np.array([1, 2], dtype=np.int16), grads), "ids: must be a numpy array of"),
        ((np.array([1, 2], dtype=np.int32), bag, np.array([0, 2], dtype=np.int64)), "offsets: .*dtype, int32"),
        ((np.array([1, 2], dtype=np.int64), bag, np.array([0, 2], dtype=np.int32)), "offsets: .*dtype, int64"),
        ((np.array([1, 2], dtype=np.uint32), bag, np.array([0, 2], dtype=np.uint64)), "offsets: .*dtype, uint32"),
        ((np.array([1, 2], dtype=np.uint64), bag, [0, 2]), "offsets: .*dtype, uint64"),
        ((np.array([1, -3], dtype=np.int32), grads), "id -3"),
        ((np.array([1, 10], dtype=np.uint32), grads), "position 1"),
        ((np.array([2**64 - 1, 1], dtype=np.uint64), grads), "position 0"),
        ((np.array([1, 2], dtype=np.int32), bag, np.array([0, 3], dtype=np.int32)), "offset 3 at position 1"),
    ]
    for args, message in bad:
        with pytest.raises(AdagradError, match=message):
            opt.step(table, *args)
    assert (table == 1).all() and (opt.state == 0).all() and opt.step_count == 0
