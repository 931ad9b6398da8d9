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

fn hex_list(v: &Value, key: &str) -> Result<Vec<u32>, String> {
    v[key]
        .as_array()
        .ok_or_else(|| format!("{key} is missing or not a list"))?
        .iter()
        .map(|x| {
            x.as_str()
                .and_then(|s| u32::from_str_radix(s, 16).ok())
                .ok_or_else(|| format!("{key} holds {x}, not a hex string"))
        })
        .collect()
}

fn ids(step: &Value, key: &str) -> Result<Vec<i64>, String> {
    step[key]
        .as_array()
        .ok_or_else(|| format!("{key} is missing or not a list"))?
        .iter()
        .map(|x| {
            x.as_i64()
                .ok_or_else(|| format!("{key} holds {x}, not an id"))
        })
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
/// share the step). A file that cannot be read, or that the replay does not support, is an error saying why.
pub fn replay(path: &Path, isa: Isa, threads: usize) -> Result<SparseReport, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    replay_value(&v, isa, threads)
}

/// [`replay`] on parsed JSON: starts from the file's initial weights and state, with its hyperparameters (`lr`,
/// `eps`, `lr_decay`, `initial_accumulator_value`, weight decay, `maximize`); never panics on what it does not
/// support (an unknown library or optimizer, a table type other than float32/float16, a missing field, lengths
/// that do not fit): it says what.
pub fn replay_value(v: &Value, isa: Isa, threads: usize) -> Result<SparseReport, String> {
    let meta = &v["meta"];
    let hp = &v["hyperparameters"];
    let case = meta["case"].as_str().unwrap_or("?").to_string();
    let count = |field: &str| {
        meta[field]
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| format!("{case}: meta.{field} is missing or not a count"))
    };
    let (rows, dim) = (count("rows")?, count("D")?);
    let optim = hp["optim"].as_str().unwrap_or("");
    let library = meta["library"].as_str().unwrap_or("");
    let (accumulator, judge) = match (library, optim) {
        ("fbgemm", "EXACT_ROWWISE_ADAGRAD") => (Accumulator::RowWise, Judge::Exact),
        ("fbgemm", "EXACT_ADAGRAD") | ("torch", _) => (Accumulator::ElementWise, Judge::Tolerance),
        other => {
            return Err(format!(
                "{case}: library/optimizer {other:?} is not supported"
            ));
        }
    };
    let f16_weights = match meta["weights_dtype"].as_str() {
        Some("float16") => true,
        Some("float32") | None => false,
        Some(other) => return Err(format!("{case}: {other} tables are not supported")),
    };
    let number = |field: &str, default: Option<f64>| {
        hp[field]
            .as_f64()
            .or(default.filter(|_| hp[field].is_null()))
            .ok_or_else(|| format!("{case}: hyperparameters.{field} is missing or not a number"))
    };
    // FBGEMM's f32 row-wise path ignores weight decay (the `_ignored` file shows it): replay what it computed.
    let wd = if accumulator == Accumulator::RowWise && !f16_weights {
        0.0
    } else {
        hp["wd"].as_f64().unwrap_or(0.0)
    };
    let decay = match hp["wd_mode"].as_str() {
        Some("DECOUPLE") => DecayMode::Decoupled,
        Some("L2") | None => DecayMode::L2,
        Some(other) => {
            return Err(format!(
                "{case}: weight decay mode {other} is not supported"
            ));
        }
    };
    let tuning = Tuning {
        parallel_threshold: 0,
        min_piece: 1,
        ..Tuning::for_cpu(&adagrad::Cpu::this())
    };
    let config = Config::default()
        .lr(number("lr", None)?)
        .eps(number("eps", None)?)
        .lr_decay(number("lr_decay", Some(0.0))?)
        .initial_accumulator_value(number("initial_accumulator_value", Some(0.0))?)
        .weight_decay(wd)
        .maximize(hp["maximize"].as_bool().unwrap_or(false))
        .isa(isa)
        .parallelism(Parallelism::Threads(threads))
        .tuning(tuning);
    let options = TableOptions::default()
        .accumulator(accumulator)
        .decay(decay);
    let mut report = SparseReport {
        case: case.clone(),
        judge,
        steps: 0,
        weight_mismatch: 0,
        state_mismatch: 0,
        worst: (0.0, 0),
        compared: (0, 0),
    };
    let bits = hex_list(v, "initial_weights_bits").map_err(|e| format!("{case}: {e}"))?;
    if bits.len() != rows.saturating_mul(dim) {
        return Err(format!(
            "{case}: initial_weights_bits has {} values; a {rows} × {dim} table has {}",
            bits.len(),
            rows.saturating_mul(dim)
        ));
    }
    let done = if f16_weights {
        let w: Vec<f16> = bits.into_iter().map(|b| f16::from_bits(b as u16)).collect();
        run(
            v,
            config,
            rows,
            dim,
            options,
            w,
            |x: f16| x.to_f32(),
            &mut report,
        )
    } else {
        run(
            v,
            config,
            rows,
            dim,
            options,
            f32s(&bits),
            |x: f32| x,
            &mut report,
        )
    };
    done.map_err(|e| format!("{}: {e}", report.case))?;
    Ok(report)
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
) -> Result<(), String> {
    let mut opt = EmbeddingAdagrad::<W>::new(config, rows, dim, options)
        .map_err(|e| format!("the optimizer cannot be built: {e}"))?;
    // The library's starting state (zero, or its initial_accumulator_value), whatever it is.
    let initial_state = f32s(&hex_list(v, "initial_state_bits")?);
    if initial_state.len() != opt.state().len() {
        return Err(format!(
            "initial_state_bits has {} values; this table's state has {}",
            initial_state.len(),
            opt.state().len()
        ));
    }
    opt.state_mut().copy_from_slice(&initial_state);
    let coalesced_by_library = report.judge == Judge::Tolerance;
    let mut library_before: Option<(Vec<u32>, Vec<f32>)> = None;
    let steps = v["steps"]
        .as_array()
        .ok_or("steps is missing or not a list")?;
    for (i, step) in steps.iter().enumerate() {
        let here = |e: String| format!("step {i}: {e}");
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
        let (id_key, grad_key) = if coalesced_by_library {
            ("coalesced_rows", "coalesced_grads_bits")
        } else {
            ("indices", "grads_bits")
        };
        let ids = ids(step, id_key).map_err(here)?;
        let grads = f32s(&hex_list(step, grad_key).map_err(here)?);
        let lookups = if coalesced_by_library {
            Lookups::Coalesced {
                ids: &ids,
                grads: &grads,
            }
        } else {
            Lookups::Rows {
                ids: &ids,
                grads: &grads,
            }
        };
        opt.step(&mut table, lookups)
            .map_err(|e| here(format!("the step refused the file's lookups: {e}")))?;
        report.steps += 1;
        let want_w = hex_list(step, "weights_bits").map_err(here)?;
        let want_s = f32s(&hex_list(step, "state_bits").map_err(here)?);
        if want_w.len() != table.len() || want_s.len() != opt.state().len() {
            return Err(here(format!(
                "{} weights and {} state values; the table has {} and {}",
                want_w.len(),
                want_s.len(),
                table.len(),
                opt.state().len()
            )));
        }
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
    Ok(())
}
