"""The numpy API: the golden PyTorch trajectories replayed bit for bit, the optimizer class, and refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import adagrad_cpu
import adagrad_cpu.numpy as an

GOLDEN = sorted((Path(__file__).resolve().parents[2] / "tests" / "golden").glob("adagrad_*.json"))


def bits(values: list[str], dtype: type) -> np.ndarray:
    """An array from the golden files' hex IEEE bits."""
    ints = np.array([int(v, 16) for v in values], dtype=np.uint64 if dtype is np.float64 else np.uint32)
    return ints.view(dtype)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit equality of two float arrays."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_golden_files_found() -> None:
    """The replay below is not vacuous."""
    assert len(GOLDEN) >= 6


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_golden_trajectory_through_numpy(path: Path, isa: str) -> None:
    """PyTorch 2.15.0's fused=True trajectory, every step, parameters and sums, bit for bit, on every path."""
    d: dict[str, Any] = json.loads(path.read_text())
    dtype = np.float64 if d["meta"]["dtype"] == "float64" else np.float32
    h = d["hyperparameters"]
    p = bits(d["initial_params_bits"], dtype)
    opt = an.Adagrad(
        [p],
        lr=h["lr"],
        lr_decay=h["lr_decay"],
        weight_decay=h["weight_decay"],
        initial_accumulator_value=h["initial_accumulator_value"],
        eps=h["eps"],
        maximize=h["maximize"],
        isa=isa,
    )
    assert same_bits(opt.sums[0], bits(d["initial_state_sum_bits"], dtype))
    for fed, want in zip(d["trajectory"], d["torch_fused_true_trajectory"]):
        opt.step([bits(fed["grad_bits"], dtype)])
        assert same_bits(p, bits(want["params_bits"], dtype)), f"params after step {want['step']}"
        assert same_bits(opt.sums[0], bits(want["state_sum_bits"], dtype)), f"sum after step {want['step']}"


def test_functional_step_equals_the_class() -> None:
    """adagrad_cpu.numpy.step over caller-owned sums gives the class's bits."""
    rng = np.random.default_rng(0)
    p1 = rng.standard_normal(1000).astype(np.float32)
    p2, s2 = p1.copy(), np.zeros(1000, np.float32)
    opt = an.Adagrad([p1], lr=0.1, weight_decay=0.01)
    for t in range(1, 6):
        g = rng.standard_normal(1000).astype(np.float32)
        opt.step([g])
        an.step([p2], [g], [s2], t, lr=0.1, weight_decay=0.01)
    assert same_bits(p1, p2) and same_bits(opt.sums[0], s2)


def test_float16_gradients() -> None:
    """float32 parameters with float16 gradients equal the widened float32 gradients' step."""
    rng = np.random.default_rng(1)
    g = rng.standard_normal(333).astype(np.float16)
    a, b = np.ones(333, np.float32), np.ones(333, np.float32)
    sa, sb = np.zeros(333, np.float32), np.zeros(333, np.float32)
    an.step([a], [g], [sa], 1, lr=0.1)
    an.step([b], [g.astype(np.float32)], [sb], 1, lr=0.1)
    assert same_bits(a, b) and same_bits(sa, sb)


def test_state_dict_round_trip() -> None:
    """Saved mid-run and loaded into a fresh optimizer: the same bits as an uninterrupted run."""
    rng = np.random.default_rng(2)
    gs = [rng.standard_normal(64).astype(np.float64) for _ in range(6)]
    a, b = np.ones(64), np.ones(64)
    oa = an.Adagrad([a], lr=0.2, lr_decay=0.1)
    for g in gs:
        oa.step([g])
    ob = an.Adagrad([b], lr=0.2, lr_decay=0.1)
    for g in gs[:3]:
        ob.step([g])
    saved = ob.state_dict()
    b2 = b.copy()
    oc = an.Adagrad([b2], lr=0.2, lr_decay=0.1)
    oc.load_state_dict(saved)
    for g in gs[3:]:
        oc.step([g])
    assert same_bits(a, b2) and oc.t == 6


def refused(fn: Any, arrays: list[np.ndarray], match: str) -> None:
    """``fn`` raises AdagradError and leaves every array unchanged."""
    before = [x.copy() for x in arrays]
    with pytest.raises(adagrad_cpu.AdagradError, match=match):
        fn()
    for x, y in zip(arrays, before):
        assert x.tobytes() == y.tobytes()


def test_refusals() -> None:
    """Overlap, read-only, non-contiguous, dtype, shape, count, step number, hyperparameters, grad_scale."""
    p, g, s = np.ones(100, np.float32), np.full(100, 0.5, np.float32), np.zeros(100, np.float32)
    base = np.ones(300, np.float32)
    arrays = [p, g, s, base]
    refused(lambda: an.step([base[:150]], [g.repeat(2)[:150]], [base[100:250]], 1), arrays, "overlap")
    refused(lambda: an.step([p, p], [g, g], [s, s.copy()], 1), arrays, "overlap")
    ro = np.ones(100, np.float32)
    ro.flags.writeable = False
    refused(lambda: an.step([ro], [g], [s], 1), arrays + [ro], r"^params\[0\] is read-only")
    refused(lambda: an.step([p], [np.ones(200, np.float32)[::2]], [s], 1), arrays, r"^grads\[0\] is not C-contiguous")
    refused(lambda: an.step([p], [g.astype(np.int32)], [s], 1), arrays, "not supported")
    refused(lambda: an.step([p], [g[:50]], [s], 1), arrays, "shape")
    refused(lambda: an.step([p], [g], [s.astype(np.float64)], 1), arrays, r"^sums\[0\] is float64")
    refused(lambda: an.step([p.astype(np.float64)], [g], [s.astype(np.float64)], 1), arrays, "not supported")
    refused(lambda: an.step([p], [g, g], [s], 1), arrays, "one of each")
    refused(lambda: an.step([p], [g], [s], 0), arrays, "counts from 1")
    refused(lambda: an.step([p], [g], [s], 1, lr=float("nan")), arrays, "lr")
    refused(lambda: an.step([p], [g], [s], 1, eps=1e-50), arrays, "eps")
    refused(lambda: an.step([p], [g], [s], 1, grad_scale=0.0), arrays, "scale")
    refused(lambda: an.step([p], [[0.5] * 100], [s], 1), arrays, r"^grads\[0\] is not a numpy array")  # type: ignore[list-item]
    # The second array of a list is named by its index.
    p2, s2 = p.copy(), s.copy()
    two = arrays + [p2, s2]
    refused(lambda: an.step([p, p2], [g, g.astype(np.int32)], [s, s2], 1), two, r"^grads\[1\] has dtype int32")
    refused(lambda: an.step([p, p2], [g, g], [s, ro], 1), two + [ro], r"^sums\[1\] is read-only")
    refused(lambda: an.step([p, ro], [g, g], [s, s2], 1), two + [ro], r"^params\[1\] is read-only")
    with pytest.raises(adagrad_cpu.AdagradError, match="float32 or float64"):
        an.Adagrad([np.ones(3, np.int64)])


def test_adagrad_step_count_unchanged_on_error() -> None:
    """A refused step leaves the optimizer's count where it was."""
    p = np.ones(10, np.float32)
    opt = an.Adagrad([p])
    opt.step([np.ones(10, np.float32)])
    with pytest.raises(adagrad_cpu.AdagradError):
        opt.step([np.ones(11, np.float32)])
    assert opt.t == 1


def test_empty_arrays_at_any_address_step() -> None:
    """Empty arrays are never read or written, so their address does not matter (numpy marks an empty view at an
    odd offset aligned): they take part in a step beside a non-empty one, which is updated as without them."""

    def empty(offset: int) -> np.ndarray:
        return np.ndarray((0,), np.float32, buffer=bytearray(16), offset=offset)

    w, s = np.ones(5, np.float32), np.zeros(5, np.float32)
    alone_w, alone_s = w.copy(), s.copy()
    g = np.full(5, 0.5, np.float32)
    adagrad_cpu.numpy.step([empty(1), w], [empty(5), g], [empty(9), s], 1, lr=0.1)
    adagrad_cpu.numpy.step([alone_w], [g], [alone_s], 1, lr=0.1)
    assert np.array_equal(w.view(np.int32), alone_w.view(np.int32)) and not np.array_equal(w, np.ones(5))
