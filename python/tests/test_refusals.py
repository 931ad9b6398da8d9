"""Every refusal: a clear AdagradError, and nothing changed (parameters, gradients, state, step counts)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import adagrad_cpu.torch as at


def snapshot(opt: at.Adagrad, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Copies of the given tensors and of every state tensor."""
    out = [t.detach().clone() for t in tensors]
    for state in opt.state.values():
        out.extend(v.detach().clone() for v in state.values())
    return out


def assert_unchanged(opt: at.Adagrad, tensors: list[torch.Tensor], before: list[torch.Tensor]) -> None:
    """Bit-identical to the snapshot."""
    after = snapshot(opt, tensors)
    assert len(after) == len(before)
    for a, b in zip(after, before):
        assert torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))


def refused(opt: at.Adagrad, tensors: list[torch.Tensor], match: str, **step_kw: object) -> None:
    """The step raises AdagradError matching ``match`` and changes nothing."""
    before = snapshot(opt, tensors)
    with pytest.raises(at.AdagradError, match=match):
        opt.step(**step_kw)  # type: ignore[arg-type]
    assert_unchanged(opt, tensors, before)


def fresh(n: int = 2, size: int = 100) -> tuple[list[torch.Tensor], at.Adagrad]:
    """Parameters with gradients and an optimizer that has taken one step already."""
    ps = [torch.randn(size, requires_grad=True) for _ in range(n)]
    opt = at.Adagrad(ps, lr=0.1)
    for p in ps:
        p.grad = torch.randn(size)
    opt.step()
    return ps, opt


def test_two_params_viewing_one_storage() -> None:
    """Two parameters that share memory (two views of one storage) are refused before anything is written."""
    base = torch.randn(200)
    p0, p1 = base[:120].requires_grad_(), base[100:].requires_grad_()
    opt = at.Adagrad([p0, p1])
    p0.grad, p1.grad = torch.ones(120), torch.ones(100)
    refused(opt, [base, p0.grad, p1.grad], "overlap in memory")


def test_gradient_that_is_the_parameter() -> None:
    """A gradient sharing the parameter's memory."""
    ps, opt = fresh()
    ps[1].grad = ps[1].detach()
    refused(
        opt,
        ps + [ps[0].grad],
        r"^the parameter of param_groups\[0\]\['params'\]\[1\] and the gradient of param_groups\[0\]\['params'\]\[1\]",
    )


def test_only_parameters_gradient_turned_into_the_parameter_after_a_step() -> None:
    """A single parameter whose gradient, after a step, is replaced by the parameter itself: the only entry of the
    step changed, and that change alone must bring the overlap check back."""
    ps, opt = fresh(n=1)
    ps[0].grad = ps[0].detach()
    refused(opt, ps, "overlap in memory")


def test_gradient_overlapping_another_parameters_state() -> None:
    """A gradient that is a view of the optimizer's own state."""
    ps, opt = fresh()
    ps[0].grad = opt.state[ps[1]]["sum"].view(-1)
    refused(
        opt,
        ps,
        r"^the gradient of param_groups\[0\]\['params'\]\[0\] and the state 'sum' of param_groups\[0\]\['params'\]\[1\]"
        " overlap in memory",
    )


def test_two_gradients_may_share_memory() -> None:
    """Read-only gradients sharing one storage are fine (nothing writes them)."""
    ps, opt = fresh()
    g = torch.ones(100)
    ps[0].grad, ps[1].grad = g, g
    opt.step()


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: torch.randn(200)[::2], "not contiguous"),
        (lambda p: torch.randn(50), "50 elements"),
        (lambda p: torch.randn(100, dtype=torch.float64), "float64"),
        (lambda p: torch.ones(100, dtype=torch.int32), "not supported"),
        (lambda p: torch.randn(100, device="meta"), "meta"),
        (lambda p: torch.randn(100).to_sparse().double(), "float64 values"),
        (lambda p: torch.randn(10, 10).to_sparse_csr(), "dense"),
        (lambda p: torch._neg_view(torch.randn(100)), "negative view"),
    ],
    ids=[
        "non_contiguous",
        "wrong_length",
        "wrong_dtype",
        "int_dtype",
        "not_cpu",
        "sparse_f64",
        "sparse_csr",
        "neg_view",
    ],
)
def test_bad_gradients(make: Callable[[torch.Tensor], torch.Tensor], match: str) -> None:
    """Gradients the step cannot use in place (passed with grads=, as torch's setter refuses some of them)."""
    ps, opt = fresh()
    grads = [torch.ones(100), make(ps[1])]
    refused(opt, ps + grads[:1], match, grads=grads)


def test_sparse_p_grad_of_a_16_bit_parameter() -> None:
    """Sparse gradients update float32 parameters only (tests/test_sparse.py has the accepted cases)."""
    emb = torch.nn.Embedding(10, 4, sparse=True).to(torch.bfloat16)
    opt = at.Adagrad(emb.parameters(), master_weights=True)
    emb(torch.tensor([1, 2])).float().sum().backward()
    refused(opt, [emb.weight], "sparse gradients update float32 parameters only|bfloat16")


def test_parameter_made_non_contiguous_after_construction() -> None:
    """p.data replaced by a non-contiguous view between steps."""
    ps, opt = fresh()
    ps[0].data = torch.randn(200)[::2]
    ps[0].grad = torch.ones(100)
    refused(opt, ps, "not contiguous")


def test_construction_refusals() -> None:
    """Non-CPU, non-contiguous, integer and complex parameters; bad settings."""
    with pytest.raises(at.AdagradError, match="meta"):
        at.Adagrad([torch.zeros(3, device="meta", requires_grad=True)])
    with pytest.raises(at.AdagradError, match="contiguous"):
        at.Adagrad([torch.zeros(4, 4).t().requires_grad_()])
    with pytest.raises(at.AdagradError, match="complex64"):
        at.Adagrad([torch.zeros(3, dtype=torch.complex64, requires_grad=True)])
    with pytest.raises(at.AdagradError, match="precision"):
        at.Adagrad([torch.zeros(3, requires_grad=True)], precision="sloppy")
    with pytest.raises(at.AdagradError, match="eps_placement"):
        at.Adagrad([torch.zeros(3, requires_grad=True)], eps_placement="middle")
    with pytest.raises(at.AdagradError, match="threads"):
        at.Adagrad([torch.zeros(3, requires_grad=True)], threads=0)
    with pytest.raises(at.AdagradError):
        at.Adagrad([torch.zeros(3, requires_grad=True)], isa="sse9")
    with pytest.raises(ValueError, match="Invalid learning rate"):
        at.Adagrad([torch.zeros(3, requires_grad=True)], lr=-1.0)
    with pytest.raises(RuntimeError, match="differentiable"):
        at.Adagrad([torch.zeros(3, requires_grad=True)], differentiable=True)


def test_invalid_hyperparameters_set_later() -> None:
    """A group's lr made NaN by hand, or eps that rounds to a denormal-free zero issue: refused at the step."""
    ps, opt = fresh()
    opt.param_groups[0]["lr"] = float("nan")
    for p in ps:
        p.grad = torch.ones(100)
    refused(opt, ps, "lr")


def test_bad_grad_scale_and_found_inf() -> None:
    """grad_scale of zero or infinity, found_inf other than 0 or 1, wrong dtypes."""
    ps, opt = fresh()
    for p in ps:
        p.grad = torch.ones(100)
    for scale, match in ((0.0, "scale"), (float("inf"), "scale"), (float("nan"), "scale")):
        opt.grad_scale = torch.tensor(scale)  # type: ignore[attr-defined]
        refused(opt, ps, match)
    opt.grad_scale = torch.tensor(2.0, dtype=torch.float64)  # type: ignore[attr-defined]
    refused(opt, ps, "grad_scale must be a float32")
    opt.grad_scale = None  # type: ignore[attr-defined]
    opt.found_inf = torch.tensor(0.5)  # type: ignore[attr-defined]
    refused(opt, ps, "found_inf")


def test_corrupt_step_count() -> None:
    """A loaded step count that is not a count (negative, fractional, NaN)."""
    ps, opt = fresh()
    for bad in (-5.0, 2.5, float("nan")):
        sd = opt.state_dict()
        sd["state"][0]["step"] = torch.tensor(bad)
        opt.load_state_dict(sd)
        for p in ps:
            p.grad = torch.ones(100)
        refused(opt, ps, "not a step count")


def test_grads_list_of_wrong_length() -> None:
    """grads= must cover every parameter."""
    ps, opt = fresh()
    refused(opt, ps, "grads has 1 entries", grads=[torch.ones(100)])


def test_state_replaced_by_hand_is_adopted() -> None:
    """A state tensor replaced in opt.state is copied into the optimizer's memory at the next step (and a
    wrong-shaped one refused)."""
    ps, opt = fresh()
    opt.state[ps[0]]["sum"] = torch.full((100,), 4.0)
    for p in ps:
        p.grad = torch.ones(100)
    opt.step()
    assert torch.equal(opt.state[ps[0]]["sum"], torch.full((100,), 5.0))
    opt.state[ps[0]]["sum"] = torch.ones(3)
    with pytest.raises(at.AdagradError, match="shape"):
        opt.step()


def test_whole_state_dict_replaced_by_hand_is_adopted() -> None:
    """opt.state[p] replaced by a new dict: read at the next step (the state mapping tells the optimizer)."""
    ps, opt = fresh()
    opt.state[ps[1]] = {"sum": torch.full((100,), 9.0), "step": torch.tensor(7.0)}
    for p in ps:
        p.grad = torch.ones(100)
    opt.step()
    assert torch.equal(opt.state[ps[1]]["sum"], torch.full((100,), 10.0))
    assert float(opt.state[ps[1]]["step"]) == 8.0


def test_state_without_sum_is_refused() -> None:
    """A state dict missing 'sum' (deleted by hand) is refused with nothing changed."""
    ps, opt = fresh()
    del opt.state[ps[0]]["sum"]
    for p in ps:
        p.grad = torch.ones(100)
    before = [p.detach().clone() for p in ps]
    with pytest.raises(at.AdagradError, match="no 'sum'"):
        opt.step()
    assert all(torch.equal(a, b.detach()) for a, b in zip(before, ps))


def test_state_dict_holds_plain_dicts() -> None:
    """state_dict() and pickles of it hold plain dicts and tensors (loadable without adagrad_cpu)."""
    import pickle

    _, opt = fresh()
    sd = opt.state_dict()
    assert all(type(v) is dict for v in sd["state"].values())
    blob = pickle.dumps(sd)
    assert b"adagrad_cpu" not in blob


def test_no_group_is_written_when_a_later_group_is_refused() -> None:
    """Group 0 (float64) would accept lr = 1e39; group 1 (float32) cannot hold it: the step is refused before
    either group is written."""
    p64 = torch.ones(100, dtype=torch.float64, requires_grad=True)
    p32 = torch.ones(100, requires_grad=True)
    opt = at.Adagrad([{"params": [p64]}, {"params": [p32]}], lr=0.1)
    p64.grad = torch.ones(100, dtype=torch.float64)
    p32.grad = torch.ones(100)
    for group in opt.param_groups:
        group["lr"] = 1e39
    refused(opt, [p64, p32], "lr")


def test_parameter_turned_16bit_after_construction() -> None:
    """p.data replaced by a bfloat16 tensor between steps (without master_weights): refused with the reason."""
    ps, opt = fresh()
    ps[0].data = ps[0].data.to(torch.bfloat16)
    ps[0].grad = torch.ones(100, dtype=torch.bfloat16)
    ps[1].grad = torch.ones(100)
    refused(opt, ps, "master_weights=True")


def test_parameter_resized_after_construction() -> None:
    """p.data replaced by a longer tensor between steps: its state no longer fits, refused and named."""
    ps, opt = fresh()
    ps[0].data = torch.ones(200)
    ps[0].grad = torch.ones(200)
    ps[1].grad = torch.ones(100)
    refused(opt, ps, "parameter's 200 elements")


def test_invalid_float64_group_after_a_valid_float32_group() -> None:
    """The other order: group 0 (float32) fine, group 1 (float64) with lr = NaN: refused, group 0 unwritten."""
    p32 = torch.ones(100, requires_grad=True)
    p64 = torch.ones(100, dtype=torch.float64, requires_grad=True)
    opt = at.Adagrad([{"params": [p32]}, {"params": [p64], "lr": float("nan")}], lr=0.1)
    p32.grad = torch.ones(100)
    p64.grad = torch.ones(100, dtype=torch.float64)
    refused(opt, [p32, p64], "lr")


def test_float64_groups_are_judged_as_float64() -> None:
    """lr = 1e39 does not fit a float32 but is a valid float64: a float64 group steps with it, as torch does."""
    ref = torch.ones(10, dtype=torch.float64, requires_grad=True)
    got = torch.ones(10, dtype=torch.float64, requires_grad=True)
    o_ref = torch.optim.Adagrad([ref], lr=1e39, fused=True)
    o_got = at.Adagrad([got], lr=1e39)
    for p in (ref, got):
        p.grad = torch.full((10,), 0.5, dtype=torch.float64)
    o_ref.step()
    o_got.step()
    assert torch.equal(ref.detach().view(torch.int64), got.detach().view(torch.int64))


def test_gradient_of_another_shape_with_the_same_length() -> None:
    """grads= with a (100,) gradient for a (10, 10) parameter: equal lengths, different shapes, refused."""
    p = torch.ones(10, 10, requires_grad=True)
    q = torch.ones(100, requires_grad=True)
    opt = at.Adagrad([p, q])
    refused(opt, [p, q], "shape", grads=[torch.ones(100), torch.ones(100)])
    opt.step(grads=[torch.ones(10, 10), torch.ones(100)])


def test_sparse_float32_gradient_for_a_float64_parameter() -> None:
    """A float32 sparse gradient handed (``grads=``) to a float64 parameter is refused: the sparse step is float32
    only. (A float64 embedding's own sparse gradient is float64 and refused for its values.)"""
    emb = torch.nn.Embedding(10, 4, sparse=True).double()
    opt = at.Adagrad(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    refused(opt, [emb.weight], "sparse gradients must be float32")
    g32 = emb.weight.grad.float()
    refused(opt, [emb.weight, g32._values()], "sparse gradients update float32 parameters only", grads=[g32])


def test_grad_scale_moved_onto_a_parameter_between_steps() -> None:
    """A grad_scale tensor replaced, between steps, by one that lies in a parameter's memory is refused like
    any overlap, although nothing else about the step changed."""
    ps, opt = fresh()
    opt.grad_scale = torch.tensor(2.0)  # type: ignore[attr-defined]
    opt.step()
    # A 0-dim float32 view of the first parameter's first element (a valid scale: 2): the step would write what
    # it reads.
    with torch.no_grad():
        ps[0][0] = 2.0
    opt.grad_scale = ps[0].detach().view(-1)[0]  # type: ignore[attr-defined]
    refused(opt, ps, r"^grad_scale/found_inf and the parameter of param_groups\[0\]\['params'\]\[0\] overlap")


def test_gradient_tensor_given_new_memory_between_steps() -> None:
    """The same gradient tensor object with new memory (``.data`` replaced) is read anew: the step uses the new
    values, bit for bit as torch's fused step."""
    torch.manual_seed(5)
    p0, g0, g1 = torch.randn(64), torch.randn(64), torch.randn(64)
    ours = torch.nn.Parameter(p0.clone())
    ref = torch.nn.Parameter(p0.clone())
    opt = at.Adagrad([ours], lr=0.1)
    topt = torch.optim.Adagrad([ref], lr=0.1, fused=True)
    ours.grad, ref.grad = g0.clone(), g0.clone()
    opt.step()
    topt.step()
    old = ours.grad.data  # keeps the first memory alive (and unchanged) while the tensor moves
    ours.grad.data = g1.clone()
    ref.grad = g1.clone()
    opt.step()
    topt.step()
    assert old.data_ptr() != ours.grad.data_ptr()
    assert torch.equal(ours.detach().view(torch.int32), ref.detach().view(torch.int32))


def test_grads_list_over_several_groups() -> None:
    """``grads=`` covers the parameters of every group in order: the same bits as the same gradients in
    ``p.grad``."""
    torch.manual_seed(9)
    start = [torch.randn(32) for _ in range(3)]
    grads = [torch.randn(32) for _ in range(3)]

    def optimizer() -> tuple[list[torch.nn.Parameter], at.Adagrad]:
        ps = [torch.nn.Parameter(x.clone()) for x in start]
        return ps, at.Adagrad([{"params": ps[:1]}, {"params": ps[1:], "lr": 0.05}], lr=0.1)

    a, opt_a = optimizer()
    opt_a.step(grads=grads)
    b, opt_b = optimizer()
    for p, g in zip(b, grads, strict=True):
        p.grad = g
    opt_b.step()
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x.detach().view(torch.int32), y.detach().view(torch.int32))
    assert not torch.equal(a[1].detach(), a[2].detach())
