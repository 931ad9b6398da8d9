"""Hardening: calls from several Python threads at once, refusals that change nothing, and errors that say what
is wrong. Every concurrent run must equal a serial run of the same successful steps, bit for bit."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

import numpy as np
import pytest
import torch

import adagrad_cpu
import adagrad_cpu.numpy as an
import adagrad_cpu.torch as at
from adagrad_cpu.embedding import EmbeddingAdagrad

THREADS = 4
STEPS = 12


def hammer(step: Callable[[], None], threads: int = THREADS, steps: int = STEPS) -> list[BaseException]:
    """Runs ``step`` ``steps`` times on each of ``threads`` threads, all started together; the errors raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def work() -> None:
        start.wait()
        for _ in range(steps):
            try:
                step()
            except BaseException as e:  # noqa: BLE001 - collected for the assertion
                errors.append(e)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return errors


def bits(a: np.ndarray) -> np.ndarray:
    """The bit patterns of a float array."""
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


@pytest.mark.parametrize("threads", [1, 2])
def test_numpy_optimizer_steps_from_many_threads_are_serialized(threads: int) -> None:
    """Many Python threads stepping one ``numpy.Adagrad``: every step happens whole; the result is the serial one."""
    n = 300_000
    g = (np.arange(n, dtype=np.float32) % 97) * 1e-3
    w = np.ones(n, np.float32)
    opt = an.Adagrad([w], lr=0.1, lr_decay=0.01, threads=threads)
    assert hammer(lambda: opt.step([g])) == []
    ref_w = np.ones(n, np.float32)
    ref = an.Adagrad([ref_w], lr=0.1, lr_decay=0.01, threads=threads)
    for _ in range(THREADS * STEPS):
        ref.step([g])
    assert opt.t == ref.t == THREADS * STEPS
    assert np.array_equal(bits(w), bits(ref_w)) and np.array_equal(bits(opt.sums[0]), bits(ref.sums[0]))


def test_functional_numpy_steps_on_shared_arrays_are_serialized() -> None:
    """The functional step from several threads on the same arrays: the native calls never overlap in memory; the
    result is that of the same calls one after another."""
    n = 1 << 20
    g = np.full(n, 0.25, np.float32)

    def run(concurrently: bool) -> tuple[np.ndarray, np.ndarray]:
        w, s = np.ones(n, np.float32), np.zeros(n, np.float32)
        step = lambda: an.step([w], [g], [s], 3, lr=0.05, threads=2)
        if concurrently:
            assert hammer(step) == []
        else:
            for _ in range(THREADS * STEPS):
                step()
        return w, s

    (a, sa), (b, sb) = run(True), run(False)
    assert np.array_equal(bits(a), bits(b)) and np.array_equal(bits(sa), bits(sb))


def test_functional_steps_on_partly_overlapping_views_are_serialized() -> None:
    """Two views of one array that overlap in their middle, stepped from two threads each (the same gradient and
    step count every call): an element ends with as many whole updates as calls covered it — twice as many in the
    overlap — exactly as when the calls run one after another, in any order."""
    n, cut = 1 << 20, 3 << 17
    g = np.full(n, 0.25, np.float32)

    def run(concurrently: bool) -> tuple[np.ndarray, np.ndarray]:
        w, s = np.ones(n, np.float32), np.zeros(n, np.float32)
        lo, hi = slice(0, cut), slice(n - cut, n)
        steps = [lambda r=r: an.step([w[r]], [g[r]], [s[r]], 2, lr=0.05, threads=2) for r in (lo, hi)]  # type: ignore[misc]
        if concurrently:
            errors: list[BaseException] = []
            workers = [threading.Thread(target=lambda f=f: errors.extend(hammer(f, 2, STEPS))) for f in steps]
            for t in workers:
                t.start()
            for t in workers:
                t.join()
            assert errors == []
        else:
            for f in steps:
                for _ in range(2 * STEPS):
                    f()
        return w, s

    (a, sa), (b, sb) = run(True), run(False)
    assert np.array_equal(bits(a), bits(b)) and np.array_equal(bits(sa), bits(sb))
    assert np.all(sb[n - cut : cut] == 2 * sb[0])


def test_torch_optimizer_steps_from_many_threads_are_atomic() -> None:
    """Many Python threads stepping one ``torch.Adagrad``: no error, every step counted, the serial result."""
    torch.manual_seed(0)
    init = [torch.randn(70_000), torch.randn(33, 7)]
    grads = [torch.randn(70_000), torch.randn(33, 7)]

    def make() -> tuple[list[torch.Tensor], at.Adagrad]:
        ps = [t.clone().requires_grad_() for t in init]
        for p, g in zip(ps, grads):
            p.grad = g.clone()
        return ps, at.Adagrad(ps, lr=0.1, lr_decay=0.01, weight_decay=0.01)

    ps, opt = make()
    assert hammer(opt.step) == []
    ref_ps, ref = make()
    for _ in range(THREADS * STEPS):
        ref.step()
    for p, r in zip(ps, ref_ps):
        assert torch.equal(p.detach().view(torch.int32), r.detach().view(torch.int32))
        assert torch.equal(opt.state[p]["sum"].view(torch.int32), ref.state[r]["sum"].view(torch.int32))
        assert float(opt.state[p]["step"]) == THREADS * STEPS


def test_embedding_optimizer_steps_from_many_threads_are_serialized() -> None:
    """Many Python threads stepping one ``EmbeddingAdagrad`` on one table: the serial result, no error."""
    rows, dim = 1000, 16
    ids = (np.arange(3000) * 7919 % rows).astype(np.int64)
    grads = np.full((3000, dim), 0.01, np.float32)

    def run(concurrently: bool) -> tuple[np.ndarray, np.ndarray]:
        table = np.full((rows, dim), 0.5, np.float32)
        opt = EmbeddingAdagrad(rows, dim, accumulator="elementwise", threads=2)
        step = lambda: opt.step(table, ids, grads)
        if concurrently:
            assert hammer(step) == []
        else:
            for _ in range(THREADS * STEPS):
                step()
        assert opt.step_count == THREADS * STEPS
        return table, opt.state

    (a, sa), (b, sb) = run(True), run(False)
    assert np.array_equal(bits(a), bits(b)) and np.array_equal(bits(sa), bits(sb))


def test_a_refused_load_state_dict_leaves_the_optimizer_as_it_was() -> None:
    """``load_state_dict`` that is refused (a state of the wrong shape) changes nothing: the same state, and later
    steps run and give the bits of an optimizer that never saw the refused load."""
    torch.manual_seed(1)
    p = torch.randn(10, requires_grad=True)
    q = p.detach().clone().requires_grad_()
    opt, ref = at.Adagrad([p], lr=0.1), at.Adagrad([q], lr=0.1)
    for o, x in ((opt, p), (ref, q)):
        x.grad = torch.full_like(x, 0.5)
        o.step()
    before = {k: v.clone() for k, v in opt.state[p].items()}
    bad = opt.state_dict()
    bad["state"][0]["sum"] = torch.zeros(11)
    with pytest.raises(adagrad_cpu.AdagradError):
        opt.load_state_dict(bad)
    assert all(torch.equal(opt.state[p][k], v) for k, v in before.items())
    with pytest.raises(ValueError):
        opt.load_state_dict({"state": {}, "param_groups": []})
    for o, x in ((opt, p), (ref, q)):
        x.grad = torch.full_like(x, 0.25)
        o.step()
    assert torch.equal(p.detach().view(torch.int32), q.detach().view(torch.int32))
    assert float(opt.state[p]["step"]) == 2.0


@pytest.mark.parametrize("t", [1.5, -1, 0, math.inf, math.nan, 2**64, True, "3", None])
def test_step_counts_that_are_not_counts_are_refused(t: object) -> None:
    """``numpy.step``'s ``t`` must be an integer from 1 below 2**64: anything else is an AdagradError, nothing
    written."""
    w, s = np.ones(4, np.float32), np.zeros(4, np.float32)
    with pytest.raises(adagrad_cpu.AdagradError, match="step count t"):
        an.step([w], [np.ones(4, np.float32)], [s], t)  # type: ignore[arg-type]
    assert np.all(w == 1) and np.all(s == 0)


def test_integer_step_counts_of_any_integer_type_run() -> None:
    """numpy integers and the largest count are step counts."""
    for t in (np.int64(3), np.uint64(2**64 - 1), 7):
        w, s = np.ones(4, np.float32), np.zeros(4, np.float32)
        an.step([w], [np.ones(4, np.float32)], [s], t)  # type: ignore[arg-type]
        assert np.all(s == 1)


@pytest.mark.parametrize(
    ("grads", "weights", "message"),
    [
        (np.full((3, 4), 0.5, np.float64), None, "grads must be a numpy array of float32"),
        (np.full((3, 4), 0.5, np.float16), None, "grads must be a numpy array of float32"),
        (np.full((3, 4), 0.5, ">f4"), None, "grads must be a numpy array of float32"),
        ([[0.5] * 4] * 3, None, "not a list"),
        (np.full((1, 4), 0.5, np.float32), np.ones(3, np.float64), "weights must be a one-dimensional"),
        (np.full((1, 4), 0.5, np.float32), np.ones((3, 1), np.float32), "weights must be a one-dimensional"),
    ],
)
def test_embedding_inputs_of_the_wrong_type_are_adagrad_errors(
    grads: object, weights: np.ndarray | None, message: str
) -> None:
    """Wrong dtypes, byte orders and shapes of gradients and weights raise AdagradError (as the docstring says),
    naming what was given, and change nothing."""
    opt = EmbeddingAdagrad(10, 4)
    table = np.full((10, 4), 0.5, np.float32)
    ids = np.array([1, 2, 3])
    offsets = np.array([0, 3]) if weights is not None else None
    with pytest.raises(adagrad_cpu.AdagradError, match=message):
        opt.step(table, ids, grads, offsets, weights)  # type: ignore[arg-type]
    assert np.all(table == 0.5) and opt.step_count == 0 and not opt.state.any()


def test_the_error_type_is_named_for_the_package() -> None:
    """Tracebacks show ``adagrad_cpu.AdagradError``; messages name the parameter without stray punctuation."""
    assert adagrad_cpu.AdagradError.__module__ == "adagrad_cpu"
    assert adagrad_cpu.AdagradError.__qualname__ == "AdagradError"
    p = torch.zeros(4, 4, requires_grad=True)
    opt = at.Adagrad([p])
    p.grad = torch.zeros(4, 4).t()
    with pytest.raises(adagrad_cpu.AdagradError) as info:
        opt.step()
    assert str(info.value).startswith("the gradient of param_groups[0]['params'][0] is not contiguous"), info.value
