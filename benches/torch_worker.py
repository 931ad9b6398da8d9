"""Timing worker for ``cargo run --release --example vs_torch``: PyTorch's fused CPU Adagrad, bare.

Reads one request per line on stdin, ``DTYPE ELEMENTS TENSORS THREADS SECONDS``, and answers one line: the median
nanoseconds per element of ``torch._fused_adagrad_`` (the ATen kernel behind ``torch.optim.Adagrad(fused=True)``,
called without optimizer overhead) over ``TENSORS`` tensors of ``ELEMENTS`` elements, with ``THREADS`` intra-op
threads, sampled for about ``SECONDS`` seconds. The first line it writes is the torch version.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

Tensors = tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]
_cache: dict[tuple[str, int, int], Tensors] = {}


def tensors(dtype: str, n: int, k: int) -> Tensors:
    """Parameters, gradients, state and step counters: ``k`` tensors of ``n`` elements, built once per shape."""
    key = (dtype, n, k)
    if key not in _cache:
        _cache.clear()
        dt = getattr(torch, dtype)
        gen = torch.Generator().manual_seed(0)
        params = list(torch.randn(n * k, generator=gen, dtype=dt).split(n))
        grads = list((torch.randn(n * k, generator=gen, dtype=dt) * 1e-3).split(n))
        state = list(torch.full((n * k,), 0.1, dtype=dt).split(n))
        steps = [torch.tensor(1.0) for _ in range(k)]
        _cache[key] = (params, grads, state, steps)
    return _cache[key]


def measure(dtype: str, n: int, k: int, threads: int, secs: float) -> float:
    """Median seconds per step divided by the element count, in nanoseconds."""
    torch.set_num_threads(threads)
    params, grads, state, steps = tensors(dtype, n, k)

    def step() -> None:
        # The bare fused op (private API) is what is being measured.
        torch._fused_adagrad_(
            params, grads, state, steps, lr=0.01, lr_decay=0.0, weight_decay=0.0, eps=1e-10, maximize=False
        )

    with torch.no_grad():
        for _ in range(3):
            step()
        t0 = time.perf_counter()
        step()
        one = max(time.perf_counter() - t0, 1e-7)
        iters = max(1, int(secs / 3 / one))
        samples = []
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(iters):
                step()
            samples.append((time.perf_counter() - t0) / iters)
    return statistics.median(samples) / (n * k) * 1e9


def main() -> None:
    """Answer requests until stdin closes."""
    print(torch.__version__, flush=True)
    for line in sys.stdin:
        dtype, n, k, threads, secs = line.split()
        print(measure(dtype, int(n), int(k), int(threads), float(secs)), flush=True)


if __name__ == "__main__":
    main()
