//! FBGEMM 1.9.0 and torch 2.14.1 embedding-table trajectories (tests/golden-sparse), replayed on every path and on
//! 1–3 threads: row-wise files bit for bit, element-wise files within the documented tolerance.

#[path = "common/golden_sparse.rs"]
mod golden_sparse;
#[path = "../kernels/tests/common/mod.rs"]
mod kernels_common;

use adagrad::Isa;
use golden_sparse::{Judge, replay, replay_value};
use std::path::Path;

const FILES: [(&str, Judge); 6] = [
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
    ("torch_sparse_adagrad_d16_init_decay.json", Judge::Tolerance),
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
                let r = replay(&dir.join(file), isa, threads).unwrap_or_else(|e| panic!("{e}"));
                println!("{isa} t{threads} {r:?}");
                assert_eq!(r.judge, judge, "{file}");
                assert_eq!(r.steps, 5, "{file}");
                assert!(r.passed(), "{isa} threads {threads}: {r:?}");
            }
        }
    }
}

/// A file of tests/golden-sparse, parsed.
fn load(name: &str) -> serde_json::Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden-sparse");
    serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap()
}

/// The judges fail on a planted difference: one flipped weight bit in a row-wise file, and an element-wise file's
/// weight moved by 64 epsilons.
#[test]
fn judges_catch_planted_differences() {
    let mut v = load("fbgemm_exact_rowwise_adagrad_d16.json");
    let cell = &mut v["steps"][4]["weights_bits"][17];
    let b = u32::from_str_radix(cell.as_str().unwrap(), 16).unwrap() ^ 1;
    *cell = format!("{b:08x}").into();
    let r = replay_value(&v, Isa::Scalar, 1).unwrap();
    assert!(!r.passed() && r.weight_mismatch == 1, "{r:?}");
    let mut v = load("fbgemm_exact_adagrad_d16.json");
    let cell = &mut v["steps"][2]["weights_bits"][40];
    let x = f32::from_bits(u32::from_str_radix(cell.as_str().unwrap(), 16).unwrap());
    *cell = format!("{:08x}", (x * (1.0 + 64.0 * f32::EPSILON)).to_bits()).into();
    let r = replay_value(&v, Isa::Scalar, 1).unwrap();
    assert!(!r.passed() && r.worst.0 > 8.0, "{r:?}");
}

/// The torch file that starts from a non-zero accumulator with `lr_decay` is replayed from its own initial state
/// (not zero): dropping the file's initial state, or its `lr_decay`, fails the judge.
#[test]
fn the_initial_state_and_lr_decay_come_from_the_file() {
    let v = load("torch_sparse_adagrad_d16_init_decay.json");
    assert!(replay_value(&v, Isa::Scalar, 2).unwrap().passed());
    let mut zero = v.clone();
    for cell in zero["initial_state_bits"].as_array_mut().unwrap() {
        *cell = "00000000".into();
    }
    assert!(!replay_value(&zero, Isa::Scalar, 2).unwrap().passed());
    let mut no_decay = v.clone();
    no_decay["hyperparameters"]["lr_decay"] = 0.0.into();
    assert!(!replay_value(&no_decay, Isa::Scalar, 2).unwrap().passed());
}

/// An edit of a golden file.
type Change = dyn Fn(&mut serde_json::Value);

/// Well-formed files the replay does not support, and malformed ones, are errors that say what — never a panic.
#[test]
fn unsupported_files_are_errors_not_panics() {
    let v = load("torch_sparse_adagrad_d16.json");
    let with = |f: &Change| {
        let mut w = v.clone();
        f(&mut w);
        replay_value(&w, Isa::Scalar, 1).unwrap_err()
    };
    let cases: [(&Change, &str); 9] = [
        (
            &|w| w["meta"]["library"] = "tensorflow".into(),
            "not supported",
        ),
        (
            &|w| w["meta"]["weights_dtype"] = "bfloat16".into(),
            "bfloat16 tables are not supported",
        ),
        (
            &|w| w["hyperparameters"]["wd_mode"] = "ADAMW".into(),
            "ADAMW is not supported",
        ),
        (
            &|w| w["hyperparameters"]["lr"] = "fast".into(),
            "hyperparameters.lr",
        ),
        (&|w| w["meta"]["rows"] = (-1).into(), "meta.rows"),
        (
            &|w| w["initial_state_bits"] = serde_json::json!(["0"]),
            "initial_state_bits has 1 values",
        ),
        (
            &|w| w["initial_weights_bits"][0] = "xyz".into(),
            "not a hex string",
        ),
        (
            &|w| w["steps"][1]["coalesced_rows"][0] = 1000.into(),
            "step 1: the step refused",
        ),
        (
            &|w| w["steps"][2]["state_bits"] = serde_json::json!([]),
            "step 2: ",
        ),
    ];
    for (change, expect) in cases {
        let e = with(change);
        assert!(e.contains(expect), "{e}");
    }
    let missing = std::env::temp_dir().join("adagrad-no-such-golden.json");
    assert!(replay(&missing, Isa::Scalar, 1).is_err());
}
