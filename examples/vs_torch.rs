//! The crate against PyTorch's fused CPU Adagrad, side by side on this machine.
//!
//! `cargo run --release --example vs_torch -- [--python PATH] [--rounds R] [--secs S] [--json PATH] [--configs LIST]`
//! (`-- --help` lists them).
//!
//! Times `Adagrad::step` (Exact, the best path, this CPU's tuning) in this process and `torch._fused_adagrad_` (the
//! kernel behind `torch.optim.Adagrad(fused=True)`, called bare) in a long-lived Python worker
//! (`benches/torch_worker.py`), alternating in short rounds so that a shared machine's noise falls on both alike;
//! prints, per configuration, the median over rounds of torch_time / crate_time (> 1: the crate is faster) with its
//! range. Not a test and not in CI: it needs a Python with torch (`--python`, else `$TORCH_PYTHON`, else
//! `.venv/bin/python`). `ADAGRAD_ISA` and `ADAGRAD_TUNE` apply to the crate's side as usual.
//!
//! A configuration is `dtype:elements:tensors:threads` (`tensors` > 1: that many tensors of `elements` each, one
//! multi-tensor step; torch gets the same list).

use adagrad::{Adagrad, Config, Cpu, Float, Parallelism};
use adagrad_ceiling::{cpu_name, median_secs};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

#[derive(Clone)]
struct Cfg {
    dtype: String,
    n: usize,
    k: usize,
    threads: usize,
}

fn default_configs() -> Vec<Cfg> {
    let mut v = Vec::new();
    for dtype in ["float32", "float64"] {
        for (n, t) in [
            (4096, 1),
            (4096, 2),
            (65536, 1),
            (65536, 2),
            (1 << 20, 1),
            (1 << 20, 2),
            (1 << 24, 1),
            (1 << 24, 2),
        ] {
            v.push(Cfg {
                dtype: dtype.into(),
                n,
                k: 1,
                threads: t,
            });
        }
    }
    v.push(Cfg {
        dtype: "float32".into(),
        n: 1024,
        k: 1024,
        threads: 2,
    });
    v
}

/// The dtypes a configuration may name.
const DTYPES: [&str; 2] = ["float32", "float64"];

fn parse_configs(s: &str) -> Result<Vec<Cfg>, String> {
    s.split(',')
        .map(|c| {
            let f: Vec<&str> = c.split(':').collect();
            let num = |x: &str| {
                x.parse::<usize>()
                    .map_err(|_| format!("bad number in {c:?}"))
            };
            match f.as_slice() {
                [d @ ("float32" | "float64"), n, k, t] => Ok(Cfg {
                    dtype: d.to_string(),
                    n: num(n)?,
                    k: num(k)?.max(1),
                    threads: num(t)?.max(1),
                }),
                [d, _, _, _] => Err(format!(
                    "{c:?}: dtype {d:?} is not one of {}",
                    DTYPES.join(", ")
                )),
                _ => Err(format!(
                    "{c:?} is not dtype:elements:tensors:threads (dtype: {})",
                    DTYPES.join(", ")
                )),
            }
        })
        .collect()
}

/// The crate's side of one configuration: an optimizer and its buffers, timed on request.
struct Ours<T: Float> {
    opt: Adagrad<T>,
    p: Vec<T>,
    g: Vec<T>,
    n: usize,
}

impl<T: Float> Ours<T> {
    fn new(c: &Cfg) -> Ours<T> {
        let par = if c.threads == 1 {
            Parallelism::Sequential
        } else {
            Parallelism::Threads(c.threads)
        };
        let cfg = Config::default()
            .initial_accumulator_value(0.1)
            .parallelism(par);
        let total = c.n * c.k;
        let rnd = |i: usize, salt: u64| {
            let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt;
            x ^= x >> 31;
            x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x ^= x >> 29;
            (x >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        Ours {
            opt: Adagrad::<T>::new(cfg, &vec![c.n; c.k]).expect("valid configuration"),
            p: (0..total).map(|i| T::from_f64(rnd(i, 1))).collect(),
            g: (0..total).map(|i| T::from_f64(rnd(i, 2) * 1e-3)).collect(),
            n: c.n,
        }
    }

    /// Median ns per element over 3 samples of about `secs` seconds in all.
    fn measure(&mut self, secs: f64) -> f64 {
        let n = self.n;
        let mut ps: Vec<&mut [T]> = self.p.chunks_mut(n).collect();
        let gs: Vec<&[T]> = self.g.chunks(n).collect();
        let opt = &mut self.opt;
        let mut step = || {
            opt.step(&mut ps, &gs).expect("lengths match");
        };
        median_secs(&mut step, 3, secs / 3.0) / self.p.len() as f64 * 1e9
    }
}

enum Side {
    F32(Ours<f32>),
    F64(Ours<f64>),
}

impl Side {
    fn measure(&mut self, secs: f64) -> f64 {
        match self {
            Side::F32(o) => o.measure(secs),
            Side::F64(o) => o.measure(secs),
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The crate against PyTorch's fused CPU Adagrad (`torch._fused_adagrad_`), in alternating rounds on this machine.
#[derive(clap::Parser)]
#[command(name = "vs_torch")]
struct Args {
    /// A Python with torch (default: $TORCH_PYTHON, else .venv/bin/python).
    #[arg(long)]
    python: Option<String>,
    /// Rounds per configuration (each times both sides); the median of the per-round ratios is reported.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Seconds each side is timed for in a round.
    #[arg(long, default_value_t = 0.2, value_parser = positive_secs)]
    secs: f64,
    /// Also write the results to this JSON file.
    #[arg(long)]
    json: Option<String>,
    /// Configurations, comma-separated: dtype:elements:tensors:threads, dtype float32 or float64 (tensors > 1:
    /// that many tensors of `elements` each in one multi-tensor step). Default: float32 and float64 at 4,096,
    /// 65,536, 1M and 16M elements on 1 and 2 threads, and 1,024 float32 tensors of 1,024 on 2 threads.
    #[arg(long, value_parser = |s: &str| parse_configs(s).map(Configs))]
    configs: Option<Configs>,
}

/// The `--configs` list, as one value.
#[derive(Clone)]
struct Configs(Vec<Cfg>);

/// A time in seconds, finite and above zero.
fn positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

fn main() {
    use clap::Parser;
    let a = Args::parse();
    let python = a
        .python
        .or_else(|| std::env::var("TORCH_PYTHON").ok())
        .unwrap_or_else(|| ".venv/bin/python".into());
    let (rounds, secs, json) = (a.rounds as usize, a.secs, a.json);
    let configs = a.configs.map_or_else(default_configs, |c| c.0);
    let worker = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/torch_worker.py");
    let mut child = match Command::new(&python)
        .arg(worker)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "vs_torch: cannot start {python} {worker}: {e} (give a Python with torch: --python)"
            );
            std::process::exit(2);
        }
    };
    let mut to = child.stdin.take().expect("piped");
    let mut from = BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    if from.read_line(&mut line).unwrap_or(0) == 0 {
        eprintln!("vs_torch: {python} could not import torch");
        std::process::exit(2);
    }
    let torch_version = line.trim().to_string();
    let mut ask = move |c: &Cfg, secs: f64| -> f64 {
        writeln!(to, "{} {} {} {} {secs}", c.dtype, c.n, c.k, c.threads).expect("worker alive");
        to.flush().expect("worker alive");
        let mut l = String::new();
        from.read_line(&mut l).expect("worker alive");
        l.trim().parse().expect("worker answers a number")
    };
    let cpu = cpu_name();
    let probe = Adagrad::<f32>::new(Config::default(), &[0]).expect("valid");
    println!(
        "CPU: {cpu} ({}); crate path {} ({}); torch {torch_version}; {rounds} rounds",
        Cpu::this(),
        probe.isa(),
        probe.tuning()
    );
    let mut rows = Vec::new();
    for c in &configs {
        let mut ours = if c.dtype == "float32" {
            Side::F32(Ours::new(c))
        } else {
            Side::F64(Ours::new(c))
        };
        let (mut tt, mut oo, mut rr) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..rounds {
            let (t, o) = if r % 2 == 0 {
                let o = ours.measure(secs);
                (ask(c, secs), o)
            } else {
                let t = ask(c, secs);
                (t, ours.measure(secs))
            };
            tt.push(t);
            oo.push(o);
            rr.push(t / o);
        }
        let (lo, hi) = (
            rr.iter().copied().fold(f64::INFINITY, f64::min),
            rr.iter().copied().fold(0.0, f64::max),
        );
        let (t, o, ratio) = (median(tt), median(oo), median(rr));
        println!(
            "{:8} n={:>9} x{:<5} {}T  torch {t:7.3}  crate {o:7.3} ns/el  torch/crate {ratio:5.2}x ({lo:.2}..{hi:.2})",
            c.dtype, c.n, c.k, c.threads
        );
        rows.push(serde_json::json!({
            "dtype": c.dtype, "elements": c.n, "tensors": c.k, "threads": c.threads,
            "torch_ns_per_elem": t, "crate_ns_per_elem": o, "ratio": ratio, "ratio_min": lo, "ratio_max": hi,
        }));
    }
    if let Some(path) = json {
        let doc = serde_json::json!({
            "schema": "adagrad-vs-torch/v1",
            "cpu": cpu,
            "cpuid": Cpu::this().to_string(),
            "crate_path": probe.isa().name(),
            "forced_isa": std::env::var("ADAGRAD_ISA").ok(),
            "tuning": probe.tuning().to_string(),
            "torch": torch_version,
            "rounds": rounds,
            "rows": rows,
        });
        match std::fs::write(&path, serde_json::to_string_pretty(&doc).expect("json")) {
            Ok(()) => println!("JSON: {path}"),
            Err(e) => eprintln!("vs_torch: cannot write {path}: {e}"),
        }
    }
    // Closing the worker's stdin (owned by `ask`) ends it.
    drop(ask);
    let _ = child.wait();
}
