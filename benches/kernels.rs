//! Single-thread kernel throughput per path, dtype and size, against the reference and the same-traffic stream.
//!
//! `cargo bench --bench kernels` (HTML reports in target/criterion). Throughput is in bytes: 5 arrays × the
//! element size (read param, grad, state; write param, state).

#![allow(missing_docs)] // criterion_group! generates undocumented items

use adagrad::kernels::{EpsPlacement, Float, Hyper, Isa, Kernels, Precision};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;

const SIZES: [usize; 5] = [1024, 4096, 65536, 1 << 20, 1 << 24];

fn group<T: Float>(c: &mut Criterion) {
    let mut grp = c.benchmark_group(T::NAME);
    grp.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    let h = Hyper::<T>::new(0.01, 0.0, 1, 0.0, 1e-10, false, EpsPlacement::Outside);
    for n in SIZES {
        grp.throughput(Throughput::Bytes((5 * n * size_of::<T>()) as u64));
        let mut p: Vec<T> = (0..n)
            .map(|i| T::from_f64(0.5 + (i % 13) as f64 * 0.01))
            .collect();
        let g: Vec<T> = (0..n)
            .map(|i| T::from_f64((i % 97) as f64 * 1e-3 - 0.048))
            .collect();
        let mut s = vec![T::from_f64(0.1); n];
        for isa in Isa::available() {
            let k = Kernels::new(isa).expect("available");
            let precisions: &[Precision] = match isa {
                Isa::Scalar => &[Precision::Exact],
                _ => &[Precision::Exact, Precision::Fast],
            };
            for &pr in precisions {
                let name = match (isa, pr) {
                    (Isa::Scalar, _) => "reference".to_string(),
                    (_, Precision::Exact) => format!("{isa}-exact"),
                    (_, Precision::Fast) => format!("{isa}-fast"),
                };
                grp.bench_function(BenchmarkId::new(name, n), |b| {
                    b.iter(|| {
                        k.update(black_box(&mut p), black_box(&g), black_box(&mut s), &h, pr)
                            .unwrap()
                    })
                });
            }
        }
        let k = Kernels::best();
        grp.bench_function(BenchmarkId::new(format!("stream-{}", k.isa()), n), |b| {
            b.iter(|| {
                k.stream(black_box(&mut p), black_box(&g), black_box(&mut s))
                    .unwrap()
            })
        });
    }
    grp.finish();
}

fn kernels(c: &mut Criterion) {
    group::<f32>(c);
    group::<f64>(c);
}

criterion_group!(benches, kernels);
criterion_main!(benches);
