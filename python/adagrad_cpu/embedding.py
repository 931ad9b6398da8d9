"""Row-wise and element-wise Adagrad for embedding tables held in numpy arrays (or torch tensors via ``.numpy()``).

The table is updated in place with the GIL released: each touched row's gradients are summed in ascending lookup
position, then the row is updated once. Row-wise is FBGEMM's ``EXACT_ROWWISE_ADAGRAD`` bit for bit.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from adagrad_cpu._host import host_team, host_threads
from adagrad_cpu._native import Embedding

__all__ = ["EmbeddingAdagrad"]


class EmbeddingAdagrad:
    """Adagrad for one embedding table of ``rows × dim`` (float32 state).

    ``accumulator``: ``"rowwise"`` (one per row, the mean of the row's squared gradient; FBGEMM, TorchRec) or
    ``"elementwise"`` (one per element). ``decay``: ``"l2"`` or ``"decoupled"`` weight decay. ``table_dtype``:
    ``"float32"``, ``"float16"`` (numpy float16 tables) or ``"bfloat16"`` (tables given as numpy uint16 arrays of
    the bits, e.g. ``torch_table.view(torch.int16).numpy().view(np.uint16)``); 16-bit tables are rounded to nearest
    even, or stochastically with ``stochastic_seed`` (reproducible at any thread count).
    """

    def __init__(
        self,
        rows: int,
        dim: int,
        *,
        lr: float = 0.01,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        eps: float = 1e-8,
        maximize: bool = False,
        initial_accumulator_value: float = 0.0,
        accumulator: str = "rowwise",
        decay: str = "l2",
        stochastic_seed: int | None = None,
        threads: int | None = None,
        isa: str | None = None,
        eps_placement: str = "outside",
        table_dtype: str = "float32",
    ) -> None:
        """Validate every setting (``AdagradError`` on a bad one) and allocate the accumulators."""
        self._native = Embedding(
            rows,
            dim,
            lr=lr,
            lr_decay=lr_decay,
            weight_decay=weight_decay,
            eps=eps,
            maximize=maximize,
            initial_accumulator_value=initial_accumulator_value,
            accumulator=accumulator,
            decay=decay,
            stochastic_seed=stochastic_seed,
            threads=host_threads(threads),
            team=host_team(None),
            isa=isa,
            eps_placement=eps_placement,
            table_dtype=table_dtype,
        )
        # One step at a time (the native optimizer's state is one); other threads wait their turn.
        self._lock = threading.Lock()

    def step(
        self,
        table: np.ndarray,
        ids: np.ndarray,
        grads: np.ndarray,
        offsets: np.ndarray | None = None,
        weights: np.ndarray | None = None,
    ) -> None:
        """Apply one step in place.

        ``ids`` are row ids, one per lookup (int64 as torch gives them, or int32, uint64, uint32); ``grads`` one
        float32 row per lookup, or per bag when ``offsets`` (the ids' dtype, bags + 1, from 0 to ``len(ids)``) are
        given, with optional per-lookup ``weights``.
        Anything malformed (wrong dtypes, shapes or types included) raises ``AdagradError`` naming what is wrong
        and, for lookups, the first offending position; nothing is changed then. Steps from several threads at
        once are serialized.
        """
        with self._lock:
            self._native.step(table, ids, grads, offsets, weights)

    @property
    def state(self) -> np.ndarray:
        """A copy of the accumulators (``rows`` or ``rows · dim`` float32)."""
        return self._native.state()

    def lr_stats(self, threshold: float = 1e-6) -> dict[str, Any]:
        """Statistics of the effective learning rate the next step would give each accumulator (each row's, or
        each element's): ``elements``, ``min``, ``median``, ``max``, ``mean``, ``below`` (below ``threshold``) and
        ``fraction_below``, plain numbers (see ``adagrad_cpu.torch.Adagrad.lr_stats``). Rows never looked up keep
        their initial accumulator, and so the largest rate. Two reads of the state, about 5 steps' time."""
        with self._lock:
            return self._native.lr_stats(float(threshold))

    @property
    def step_count(self) -> int:
        """Steps taken so far."""
        return self._native.step_count

    @property
    def isa(self) -> str:
        """The kernel path's name."""
        return self._native.isa

    @property
    def threads(self) -> int:
        """Threads a large step runs on, the caller included."""
        return self._native.threads
