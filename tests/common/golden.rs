//! Replays a PyTorch golden trajectory file (schema `adagrad-golden/v1`, see tests/golden/README.md) through the
//! public API and measures it against the file's three trajectories. Shared by tests/golden.rs and
//! examples/conformance.rs (included with `#[path]`).

use adagrad::{Adagrad, Config, EpsPlacement, Float, Parallelism};
use serde_json::Value;
use std::path::Path;

/// Tolerances the tests hold the non-fused trajectories to, in machine epsilons of the parameter type.
pub const FOREACH_TOLERANCE_EPS: f64 = 4.0;
/// Tolerance against `eps_inside_sqrt_f64`, in machine epsilons of the parameter type.
pub const INSIDE_TOLERANCE_EPS: f64 = 8.0;

/// How one step compares.
#[derive(Clone, Debug, Default)]
pub struct StepReport {
    pub step: usize,
    /// Elements whose bits differ from `torch_fused_true_trajectory` (params, state).
    pub fused_mismatch: (usize, usize),
    /// Worst |difference| against the fused trajectory (params, state).
    pub fused_worst: (f64, f64),
    /// Elements differing from `trajectory` (PyTorch's default path) and the worst difference, in machine
    /// epsilons relative to max(1, |value|), over params and state.
    pub foreach_mismatch: usize,
    pub foreach_worst_eps: f64,
    /// The Inside run against `eps_inside_sqrt_f64`: worst param difference in machine epsilons relative to
    /// max(1, |param|), worst state difference relative to |state|.
    pub inside_worst_eps: (f64, f64),
}

/// How one file compares.
#[derive(Clone, Debug)]
pub struct FileReport {
    pub set: String,
    pub dtype: String,
    pub n: usize,
    pub steps: Vec<StepReport>,
}

impl FileReport {
    /// Bits differing from the fused trajectory, over every step.
    pub fn fused_mismatches(&self) -> usize {
        self.steps
            .iter()
            .map(|s| s.fused_mismatch.0 + s.fused_mismatch.1)
            .sum()
    }
    pub fn foreach_worst_eps(&self) -> f64 {
        self.steps
            .iter()
            .map(|s| s.foreach_worst_eps)
            .fold(0.0, f64::max)
    }
    pub fn inside_worst_eps(&self) -> (f64, f64) {
        self.steps.iter().fold((0.0, 0.0), |a, s| {
            (a.0.max(s.inside_worst_eps.0), a.1.max(s.inside_worst_eps.1))
        })
    }
}

/// The element types a file can hold, read from their hex bits.
pub trait GoldenFloat: Float {
    fn from_hex(s: &str) -> Result<Self, String>;
    fn bits(self) -> u64;
    const EPSILON: f64;
}
impl GoldenFloat for f32 {
    fn from_hex(s: &str) -> Result<Self, String> {
        u32::from_str_radix(s, 16)
            .map(f32::from_bits)
            .map_err(|e| format!("bad f32 bits {s:?}: {e}"))
    }
    fn bits(self) -> u64 {
        self.to_bits() as u64
    }
    const EPSILON: f64 = f32::EPSILON as f64;
}
impl GoldenFloat for f64 {
    fn from_hex(s: &str) -> Result<Self, String> {
        u64::from_str_radix(s, 16)
            .map(f64::from_bits)
            .map_err(|e| format!("bad f64 bits {s:?}: {e}"))
    }
    fn bits(self) -> u64 {
        self.to_bits()
    }
    const EPSILON: f64 = f64::EPSILON;
}

fn field<'v>(v: &'v Value, key: &str) -> Result<&'v Value, String> {
    v.get(key).ok_or_else(|| format!("missing field {key:?}"))
}

fn bits_of<T: GoldenFloat>(v: &Value, key: &str) -> Result<Vec<T>, String> {
    field(v, key)?
        .as_array()
        .ok_or_else(|| format!("{key} is not an array"))?
        .iter()
        .map(|x| T::from_hex(x.as_str().ok_or_else(|| format!("{key}: not a string"))?))
        .collect()
}

fn f64_bits_of(v: &Value, key: &str) -> Result<Vec<f64>, String> {
    bits_of::<f64>(v, key)
}

fn num(v: &Value, key: &str) -> Result<f64, String> {
    field(v, key)?
        .as_f64()
        .ok_or_else(|| format!("{key} is not a number"))
}

/// Replays one file; an error describes a file that does not follow the schema.
pub fn replay(path: &Path) -> Result<FileReport, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let meta = field(&v, "meta")?;
    let dtype = field(meta, "dtype")?.as_str().unwrap_or("").to_string();
    match dtype.as_str() {
        "float32" => replay_as::<f32>(&v, dtype),
        "float64" => replay_as::<f64>(&v, dtype),
        other => Err(format!("unsupported dtype {other:?}")),
    }
}

fn config_of(v: &Value, placement: EpsPlacement) -> Result<Config, String> {
    let hp = field(v, "hyperparameters")?;
    Ok(Config::torch()
        .lr(num(hp, "lr")?)
        .lr_decay(num(hp, "lr_decay")?)
        .weight_decay(num(hp, "weight_decay")?)
        .initial_accumulator_value(num(hp, "initial_accumulator_value")?)
        .eps(num(hp, "eps")?)
        .maximize(field(hp, "maximize")?.as_bool().unwrap_or(false))
        .eps_placement(placement)
        .parallelism(Parallelism::Sequential))
}

fn replay_as<T: GoldenFloat>(v: &Value, dtype: String) -> Result<FileReport, String> {
    let meta = field(v, "meta")?;
    let set = field(meta, "set")?.as_str().unwrap_or("?").to_string();
    let p0: Vec<T> = bits_of(v, "initial_params_bits")?;
    let s0: Vec<T> = bits_of(v, "initial_state_sum_bits")?;
    let n = p0.len();
    let traj = field(v, "trajectory")?
        .as_array()
        .ok_or("trajectory is not an array")?;
    let fused = field(v, "torch_fused_true_trajectory")?
        .as_array()
        .ok_or("fused trajectory is not an array")?;
    let inside = field(field(v, "eps_inside_sqrt_f64")?, "trajectory")?
        .as_array()
        .ok_or("eps_inside trajectory missing")?;
    if traj.len() != fused.len() || traj.len() != inside.len() {
        return Err("trajectories differ in length".into());
    }
    let err = |e: adagrad::Error| e.to_string();
    let mut out = Adagrad::<T>::new(config_of(v, EpsPlacement::Outside)?, &[n]).map_err(err)?;
    let mut ins = Adagrad::<T>::new(config_of(v, EpsPlacement::Inside)?, &[n]).map_err(err)?;
    // The file's own initial state must be what the optimizer starts from.
    if out.state()[0]
        .iter()
        .zip(&s0)
        .any(|(a, b)| a.bits() != b.bits())
    {
        return Err("initial_state_sum does not equal initial_accumulator_value".into());
    }
    let (mut p_out, mut p_in) = (p0.clone(), p0);
    let mut steps = Vec::new();
    for (k, ((t, f), i)) in traj.iter().zip(fused).zip(inside).enumerate() {
        let g: Vec<T> = bits_of(t, "grad_bits")?;
        out.step_flat(&mut p_out, &g).map_err(err)?;
        ins.step_flat(&mut p_in, &g).map_err(err)?;
        let mut r = StepReport {
            step: k + 1,
            ..Default::default()
        };
        let (fp, fs): (Vec<T>, Vec<T>) =
            (bits_of(f, "params_bits")?, bits_of(f, "state_sum_bits")?);
        let (tp, ts): (Vec<T>, Vec<T>) =
            (bits_of(t, "params_bits")?, bits_of(t, "state_sum_bits")?);
        let (ip, is) = (
            f64_bits_of(i, "params_bits")?,
            f64_bits_of(i, "state_sum_bits")?,
        );
        if [
            fp.len(),
            fs.len(),
            tp.len(),
            ts.len(),
            ip.len(),
            is.len(),
            g.len(),
        ]
        .iter()
        .any(|&l| l != n)
        {
            return Err(format!("step {}: arrays are not of length {n}", k + 1));
        }
        let state = &out.state()[0];
        for j in 0..n {
            let (p, s) = (p_out[j], state[j]);
            if p.bits() != fp[j].bits() {
                r.fused_mismatch.0 += 1;
                r.fused_worst.0 = r.fused_worst.0.max((p.to_f64() - fp[j].to_f64()).abs());
            }
            if s.bits() != fs[j].bits() {
                r.fused_mismatch.1 += 1;
                r.fused_worst.1 = r.fused_worst.1.max((s.to_f64() - fs[j].to_f64()).abs());
            }
            for (ours, theirs) in [(p, tp[j]), (s, ts[j])] {
                if ours.bits() != theirs.bits() {
                    r.foreach_mismatch += 1;
                    let d =
                        (ours.to_f64() - theirs.to_f64()).abs() / theirs.to_f64().abs().max(1.0);
                    r.foreach_worst_eps = r.foreach_worst_eps.max(d / T::EPSILON);
                }
            }
            let (pi, si) = (p_in[j].to_f64(), ins.state()[0][j].to_f64());
            let dp = (pi - ip[j]).abs() / ip[j].abs().max(1.0) / T::EPSILON;
            let ds = if is[j] == 0.0 {
                (si - is[j]).abs()
            } else {
                (si - is[j]).abs() / is[j].abs()
            } / T::EPSILON;
            r.inside_worst_eps = (r.inside_worst_eps.0.max(dp), r.inside_worst_eps.1.max(ds));
        }
        steps.push(r);
    }
    Ok(FileReport {
        set,
        dtype,
        n,
        steps,
    })
}

/// The `.json` files under `path` (or `path` itself), sorted, without `index.json`.
pub fn golden_files(path: &Path) -> Vec<std::path::PathBuf> {
    let is_golden = |p: &Path| {
        p.extension().is_some_and(|e| e == "json")
            && p.file_name().is_some_and(|n| n != "index.json")
    };
    if path.is_dir() {
        let mut v: Vec<_> = std::fs::read_dir(path)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| is_golden(p))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    } else if is_golden(path) {
        vec![path.to_path_buf()]
    } else {
        Vec::new()
    }
}
