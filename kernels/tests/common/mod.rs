//! Helpers shared by the kernel test files.

use adagrad_kernels::{Isa, Kernels};

/// The kernels of `isa`, or `None` after printing that the test is skipped (a failure when
/// `ADAGRAD_REQUIRE_ISA` names it).
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
            eprintln!("{test}: skipped: {e}");
            None
        }
    }
}
