//! A tour of the crate: the CPU and kernel path, the textbook example, the learning rate that only shrinks, a
//! small training run, an embedding table trained with row-wise Adagrad, and throughput.
//!
//! `cargo run --release --example tour`

use adagrad::kernels::{Hyper, Kernels, reference};
use adagrad::{Adagrad, Config, EpsPlacement, Isa, Parallelism, Precision};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    match tour() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The error's message (an ADAGRAD_ISA naming a path this CPU lacks, say), not its Debug form.
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn tour() -> Result<(), Box<dyn std::error::Error>> {
    println!("== adagrad tour ==\n");
    cpu_and_path()?;
    worked_example()?;
    shrinking_rate()?;
    training()?;
    embedding()?;
    throughput()?;
    Ok(())
}

/// "1 thread", "2 threads".
fn threads(n: usize) -> String {
    format!("{n} thread{}", if n == 1 { "" } else { "s" })
}

fn cpu_and_path() -> Result<(), adagrad::Error> {
    #[cfg(target_arch = "x86_64")]
    {
        let f = |name: &str, on: bool| {
            if on {
                name.to_string()
            } else {
                format!("-{name}")
            }
        };
        println!(
            "CPU features: {} {} {} {}",
            f("sse2", std::is_x86_feature_detected!("sse2")),
            f("avx2", std::is_x86_feature_detected!("avx2")),
            f("fma", std::is_x86_feature_detected!("fma")),
            f("avx512f", std::is_x86_feature_detected!("avx512f")),
        );
    }
    let avail: Vec<_> = Isa::available().map(Isa::name).collect();
    let opt = Adagrad::<f32>::new(Config::default(), &[1])?;
    println!(
        "kernel paths available: {}; best: {}; in use: {}",
        avail.join(", "),
        Isa::best(),
        opt.isa()
    );
    println!(
        "CPU: {}; tuning: {}; threads per large step: {}",
        adagrad::Cpu::this(),
        opt.tuning(),
        opt.threads()
    );
    println!(
        "(force a path with ADAGRAD_ISA=scalar|portable|avx2|avx512 or Config::isa; tune with ADAGRAD_TUNE)\n"
    );
    Ok(())
}

/// The textbook example's settings: lr 0.1, ε = 1e-8 inside the root.
fn textbook() -> Config {
    Config::torch()
        .lr(0.1)
        .eps(1e-8)
        .eps_placement(EpsPlacement::Inside)
}

/// θ0 = 1, lr 0.1, ε = 1e-8 inside the root, g = 0.2, 0.4, 0.1.
fn worked_example() -> Result<(), adagrad::Error> {
    println!("The textbook example: θ0 = 1, α = 0.1, ε = 1e-8 inside the root (f64)");
    println!(
        "  {:>4}  {:>4}  {:>20}  {:>20}  {:>20}",
        "step", "g", "G", "α/√(G+ε)", "θ"
    );
    let config = textbook();
    let mut opt = Adagrad::<f64>::new(config, &[1])?;
    let mut theta = [1.0f64];
    println!(
        "  {:>4}  {:>4}  {:>20}  {:>20}  {:>20.17}",
        0, "", 0.0, "", theta[0]
    );
    for g in [0.2, 0.4, 0.1] {
        opt.step_flat(&mut theta, &[g])?;
        let s = opt.state()[0][0];
        println!(
            "  {:>4}  {:>4}  {:>20.17}  {:>20.17}  {:>20.17}",
            opt.step_count(),
            g,
            s,
            0.1 / (s + 1e-8).sqrt(),
            theta[0]
        );
    }
    // A textbook's table shows 0.9, 0.8104, 0.7886: it rounds α/√G to three decimals before using it.
    let (r2, r3) = (0.224, 0.218);
    let (t2, t3) = (0.9 - r2 * 0.4, 0.9 - r2 * 0.4 - r3 * 0.1);
    println!(
        "  (a textbook table shows θ = 0.9, 0.8104, 0.7886: it rounds α/√G to three decimals first, \
         0.9 − {r2}·0.4 = {t2:.4}, then − {r3}·0.1 = {t3:.4}; unrounded, θ is 0.81056 and 0.78874)\n"
    );
    Ok(())
}

/// The same parameter trained on: the effective learning rate α/√(G+ε) only shrinks (about as 1/√t for steady
/// gradients), which `Adagrad::lr_stats` reports from the state on request.
fn shrinking_rate() -> Result<(), adagrad::Error> {
    println!("The learning rate only shrinks: the same example, gradients 0.2, 0.4, 0.1 repeated");
    println!(
        "  {:>6}  {:>12}  {:>14}  {:>12}",
        "step", "θ", "α/√(G+ε)", "× step 3's"
    );
    let config = textbook();
    let mut opt = Adagrad::<f64>::new(config, &[1])?;
    let mut theta = [1.0f64];
    let mut first = None;
    for t in 1..=100_000u64 {
        opt.step_flat(&mut theta, &[[0.2, 0.4, 0.1][(t as usize - 1) % 3]])?;
        if [3, 30, 300, 3_000, 30_000, 100_000].contains(&t) {
            // One tensor of one element: its min, median and max are the element's rate for the next step.
            let rate = opt.lr_stats(1e-3)?[0].median;
            let base = *first.get_or_insert(rate);
            println!(
                "  {:>6}  {:>12.6}  {:>14.6}  {:>12.4}",
                t,
                theta[0],
                rate,
                rate / base
            );
        }
    }
    println!(
        "  (Adagrad::lr_stats / EmbeddingAdagrad::lr_stats give min, median, max, mean and the count below a \
         threshold per tensor or table; adagrad_cpu.torch.Adagrad.lr_stats() per parameter, from Python)\n"
    );
    Ok(())
}

/// Logistic regression on a synthetic data set, full-batch gradients, both ε placements.
fn training() -> Result<(), adagrad::Error> {
    let (n, dim) = (4000, 32);
    let mut rng = StdRng::seed_from_u64(7);
    let w_true: Vec<f32> = (0..dim).map(|_| rng.gen_range(-2.0..2.0)).collect();
    let x: Vec<f32> = (0..n * dim).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let y: Vec<f32> = (0..n)
        .map(|i| {
            let z: f32 = (0..dim).map(|j| x[i * dim + j] * w_true[j]).sum();
            if rng.gen_bool(sigmoid(z) as f64) {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    println!("Logistic regression: {n} samples × {dim} features, full batch, 200 steps, lr 0.1");
    println!(
        "  {:>5}  {:>22}  {:>22}  {:>26}",
        "step", "loss (ε outside, torch)", "loss (ε inside, optax)", "torch's rate: min / median"
    );
    let configs = [Config::torch().lr(0.1), Config::optax().lr(0.1)];
    let mut runs: Vec<_> = configs
        .into_iter()
        .map(|c| {
            Ok((
                Adagrad::<f32>::new(c, &[dim, 1])?,
                vec![0.0f32; dim],
                vec![0.0f32; 1],
            ))
        })
        .collect::<Result<_, adagrad::Error>>()?;
    for step in 0..=200 {
        let mut losses = Vec::new();
        let mut grads = Vec::new();
        for (_, w, b) in runs.iter() {
            let (loss, gw, gb) = loss_and_grad(&x, &y, w, b[0], dim);
            losses.push(loss);
            grads.push((gw, gb));
        }
        if step % 40 == 0 {
            // The weights' rates for the next step (before the first one, G = 0: lr / ε).
            let w = runs[0].0.lr_stats(0.0)?[0];
            println!(
                "  {:>5}  {:>22.6}  {:>22.6}  {:>12.4e} / {:>11.4e}",
                step, losses[0], losses[1], w.min, w.median
            );
        }
        if step < 200 {
            for ((opt, w, b), (gw, gb)) in runs.iter_mut().zip(&grads) {
                opt.step(&mut [w, b], &[gw, &[*gb]])?;
            }
        }
    }
    let (loss_true, _, _) = loss_and_grad(&x, &y, &w_true, 0.0, dim);
    println!("  loss at the true weights: {loss_true:.6}\n");
    Ok(())
}

/// An embedding table trained with row-wise Adagrad: a 20,000-row table, D = 32, batches of 8192 skewed lookups
/// (a few hot rows, many cold). Each lookup's gradient pulls its row towards a hidden target row, with noise, so
/// the loss over the batch's rows falls as they learn; duplicates are summed and each touched row updated once.
fn embedding() -> Result<(), adagrad::Error> {
    use adagrad::embedding::{EmbeddingAdagrad, Lookups, TableOptions};
    let (rows, dim, batch) = (20_000usize, 32usize, 8192usize);
    let mut rng = StdRng::seed_from_u64(11);
    let target: Vec<f32> = (0..rows * dim).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let mut table = vec![0.0f32; rows * dim];
    let config = Config::default().lr(0.1).eps(1e-8);
    let mut opt = EmbeddingAdagrad::<f32>::new(config, rows, dim, TableOptions::default())?;
    println!(
        "Embedding table, row-wise Adagrad (FBGEMM's EXACT_ROWWISE_ADAGRAD arithmetic): {rows} rows × {dim}, \
         {batch} lookups per step"
    );
    println!(
        "  {:>5}  {:>16}  {:>13}  {:>9}",
        "step", "loss (batch rows)", "rows touched", "step time"
    );
    let (mut ids, mut grads) = (Vec::new(), Vec::new());
    for step in 0..=200 {
        ids.clear();
        grads.clear();
        let mut loss = 0.0f64;
        for _ in 0..batch {
            let u: f64 = rng.r#gen();
            let r = ((u * u * u * rows as f64) as usize).min(rows - 1);
            ids.push(r as u32);
            for j in 0..dim {
                let err = table[r * dim + j] - target[r * dim + j];
                loss += 0.5 * (err as f64).powi(2);
                grads.push(err + rng.gen_range(-0.1..0.1));
            }
        }
        let t0 = Instant::now();
        opt.step(
            &mut table,
            Lookups::Rows {
                ids: &ids,
                grads: &grads,
            },
        )?;
        let took = t0.elapsed();
        if step % 40 == 0 {
            let mut touched = ids.clone();
            touched.sort_unstable();
            touched.dedup();
            println!(
                "  {:>5}  {:>16.5}  {:>13}  {:>6.0} µs",
                step,
                loss / batch as f64,
                touched.len(),
                took.as_secs_f64() * 1e6
            );
        }
    }
    println!();
    Ok(())
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

fn loss_and_grad(x: &[f32], y: &[f32], w: &[f32], b: f32, dim: usize) -> (f32, Vec<f32>, f32) {
    let n = y.len();
    let (mut loss, mut gw, mut gb) = (0.0f64, vec![0.0f32; dim], 0.0f32);
    for i in 0..n {
        let row = &x[i * dim..(i + 1) * dim];
        let z: f32 = row.iter().zip(w).map(|(a, b)| a * b).sum::<f32>() + b;
        let p = sigmoid(z).clamp(1e-7, 1.0 - 1e-7);
        loss -= (y[i] * p.ln() + (1.0 - y[i]) * (1.0 - p).ln()) as f64;
        let e = (p - y[i]) / n as f32;
        for (g, a) in gw.iter_mut().zip(row) {
            *g += e * a;
        }
        gb += e;
    }
    ((loss / n as f64) as f32, gw, gb)
}

/// One throughput line: 1M f32 elements (20 bytes moved per element), the chosen path vs the scalar
/// reference, single thread, median of several steps.
fn throughput() -> Result<(), Box<dyn std::error::Error>> {
    let n = 1 << 20;
    let mut p = vec![0.5f32; n];
    let g: Vec<f32> = (0..n).map(|i| ((i % 97) as f32 - 48.0) * 1e-3).collect();
    let mut s = vec![0.1f32; n];
    let h = Hyper::<f32>::new(0.01, 0.0, 1, 0.0, 1e-10, false, EpsPlacement::Outside);
    let k = Kernels::from_env()?;
    let mut opt = Adagrad::<f32>::new(Config::default().parallelism(Parallelism::Global), &[n])?;
    // Interleaved rounds (the three take turns, so a busy moment of this machine slows all of them), medians.
    let (mut t_ref, mut t_best, mut t_par) = (Vec::new(), Vec::new(), Vec::new());
    type Run<'a> = &'a mut dyn FnMut() -> Result<(), Box<dyn std::error::Error>>;
    let time = |f: Run<'_>| -> Result<f64, Box<dyn std::error::Error>> {
        let t0 = Instant::now();
        f()?;
        Ok(t0.elapsed().as_secs_f64())
    };
    for _ in 0..21 {
        t_ref.push(time(&mut || {
            Ok(reference::update(&mut p, &g, &mut s, &h)?)
        })?);
        t_best.push(time(&mut || {
            Ok(k.update(&mut p, &g, &mut s, &h, Precision::Exact)?)
        })?);
        t_par.push(time(&mut || Ok(opt.step_flat(&mut p, &g).map(drop)?))?);
    }
    let median = |t: &mut Vec<f64>| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    };
    let (t_ref, t_best, t_par) = (median(&mut t_ref), median(&mut t_best), median(&mut t_par));
    let rate = |t: f64| n as f64 / t / 1e9;
    println!(
        "Throughput, 1M f32 elements, medians of 21 interleaved rounds: reference {:.2} G elem/s; {} {:.2} G elem/s \
         ({:.1}× reference); optimizer step on {} {:.2} G elem/s",
        rate(t_ref),
        k.isa(),
        rate(t_best),
        t_ref / t_best,
        threads(opt.threads()),
        rate(t_par)
    );
    println!(
        "  (one run on a shared machine: `cargo run --release --example report` measures every path against an \
         independent memory ceiling)"
    );
    Ok(())
}
