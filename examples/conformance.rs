//! Replays golden trajectory files through the public API, recognising each file by its schema.
//!
//! `cargo run --release --example conformance -- FILE_OR_DIR...` (default: tests/golden and tests/golden-sparse).
//! Dense PyTorch files: per step, mismatching counts and worst differences against the three trajectories; a file
//! fails if any bit differs from `torch_fused_true_trajectory` (the other two are reported; tests/golden.rs holds
//! them to tolerances). Embedding files (FBGEMM, torch sparse): row-wise files fail on any differing bit,
//! element-wise files when outside their documented tolerance. Exits non-zero if any file fails.

#[path = "../tests/common/golden.rs"]
#[allow(dead_code)]
mod golden;
#[path = "../tests/common/golden_sparse.rs"]
mod golden_sparse;

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if args.is_empty() {
        for dir in ["/tests/golden", "/tests/golden-sparse"] {
            args.push(PathBuf::from(env!("CARGO_MANIFEST_DIR").to_owned() + dir));
        }
    }
    let files: Vec<PathBuf> = args.iter().flat_map(|a| golden::golden_files(a)).collect();
    if files.is_empty() {
        eprintln!("no golden .json files found in {args:?}");
        return ExitCode::from(2);
    }
    let mut failed = false;
    let (mut dense, mut embedding) = (0, 0);
    let mut legend = false;
    for f in &files {
        if let Some(outcome) = sparse(f) {
            failed |= !outcome;
            embedding += 1;
            continue;
        }
        dense += 1;
        let r = match golden::replay(f) {
            Ok(r) => r,
            Err(e) => {
                println!("{}: ERROR {e}", f.display());
                failed = true;
                continue;
            }
        };
        let bad = r.fused_mismatches();
        if !legend {
            legend = true;
            println!(
                "Columns, per step: values (params/state) differing from torch's fused=True trajectory, and the \
                 worst |Δ| of each; values differing from torch's default (foreach=False) path, whose sqrt is not \
                 correctly rounded, and the worst difference in machine epsilons of the value; with ε inside the \
                 root, the worst difference from the file's f64 eps-inside trajectory in epsilons (params, state).\n"
            );
        }
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
        // Only what was replayed is claimed.
        let mut said = Vec::new();
        if dense > 0 {
            said.push(format!(
                "{dense} dense file{} bit-identical to PyTorch's fused=True trajectory",
                plural(dense)
            ));
        }
        if embedding > 0 {
            said.push(format!(
                "{embedding} embedding file{} bit-identical (row-wise) or within tolerance (element-wise)",
                plural(embedding)
            ));
        }
        println!("OK: {}", said.join("; "));
        ExitCode::SUCCESS
    }
}

/// "s" after a count other than one.
fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Replays `path` if it is an embedding golden file: `Some(passed)`, else `None` (not that schema).
fn sparse(path: &std::path::Path) -> Option<bool> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    if !golden_sparse::is_sparse_golden(&v) {
        return None;
    }
    let isa = adagrad::Isa::best();
    // A file the replay cannot read or does not support fails, saying why.
    let r = match golden_sparse::replay_value(&v, isa, 2) {
        Ok(r) => r,
        Err(e) => {
            println!("{}: ERROR {e}", path.display());
            return Some(false);
        }
    };
    let verdict = match (r.judge, r.passed()) {
        (golden_sparse::Judge::Exact, true) => "bit-exact".to_string(),
        (golden_sparse::Judge::Tolerance, true) => format!(
            "within tolerance ({} eps weights, {} ulp state)",
            golden_sparse::ELEMENTWISE_TOLERANCE_EPS,
            golden_sparse::ELEMENTWISE_STATE_TOLERANCE_ULPS
        ),
        (_, false) => "FAILS".to_string(),
    };
    println!(
        "{} ({}, {isa}, 2 threads, {} steps): {verdict}\n  differing weights {}/{}, states {}/{}; worst weight {:.2} eps, \
         worst state {} ulp",
        path.display(),
        r.case,
        r.steps,
        r.weight_mismatch,
        r.compared.0,
        r.state_mismatch,
        r.compared.1,
        r.worst.0,
        r.worst.1
    );
    Some(r.passed())
}
