"""adagrad_cpu: Adagrad for CPUs, bit-exact with PyTorch's fused Adagrad, faster, from Python.

- ``adagrad_cpu.torch.Adagrad``: a drop-in ``torch.optim.Adagrad`` (imports torch).
- ``adagrad_cpu.numpy.Adagrad`` and ``adagrad_cpu.numpy.step``: the same step over numpy arrays.
- ``python -m adagrad_cpu.bench``: this package against ``torch._fused_adagrad_``, in interleaved rounds.
"""

from ._native import AdagradError, Engine, __version__, available_isas

__all__ = ["AdagradError", "Engine", "__version__", "available_isas"]
