"""Bit-exactness with torch.optim.Adagrad(fused=True), over whole trajectories."""

from __future__ import annotations

import copy
import io
from collections.abc import Callable
from typing import Any

import pytest
import torch

import adagrad_cpu.torch as at

SIZES = (1, 3, 16, 63, 64, 65, 1000, 4099, 70000)


def make_params(dtype: torch.dtype, sizes: tuple[int, ...] = SIZES, seed: int = 0) -> list[torch.Tensor]:
    """Parameters with a mix of values (zeros included)."""
    g = torch.Generator().manual_seed(seed)
    ps = []
    for n in sizes:
        p = torch.randn(n, generator=g, dtype=dtype)
        p[::7] = 0.0
        ps.append(p.requires_grad_())
    return ps


def grads_for(ps: list[torch.Tensor], step: int, seed: int = 1) -> list[torch.Tensor | None]:
    """Per-step gradients with zeros, tiny and huge values; every third parameter skips every other step."""
    g = torch.Generator().manual_seed(seed * 1000 + step)
    out: list[torch.Tensor | None] = []
    for i, p in enumerate(ps):
        if i % 3 == 2 and step % 2 == 1:
            out.append(None)
            continue
        x = torch.randn(p.shape, generator=g, dtype=p.dtype)
        x[::5] = 0.0
        x[1::11] *= 1e-20
        x[2::13] *= 1e20 if p.dtype == torch.float64 else 1e10
        out.append(x)
    return out


def run(
    make: Callable[[list[torch.Tensor]], torch.optim.Optimizer], dtype: torch.dtype, steps: int, sched: bool = False
) -> tuple[list[torch.Tensor], dict[str, Any]]:
    """A trajectory: ``steps`` steps with the gradients above; returns the parameters and the state_dict."""
    ps = make_params(dtype)
    opt = make(ps)
    lr_sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.7) if sched else None
    for s in range(steps):
        for p, g in zip(ps, grads_for(ps, s)):
            p.grad = g
        opt.step()
        if lr_sched is not None:
            lr_sched.step()
    return [p.detach().clone() for p in ps], copy.deepcopy(opt.state_dict())


def assert_same_bits(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    """Equal bits (NaN payloads included), not merely equal values."""
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        assert x.dtype == y.dtype and x.shape == y.shape, i
        as_int = {8: torch.int64, 4: torch.int32, 2: torch.int16}[x.element_size()]
        ix, iy = x.view(as_int), y.view(as_int)
        assert torch.equal(ix, iy), f"tensor {i} differs in {int((ix != iy).sum())} elements"


def assert_same_state(sa: dict[str, Any], sb: dict[str, Any]) -> None:
    """The same state (sum and step per parameter, bit for bit) and group hyperparameters."""
    assert sorted(sa["state"]) == sorted(sb["state"])
    for k in sa["state"]:
        assert_same_bits(
            [sa["state"][k]["sum"], sa["state"][k]["step"].reshape(1)],
            [sb["state"][k]["sum"], sb["state"][k]["step"].reshape(1)],
        )
    for ga, gb in zip(sa["param_groups"], sb["param_groups"]):
        assert {k: v for k, v in ga.items() if k != "fused"} == {k: v for k, v in gb.items() if k != "fused"}


HYPERS = [
    {},
    {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.1, "initial_accumulator_value": 0.5, "eps": 1e-8},
    {"lr": 0.05, "maximize": True, "weight_decay": 0.01},
    {"lr": 0.3, "lr_decay": 1.0, "eps": 0.0, "initial_accumulator_value": 1e-3},
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("hyper", HYPERS)
def test_trajectory_matches_torch_fused(dtype: torch.dtype, hyper: dict[str, Any], isa: str) -> None:
    """Eight steps, every size class, skipped gradients: parameters and state bit-identical, on every path."""
    ref_p, ref_s = run(lambda ps: torch.optim.Adagrad(ps, fused=True, **hyper), dtype, 8)
    got_p, got_s = run(lambda ps: at.Adagrad(ps, isa=isa, **hyper), dtype, 8)
    assert_same_bits(ref_p, got_p)
    assert_same_state(ref_s, got_s)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_threads_do_not_change_bits(threads: int) -> None:
    """Any thread count: the same bits as torch (the large tensors split across threads)."""
    ref_p, _ = run(lambda ps: torch.optim.Adagrad(ps, fused=True, lr=0.1), torch.float32, 5)
    got_p, _ = run(lambda ps: at.Adagrad(ps, lr=0.1, threads=threads), torch.float32, 5)
    assert_same_bits(ref_p, got_p)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_param_groups_and_scheduler(dtype: torch.dtype) -> None:
    """Per-group hyperparameters and an LR scheduler changing them between steps."""

    def groups(ps: list[torch.Tensor]) -> list[dict[str, Any]]:
        return [
            {"params": ps[:3]},
            {"params": ps[3:6], "lr": 0.2, "weight_decay": 0.05, "lr_decay": 0.1},
            {"params": ps[6:], "lr": 0.02, "maximize": True, "eps": 1e-6},
        ]

    ref_p, ref_s = run(lambda ps: torch.optim.Adagrad(groups(ps), lr=0.1, fused=True), dtype, 7, sched=True)
    got_p, got_s = run(lambda ps: at.Adagrad(groups(ps), lr=0.1), dtype, 7, sched=True)
    assert_same_bits(ref_p, got_p)
    assert_same_state(ref_s, got_s)


@pytest.mark.parametrize("direction", ["torch_to_ours", "ours_to_torch"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_state_dict_moves_both_ways_mid_run(direction: str, dtype: torch.dtype) -> None:
    """Four steps in one optimizer, its state_dict saved (torch.save) and loaded into the other, four more: the
    same bits as eight steps of torch alone."""
    kw = {"lr": 0.1, "lr_decay": 0.05, "weight_decay": 0.02, "initial_accumulator_value": 0.1}
    ref_p, ref_s = run(lambda ps: torch.optim.Adagrad(ps, fused=True, **kw), dtype, 8)
    first, second = (
        (lambda ps: torch.optim.Adagrad(ps, fused=True, **kw), lambda ps: at.Adagrad(ps, **kw))
        if direction == "torch_to_ours"
        else (lambda ps: at.Adagrad(ps, **kw), lambda ps: torch.optim.Adagrad(ps, fused=True, **kw))
    )
    ps = make_params(dtype)
    opt = first(ps)
    for s in range(4):
        for p, g in zip(ps, grads_for(ps, s)):
            p.grad = g
        opt.step()
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    opt2 = second(ps)
    opt2.load_state_dict(torch.load(buf))
    for s in range(4, 8):
        for p, g in zip(ps, grads_for(ps, s)):
            p.grad = g
        opt2.step()
    assert_same_bits(ref_p, [p.detach() for p in ps])
    assert_same_state(ref_s, opt2.state_dict())


def test_state_dict_layout_is_torchs() -> None:
    """Per parameter exactly 'step' (float32 scalar) and 'sum'; the same group keys; fresh state equal too."""
    ps_a, ps_b = make_params(torch.float32, (5, 6)), make_params(torch.float32, (5, 6))
    sa = torch.optim.Adagrad(ps_a, fused=True).state_dict()
    sb = at.Adagrad(ps_b).state_dict()
    assert sorted(sa["param_groups"][0]) == sorted(sb["param_groups"][0])
    for k in sa["state"]:
        assert sorted(sa["state"][k]) == sorted(sb["state"][k]) == ["step", "sum"]
        assert sb["state"][k]["step"].dtype == torch.float32 and sb["state"][k]["step"].shape == ()
    assert_same_state(sa, sb)


def test_grad_scale_and_found_inf_as_torch_fused() -> None:
    """GradScaler's attributes: gradients divided by grad_scale; found_inf=1 skips the update and keeps the
    step count, as torch._fused_adagrad_ does."""
    ref_ps, got_ps = make_params(torch.float32), make_params(torch.float32)
    ref = torch.optim.Adagrad(ref_ps, fused=True, lr=0.1)
    got = at.Adagrad(got_ps, lr=0.1)
    for s, (scale, inf) in enumerate([(1024.0, 0.0), (3.0, 1.0), (0.5, 0.0), (65536.0, 0.0)]):
        for o, ps in ((ref, ref_ps), (got, got_ps)):
            for p, g in zip(ps, grads_for(ps, s)):
                p.grad = None if g is None else g * scale
            o.grad_scale = torch.tensor(scale)  # type: ignore[attr-defined]
            o.found_inf = torch.tensor(inf)  # type: ignore[attr-defined]
            o.step()
        assert_same_bits([p.detach() for p in ref_ps], [p.detach() for p in got_ps])
        assert_same_state(ref.state_dict(), got.state_dict())


def test_none_gradients_are_skipped_and_late_params_get_state() -> None:
    """A parameter without a gradient is left alone (no state change); one added by add_param_group gets its
    state at its first gradient, with the optimizer's initial_accumulator_value, as in torch."""
    results = []
    for make in (
        lambda ps: torch.optim.Adagrad(ps, fused=True, initial_accumulator_value=0.3),
        lambda ps: at.Adagrad(ps, initial_accumulator_value=0.3),
    ):
        ps = make_params(torch.float32, (10, 20, 30))
        opt = make(ps[:2])
        ps[0].grad = torch.ones(10)
        opt.step()
        opt.add_param_group({"params": [ps[2]], "lr": 0.5})
        opt.step()  # ps[2] has no gradient yet: no state
        assert ps[2] not in opt.state or not opt.state[ps[2]]
        ps[2].grad = torch.full((30,), 0.5)
        ps[1].grad = torch.full((20,), -2.0)
        opt.step()
        results.append(([p.detach().clone() for p in ps], opt.state_dict()))
    assert_same_bits(results[0][0], results[1][0])
    assert_same_state(results[0][1], results[1][1])


def test_parameter_memory_moving_is_followed() -> None:
    """p.data = ... between steps (as ZeRO's bucket views do): the step follows the new memory."""
    ref_ps, got_ps = make_params(torch.float32, (100, 200)), make_params(torch.float32, (100, 200))
    ref, got = torch.optim.Adagrad(ref_ps, fused=True), at.Adagrad(got_ps)
    for s in range(4):
        for ps, o in ((ref_ps, ref), (got_ps, got)):
            if s == 2:
                flat = torch.cat([p.detach().reshape(-1) for p in ps])
                ps[0].data = flat[:100]
                ps[1].data = flat[100:]
            for p in ps:
                p.grad = torch.full_like(p, 0.25 * (s + 1))
            o.step()
    assert_same_bits([p.detach() for p in ref_ps], [p.detach() for p in got_ps])


def test_autograd_sees_the_in_place_update() -> None:
    """A graph that saved a parameter before the step fails in backward, as after torch's default (for-each)
    step (its fused step does not bump the version counters)."""
    p = torch.ones(4, requires_grad=True)
    opt = at.Adagrad([p])
    loss = (p * p).sum()
    p.grad = torch.ones(4)
    opt.step()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_grads_argument_starts_an_appended_parameter_at_its_first_gradient(isa: str) -> None:
    """A parameter appended to a group's list has no state; while its entry in ``grads=`` is None it stays
    without, and the step whose ``grads=`` first gives it a gradient starts it, as torch starts such a parameter
    at its first ``p.grad`` (the same bits as torch's fused step, for it and for the others)."""
    ref_ps, got_ps = make_params(torch.float32), make_params(torch.float32)
    ref = torch.optim.Adagrad(ref_ps[:-1], fused=True, lr=0.1)
    got = at.Adagrad(got_ps[:-1], lr=0.1, isa=isa)
    ref.param_groups[0]["params"].append(ref_ps[-1])
    got.param_groups[0]["params"].append(got_ps[-1])
    for s in range(4):
        gs = grads_for(ref_ps, s)
        if s < 2:
            gs[-1] = None
        for p, g in zip(ref_ps, gs):
            p.grad = g
        ref.step()
        got.step(grads=[None if g is None else g.clone() for g in gs])
        assert (got_ps[-1] in got.state) == (s >= 2)
    assert_same_bits([p.detach() for p in ref_ps], [p.detach() for p in got_ps])


@pytest.mark.parametrize("case", ["mixed", "none", "found_inf"])
def test_version_counters_move_as_torchs(case: str) -> None:
    """The step bumps autograd's version counter of exactly the parameters it writes: those with a gradient, as
    torch's default (for-each) Adagrad does; none when no parameter has a gradient, or when found_inf skips the
    update. (torch's fused step bumps none, so a graph that saved a parameter silently uses the new values.)"""

    def run(make: Any, skip: bool) -> list[int]:
        ps = [torch.ones(5, requires_grad=True) for _ in range(4)]
        opt = make(ps)
        for i, p in enumerate(ps):
            if case != "none" and i % 2 == 0:
                p.grad = torch.full_like(p, 0.5)
        if skip:
            opt.grad_scale = torch.tensor(1.0)
            opt.found_inf = torch.tensor(1.0)
        before = [p._version for p in ps]
        opt.step()
        return [p._version - b for p, b in zip(ps, before)]

    ours = run(lambda ps: at.Adagrad(ps, lr=0.1), case == "found_inf")
    if case == "found_inf":
        assert ours == [0, 0, 0, 0]
    else:
        theirs = run(lambda ps: torch.optim.Adagrad(ps, lr=0.1), False)
        assert ours == theirs, (ours, theirs)
        assert sum(ours) == (2 if case == "mixed" else 0)


def test_closure_returns_loss() -> None:
    """step(closure) evaluates the closure with gradients enabled and returns its loss."""
    p = torch.ones(3, requires_grad=True)
    opt = at.Adagrad([p], lr=0.1)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (p * 2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss is not None and float(loss.detach()) == 6.0
    assert torch.equal(p.detach(), torch.full((3,), 0.9))


def test_pickled_optimizer_continues_bit_exactly() -> None:
    """An optimizer pickled mid-run (with its parameters, as multiprocessing does) continues on torch's bits."""
    import pickle

    kw = {"lr": 0.1, "lr_decay": 0.01}
    ref_p, _ = run(lambda ps: torch.optim.Adagrad(ps, fused=True, **kw), torch.float32, 6)
    ps = make_params(torch.float32)
    opt = at.Adagrad(ps, threads=2, **kw)
    for s in range(3):
        for p, g in zip(ps, grads_for(ps, s)):
            p.grad = g
        opt.step()
    ps2, opt2 = pickle.loads(pickle.dumps((ps, opt)))
    assert opt2.threads == 2
    for s in range(3, 6):
        for p, g in zip(ps2, grads_for(ps2, s)):
            p.grad = g
        opt2.step()
    assert_same_bits(ref_p, [p.detach() for p in ps2])


def test_share_memory_is_refused() -> None:
    """Shared-memory state is not supported, said plainly."""
    opt = at.Adagrad([torch.zeros(3, requires_grad=True)])
    with pytest.raises(at.AdagradError, match="shared memory"):
        opt.share_memory()


def test_params_appended_to_a_group_list_are_stepped_as_in_torch() -> None:
    """A parameter appended to a group's list (or one replaced in it) is picked up at the next step, with state
    created at its first gradient, as torch.optim.Adagrad does."""
    results = []
    for make in (lambda ps: torch.optim.Adagrad(ps, fused=True, lr=0.2), lambda ps: at.Adagrad(ps, lr=0.2)):
        ps = make_params(torch.float32, (10, 20, 30))
        opt = make(ps[:2])
        for p in ps[:2]:
            p.grad = torch.ones_like(p)
        opt.step()
        opt.param_groups[0]["params"].append(ps[2])
        opt.param_groups[0]["params"][0] = ps[0]  # the same object: nothing changes
        for p in ps:
            p.grad = torch.full_like(p, 0.5)
        opt.step()
        opt.step()
        results.append([p.detach().clone() for p in ps])
    assert_same_bits(results[0], results[1])
