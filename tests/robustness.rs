//! Non-finite gradients, gradient unscaling and mixed precision through the optimizer API.

use adagrad::{Adagrad, Config, Error, Isa, NonFinite, Parallelism, StepOutcome, bf16, f16};
use std::sync::Arc;

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn snapshot(opt: &Adagrad<f32>, params: &[Vec<f32>]) -> (Vec<Vec<u32>>, Vec<Vec<u32>>, u64) {
    (
        opt.state().iter().map(|s| bits(s)).collect(),
        params.iter().map(|p| bits(p)).collect(),
        opt.step_count(),
    )
}

fn two_tensors() -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let p = vec![
        (0..100_000).map(|i| (i % 7) as f32 * 0.1).collect(),
        vec![1.0f32; 37],
    ];
    let g = vec![
        (0..100_000)
            .map(|i| (i % 11) as f32 * 0.01 - 0.05)
            .collect(),
        vec![0.5f32; 37],
    ];
    (p, g)
}

fn step(opt: &mut Adagrad<f32>, p: &mut [Vec<f32>], g: &[Vec<f32>]) -> Result<StepOutcome, Error> {
    let mut ps: Vec<&mut [f32]> = p.iter_mut().map(|x| x.as_mut_slice()).collect();
    let gs: Vec<&[f32]> = g.iter().map(|x| x.as_slice()).collect();
    opt.step(&mut ps, &gs)
}

#[test]
fn skip_step_changes_nothing_and_counts() {
    for par in [Parallelism::Sequential, Parallelism::Global] {
        let (mut p, mut g) = two_tensors();
        let mut opt = Adagrad::<f32>::new(
            Config::default()
                .non_finite(NonFinite::SkipStep)
                .parallelism(par),
            &[100_000, 37],
        )
        .unwrap();
        assert_eq!(step(&mut opt, &mut p, &g).unwrap(), StepOutcome::Applied);
        let before = snapshot(&opt, &p);
        g[0][99_999] = f32::NAN;
        g[0][5] = f32::INFINITY;
        g[1][36] = f32::NEG_INFINITY;
        assert_eq!(
            step(&mut opt, &mut p, &g).unwrap(),
            StepOutcome::Skipped { non_finite: 3 }
        );
        assert_eq!(snapshot(&opt, &p), before);
        // Finite again: the step applies and counts.
        g[0][99_999] = 0.0;
        g[0][5] = 0.0;
        g[1][36] = 0.0;
        assert_eq!(step(&mut opt, &mut p, &g).unwrap(), StepOutcome::Applied);
        assert_eq!(opt.step_count(), 2);
    }
}

#[test]
fn error_policy_changes_nothing() {
    let (mut p, mut g) = two_tensors();
    let mut opt = Adagrad::<f32>::new(
        Config::default().non_finite(NonFinite::Error),
        &[100_000, 37],
    )
    .unwrap();
    step(&mut opt, &mut p, &g).unwrap();
    let before = snapshot(&opt, &p);
    g[1][0] = f32::NAN;
    let e = step(&mut opt, &mut p, &g).unwrap_err();
    assert_eq!(e, Error::NonFiniteGradient { count: 1 });
    assert!(e.to_string().contains("NaN"));
    assert_eq!(snapshot(&opt, &p), before);
}

#[test]
fn propagate_is_pytorch_and_bit_identical_to_the_reference() {
    let (mut p, mut g) = two_tensors();
    g[0][3] = f32::NAN;
    g[1][2] = f32::INFINITY;
    let (mut q, g2) = (p.clone(), g.clone());
    let mut a = Adagrad::<f32>::new(Config::default(), &[100_000, 37]).unwrap();
    let mut b = Adagrad::<f32>::new(Config::default().isa(Isa::Scalar), &[100_000, 37]).unwrap();
    assert_eq!(step(&mut a, &mut p, &g).unwrap(), StepOutcome::Applied);
    step(&mut b, &mut q, &g2).unwrap();
    assert!(p[0][3].is_nan() && a.state()[0][3].is_nan() && a.state()[1][2].is_infinite());
    for i in 0..2 {
        assert_eq!(
            p[i].iter()
                .zip(&q[i])
                .filter(|(x, y)| x.to_bits() != y.to_bits() && !(x.is_nan() && y.is_nan()))
                .count(),
            0
        );
    }
}

#[test]
fn grad_scale_is_bit_identical_to_dividing_first() {
    for scale in [1.0, 3.0, 65536.0, 0.125, 1e-3] {
        let (mut p, g) = two_tensors();
        let mut q = p.clone();
        let unscaled: Vec<Vec<f32>> = g
            .iter()
            .map(|t| t.iter().map(|&x| x / scale as f32).collect())
            .collect();
        let mut a = Adagrad::<f32>::new(
            Config::default().weight_decay(0.01).maximize(true),
            &[100_000, 37],
        )
        .unwrap();
        let mut b = Adagrad::<f32>::new(
            Config::default().weight_decay(0.01).maximize(true),
            &[100_000, 37],
        )
        .unwrap();
        for _ in 0..3 {
            let mut ps: Vec<&mut [f32]> = p.iter_mut().map(|x| x.as_mut_slice()).collect();
            let gs: Vec<&[f32]> = g.iter().map(|x| x.as_slice()).collect();
            a.step_with::<f32, adagrad::NoCopy>(&mut ps, &gs, None, Some(scale))
                .unwrap();
            step(&mut b, &mut q, &unscaled).unwrap();
        }
        assert_eq!(bits(&p[0]), bits(&q[0]), "scale {scale}");
        assert_eq!(bits(&a.state()[1]), bits(&b.state()[1]), "scale {scale}");
    }
    let mut opt = Adagrad::<f32>::new(Config::default(), &[1]).unwrap();
    let mut p = [1.0f32];
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let e = opt
            .step_with::<f32, adagrad::NoCopy>(&mut [&mut p], &[&[1.0]], None, Some(bad))
            .unwrap_err();
        assert!(matches!(e, Error::InvalidGradScale(_)));
    }
    assert_eq!((p[0], opt.step_count()), (1.0, 0));
}

/// The offload step: bf16/f16 gradients into f32 master weights, copy-out to bf16/f16, multi-tensor and
/// threaded, bit-identical to widening the gradients first and converting the parameters afterwards.
#[test]
fn mixed_precision_through_the_threaded_multi_tensor_step() {
    let sizes = [70_000usize, 0, 5, 130_001, 64];
    let total: usize = sizes.iter().sum();
    let g32: Vec<f32> = (0..total)
        .map(|i| ((i * 37 % 1001) as f32 - 500.0) * 1e-3)
        .collect();
    let gb: Vec<bf16> = g32.iter().map(|&x| bf16::from_f32(x)).collect();
    let gh: Vec<f16> = g32.iter().map(|&x| f16::from_f32(x)).collect();
    fn split_mut<'a, T>(v: &'a mut [T], sizes: &[usize]) -> Vec<&'a mut [T]> {
        let mut out = Vec::new();
        let mut rest = v;
        for &n in sizes {
            let (a, b) = std::mem::take(&mut rest).split_at_mut(n);
            out.push(a);
            rest = b;
        }
        out
    }
    fn split_ref<'a, T>(v: &'a [T], sizes: &[usize]) -> Vec<&'a [T]> {
        let mut out = Vec::new();
        let mut at = 0;
        for &n in sizes {
            out.push(&v[at..at + n]);
            at += n;
        }
        out
    }
    for threads in [1, 2, 3, 8] {
        let pool = Parallelism::Pool(Arc::new(
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap(),
        ));
        let config = Config::default()
            .lr(0.05)
            .parallelism(pool)
            .parallel_threshold(0);
        // bf16 gradients, f16 copy-out.
        let mut opt = Adagrad::<f32>::new(config.clone(), &sizes).unwrap();
        let mut reference =
            Adagrad::<f32>::new(Config::default().lr(0.05).isa(Isa::Scalar), &sizes).unwrap();
        let (mut p, mut q) = (vec![0.25f32; total], vec![0.25f32; total]);
        let mut out = vec![f16::ZERO; total];
        let widened: Vec<f32> = gb.iter().map(|x| x.to_f32()).collect();
        for _ in 0..3 {
            let mut outs = split_mut(&mut out, &sizes);
            opt.step_with(
                &mut split_mut(&mut p, &sizes),
                &split_ref(&gb, &sizes),
                Some(&mut outs),
                None,
            )
            .unwrap();
            reference
                .step(&mut split_mut(&mut q, &sizes), &split_ref(&widened, &sizes))
                .unwrap();
        }
        assert_eq!(bits(&p), bits(&q), "{threads} threads");
        assert!(
            out.iter()
                .zip(&q)
                .all(|(o, x)| o.to_bits() == f16::from_f32(*x).to_bits())
        );
        // f16 gradients, no copy-out.
        let mut opt = Adagrad::<f32>::new(config, &sizes).unwrap();
        let mut p = vec![0.25f32; total];
        let mut q = vec![0.25f32; total];
        let mut reference =
            Adagrad::<f32>::new(Config::default().isa(Isa::Scalar).lr(0.05), &sizes).unwrap();
        let widened: Vec<f32> = gh.iter().map(|x| x.to_f32()).collect();
        opt.step(&mut split_mut(&mut p, &sizes), &split_ref(&gh, &sizes))
            .unwrap();
        reference
            .step(&mut split_mut(&mut q, &sizes), &split_ref(&widened, &sizes))
            .unwrap();
        assert_eq!(bits(&p), bits(&q));
    }
}

#[test]
fn wrong_copy_out_changes_nothing() {
    let mut opt = Adagrad::<f32>::new(Config::default(), &[4, 3]).unwrap();
    let (mut a, mut b) = (vec![1.0f32; 4], vec![1.0f32; 3]);
    let g = [bf16::ONE; 4];
    let (mut oa, mut ob, mut short) = (
        vec![bf16::ZERO; 4],
        vec![bf16::ZERO; 3],
        vec![bf16::ZERO; 2],
    );
    let e = opt
        .step_with(
            &mut [&mut a, &mut b],
            &[&g, &g[..3]],
            Some(&mut [&mut oa]),
            None,
        )
        .unwrap_err();
    assert_eq!(
        e,
        Error::CopyOutCount {
            expected: 2,
            got: 1
        }
    );
    let e = opt
        .step_with(
            &mut [&mut a, &mut b],
            &[&g, &g[..3]],
            Some(&mut [&mut oa, &mut short]),
            None,
        )
        .unwrap_err();
    assert_eq!(
        e,
        Error::CopyOutLength {
            tensor: 1,
            expected: 3,
            got: 2
        }
    );
    assert!(a.iter().chain(&b).all(|&x| x == 1.0) && opt.step_count() == 0);
    assert!(oa.iter().chain(&short).all(|&x| x == bf16::ZERO));
    opt.step_with(
        &mut [&mut a, &mut b],
        &[&g, &g[..3]],
        Some(&mut [&mut oa, &mut ob]),
        None,
    )
    .unwrap();
    assert!(ob.iter().all(|&x| x == bf16::from_f32(b[0])));
}
