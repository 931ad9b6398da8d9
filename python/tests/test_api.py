"""The package's surface: the engine's settings, the error type, the docstring example, introspection."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

import adagrad_cpu
import adagrad_cpu.numpy
import adagrad_cpu.torch as at


def test_error_is_a_value_error() -> None:
    """AdagradError is a ValueError, so code catching torch's ValueErrors catches it too."""
    assert issubclass(adagrad_cpu.AdagradError, ValueError)
    assert at.AdagradError is adagrad_cpu.AdagradError


def test_available_isas_lists_the_paths_every_cpu_has_first() -> None:
    """The scalar and portable paths exist on every CPU and come first, so the ISA-parametrized tests never run
    over an empty list (which pytest would skip without a word)."""
    have = adagrad_cpu.available_isas()
    assert have[:2] == ["scalar", "portable"]
    assert set(have) <= {"scalar", "portable", "avx2", "avx512"}


def test_engine_reports_its_path_and_threads(isa: str) -> None:
    """The path asked for is the path used; threads as asked."""
    e = adagrad_cpu.Engine(isa=isa, threads=3)
    assert e.isa == isa and e.threads == 3
    assert "prefetch" in e.tuning
    assert adagrad_cpu.Engine(threads=1).threads == 1


def test_optimizer_introspection() -> None:
    """isa and threads visible on the optimizer."""
    opt = at.Adagrad([torch.zeros(3, requires_grad=True)], threads=2, isa="scalar")
    assert opt.isa == "scalar" and opt.threads == 2


def test_numpy_docstring_example() -> None:
    """The worked example in adagrad_cpu.numpy.Adagrad's docstring (θ0 = 1, α = 0.1, ε = 1e-8 inside)."""
    result = doctest.testmod(adagrad_cpu.numpy)
    assert result.attempted > 0 and result.failed == 0


def test_fast_precision_is_bounded() -> None:
    """precision='fast' stays within the crate's documented bound of the exact update (f32: 2^-20 relative; from
    zero parameters the update is the parameter, rounded once more)."""
    g = torch.Generator().manual_seed(3)
    grad = torch.randn(5000, generator=g) * torch.logspace(-8, 8, 5000)
    pe, pf = torch.zeros(5000, requires_grad=True), torch.zeros(5000, requires_grad=True)
    exact, fast = at.Adagrad([pe], lr=0.1), at.Adagrad([pf], lr=0.1, precision="fast")
    pe.grad, pf.grad = grad, grad.clone()
    exact.step()
    fast.step()
    rel = ((pf - pe).abs() / pe.abs()).max().item()
    assert 0 < pe.abs().min().item() and rel <= 2**-20 + 2**-23


@pytest.mark.parametrize("placement", ["outside", "inside"])
def test_eps_placement_worked_example(placement: str) -> None:
    """θ0 = 1, α = 0.1, ε = 1e-8, g = 0.2, 0.4, 0.1 → 0.9, 0.810557…, 0.788735… (either placement: ε is tiny)."""
    p = torch.ones(1, dtype=torch.float64, requires_grad=True)
    opt = at.Adagrad([p], lr=0.1, eps=1e-8, eps_placement=placement)
    seen = []
    for g in (0.2, 0.4, 0.1):
        p.grad = torch.full((1,), g, dtype=torch.float64)
        opt.step()
        seen.append(p.item())
    assert seen[0] == pytest.approx(0.9, abs=1e-7)
    assert seen[1] == pytest.approx(0.810557, abs=1e-6)
    assert seen[2] == pytest.approx(0.788735, abs=1e-6)


def test_step_hooks_and_profiler_label() -> None:
    """Step pre/post hooks (per optimizer and global) run as with torch's optimizers; under the profiler the step
    is labelled Optimizer.step#Adagrad.step."""
    p = torch.ones(3, requires_grad=True)
    opt = at.Adagrad([p], lr=0.1)
    seen: list[str] = []
    h1 = opt.register_step_pre_hook(lambda o, a, k: seen.append("pre"))
    h2 = opt.register_step_post_hook(lambda o, a, k: seen.append("post"))
    h3 = register_optimizer_step_pre_hook(lambda o, a, k: seen.append("global-pre"))
    try:
        p.grad = torch.ones(3)
        opt.step()
    finally:
        for h in (h1, h2, h3):
            h.remove()
    assert seen == ["global-pre", "pre", "post"]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        opt.step()
    assert any(e.name == "Optimizer.step#Adagrad.step" for e in prof.events())


def test_native_step_checks_its_backing_and_counts_updates() -> None:
    """The native entry point refuses a state backing of the wrong kind (it never trusts its caller's arrays) and
    returns how many parameters it updated."""
    import numpy as np

    from adagrad_cpu import _native

    engine = _native.Engine(threads=1)
    p = torch.ones(4, requires_grad=True)
    q = torch.ones(4, requires_grad=True)
    p.grad, q.grad = torch.ones(4), torch.ones(4)

    def backing(step_dtype: type = np.float32, master: bool = False) -> tuple[object, ...]:
        s, k = np.zeros(4, np.float32), np.zeros((), step_dtype)
        m = np.ones(4, np.float64) if master else None
        return (torch.from_numpy(s), s, torch.from_numpy(k), k, None if m is None else torch.from_numpy(m), m)

    def group(params: list[torch.Tensor], backs: list[tuple[object, ...]]) -> tuple[object, ...]:
        return (params, backs, 0.1, 0.0, 0.0, 1e-10, False, 0.0)

    with pytest.raises(adagrad_cpu.AdagradError, match="one float32 element"):
        engine.torch_step(_native.TensorCache(), [group([p], [backing(np.float64)])])
    with pytest.raises(adagrad_cpu.AdagradError, match="must be float32"):
        engine.torch_step(_native.TensorCache(), [group([p], [backing(master=True)])])
    assert torch.equal(p.detach(), torch.ones(4))
    assert engine.torch_step(_native.TensorCache(), [group([p, q], [backing(), backing()])]) == 2
    assert not torch.equal(p.detach(), torch.ones(4))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_empty_parameters_step(dtype: torch.dtype) -> None:
    """An empty parameter (an FSDP2 rank's empty shard, a zero-width layer) takes its part in a step: its state is
    empty memory of the optimizer's own (whose address is still aligned for the state's dtype), the other
    parameters are updated as without it."""
    empty = torch.nn.Parameter(torch.zeros(0, 4, dtype=dtype))
    p = torch.nn.Parameter(torch.ones(3, dtype=dtype))
    q = p.detach().clone().requires_grad_()
    ours = adagrad_cpu.torch.Adagrad([empty, p], lr=0.1, master_weights=True)
    alone = adagrad_cpu.torch.Adagrad([q], lr=0.1, master_weights=True)
    for _ in range(3):
        empty.grad = torch.zeros_like(empty)
        p.grad = torch.full_like(p, 0.5)
        q.grad = torch.full_like(q, 0.5)
        ours.step()
        alone.step()
    assert torch.equal(p, q) and not torch.equal(p, torch.ones(3, dtype=dtype))
    assert ours.state[empty]["sum"].numel() == 0 and float(ours.state[empty]["step"]) == 3.0


@pytest.mark.parametrize("placement", ["outside", "inside"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lr_stats_are_those_of_every_element(placement: str, dtype: torch.dtype) -> None:
    """``lr_stats``: per parameter (two groups, their own lr and lr_decay), the effective learning rate of its next
    step computed element by element in the state's dtype — min, lower median, max, mean, count below."""
    gen = torch.Generator().manual_seed(3)
    a = torch.nn.Parameter(torch.randn(101, dtype=dtype, generator=gen))
    b = torch.nn.Parameter(torch.randn(6, 7, dtype=dtype, generator=gen))
    c = torch.nn.Parameter(torch.randn(10, dtype=dtype, generator=gen))
    groups = [{"params": [a], "lr": 0.1, "lr_decay": 0.05}, {"params": [b, c], "lr": 0.02}]
    opt = at.Adagrad(groups, eps=1e-6, eps_placement=placement)
    for step in range(5):
        for p in (a, b):
            p.grad = torch.randn(p.shape, dtype=dtype, generator=gen) * (step + 1)
        opt.step()
    got = opt.lr_stats(threshold=0.02)
    assert [(s["group"], s["index"]) for s in got] == [(0, 0), (1, 0), (1, 1)]
    for s, p, group in zip(got, (a, b, c), (groups[0], groups[1], groups[1])):
        t = float(opt.state[p]["step"]) + 1
        # The reference in numpy, whose arithmetic is IEEE element by element (torch's scalar-by-tensor division is
        # not always correctly rounded).
        total = opt.state[p]["sum"].numpy().ravel()
        kind = total.dtype.type
        clr = kind(group["lr"] / (1 + (t - 1) * group["lr_decay"]))
        eps = kind(1e-6)
        eff = clr / (np.sqrt(total) + eps) if placement == "outside" else clr / np.sqrt(total + eps)
        ordered = np.sort(eff)
        n = eff.size
        assert s["elements"] == n
        assert (s["min"], s["median"], s["max"]) == (
            float(ordered[0]),
            float(ordered[(n - 1) // 2]),
            float(ordered[-1]),
        )
        assert s["below"] == int((eff < 0.02).sum()) and s["fraction_below"] == s["below"] / n
        assert s["mean"] == pytest.approx(float(eff.astype(np.float64).mean()), rel=1e-12)
    # c never had a gradient: its rate is the untouched accumulator's, the same for every element.
    assert got[2]["min"] == got[2]["max"] and got[2]["below"] == 0
    assert got[0]["min"] < got[0]["max"]
    with pytest.raises(adagrad_cpu.AdagradError, match="threshold"):
        opt.lr_stats(threshold=-1.0)


def test_embedding_lr_stats_shrink_where_rows_are_looked_up() -> None:
    """An embedding table's rates: untouched rows keep the initial rate (the largest); rows looked up often fall
    below a threshold; the count grows with more steps."""
    import adagrad_cpu.embedding as ae

    opt = ae.EmbeddingAdagrad(1000, 8, lr=0.1, eps=1e-8, initial_accumulator_value=0.01)
    table = np.zeros((1000, 8), np.float32)
    first = opt.lr_stats(threshold=0.05)
    assert first["below"] == 0 and first["min"] == first["max"] == pytest.approx(0.1 / (0.1 + 1e-8), rel=1e-6)
    counts = []
    for _ in range(20):
        ids = np.arange(10, dtype=np.int64)
        opt.step(table, ids, np.ones((10, 8), np.float32))
        counts.append(opt.lr_stats(threshold=0.05)["below"])
    assert counts[0] == 0 and counts[-1] == 10 and counts == sorted(counts)
    final = opt.lr_stats(threshold=0.05)
    assert final["max"] == first["max"] and final["min"] < 0.05 and final["elements"] == 1000


def test_native_lr_stats_refusals() -> None:
    """The native statistics refuse a step count of 0, accumulators that are neither float32 nor float64, an unknown
    eps placement and a learning rate float32 cannot hold; a valid call reads the array as given."""
    from adagrad_cpu import _native

    ok = {"lr": 0.1, "lr_decay": 0.0, "step": 1, "eps": 1e-30, "eps_placement": "outside", "threshold": 0.06}
    s = _native.lr_stats(np.array([4.0, 1.0], np.float32), **ok)
    assert (s["min"], s["max"], s["below"]) == (float(np.float32(0.1) / 2), float(np.float32(0.1)), 1)
    for change, array in [
        ({"step": 0}, np.ones(2, np.float32)),
        ({}, np.ones(2, np.float16)),
        ({"eps_placement": "middle"}, np.ones(2, np.float32)),
        ({"lr": 1e39}, np.ones(2, np.float32)),
    ]:
        with pytest.raises(adagrad_cpu.AdagradError):
            _native.lr_stats(array, **{**ok, **change})
