//! Helpers shared by the kernel test files (and, through `#[path]`, by the crate's tests).

use adagrad_kernels::{Isa, Kernels};

/// The kernels of `isa`, or `None` after reporting that the test is skipped — a failure when
/// `ADAGRAD_REQUIRE_ISA` names the path. Skips are printed and appended to `target/tmp/skipped-isa.txt`, which
/// `.ci/run` shows after the tests (cargo hides the output of passing tests).
pub fn kernels_or_skip(isa: Isa, test: &str) -> Option<Kernels> {
    match Kernels::new(isa) {
        Ok(k) => Some(k),
        Err(e) => {
            let required = std::env::var("ADAGRAD_REQUIRE_ISA").unwrap_or_default();
            if required
                .split(',')
                .any(|r| r.trim().eq_ignore_ascii_case(isa.name()))
            {
                panic!("{test}: ADAGRAD_REQUIRE_ISA names {isa}, but: {e}");
            }
            let line = format!("{test}: skipped {isa}: {e}");
            println!("{line}");
            eprintln!("{line}");
            let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped-isa.txt");
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                use std::io::Write;
                let _ = writeln!(f, "{line}");
            }
            None
        }
    }
}

/// Every path this CPU runs, for tests that loop over paths; a path `ADAGRAD_REQUIRE_ISA` names but the CPU lacks
/// fails the test, and every other missing path is reported as skipped.
#[allow(dead_code)]
pub fn paths(test: &str) -> Vec<Isa> {
    Isa::ALL
        .into_iter()
        .filter(|&isa| kernels_or_skip(isa, test).is_some())
        .collect()
}

/// Equal f32 slices, element by element: the same bits, or both NaN (which NaN an operation on NaNs yields is left
/// open: the compiler may swap the operands of a commutative one).
#[allow(dead_code)]
pub fn same_f32(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
}
