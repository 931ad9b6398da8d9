//! The kernel crate's small public pieces, pinned: format conversions, the Fast bound, the gradient scale, the
//! length error's message.

use adagrad_kernels::{
    EpsPlacement, Grad, Hyper, Kernels, LengthMismatch, NoCopy, Precision, bf16, f16,
};

#[test]
fn round_from_rounds_to_nearest_even_and_is_the_identity_for_the_own_type() {
    assert_eq!(<f32 as Grad<f32>>::round_from(1.5f32), 1.5f32);
    assert_eq!(<f64 as Grad<f64>>::round_from(-2.25f64), -2.25f64);
    // bf16 keeps 8 mantissa bits: 1 + 2⁻⁸ is a tie between 1 and 1 + 2⁻⁷ → even (1); 1 + 3·2⁻⁸ → 1 + 2⁻⁶.
    assert_eq!(
        <bf16 as Grad<f32>>::round_from(1.0 + 2f32.powi(-8)).to_bits(),
        0x3f80
    );
    assert_eq!(
        <bf16 as Grad<f32>>::round_from(1.0 + 3.0 * 2f32.powi(-8)).to_bits(),
        0x3f82
    );
    assert_eq!(<bf16 as Grad<f32>>::round_from(-3.0).to_bits(), 0xc040);
    // f16: 1 + 2⁻¹¹ ties to 1; 1 + 3·2⁻¹¹ → 1 + 2⁻⁹.
    assert_eq!(
        <f16 as Grad<f32>>::round_from(1.0 + 2f32.powi(-11)).to_bits(),
        0x3c00
    );
    assert_eq!(
        <f16 as Grad<f32>>::round_from(1.0 + 3.0 * 2f32.powi(-11)).to_bits(),
        0x3c02
    );
    assert_eq!(<f16 as Grad<f32>>::round_from(0.5).to_bits(), 0x3800);
}

#[test]
fn fast_bounds_are_the_documented_ones() {
    assert_eq!(Precision::fast_bound::<f32>(), 2f64.powi(-20));
    assert_eq!(Precision::fast_bound::<f64>(), 2f64.powi(-47));
}

/// Dividing by a power of two is exact, so a scaled step on 2·g equals the unscaled step on g, bit for bit.
#[test]
fn grad_scale_divides_the_gradients() {
    let k = Kernels::best();
    let g: Vec<f32> = (0..100).map(|i| (i as f32 - 50.0) * 0.37).collect();
    let g2: Vec<f32> = g.iter().map(|x| x * 2.0).collect();
    let h = Hyper::<f32>::new(0.1, 0.0, 1, 0.0, 1e-10, false, EpsPlacement::Outside);
    let (mut p1, mut s1) = (vec![1.0f32; 100], vec![0.0f32; 100]);
    let (mut p2, mut s2) = (p1.clone(), s1.clone());
    k.update_with(
        &mut p1,
        &g,
        &mut s1,
        None::<&mut [NoCopy]>,
        &h,
        Precision::Exact,
    )
    .unwrap();
    k.update_with(
        &mut p2,
        &g2,
        &mut s2,
        None::<&mut [NoCopy]>,
        &h.with_grad_scale(2.0),
        Precision::Exact,
    )
    .unwrap();
    assert_eq!(p1, p2);
    assert_eq!(s1, s2);
    assert_eq!(h.with_grad_scale(2.0).grad_scale, Some(2.0));
    // Without the scale, 2·g is a different step (so the comparison above is not vacuous).
    let (mut p3, mut s3) = (vec![1.0f32; 100], vec![0.0f32; 100]);
    k.update_with(
        &mut p3,
        &g2,
        &mut s3,
        None::<&mut [NoCopy]>,
        &h,
        Precision::Exact,
    )
    .unwrap();
    assert_ne!(s3, s1);
}

#[test]
fn length_mismatch_names_the_lengths() {
    let e = LengthMismatch {
        params: 3,
        grads: 4,
        state: 5,
    };
    assert_eq!(e.to_string(), "length mismatch: params 3, grads 4, state 5");
}

/// The mixed reference writes the copy-out (the updated parameters rounded to nearest even) when one is given,
/// checks its length, and ignores a `NoCopy` "copy-out" of any length.
#[test]
fn reference_update_mixed_writes_the_copy_out() {
    use adagrad_kernels::reference::update_mixed;
    let h = Hyper::<f32>::new(0.1, 0.0, 1, 0.0, 1e-10, false, EpsPlacement::Outside);
    let g = [
        bf16::from_f32(0.5),
        bf16::from_f32(-0.25),
        bf16::from_f32(3.0),
    ];
    let (mut p, mut s) = ([1.0f32, 2.0, 3.0], [0.0f32; 3]);
    let mut out = [bf16::ZERO; 3];
    update_mixed(&mut p, &g, &mut s, Some(&mut out[..]), &h).unwrap();
    assert_ne!(p, [1.0, 2.0, 3.0]);
    for (o, x) in out.iter().zip(p) {
        assert_eq!(o.to_bits(), bf16::from_f32(x).to_bits());
    }
    let mut short = [bf16::ZERO; 2];
    assert!(update_mixed(&mut p, &g, &mut s, Some(&mut short[..]), &h).is_err());
    let (p_before, s_before) = (p, s);
    let mut none = [NoCopy; 1];
    update_mixed(&mut p, &g, &mut s, Some(&mut none[..]), &h).unwrap();
    assert_ne!(p, p_before);
    assert_ne!(s, s_before);
}

/// A `NoCopy` "copy-out" is ignored by the dispatched step too, whatever its length; Debug names path and prefetch.
#[test]
fn kernels_ignore_a_nocopy_copy_out_and_debug_names_the_path() {
    use adagrad_kernels::Isa;
    let h = Hyper::<f32>::new(0.1, 0.0, 1, 0.0, 1e-10, false, EpsPlacement::Outside);
    for isa in Isa::available() {
        let k = Kernels::new(isa).unwrap();
        let (mut p, mut s) = ([1.0f32; 3], [0.0f32; 3]);
        let mut none = [NoCopy; 1];
        k.update_with(
            &mut p,
            &[0.5f32; 3],
            &mut s,
            Some(&mut none[..]),
            &h,
            Precision::Exact,
        )
        .unwrap();
        assert_eq!(s, [0.25; 3]);
    }
    let k = Kernels::new(Isa::Scalar).unwrap().with_prefetch(4096);
    assert_eq!(format!("{k:?}"), "Kernels { isa: Scalar, prefetch: 4096 }");
}
