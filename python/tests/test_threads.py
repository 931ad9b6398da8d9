"""Threads and memory as a guest in PyTorch's process: the thread count follows ``torch.get_num_threads()`` by
default, absurd counts are refused before anything starts, the state lives in aligned memory, and the bits do
not depend on the threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import adagrad_cpu
import adagrad_cpu.numpy as an
import adagrad_cpu.torch as at
from adagrad_cpu._host import aligned_array
from adagrad_cpu.embedding import EmbeddingAdagrad


@pytest.fixture
def torch_threads() -> object:
    """Restores torch's thread setting after the test."""
    before = torch.get_num_threads()
    yield None
    torch.set_num_threads(before)


def test_the_torch_drop_in_follows_torchs_thread_setting(torch_threads: object) -> None:
    """``threads=None`` uses as many threads as torch does, at every step: ``torch.set_num_threads`` sets ours."""
    p = torch.zeros(1000, requires_grad=True)
    torch.set_num_threads(1)
    opt = at.Adagrad([p])
    assert opt.threads == 1
    torch.set_num_threads(3)
    p.grad = torch.full_like(p, 0.5)
    opt.step()
    assert opt.threads == 3
    torch.set_num_threads(2)
    opt.step()
    assert opt.threads == 2
    # An explicit count stays what it is.
    fixed = at.Adagrad([torch.zeros(3, requires_grad=True)], threads=1)
    torch.set_num_threads(3)
    assert fixed.threads == 1


def test_the_numpy_and_embedding_layers_follow_torch_when_it_is_loaded(torch_threads: object) -> None:
    """With torch loaded (as in this process) the numpy and embedding optimizers take its thread count too."""
    torch.set_num_threads(3)
    assert an.Adagrad([np.zeros(4, np.float32)]).threads == 3
    assert EmbeddingAdagrad(10, 4).threads == 3
    torch.set_num_threads(1)
    assert an.Adagrad([np.zeros(4, np.float32)]).threads == 1
    assert EmbeddingAdagrad(10, 4, threads=2).threads == 2


@pytest.mark.parametrize("threads", [1025, 1 << 20, 10**9, 10**30, 0, -3, 2.0, True, "4"])
def test_absurd_thread_counts_are_refused_before_anything_starts(threads: int) -> None:
    """A count that is not an integer from 1 to 1024 is an AdagradError from every layer, and no thread was
    started for it."""
    before = threading.active_count(), _os_threads()
    with pytest.raises(adagrad_cpu.AdagradError, match="threads"):
        at.Adagrad([torch.zeros(3, requires_grad=True)], threads=threads)
    with pytest.raises(adagrad_cpu.AdagradError, match="threads"):
        an.Adagrad([np.zeros(3, np.float32)], threads=threads)
    with pytest.raises(adagrad_cpu.AdagradError, match="threads"):
        EmbeddingAdagrad(10, 4, threads=threads)
    assert (threading.active_count(), _os_threads()) == before


@pytest.mark.parametrize("threads", [1025, 1 << 20, 10**9])
def test_the_engine_refuses_counts_above_the_bound(threads: int) -> None:
    """The native engine itself (the Rust bound) refuses counts above 1024, nothing started."""
    before = _os_threads()
    with pytest.raises(adagrad_cpu.AdagradError, match="at most 1024"):
        adagrad_cpu.Engine(threads=threads)
    assert _os_threads() == before


def _os_threads() -> int:
    """This process's threads, as Linux counts them."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Threads:"))


@pytest.mark.parametrize("shape", [(3,), (1000, 17), (2 << 20,), ()])
def test_state_lives_in_aligned_memory(shape: tuple[int, ...]) -> None:
    """``sum`` (and a master copy) start on a cache line, and from 2 MiB on a 2 MiB boundary, in the torch and numpy
    layers; the memory stays valid while the tensor lives, whatever happens to the array that owned it."""
    p = torch.zeros(shape, requires_grad=True)
    opt = at.Adagrad([p], threads=1)
    p.grad = torch.full_like(p, 0.5)
    opt.step()
    s = opt.state[p]["sum"]
    align = 2 << 20 if s.numel() * 4 >= 2 << 20 else 64
    assert s.data_ptr() % align == 0, hex(s.data_ptr())
    assert torch.all(s == 0.25)
    h = torch.zeros(shape, dtype=torch.bfloat16, requires_grad=True)
    half = at.Adagrad([h], threads=1, master_weights=True)
    h.grad = torch.full_like(h, 0.5)
    half.step()
    assert half.state[h]["master"].data_ptr() % 64 == 0
    sums = an.Adagrad([np.zeros(shape, np.float64)], initial_accumulator_value=0.5).sums
    assert sums[0].ctypes.data % 64 == 0 and sums[0].shape == shape and np.all(sums[0] == 0.5)


def test_aligned_arrays_are_zeroed_writable_and_owned() -> None:
    """The helper's arrays: zero-filled, writable, C-contiguous, of the dtype and shape asked; the memory outlives
    every view taken of it."""
    a = aligned_array((5, 7), np.float32)
    assert a.dtype == np.float32 and a.shape == (5, 7) and a.flags.c_contiguous and a.flags.writeable
    assert not a.any() and a.ctypes.data % 64 == 0
    t = torch.from_numpy(a)
    del a
    t += 1
    assert float(t.sum()) == 35.0
    assert aligned_array((0,), np.float64).size == 0


def assert_torch_bits(seed: int, shapes: list[tuple[int, ...]], steps: int, **kw: object) -> None:
    """Ours (with ``kw``) and ``torch.optim.Adagrad(fused=True)`` from the same start, over ``steps`` random
    gradients: the same parameter bits after every step."""
    torch.manual_seed(seed)
    ours = [torch.randn(s, requires_grad=True) for s in shapes]
    ref = [p.detach().clone().requires_grad_() for p in ours]
    hyper = {"lr": 0.1, "weight_decay": 0.01, "lr_decay": 0.01}
    o = at.Adagrad(ours, **hyper, **kw)  # type: ignore[arg-type]
    r = torch.optim.Adagrad(ref, **hyper, fused=True)  # type: ignore[arg-type]
    for _ in range(steps):
        for a, b in zip(ours, ref):
            g = torch.randn(a.shape)
            a.grad, b.grad = g.clone(), g.clone()
        o.step()
        r.step()
        for a, b in zip(ours, ref):
            assert torch.equal(a.view(torch.int32), b.view(torch.int32))


@pytest.mark.parametrize("threads", [1, 2, 3, 7])
def test_bits_do_not_depend_on_the_threads(threads: int) -> None:
    """Every thread count gives torch's fused bits, over several tensors and steps."""
    assert_torch_bits(0, [(300_000,), (70_001,), (5,), (1024, 65)], 4, threads=threads)


def test_the_default_team_is_torchs_openmp_team_and_can_be_overridden(
    torch_threads: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With torch loaded, parallel steps run on its OpenMP team by default; ``team=`` and ``ADAGRAD_TEAM`` choose;
    anything else is refused; one thread is sequential whatever the team."""
    torch.set_num_threads(2)
    p = [torch.zeros(3, requires_grad=True)]
    assert at.Adagrad(p).team == "openmp"
    assert at.Adagrad(p, team="pool").team == "pool"
    assert at.Adagrad(p, threads=1).team == "sequential"
    assert adagrad_cpu.Engine(threads=4, team="openmp").threads == 4
    monkeypatch.setenv("ADAGRAD_TEAM", "pool")
    assert at.Adagrad(p).team == "pool"
    assert at.Adagrad(p, team="openmp").team == "openmp"
    monkeypatch.setenv("ADAGRAD_TEAM", "threads")
    with pytest.raises(adagrad_cpu.AdagradError, match="team must be 'pool' or 'openmp'"):
        at.Adagrad(p)
    with pytest.raises(adagrad_cpu.AdagradError, match="team must be"):
        adagrad_cpu.Engine(team="gomp")


@pytest.mark.parametrize("team", ["openmp", "pool"])
@pytest.mark.parametrize("threads", [2, 3])
def test_both_teams_give_torchs_bits_and_finish_every_chunk(team: str, threads: int, torch_threads: object) -> None:
    """Either team gives torch's fused bits, over several tensors and steps, with torch's own thread count
    different from ours (an OpenMP team then runs as many threads as the step asks)."""
    torch.set_num_threads(1 if threads == 2 else 2)
    assert at.Adagrad([torch.zeros(1)], threads=threads, team=team).team == team
    assert_torch_bits(1, [(500_001,), (3,), (300, 700)], 3, threads=threads, team=team)


def test_openmp_steps_from_several_python_threads_at_once(torch_threads: object) -> None:
    """A step on the OpenMP team from several Python threads at once (each its own optimizer) gives the same
    bits as one at a time: each calling thread gets its own team."""
    torch.set_num_threads(2)
    shapes = [(200_000,)]
    init = torch.randn(shapes[0])
    grad = torch.randn(shapes[0])
    results: list[torch.Tensor] = []

    def run() -> None:
        p = init.clone().requires_grad_()
        opt = at.Adagrad([p], lr=0.1, team="openmp")
        for _ in range(5):
            p.grad = grad.clone()
            opt.step()
        results.append(p.detach())

    workers = [threading.Thread(target=run) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    run()
    assert len(results) == 4
    for r in results[:3]:
        assert torch.equal(r.view(torch.int32), results[3].view(torch.int32))
