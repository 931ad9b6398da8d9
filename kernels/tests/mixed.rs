//! Mixed precision: f32 parameters and state with bf16 / f16 gradients and an optional bf16 / f16 copy-out, on
//! every path, bit for bit against the reference applied to the widened gradients, and the copy-out against
//! converting afterwards.

use adagrad_kernels::{
    CopyOut, EpsPlacement, Grad, Hyper, Isa, Kernels, NoCopy, Precision, bf16, bf16_bits_rne, f16,
    reference,
};
mod common;

use common::{kernels_or_skip, same_f32};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A 16-bit gradient format with its special values.
trait Half: Grad<f32> + CopyOut<f32> + PartialEq {
    fn from_f32(x: f32) -> Self;
    fn bits(self) -> u16;
}
impl Half for bf16 {
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
    fn bits(self) -> u16 {
        self.to_bits()
    }
}
impl Half for f16 {
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
    fn bits(self) -> u16 {
        self.to_bits()
    }
}

const SPECIALS: [f32; 12] = [
    0.0,
    -0.0,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::NAN,
    1e-40,
    6e-8,
    1e-5,
    65504.0,
    7e4,
    1e30,
    -3.0e38,
];

fn value(rng: &mut StdRng, special: f64) -> f32 {
    if rng.gen_bool(special) {
        SPECIALS[rng.gen_range(0..SPECIALS.len())]
    } else {
        10f32.powf(rng.gen_range(-4.0..2.0)) * if rng.gen_bool(0.5) { 1.0 } else { -1.0 }
    }
}

fn same16<O: Half>(a: &[O], b: &[O]) -> bool {
    a.iter().zip(b).all(|(x, y)| x.bits() == y.bits())
}

/// One case: the path's result equals the reference's, and the copy-out equals converting the reference's
/// parameters afterwards.
#[allow(clippy::too_many_arguments)]
fn check<G: Half, O: Half>(
    k: &Kernels,
    p: &[f32],
    g: &[G],
    s: &[f32],
    h: &Hyper<f32>,
    pr: Precision,
    off: usize,
    what: &str,
) {
    let n = p.len() - off;
    let (mut rp, mut rs) = (p.to_vec(), s.to_vec());
    reference::update_mixed::<f32, G, NoCopy>(&mut rp[off..], &g[off..], &mut rs[off..], None, h)
        .unwrap();
    // Without copy-out.
    let (mut kp, mut ks) = (p.to_vec(), s.to_vec());
    k.update_with::<f32, G, NoCopy>(&mut kp[off..], &g[off..], &mut ks[off..], None, h, pr)
        .unwrap();
    if pr == Precision::Exact {
        assert!(
            same_f32(&kp, &rp) && same_f32(&ks, &rs),
            "{what}: {} n {n} off {off}: params/state differ",
            k.isa()
        );
    }
    // With copy-out into a buffer with guards on both sides.
    let mut out = vec![O::from_f32(7.0); n + 2];
    let (mut cp, mut cs) = (p.to_vec(), s.to_vec());
    k.update_with(
        &mut cp[off..],
        &g[off..],
        &mut cs[off..],
        Some(&mut out[1..n + 1]),
        h,
        pr,
    )
    .unwrap();
    // A step with a copy-out runs Exact even when Fast is asked for (Fast measured no faster there).
    assert!(
        same_f32(&cp, &rp) && same_f32(&cs, &rs),
        "{what}: {} with copy-out differs from the reference",
        k.isa()
    );
    let converted: Vec<O> = cp[off..]
        .iter()
        .map(|&x| <O as CopyOut<f32>>::narrow(x))
        .collect();
    assert!(
        same16(&out[1..n + 1], &converted),
        "{what}: {} n {n}: copy-out differs from converting",
        k.isa()
    );
    assert!(
        out[0].bits() == O::from_f32(7.0).bits() && out[n + 1].bits() == O::from_f32(7.0).bits(),
        "guards"
    );
}

fn suite<G: Half>(isa: Isa, test: &str) {
    let Some(k) = kernels_or_skip(isa, test) else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(0xbf16 ^ isa as u64);
    let mut hs = Vec::new();
    for placement in [EpsPlacement::Outside, EpsPlacement::Inside] {
        for (wd, maximize) in [(0.0, false), (0.1, true)] {
            let h = Hyper::<f32>::new(0.05, 0.01, 3, wd, 1e-8, maximize, placement);
            hs.push(h);
            hs.push(h.with_grad_scale(1024.0));
        }
    }
    for len in (0..=300).chain([4095, 4096, 4097]) {
        let off = len % 16;
        let special = if len % 3 == 0 { 0.1 } else { 0.0 };
        let p: Vec<f32> = (0..off + len).map(|_| value(&mut rng, special)).collect();
        let g: Vec<G> = (0..off + len)
            .map(|_| G::from_f32(value(&mut rng, special)))
            .collect();
        let s: Vec<f32> = (0..off + len)
            .map(|_| value(&mut rng, special).abs())
            .collect();
        let h = &hs[len % hs.len()];
        for pr in [Precision::Exact, Precision::Fast] {
            check::<G, bf16>(&k, &p, &g, &s, h, pr, off, test);
            check::<G, f16>(&k, &p, &g, &s, h, pr, off, test);
        }
    }
    // Many steps, state carried over, every hyperparameter set.
    for h in &hs {
        let (mut rp, mut rs) = (vec![0.5f32; 203], vec![0.0f32; 203]);
        let (mut kp, mut ks) = (rp.clone(), rs.clone());
        let mut out = vec![<G as Grad<f32>>::ZERO_VALUE; 203];
        for _ in 0..50 {
            let g: Vec<G> = (0..203)
                .map(|_| G::from_f32(value(&mut rng, 0.0)))
                .collect();
            reference::update_mixed::<f32, G, NoCopy>(&mut rp, &g, &mut rs, None, h).unwrap();
            k.update_with(&mut kp, &g, &mut ks, Some(&mut out), h, Precision::Exact)
                .unwrap();
        }
        assert!(
            same_f32(&kp, &rp) && same_f32(&ks, &rs),
            "{test}: 50 steps differ ({h:?})"
        );
        let converted: Vec<G> = kp.iter().map(|&x| <G as CopyOut<f32>>::narrow(x)).collect();
        assert!(same16(&out, &converted));
    }
}

/// The copy-out length is checked before anything is written.
#[test]
fn wrong_copy_out_length_changes_nothing() {
    for isa in common::paths("mixed") {
        let k = Kernels::new(isa).unwrap();
        let h = Hyper::<f32>::new(0.1, 0.0, 1, 0.0, 1e-10, false, EpsPlacement::Outside);
        let (mut p, mut s, g) = (
            vec![1.0f32; 33],
            vec![0.5f32; 33],
            vec![bf16::from_f32(1.0); 33],
        );
        let mut out = vec![f16::from_f32(9.0); 32];
        assert!(
            k.update_with(&mut p, &g, &mut s, Some(&mut out), &h, Precision::Exact)
                .is_err()
        );
        assert!(p.iter().all(|&x| x == 1.0) && s.iter().all(|&x| x == 0.5));
        assert!(out.iter().all(|&x| x == f16::from_f32(9.0)));
    }
}

/// bf16 rounding is to nearest, ties to even, checked against an independent computation in f64 over a stride
/// of every f32 bit pattern; it equals `half::bf16::from_f32` except on exact ties, which `half` rounds away
/// from zero.
#[test]
fn bf16_rounding_is_nearest_even() {
    let mut ties = 0;
    for bits in (0..=u32::MAX).step_by(251).chain([
        0x3F80_8000,
        0x3F81_8000,
        0x7F7F_8000,
        0xFF7F_FFFF,
        0x7F80_0001,
    ]) {
        let x = f32::from_bits(bits);
        let ours = bf16_bits_rne(x);
        let theirs = bf16::from_f32(x).to_bits();
        if x.is_nan() {
            assert!(
                bf16::from_bits(ours).is_nan() && ours == theirs,
                "{bits:#x}"
            );
            continue;
        }
        let lo = f32::from_bits(bits & 0xFFFF_0000);
        let hi_bits = (bits & 0xFFFF_0000) + 0x1_0000;
        // Past the largest finite bf16 the next value up is 2^128 (unbounded exponent); it overflows to ±∞.
        let hi = if hi_bits & 0x7FFF_FFFF == 0x7F80_0000 {
            2f64.powi(128).copysign(x as f64)
        } else {
            f32::from_bits(hi_bits) as f64
        };
        let (dl, dh) = ((x as f64 - lo as f64).abs(), (hi - x as f64).abs());
        let want = if dl < dh || (dl == dh && (bits >> 16) & 1 == 0) {
            bits >> 16
        } else {
            hi_bits >> 16
        };
        assert_eq!(ours as u32, want, "{bits:#x}");
        if dl == dh && dl != 0.0 {
            ties += 1;
        } else {
            assert_eq!(ours, theirs, "{bits:#x}: differs from half on a non-tie");
        }
    }
    assert!(ties > 0);
}

macro_rules! matrix {
    ($($name:ident: $isa:expr, $g:ty;)*) => {$(
        #[test]
        fn $name() {
            suite::<$g>($isa, stringify!($name));
        }
    )*};
}

matrix! {
    mixed_scalar_bf16: Isa::Scalar, bf16;
    mixed_scalar_f16: Isa::Scalar, f16;
    mixed_portable_bf16: Isa::Portable, bf16;
    mixed_portable_f16: Isa::Portable, f16;
    mixed_avx2_bf16: Isa::Avx2, bf16;
    mixed_avx2_f16: Isa::Avx2, f16;
    mixed_avx512_bf16: Isa::Avx512, bf16;
    mixed_avx512_f16: Isa::Avx512, f16;
}
