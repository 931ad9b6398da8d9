"""Print the README's performance tables (markdown) from the stored raw results in this folder.

Usage: ``python3 docs/results/tables.py`` from the repository root. Every number in the README's performance
section is printed by this script from the JSON files written by ``examples/vs_torch.rs``,
``examples/report.rs`` and ``examples/calibrate.rs``, by ``benches/python_bench.py --json``, by
``benches/embedding_vs_fbgemm.py --json`` and by ``benches/inloop.py --json``.
"""

from __future__ import annotations

import json
import pathlib

HERE = pathlib.Path(__file__).resolve().parent


def load(name: str) -> dict:
    """One stored result file."""
    return json.loads((HERE / name).read_text())


def vs_torch(name: str) -> None:
    """The crate against torch._fused_adagrad_: one row per configuration."""
    d = load(name)
    print(
        f"`{name}`: {d['cpu']} ({d['cpuid']}), crate path {d['crate_path']}, torch {d['torch']}, {d['rounds']} rounds\n"
    )
    print("| dtype | elements | threads | torch ns/el | crate ns/el | torch/crate (median, range) |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in d["rows"]:
        n = f"{r['tensors']} × {r['elements']:,}" if r["tensors"] > 1 else f"{r['elements']:,}"
        print(
            f"| {r['dtype'].replace('float', 'f')} | {n} | {r['threads']} | {r['torch_ns_per_elem']:.3f} | "
            f"{r['crate_ns_per_elem']:.3f} | **{r['ratio']:.2f}×** ({r['ratio_min']:.2f}–{r['ratio_max']:.2f}) |"
        )
    print()


def report(name: str) -> None:
    """The roofline report: ns per element and percent of the independent ceiling, per path."""
    d = load(name)
    print(f"`{name}`: {d['cpu']}, default path {d.get('default_path', '?')}\n")
    rows = d["rows"]
    keys = sorted(
        {(r["dtype"], r["size"], r["threads"]) for r in rows},
        key=lambda k: (["f32", "f64", "f32+bf16g", "f32+bf16g+out"].index(k[0]), k[1], k[2]),
    )
    paths = [p for p in dict.fromkeys(r["path"] for r in rows) if not p.startswith("ceiling")]
    print("| format | elements | threads | " + " | ".join(paths) + " | ceiling (variant) |")
    print("|---|---:|---:|" + "---:|" * (len(paths) + 1))
    for k in keys:
        cells = []
        ceiling = ""
        for r in rows:
            if (r["dtype"], r["size"], r["threads"]) != k:
                continue
            if r["path"].startswith("ceiling"):
                ceiling = f"{r['ns_per_elem']:.3f} ({r['path'][9:-1]})"
        for p in paths:
            r = next((r for r in rows if (r["dtype"], r["size"], r["threads"], r["path"]) == (*k, p)), None)
            cells.append("" if r is None else f"{r['ns_per_elem']:.3f} ({r['pct_of_ceiling']:.0f}%)")
        print(f"| {k[0]} | {k[1]:,} | {k[2]} | " + " | ".join(cells) + f" | {ceiling} |")
    print()


def python_bench(name: str) -> None:
    """``benches/python_bench.py``: the Python package against torch, and the Python step against Rust's."""
    d = load(name)
    m = d["meta"]
    print(
        f"`{name}`: {m['cpu']}, {m['logical_cpus']} CPUs, path {m['isa']}, torch {m['torch']}, {m['rounds']} rounds\n"
    )
    print("| row | dtype | size | threads | ours µs | other µs | ratio (median, range) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in d["rows"]:
        n = f"{r['tensors']} × {r['elements']:,}" if r["tensors"] > 1 else f"{r['elements']:,}"
        print(
            f"| {r['kind']} | {r['dtype'].replace('float', 'f')} | {n} | {r['threads']} | {r['ours_s'] * 1e6:.1f} | "
            f"{r['other_s'] * 1e6:.1f} | **{r['ratio_median']:.2f}×** ({r['ratio_min']:.2f}–{r['ratio_max']:.2f}) |"
        )
    print()


def embedding(name: str) -> None:
    """``benches/embedding_vs_fbgemm.py``: the embedding step against FBGEMM and torch sparse, and its ceiling."""
    d = load(name)
    m = d["meta"]
    print(
        f"`{name}`: {m['cpu']}, torch {m['torch']}, {m['rows']:,} rows, FBGEMM ISA flags patched: {m['fbgemm_isa']['patched']}\n"
    )
    print(
        "| D | B | ids | threads | ours row-wise ms | FBGEMM row-wise | × | ours element-wise ms | FBGEMM element-wise"
        " | × | torch sparse | × | row-wise / element-wise % of ceiling | ceiling ÷ FBGEMM row-wise / element-wise;"
        " ÷ torch |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in d["results"]:
        ids = "Zipf 1.05" if r["dist"] == "zipf1.05" else r["dist"]
        print(
            f"| {r['D']} | {r['B']:,} | {ids} | {r['threads']} | {r['ours_rowwise_ms']:.2f} | {r['fbgemm_rowwise_ms']:.2f}"
            f" | {r['rowwise_vs_fbgemm']:.2f} | {r['ours_elementwise_ms']:.2f} | {r['fbgemm_elementwise_ms']:.2f}"
            f" | {r['elementwise_vs_fbgemm']:.2f} | {r['torch_sparse_ms']:.2f} | {r['elementwise_vs_torch']:.2f}"
            f" | {100 * r['rowwise_of_ceiling']:.0f} / {100 * r['elementwise_of_ceiling']:.0f}"
            f" | {r['ceiling_rowwise_vs_fbgemm']:.2f} / {r['ceiling_elementwise_vs_fbgemm']:.2f};"
            f" {r['ceiling_elementwise_vs_torch']:.2f} |"
        )
    rw1 = [r["rowwise_vs_fbgemm"] for r in d["results"] if r["threads"] == 1]
    rw2 = [r["rowwise_vs_fbgemm"] for r in d["results"] if r["threads"] > 1]
    ewf = [r["elementwise_vs_fbgemm"] for r in d["results"]]
    ewt = [r["elementwise_vs_torch"] for r in d["results"]]
    print(
        f"\nrow-wise vs FBGEMM: 1 thread {min(rw1):.2f}–{max(rw1):.2f}x ({sum(x >= 1.2 for x in rw1)} of {len(rw1)}"
        f" >= 1.2x), 2 threads {min(rw2):.2f}–{max(rw2):.2f}x ({sum(x >= 1.8 for x in rw2)} of {len(rw2)} >= 1.8x);"
        f" element-wise vs FBGEMM >= 3x in {sum(x >= 3 for x in ewf)} of {len(ewf)}, vs torch >= 5x in"
        f" {sum(x >= 5 for x in ewt)} of {len(ewt)}; largest % of ceiling"
        f" {100 * max(max(r['rowwise_of_ceiling'], r['elementwise_of_ceiling']) for r in d['results']):.0f}; the"
        f" row-wise ceiling itself is >= 1.2x FBGEMM in"
        f" {sum(r['ceiling_rowwise_vs_fbgemm'] >= 1.2 for r in d['results'] if r['threads'] == 1)} of {len(rw1)} one-thread"
        f" rows, >= 1.8x in {sum(r['ceiling_rowwise_vs_fbgemm'] >= 1.8 for r in d['results'] if r['threads'] > 1)} of"
        f" {len(rw2)} two-thread rows; the element-wise ceiling itself is >= 3x FBGEMM in {sum(r['ceiling_elementwise_vs_fbgemm'] >= 3 for r in d['results'])}"
        f" of {len(d['results'])}, >= 5x torch in {sum(r['ceiling_elementwise_vs_torch'] >= 5 for r in d['results'])}\n"
    )


def embedding_text(name: str) -> None:
    """A text-only ``benches/embedding_vs_fbgemm.py`` run (the Zen 4 one): row-wise, the ceiling against FBGEMM.

    The ceiling's time is derived from the printed columns as our time × our GB/s ÷ the ceiling's GB/s (both GB/s
    count the same bytes), so it carries the printed values' rounding (GB/s to 0.01); "×" and "% of ceiling" are the
    run's own (medians of per-round ratios), the ceiling's time against FBGEMM's a ratio of medians.
    """
    print(f"`{name}`, row-wise (ceiling ms derived from the printed GB/s)\n")
    print(
        "| D | B | ids | threads | ours ms | FBGEMM ms | × (FBGEMM ÷ ours) | ceiling ms | ceiling ÷ FBGEMM"
        " | % of ceiling the target needs (1.2× on 1 thread, 1.8× on 2) | ours % of ceiling |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for line in (HERE / name).read_text().splitlines():
        f = line.split()
        if len(f) < 21 or not f[0].isdigit():
            continue
        d, b, dist, threads = int(f[0]), int(f[1]), f[2], int(f[3])
        ours, fbgemm, ratio, ours_gbps, ceil_gbps = float(f[5]), float(f[6]), f[7], float(f[15]), float(f[16])
        ceiling = ours * ours_gbps / ceil_gbps
        target = 1.2 if threads == 1 else 1.8
        ids = "Zipf 1.05" if dist == "zipf1.05" else dist
        print(
            f"| {d} | {b:,} | {ids} | {threads} | {ours:.2f} | {fbgemm:.2f} | {ratio.rstrip('x')} | {ceiling:.2f}"
            f" | {fbgemm / ceiling:.2f} | {100 * target * ceiling / fbgemm:.0f}% | {f[17]} |"
        )
    print()


def inloop(name: str) -> None:
    """Training loops and the step after a gap, in one process with torch (``benches/inloop.py``)."""
    d = load(name)
    m = d["meta"]
    rows = d["rows"]
    print(f"`{name}`: {m['cpu']}, {m['cpus']} CPUs, torch {m['torch']}\n")
    print(
        "| model | parameters (tensors) | threads | step ours ms | step torch ms | **torch/ours step** |"
        " **torch/ours iteration** | own pool: torch/pool step | pool without lingering | bit-identical |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in (r for r in rows if r["bench"] == "loop"):
        print(
            f"| {r['model']} | {r['params'] / 1e6:.1f}M ({r['tensors']}) | {r['threads']} | {r['ours_step_ms']:.2f} |"
            f" {r['torch_step_ms']:.2f} | **{r['step_torch_over_ours']:.2f}×** | **{r['iter_torch_over_ours']:.2f}×** |"
            f" {r.get('step_torch_over_pool', float('nan')):.2f}× |"
            f" {r.get('step_torch_over_pool-no-linger', float('nan')):.2f}× |"
            f" {'yes' if r['bit_identical'] else 'n/a (sparse)' if r['bit_identical'] is None else 'NO'} |"
        )
    print()
    print(
        "| elements | threads | before | ours ms | torch ms | **torch/ours** | **ours 1T / ours NT** |"
        " own pool: torch/pool | pool 1T/NT |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in (r for r in rows if r["bench"] == "gap"):
        print(
            f"| {r['elements']:,} | {r['threads']} | {r['before']} | {r['ours_ms']:.3f} | {r['torch_ms']:.3f} |"
            f" **{r['torch_over_ours']:.2f}×** | **{r['one_over_ours']:.2f}** |"
            f" {r.get('torch_over_pool', float('nan')):.2f}× | {r.get('one_over_pool', float('nan')):.2f} |"
        )
    print()


if __name__ == "__main__":
    for f in ("vs-torch-intel-spr.json", "vs-torch-intel-spr-avx2.json", "vs-torch-intel-spr-avx512.json"):
        if (HERE / f).exists():
            vs_torch(f)
    if (HERE / "report-intel-spr.json").exists():
        report("report-intel-spr.json")
    for f in ("python-bench-intel-spr.json", "python-crossing-intel-spr.json"):
        if (HERE / f).exists():
            python_bench(f)
    for f in (
        "embedding-vs-fbgemm-intel-spr.json",
        "embedding-vs-fbgemm-intel-spr-before-stream.json",
        "embedding-vs-fbgemm-intel-spr-serial-grouping.json",
        "embedding-vs-fbgemm-intel-spr-no-prepass.json",
        "embedding-vs-fbgemm-intel-spr-before-sort.json",
    ):
        if (HERE / f).exists():
            embedding(f)
    if (HERE / "embedding-vs-fbgemm-amd-zen4.txt").exists():
        embedding_text("embedding-vs-fbgemm-amd-zen4.txt")
    if (HERE / "inloop-intel-spr.json").exists():
        inloop("inloop-intel-spr.json")
