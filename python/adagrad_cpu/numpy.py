"""``adagrad_cpu.numpy``: Adagrad over numpy arrays, updated in place, for loops without torch.

``Adagrad`` owns the accumulators and the step count; ``step`` is the functional form over caller-owned
accumulators. Both run the crate's step (the same validation, threads and bits as in Rust and in
``adagrad_cpu.torch``) and refuse, with ``AdagradError`` and nothing changed, arrays they cannot update in place.
"""

from __future__ import annotations

import numbers
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _native
from ._host import aligned_array, host_team, host_threads
from ._native import AdagradError

__all__ = ["Adagrad", "AdagradError", "step"]

_DEFAULT_ENGINES: dict[tuple[Any, ...], _native.Engine] = {}


def _engine(threads: int | None, isa: str | None, precision: str, eps_placement: str) -> _native.Engine:
    """One engine per setting, shared (it holds no state: the kernel path, tuning and threads); ``threads=None``
    follows ``torch.get_num_threads()`` when PyTorch is loaded."""
    threads = host_threads(threads)
    team = host_team(None)
    key = (threads, isa, precision, eps_placement, team)
    engine = _DEFAULT_ENGINES.get(key)
    if engine is None:
        engine = _native.Engine(threads=threads, isa=isa, precision=precision, eps_placement=eps_placement, team=team)
        _DEFAULT_ENGINES[key] = engine
    return engine


def step(
    params: Sequence[np.ndarray],
    grads: Sequence[np.ndarray],
    sums: Sequence[np.ndarray],
    t: int,
    *,
    lr: float = 1e-2,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    eps: float = 1e-10,
    maximize: bool = False,
    initial_accumulator_value: float = 0.0,
    grad_scale: float | None = None,
    eps_placement: str = "outside",
    precision: str = "exact",
    threads: int | None = None,
    isa: str | None = None,
) -> None:
    """Step ``t`` (from 1) of Adagrad over ``params`` in place, with the caller's accumulators ``sums``.

    One C-contiguous array each per tensor, equal shapes: float32 parameters and sums with float32 or float16
    gradients, or float64 throughout. ``grad_scale`` divides every gradient first. ``initial_accumulator_value``
    is the value ``sums`` started from (``eps=0`` is refused when it is 0: a zero gradient would compute 0/0).
    """
    engine = _engine(threads, isa, precision, eps_placement)
    engine.numpy_step(
        list(params),
        list(grads),
        list(sums),
        _step_count(t),
        float(lr),
        float(lr_decay),
        float(weight_decay),
        float(eps),
        bool(maximize),
        float(initial_accumulator_value),
        grad_scale,
    )


def _step_count(t: object) -> int:
    """``t`` as a step count: an integer (Python's or numpy's, not a bool) from 1 to 2**64 - 1, else
    ``AdagradError``."""
    if isinstance(t, bool) or not isinstance(t, numbers.Integral):
        raise AdagradError(f"step count t must be an integer (it counts from 1), not {t!r}")
    t = int(t)
    if not 1 <= t < 2**64:
        raise AdagradError(f"step count t counts from 1 and must be below 2**64, not {t}")
    return t


class Adagrad:
    """Adagrad over a fixed list of numpy arrays, with PyTorch's hyperparameters and defaults.

    >>> import numpy as np
    >>> w = np.ones(3, dtype=np.float32)
    >>> opt = Adagrad([w], lr=0.1, eps=1e-8, eps_placement="inside")
    >>> for g in (0.2, 0.4, 0.1):
    ...     opt.step([np.full(3, g, dtype=np.float32)])
    >>> float(w[0])
    0.7887354493141174
    """

    def __init__(
        self,
        params: Sequence[np.ndarray],
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        *,
        maximize: bool = False,
        eps_placement: str = "outside",
        precision: str = "exact",
        threads: int | None = None,
        isa: str | None = None,
    ) -> None:
        self.params = list(params)
        for i, p in enumerate(self.params):
            if not isinstance(p, np.ndarray):
                raise AdagradError(f"params[{i}] is not a numpy array")
            if p.dtype not in (np.float32, np.float64):
                raise AdagradError(f"params[{i}] is {p.dtype}; parameters are float32 or float64")
        self.hyper = {
            "lr": float(lr),
            "lr_decay": float(lr_decay),
            "weight_decay": float(weight_decay),
            "initial_accumulator_value": float(initial_accumulator_value),
            "eps": float(eps),
            "maximize": bool(maximize),
        }
        for name, value in self.hyper.items():
            if name != "maximize" and not 0.0 <= value < float("inf"):
                raise AdagradError(f"invalid {name}: {value}")
        self._engine = _engine(threads, isa, precision, eps_placement)
        # One step (or load) at a time: the count and the arrays change together.
        self._lock = threading.Lock()
        self.sums = [aligned_array(p.shape, p.dtype) for p in self.params]
        for s in self.sums:
            s.fill(initial_accumulator_value)
        self.t = 0

    @property
    def isa(self) -> str:
        """The kernel path the step runs."""
        return self._engine.isa

    @property
    def threads(self) -> int:
        """Threads a large step uses, the caller included."""
        return self._engine.threads

    def step(self, grads: Sequence[np.ndarray], grad_scale: float | None = None) -> None:
        """One step with one gradient array per parameter; on ``AdagradError`` nothing changed, the count too.
        Steps from several threads at once are serialized."""
        with self._lock:
            h = self.hyper
            self._engine.numpy_step(
                self.params,
                list(grads),
                self.sums,
                _step_count(self.t + 1),
                h["lr"],
                h["lr_decay"],
                h["weight_decay"],
                h["eps"],
                h["maximize"],
                h["initial_accumulator_value"],
                grad_scale,
            )
            self.t += 1

    def state_dict(self) -> dict[str, Any]:
        """The step count, hyperparameters and copies of the accumulators."""
        return {"step": self.t, "hyper": dict(self.hyper), "sums": [s.copy() for s in self.sums]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores ``state_dict()``'s output; checked first, so nothing changes if it does not fit."""
        sums = state["sums"]
        t = state["step"]
        if isinstance(t, bool) or not isinstance(t, numbers.Integral) or not 0 <= int(t) < 2**64:
            raise AdagradError(f"state's step must be an integer from 0, not {t!r}")
        if len(sums) != len(self.params):
            raise AdagradError("state does not match this optimizer's parameters")
        for i, (s, p) in enumerate(zip(sums, self.params)):
            if not isinstance(s, np.ndarray) or s.shape != p.shape or s.dtype != p.dtype:
                raise AdagradError(f"sums[{i}] does not match params[{i}] in shape or dtype")
        with self._lock:
            for dst, src in zip(self.sums, sums):
                np.copyto(dst, src)
            self.hyper.update(state.get("hyper", {}))
            self.t = int(t)
