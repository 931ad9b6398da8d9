//! The embedding step's time on a fixed set of workloads, printed as one JSON object: what `scripts/ab.py` runs
//! from two builds in alternation to compare them (a change's before and after) in interleaved rounds.
//!
//! `cargo run --release --example embedding_step -- [--steps N] [--threads 1,2] [--quick]`
//!
//! Workloads: a 1,000,000-row f32 table, D = 64 and 128, 16,384 and 262,144 lookups (one gradient row each),
//! Zipf(1.05) and uniform ids (drawn as `../shared/bench/fbgemm` draws them, fixed seeds), row-wise and
//! element-wise accumulators, on each thread count. Each timed step is one [`EmbeddingAdagrad::step`] (grouping and
//! row updates) as a training loop finds it: the same step run once just before (a forward pass touches the same
//! rows), then the caches flushed by writing twice the largest cache. The median of `--steps` such steps is
//! printed per workload, in seconds.

use adagrad::embedding::{Accumulator, EmbeddingAdagrad, Lookups, TableOptions};
use adagrad::{Config, Parallelism};
use adagrad_ceiling::cpu_name;
use adagrad_ceiling::workload::{embedding_ids, llc_bytes};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::time::Instant;

const ROWS: usize = 1_000_000;

fn usage() -> ! {
    eprintln!("usage: embedding_step [--steps N] [--threads 1,2] [--quick]");
    std::process::exit(2)
}

fn main() {
    let mut steps = 5usize;
    let mut threads = vec![1usize, 2];
    let mut quick = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--steps" => {
                steps = match args.next().and_then(|s| s.parse().ok()) {
                    Some(n) if n > 0 => n,
                    _ => usage(),
                }
            }
            "--threads" => {
                let list = args.next().unwrap_or_else(|| usage());
                threads = list
                    .split(',')
                    .map(|t| match t.parse::<usize>() {
                        Ok(n) if n > 0 => n,
                        _ => usage(),
                    })
                    .collect();
            }
            "--quick" => quick = true,
            _ => usage(),
        }
    }
    let dims: &[usize] = if quick { &[64] } else { &[64, 128] };
    let lookups: &[usize] = if quick { &[16_384] } else { &[16_384, 262_144] };
    let mut flush = vec![0u8; 2 * llc_bytes()];
    let mut times = BTreeMap::new();
    for &dim in dims {
        let mut table = vec![0.5f32; ROWS * dim];
        for &b in lookups {
            for (alpha, dist) in [(1.05, "zipf1.05"), (0.0, "uniform")] {
                let mut rng = StdRng::seed_from_u64((dim * 31 + b) as u64);
                let ids = embedding_ids(&mut rng, b, ROWS, alpha);
                let grads: Vec<f32> = (0..b * dim).map(|_| rng.gen_range(-0.01..0.01)).collect();
                for accumulator in [Accumulator::RowWise, Accumulator::ElementWise] {
                    for &t in &threads {
                        let par = if t == 1 {
                            Parallelism::Sequential
                        } else {
                            Parallelism::Threads(t)
                        };
                        let config = Config::default().lr(0.01).parallelism(par);
                        let options = TableOptions::default().accumulator(accumulator);
                        let mut opt = EmbeddingAdagrad::<f32>::new(config, ROWS, dim, options)
                            .expect("valid configuration");
                        let mut run = |table: &mut [f32]| {
                            let lookups = Lookups::Rows {
                                ids: &ids,
                                grads: &grads,
                            };
                            opt.step(table, lookups).expect("valid lookups");
                        };
                        let mut samples = Vec::with_capacity(steps);
                        for _ in 0..steps {
                            run(&mut table);
                            for line in flush.iter_mut().step_by(64) {
                                *line = line.wrapping_add(1);
                            }
                            std::hint::black_box(&flush);
                            let t0 = Instant::now();
                            run(&mut table);
                            samples.push(t0.elapsed().as_secs_f64());
                        }
                        samples.sort_by(f64::total_cmp);
                        let acc = match accumulator {
                            Accumulator::RowWise => "rowwise",
                            Accumulator::ElementWise => "elementwise",
                        };
                        times.insert(
                            format!("{acc} D={dim} B={b} {dist} threads={t}"),
                            samples[samples.len() / 2],
                        );
                    }
                }
            }
        }
    }
    let out = serde_json::json!({ "cpu": cpu_name(), "unit": "seconds", "times": times });
    println!("{out}");
}
