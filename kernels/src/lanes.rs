//! The lane trait and the one generic fused-update body written against it.
//!
//! Every SIMD path (portable, AVX2, AVX-512) is this body instantiated with that path's lane type inside a
//! `#[target_feature]` entry point; the math exists once here and once, scalar, in [`crate::reference`].

use crate::{CopyOut, EpsPlacement, Float, Grad, Hyper, reference};

/// What a pass computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The update, bit-identical to the reference.
    Exact,
    /// The update with approximate reciprocals (`Precision::Fast`).
    Fast,
}

/// How one pass runs: what it computes, and how far ahead of the loop it asks for cache lines. The prefetch
/// distance is a hint with no effect on results; it is chosen per CPU (see `Kernels::with_prefetch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pass {
    pub(crate) mode: Mode,
    /// Bytes ahead of the current element of each stream; 0: no software prefetch.
    pub(crate) prefetch: usize,
}

/// `Mode` as a const parameter.
const EXACT: u8 = 0;
const FAST: u8 = 1;

/// A vector of `N` lanes of `T`. Every method is `unsafe` because the instructions behind it exist only on
/// CPUs with the type's ISA: callers must have checked it (the lane types are only used inside the
/// `#[target_feature]` entry points that [`crate::Kernels`] hands out after that check).
pub(crate) trait Lanes: Copy {
    type T: Float;
    /// Lanes per vector.
    const N: usize;
    /// Correct bits of [`Lanes::rsqrt_est`] and [`Lanes::recip_est`].
    const EST_BITS: u32;
    /// The range `[EST_MIN, EST_MAX]` of values whose estimates and Newton refinement stay within Fast's bound
    /// (normal inputs and results, with a margin); outside it, Fast falls back to Exact for the vector.
    const EST_MIN: f64;
    const EST_MAX: f64;
    /// Whether [`crate::Precision::Fast`] is faster than Exact on this lane type; where it is not (a portable build
    /// without hardware FMA, where every fused multiply-add is a library call), Fast runs Exact.
    const FAST_PAYS: bool;
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
    /// Bitwise XOR (with `splat(-0.0)`: an exact negation; with `splat(0.0)`: the identity).
    unsafe fn xor(self, b: Self) -> Self;
    /// Whether every lane is within `[lo, hi]` (false if any lane is NaN).
    unsafe fn all_within(self, lo: Self, hi: Self) -> bool;
    /// An estimate of `1/√self` good to [`Lanes::EST_BITS`].
    unsafe fn rsqrt_est(self) -> Self;
    /// An estimate of `1/self` good to [`Lanes::EST_BITS`].
    unsafe fn recip_est(self) -> Self;
    /// Loads `N` gradients of format `G`, widened exactly to `T`.
    unsafe fn load_grad<G: Grad<Self::T>>(ptr: *const G) -> Self;
    /// Stores the lanes rounded to the copy-out format `O` (nothing for [`crate::NoCopy`]).
    unsafe fn store_out<O: CopyOut<Self::T>>(self, ptr: *mut O);
}

/// The widest vector any path uses (AVX-512 f32), for the Fast tail buffer.
const MAX_LANES: usize = 16;
/// Vectors per unrolled iteration.
pub(crate) const UNROLL: usize = 4;

/// Newton–Raphson steps that take an estimate of `est` bits to the precision of a `target`-bit mantissa.
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
    /// `-0.0` when maximizing, else `+0.0`: XOR with it negates or leaves the gradient.
    sign: V,
    scale: V,
    one: V,
    half: V,
    three_halves: V,
    minus_zero: V,
    /// Fast's estimate range, [`Lanes::EST_MIN`]..=[`Lanes::EST_MAX`].
    est_lo: V,
    est_hi: V,
}

/// Applies one step: the generic body behind every SIMD entry point. `out` is empty for [`crate::NoCopy`].
///
/// # Safety
/// The CPU supports `V`'s ISA; `g.len() == p.len() == s.len()`, and `out.len() == p.len()` unless `O` is
/// [`crate::NoCopy`].
#[inline(always)]
pub(crate) unsafe fn update<V: Lanes, G: Grad<V::T>, O: CopyOut<V::T>>(
    p: &mut [V::T],
    g: &[G],
    s: &mut [V::T],
    out: &mut [O],
    h: &Hyper<V::T>,
    pass: Pass,
) {
    debug_assert!(
        p.len() == g.len() && p.len() == s.len() && (O::KIND == 0 || out.len() == p.len())
    );
    // SAFETY: forwarded from this function's contract.
    unsafe {
        match pass.mode {
            // With a copy-out the conversion competes with the Newton steps for the same ports: measured no
            // faster than Exact (AVX-512) or slower (AVX2), so it runs Exact.
            Mode::Fast if V::FAST_PAYS && O::KIND == 0 => {
                by_decay::<V, G, O, FAST>(p, g, s, out, h, pass.prefetch)
            }
            _ => by_decay::<V, G, O, EXACT>(p, g, s, out, h, pass.prefetch),
        }
    }
}

// The helpers below turn the step's flags into const parameters, so the loop carries no branches. (Maximize
// needs none: it is an XOR with a sign mask.)

#[inline(always)]
unsafe fn by_decay<V: Lanes, G: Grad<V::T>, O: CopyOut<V::T>, const OP: u8>(
    p: &mut [V::T],
    g: &[G],
    s: &mut [V::T],
    out: &mut [O],
    h: &Hyper<V::T>,
    pf: usize,
) {
    // SAFETY: forwarded from `update`'s contract.
    unsafe {
        if h.weight_decay != <V::T as Float>::ZERO {
            by_placement::<V, G, O, OP, true>(p, g, s, out, h, pf)
        } else {
            by_placement::<V, G, O, OP, false>(p, g, s, out, h, pf)
        }
    }
}

#[inline(always)]
unsafe fn by_placement<V: Lanes, G: Grad<V::T>, O: CopyOut<V::T>, const OP: u8, const WD: bool>(
    p: &mut [V::T],
    g: &[G],
    s: &mut [V::T],
    out: &mut [O],
    h: &Hyper<V::T>,
    pf: usize,
) {
    // SAFETY: forwarded from `update`'s contract.
    unsafe {
        match h.eps_placement {
            EpsPlacement::Outside => by_scale::<V, G, O, OP, WD, false>(p, g, s, out, h, pf),
            EpsPlacement::Inside => by_scale::<V, G, O, OP, WD, true>(p, g, s, out, h, pf),
        }
    }
}

#[inline(always)]
unsafe fn by_scale<
    V: Lanes,
    G: Grad<V::T>,
    O: CopyOut<V::T>,
    const OP: u8,
    const WD: bool,
    const INSIDE: bool,
>(
    p: &mut [V::T],
    g: &[G],
    s: &mut [V::T],
    out: &mut [O],
    h: &Hyper<V::T>,
    pf: usize,
) {
    // SAFETY: forwarded from `update`'s contract.
    unsafe {
        if h.grad_scale.is_some() {
            body::<V, G, O, OP, WD, INSIDE, true>(p, g, s, out, h, pf)
        } else {
            body::<V, G, O, OP, WD, INSIDE, false>(p, g, s, out, h, pf)
        }
    }
}

/// The loop: unrolled by [`UNROLL`] vectors, then single vectors, then the tail (through the reference in
/// Exact mode, through one padded vector in Fast mode so that every element sees the same formula). `pf` is the
/// software prefetch distance in bytes (0: none).
#[inline(always)]
unsafe fn body<
    V: Lanes,
    G: Grad<V::T>,
    O: CopyOut<V::T>,
    const OP: u8,
    const WD: bool,
    const INSIDE: bool,
    const SCALE: bool,
>(
    p: &mut [V::T],
    g: &[G],
    s: &mut [V::T],
    out: &mut [O],
    h: &Hyper<V::T>,
    pf: usize,
) {
    let n = p.len();
    let (pp, gp, sp, op) = (p.as_mut_ptr(), g.as_ptr(), s.as_mut_ptr(), out.as_mut_ptr());
    let one = V::T::from_f64(1.0);
    // SAFETY: the ISA is supported (contract); every offset below is < n - N + 1 before a load or store of N
    // lanes, and the slices have length n (contract; `op` is only written when `O` is a real format).
    unsafe {
        let c = Consts {
            clr: V::splat(h.clr),
            wd: V::splat(h.weight_decay),
            eps: V::splat(h.eps),
            sign: V::splat(if h.maximize {
                -<V::T as Float>::ZERO
            } else {
                <V::T as Float>::ZERO
            }),
            scale: V::splat(h.grad_scale.unwrap_or(one)),
            one: V::splat(one),
            half: V::splat(V::T::from_f64(0.5)),
            three_halves: V::splat(V::T::from_f64(1.5)),
            minus_zero: V::splat(-<V::T as Float>::ZERO),
            est_lo: V::splat(V::T::from_f64(V::EST_MIN)),
            est_hi: V::splat(V::T::from_f64(V::EST_MAX)),
        };
        // A function, not a closure: a closure would not inherit the entry point's target features and, when
        // not inlined, would call every intrinsic out of line.
        let step = at::<V, G, O, OP, WD, INSIDE, SCALE>;
        let mut i = 0;
        if pf != 0 {
            let ahead = pf / size_of::<V::T>();
            while i + UNROLL * V::N <= n {
                prefetch::<V, G>(pp, gp, sp, i + ahead, n);
                for u in 0..UNROLL {
                    step(pp, gp, sp, op, i + u * V::N, &c);
                }
                i += UNROLL * V::N;
            }
        }
        while i + UNROLL * V::N <= n {
            for u in 0..UNROLL {
                step(pp, gp, sp, op, i + u * V::N, &c);
            }
            i += UNROLL * V::N;
        }
        while i + V::N <= n {
            step(pp, gp, sp, op, i, &c);
            i += V::N;
        }
        if i == n {
            return;
        }
        if OP != FAST {
            for j in i..n {
                let (np, ns) = reference::update_one(p[j], g[j].widen(), s[j], h);
                (p[j], s[j]) = (np, ns);
                if O::KIND != 0 {
                    out[j] = O::narrow(np);
                }
            }
            return;
        }
        // Fast tail: pad to one vector (g = 0, s = 1 in the unused lanes keep them finite), run it, copy back.
        let rem = n - i;
        let mut bp = [<V::T as Float>::ZERO; MAX_LANES];
        let mut bg = [G::ZERO_VALUE; MAX_LANES];
        let mut bs = [one; MAX_LANES];
        let mut bo = [O::ZERO_VALUE; MAX_LANES];
        bp[..rem].copy_from_slice(&p[i..]);
        bg[..rem].copy_from_slice(&g[i..]);
        bs[..rem].copy_from_slice(&s[i..]);
        step(
            bp.as_mut_ptr(),
            bg.as_ptr(),
            bs.as_mut_ptr(),
            bo.as_mut_ptr(),
            0,
            &c,
        );
        p[i..].copy_from_slice(&bp[..rem]);
        s[i..].copy_from_slice(&bs[..rem]);
        if O::KIND != 0 {
            out[i..].copy_from_slice(&bo[..rem]);
        }
    }
}

/// Asks for the cache lines of the unrolled iteration at element `i` of the three streams (a hint: no effect on
/// results). Whether it helps depends on the CPU's hardware prefetcher: the distance is chosen per CPU.
#[inline(always)]
fn prefetch<V: Lanes, G>(pp: *mut V::T, gp: *const G, sp: *mut V::T, i: usize, n: usize) {
    // Elsewhere the hardware prefetcher is left alone.
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (pp, gp, sp, i, n);
    #[cfg(target_arch = "x86_64")]
    if i < n {
        use core::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        for k in (0..UNROLL * V::N).step_by(64 / size_of::<V::T>()) {
            // SAFETY: prefetching never faults; the addresses are computed with wrapping arithmetic.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(pp.wrapping_add(i + k).cast());
                _mm_prefetch::<_MM_HINT_T0>(sp.wrapping_add(i + k).cast());
                _mm_prefetch::<_MM_HINT_T0>(gp.wrapping_add(i + k).cast());
            }
        }
    }
}

/// Loads, updates and stores the vector at offset `i`.
///
/// # Safety
/// The ISA is supported and `i + N` is within the buffers (`op` only when `O` is a real format).
#[inline(always)]
unsafe fn at<
    V: Lanes,
    G: Grad<V::T>,
    O: CopyOut<V::T>,
    const OP: u8,
    const WD: bool,
    const INSIDE: bool,
    const SCALE: bool,
>(
    pp: *mut V::T,
    gp: *const G,
    sp: *mut V::T,
    op: *mut O,
    i: usize,
    c: &Consts<V>,
) {
    // SAFETY: forwarded from the contract.
    unsafe {
        let (np, ns) = lanes_step::<V, OP, WD, INSIDE, SCALE>(
            V::load(pp.add(i)),
            V::load_grad(gp.add(i)),
            V::load(sp.add(i)),
            c,
        );
        np.store(pp.add(i));
        ns.store(sp.add(i));
        if O::KIND != 0 {
            np.store_out(op.add(i));
        }
    }
}

/// One vector of the update, in the reference's operation order (Exact) or with the fast reciprocal.
#[inline(always)]
unsafe fn lanes_step<
    V: Lanes,
    const OP: u8,
    const WD: bool,
    const INSIDE: bool,
    const SCALE: bool,
>(
    p: V,
    g: V,
    s: V,
    c: &Consts<V>,
) -> (V, V) {
    // SAFETY: the caller guarantees the ISA.
    unsafe {
        let mut g = g;
        if SCALE {
            g = g.div(c.scale);
        }
        g = g.xor(c.sign);
        if WD {
            g = p.mul_add(c.wd, g);
        }
        let s = g.mul_add(g, s);
        let step = c.clr.mul(g);
        if OP == EXACT {
            let d = if INSIDE {
                s.add(c.eps).sqrt()
            } else {
                s.sqrt().add(c.eps)
            };
            return (p.sub(step.div(d)), s);
        }
        let steps = const { newton_steps(V::EST_BITS, V::T::MANTISSA_BITS) };
        // Outside the estimates' range (tiny or huge denominators, ∞, NaN) the vector takes Exact's formula, so
        // Fast's bound holds wherever Exact is finite and a zero gradient still gives a zero update.
        let inv = if INSIDE {
            // y ← y·(3/2 − (x/2)·y²)
            let x = s.add(c.eps);
            if !x.all_within(c.est_lo, c.est_hi) {
                return (p.sub(step.div(x.sqrt())), s);
            }
            let hx = c.half.mul(x);
            let mut y = x.rsqrt_est();
            for _ in 0..steps {
                y = y.mul(c.three_halves.sub(hx.mul(y).mul(y)));
            }
            y
        } else {
            // y ← y + y·(1 − d·y)
            let d = s.sqrt().add(c.eps);
            if !d.all_within(c.est_lo, c.est_hi) {
                return (p.sub(step.div(d)), s);
            }
            let nd = d.xor(c.minus_zero);
            let mut y = d.recip_est();
            for _ in 0..steps {
                y = y.mul_add(nd.mul_add(y, c.one), y);
            }
            y
        };
        (p.sub(step.mul(inv)), s)
    }
}

#[cfg(test)]
mod tests {
    use super::newton_steps;

    /// The Newton step counts the paths use: each step takes b correct bits to 2b − 1, stopping as soon as the
    /// mantissa is reached (the 2⁻²⁰ / 2⁻⁴⁷ bounds are loose enough that a wrong count would still pass them, so
    /// the counts themselves are pinned).
    #[test]
    fn newton_step_counts() {
        // AVX2 and portable estimates (12 bits): 12 → 23 → 45 for f32's 24, → 89 for f64's 53.
        assert_eq!(newton_steps(12, 24), 2);
        assert_eq!(newton_steps(12, 53), 3);
        // AVX-512 estimates (14 bits): 14 → 27 for f32; 14 → 27 → 53 for f64.
        assert_eq!(newton_steps(14, 24), 1);
        assert_eq!(newton_steps(14, 53), 2);
        // Exactly reaching the target stops; an estimate already good enough takes none.
        assert_eq!(newton_steps(13, 25), 1);
        assert_eq!(newton_steps(53, 53), 0);
        assert_eq!(newton_steps(8, 24), 2);
    }
}
