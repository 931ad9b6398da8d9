"""adagrad_cpu: Adagrad for CPUs, bit-exact with PyTorch's fused Adagrad, faster, from Python.

- ``adagrad_cpu.torch.Adagrad``: a drop-in ``torch.optim.Adagrad`` (imports torch).
- ``adagrad_cpu.numpy.Adagrad`` and ``adagrad_cpu.numpy.step``: the same step over numpy arrays.
- ``adagrad_cpu.embedding.EmbeddingAdagrad``: embedding tables in numpy, from lookups.
"""

from ._native import AdagradError, Engine, __version__, available_isas

__all__ = ["AdagradError", "Engine", "__version__", "available_isas"]
