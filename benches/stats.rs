//! What `lr_stats` costs: the statistics of 1M and 16M f32 accumulators (`adagrad::stats::lr_stats`) against one
//! optimizer step over the same number of elements (which reads and writes parameters and state and reads the
//! gradients), interleaved: every timed call of one side is preceded, untimed, by the other side's, so both see the
//! same machine (and the statistics read the state a step has just written, as in training).
//!
//! `cargo bench --bench stats`

#![allow(missing_docs)] // criterion_group! generates undocumented items

use adagrad::stats::lr_stats;
use adagrad::{Adagrad, Config, Parallelism};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn stats(c: &mut Criterion) {
    let mut group = c.benchmark_group("lr-stats-f32");
    group.sample_size(20);
    for n in [1usize << 20, 1 << 24] {
        group.throughput(Throughput::Elements(n as u64));
        let config = Config::default().parallelism(Parallelism::Sequential);
        let mut opt = Adagrad::<f32>::new(config.clone(), &[n]).unwrap();
        let mut p = vec![0.5f32; n];
        let g: Vec<f32> = (0..n).map(|i| ((i % 97) as f32 - 48.0) * 1e-3).collect();
        opt.step_flat(&mut p, &g).unwrap();
        let h = config.hyper::<f32>(2);
        // Each timed call is preceded, untimed, by the other side's, so both see the same machine.
        group.bench_with_input(BenchmarkId::new("lr_stats", n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut took = Duration::ZERO;
                for _ in 0..iters {
                    opt.step_flat(&mut p, &g).unwrap();
                    let t0 = Instant::now();
                    black_box(lr_stats(&opt.state()[0], &h, 1e-3).unwrap());
                    took += t0.elapsed();
                }
                took
            });
        });
        group.bench_with_input(BenchmarkId::new("one step", n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut took = Duration::ZERO;
                for _ in 0..iters {
                    black_box(lr_stats(&opt.state()[0], &h, 1e-3).unwrap());
                    let t0 = Instant::now();
                    opt.step_flat(&mut p, &g).unwrap();
                    took += t0.elapsed();
                }
                took
            });
        });
    }
    group.finish();
}

criterion_group!(benches, stats);
criterion_main!(benches);
