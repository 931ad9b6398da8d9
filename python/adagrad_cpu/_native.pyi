"""Type stubs for the native module (the Rust binding)."""

from collections.abc import Sequence
from typing import Any

import numpy as np

__version__: str

class AdagradError(ValueError):
    """A step, or the optimizer's construction, refused its input; nothing was changed."""

class Engine:
    """The kernel path, tuning and threads, resolved once, plus eps placement and precision."""

    def __init__(
        self,
        *,
        threads: int | None = None,
        isa: str | None = None,
        precision: str = "exact",
        eps_placement: str = "outside",
        team: str = "pool",
    ) -> None: ...
    @property
    def isa(self) -> str: ...
    @property
    def threads(self) -> int: ...
    @property
    def team(self) -> str: ...
    @property
    def tuning(self) -> str: ...
    def torch_step(
        self,
        cache: TensorCache,
        groups: list[tuple[Any, ...]],
        grads: list[Any] | None = None,
        grad_scale: Any | None = None,
        found_inf: Any | None = None,
    ) -> int: ...
    def numpy_step(
        self,
        params: Sequence[np.ndarray],
        grads: Sequence[np.ndarray],
        sums: Sequence[np.ndarray],
        t: int,
        lr: float,
        lr_decay: float,
        weight_decay: float,
        eps: float,
        maximize: bool,
        init: float,
        grad_scale: float | None = None,
    ) -> None: ...

class TensorCache:
    """Per-position cache of a torch optimizer's validated tensors."""

    def __init__(self) -> None: ...
    def clear(self) -> None: ...

def available_isas() -> list[str]: ...
def lr_stats(
    sums: np.ndarray,
    *,
    lr: float,
    lr_decay: float,
    step: int,
    eps: float,
    eps_placement: str,
    threshold: float,
) -> dict[str, Any]: ...
def unchanged(groups: list[dict[str, Any]], snaps: list[Any], grads: list[Any] | None) -> bool: ...

class Embedding:
    """Row-wise or element-wise Adagrad for one float32 embedding table."""

    def __init__(
        self,
        rows: int,
        dim: int,
        *,
        lr: float,
        lr_decay: float,
        weight_decay: float,
        eps: float,
        maximize: bool,
        initial_accumulator_value: float,
        accumulator: str,
        decay: str,
        stochastic_seed: int | None,
        threads: int | None,
        isa: str | None,
        eps_placement: str,
        table_dtype: str = "float32",
        team: str = "pool",
    ) -> None: ...
    def step(
        self,
        table: np.ndarray,
        ids: np.ndarray,
        grads: np.ndarray,
        offsets: np.ndarray | None = None,
        weights: np.ndarray | None = None,
    ) -> None: ...
    def lr_stats(self, threshold: float) -> dict[str, Any]: ...
    def state(self) -> np.ndarray: ...
    @property
    def step_count(self) -> int: ...
    @property
    def isa(self) -> str: ...
    @property
    def threads(self) -> int: ...

def aligned_zeros(nbytes: int) -> np.ndarray: ...

# Only in a build with the `bench` feature (scripts/test's; never the installed wheel): python/src/bench.rs.
def rust_step_seconds(
    engine: Engine,
    params: Sequence[np.ndarray],
    grads: Sequence[np.ndarray],
    sums: Sequence[np.ndarray],
    reps: int,
    lr: float = 0.01,
) -> list[float]: ...

EMBEDDING_CEILING_VARIANTS: list[tuple[int, int, bool]]

def embedding_ceiling(
    table: np.ndarray,
    state: np.ndarray,
    ids: np.ndarray,
    grads: np.ndarray,
    per_row: int,
    threads: int,
    ahead: tuple[int, int, bool],
) -> float: ...
