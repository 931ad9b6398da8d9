//! Threads and multi-tensor steps through the optimizer API.
//!
//! `cargo bench --bench parallel`:
//! - `threads-f32` / `threads-f64`: one tensor, 1 vs 2 threads (own pools), 4096 … 16M elements;
//! - `crossover-f32`: sequential vs 2 threads with no threshold, to show where splitting starts to pay (the
//!   per-CPU thresholds themselves come from `cargo run --release --example calibrate`, interleaved A/B);
//! - `multi-tensor`: 1024 tensors × 1024 elements, and a 12-layer transformer (hidden 256) parameter list, each
//!   against one flat tensor of the same total size (default parallelism);
//! - `after-sleep`: a step that follows a 2 ms sleep (the helpers gone back to sleep, as after a training loop's
//!   forward pass), on 1 and on 2 threads of this crate's pool, 786,432 and 16.7M f32 elements. Interleaved: every
//!   timed step of one side is followed, untimed, by the other side's, so both see the same machine.

#![allow(missing_docs)] // criterion_group! generates undocumented items

use adagrad::{Adagrad, Config, Float, Parallelism};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::sync::Arc;
use std::time::Duration;

fn pool(threads: usize) -> Parallelism {
    Parallelism::Pool(Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap(),
    ))
}

/// One optimizer over `sizes` and its buffers, stepped by `b.iter`.
struct Rig<T: Float> {
    opt: Adagrad<T>,
    params: Vec<Vec<T>>,
    grads: Vec<Vec<T>>,
}

impl<T: Float> Rig<T> {
    fn new(config: Config, sizes: &[usize]) -> Self {
        let opt = Adagrad::new(config, sizes).unwrap();
        let params = sizes.iter().map(|&n| vec![T::from_f64(0.5); n]).collect();
        let grads = sizes
            .iter()
            .map(|&n| {
                (0..n)
                    .map(|i| T::from_f64((i % 89) as f64 * 1e-3))
                    .collect()
            })
            .collect();
        Rig { opt, params, grads }
    }
    fn step(&mut self) {
        let mut ps: Vec<&mut [T]> = self.params.iter_mut().map(|p| p.as_mut_slice()).collect();
        let gs: Vec<&[T]> = self.grads.iter().map(|g| g.as_slice()).collect();
        self.opt.step(&mut ps, &gs).unwrap();
    }
}

fn short<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    g
}

fn threads<T: Float>(c: &mut Criterion) {
    let mut g = short(c, &format!("threads-{}", T::NAME));
    for n in [4096, 16384, 65536, 262144, 1 << 20, 1 << 22, 1 << 24] {
        g.throughput(Throughput::Bytes((5 * n * size_of::<T>()) as u64));
        for t in [1, 2] {
            let mut rig = Rig::<T>::new(Config::default().parallelism(pool(t)), &[n]);
            g.bench_function(BenchmarkId::new(format!("{t}-thread"), n), |b| {
                b.iter(|| rig.step())
            });
        }
    }
    g.finish();
}

fn crossover(c: &mut Criterion) {
    let mut g = short(c, "crossover-f32");
    for n in [4096, 8192, 16384, 32768, 65536, 131072, 262144] {
        g.throughput(Throughput::Bytes((5 * n * 4) as u64));
        let mut seq = Rig::<f32>::new(Config::default().parallelism(Parallelism::Sequential), &[n]);
        g.bench_function(BenchmarkId::new("sequential", n), |b| b.iter(|| seq.step()));
        let mut par = Rig::<f32>::new(
            Config::default().parallelism(pool(2)).parallel_threshold(0),
            &[n],
        );
        g.bench_function(BenchmarkId::new("2-threads-always-split", n), |b| {
            b.iter(|| par.step())
        });
    }
    g.finish();
}

/// A 12-layer transformer with hidden size 256: token and position embeddings, per layer Q/K/V and output
/// projections with biases, two layer norms, a 4× MLP with biases; a final norm.
fn transformer_shapes() -> Vec<usize> {
    let (h, vocab, ctx) = (256, 8192, 512);
    let mut v = vec![vocab * h, ctx * h];
    for _ in 0..12 {
        v.extend([h, h]); // ln1
        v.extend([h * 3 * h, 3 * h]); // qkv
        v.extend([h * h, h]); // out
        v.extend([h, h]); // ln2
        v.extend([h * 4 * h, 4 * h, 4 * h * h, h]); // mlp
    }
    v.extend([h, h]);
    v
}

fn multi_tensor(c: &mut Criterion) {
    let mut g = short(c, "multi-tensor");
    let mixes: [(&str, Vec<usize>); 2] = [
        ("1024x1024", vec![1024; 1024]),
        ("transformer-12x256", transformer_shapes()),
    ];
    for (name, sizes) in mixes {
        let total: usize = sizes.iter().sum();
        g.throughput(Throughput::Bytes((5 * total * 4) as u64));
        let mut many = Rig::<f32>::new(Config::default(), &sizes);
        g.bench_function(BenchmarkId::new(format!("{name}-tensors"), total), |b| {
            b.iter(|| many.step())
        });
        let mut flat = Rig::<f32>::new(Config::default(), &[total]);
        g.bench_function(BenchmarkId::new(format!("{name}-flat"), total), |b| {
            b.iter(|| flat.step())
        });
    }
    g.finish();
}

/// A step after a sleep, on `threads` threads, interleaved with the other side's (see the module documentation).
fn after_sleep(c: &mut Criterion) {
    let mut g = short(c, "after-sleep");
    for n in [786_432, 1 << 24] {
        g.throughput(Throughput::Bytes((5 * n * 4) as u64));
        let mut sides = [1, 2].map(|t| {
            let par = if t == 1 {
                Parallelism::Sequential
            } else {
                Parallelism::Threads(t)
            };
            Rig::<f32>::new(Config::default().parallelism(par), &[n])
        });
        for timed in 0..2 {
            g.bench_function(BenchmarkId::new(format!("{}-thread", timed + 1), n), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        std::thread::sleep(Duration::from_millis(2));
                        let t0 = std::time::Instant::now();
                        sides[timed].step();
                        total += t0.elapsed();
                        std::thread::sleep(Duration::from_millis(2));
                        sides[1 - timed].step();
                    }
                    total
                })
            });
        }
    }
    g.finish();
}

fn all(c: &mut Criterion) {
    threads::<f32>(c);
    threads::<f64>(c);
    crossover(c);
    multi_tensor(c);
    after_sleep(c);
}

criterion_group!(benches, all);
criterion_main!(benches);
