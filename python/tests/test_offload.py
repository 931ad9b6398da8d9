"""CPU offload: float32 parameters with 16-bit gradients, and 16-bit parameters with float32 master weights."""

from __future__ import annotations

import pytest
import torch
from test_torch_exact import assert_same_bits, grads_for, make_params

import adagrad_cpu.torch as at

HALF = [torch.bfloat16, torch.float16]


@pytest.mark.parametrize("gdtype", HALF)
def test_float32_params_with_16bit_grads(gdtype: torch.dtype, isa: str) -> None:
    """Widening a 16-bit gradient to float32 is exact, so the step equals torch's fused step on the widened
    gradient, bit for bit."""
    ref_ps, got_ps = make_params(torch.float32), make_params(torch.float32)
    ref = torch.optim.Adagrad(ref_ps, fused=True, lr=0.1, weight_decay=0.01)
    got = at.Adagrad(got_ps, lr=0.1, weight_decay=0.01, isa=isa)
    for s in range(5):
        half = [None if g is None else g.to(gdtype) for g in grads_for(ref_ps, s)]
        for p, g in zip(ref_ps, half):
            p.grad = None if g is None else g.float()
        ref.step()
        got.step(grads=half)
    assert_same_bits([p.detach() for p in ref_ps], [p.detach() for p in got_ps])


@pytest.mark.parametrize("dtype", HALF)
def test_master_weights(dtype: torch.dtype, isa: str) -> None:
    """A 16-bit parameter with master_weights=True: the float32 master copy follows torch's fused float32
    trajectory bit for bit, and the parameter is the master rounded to nearest even, written in the same pass."""
    masters = make_params(torch.float32)
    ps = [m.detach().to(dtype).requires_grad_() for m in masters]
    # The reference starts from the same (rounded) values the optimizer's master copy starts from.
    ref_ps = [p.detach().float().requires_grad_() for p in ps]
    ref = torch.optim.Adagrad(ref_ps, fused=True, lr=0.05, lr_decay=0.01)
    got = at.Adagrad(ps, lr=0.05, lr_decay=0.01, master_weights=True, isa=isa)
    for s in range(5):
        grads = grads_for(ref_ps, s)
        for p, rp, g in zip(ps, ref_ps, grads):
            p.grad = None if g is None else g.to(dtype)
            rp.grad = None if g is None else g.to(dtype).float()
        ref.step()
        got.step()
    assert_same_bits([p.detach() for p in ref_ps], [got.state[p]["master"] for p in ps])
    assert_same_bits([p.detach().to(dtype) for p in ref_ps], [p.detach() for p in ps])
    for p in ps:
        assert got.state[p]["sum"].dtype == torch.float32


@pytest.mark.parametrize("dtype", HALF)
def test_16bit_params_without_master_weights_are_refused(dtype: torch.dtype) -> None:
    """The error says why and what to do."""
    with pytest.raises(at.AdagradError, match="master_weights=True"):
        at.Adagrad([torch.zeros(4, dtype=dtype, requires_grad=True)])
