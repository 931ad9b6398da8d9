"""DTensor parameters in one process (a one-rank gloo group): the step runs on the local shards with the same bits
as on plain tensors, the state is DTensor laid out as its parameter, and what cannot be stepped element-wise (a
``Partial`` placement, a gradient laid out unlike its parameter, state of another layout) is refused with nothing
changed."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import torch
import torch.distributed as dist
from ranks import free_port
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor

import adagrad_cpu.torch as at
from adagrad_cpu import AdagradError


@pytest.fixture(scope="module")
def mesh() -> Iterator[DeviceMesh]:
    """A 1×1 CPU mesh over a one-rank gloo group, torn down after the module."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1, 1))
    finally:
        dist.destroy_process_group()


def values(n: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``n`` reproducible values in [-1, 1) as a 5-row matrix's worth."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1).to(dtype).reshape(5, n // 5)


def bits(t: torch.Tensor) -> torch.Tensor:
    """The bit patterns of a tensor's whole value."""
    v = t.full_tensor() if isinstance(t, DTensor) else t.detach()
    return v.contiguous().view(torch.int16 if v.element_size() == 2 else torch.int32)


PLACEMENTS = [(Shard(0), Replicate()), (Replicate(), Shard(1)), (Replicate(), Replicate())]


@pytest.mark.parametrize("placements", PLACEMENTS, ids=str)
def test_dtensor_step_is_the_plain_step(mesh: DeviceMesh, placements: tuple) -> None:
    """Ten steps with weight decay and lr_decay on DTensor parameters of every placement: parameters and state
    equal, bit for bit, the same optimizer's on plain tensors; the sum is a DTensor whose shard is updated in
    place; the DTensor parameter's version counter moves with each step."""
    plain = [values(645, 1).requires_grad_(), values(40, 2).requires_grad_()]
    dparams = [torch.nn.Parameter(distribute_tensor(p.detach().clone(), mesh, placements)) for p in plain]
    kw = {"lr": 0.05, "lr_decay": 0.01, "weight_decay": 0.02, "initial_accumulator_value": 0.1}
    ours_plain = at.Adagrad(plain, **kw)
    ours_dist = at.Adagrad(dparams, threads=2, **kw)
    ptr = None
    for step in range(10):
        for i, (p, d) in enumerate(zip(plain, dparams)):
            g = values(p.numel(), 100 * step + i)
            p.grad = g.clone()
            d.grad = distribute_tensor(g.clone(), mesh, placements)
        version = dparams[0]._version
        ours_plain.step()
        ours_dist.step()
        assert dparams[0]._version > version
        # From the first step on, the sum's shard is memory the optimizer owns, updated in place.
        shard = ours_dist.state[dparams[0]]["sum"].to_local()
        ptr = ptr or shard.data_ptr()
        assert shard.data_ptr() == ptr
        for p, d in zip(plain, dparams):
            assert torch.equal(bits(p), bits(d))
            assert torch.equal(bits(ours_plain.state[p]["sum"]), bits(ours_dist.state[d]["sum"]))
    assert not torch.equal(bits(plain[0]), bits(values(645, 1)))
    s = ours_dist.state[dparams[0]]["sum"]
    assert isinstance(s, DTensor) and s.placements == placements and s.shape == dparams[0].shape
    assert float(ours_dist.state[dparams[0]]["step"]) == 10.0


def test_dtensor_half_with_master_weights(mesh: DeviceMesh) -> None:
    """bfloat16 DTensor parameters keep a float32 DTensor master copy and state; the bits are the plain ones'."""
    p = values(400, 3, torch.bfloat16).requires_grad_()
    d = torch.nn.Parameter(distribute_tensor(p.detach().clone(), mesh, (Shard(1), Replicate())))
    a = at.Adagrad([p], lr=0.1, master_weights=True)
    b = at.Adagrad([d], lr=0.1, master_weights=True)
    # The state exists from construction on, as torch's does: a state_dict taken before any step has it all.
    fresh = b.state_dict()["state"][0]
    assert sorted(fresh) == ["master", "step", "sum"] and isinstance(fresh["master"], DTensor)
    assert torch.equal(fresh["master"].full_tensor(), p.detach().float())
    for step in range(5):
        g = values(400, 50 + step, torch.bfloat16)
        p.grad = g.clone()
        d.grad = distribute_tensor(g.clone(), mesh, (Shard(1), Replicate()))
        a.step()
        b.step()
        assert torch.equal(bits(p), bits(d))
    for key in ("master", "sum"):
        assert isinstance(b.state[d][key], DTensor) and b.state[d][key].dtype == torch.float32
        assert torch.equal(bits(a.state[p][key]), bits(b.state[d][key]))


def test_loads_torch_dtensor_state_and_continues(mesh: DeviceMesh) -> None:
    """``torch.optim.Adagrad()`` on DTensors, its ``state_dict()`` loaded into ours (copied into memory ours
    owns, kept DTensor), continues exactly as torch's fused step does from the same plain state."""
    placements = (Shard(0), Replicate())
    start = values(300, 4)
    d = torch.nn.Parameter(distribute_tensor(start.clone(), mesh, placements))
    theirs = torch.optim.Adagrad([d], lr=0.1, weight_decay=0.01)
    for step in range(3):
        d.grad = distribute_tensor(values(300, 10 + step), mesh, placements)
        theirs.step()
    sd = copy.deepcopy(theirs.state_dict())
    ours = at.Adagrad([d], lr=0.1, weight_decay=0.01)
    ours.load_state_dict(sd)
    loaded = ours.state[d]["sum"]
    assert isinstance(loaded, DTensor) and torch.equal(bits(loaded), bits(sd["state"][0]["sum"]))
    assert loaded.to_local().data_ptr() != sd["state"][0]["sum"].to_local().data_ptr()
    plain = d.full_tensor().detach().clone().requires_grad_()
    fused = torch.optim.Adagrad([plain], lr=0.1, weight_decay=0.01, fused=True)
    fused.state[plain]["sum"].copy_(loaded.full_tensor())
    fused.state[plain]["step"].fill_(3.0)
    for step in range(4):
        g = values(300, 20 + step)
        d.grad = distribute_tensor(g.clone(), mesh, placements)
        plain.grad = g.clone()
        ours.step()
        fused.step()
        assert torch.equal(bits(d), bits(plain))


def test_partial_parameter_refused(mesh: DeviceMesh) -> None:
    """A parameter placed ``Partial`` holds addends, not elements: refused at construction and when added."""
    p = torch.nn.Parameter(DTensor.from_local(values(20, 5), mesh, (Partial(), Replicate())))
    with pytest.raises(AdagradError, match="Partial"):
        at.Adagrad([p])
    opt = at.Adagrad([torch.nn.Parameter(values(20, 6))])
    with pytest.raises(AdagradError, match="Partial"):
        opt.add_param_group({"params": [p]})
    assert len(opt.param_groups) == 1


def snapshot(d: torch.Tensor, opt: at.Adagrad) -> tuple[torch.Tensor, torch.Tensor, float]:
    """A copy of a parameter's value, its sum and its step count."""
    s = opt.state[d]
    return d.full_tensor().clone(), s["sum"].full_tensor().clone(), float(s["step"])


def unchanged(before: tuple[torch.Tensor, torch.Tensor, float], d: torch.Tensor, opt: at.Adagrad) -> bool:
    """Whether the parameter and its state are as in ``before``, bit for bit."""
    after = snapshot(d, opt)
    return all(torch.equal(bits(a), bits(b)) for a, b in zip(before[:2], after[:2])) and before[2] == after[2]


@pytest.mark.parametrize(
    "grad",
    ["partial", "other_placement", "plain"],
)
def test_gradient_unlike_its_parameter_refused(mesh: DeviceMesh, grad: str) -> None:
    """A gradient placed ``Partial`` (not yet reduced), placed otherwise than its parameter, or a plain tensor
    for a DTensor parameter: refused, nothing written (the first parameter, whose gradient is fine, included)."""
    placements = (Shard(0), Replicate())
    ok = torch.nn.Parameter(distribute_tensor(values(50, 7), mesh, placements))
    d = torch.nn.Parameter(distribute_tensor(values(50, 8), mesh, placements))
    opt = at.Adagrad([ok, d], lr=0.1)
    ok.grad = distribute_tensor(values(50, 9), mesh, placements)
    g = values(50, 10)
    bad = {
        "partial": lambda: DTensor.from_local(g, mesh, (Partial(), Replicate())),
        "other_placement": lambda: distribute_tensor(g, mesh, (Replicate(), Shard(1))),
        "plain": lambda: g,
    }[grad]()
    before = [snapshot(ok, opt), snapshot(d, opt)]
    with pytest.raises(AdagradError, match="gradient of param_groups\\[0\\]\\['params'\\]\\[1\\]"):
        opt.step(grads=[ok.grad, bad])
    assert unchanged(before[0], ok, opt) and unchanged(before[1], d, opt)
    opt.step(grads=[ok.grad, None])
    assert not unchanged(before[0], ok, opt)


@pytest.mark.parametrize("state", ["plain", "other_placement", "dtensor_step"])
def test_state_unlike_its_parameter_refused(mesh: DeviceMesh, state: str) -> None:
    """``load_state_dict`` with a plain ``sum`` for a DTensor parameter, a ``sum`` placed otherwise, or a DTensor
    ``step``: refused, the optimizer as it was."""
    placements = (Shard(0), Replicate())
    d = torch.nn.Parameter(distribute_tensor(values(50, 11), mesh, placements))
    opt = at.Adagrad([d], lr=0.1)
    d.grad = distribute_tensor(values(50, 12), mesh, placements)
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    entry = sd["state"][0]
    if state == "plain":
        entry["sum"] = entry["sum"].full_tensor()
    elif state == "other_placement":
        entry["sum"] = entry["sum"].redistribute(mesh, (Replicate(), Shard(1)))
    else:
        entry["step"] = distribute_tensor(torch.tensor(1.0), mesh, (Replicate(), Replicate()))
    before = snapshot(d, opt)
    kept = opt.state[d]["sum"]
    with pytest.raises(AdagradError, match="DTensor"):
        opt.load_state_dict(sd)
    assert opt.state[d]["sum"] is kept and unchanged(before, d, opt)
    opt.step()
    assert float(opt.state[d]["step"]) == 2.0


def test_state_dict_records_the_step_torch_can_run(mesh: DeviceMesh) -> None:
    """Groups of DTensor parameters are saved with ``fused=None`` (torch's fused step has no DTensor support, and a
    loaded group's flags choose torch's step); groups of plain tensors with ``fused=True``."""
    d = torch.nn.Parameter(distribute_tensor(values(50, 13), mesh, (Shard(0), Replicate())))
    p = torch.nn.Parameter(values(50, 14))
    sd = at.Adagrad([{"params": [d]}, {"params": [p]}]).state_dict()
    assert [g["fused"] for g in sd["param_groups"]] == [None, True]


def test_state_copied_by_from_local_refused(mesh: DeviceMesh, monkeypatch: pytest.MonkeyPatch) -> None:
    """The state's DTensor must wrap the very memory the step updates: a ``DTensor.from_local`` that copied the
    shard (as a future torch might) is refused rather than leaving a ``sum`` the step never writes."""
    real = DTensor.from_local

    def copying(local: torch.Tensor, *args: object, **kwargs: object) -> DTensor:
        return real(local.clone(), *args, **kwargs)

    monkeypatch.setattr(DTensor, "from_local", staticmethod(copying))
    d = torch.nn.Parameter(distribute_tensor(values(50, 15), mesh, (Shard(0), Replicate())))
    with pytest.raises(AdagradError, match="copied"):
        at.Adagrad([d])


def test_non_contiguous_shard_refused(mesh: DeviceMesh) -> None:
    """A DTensor whose local shard is not contiguous (its global metadata says it is) is refused at construction:
    the shard is what the step updates in place."""
    local = values(25, 16).reshape(5, 5).t()
    d = DTensor.from_local(local, mesh, (Replicate(), Replicate()), run_check=False, shape=(5, 5), stride=(5, 1))
    assert d.is_contiguous() and not d.to_local().is_contiguous()
    with pytest.raises(AdagradError, match="not contiguous"):
        at.Adagrad([torch.nn.Parameter(d)])


def test_refusal_names_the_gradient_in_its_group(mesh: DeviceMesh) -> None:
    """A refused gradient in the second group is named by its index in that group."""
    placements = (Shard(0), Replicate())
    first = [torch.nn.Parameter(distribute_tensor(values(50, 17 + i), mesh, placements)) for i in range(3)]
    second = torch.nn.Parameter(distribute_tensor(values(50, 20), mesh, placements))
    opt = at.Adagrad([{"params": first}, {"params": [second]}])
    for p in first:
        p.grad = distribute_tensor(values(50, 21), mesh, placements)
    with pytest.raises(AdagradError, match="gradient of param_groups\\[1\\]\\['params'\\]\\[0\\]"):
        opt.step(grads=[p.grad for p in first] + [values(50, 22)])


def test_skipped_step_bumps_no_version(mesh: DeviceMesh) -> None:
    """A step skipped by ``found_inf`` (GradScaler found an overflow) updates nothing, so no DTensor parameter's
    version counter moves; the next step's does."""
    d = torch.nn.Parameter(distribute_tensor(values(50, 23), mesh, (Shard(0), Replicate())))
    opt = at.Adagrad([d], lr=0.1)
    d.grad = distribute_tensor(values(50, 24), mesh, (Shard(0), Replicate()))
    before, version = d.full_tensor().clone(), d._version
    opt.found_inf = torch.ones(())
    opt.step()
    assert d._version == version and torch.equal(d.full_tensor(), before)
    opt.found_inf = torch.zeros(())
    opt.step()
    assert d._version > version and not torch.equal(d.full_tensor(), before)
