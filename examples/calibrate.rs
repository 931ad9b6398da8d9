//! Calibration: measures, on this CPU, the choices [`adagrad::Tuning`] makes, in interleaved rounds (every
//! variant once per round, in turn; medians of per-round ratios against the first variant), next to this CPU's
//! table entry, so that an `ADAGRAD_TUNE` setting (or a new table entry) can be chosen from them.
//!
//! `cargo run --release --example calibrate [-- --quick] [--embedding] [--sort] [--json PATH]` (`--embedding`:
//! only 5; `--sort`: only 6)
//!
//! 1. Software prefetch distance (0 = none, 2, 4, 8, 16 KiB) at 1M and 16M elements, f32 and f64, 1 thread,
//!    and 16M on all threads.
//! 2. Threads: one thread against all, with the parallel threshold at 0 and pieces down to 1,024 elements, from 8K
//!    to 256K elements (f32 and f64): where a parallel step starts to pay.
//! 3. Buffers: the crate's `AlignedBuf` (64-byte aligned, 2 MiB aligned and advised for huge pages from 2 MiB)
//!    against `Vec` for parameters, gradients and state, at 1M and 16M elements.
//!
//! 4. Vector width: AVX-512 against AVX2, Exact and Fast, one thread, 4K to 16M elements (where both exist).
//! 5. Embedding prefetch distances (`rows_ahead` / `lookups_ahead`; the table entry's first): a 1,000,000-row f32
//!    table, D = 64 and 128, 16,384 and 262,144 lookups, Zipf(1.05) and uniform ids, both accumulators, one thread
//!    and all; every step starts with the caches flushed (256 MiB written), as a training step finds its rows.
//!    Times are per lookup.
//! 6. Embedding coalescing sort (`sort`): grouping 16,384 to 1,048,576 uniform lookups of a 1,000,000-row table
//!    (`embedding::prepare`, which is the sort and its checks) on the calling thread against all threads, each
//!    step after reading twice the largest cache (the caches and the helpers as a training step finds them).
//!
//! Every variant computes the same bits (Fast: the same bits on one path); only time differs. At the end, what the
//! embedding measurements pick for this CPU is printed as `ADAGRAD_TUNE` settings (also in the JSON, `picked`).

use adagrad::embedding::{self, Accumulator, Lookups, Scratch, TableOptions};
use adagrad::{
    Adagrad, AlignedBuf, Config, Cpu, Executor, Float, Isa, Parallelism, Precision, Tuning,
};
use adagrad_ceiling::workload::{embedding_ids, llc_bytes};
use adagrad_ceiling::{cpu_name, median_secs};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Instant;

type Pass<'a> = Box<dyn FnMut() + 'a>;

/// Seconds per call of `f`: the median of 3 samples of about `secs` seconds in all.
fn time(f: &mut dyn FnMut(), secs: f64) -> f64 {
    median_secs(f, 3, secs / 3.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Interleaved rounds over `variants`; returns (name, median ns per element, median of per-round speedups over
/// the first variant, min, max).
fn ab(
    variants: &mut [(String, Pass<'_>)],
    n: usize,
    rounds: usize,
    secs: f64,
) -> Vec<(String, f64, f64, f64, f64)> {
    let mut t = vec![Vec::new(); variants.len()];
    for r in 0..rounds {
        // Alternate the order each round so that neither end of the round is favoured.
        let order: Vec<usize> = if r % 2 == 0 {
            (0..variants.len()).collect()
        } else {
            (0..variants.len()).rev().collect()
        };
        for i in order {
            t[i].push(time(&mut variants[i].1, secs));
        }
    }
    summary(variants.iter().map(|(name, _)| name), &t, n)
}

/// Per variant (times `t[i]`, one per round): its name, median ns per unit (`units` per call), and the median,
/// least and greatest per-round speedup over the first variant.
fn summary<'a>(
    names: impl Iterator<Item = &'a String>,
    t: &[Vec<f64>],
    units: usize,
) -> Vec<(String, f64, f64, f64, f64)> {
    names
        .enumerate()
        .map(|(i, name)| {
            let ratios: Vec<f64> = t[0].iter().zip(&t[i]).map(|(a, b)| a / b).collect();
            let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = ratios.iter().copied().fold(0.0, f64::max);
            (
                name.clone(),
                median(t[i].clone()) * 1e9 / units as f64,
                median(ratios),
                lo,
                hi,
            )
        })
        .collect()
}

/// One thread: the calling thread alone; more: the crate's own pool of that many.
fn parallelism(threads: usize) -> Parallelism {
    if threads == 1 {
        Parallelism::Sequential
    } else {
        Parallelism::Threads(threads)
    }
}

/// Buffers of one size: parameters, gradients, state.
fn arrays<T: Float>(n: usize) -> (Vec<T>, Vec<T>, Vec<T>) {
    (
        (0..n)
            .map(|i| T::from_f64(0.5 + (i % 13) as f64 * 0.01))
            .collect(),
        (0..n)
            .map(|i| T::from_f64((i % 97) as f64 * 1e-3 - 0.048))
            .collect(),
        vec![T::from_f64(0.1); n],
    )
}

struct Out {
    lines: Vec<String>,
    json: Vec<serde_json::Value>,
}

impl Out {
    fn section(
        &mut self,
        experiment: &str,
        dtype: &str,
        n: usize,
        threads: usize,
        rows: &[(String, f64, f64, f64, f64)],
    ) {
        for (name, ns, ratio, lo, hi) in rows {
            let line = format!(
                "{experiment:<9} {dtype:<4} n={n:>9} thr={threads}  {name:<22} {ns:>7.3} ns/el  vs first {ratio:>5.2}x ({lo:.2}..{hi:.2})"
            );
            println!("{line}");
            self.lines.push(line);
            self.json.push(serde_json::json!({
                "experiment": experiment, "dtype": dtype, "n": n, "threads": threads, "variant": name,
                "ns_per_elem": ns, "speedup_vs_first": ratio, "speedup_min": lo, "speedup_max": hi,
            }));
        }
    }
}

/// What the embedding measurements pick, as `ADAGRAD_TUNE` settings with the evidence: the prefetch distances
/// with the best geometric mean of their per-configuration speedups over the table entry's, and the smallest
/// lookup count from which the grouping on threads was faster at that count and every larger one.
fn picks(rows: &[serde_json::Value]) -> Vec<String> {
    let mut lines = Vec::new();
    let field = |r: &serde_json::Value, k: &str| r[k].as_str().unwrap_or("").to_string();
    let mut prefetch: Vec<(String, f64, usize)> = Vec::new();
    for r in rows {
        let (exp, name) = (field(r, "experiment"), field(r, "variant"));
        if !exp.starts_with("embedding ") || exp.starts_with("embedding sort") {
            continue;
        }
        let ln = r["speedup_vs_first"].as_f64().unwrap_or(1.0).ln();
        match prefetch.iter_mut().find(|(n, ..)| *n == name) {
            Some(p) => (p.1, p.2) = (p.1 + ln, p.2 + 1),
            None => prefetch.push((name, ln, 1)),
        }
    }
    if let Some((name, sum, n)) = prefetch
        .iter()
        .max_by(|a, b| (a.1 / a.2 as f64).total_cmp(&(b.1 / b.2 as f64)))
        && let Some((r, l)) = name.strip_prefix("ahead=").and_then(|v| v.split_once('/'))
    {
        lines.push(format!(
            "embedding prefetch: rows_ahead={r},lookups_ahead={l} ({:.3}x the table entry's, geometric mean over {n} configurations)",
            (sum / *n as f64).exp()
        ));
    }
    let mut sort: Vec<(usize, f64)> = rows
        .iter()
        .filter(|r| {
            field(r, "experiment").starts_with("embedding sort") && field(r, "variant") == "threads"
        })
        .map(|r| {
            (
                r["n"].as_u64().unwrap_or(0) as usize,
                r["speedup_vs_first"].as_f64().unwrap_or(0.0),
            )
        })
        .collect();
    sort.sort_by_key(|&(n, _)| n);
    if let Some(&(largest, _)) = sort.last() {
        let from = (0..sort.len())
            .find(|&i| sort[i..].iter().all(|&(_, x)| x >= 1.0))
            .map(|i| sort[i].0);
        lines.push(match from {
            Some(n) => format!(
                "embedding sort: sort={n} (threads faster from {n} lookups on, up to {largest})"
            ),
            None => format!(
                "embedding sort: sort={} (threads never faster up to {largest} lookups)",
                largest * 2
            ),
        });
    }
    lines
}

fn tuned(base: Tuning, prefetch: usize, threshold: usize) -> Tuning {
    Tuning {
        prefetch,
        parallel_threshold: threshold,
        ..base
    }
}

fn prefetch_experiment<T: Float>(
    out: &mut Out,
    n: usize,
    threads: usize,
    rounds: usize,
    secs: f64,
) {
    let base = Tuning::for_cpu(&Cpu::this());
    let (p0, g, _) = arrays::<T>(n);
    let mut variants: Vec<(String, Pass<'_>)> = Vec::new();
    for pf in [0usize, 2048, 4096, 8192, 16384] {
        let par = parallelism(threads);
        let config = Config::default()
            .initial_accumulator_value(0.1)
            .parallelism(par)
            .tuning(tuned(base, pf, 0));
        let mut opt = Adagrad::<T>::new(config, &[n]).expect("valid");
        let mut p = p0.clone();
        let g = &g;
        variants.push((
            format!("prefetch={pf}"),
            Box::new(move || {
                opt.step_flat(&mut p, g).expect("lengths match");
            }),
        ));
    }
    let rows = ab(&mut variants, n, rounds, secs);
    out.section("prefetch", T::NAME, n, threads, &rows);
}

fn threads_experiment<T: Float>(out: &mut Out, n: usize, threads: usize, rounds: usize, secs: f64) {
    let base = Tuning::for_cpu(&Cpu::this());
    let (p0, g, _) = arrays::<T>(n);
    let mut variants: Vec<(String, Pass<'_>)> = Vec::new();
    for t in [1, threads] {
        let par = parallelism(t);
        // Threshold 0 and pieces down to 1,024 elements, so that every size is split and the crossover shows.
        let config = Config::default()
            .initial_accumulator_value(0.1)
            .parallelism(par)
            .tuning(Tuning {
                min_piece: 1024,
                ..tuned(base, base.prefetch, 0)
            });
        let mut opt = Adagrad::<T>::new(config, &[n]).expect("valid");
        let mut p = p0.clone();
        let g = &g;
        variants.push((
            format!("threads={t}"),
            Box::new(move || {
                opt.step_flat(&mut p, g).expect("lengths match");
            }),
        ));
    }
    let rows = ab(&mut variants, n, rounds, secs);
    out.section("threads", T::NAME, n, threads, &rows);
}

fn width_experiment<T: Float>(out: &mut Out, n: usize, pr: Precision, rounds: usize, secs: f64) {
    let (p0, g, _) = arrays::<T>(n);
    let mut variants: Vec<(String, Pass<'_>)> = Vec::new();
    for isa in [Isa::Avx512, Isa::Avx2] {
        let config = Config::default()
            .initial_accumulator_value(0.1)
            .parallelism(Parallelism::Sequential)
            .precision(pr)
            .isa(isa);
        let mut opt = Adagrad::<T>::new(config, &[n]).expect("available");
        let mut p = p0.clone();
        let g = &g;
        variants.push((
            format!("{isa} {pr:?}"),
            Box::new(move || {
                opt.step_flat(&mut p, g).expect("lengths match");
            }),
        ));
    }
    let rows = ab(&mut variants, n, rounds, secs);
    out.section("width", T::NAME, n, 1, &rows);
}

fn buffers_experiment<T: Float>(out: &mut Out, n: usize, rounds: usize, secs: f64) {
    let (p0, g0, _) = arrays::<T>(n);
    let k = adagrad::Kernels::best().with_prefetch(Tuning::for_cpu(&Cpu::this()).prefetch);
    let h = adagrad::Hyper::<T>::new(
        0.01,
        0.0,
        1,
        0.0,
        1e-10,
        false,
        adagrad::EpsPlacement::Outside,
    );
    let pr = adagrad::Precision::Exact;
    let (mut vp, vg, mut vs) = (p0.clone(), g0.clone(), vec![T::from_f64(0.1); n]);
    let mut ap = AlignedBuf::from_slice(&p0).expect("memory");
    let ag = AlignedBuf::from_slice(&g0).expect("memory");
    let mut as_ = AlignedBuf::filled(n, T::from_f64(0.1)).expect("memory");
    let mut variants: Vec<(String, Pass<'_>)> = vec![
        (
            "Vec".into(),
            Box::new(|| k.update(&mut vp, &vg, &mut vs, &h, pr).expect("lengths")),
        ),
        (
            "AlignedBuf".into(),
            Box::new(|| k.update(&mut ap, &ag, &mut as_, &h, pr).expect("lengths")),
        ),
    ];
    let rows = ab(&mut variants, n, rounds, secs);
    out.section("buffers", T::NAME, n, 1, &rows);
}

/// The coalescing sort (`embedding::prepare`) on the calling thread against the step's threads, in interleaved
/// rounds, each step after reading `evict` (twice the largest cache) so that it starts cold, helpers asleep.
fn sort_experiment(out: &mut Out, evict: &[u64], lookups: usize, threads: usize, rounds: usize) {
    const ROWS: usize = 1_000_000;
    let mut rng = StdRng::seed_from_u64(lookups as u64);
    let ids: Vec<u32> = (0..lookups)
        .map(|_| rng.gen_range(0..ROWS as u32))
        .collect();
    let grads = vec![0.0f32; lookups];
    let base = Tuning::for_cpu(&Cpu::this());
    let mut runs: Vec<(String, Executor, Scratch)> =
        [("calling thread", usize::MAX), ("threads", 0)]
            .iter()
            .map(|&(name, sort_threshold)| {
                let config = Config::default()
                    .parallelism(parallelism(threads))
                    .tuning(Tuning {
                        sort_threshold,
                        ..base
                    });
                (
                    name.to_string(),
                    Executor::new(&config).expect("valid"),
                    Scratch::default(),
                )
            })
            .collect();
    let mut t = vec![Vec::new(); runs.len()];
    for r in 0..=rounds {
        let order: Vec<usize> = if r % 2 == 0 { vec![0, 1] } else { vec![1, 0] };
        for i in order {
            let (_, exec, scratch) = &mut runs[i];
            std::hint::black_box(evict.iter().fold(0u64, |a, &b| a.wrapping_add(b)));
            let t0 = Instant::now();
            let lk = Lookups::Rows {
                ids: &ids,
                grads: &grads,
            };
            std::hint::black_box(embedding::prepare(exec, ROWS, 1, lk, scratch).expect("valid"));
            if r > 0 {
                t[i].push(t0.elapsed().as_secs_f64());
            }
        }
    }
    let rows = summary(runs.iter().map(|(name, ..)| name), &t, lookups);
    out.section("embedding sort uniform", "u32 ids", lookups, threads, &rows);
}

/// Embedding prefetch distances measured (`rows_ahead`, `lookups_ahead`), after the table entry's.
const EMBEDDING_VARIANTS: [(usize, usize); 7] =
    [(0, 0), (8, 0), (4, 4), (8, 8), (16, 16), (8, 16), (16, 8)];

/// Embedding steps with each prefetch-distance variant, in interleaved rounds, caches flushed before every step.
#[allow(clippy::too_many_arguments)]
fn embedding_experiment(
    out: &mut Out,
    flush: &mut [u8],
    dim: usize,
    lookups: usize,
    alpha: f64,
    accumulator: Accumulator,
    threads: usize,
    rounds: usize,
) {
    const ROWS: usize = 1_000_000;
    let mut rng = StdRng::seed_from_u64(dim as u64 ^ lookups as u64);
    let ids = embedding_ids(&mut rng, lookups, ROWS, alpha);
    let grads: Vec<f32> = (0..lookups * dim)
        .map(|_| rng.gen_range(-0.01f32..0.01))
        .collect();
    let mut table = vec![0.5f32; ROWS * dim];
    let per_row = if accumulator == Accumulator::RowWise {
        1
    } else {
        dim
    };
    let mut state = vec![0.1f32; ROWS * per_row];
    let par = parallelism(threads);
    let base = Tuning::for_cpu(&Cpu::this());
    let options = TableOptions::default().accumulator(accumulator);
    // The table entry's distances first (the ratios say how each other variant compares with it), then the rest.
    let mut variants = vec![(base.rows_ahead, base.lookups_ahead)];
    for v in EMBEDDING_VARIANTS {
        if !variants.contains(&v) {
            variants.push(v);
        }
    }
    let mut runs: Vec<(String, Config, Executor, Scratch)> = variants
        .iter()
        .map(|&(rows_ahead, lookups_ahead)| {
            let config = Config::default()
                .lr(0.01)
                .parallelism(par.clone())
                .tuning(Tuning {
                    rows_ahead,
                    lookups_ahead,
                    ..base
                });
            let exec = Executor::new(&config).expect("valid");
            (
                format!("ahead={rows_ahead}/{lookups_ahead}"),
                config,
                exec,
                Scratch::default(),
            )
        })
        .collect();
    let mut t = vec![Vec::new(); runs.len()];
    for r in 0..=rounds {
        let order: Vec<usize> = if r % 2 == 0 {
            (0..runs.len()).collect()
        } else {
            (0..runs.len()).rev().collect()
        };
        for i in order {
            let (_, config, exec, scratch) = &mut runs[i];
            for line in flush.iter_mut().step_by(64) {
                *line = line.wrapping_add(1);
            }
            std::hint::black_box(&flush);
            let t0 = Instant::now();
            let lk = Lookups::Rows {
                ids: &ids,
                grads: &grads,
            };
            let prepared = embedding::prepare(exec, ROWS, dim, lk, scratch).expect("valid");
            embedding::apply(exec, config, &options, 1, &mut table, &mut state, &prepared)
                .expect("valid");
            // Round 0 warms up (first touch of the scratch and the pools).
            if r > 0 {
                t[i].push(t0.elapsed().as_secs_f64());
            }
        }
    }
    let rows = summary(runs.iter().map(|(name, ..)| name), &t, lookups);
    let ids_name = if alpha == 0.0 { "uniform" } else { "zipf1.05" };
    let acc = if accumulator == Accumulator::RowWise {
        "rowwise"
    } else {
        "elementwise"
    };
    out.section(
        &format!("embedding {acc} D={dim} {ids_name}"),
        "f32",
        lookups,
        threads,
        &rows,
    );
}

fn main() {
    let mut quick = false;
    let mut only_embedding = false;
    let mut only_sort = false;
    let mut json = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--embedding" => only_embedding = true,
            "--sort" => only_sort = true,
            "--json" => json = args.next(),
            _ => {
                eprintln!("usage: calibrate [--quick] [--embedding] [--sort] [--json PATH]");
                std::process::exit(2);
            }
        }
    }
    let (rounds, secs) = match (quick, only_sort) {
        (true, _) => (5, 0.03),
        // Sort steps are short and noisy: more rounds.
        (false, true) => (31, 0.06),
        (false, false) => (9, 0.06),
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = cpu_name();
    println!("CPU: {cpu} ({}), {threads} threads", Cpu::this());
    println!("table entry: {}", Tuning::for_cpu(&Cpu::this()));
    println!(
        "rounds: {rounds}, ~{secs} s per variant per round; ratios > 1: faster than the first variant\n"
    );
    let mut out = Out {
        lines: Vec::new(),
        json: Vec::new(),
    };
    if only_sort {
        let evict = vec![1u64; 2 * llc_bytes() / 8];
        for lookups in [16_384usize, 32_768, 65_536, 131_072, 262_144, 1 << 20] {
            sort_experiment(&mut out, &evict, lookups, threads.max(2), rounds);
        }
    }
    if !only_embedding && !only_sort {
        for n in [1usize << 20, 1 << 24] {
            prefetch_experiment::<f32>(&mut out, n, 1, rounds, secs);
            prefetch_experiment::<f64>(&mut out, n, 1, rounds, secs);
        }
        if threads > 1 {
            prefetch_experiment::<f32>(&mut out, 1 << 24, threads, rounds, secs);
            prefetch_experiment::<f64>(&mut out, 1 << 24, threads, rounds, secs);
            for n in [8192usize, 16384, 32768, 65536, 131072, 262144] {
                threads_experiment::<f32>(&mut out, n, threads, rounds, secs);
                threads_experiment::<f64>(&mut out, n, threads, rounds, secs);
            }
        }
        if Isa::Avx512.is_available() {
            for pr in [Precision::Exact, Precision::Fast] {
                for n in [4096usize, 65536, 1 << 20, 1 << 24] {
                    width_experiment::<f32>(&mut out, n, pr, rounds, secs);
                    width_experiment::<f64>(&mut out, n, pr, rounds, secs);
                }
            }
        }
        for n in [1usize << 20, 1 << 24] {
            buffers_experiment::<f32>(&mut out, n, rounds, secs);
            buffers_experiment::<f64>(&mut out, n, rounds, secs);
        }
    }
    if !only_sort {
        let mut flush = vec![0u8; 256 << 20];
        for dim in [64, 128] {
            for lookups in [16_384, 262_144] {
                for alpha in [1.05, 0.0] {
                    for accumulator in [Accumulator::RowWise, Accumulator::ElementWise] {
                        for t in [1, threads] {
                            embedding_experiment(
                                &mut out,
                                &mut flush,
                                dim,
                                lookups,
                                alpha,
                                accumulator,
                                t,
                                rounds,
                            );
                            if threads == 1 {
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
    let picked = picks(&out.json);
    if !picked.is_empty() {
        println!(
            "\nPicked on this CPU (set with ADAGRAD_TUNE, or a table entry in src/tuning.rs):"
        );
        for line in &picked {
            println!("  {line}");
        }
    }
    if let Some(path) = json {
        let doc = serde_json::json!({
            "schema": "adagrad-calibrate/v1",
            "cpu": cpu,
            "cpuid": Cpu::this().to_string(),
            "threads": threads,
            "table_entry": Tuning::for_cpu(&Cpu::this()).to_string(),
            "rounds": rounds,
            "rows": out.json,
            "picked": picked,
        });
        match std::fs::write(&path, serde_json::to_string_pretty(&doc).expect("json")) {
            Ok(()) => println!("\nJSON: {path}"),
            Err(e) => eprintln!("calibrate: cannot write {path}: {e}"),
        }
    }
}
