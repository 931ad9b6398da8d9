//! The differential suite: every path against the scalar reference, bit for bit (Exact) or within the
//! documented bound (Fast). One test per (ISA × dtype × precision × eps placement), stamped by `matrix!` so a
//! failure names its cell; each sweeps weight decay and maximize on and off.
//!
//! A path the CPU lacks prints "skipped"; `ADAGRAD_REQUIRE_ISA=avx2,avx512` turns that into a failure.

use adagrad_kernels::{EpsPlacement, Float, Hyper, Isa, Kernels, Precision};
mod common;

use common::kernels_or_skip;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Test values for one dtype, generated from f64 and rounded once.
trait TestFloat: Float {
    const SPECIALS: &'static [f64];
    fn bits(self) -> u64;
    fn is_nan(self) -> bool;
    fn ulp(x: f64) -> f64 {
        x.abs() * 2f64.powi(1 - Self::MANTISSA_BITS as i32) + Self::MIN_SUB
    }
    const MIN_SUB: f64;
}
impl TestFloat for f32 {
    const SPECIALS: &'static [f64] = &[
        0.0,
        -0.0,
        1e-45,
        -1e-45,
        1e-40,
        1.1754942e-38,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        1e30,
        -1e30,
        1e-30,
        -1e-30,
        3.4e38,
        1e20,
    ];
    fn bits(self) -> u64 {
        self.to_bits() as u64
    }
    fn is_nan(self) -> bool {
        self.is_nan()
    }
    const MIN_SUB: f64 = 1.401298464324817e-45;
}
impl TestFloat for f64 {
    const SPECIALS: &'static [f64] = &[
        0.0,
        -0.0,
        5e-324,
        -5e-324,
        1e-310,
        2.2250738585072e-308,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        1e30,
        -1e30,
        1e-30,
        -1e-30,
        1e300,
        1.7e308,
    ];
    fn bits(self) -> u64 {
        self.to_bits()
    }
    fn is_nan(self) -> bool {
        self.is_nan()
    }
    const MIN_SUB: f64 = 5e-324;
}

/// A value: mostly ordinary (sign, magnitude 1e-4..1e2), sometimes special with probability `special`.
fn value<T: TestFloat>(rng: &mut StdRng, special: f64) -> T {
    if rng.gen_bool(special) {
        T::from_f64(T::SPECIALS[rng.gen_range(0..T::SPECIALS.len())])
    } else {
        let m: f64 = rng.gen_range(-4.0..2.0);
        let x = 10f64.powf(m) * if rng.gen_bool(0.5) { 1.0 } else { -1.0 };
        T::from_f64(x)
    }
}

/// Buffers with `offset` elements of padding in front (a misaligned start) and guards behind.
struct Case<T> {
    p: Vec<T>,
    g: Vec<T>,
    s: Vec<T>,
    off: usize,
    len: usize,
}

impl<T: TestFloat> Case<T> {
    fn new(rng: &mut StdRng, len: usize, off: usize, special: f64) -> Self {
        let total = off + len + 8;
        let p = (0..total).map(|_| value::<T>(rng, special)).collect();
        let g = (0..total).map(|_| value::<T>(rng, special)).collect();
        // State is a sum of squares: non-negative, sometimes zero, sometimes special.
        let s = (0..total)
            .map(|i| {
                if i % 5 == 0 {
                    <T as Float>::ZERO
                } else {
                    let v: T = value(rng, special);
                    if v < <T as Float>::ZERO { -v } else { v }
                }
            })
            .collect();
        Case { p, g, s, off, len }
    }
    fn regrad(&mut self, rng: &mut StdRng, special: f64) {
        for x in &mut self.g {
            *x = value(rng, special);
        }
    }
    fn step(&mut self, k: &Kernels, h: &Hyper<T>, pr: Precision) {
        let r = self.off..self.off + self.len;
        k.update(
            &mut self.p[r.clone()],
            &self.g[r.clone()],
            &mut self.s[r],
            h,
            pr,
        )
        .unwrap();
    }
}

fn same_bits<T: TestFloat>(a: T, b: T) -> bool {
    a.bits() == b.bits() || (a.is_nan() && b.is_nan())
}

/// Weight decay and maximize on and off; three (lr, lr_decay, eps) sets including lr = 0; with and without a
/// gradient scale.
fn hypers<T: Float>(placement: EpsPlacement, t: u64) -> Vec<Hyper<T>> {
    let mut v = Vec::new();
    for &wd in &[0.0, 0.1] {
        for &maximize in &[false, true] {
            for &(lr, decay, eps) in &[(0.01, 0.0, 1e-10), (0.1, 0.01, 1e-8), (0.0, 0.0, 1e-7)] {
                let h = Hyper::new(lr, decay, t, wd, eps, maximize, placement);
                v.push(h);
                v.push(h.with_grad_scale(if maximize { 3.0 } else { 65536.0 }));
            }
        }
    }
    v
}

/// Runs `steps` steps on a copy with the reference and with `k`, comparing every element and the guards.
fn compare_exact<T: TestFloat>(
    k: &Kernels,
    case: &Case<T>,
    rng: &mut StdRng,
    h: &Hyper<T>,
    steps: usize,
    sp: f64,
) {
    let (mut a, mut b) = (
        Case {
            p: case.p.clone(),
            g: case.g.clone(),
            s: case.s.clone(),
            ..*case
        },
        Case {
            p: case.p.clone(),
            g: case.g.clone(),
            s: case.s.clone(),
            ..*case
        },
    );
    let reference = Kernels::new(Isa::Scalar).unwrap();
    for step in 0..steps {
        a.step(&reference, h, Precision::Exact);
        b.step(k, h, Precision::Exact);
        for i in 0..a.p.len() {
            assert!(
                same_bits(a.p[i], b.p[i]) && same_bits(a.s[i], b.s[i]),
                "{} {}: len {} off {} step {step} elem {i}: ref p {:?} s {:?}, got p {:?} s {:?} (g {:?}, {h:?})",
                k.isa(),
                T::NAME,
                a.len,
                a.off,
                a.p[i],
                a.s[i],
                b.p[i],
                b.s[i],
                a.g[i],
            );
        }
        let g: Vec<T> = (0..a.g.len()).map(|_| value(rng, sp)).collect();
        a.g.clone_from(&g);
        b.g = g;
    }
}

fn exact<T: TestFloat>(isa: Isa, placement: EpsPlacement, test: &str) {
    let Some(k) = kernels_or_skip(isa, test) else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(0x5eed ^ isa as u64);
    let hs = hypers::<T>(placement, 3);
    // Every length 0..=300 at a start offset that cycles through 0..16, with special values mixed in, and the
    // software prefetch (a separate loop in the body) off and at several distances.
    for len in 0..=300 {
        let case = Case::<T>::new(&mut rng, len, len % 16, 0.1);
        let k = k.with_prefetch(PREFETCH[len % PREFETCH.len()]);
        compare_exact(&k, &case, &mut rng, &hs[len % hs.len()], 2, 0.1);
    }
    // Every offset 0..16 for a few lengths, every hyperparameter set.
    for &len in &[1, 7, 67, 300] {
        for off in 0..16 {
            let case = Case::<T>::new(&mut rng, len, off, 0.05);
            for h in &hs {
                compare_exact(&k, &case, &mut rng, h, 2, 0.05);
            }
        }
    }
    // 50 steps so the state carries over, ordinary values only (specials would saturate the state).
    for h in &hs {
        let case = Case::<T>::new(&mut rng, 257, 3, 0.0);
        compare_exact(&k, &case, &mut rng, h, 50, 0.0);
    }
    // Large lengths: multiples of the unroll width (4 vectors of up to 16 lanes) and ±1, every prefetch distance.
    for &len in &[4096, 4095, 4097, 65536 + 64, 65535] {
        for pf in PREFETCH {
            let case = Case::<T>::new(&mut rng, len, 5, 0.01);
            let k = k.with_prefetch(pf);
            compare_exact(&k, &case, &mut rng, &hs[len % hs.len()], 3, 0.01);
        }
    }
}

/// Software prefetch distances the exact tests sweep: none, less than one unrolled iteration, the table's
/// values, and past the end of most buffers.
const PREFETCH: [usize; 5] = [0, 64, 4096, 8192, 1 << 20];

/// Fast mode: the state is bit-identical to Exact; each parameter is within the documented bound of the
/// update computed in f64, plus one unit of the final rounding.
fn fast<T: TestFloat>(isa: Isa, placement: EpsPlacement, test: &str) {
    let Some(k) = kernels_or_skip(isa, test) else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(0xfa57 ^ isa as u64);
    let bound = Precision::fast_bound::<T>();
    let mut worst = 0.0f64;
    for (hi, h) in hypers::<T>(placement, 4).iter().enumerate() {
        for len in (0..=300).chain([4096, 4097]) {
            let off = (len + hi) % 16;
            let mut fast = Case::<T>::new(&mut rng, len, off, 0.0);
            for _ in 0..3 {
                let before = fast.p.clone();
                let s_before = fast.s.clone();
                // Exact from the same inputs: the state must come out bit-identical.
                let mut exact = Case {
                    p: before.clone(),
                    g: fast.g.clone(),
                    s: s_before.clone(),
                    off,
                    len,
                };
                exact.step(&k, h, Precision::Exact);
                fast.step(&k, h, Precision::Fast);
                for i in off..off + len {
                    assert_eq!(
                        exact.s[i].bits(),
                        fast.s[i].bits(),
                        "{isa} fast state differs at {i}"
                    );
                    // The update in f64 from the inputs this step saw.
                    let mut g = fast.g[i].to_f64();
                    let p0 = before[i].to_f64();
                    if let Some(scale) = h.grad_scale {
                        g = (fast.g[i] / scale).to_f64();
                    }
                    if h.maximize {
                        g = -g;
                    }
                    if h.weight_decay != <T as Float>::ZERO {
                        g = T::from_f64(p0)
                            .mul_add(h.weight_decay, T::from_f64(g))
                            .to_f64();
                    }
                    let s = fast.s[i].to_f64();
                    let eps = h.eps.to_f64();
                    let d = match placement {
                        EpsPlacement::Outside => s.sqrt() + eps,
                        EpsPlacement::Inside => (s + eps).sqrt(),
                    };
                    let u = h.clr.to_f64() * g / d;
                    let want = p0 - u;
                    let got = fast.p[i].to_f64();
                    let err = (got - want).abs();
                    let allowed = bound * u.abs() + T::ulp(want);
                    assert!(
                        err <= allowed,
                        "{isa} {} fast: elem {i} of {len}: p0 {p0} g {g} s {s_before:?}->{s} got {got} want {want} err {err} > {allowed}",
                        T::NAME,
                        s_before = s_before[i]
                    );
                    if u != 0.0 {
                        worst = worst.max(((got - want).abs() - T::ulp(want)).max(0.0) / u.abs());
                    }
                }
                fast.regrad(&mut rng, 0.0);
            }
        }
    }
    // g = 0 with G = 0 gives exactly the Exact update (no 0·∞), on every lane and the tail.
    for h in &hypers::<T>(placement, 1) {
        if h.weight_decay != <T as Float>::ZERO {
            continue; // with weight decay the effective gradient is not zero
        }
        for len in [1, 5, 16, 37, 64] {
            let mut p: Vec<T> = (0..len).map(|i| T::from_f64(i as f64 - 3.5)).collect();
            p[0] = -<T as Float>::ZERO;
            let (g, mut s) = (vec![<T as Float>::ZERO; len], vec![<T as Float>::ZERO; len]);
            let (mut pe, mut se) = (p.clone(), s.clone());
            k.update(&mut p, &g, &mut s, h, Precision::Fast).unwrap();
            k.update(&mut pe, &g, &mut se, h, Precision::Exact).unwrap();
            for i in 0..len {
                assert_eq!(
                    p[i].bits(),
                    pe[i].bits(),
                    "{isa} fast g=0 s=0 at {i} ({h:?})"
                );
                assert_eq!(s[i].bits(), se[i].bits());
            }
        }
    }
    eprintln!("{test}: worst relative update error {worst:.3e} (bound {bound:.3e})");
}

/// Fast at the edges of the estimates' range: denominators (or `G + ε` under the root) from the smallest
/// subnormal to the largest finite value, on both sides of every power-of-two limit, each filling whole vectors
/// (so a vector is entirely inside or outside) and mixed in one vector. Wherever Exact's update is finite, Fast is
/// within the documented bound; a zero gradient gives exactly Exact's (zero) update; the state is Exact's.
fn fast_edges<T: TestFloat>(isa: Isa, placement: EpsPlacement, test: &str) {
    let Some(k) = kernels_or_skip(isa, test) else {
        return;
    };
    let bound = Precision::fast_bound::<T>();
    let big = T::MANTISSA_BITS == 53;
    let mut xs: Vec<f64> = vec![0.0, T::MIN_SUB, 1e-40, 1.0, 3.0];
    for e in [
        -1022i32, -1021, -1020, -1000, -300, -127, -126, -125, -124, 124, 125, 126, 127, 300, 1000,
        1020, 1022, 1023,
    ] {
        xs.push(2f64.powi(e));
        xs.push(2f64.powi(e) * 1.5);
    }
    xs.push(if big { f64::MAX } else { f32::MAX as f64 });
    // Only values the type holds (finite, as T).
    let xs: Vec<T> = xs
        .into_iter()
        .map(T::from_f64)
        .filter(|x| x.to_f64().is_finite())
        .collect();
    let eps_list: Vec<T> = [T::MIN_SUB, 1e-40, 1e-300, 1e-10, 1.0, 1e38, 1e300]
        .into_iter()
        .map(T::from_f64)
        .filter(|e| e.to_f64().is_finite() && e.to_f64() > 0.0)
        .collect();
    let check = |s0: &[T], g: &[T], eps: T| {
        let h = Hyper::<T>::new(0.1, 0.0, 1, 0.0, eps.to_f64(), false, placement);
        let n = s0.len();
        let p0 = vec![T::from_f64(1.0); n];
        let (mut pe, mut se) = (p0.clone(), s0.to_vec());
        let (mut pf, mut sf) = (p0.clone(), s0.to_vec());
        k.update(&mut pe, g, &mut se, &h, Precision::Exact).unwrap();
        k.update(&mut pf, g, &mut sf, &h, Precision::Fast).unwrap();
        for i in 0..n {
            assert_eq!(se[i].bits(), sf[i].bits(), "{isa} fast state at {i}");
            let what = format!(
                "{isa} {} {placement:?} fast: s {:e} eps {:e} g {:e}: exact {:e} fast {:e}",
                T::NAME,
                s0[i].to_f64(),
                eps.to_f64(),
                g[i].to_f64(),
                pe[i].to_f64(),
                pf[i].to_f64()
            );
            if g[i].to_f64() == 0.0 {
                assert_eq!(pf[i].bits(), pe[i].bits(), "{what}: zero gradient");
                continue;
            }
            if !pe[i].to_f64().is_finite() {
                continue;
            }
            let u = (p0[i].to_f64() - pe[i].to_f64()).abs();
            let err = (pf[i].to_f64() - pe[i].to_f64()).abs();
            assert!(
                err <= bound * u * 1.01 + 2.0 * T::ulp(pe[i].to_f64()),
                "{what}: error {err:e} > bound"
            );
        }
    };
    let lanes = 37; // several vectors and a tail on every path
    for &eps in &eps_list {
        for &x in &xs {
            for gv in [0.0, 1e-3, -2.5] {
                let g = vec![T::from_f64(gv); lanes];
                check(&vec![x; lanes], &g, eps);
            }
        }
        // Every edge value in one buffer: vectors that mix in-range and out-of-range lanes.
        let s: Vec<T> = (0..lanes).map(|i| xs[i % xs.len()]).collect();
        let g: Vec<T> = (0..lanes)
            .map(|i| T::from_f64([0.0, 1e-3, -2.5][i % 3]))
            .collect();
        check(&s, &g, eps);
    }
}

macro_rules! matrix {
    ($($name:ident: $kind:ident, $isa:expr, $t:ty, $placement:expr;)*) => {$(
        #[test]
        fn $name() {
            $kind::<$t>($isa, $placement, stringify!($name));
        }
    )*};
}

matrix! {
    exact_scalar_f32_outside: exact, Isa::Scalar, f32, EpsPlacement::Outside;
    exact_scalar_f32_inside: exact, Isa::Scalar, f32, EpsPlacement::Inside;
    exact_scalar_f64_outside: exact, Isa::Scalar, f64, EpsPlacement::Outside;
    exact_scalar_f64_inside: exact, Isa::Scalar, f64, EpsPlacement::Inside;
    exact_portable_f32_outside: exact, Isa::Portable, f32, EpsPlacement::Outside;
    exact_portable_f32_inside: exact, Isa::Portable, f32, EpsPlacement::Inside;
    exact_portable_f64_outside: exact, Isa::Portable, f64, EpsPlacement::Outside;
    exact_portable_f64_inside: exact, Isa::Portable, f64, EpsPlacement::Inside;
    exact_avx2_f32_outside: exact, Isa::Avx2, f32, EpsPlacement::Outside;
    exact_avx2_f32_inside: exact, Isa::Avx2, f32, EpsPlacement::Inside;
    exact_avx2_f64_outside: exact, Isa::Avx2, f64, EpsPlacement::Outside;
    exact_avx2_f64_inside: exact, Isa::Avx2, f64, EpsPlacement::Inside;
    exact_avx512_f32_outside: exact, Isa::Avx512, f32, EpsPlacement::Outside;
    exact_avx512_f32_inside: exact, Isa::Avx512, f32, EpsPlacement::Inside;
    exact_avx512_f64_outside: exact, Isa::Avx512, f64, EpsPlacement::Outside;
    exact_avx512_f64_inside: exact, Isa::Avx512, f64, EpsPlacement::Inside;
    fast_portable_f32_outside: fast, Isa::Portable, f32, EpsPlacement::Outside;
    fast_portable_f32_inside: fast, Isa::Portable, f32, EpsPlacement::Inside;
    fast_portable_f64_outside: fast, Isa::Portable, f64, EpsPlacement::Outside;
    fast_portable_f64_inside: fast, Isa::Portable, f64, EpsPlacement::Inside;
    fast_avx2_f32_outside: fast, Isa::Avx2, f32, EpsPlacement::Outside;
    fast_avx2_f32_inside: fast, Isa::Avx2, f32, EpsPlacement::Inside;
    fast_avx2_f64_outside: fast, Isa::Avx2, f64, EpsPlacement::Outside;
    fast_avx2_f64_inside: fast, Isa::Avx2, f64, EpsPlacement::Inside;
    fast_avx512_f32_outside: fast, Isa::Avx512, f32, EpsPlacement::Outside;
    fast_avx512_f32_inside: fast, Isa::Avx512, f32, EpsPlacement::Inside;
    fast_avx512_f64_outside: fast, Isa::Avx512, f64, EpsPlacement::Outside;
    fast_avx512_f64_inside: fast, Isa::Avx512, f64, EpsPlacement::Inside;
    edges_portable_f32_outside: fast_edges, Isa::Portable, f32, EpsPlacement::Outside;
    edges_portable_f32_inside: fast_edges, Isa::Portable, f32, EpsPlacement::Inside;
    edges_portable_f64_outside: fast_edges, Isa::Portable, f64, EpsPlacement::Outside;
    edges_portable_f64_inside: fast_edges, Isa::Portable, f64, EpsPlacement::Inside;
    edges_avx2_f32_outside: fast_edges, Isa::Avx2, f32, EpsPlacement::Outside;
    edges_avx2_f32_inside: fast_edges, Isa::Avx2, f32, EpsPlacement::Inside;
    edges_avx2_f64_outside: fast_edges, Isa::Avx2, f64, EpsPlacement::Outside;
    edges_avx2_f64_inside: fast_edges, Isa::Avx2, f64, EpsPlacement::Inside;
    edges_avx512_f32_outside: fast_edges, Isa::Avx512, f32, EpsPlacement::Outside;
    edges_avx512_f32_inside: fast_edges, Isa::Avx512, f32, EpsPlacement::Inside;
    edges_avx512_f64_outside: fast_edges, Isa::Avx512, f64, EpsPlacement::Outside;
    edges_avx512_f64_inside: fast_edges, Isa::Avx512, f64, EpsPlacement::Inside;
}
