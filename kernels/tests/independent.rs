//! Every path, the scalar one included, against an independent specification: the f32 update computed op by op
//! in f64 and rounded to f32 once per op (exact for +, −, ×, ÷ and √, since 53 ≥ 2·24 + 2; the fused multiply-add
//! through an exact two-sum and an explicit midpoint test), written here from the README's formula and sharing no
//! code with `reference.rs`. Also the bugs this suite once missed: SIMD bf16 copy-out on exact ties, and the order
//! of maximize and weight decay.

use adagrad_kernels::{EpsPlacement, Hyper, Isa, Precision, bf16};
mod common;

use common::kernels_or_skip;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn next_toward(x: f32, up: bool) -> f32 {
    if up { x.next_up() } else { x.next_down() }
}

/// fma(a, b, c) rounded once to f32, computed without an f32 fma.
fn fma32(a: f32, b: f32, c: f32) -> f32 {
    let ab = a as f64 * b as f64; // exact: 24 + 24 bits
    let c = c as f64;
    let hi = ab + c;
    if !hi.is_finite() {
        return hi as f32;
    }
    let bb = hi - ab;
    let lo = (ab - (hi - bb)) + (c - bb); // hi + lo = ab + c exactly
    let r = hi as f32;
    if lo == 0.0 || r as f64 == hi || !r.is_finite() {
        return r;
    }
    // hi lies strictly between two f32s; only if it is their midpoint can lo change the rounding.
    let other = next_toward(r, (r as f64) < hi);
    if (r as f64 + other as f64) / 2.0 == hi {
        let up = lo > 0.0;
        return if up { r.max(other) } else { r.min(other) };
    }
    r
}

fn add(a: f32, b: f32) -> f32 {
    (a as f64 + b as f64) as f32
}
fn sub(a: f32, b: f32) -> f32 {
    (a as f64 - b as f64) as f32
}
fn mul(a: f32, b: f32) -> f32 {
    (a as f64 * b as f64) as f32
}
fn div(a: f32, b: f32) -> f32 {
    (a as f64 / b as f64) as f32
}
fn sqrt(a: f32) -> f32 {
    (a as f64).sqrt() as f32
}

/// The specification, per element.
fn spec(p: f32, g: f32, s: f32, h: &Hyper<f32>) -> (f32, f32) {
    let mut g = g;
    if let Some(scale) = h.grad_scale {
        g = div(g, scale);
    }
    if h.maximize {
        g = -g;
    }
    if h.weight_decay != 0.0 {
        g = fma32(p, h.weight_decay, g);
    }
    let s = fma32(g, g, s);
    let d = match h.eps_placement {
        EpsPlacement::Outside => add(sqrt(s), h.eps),
        EpsPlacement::Inside => sqrt(add(s, h.eps)),
    };
    (sub(p, div(mul(h.clr, g), d)), s)
}

fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

fn value(rng: &mut StdRng) -> f32 {
    const SPECIAL: [f32; 10] = [
        0.0,
        -0.0,
        1e-45,
        1e-40,
        f32::MIN_POSITIVE,
        1e30,
        -1e30,
        3.4e38,
        f32::INFINITY,
        f32::NAN,
    ];
    if rng.gen_bool(0.05) {
        SPECIAL[rng.gen_range(0..SPECIAL.len())]
    } else {
        let x = 10f32.powf(rng.gen_range(-6.0..3.0));
        if rng.gen_bool(0.5) { x } else { -x }
    }
}

fn the_fma_helper_is_right() {
    let mut rng = StdRng::seed_from_u64(1);
    for _ in 0..200_000 {
        let (a, b, c) = (value(&mut rng), value(&mut rng), value(&mut rng));
        assert!(
            same(fma32(a, b, c), a.mul_add(b, c)),
            "fma32({a:e}, {b:e}, {c:e})"
        );
    }
    // Ties: a·b + c exactly half-way between two f32s, with a tiny extra term deciding.
    for (a, b, c) in [
        (1.0f32 + f32::EPSILON, 1.0 + f32::EPSILON, -1.0f32),
        (3.0, 1.0 / 3.0, -1.0),
    ] {
        assert!(same(fma32(a, b, c), a.mul_add(b, c)));
    }
}

#[test]
fn the_specification_helpers_agree_with_ieee() {
    the_fma_helper_is_right();
}

fn against_spec(isa: Isa, test: &str) {
    let Some(k) = kernels_or_skip(isa, test) else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(0x1de ^ isa as u64);
    for (case, len) in (0..=200usize).chain([1000, 4099]).enumerate() {
        let placement = if case % 2 == 0 {
            EpsPlacement::Outside
        } else {
            EpsPlacement::Inside
        };
        let mut h = Hyper::<f32>::new(
            [0.01, 0.1, 0.0][case % 3],
            0.0,
            1,
            [0.0, 0.1][case / 2 % 2],
            [1e-10, 1e-7][case / 4 % 2],
            case / 8 % 2 == 1,
            placement,
        );
        if case % 5 == 0 {
            h = h.with_grad_scale(1024.0);
        }
        let off = case % 16;
        let mut p: Vec<f32> = (0..off + len).map(|_| value(&mut rng)).collect();
        let mut s: Vec<f32> = (0..off + len).map(|_| value(&mut rng).abs()).collect();
        let (mut wp, mut ws) = (p.clone(), s.clone());
        for step in 0..5 {
            let g: Vec<f32> = (0..off + len).map(|_| value(&mut rng)).collect();
            k.update(
                &mut p[off..],
                &g[off..],
                &mut s[off..],
                &h,
                Precision::Exact,
            )
            .unwrap();
            for i in off..off + len {
                (wp[i], ws[i]) = spec(wp[i], g[i], ws[i], &h);
                assert!(
                    same(p[i], wp[i]) && same(s[i], ws[i]),
                    "{isa} len {len} step {step} elem {i}: got ({:e}, {:e}) spec ({:e}, {:e}); g {:e} {h:?}",
                    p[i],
                    s[i],
                    wp[i],
                    ws[i],
                    g[i]
                );
            }
        }
    }
}

/// bf16 copy-out of exact ties (the low 16 bits 0x8000) on every path, in the vector body and the tail: ties go
/// to the even neighbour; computed here from the bits, not with the crate's helper. lr = 0 leaves the parameters
/// as they are, so the copy-out sees exactly the values set.
fn copy_out_ties(isa: Isa, test: &str) {
    let Some(k) = kernels_or_skip(isa, test) else {
        return;
    };
    let want = |x: f32| -> u16 {
        let b = x.to_bits();
        if x.is_nan() {
            return ((b >> 16) | 0x40) as u16;
        }
        let (hi, lo) = (b >> 16, b & 0xFFFF);
        let up = lo > 0x8000 || (lo == 0x8000 && hi & 1 == 1);
        (hi + u32::from(up)) as u16
    };
    let h = Hyper::<f32>::new(0.0, 0.0, 1, 0.0, 1e-10, false, EpsPlacement::Outside);
    for len in [1usize, 7, 8, 15, 16, 17, 31, 64, 100, 257] {
        let p0: Vec<f32> = (0..len)
            .map(|i| {
                let hi = 0x3F80u32 + i as u32; // alternate even and odd upper halves
                let lo = [0x8000u32, 0x8000, 0x7FFF, 0x8001, 0x0000][i % 5];
                f32::from_bits((hi << 16) | lo) * if i % 3 == 0 { -1.0 } else { 1.0 }
            })
            .collect();
        let mut p = p0.clone();
        let g = vec![0.0f32; len];
        let mut s = vec![1.0f32; len];
        let mut out = vec![bf16::ZERO; len];
        k.update_with(&mut p, &g, &mut s, Some(&mut out), &h, Precision::Exact)
            .unwrap();
        for i in 0..len {
            assert_eq!(p[i].to_bits(), p0[i].to_bits());
            assert_eq!(
                out[i].to_bits(),
                want(p0[i]),
                "{isa}: len {len} elem {i}: {:#010x}",
                p0[i].to_bits()
            );
        }
    }
}

/// Maximize negates the gradient before weight decay is added (PyTorch's order): θ = 1, wd = 0.5, g = 0.25 gives
/// the effective gradient 0.5 − 0.25 = 0.25 and G = 0.0625; the other order would give (0.5 + 0.25)² = 0.5625.
fn maximize_then_decay(isa: Isa, test: &str) {
    let Some(k) = kernels_or_skip(isa, test) else {
        return;
    };
    for len in [1usize, 5, 16, 70] {
        for pr in [Precision::Exact, Precision::Fast] {
            let h = Hyper::<f32>::new(0.1, 0.0, 1, 0.5, 1e-10, true, EpsPlacement::Outside);
            let (mut p, g, mut s) = (vec![1.0f32; len], vec![0.25f32; len], vec![0.0f32; len]);
            k.update(&mut p, &g, &mut s, &h, pr).unwrap();
            for i in 0..len {
                assert_eq!(s[i], 0.0625, "{isa} {pr:?} len {len} elem {i}");
                // θ − 0.1·0.25/(0.25 + 1e-10) = 1 − 0.1 (to f32 rounding), i.e. about 0.9.
                assert!((p[i] - 0.9).abs() < 1e-6, "{isa} {pr:?}: {}", p[i]);
            }
        }
    }
}

macro_rules! per_isa {
    ($($name:ident: $f:ident, $isa:expr;)*) => {$(
        #[test]
        fn $name() {
            $f($isa, stringify!($name));
        }
    )*};
}

per_isa! {
    spec_scalar: against_spec, Isa::Scalar;
    spec_portable: against_spec, Isa::Portable;
    spec_avx2: against_spec, Isa::Avx2;
    spec_avx512: against_spec, Isa::Avx512;
    ties_scalar: copy_out_ties, Isa::Scalar;
    ties_portable: copy_out_ties, Isa::Portable;
    ties_avx2: copy_out_ties, Isa::Avx2;
    ties_avx512: copy_out_ties, Isa::Avx512;
    order_scalar: maximize_then_decay, Isa::Scalar;
    order_portable: maximize_then_decay, Isa::Portable;
    order_avx2: maximize_then_decay, Isa::Avx2;
    order_avx512: maximize_then_decay, Isa::Avx512;
}
