"""``adagrad_cpu.torch.Adagrad``: a drop-in ``torch.optim.Adagrad`` that runs the crate's step.

Swap ``torch.optim.Adagrad(model.parameters(), lr=0.01)`` for ``adagrad_cpu.torch.Adagrad(model.parameters(),
lr=0.01)``. Results are bit-identical to ``torch.optim.Adagrad(fused=True)`` for float32 and float64 parameters;
``state_dict()`` has exactly its layout, so checkpoints move between the two in both directions.
"""

from __future__ import annotations

import functools
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from itertools import chain
from typing import Any

import numpy as np
import torch
from torch.optim import Optimizer
from torch.optim import optimizer as _torch_optimizer

from . import _native
from ._host import aligned_array, checked_threads, host_team
from ._native import AdagradError

__all__ = ["Adagrad", "AdagradError"]

_FLOAT = (torch.float32, torch.float64)
_HALF = (torch.bfloat16, torch.float16)
_NUMPY = {torch.float32: np.float32, torch.float64: np.float64}


@functools.cache
def _dtensor_type() -> type | None:
    """``torch.distributed.tensor.DTensor``, or ``None`` where this torch has no distributed support."""
    if not torch.distributed.is_available():
        return None
    from torch.distributed.tensor import DTensor

    return DTensor


def _is_dtensor(t: object) -> bool:
    """Whether ``t`` is a ``DTensor`` (an FSDP2 or tensor-parallel parameter, gradient or state)."""
    dt = _dtensor_type()
    return dt is not None and isinstance(t, dt)


def _kind(t: object) -> str:
    """``"a DTensor"`` or ``"a plain tensor"``, for messages about a tensor laid out unlike its parameter."""
    return "a DTensor" if _is_dtensor(t) else "a plain tensor"


def _local(t: torch.Tensor) -> torch.Tensor:
    """The tensor the step reads and writes: a ``DTensor``'s local shard, else ``t`` itself."""
    return t._local_tensor if _is_dtensor(t) else t  # type: ignore[attr-defined]


def _dist_like(local: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``local`` as the local shard of a ``DTensor`` with ``like``'s mesh, placements, shape and strides, sharing
    ``local``'s memory (state created or adopted for a ``DTensor`` parameter, as ``torch.optim.Adagrad``'s
    ``full_like`` creates it); ``local`` itself when ``like`` is a plain tensor."""
    if not _is_dtensor(like):
        return local
    dt = _dtensor_type()
    assert dt is not None
    out = dt.from_local(
        local, like.device_mesh, like.placements, run_check=False, shape=like.shape, stride=like.stride()
    )
    if out._local_tensor.data_ptr() != local.data_ptr():
        raise AdagradError("DTensor.from_local copied the state's shard; the step could not update it in place")
    return out


def _placements_error(t: torch.Tensor) -> str | None:
    """Why the element-wise step cannot run on the local shards of ``DTensor`` ``t`` (``None``: it can). A
    ``Partial`` placement holds addends of the value, not its elements: stepping them would be wrong."""
    partial = [str(pl) for pl in t.placements if pl.is_partial()]
    if partial:
        return (
            f"has placements {tuple(t.placements)}: a Partial placement holds addends of the value, not its "
            "elements, so no element-wise step can run on it; redistribute it to Shard or Replicate first"
        )
    return None


def _same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``DTensor``s ``a`` and ``b`` have the same mesh, placements and global shape (their local shards
    then hold the same elements)."""
    sa, sb = a._spec, b._spec  # type: ignore[attr-defined]
    if sa is sb:
        return True
    return sa.mesh == sb.mesh and sa.placements == sb.placements and a.shape == b.shape


def _engine(settings: dict[str, Any]) -> tuple[_native.Engine, int | None]:
    """The native engine for the optimizer's settings, and the thread count it was built for: ``threads``, or
    ``torch.get_num_threads()`` now when ``threads`` is ``None``."""
    threads = settings["threads"]
    threads = torch.get_num_threads() if threads is None else checked_threads(threads)
    engine = _native.Engine(
        threads=threads,
        isa=settings["isa"],
        precision=settings["precision"],
        eps_placement=settings["eps_placement"],
        team=host_team(settings.get("team")),
    )
    return engine, threads


def _hooked(step: Callable[..., Any]) -> Callable[..., Any]:
    """``Optimizer.profile_hook_step``'s behaviour (global and per-optimizer step pre/post hooks, the profiler's
    ``Optimizer.step#Adagrad.step`` label) without its cost when no profiler runs: torch opens a
    ``record_function`` on every step, tens of microseconds that would dominate a small step. Marked ``hooked`` so
    that ``Optimizer`` does not wrap it again. Falls back to torch's own wrapper if its hook registries move."""
    pre = getattr(_torch_optimizer, "_global_optimizer_pre_hooks", None)
    post = getattr(_torch_optimizer, "_global_optimizer_post_hooks", None)
    if pre is None or post is None:
        return step

    @functools.wraps(step)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        self = args[0]
        # (The hook tables are checked before they are chained: a step right after a large one runs from cold
        # caches, where every line of code run counts.)
        if pre or self._optimizer_step_pre_hooks:
            for hook in chain(pre.values(), self._optimizer_step_pre_hooks.values()):
                result = hook(self, args, kwargs)
                if result is not None:
                    if isinstance(result, tuple) and len(result) == 2:
                        args, kwargs = result
                    else:
                        raise RuntimeError(
                            f"{step} must return None or a tuple of (new_args, new_kwargs), but got {result}."
                        )
        if torch.autograd._profiler_enabled():
            with torch.autograd.profiler.record_function(f"Optimizer.step#{type(self).__name__}.step"):
                out = step(*args, **kwargs)
        else:
            out = step(*args, **kwargs)
        self._optimizer_step_code()
        if post or self._optimizer_step_post_hooks:
            for hook in chain(self._optimizer_step_post_hooks.values(), post.values()):
                hook(self, args, kwargs)
        return out

    wrapper.hooked = True  # type: ignore[attr-defined]
    return wrapper


class _Flag:
    """Set when the optimizer's state mapping or a parameter's state dict is written (the next step re-reads)."""

    __slots__ = ("dirty",)

    def __init__(self) -> None:
        self.dirty = True


class _Flagging:
    """Mixin for the state's dict types: assigning or deleting an entry sets the optimizer's flag."""

    _flag: _Flag

    def __setitem__(self, key: Any, value: Any) -> None:
        self._flag.dirty = True
        super().__setitem__(key, value)  # type: ignore[misc]

    def __delitem__(self, key: Any) -> None:
        self._flag.dirty = True
        super().__delitem__(key)  # type: ignore[misc]


class _StateDict(_Flagging, dict):
    """A parameter's state dict that tells the optimizer when an entry is assigned or removed (values changed in
    place, such as ``opt.state[p]["sum"].zero_()``, need no telling: the memory is the same)."""

    __slots__ = ("_flag",)

    def __init__(self, flag: _Flag, *args: Any) -> None:
        super().__init__(*args)
        self._flag = flag

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled as a plain dict: a checkpoint must load where adagrad_cpu is not installed.
        return (dict, (dict(self),))

    def _touch(self, name: str, *args: Any) -> Any:
        self._flag.dirty = True
        return getattr(super(), name)(*args)

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """As ``dict.update``; marks the state changed."""
        self._flag.dirty = True
        super().update(*args, **kwargs)

    def pop(self, *args: Any) -> Any:  # type: ignore[override]
        """As ``dict.pop``; marks the state changed."""
        return self._touch("pop", *args)

    def popitem(self) -> tuple[Any, Any]:
        """As ``dict.popitem``; marks the state changed."""
        return self._touch("popitem")

    def clear(self) -> None:
        """As ``dict.clear``; marks the state changed."""
        self._touch("clear")

    def setdefault(self, *args: Any) -> Any:
        """As ``dict.setdefault``; marks the state changed."""
        return self._touch("setdefault", *args)


class _StateMap(_Flagging, defaultdict):
    """The optimizer's ``state`` (parameter → state dict), telling the optimizer when a parameter's dict is
    replaced or removed; new dicts are ``_StateDict``s."""

    def __init__(self, flag: _Flag, *args: Any) -> None:
        super().__init__(None, *args)
        self._flag = flag

    def __reduce__(self) -> tuple[Any, ...]:
        return (_plain_state, (dict(self),))

    def __missing__(self, key: Any) -> _StateDict:
        self._flag.dirty = True
        value = _StateDict(self._flag)
        dict.__setitem__(self, key, value)
        return value


def _plain_state(items: dict[Any, Any]) -> defaultdict:
    """``torch.optim.Optimizer``'s own state type, for pickles."""
    return defaultdict(dict, {k: dict(v) for k, v in items.items()})


class _Snapshot:
    """The parameters of one group that have state, their state dicts, and those still waiting for a gradient;
    ``index``: their flat indices over all groups, ``start``: the flat index of the group's first parameter;
    ``dist``: whether any of them is a ``DTensor`` (the step then hands the native step their local shards)."""

    __slots__ = ("backs", "dist", "index", "keys", "params", "pending", "start", "states")

    def __init__(
        self,
        params: list[torch.Tensor],
        keys: list[torch.Tensor],
        states: list[dict[str, Any]],
        backs: list[tuple[Any, ...]],
        index: list[int],
    ) -> None:
        self.params = params
        self.keys = keys
        self.states = states
        self.backs = backs
        self.index = index
        self.pending: list[tuple[int, torch.Tensor]] = []


class Adagrad(Optimizer):
    """Adagrad, bit-exact with ``torch.optim.Adagrad(fused=True)``, faster, on CPU tensors.

    Args:
        params: parameters or parameter groups, as for any ``torch.optim`` optimizer.
        lr, lr_decay, weight_decay, initial_accumulator_value, eps, maximize: PyTorch's, with its defaults
            (as in PyTorch, ``initial_accumulator_value`` is the optimizer's, not a group's).
        foreach, differentiable, fused: accepted for compatibility; the step is always fused (groups record
            ``fused=True``, ``foreach=None``), and ``differentiable=True`` is refused.
        eps_placement: ``"outside"`` (√G + ε, PyTorch's) or ``"inside"`` (√(G + ε), Optax/Keras 3).
        precision: ``"exact"`` (bit-identical to PyTorch) or ``"fast"`` (the crate's bounded approximation).
        threads: threads a large step uses, the caller included (``None``: as many as ``torch.get_num_threads()``
            says at each step, so that ``torch.set_num_threads`` sets ours too). At most 1024.
        master_weights: keep a float32 master copy (and float32 state) for bfloat16/float16 parameters, writing
            the 16-bit parameter in the same pass. Without it, 16-bit parameters are refused.
        isa: a kernel path by name (``None``: ``ADAGRAD_ISA``, else the best this CPU has).
        team: whose threads a parallel step runs on: ``"openmp"``, the OpenMP team torch itself runs on (awake
            right after torch's own parallel work), or ``"pool"``, the crate's own helper threads (``None``:
            ``ADAGRAD_TEAM``, else ``"openmp"``).

    ``step(closure=None, *, grads=None)``: ``grads`` replaces ``p.grad`` (one entry per parameter of every group,
    in order, ``None`` to skip), for float32 parameters with bfloat16/float16 gradients (PyTorch refuses to store
    a gradient whose dtype differs from its parameter's). ``grad_scale``/``found_inf`` attributes set by
    ``torch.amp.GradScaler`` are honoured as ``torch._fused_adagrad_`` does, except that gradients are not
    overwritten with their unscaled values.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float | torch.Tensor = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        eps_placement: str = "outside",
        precision: str = "exact",
        threads: int | None = None,
        master_weights: bool = False,
        isa: str | None = None,
        team: str | None = None,
    ) -> None:
        if isinstance(lr, torch.Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        for name, value in (
            ("learning rate", lr),
            ("lr_decay value", lr_decay),
            ("weight_decay value", weight_decay),
            ("initial_accumulator_value value", initial_accumulator_value),
            ("epsilon value", eps),
        ):
            if not 0.0 <= float(value):
                raise ValueError(f"Invalid {name}: {value}")
        if differentiable:
            raise RuntimeError("adagrad_cpu's Adagrad does not support differentiable=True")
        self._settings = {
            "threads": threads,
            "team": team,
            "isa": isa,
            "precision": precision,
            "eps_placement": eps_placement,
            "master_weights": bool(master_weights),
        }
        self._engine, self._engine_threads = _engine(self._settings)
        self._master_weights = bool(master_weights)
        self._cache = _native.TensorCache()
        self._snaps: list[_Snapshot] | None = None
        self._backing: dict[int, tuple[torch.Tensor, np.ndarray]] = {}
        self._flag = _Flag()
        self._state_ref: object = None
        # One step (or load) at a time: the state, the snapshot and the native cache change together. Re-entrant,
        # for a closure or hook that calls back into the optimizer.
        self._lock = threading.RLock()
        defaults = {
            "lr": lr,
            "lr_decay": lr_decay,
            "eps": eps,
            "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value,
            # The step is always fused: recorded so, a checkpoint loaded into torch.optim.Adagrad runs its fused
            # step too (the one these bits match), not the foreach/for-loop path whose sqrt differs.
            "foreach": None,
            "maximize": maximize,
            "differentiable": False,
            "fused": True,
        }
        super().__init__(params, defaults)
        self._step_supports_amp_scaling = True
        for group in self.param_groups:
            for p in group["params"]:
                self._init_state(p)

    # --- state ---------------------------------------------------------------------------------------------

    def _check_param(self, p: torch.Tensor) -> None:
        """Refuses, before any state exists, a parameter the step could never run on."""
        if not isinstance(p, torch.Tensor):
            raise AdagradError(f"a parameter is a {type(p).__name__}, not a tensor")
        if _is_dtensor(p):
            why = _placements_error(p)
            if why is not None:
                raise AdagradError(f"a DTensor parameter {why}")
            # The step runs on the local shard: that is what must be a CPU tensor the kernels can update.
            p = _local(p)
        if p.device.type != "cpu":
            raise AdagradError(f"a parameter is on {p.device}; adagrad_cpu steps CPU tensors only")
        if p.dtype in _HALF and not self._master_weights:
            raise AdagradError(
                f"a parameter is {p.dtype}: 16-bit parameters need a float32 master copy to be updated exactly; "
                "construct the optimizer with master_weights=True (or keep float32 parameters)"
            )
        if p.dtype not in _FLOAT and p.dtype not in _HALF:
            raise AdagradError(
                f"a parameter is {p.dtype}; supported: float32, float64 (bfloat16/float16 with master_weights=True)"
            )
        if not p.is_contiguous():
            raise AdagradError("a parameter is not contiguous; the step runs in place on contiguous memory")

    @staticmethod
    def _own(value: Any, like: torch.Tensor, dtype: torch.dtype, what: str) -> tuple[torch.Tensor, np.ndarray]:
        """A copy of ``value`` in memory the optimizer owns (a numpy array), as a tensor sharing that memory; it
        must have the shape of the parameter ``like``. For a ``DTensor`` parameter the value must be a ``DTensor``
        with its mesh, placements and shape; its local shard is copied, and the result is a ``DTensor`` again."""
        if _is_dtensor(like) or _is_dtensor(value):
            if not (_is_dtensor(like) and _is_dtensor(value)):
                raise AdagradError(
                    f"state '{what}' is {_kind(value)}; its parameter is {_kind(like)} (load a distributed optimizer's state "
                    "with torch.distributed.checkpoint.state_dict.set_state_dict, which shards it)"
                )
            if not _same_layout(value, like):
                raise AdagradError(
                    f"state '{what}' is a DTensor of shape {tuple(value.shape)} placed {tuple(value.placements)} "
                    f"on {value.device_mesh}; its parameter {tuple(like.shape)} placed {tuple(like.placements)} "
                    f"on {like.device_mesh} (load resharded state with torch.distributed.checkpoint)"
                )
            local, array = Adagrad._own(value._local_tensor, like._local_tensor, dtype, what)
            return _dist_like(local, like), array
        t = torch.as_tensor(value).detach()
        shape = tuple(like.shape)
        if tuple(t.shape) != shape:
            raise AdagradError(f"state '{what}' has shape {tuple(t.shape)}; its parameter {shape}")
        array = aligned_array(shape, _NUMPY[dtype])
        owned = torch.from_numpy(array)
        owned.copy_(t)
        return owned, array

    def _init_state(self, p: torch.Tensor) -> None:
        """``torch.optim.Adagrad(fused=True)``'s state (a float32 ``step``, ``sum`` like ``p``), plus the float32
        ``master`` copy of a 16-bit parameter."""
        self._check_param(p)
        state = self.state[p]
        init = self.defaults["initial_accumulator_value"]
        half = p.dtype in _HALF
        local = _local(p)
        state["step"] = torch.zeros((), dtype=torch.float32)
        total = torch.full(tuple(local.shape), init, dtype=torch.float32 if half else p.dtype)
        state["sum"] = _dist_like(total, p)
        if half:
            state["master"] = _dist_like(local.detach().to(torch.float32), p)
        self._snaps = None

    def _adopt(
        self, p: torch.Tensor, state: dict[str, Any], backing: dict[int, tuple[torch.Tensor, np.ndarray]]
    ) -> tuple[Any, ...]:
        """Moves ``state``'s tensors into memory the optimizer owns (unless they already are), converting them as
        ``torch.optim.Adagrad(fused=True)`` keeps them; returns the backing tuple the native step reads."""
        half = p.dtype in _HALF
        if half and "master" not in state:
            # Loaded from torch.optim.Adagrad, which keeps no master copy: start one from the parameter.
            state["master"] = p.detach()
        if "sum" not in state or "step" not in state:
            raise AdagradError("a parameter's state has no 'sum' or no 'step'")
        if _is_dtensor(state["step"]):
            raise AdagradError("state 'step' is a DTensor; a step count is a plain one-element tensor")
        step = torch.as_tensor(state["step"])
        if step.numel() != 1:
            raise AdagradError(f"state 'step' has {step.numel()} elements; a step count has one")
        keys = ("sum", "master") if half else ("sum",)
        found: dict[str, tuple[torch.Tensor, np.ndarray]] = {}
        for key in keys:
            value = state[key]
            hit = self._backing.get(id(value))
            if hit is None or hit[0] is not value:
                hit = self._own(value, p, torch.float32 if half else p.dtype, key)
                state[key] = hit[0]
            backing[id(hit[0])] = hit
            found[key] = hit
        master = found.get("master", (None, None))
        # The step's pair is filled in by _snapshot (all of a group's steps share one array).
        return (*found["sum"], None, None, *master)

    def _snapshot(self, grads: Sequence[torch.Tensor | None] | None, force: bool = False) -> list[_Snapshot]:
        """Builds (when anything changed) the lists the native step reads: per group the parameters with state and
        the backing of their state; a parameter without state gets it at its first gradient, as in PyTorch.

        Anything changed: the groups' parameters, the state mapping replaced (``load_state_dict``), or any write
        into it or into a parameter's state dict (they are flagging dict types, see ``_StateDict``). A rebuild
        forgets the native cache, so the next step inspects every tensor again."""
        snaps = self._snaps
        if (
            not force
            and snaps is not None
            and not self._flag.dirty
            and self._state_ref is self.state
            and _native.unchanged(self.param_groups, snaps, grads)
        ):
            return snaps
        if type(self.state) is not _StateMap or self.state._flag is not self._flag:
            self.state = _StateMap(self._flag, self.state)
        for k, v in list(self.state.items()):
            if type(v) is not _StateDict:
                self.state[k] = _StateDict(self._flag, v)
        snaps = []
        backing: dict[int, tuple[torch.Tensor, np.ndarray]] = {}
        flat = 0
        for group in self.param_groups:
            params = group["params"]
            snap = _Snapshot(list(params), [], [], [], [])
            snap.start = flat
            for i, p in enumerate(params):
                state = self.state.get(p)
                if not state:
                    if not self._has_grad(p, grads, flat + i):
                        snap.pending.append((flat + i, p))
                        continue
                    self._init_state(p)
                    state = self.state[p]
                snap.keys.append(p)
                snap.states.append(state)
                snap.backs.append(self._adopt(p, state, backing))
                snap.index.append(flat + i)
            snap.dist = any(_is_dtensor(k) for k in snap.keys)
            # The group's step counts side by side in one array (one cache line per 16 parameters, not one each).
            steps = np.empty(len(snap.keys), dtype=np.float32)
            for j, state in enumerate(snap.states):
                view = steps[j : j + 1].reshape(())
                owned = torch.from_numpy(view)
                owned.copy_(torch.as_tensor(state["step"]).reshape(()))
                state["step"] = owned
                back = snap.backs[j]
                snap.backs[j] = (back[0], back[1], owned, view, back[4], back[5])
            snaps.append(snap)
            flat += len(params)
        self._backing = backing
        self._snaps = snaps
        self._state_ref = self.state
        self._cache.clear()
        self._flag.dirty = False
        return snaps

    @staticmethod
    def _has_grad(p: torch.Tensor, grads: Sequence[torch.Tensor | None] | None, index: int) -> bool:
        """Whether ``p`` (the ``index``-th parameter over all groups) has a gradient this step."""
        if grads is None:
            return p.grad is not None
        return 0 <= index < len(grads) and grads[index] is not None

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """As ``torch.optim.Optimizer.add_param_group``; the new parameters get state at their first gradient."""
        params = param_group["params"]
        for p in [params] if isinstance(params, torch.Tensor) else list(params):
            self._check_param(p)
        with self._lock:
            super().add_param_group(param_group)
            self._snaps = None

    def state_dict(self) -> dict[str, Any]:
        """As ``torch.optim.Optimizer.state_dict``, with plain dicts (loadable where adagrad_cpu is not installed).

        A group of ``DTensor`` parameters records ``fused=None``, as ``torch.optim.Adagrad()`` under FSDP2 does:
        torch's fused step has no DTensor support, and a loaded group's flags choose the step torch runs."""
        sd = super().state_dict()
        sd["state"] = {k: dict(v) for k, v in sd["state"].items()}
        for group, saved in zip(self.param_groups, sd["param_groups"]):
            if any(_is_dtensor(p) for p in group["params"]):
                saved["fused"] = None
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As ``torch.optim.Optimizer.load_state_dict`` (a ``torch.optim.Adagrad`` checkpoint loads too). The
        state is copied into memory the optimizer owns: ``step`` as a float32 scalar, ``sum`` in the parameter's
        dtype (float32 for a 16-bit parameter, whose master copy is taken from the parameter when the checkpoint
        has none)."""
        with self._lock:
            kept = (self.state, self.param_groups, self._snaps, self._backing, self._state_ref)
            try:
                super().load_state_dict(state_dict)
                self._snaps = None
                self._snapshot(None, force=True)
            except BaseException:
                # Refused (by torch or by the checks here): the optimizer is left as it was.
                self.state, self.param_groups, self._snaps, self._backing, self._state_ref = kept
                self._cache.clear()
                self._flag.dirty = True
                raise

    def share_memory(self) -> None:
        """Not supported: the state lives in memory the optimizer allocates itself (so that no tensor operation can
        free or move it under a running step), which ``share_memory_()`` would move into shared memory behind the
        optimizer's back. Use one optimizer per process (as ZeRO does)."""
        raise AdagradError(
            "adagrad_cpu's Adagrad keeps its state in memory it owns and cannot move it into shared memory; "
            "use one optimizer per process"
        )

    def __getstate__(self) -> dict[str, Any]:
        """As ``Optimizer.__getstate__``, plus the settings that rebuild the native engine."""
        state = super().__getstate__()
        state["_adagrad_cpu_settings"] = dict(self._settings)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restores a pickled optimizer (rebuilding the native engine), or, from ``load_state_dict``, takes the new
        state and groups; either way the state is adopted into owned memory at the next step."""
        settings = state.pop("_adagrad_cpu_settings", None)
        if settings is not None:
            self._settings = settings
            self._engine, self._engine_threads = _engine(settings)
            self._master_weights = settings["master_weights"]
            self._cache = _native.TensorCache()
            self._backing = {}
            self._flag = _Flag()
            self._lock = threading.RLock()
        self._snaps = None
        self._state_ref = None
        super().__setstate__(state)

    # --- the step ------------------------------------------------------------------------------------------

    @_hooked
    def step(  # type: ignore[override]
        self,
        closure: Callable[[], float] | None = None,
        *,
        grads: Sequence[torch.Tensor | None] | None = None,
    ) -> float | None:
        """One Adagrad step over every parameter with a gradient (``p.grad``, or ``grads``); returns the closure's
        loss. Refuses, with ``AdagradError`` and nothing changed, tensors it cannot update in place."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with self._lock:
            self._step_locked(grads)
        return loss

    def _step_locked(self, grads: Sequence[torch.Tensor | None] | None) -> None:
        """The step itself, under the optimizer's lock: steps from several threads at once are serialized, each
        one whole."""
        if grads is not None:
            grads = list(grads)
        # As in torch, the accumulators start from the optimizer's initial_accumulator_value, not a group's.
        init = float(self.defaults["initial_accumulator_value"])
        snaps = self._snapshot(grads)
        dist = any(s.dist for s in snaps)
        groups = []
        for group, snap in zip(self.param_groups, snaps):
            groups.append(
                (
                    [_local(k) for k in snap.keys] if snap.dist else snap.keys,
                    snap.backs,
                    float(group["lr"]),
                    float(group["lr_decay"]),
                    float(group["weight_decay"]),
                    float(group["eps"]),
                    bool(group["maximize"]),
                    init,
                )
            )
        flat_grads = None
        if grads is not None:
            total = sum(len(s.params) for s in snaps)
            if len(grads) != total:
                raise AdagradError(f"grads has {len(grads)} entries; the optimizer has {total} parameters")
            flat_grads = [grads[i] for s in snaps for i in s.index]
        wrappers: list[torch.Tensor] = []
        if dist:
            flat_grads = self._local_grads(snaps, flat_grads, wrappers)
        if self._settings["threads"] is None and torch.get_num_threads() != self._engine_threads:
            # Following torch's thread setting, which changed since the last step.
            self._engine, self._engine_threads = _engine(self._settings)
            self._cache.clear()
        # The native step also bumps the autograd version counters of the parameters it updates, as torch's default
        # (for-each) step does, so that a graph that saved one of them fails in backward.
        updated = self._engine.torch_step(
            self._cache,
            groups,
            flat_grads,
            getattr(self, "grad_scale", None),
            getattr(self, "found_inf", None),
        )
        if wrappers and updated:
            # A DTensor parameter's own version counter too, as an in-place op dispatched through it bumps both.
            torch._C._increment_version(wrappers)

    @staticmethod
    def _local_grads(
        snaps: list[_Snapshot], flat_grads: list[torch.Tensor | None] | None, wrappers: list[torch.Tensor]
    ) -> list[torch.Tensor | None]:
        """The gradients the native step reads when parameters are ``DTensor``s: one per parameter with state (from
        ``flat_grads`` when given, else ``p.grad``), a ``DTensor``'s as its local shard after checking that it is
        laid out as its parameter (the same mesh, placements and shape: its shard holds the gradient of the
        parameter's shard). Appends to ``wrappers`` the ``DTensor`` parameters that will be updated."""
        out: list[torch.Tensor | None] = []
        n = 0
        for gi, snap in enumerate(snaps):
            for j, p in enumerate(snap.keys):
                g = p.grad if flat_grads is None else flat_grads[n]
                n += 1
                if g is None:
                    out.append(None)
                    continue
                where = f"param_groups[{gi}]['params'][{snap.index[j] - snap.start}]"
                if _is_dtensor(p) != _is_dtensor(g):
                    raise AdagradError(f"the gradient of {where} is {_kind(g)}; its parameter is {_kind(p)}")
                if _is_dtensor(p):
                    if not _same_layout(g, p):
                        raise AdagradError(
                            f"the gradient of {where} is placed {tuple(g.placements)} on {g.device_mesh} with shape "
                            f"{tuple(g.shape)}; its parameter {tuple(p.placements)} on {p.device_mesh} with shape "
                            f"{tuple(p.shape)} (redistribute the gradient like its parameter)"
                        )
                    wrappers.append(p)
                    g = g._local_tensor  # type: ignore[attr-defined]
                out.append(g)
        return out

    # --- introspection -------------------------------------------------------------------------------------

    def lr_stats(self, threshold: float = 1e-6) -> list[dict[str, Any]]:
        """How far Adagrad's effective learning rate has shrunk: per parameter with state, statistics of
        ``clr / (√sum + eps)`` (``clr / √(sum + eps)`` with ``eps_placement="inside"``) over its elements, for
        its next step (``clr`` from the group's ``lr``, ``lr_decay`` and the parameter's step count).

        Returns one dict per parameter, in group order: ``group`` and ``index`` (the parameter's place in
        ``param_groups``), ``elements``, ``min``, ``median`` (the lower median), ``max``, ``mean``, ``below``
        (elements whose rate is below ``threshold``) and ``fraction_below`` — plain numbers, ready for a logger
        (e.g. ``writer.add_scalar(f"lr_min/{i}", s["min"], step)``). Exact (each value is one element's rate, in
        the state's dtype). For a DTensor parameter, over this rank's shard. Cost: two reads of the state (four for
        float64 state), about the time of 5–9 steps: log it every few hundred steps. No step runs meanwhile."""
        with self._lock:
            snaps = self._snapshot(None)
            out = []
            for gi, (group, snap) in enumerate(zip(self.param_groups, snaps)):
                for j, back in enumerate(snap.backs):
                    stats = _native.lr_stats(
                        back[1],
                        lr=float(group["lr"]),
                        lr_decay=float(group["lr_decay"]),
                        step=int(float(snap.states[j]["step"])) + 1,
                        eps=float(group["eps"]),
                        eps_placement=self._settings["eps_placement"],
                        threshold=float(threshold),
                    )
                    out.append({"group": gi, "index": snap.index[j] - snap.start, **stats})
            return out

    @property
    def isa(self) -> str:
        """The kernel path the step runs."""
        return self._engine.isa

    @property
    def threads(self) -> int:
        """Threads a large step uses, the caller included."""
        return self._engine.threads

    @property
    def team(self) -> str:
        """Whose threads a parallel step runs on: ``"openmp"``, ``"pool"`` or ``"sequential"``."""
        return self._engine.team
