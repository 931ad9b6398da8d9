"""What the package takes from the process it runs in: aligned memory for the state it keeps (``sum``, master
copies), and the thread count the host (PyTorch) has set."""

from __future__ import annotations

import math
import numbers
import os
import sys

import numpy as np
import numpy.typing as npt

from . import _native
from ._native import AdagradError


def aligned_array(shape: tuple[int, ...], dtype: npt.DTypeLike) -> np.ndarray:
    """A zero-filled C-contiguous array of ``shape`` and ``dtype`` in memory the native module allocates: 64-byte
    aligned (numpy's own large arrays start 16 bytes past a cache line, so every AVX-512 load and store of the step
    straddles two), and from 2 MiB on 2 MiB aligned and advised for transparent huge pages. The array owns it."""
    dt = np.dtype(dtype)
    nbytes = math.prod(shape) * dt.itemsize
    return _native.aligned_zeros(nbytes).view(dt).reshape(shape)


def host_threads(threads: int | None) -> int | None:
    """The threads a step uses when the caller gave ``threads``: that; else, when PyTorch is loaded in this process,
    ``torch.get_num_threads()`` (a user who limits torch's threads limits ours); else ``None`` (one per CPU)."""
    if threads is not None:
        return checked_threads(threads)
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    return int(torch.get_num_threads())


TEAMS = ("pool", "openmp")


def host_team(team: str | None) -> str:
    """Whose threads a parallel step runs on: ``team`` when given; else ``ADAGRAD_TEAM`` when set; else
    ``"openmp"`` (the OpenMP team PyTorch runs on) when PyTorch is loaded in this process, ``"pool"`` (the crate's
    own threads) when it is not. Anything but ``"pool"`` and ``"openmp"`` is refused by the engine."""
    if team is not None:
        return team
    env = os.environ.get("ADAGRAD_TEAM", "").strip()
    if env:
        return env
    return "openmp" if "torch" in sys.modules else "pool"


#: The most threads a step may use (the crate's ``MAX_THREADS``).
MAX_THREADS = 1024


def checked_threads(threads: object) -> int:
    """``threads`` as a thread count from 1 to ``MAX_THREADS``, else ``AdagradError`` (before any thread starts;
    an integer too large for the native call included)."""
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral):
        raise AdagradError(f"threads must be an integer, not {threads!r}")
    if not 1 <= int(threads) <= MAX_THREADS:
        raise AdagradError(f"{threads} threads: from 1 to {MAX_THREADS} are allowed")
    return int(threads)
