//! Property test with shrinking: for arbitrary lengths, offsets, values (any bit pattern) and hyperparameters,
//! every available path in Exact mode equals the reference bit for bit (NaN equals NaN).

use adagrad_kernels::{EpsPlacement, Float, Hyper, Kernels, Precision};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
mod common;

/// Bits equal, or both NaN (compared through f64, which keeps every f32 bit pattern's class and value).
fn same<T: Float>(a: &[T], b: &[T]) -> bool {
    a.iter().zip(b).all(|(x, y)| {
        let (x, y) = (x.to_f64(), y.to_f64());
        x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
    })
}

/// Every available path in Exact mode against the reference, on `data` (param, grad, state) from `off`.
fn all_paths_match<T: Float>(
    data: &[(T, T, T)],
    off: usize,
    h: &Hyper<T>,
) -> Result<(), TestCaseError> {
    let off = off.min(data.len());
    let p: Vec<T> = data.iter().map(|d| d.0).collect();
    let g: Vec<T> = data.iter().map(|d| d.1).collect();
    let s: Vec<T> = data
        .iter()
        .map(|d| if d.2 < T::ZERO { -d.2 } else { d.2 })
        .collect();
    let (mut rp, mut rs) = (p.clone(), s.clone());
    adagrad_kernels::reference::update(&mut rp[off..], &g[off..], &mut rs[off..], h).unwrap();
    for isa in common::paths("property") {
        let k = Kernels::new(isa).unwrap();
        let (mut kp, mut ks) = (p.clone(), s.clone());
        k.update(
            &mut kp[off..],
            &g[off..],
            &mut ks[off..],
            h,
            Precision::Exact,
        )
        .unwrap();
        prop_assert!(same(&kp, &rp) && same(&ks, &rs), "{} differs", isa);
    }
    Ok(())
}

/// Any f32, with ordinary values, zeros, subnormals and non-finite values all likely.
fn any_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => -1e3f32..1e3f32,
        1 => any::<u32>().prop_map(f32::from_bits),
        1 => prop::sample::select(vec![0.0f32, -0.0, 1e-45, -1e-40, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1e30, f32::MAX]),
    ]
}

fn any_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => -1e3f64..1e3f64,
        1 => any::<u64>().prop_map(f64::from_bits),
        1 => prop::sample::select(vec![0.0f64, -0.0, 5e-324, -1e-310, f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 1e300]),
    ]
}

fn hyper_parts() -> impl Strategy<Value = (f64, f64, u64, f64, f64, bool, bool)> {
    (
        prop_oneof![Just(0.0), 0.0..1.0f64],
        prop_oneof![Just(0.0), 0.0..1.0f64],
        1u64..1000,
        prop_oneof![Just(0.0), 0.0..1.0f64],
        prop_oneof![Just(1e-10), Just(0.0), 0.0..1e-3f64],
        any::<bool>(),
        any::<bool>(),
    )
}

fn hyper<T: adagrad_kernels::Float>(h: (f64, f64, u64, f64, f64, bool, bool)) -> Hyper<T> {
    let placement = if h.6 {
        EpsPlacement::Inside
    } else {
        EpsPlacement::Outside
    };
    Hyper::new(h.0, h.1, h.2, h.3, h.4, h.5, placement)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn every_path_equals_the_reference_f32(
        data in prop::collection::vec((any_f32(), any_f32(), any_f32()), 0..200),
        off in 0usize..16,
        h in hyper_parts(),
    ) {
        all_paths_match(&data, off, &hyper::<f32>(h))?;
    }

    #[test]
    fn every_path_equals_the_reference_f64(
        data in prop::collection::vec((any_f64(), any_f64(), any_f64()), 0..200),
        off in 0usize..16,
        h in hyper_parts(),
    ) {
        all_paths_match(&data, off, &hyper::<f64>(h))?;
    }

    /// Bad lengths change nothing.
    #[test]
    fn length_mismatch_changes_nothing(a in 0usize..50, b in 0usize..50, c in 0usize..50) {
        prop_assume!(!(a == b && b == c));
        let (mut p, g, mut s) = (vec![1.0f32; a], vec![1.0f32; b], vec![1.0f32; c]);
        let h = Hyper::<f32>::new(0.1, 0.0, 1, 0.0, 1e-10, false, EpsPlacement::Outside);
        for isa in common::paths("property") {
            let k = Kernels::new(isa).unwrap();
            prop_assert!(k.update(&mut p, &g, &mut s, &h, Precision::Exact).is_err());
            prop_assert!(k.update(&mut p, &g, &mut s, &h, Precision::Fast).is_err());
            prop_assert!(p.iter().chain(&s).all(|&x| x == 1.0));
        }
    }
}
