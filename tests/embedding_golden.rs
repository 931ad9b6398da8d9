//! FBGEMM 1.9.0 and torch 2.14.1 embedding-table trajectories (tests/golden-sparse), replayed on every path and on
//! 1–3 threads: row-wise files bit for bit, element-wise files within the documented tolerance.

#[path = "common/golden_sparse.rs"]
mod golden_sparse;
#[path = "../kernels/tests/common/mod.rs"]
mod kernels_common;

use adagrad::Isa;
use golden_sparse::{Judge, replay, replay_value};
use std::path::Path;

const FILES: [(&str, Judge); 5] = [
    ("fbgemm_exact_rowwise_adagrad_d16.json", Judge::Exact),
    (
        "fbgemm_exact_rowwise_adagrad_d16_wdL2_ignored.json",
        Judge::Exact,
    ),
    (
        "fbgemm_exact_rowwise_adagrad_d16_fp16w_wdL2.json",
        Judge::Exact,
    ),
    ("fbgemm_exact_adagrad_d16.json", Judge::Tolerance),
    ("torch_sparse_adagrad_d16.json", Judge::Tolerance),
];

#[test]
fn golden_sparse_files_replay_on_every_path_and_thread_count() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden-sparse");
    for isa in Isa::ALL {
        if kernels_common::kernels_or_skip(isa, "golden_sparse_files_replay").is_none() {
            continue;
        }
        for threads in 1..=3 {
            for (file, judge) in FILES {
                let r = replay(&dir.join(file), isa, threads);
                println!("{isa} t{threads} {r:?}");
                assert_eq!(r.judge, judge, "{file}");
                assert_eq!(r.steps, 5, "{file}");
                assert!(r.passed(), "{isa} threads {threads}: {r:?}");
            }
        }
    }
}

/// The judges fail on a planted difference: one flipped weight bit in a row-wise file, and an element-wise file's
/// weight moved by 64 epsilons.
#[test]
fn judges_catch_planted_differences() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden-sparse");
    let load = |f: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap()
    };
    let mut v = load("fbgemm_exact_rowwise_adagrad_d16.json");
    let cell = &mut v["steps"][4]["weights_bits"][17];
    let b = u32::from_str_radix(cell.as_str().unwrap(), 16).unwrap() ^ 1;
    *cell = format!("{b:08x}").into();
    let r = replay_value(&v, Isa::Scalar, 1);
    assert!(!r.passed() && r.weight_mismatch == 1, "{r:?}");
    let mut v = load("fbgemm_exact_adagrad_d16.json");
    let cell = &mut v["steps"][2]["weights_bits"][40];
    let x = f32::from_bits(u32::from_str_radix(cell.as_str().unwrap(), 16).unwrap());
    *cell = format!("{:08x}", (x * (1.0 + 64.0 * f32::EPSILON)).to_bits()).into();
    let r = replay_value(&v, Isa::Scalar, 1);
    assert!(!r.passed() && r.worst.0 > 8.0, "{r:?}");
}
