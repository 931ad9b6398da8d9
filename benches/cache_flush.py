"""Cold caches for the benchmarks in this folder: the largest cache's size, and a flush that evicts it."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def llc_bytes() -> int:
    """The largest CPU cache's size (sysfs), or 256 MiB when it cannot be read."""
    best = 0
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = f.read_text().strip()
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            best = max(best, int(digits) * scale)
    return best or 256 << 20


class Flush:
    """Evicts the caches by reading a buffer larger than them (clean lines: no write-back lands in the next pass)."""

    def __init__(self, mib: int) -> None:
        """A buffer of ``mib`` MiB, touched once."""
        self.buf = np.ones((mib << 20) // 8, dtype=np.int64)

    def __call__(self) -> None:
        """Reads the whole buffer."""
        int(self.buf.sum())
