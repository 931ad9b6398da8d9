//! The lane trait and the one generic fused-update body written against it.
//!
//! Every SIMD path (portable, AVX2, AVX-512) is this body instantiated with that path's lane type inside a
//! `#[target_feature]` entry point; the math exists once here and once, scalar, in [`crate::reference`].

use crate::{EpsPlacement, Float, Hyper, Precision, reference};

/// A vector of `N` lanes of `T`. Every method is `unsafe` because the instructions behind it exist only on
/// CPUs with the type's ISA: callers must have checked it (the lane types are only used inside the
/// `#[target_feature]` entry points that [`crate::Kernels`] hands out after that check).
pub(crate) trait Lanes: Copy {
    type T: Float;
    /// Lanes per vector.
    const N: usize;
    /// Correct bits of [`Lanes::rsqrt_est`] and [`Lanes::recip_est`].
    const EST_BITS: u32;
    unsafe fn splat(x: Self::T) -> Self;
    /// Unaligned load of `N` elements.
    unsafe fn load(ptr: *const Self::T) -> Self;
    /// Unaligned store of `N` elements.
    unsafe fn store(self, ptr: *mut Self::T);
    unsafe fn add(self, b: Self) -> Self;
    unsafe fn sub(self, b: Self) -> Self;
    unsafe fn mul(self, b: Self) -> Self;
    /// `self · b + c`, rounded once.
    unsafe fn mul_add(self, b: Self, c: Self) -> Self;
    unsafe fn div(self, b: Self) -> Self;
    unsafe fn sqrt(self) -> Self;
    /// Flips the sign bit (so −(+0) = −0).
    unsafe fn neg(self) -> Self;
    /// An estimate of `1/√self` good to [`Lanes::EST_BITS`].
    unsafe fn rsqrt_est(self) -> Self;
    /// An estimate of `1/self` good to [`Lanes::EST_BITS`].
    unsafe fn recip_est(self) -> Self;
}

/// The widest vector any path uses (AVX-512 f32), for the Fast tail buffer.
const MAX_LANES: usize = 16;
/// Vectors per unrolled iteration.
pub(crate) const UNROLL: usize = 4;

/// Newton–Raphson steps that take an estimate of `est` bits to the precision of `T`.
const fn newton_steps(est: u32, target: u32) -> u32 {
    let (mut bits, mut steps) = (est, 0);
    // Each step roughly doubles the correct bits; the −1 accounts for the constant factor of the error.
    while bits < target {
        bits = 2 * bits - 1;
        steps += 1;
    }
    steps
}

/// The step's constants, splatted once.
#[derive(Clone, Copy)]
struct Consts<V> {
    clr: V,
    wd: V,
    eps: V,
    one: V,
    half: V,
    three_halves: V,
}

/// Applies one step to `p`, `g`, `s`: the generic body behind every SIMD entry point.
///
/// # Safety
/// The CPU supports `V`'s ISA, and `g.len() == p.len() == s.len()`.
#[inline(always)]
pub(crate) unsafe fn update<V: Lanes>(
    p: &mut [V::T],
    g: &[V::T],
    s: &mut [V::T],
    h: &Hyper<V::T>,
    precision: Precision,
) {
    debug_assert!(p.len() == g.len() && p.len() == s.len());
    // SAFETY: forwarded from this function's contract.
    unsafe {
        match precision {
            Precision::Exact => by_sign::<V, false>(p, g, s, h),
            Precision::Fast => by_sign::<V, true>(p, g, s, h),
        }
    }
}

// The three helpers below turn the step's flags into const parameters, so the loop carries no branches.

#[inline(always)]
unsafe fn by_sign<V: Lanes, const FAST: bool>(
    p: &mut [V::T],
    g: &[V::T],
    s: &mut [V::T],
    h: &Hyper<V::T>,
) {
    // SAFETY: forwarded from `update`'s contract.
    unsafe {
        if h.maximize {
            by_decay::<V, FAST, true>(p, g, s, h)
        } else {
            by_decay::<V, FAST, false>(p, g, s, h)
        }
    }
}

#[inline(always)]
unsafe fn by_decay<V: Lanes, const FAST: bool, const MAX: bool>(
    p: &mut [V::T],
    g: &[V::T],
    s: &mut [V::T],
    h: &Hyper<V::T>,
) {
    // SAFETY: forwarded from `update`'s contract.
    unsafe {
        if h.weight_decay != V::T::ZERO {
            by_placement::<V, FAST, MAX, true>(p, g, s, h)
        } else {
            by_placement::<V, FAST, MAX, false>(p, g, s, h)
        }
    }
}

#[inline(always)]
unsafe fn by_placement<V: Lanes, const FAST: bool, const MAX: bool, const WD: bool>(
    p: &mut [V::T],
    g: &[V::T],
    s: &mut [V::T],
    h: &Hyper<V::T>,
) {
    // SAFETY: forwarded from `update`'s contract.
    unsafe {
        match h.eps_placement {
            EpsPlacement::Outside => body::<V, FAST, MAX, WD, false>(p, g, s, h),
            EpsPlacement::Inside => body::<V, FAST, MAX, WD, true>(p, g, s, h),
        }
    }
}

/// The loop: unrolled by [`UNROLL`] vectors, then single vectors, then the tail (through the reference in
/// Exact mode, through one zero-padded vector in Fast mode so that every element sees the same formula).
#[inline(always)]
unsafe fn body<V: Lanes, const FAST: bool, const MAX: bool, const WD: bool, const INSIDE: bool>(
    p: &mut [V::T],
    g: &[V::T],
    s: &mut [V::T],
    h: &Hyper<V::T>,
) {
    let n = p.len();
    let (pp, gp, sp) = (p.as_mut_ptr(), g.as_ptr(), s.as_mut_ptr());
    // SAFETY: the ISA is supported (contract); every offset below is < n - N + 1 before a load or store of N
    // lanes, and the three slices have length n (contract).
    unsafe {
        let c = Consts {
            clr: V::splat(h.clr),
            wd: V::splat(h.weight_decay),
            eps: V::splat(h.eps),
            one: V::splat(V::T::from_f64(1.0)),
            half: V::splat(V::T::from_f64(0.5)),
            three_halves: V::splat(V::T::from_f64(1.5)),
        };
        let step = |i: usize| {
            let (np, ns) = lanes_step::<V, FAST, MAX, WD, INSIDE>(
                V::load(pp.add(i)),
                V::load(gp.add(i)),
                V::load(sp.add(i)),
                &c,
            );
            np.store(pp.add(i));
            ns.store(sp.add(i));
        };
        let mut i = 0;
        while i + UNROLL * V::N <= n {
            for u in 0..UNROLL {
                step(i + u * V::N);
            }
            i += UNROLL * V::N;
        }
        while i + V::N <= n {
            step(i);
            i += V::N;
        }
        if i == n {
            return;
        }
        if !FAST {
            reference::update_same_len(&mut p[i..], &g[i..], &mut s[i..], h);
            return;
        }
        // Fast tail: pad to one vector (g = 0, s = 1 in the unused lanes keep them finite), run it, copy back.
        let rem = n - i;
        let mut bp = [V::T::ZERO; MAX_LANES];
        let mut bg = [V::T::ZERO; MAX_LANES];
        let mut bs = [V::T::from_f64(1.0); MAX_LANES];
        bp[..rem].copy_from_slice(&p[i..]);
        bg[..rem].copy_from_slice(&g[i..]);
        bs[..rem].copy_from_slice(&s[i..]);
        let (np, ns) = lanes_step::<V, FAST, MAX, WD, INSIDE>(
            V::load(bp.as_ptr()),
            V::load(bg.as_ptr()),
            V::load(bs.as_ptr()),
            &c,
        );
        np.store(bp.as_mut_ptr());
        ns.store(bs.as_mut_ptr());
        p[i..].copy_from_slice(&bp[..rem]);
        s[i..].copy_from_slice(&bs[..rem]);
    }
}

/// One vector of the update, in the reference's operation order (Exact) or with the fast reciprocal.
#[inline(always)]
unsafe fn lanes_step<
    V: Lanes,
    const FAST: bool,
    const MAX: bool,
    const WD: bool,
    const INSIDE: bool,
>(
    p: V,
    g: V,
    s: V,
    c: &Consts<V>,
) -> (V, V) {
    // SAFETY: the caller guarantees the ISA.
    unsafe {
        let mut g = g;
        if MAX {
            g = g.neg();
        }
        if WD {
            g = p.mul_add(c.wd, g);
        }
        let s = g.mul_add(g, s);
        let step = c.clr.mul(g);
        if !FAST {
            let d = if INSIDE {
                s.add(c.eps).sqrt()
            } else {
                s.sqrt().add(c.eps)
            };
            return (p.sub(step.div(d)), s);
        }
        let steps = newton_steps(V::EST_BITS, V::T::MANTISSA_BITS);
        let inv = if INSIDE {
            // y ← y·(3/2 − (x/2)·y²)
            let x = s.add(c.eps);
            let hx = c.half.mul(x);
            let mut y = x.rsqrt_est();
            for _ in 0..steps {
                y = y.mul(c.three_halves.sub(hx.mul(y).mul(y)));
            }
            y
        } else {
            // y ← y + y·(1 − d·y)
            let d = s.sqrt().add(c.eps);
            let nd = d.neg();
            let mut y = d.recip_est();
            for _ in 0..steps {
                y = y.mul_add(nd.mul_add(y, c.one), y);
            }
            y
        };
        (p.sub(step.mul(inv)), s)
    }
}

/// The same-traffic stream: reads `p`, `g`, `s` and writes `p ← p + g`, `s ← s + g`, the memory traffic of an
/// Adagrad step with trivially cheap arithmetic, at the same vector width and unroll. Benchmarks use it as the
/// ceiling a memory-bound update can reach.
///
/// # Safety
/// The CPU supports `V`'s ISA, and `g.len() == p.len() == s.len()`.
#[inline(always)]
pub(crate) unsafe fn stream<V: Lanes>(p: &mut [V::T], g: &[V::T], s: &mut [V::T]) {
    let n = p.len();
    let (pp, gp, sp) = (p.as_mut_ptr(), g.as_ptr(), s.as_mut_ptr());
    // SAFETY: as in `body`: the ISA is supported and every access is in bounds of the three length-n slices.
    unsafe {
        let step = |i: usize| {
            let gv = V::load(gp.add(i));
            V::load(pp.add(i)).add(gv).store(pp.add(i));
            V::load(sp.add(i)).add(gv).store(sp.add(i));
        };
        let mut i = 0;
        while i + UNROLL * V::N <= n {
            for u in 0..UNROLL {
                step(i + u * V::N);
            }
            i += UNROLL * V::N;
        }
        while i + V::N <= n {
            step(i);
            i += V::N;
        }
    }
    for j in n - n % V::N..n {
        p[j] = p[j] + g[j];
        s[j] = s[j] + g[j];
    }
}
