//! Replays an embedding-table golden file (`tests/golden-sparse/*.json`: FBGEMM 1.9.0 and torch 2.14.1
//! trajectories, see that folder's README) through [`adagrad::embedding`], and measures the result against the
//! library's bits. Shared by tests/embedding_golden.rs and examples/conformance.rs (included with `#[path]`).
//!
//! Which files must match bit for bit and which within a tolerance follows from the formulas: FBGEMM's row-wise
//! arithmetic is the crate's (f32 and f16 tables); FBGEMM's `EXACT_ADAGRAD` divides in f64 and torch's sparse path
//! uses a square root that is not correctly rounded and no FMA, so the crate's element-wise step (PyTorch's fused
//! dense arithmetic) agrees with them within [`ELEMENTWISE_TOLERANCE_ULPS`].

use adagrad::embedding::{Accumulator, EmbeddingAdagrad, Lookups, Table, TableOptions};
use adagrad::kernels::rowwise::DecayMode;
use adagrad::{Config, Isa, Parallelism, Tuning, f16};
use serde_json::Value;
use std::path::Path;

/// Weights of the element-wise files may differ from the library's by this many f32 machine epsilons (2⁻²³)
/// relative to the larger magnitude of the weight before and after the step: the update `clr·g/d` is at most that
/// large, and the formulas differ in how it is rounded (f32 vs f64 division, FMA, square root). Measured worst
/// over the stored files: see the replay report (`cargo run --release --example conformance --
/// tests/golden-sparse`).
pub const ELEMENTWISE_TOLERANCE_EPS: f64 = 4.0;
/// States may differ by this many units in the last place (torch's sparse path squares without FMA).
pub const ELEMENTWISE_STATE_TOLERANCE_ULPS: u64 = 1;

/// How a file is judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Judge {
    /// Every bit of weights and state.
    Exact,
    /// Within the element-wise tolerances.
    Tolerance,
}

/// The outcome of one replay.
#[derive(Clone, Debug)]
pub struct SparseReport {
    pub case: String,
    pub judge: Judge,
    pub steps: usize,
    /// Weight and state elements whose bits differ, over all steps.
    pub weight_mismatch: usize,
    pub state_mismatch: usize,
    /// Worst weight difference in f32 epsilons relative to max(|before|, |after|) (see
    /// [`ELEMENTWISE_TOLERANCE_EPS`]); worst state difference in units in the last place.
    pub worst: (f64, u64),
    /// Elements compared (weights, state).
    pub compared: (usize, usize),
}

impl SparseReport {
    /// Whether the replay meets its judge.
    pub fn passed(&self) -> bool {
        match self.judge {
            Judge::Exact => self.weight_mismatch == 0 && self.state_mismatch == 0,
            Judge::Tolerance => {
                self.worst.0 <= ELEMENTWISE_TOLERANCE_EPS
                    && self.worst.1 <= ELEMENTWISE_STATE_TOLERANCE_ULPS
            }
        }
    }
}

/// Whether `v` is an embedding golden file (has the sparse schema's fields).
#[allow(dead_code)]
pub fn is_sparse_golden(v: &Value) -> bool {
    v.get("meta").and_then(|m| m.get("rows")).is_some() && v.get("steps").is_some()
}

fn hex_list(v: &Value, key: &str) -> Vec<u32> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} missing"))
        .iter()
        .map(|x| u32::from_str_radix(x.as_str().expect("hex string"), 16).expect("hex"))
        .collect()
}

fn f32s(bits: &[u32]) -> Vec<f32> {
    bits.iter().map(|&b| f32::from_bits(b)).collect()
}

fn ulps32(a: f32, b: f32) -> u64 {
    let key = |x: f32| {
        let b = x.to_bits() as i64;
        if b < 0x8000_0000 { b } else { 0x8000_0000 - b }
    };
    key(a).abs_diff(key(b))
}

#[allow(dead_code)]
/// Replays `path` on `isa` with `threads` threads (pieces as small as one row, so that several threads really
/// share the step). Panics on a malformed file.
pub fn replay(path: &Path, isa: Isa, threads: usize) -> SparseReport {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: Value = serde_json::from_str(&text).expect("json");
    replay_value(&v, isa, threads)
}

/// [`replay`] on parsed JSON.
pub fn replay_value(v: &Value, isa: Isa, threads: usize) -> SparseReport {
    let meta = &v["meta"];
    let hp = &v["hyperparameters"];
    let case = meta["case"].as_str().unwrap_or("?").to_string();
    let rows = meta["rows"].as_u64().expect("rows") as usize;
    let dim = meta["D"].as_u64().expect("D") as usize;
    let optim = hp["optim"].as_str().unwrap_or("");
    let library = meta["library"].as_str().unwrap_or("");
    let (accumulator, judge) = match (library, optim) {
        ("fbgemm", "EXACT_ROWWISE_ADAGRAD") => (Accumulator::RowWise, Judge::Exact),
        ("fbgemm", "EXACT_ADAGRAD") | ("torch", _) => (Accumulator::ElementWise, Judge::Tolerance),
        other => panic!("{case}: unknown library/optimizer {other:?}"),
    };
    // FBGEMM's f32 row-wise path ignores weight decay (the `_ignored` file shows it): replay what it computed.
    let f16_weights = meta["weights_dtype"].as_str() == Some("float16");
    let wd = if accumulator == Accumulator::RowWise && !f16_weights {
        0.0
    } else {
        hp["wd"].as_f64().unwrap_or(0.0)
    };
    let decay = match hp["wd_mode"].as_str() {
        Some("DECOUPLE") => DecayMode::Decoupled,
        _ => DecayMode::L2,
    };
    let tuning = Tuning {
        parallel_threshold: 0,
        min_piece: 1,
        ..Tuning::for_cpu(&adagrad::Cpu::this())
    };
    let config = Config::default()
        .lr(hp["lr"].as_f64().expect("lr"))
        .eps(hp["eps"].as_f64().expect("eps"))
        .weight_decay(wd)
        .maximize(hp["maximize"].as_bool().unwrap_or(false))
        .isa(isa)
        .parallelism(Parallelism::Threads(threads))
        .tuning(tuning);
    let options = TableOptions::default()
        .accumulator(accumulator)
        .decay(decay);
    let mut report = SparseReport {
        case,
        judge,
        steps: 0,
        weight_mismatch: 0,
        state_mismatch: 0,
        worst: (0.0, 0),
        compared: (0, 0),
    };
    if f16_weights {
        let w: Vec<f16> = hex_list(v, "initial_weights_bits")
            .into_iter()
            .map(|b| f16::from_bits(b as u16))
            .collect();
        run(
            v,
            config,
            rows,
            dim,
            options,
            w,
            |x: f16| x.to_f32(),
            &mut report,
        );
    } else {
        let w = f32s(&hex_list(v, "initial_weights_bits"));
        run(v, config, rows, dim, options, w, |x: f32| x, &mut report);
    }
    report
}

#[allow(clippy::too_many_arguments)]
fn run<W: Table>(
    v: &Value,
    config: Config,
    rows: usize,
    dim: usize,
    options: TableOptions,
    mut table: Vec<W>,
    widen: impl Fn(W) -> f32,
    report: &mut SparseReport,
) {
    let mut opt = EmbeddingAdagrad::<W>::new(config, rows, dim, options).expect("optimizer");
    let initial_state = f32s(&hex_list(v, "initial_state_bits"));
    assert!(
        initial_state.iter().all(|&x| x == 0.0),
        "{}: the replay starts from zero state",
        report.case
    );
    let coalesced_by_library = report.judge == Judge::Tolerance;
    let mut library_before: Option<(Vec<u32>, Vec<f32>)> = None;
    for step in v["steps"].as_array().expect("steps") {
        // Tolerance files: each step starts from the library's previous weights and state, so that what is
        // measured is one step's formula difference, not a drifted trajectory.
        if let Some((w, st)) = library_before.take()
            && coalesced_by_library
        {
            for (t, b) in table.iter_mut().zip(&w) {
                *t = bytemuck::cast::<u32, W>(*b);
            }
            opt.state_mut().copy_from_slice(&st);
        }
        let before: Vec<f32> = table.iter().map(|&x| widen(x)).collect();
        // torch's coalesce order is not stable: feed the library's own coalesced rows where its sum is not the
        // crate's (element-wise files), the lookups themselves elsewhere.
        if coalesced_by_library {
            let ids: Vec<i64> = step["coalesced_rows"]
                .as_array()
                .expect("coalesced_rows")
                .iter()
                .map(|x| x.as_i64().expect("id"))
                .collect();
            let grads = f32s(&hex_list(step, "coalesced_grads_bits"));
            opt.step(
                &mut table,
                Lookups::Coalesced {
                    ids: &ids,
                    grads: &grads,
                },
            )
            .expect("step");
        } else {
            let ids: Vec<i64> = step["indices"]
                .as_array()
                .expect("indices")
                .iter()
                .map(|x| x.as_i64().expect("id"))
                .collect();
            let grads = f32s(&hex_list(step, "grads_bits"));
            opt.step(
                &mut table,
                Lookups::Rows {
                    ids: &ids,
                    grads: &grads,
                },
            )
            .expect("step");
        }
        report.steps += 1;
        let want_w = hex_list(step, "weights_bits");
        for ((got, want), before) in table.iter().zip(&want_w).zip(&before) {
            let got = widen(*got);
            let want = if size_of::<W>() == 2 {
                f16::from_bits(*want as u16).to_f32()
            } else {
                f32::from_bits(*want)
            };
            report.compared.0 += 1;
            if got.to_bits() != want.to_bits() {
                report.weight_mismatch += 1;
                let scale = f64::from(before.abs().max(want.abs())) * f64::from(f32::EPSILON);
                let e = (f64::from(got) - f64::from(want)).abs() / scale;
                report.worst.0 = report
                    .worst
                    .0
                    .max(if e.is_nan() { f64::INFINITY } else { e });
            }
        }
        let want_s = f32s(&hex_list(step, "state_bits"));
        for (got, want) in opt.state().iter().zip(&want_s) {
            report.compared.1 += 1;
            if got.to_bits() != want.to_bits() {
                report.state_mismatch += 1;
                report.worst.1 = report.worst.1.max(ulps32(*got, *want));
            }
        }
        if size_of::<W>() == 4 {
            library_before = Some((want_w, want_s));
        }
    }
}
