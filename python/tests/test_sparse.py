"""Sparse gradients (``nn.Embedding(sparse=True)``) through ``adagrad_cpu.torch.Adagrad``: an element-wise embedding
step on the parameter's ``sum``, bit for bit the crate's embedding step, within a tolerance of torch's sparse path
(whose square root is not correctly rounded), next to dense parameters that stay bit-exact with torch's fused step."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

import adagrad_cpu.torch as at
from adagrad_cpu.embedding import EmbeddingAdagrad

ROWS, DIM = 200, 12


def batches(steps: int, seed: int = 0) -> list[torch.Tensor]:
    """Lookup batches with duplicates (a few hot rows)."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(64, generator=g) ** 3 * ROWS).long() for _ in range(steps)]


def run_embedding(
    opt_factory: Callable[..., torch.optim.Optimizer], steps: int = 6
) -> tuple[torch.nn.Embedding, torch.optim.Optimizer]:
    """Trains an embedding with a sparse gradient for ``steps`` steps; returns it and its optimizer."""
    torch.manual_seed(0)
    emb = torch.nn.Embedding(ROWS, DIM, sparse=True)
    opt = opt_factory(emb.parameters())
    for ids in batches(steps):
        opt.zero_grad()
        (emb(ids) ** 2).sum().backward()
        opt.step()
    return emb, opt


def test_sparse_gradients_take_the_embedding_step_bit_for_bit(isa: str) -> None:
    """The same lookups through adagrad_cpu.embedding (element-wise) give the same weights and sums."""
    torch.manual_seed(0)
    emb = torch.nn.Embedding(ROWS, DIM, sparse=True)
    table = emb.weight.detach().numpy().copy()
    opt = at.Adagrad(emb.parameters(), lr=0.1, lr_decay=0.01, isa=isa, threads=2)
    ref = EmbeddingAdagrad(ROWS, DIM, lr=0.1, lr_decay=0.01, eps=1e-10, accumulator="elementwise", isa=isa)
    for ids in batches(6):
        opt.zero_grad()
        (emb(ids) ** 2).sum().backward()
        g = emb.weight.grad
        ref.step(table, g._indices()[0].numpy(), g._values().numpy())
        opt.step()
        assert emb.weight.detach().numpy().tobytes() == table.tobytes()
        assert opt.state[emb.weight]["sum"].numpy().ravel().tobytes() == ref.state.tobytes()
    assert float(opt.state[emb.weight]["step"]) == 6.0


def test_sparse_gradients_agree_with_torch_within_tolerance() -> None:
    """torch's sparse path squares without FMA and its sqrt is not correctly rounded: close, not identical."""
    ours, _ = run_embedding(lambda ps: at.Adagrad(ps, lr=0.1))
    theirs, _ = run_embedding(lambda ps: torch.optim.Adagrad(ps, lr=0.1))
    a, b = ours.weight.detach().numpy(), theirs.weight.detach().numpy()
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert not np.array_equal(a, torch.nn.Embedding(ROWS, DIM).weight.detach().numpy())


def test_dense_parameters_beside_a_sparse_one_stay_bit_exact() -> None:
    """An embedding (sparse) and a linear layer (dense) in one optimizer: the linear layer matches fused torch."""
    torch.manual_seed(1)
    emb = torch.nn.Embedding(ROWS, DIM, sparse=True)
    lin = torch.nn.Linear(DIM, 3)
    lin_ref = torch.nn.Linear(DIM, 3)
    lin_ref.load_state_dict(lin.state_dict())
    opt = at.Adagrad([*emb.parameters(), *lin.parameters()], lr=0.05)
    ref = torch.optim.Adagrad(lin_ref.parameters(), lr=0.05, fused=True)
    for ids in batches(5, seed=3):
        for o in (opt, ref):
            o.zero_grad()
        x = emb(ids)
        lin(x).sum().backward()
        lin_ref(x.detach()).sum().backward()
        opt.step()
        ref.step()
        for p, q in zip(lin.parameters(), lin_ref.parameters(), strict=True):
            assert p.detach().numpy().tobytes() == q.detach().numpy().tobytes()


def _refused(opt: at.Adagrad, emb: torch.nn.Embedding, match: str, **kw: object) -> None:
    before = (emb.weight.detach().clone(), {k: v.clone() for k, v in opt.state[emb.weight].items()})
    with pytest.raises(at.AdagradError, match=match):
        opt.step(**kw)  # type: ignore[arg-type]
    assert torch.equal(emb.weight.detach(), before[0])
    for k, v in opt.state[emb.weight].items():
        assert torch.equal(v, before[1][k]), k


def test_sparse_refusals_change_nothing() -> None:
    """weight_decay with sparse gradients (torch refuses it too), grad_scale, non-row-sparse gradients."""
    emb = torch.nn.Embedding(ROWS, DIM, sparse=True)
    opt = at.Adagrad(emb.parameters(), lr=0.1, weight_decay=0.01)
    (emb(torch.tensor([1, 2, 2])) ** 2).sum().backward()
    _refused(opt, emb, "weight_decay")
    opt = at.Adagrad(emb.parameters(), lr=0.1)
    opt.grad_scale = torch.tensor(2.0)  # type: ignore[attr-defined]
    _refused(opt, emb, "grad_scale")
    del opt.grad_scale  # type: ignore[attr-defined]
    emb.weight.grad = torch.sparse_coo_tensor(torch.tensor([[1, 2], [3, 4]]), torch.ones(2), (ROWS, DIM))
    _refused(opt, emb, "sparse in 2 dimensions")
    f64 = torch.sparse_coo_tensor(torch.tensor([[1, 2]]), torch.ones(2, DIM, dtype=torch.float64), (ROWS, DIM))
    _refused(opt, emb, "float64 values", grads=[f64])
    wide = torch.sparse_coo_tensor(torch.tensor([[1, ROWS + 5]]), torch.ones(2, DIM), (ROWS + 6, DIM))
    _refused(opt, emb, "shape", grads=[wide])
