//! Replays PyTorch golden trajectory files through the public API.
//!
//! `cargo run --release --example conformance -- FILE_OR_DIR...` (default: tests/golden). Prints, per file and
//! step, mismatching counts and worst differences against the three trajectories; exits non-zero if any bit
//! differs from `torch_fused_true_trajectory` (the other two are reported; tests/golden.rs holds them to
//! tolerances).

#[path = "../tests/common/golden.rs"]
#[allow(dead_code)]
mod golden;

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if args.is_empty() {
        args.push(PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/golden"
        )));
    }
    let files: Vec<PathBuf> = args.iter().flat_map(|a| golden::golden_files(a)).collect();
    if files.is_empty() {
        eprintln!("no golden .json files found in {args:?}");
        return ExitCode::from(2);
    }
    let mut failed = false;
    for f in &files {
        let r = match golden::replay(f) {
            Ok(r) => r,
            Err(e) => {
                println!("{}: ERROR {e}", f.display());
                failed = true;
                continue;
            }
        };
        let bad = r.fused_mismatches();
        println!(
            "{} ({} {}, n = {}, {} steps): {}",
            f.display(),
            r.set,
            r.dtype,
            r.n,
            r.steps.len(),
            if bad == 0 {
                "fused: bit-exact".to_string()
            } else {
                format!("fused: {bad} values DIFFER")
            }
        );
        println!(
            "  {:>4}  {:>14} {:>22}  {:>15}  {:>24}",
            "step",
            "fused p/s diff",
            "fused worst |Δ| p/s",
            "default-path",
            "eps-inside worst (eps)"
        );
        for s in &r.steps {
            println!(
                "  {:>4}  {:>6}/{:<7} {:>10.3e}/{:<11.3e}  {:>3} {:>7.2} eps  p {:>6.2}  s {:>6.2}",
                s.step,
                s.fused_mismatch.0,
                s.fused_mismatch.1,
                s.fused_worst.0,
                s.fused_worst.1,
                s.foreach_mismatch,
                s.foreach_worst_eps,
                s.inside_worst_eps.0,
                s.inside_worst_eps.1
            );
        }
        failed |= bad > 0;
    }
    if failed {
        println!("FAIL: some values differ from PyTorch's fused=True trajectory");
        ExitCode::FAILURE
    } else {
        println!(
            "OK: {} files bit-identical to PyTorch's fused=True trajectory",
            files.len()
        );
        ExitCode::SUCCESS
    }
}
