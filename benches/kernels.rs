//! Single-thread kernel throughput per path, dtype and size, against the reference and the independent ceiling
//! (`adagrad-ceiling`: same-traffic loops sharing no code with the update; every variant is benched, the fastest
//! is the ceiling).
//!
//! `cargo bench --bench kernels` (HTML reports in target/criterion). Throughput is in bytes: 5 arrays × the
//! element size (read param, grad, state; write param, state).

#![allow(missing_docs)] // criterion_group! generates undocumented items

use adagrad::kernels::{EpsPlacement, Float, Hyper, Isa, Kernels, NoCopy, Precision, bf16, f16};
use adagrad_ceiling::{Ceiling, Format};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;

const SIZES: [usize; 5] = [1024, 4096, 65536, 1 << 20, 1 << 24];

/// Benches every ceiling variant of `format` at `n` elements, one thread, as `ceiling-<variant>`.
fn ceiling(
    grp: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    format: Format,
    n: usize,
) {
    let c = Ceiling::new(format, n, 1);
    for (name, mut pass) in c.passes() {
        let id = format!("ceiling-{}", name.replace(' ', "-"));
        grp.bench_function(BenchmarkId::new(id, n), |b| b.iter(&mut pass));
    }
}

fn group<T: Float>(c: &mut Criterion, format: Format) {
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
        ceiling(&mut grp, format, n);
    }
    grp.finish();
}

/// The CPU-offload step: f32 parameters and state with f32 / bf16 / f16 gradients, with and without a 16-bit
/// copy-out on the best path, and the ceilings of the bf16 formats.
fn mixed(c: &mut Criterion) {
    let mut grp = c.benchmark_group("mixed-f32");
    grp.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    let k = Kernels::best();
    let h = Hyper::<f32>::new(0.01, 0.0, 1, 0.0, 1e-10, false, EpsPlacement::Outside);
    for n in [65536, 1 << 20, 1 << 24] {
        let mut p = vec![0.5f32; n];
        let mut s = vec![0.1f32; n];
        let g32: Vec<f32> = (0..n).map(|i| (i % 97) as f32 * 1e-3 - 0.048).collect();
        let gb: Vec<bf16> = g32.iter().map(|&x| bf16::from_f32(x)).collect();
        let gh: Vec<f16> = g32.iter().map(|&x| f16::from_f32(x)).collect();
        let mut ob = vec![bf16::ZERO; n];
        let mut oh = vec![f16::ZERO; n];
        let isa = k.isa();
        let mut bench = |name: &str, bytes: usize, f: &mut dyn FnMut()| {
            grp.throughput(Throughput::Bytes((bytes * n) as u64));
            grp.bench_function(BenchmarkId::new(format!("{isa}-{name}"), n), |b| {
                b.iter(&mut *f)
            });
        };
        let pr = Precision::Exact;
        bench("f32-grad", 20, &mut || {
            k.update(&mut p, &g32, &mut s, &h, pr).unwrap()
        });
        bench("bf16-grad", 18, &mut || {
            k.update_with::<f32, bf16, NoCopy>(&mut p, &gb, &mut s, None, &h, pr)
                .unwrap()
        });
        bench("bf16-grad-bf16-out", 20, &mut || {
            k.update_with(&mut p, &gb, &mut s, Some(&mut ob), &h, pr)
                .unwrap()
        });
        bench("f16-grad-f16-out", 20, &mut || {
            k.update_with(&mut p, &gh, &mut s, Some(&mut oh), &h, pr)
                .unwrap()
        });
    }
    for n in [65536, 1 << 20, 1 << 24] {
        grp.throughput(Throughput::Bytes((18 * n) as u64));
        ceiling(&mut grp, Format::F32Bf16, n);
        grp.throughput(Throughput::Bytes((20 * n) as u64));
        ceiling(&mut grp, Format::F32Bf16Out, n);
    }
    grp.finish();
}

fn kernels(c: &mut Criterion) {
    group::<f32>(c, Format::F32);
    group::<f64>(c, Format::F64);
    mixed(c);
}

criterion_group!(benches, kernels);
criterion_main!(benches);
