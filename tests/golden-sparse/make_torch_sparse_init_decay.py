"""Writes ``torch_sparse_adagrad_d16_init_decay.json``: ``torch.optim.Adagrad`` on sparse COO gradients (what
``nn.Embedding(sparse=True)`` gives), starting from a non-zero accumulator (``initial_accumulator_value``) with
``lr_decay``, in the schema of the other files here (see README.md). Every number comes from torch; run it with the
test environment's torch (``.venv/bin/python tests/golden-sparse/make_torch_sparse_init_decay.py``)."""

from __future__ import annotations

import json
import pathlib
import platform

import numpy as np
import torch

ROWS, D, LOOKUPS, STEPS, SEED = 64, 16, 40, 5, 20261204
HYPER = {"lr": 0.05, "eps": 1e-10, "lr_decay": 0.01, "initial_accumulator_value": 0.1}


def hexes(t: torch.Tensor) -> list[str]:
    """IEEE-754 hex of a float32 tensor, flattened row-major."""
    return [f"{b:08x}" for b in t.detach().contiguous().view(torch.int32).numpy().astype(np.uint32).ravel()]


def main() -> None:
    """Runs the trajectory and writes the file beside this script."""
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(SEED)
    w = torch.nn.Parameter(torch.randn(ROWS, D, generator=g) * 0.1)
    opt = torch.optim.Adagrad(
        [w],
        lr=HYPER["lr"],
        eps=HYPER["eps"],
        lr_decay=HYPER["lr_decay"],
        initial_accumulator_value=HYPER["initial_accumulator_value"],
    )
    out = {
        "meta": {
            "case": "torch_sparse_adagrad_d16_init_decay",
            "library": "torch",
            "note": "a non-zero initial accumulator and lr_decay (issue: every input form replayable)",
            "rows": ROWS,
            "D": D,
            "lookups_per_step": LOOKUPS,
            "steps": STEPS,
            "seed": SEED,
            "weights_dtype": "float32",
            "state_dtype": "float32",
            "state_shape": [ROWS, D],
            "torch": torch.__version__,
            "numpy": np.__version__,
            "machine": platform.machine(),
            "api": "torch.optim.Adagrad(lr, eps, lr_decay, initial_accumulator_value); p.grad = "
            "sparse_coo_tensor(indices[None], grads, (rows, D)); step()",
            "layout": "arrays flattened row-major; *_bits = IEEE-754 hex (u32 f32)",
        },
        "hyperparameters": {**HYPER, "optim": "torch.optim.Adagrad (sparse)"},
        "formula": "as torch_sparse_adagrad_d16.json, with clr = lr / (1 + (step - 1) * lr_decay) in double and the "
        "accumulator starting at initial_accumulator_value",
        "initial_weights_bits": hexes(w),
        "initial_state_bits": hexes(opt.state[w]["sum"]),
        "steps": [],
    }
    for _ in range(STEPS):
        # Duplicates on purpose: ids from a small range.
        indices = torch.randint(0, ROWS, (LOOKUPS,), generator=g)
        grads = torch.randn(LOOKUPS, D, generator=g) * 0.5
        grad = torch.sparse_coo_tensor(indices[None], grads, (ROWS, D))
        coalesced = grad.coalesce()
        w.grad = grad
        opt.step()
        out["steps"].append(
            {
                "indices": indices.tolist(),
                "grads_bits": hexes(grads),
                "coalesced_rows": coalesced.indices()[0].tolist(),
                "coalesced_grads_bits": hexes(coalesced.values()),
                "coalesced_source": "torch grad.coalesce() (library output)",
                "weights_bits": hexes(w),
                "state_bits": hexes(opt.state[w]["sum"]),
            }
        )
    path = pathlib.Path(__file__).with_name("torch_sparse_adagrad_d16_init_decay.json")
    path.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
