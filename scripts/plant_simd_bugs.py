"""Plant classic SIMD bugs in the per-ISA files, one at a time, and check that the test suite catches each.

cargo-mutants leaves ``unsafe`` code alone, so it lists no mutants in ``kernels/src/arch/``; this harness covers
them. Each planting is a textual substitution in one file; the kernel tests are run against the planted tree and
must fail; the file is restored afterwards whatever happens. Usage, from the repository root::

    python3 scripts/plant_simd_bugs.py [--out docs/results/planted-simd-bugs.txt]

It needs the CPU to have the planted path (AVX-512 plantings are reported as not run on a CPU without it).
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

# (name, file, original text, planted text, ISA the bug lives in)
PLANTINGS: list[tuple[str, str, str, str, str]] = [
    (
        "avx512 bf16 copy-out rounds ties away from zero",
        "kernels/src/arch/avx512.rs",
        "_mm512_add_epi32(b, _mm512_set1_epi32(0x7FFF)),\n                        lsb,",
        (
            "_mm512_add_epi32(b, _mm512_set1_epi32(0x8000)),\n"
            "                        _mm512_and_si512(lsb, _mm512_setzero_si512()),"
        ),
        "avx512",
    ),
    (
        "avx2 bf16 copy-out rounds ties away from zero",
        "kernels/src/arch/avx2.rs",
        "_mm256_add_epi32(b, _mm256_set1_epi32(0x7FFF)),\n                        lsb,",
        (
            "_mm256_add_epi32(b, _mm256_set1_epi32(0x8000)),\n"
            "                        _mm256_and_si256(lsb, _mm256_setzero_si256()),"
        ),
        "avx2",
    ),
    (
        "avx2 lane order: bf16 copy-out halves swapped",
        "kernels/src/arch/avx2.rs",
        "_mm256_permute4x64_epi64::<0b1000>",
        "_mm256_permute4x64_epi64::<0b0010>",
        "avx2",
    ),
    (
        "avx2 sign flip with OR instead of XOR (maximize)",
        "kernels/src/arch/avx2.rs",
        "Self(unsafe { _mm256_xor_ps(self.0, b.0) })",
        "Self(unsafe { _mm256_or_ps(self.0, b.0) })",
        "avx2",
    ),
    (
        "avx2 f64 multiply-add not fused",
        "kernels/src/arch/avx2.rs",
        "Self(unsafe { _mm256_fmadd_pd(self.0, b.0, c.0) })",
        "Self(unsafe { _mm256_add_pd(_mm256_mul_pd(self.0, b.0), c.0) })",
        "avx2",
    ),
    (
        "avx512 wrong immediate: bf16 widened by a 15-bit shift",
        "kernels/src/arch/avx512.rs",
        "_mm512_slli_epi32::<16>(\n                    _mm512_cvtepu16_epi32",
        "_mm512_slli_epi32::<15>(\n                    _mm512_cvtepu16_epi32",
        "avx512",
    ),
    (
        "avx512 wrong immediate: f16 copy-out truncates",
        "kernels/src/arch/avx512.rs",
        "_mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>",
        "_mm512_cvtps_ph::<_MM_FROUND_TO_ZERO>",
        "avx512",
    ),
    (
        "avx512 Fast: estimate precision overstated (no Newton step)",
        "kernels/src/arch/avx512.rs",
        "const EST_BITS: u32 = 14;\n    const FAST_PAYS: bool = true;\n    #[inline(always)]\n    unsafe fn splat(x: f32)",
        "const EST_BITS: u32 = 24;\n    const FAST_PAYS: bool = true;\n    #[inline(always)]\n    unsafe fn splat(x: f32)",
        "avx512",
    ),
    (
        "tail: the last partial vector skipped (body ends one vector early)",
        "kernels/src/lanes.rs",
        "        if i == n {\n            return;\n        }",
        "        if i + 1 >= n {\n            return;\n        }",
        "any",
    ),
]


def has(isa: str) -> bool:
    """Whether this CPU runs the path (from /proc/cpuinfo's flags)."""
    if isa == "any":
        return True
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
        flags = next(line for line in text.splitlines() if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return False
    return {"avx2": "avx2" in flags and "fma" in flags, "avx512": "avx512f" in flags}[isa]


def run_tests() -> tuple[bool, str]:
    """Run the kernel tests; return (failed, the first failing test's name)."""
    p = subprocess.run(
        ["cargo", "test", "-q", "-p", "adagrad-kernels", "--tests", "--no-fail-fast"],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    # Failing tests are listed, one per line and indented, after the last "failures:" line.
    tail = p.stdout.rsplit("failures:", 1)[-1] if "failures:" in p.stdout else ""
    failed = [line.strip() for line in tail.splitlines() if line.startswith("    ") and " " not in line.strip()]
    return p.returncode != 0, ", ".join(sorted(set(failed))[:4])


def main() -> int:
    """Plant each bug, test, restore; print one line per planting and exit 1 if any survived."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    args = ap.parse_args()
    lines, survived = [], 0
    for name, rel, old, new, isa in PLANTINGS:
        path = ROOT / rel
        text = path.read_text()
        if text.count(old) != 1:
            lines.append(f"NOT APPLIED  {name}: the original text is not found exactly once in {rel}")
            survived += 1
            continue
        if not has(isa):
            lines.append(f"not run      {name}: this CPU lacks {isa}")
            continue
        try:
            path.write_text(text.replace(old, new))
            caught, which = run_tests()
        finally:
            path.write_text(text)
            # proptest saves the failing case of a planted bug; it is not a regression of the real code.
            for saved in (ROOT / "kernels" / "tests").glob("*.proptest-regressions"):
                saved.unlink()
        lines.append(f"{'caught  ' if caught else 'SURVIVED'}     {name}" + (f"  (by {which})" if which else ""))
        survived += not caught
        print(lines[-1], flush=True)
    if args.out:
        pathlib.Path(args.out).write_text("\n".join(lines) + "\n")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
