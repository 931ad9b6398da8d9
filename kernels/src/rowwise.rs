//! Embedding-table Adagrad, per row: the row-wise accumulator's math (the specification every path reproduces),
//! the per-element pieces the element-wise accumulator adds to the dense step, and stochastic rounding.
//!
//! A step updates each touched row once, with `G`, the sum of that row's gradient rows (summed by the caller in
//! ascending lookup position). With one accumulator `h` per row (FBGEMM's `EXACT_ROWWISE_ADAGRAD`, TorchRec's
//! default), for a row `w` of `D` elements, all in f32:
//!
//! ```text
//! G  ← −G                                                   if maximize
//! g'ⱼ ← fma(wⱼ, wd, Gⱼ)  (DecayMode::L2),  else Gⱼ
//! f32 tables:  aₖ ← Σ f32(g'ⱼ · g'ⱼ) over j ≡ k (mod 8), ascending, k = 0..8   (multiply, then add)
//!              s  ← ((a₄ + a₅) + (a₆ + a₇)) + ((a₀ + a₁) + (a₂ + a₃))
//! 16-bit tables: s ← fma(g'ⱼ, g'ⱼ, s) for j ascending, from 0
//! h  ← h + s / D
//! m  ← clr / (√h + ε)     (EpsPlacement::Outside)   or   clr / √(h + ε)   (Inside)
//! c  ← 1;   1 − f32(m · wd)  (L2);   1 − f32(clr · wd)  (Decoupled)
//! wⱼ ← fma(c, wⱼ, −f32(Gⱼ · m))                       rounded to the table's type (16-bit tables)
//! ```
//!
//! With `wd = 0` and ε outside the root this is FBGEMM 1.9.0's CPU arithmetic bit for bit: the f32 table's 8-lane
//! sum is its JIT kernel's (AVX2 code, also on AVX-512 CPUs), and `fma(1, w, x)` rounds `w + x` once, like its
//! `step·G + w`; the 16-bit table's sequential FMA sum and its L2/decoupled decay are its generic template's.
//! FBGEMM's f32 path ignores weight decay; here it applies to f32 tables too, by the same formula.

use crate::lanes::Lanes;
use crate::{EpsPlacement, Grad, LengthMismatch, bf16, f16};

/// How weight decay enters a sparse step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DecayMode {
    /// L2: `wd·w` added to the gradient (the accumulator sees it; FBGEMM's `WeightDecayMode.L2`). The default.
    #[default]
    L2,
    /// Decoupled: the weights shrink by `1 − clr·wd` (FBGEMM's `WeightDecayMode.DECOUPLE`); the accumulator sees
    /// only the gradient.
    Decoupled,
}

/// The hyperparameters of one sparse step, rounded once to f32.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowHyper {
    /// `clr = lr / (1 + (t − 1)·lr_decay)`, computed in f64 and rounded once.
    pub clr: f32,
    /// ε.
    pub eps: f32,
    /// Weight decay (0: none).
    pub weight_decay: f32,
    /// How the decay enters.
    pub decay: DecayMode,
    /// Ascend instead of descend.
    pub maximize: bool,
    /// Where ε goes.
    pub eps_placement: EpsPlacement,
}

impl RowHyper {
    /// The hyperparameters of step `t` (1-based) from f64 values, rounded once to f32 (clr as in the dense step).
    ///
    /// ```
    /// use adagrad_kernels::{EpsPlacement, rowwise::{DecayMode, RowHyper}};
    /// let h = RowHyper::new(0.1, 0.5, 3, 0.0, DecayMode::L2, 1e-8, false, EpsPlacement::Outside);
    /// assert_eq!(h.clr, 0.05);
    /// ```
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        lr: f64,
        lr_decay: f64,
        t: u64,
        weight_decay: f64,
        decay: DecayMode,
        eps: f64,
        maximize: bool,
        eps_placement: EpsPlacement,
    ) -> Self {
        let clr = lr / (1.0 + (t.saturating_sub(1)) as f64 * lr_decay);
        RowHyper {
            clr: clr as f32,
            eps: eps as f32,
            weight_decay: weight_decay as f32,
            decay,
            maximize,
            eps_placement,
        }
    }

    /// Whether the gradient picks up `wd·w` (L2 decay with a non-zero rate).
    #[inline(always)]
    pub(crate) fn l2(&self) -> bool {
        self.decay == DecayMode::L2 && self.weight_decay != 0.0
    }

    /// `G`, negated when maximizing.
    #[inline(always)]
    fn signed(&self, g: f32) -> f32 {
        if self.maximize { -g } else { g }
    }

    /// `g'`: the gradient the accumulator sees.
    #[inline(always)]
    fn decayed(&self, w: f32, g: f32) -> f32 {
        let g = self.signed(g);
        if self.l2() {
            w.mul_add(self.weight_decay, g)
        } else {
            g
        }
    }

    /// From the row's sum of squares: adds the mean to `h` and returns the step size `m` and the weights' factor
    /// `c`. The one copy of this part of the math.
    #[inline(always)]
    pub(crate) fn finish(&self, sum: f32, dim: usize, h: &mut f32) -> (f32, f32) {
        *h += sum / dim as f32;
        let d = match self.eps_placement {
            EpsPlacement::Outside => h.sqrt() + self.eps,
            EpsPlacement::Inside => (*h + self.eps).sqrt(),
        };
        let m = self.clr / d;
        let c = if self.weight_decay == 0.0 {
            1.0
        } else {
            match self.decay {
                DecayMode::L2 => 1.0 - m * self.weight_decay,
                DecayMode::Decoupled => 1.0 - self.clr * self.weight_decay,
            }
        };
        (m, c)
    }

    /// One weight: `fma(c, w, −f32(G·m))`.
    #[inline(always)]
    pub(crate) fn apply(&self, w: f32, g: f32, m: f32, c: f32) -> f32 {
        c.mul_add(w, -(self.signed(g) * m))
    }

    /// The decoupled decay factor of the element-wise accumulator, `1 − f32(clr·wd)`, or `None` when the step has
    /// no decoupled decay (see [`decay_elementwise`]).
    pub fn decoupled_factor(&self) -> Option<f32> {
        (self.decay == DecayMode::Decoupled && self.weight_decay != 0.0)
            .then_some(1.0 - self.clr * self.weight_decay)
    }
}

/// FBGEMM's combination of the eight lane sums.
#[inline(always)]
pub(crate) fn combine(a: [f32; 8]) -> f32 {
    ((a[4] + a[5]) + (a[6] + a[7])) + ((a[0] + a[1]) + (a[2] + a[3]))
}

/// One row-wise step of an f32 row `w` with its summed gradient `g` and accumulator `h`: the specification (see
/// the module docs). An empty row changes nothing.
///
/// Returns [`LengthMismatch`] (and changes nothing) unless `w` and `g` have the same length.
///
/// ```
/// use adagrad_kernels::{EpsPlacement, rowwise::{self, DecayMode, RowHyper}};
/// let hy = RowHyper::new(0.1, 0.0, 1, 0.0, DecayMode::L2, 1e-8, false, EpsPlacement::Outside);
/// let (mut w, mut h) = ([1.0f32, 1.0], 0.0f32);
/// rowwise::update_f32(&mut w, &[2.0, 2.0], &mut h, &hy).unwrap();
/// assert_eq!(h, 4.0); // the mean of 2² and 2²
/// assert_eq!(w, [0.9, 0.9]); // 1 − 0.1·2/(√4 + 1e-8)
/// ```
pub fn update_f32(
    w: &mut [f32],
    g: &[f32],
    h: &mut f32,
    hy: &RowHyper,
) -> Result<(), LengthMismatch> {
    LengthMismatch::check(w.len(), g.len(), w.len())?;
    if w.is_empty() {
        return Ok(());
    }
    let mut a = [0.0f32; 8];
    for (j, (&wj, &gj)) in w.iter().zip(g).enumerate() {
        let gp = hy.decayed(wj, gj);
        a[j % 8] += gp * gp;
    }
    let (m, c) = hy.finish(combine(a), w.len(), h);
    for (wj, &gj) in w.iter_mut().zip(g) {
        *wj = hy.apply(*wj, gj, m, c);
    }
    Ok(())
}

/// One row-wise step of a 16-bit row (f32 accumulator): FBGEMM's generic formula (sequential FMA sum), the new
/// weights rounded as `rounding` says, with `key` naming the row for [`Rounding::Stochastic`].
///
/// Returns [`LengthMismatch`] (and changes nothing) unless `w` and `g` have the same length.
///
/// ```
/// use adagrad_kernels::{f16, EpsPlacement, rowwise::{self, DecayMode, RowHyper, Rounding, RowKey}};
/// let hy = RowHyper::new(0.1, 0.0, 1, 0.0, DecayMode::L2, 1e-8, false, EpsPlacement::Outside);
/// let (mut w, mut h) = ([f16::from_f32(1.0); 2], 0.0f32);
/// rowwise::update_narrow(&mut w, &[2.0, 2.0], &mut h, &hy, Rounding::NearestEven, RowKey::default()).unwrap();
/// assert_eq!(w[0], f16::from_f32(0.9));
/// ```
pub fn update_narrow<W: Narrow>(
    w: &mut [W],
    g: &[f32],
    h: &mut f32,
    hy: &RowHyper,
    rounding: Rounding,
    key: RowKey,
) -> Result<(), LengthMismatch> {
    LengthMismatch::check(w.len(), g.len(), w.len())?;
    if w.is_empty() {
        return Ok(());
    }
    let mut s = 0.0f32;
    for (&wj, &gj) in w.iter().zip(g) {
        let gp = hy.decayed(wj.widen(), gj);
        s = gp.mul_add(gp, s);
    }
    let (m, c) = hy.finish(s, w.len(), h);
    let row = key.row_stream();
    for (j, (wj, &gj)) in w.iter_mut().zip(g).enumerate() {
        let x = hy.apply(wj.widen(), gj, m, c);
        *wj = rounding.round(x, &row, j as u64);
    }
    Ok(())
}

/// Adds one lookup's gradient row into the sum of its table row's gradient: `sum ← weight·g` for the row's first
/// lookup (`first`), `sum ← sum + weight·g` for each later one, element by element in f32 — the product rounded,
/// then the sum; without a weight, `g` itself (widened exactly). A step calls it for each of a touched row's lookups
/// in ascending lookup position, so a row's sum never depends on threads or paths: the specification every path's
/// [`crate::Kernels::accumulate`] reproduces.
///
/// Returns [`LengthMismatch`] (and changes nothing) unless `sum` and `g` have the same length.
///
/// ```
/// use adagrad_kernels::{bf16, rowwise};
/// let mut sum = [0.0f32; 2];
/// rowwise::accumulate(&mut sum, &[1.5f32, -2.0], None, true).unwrap();
/// rowwise::accumulate(&mut sum, &[bf16::from_f32(1.0); 2], Some(0.5), false).unwrap();
/// assert_eq!(sum, [2.0, -1.5]);
/// ```
pub fn accumulate<G: Grad<f32>>(
    sum: &mut [f32],
    g: &[G],
    weight: Option<f32>,
    first: bool,
) -> Result<(), LengthMismatch> {
    LengthMismatch::check(sum.len(), g.len(), sum.len())?;
    accumulate_same_len(sum, g, weight, first);
    Ok(())
}

/// [`accumulate`] on slices of equal length (the zip stops at the shorter one otherwise).
#[inline(always)]
pub(crate) fn accumulate_same_len<G: Grad<f32>>(
    sum: &mut [f32],
    g: &[G],
    weight: Option<f32>,
    first: bool,
) {
    match (weight, first) {
        (None, true) => sum.iter_mut().zip(g).for_each(|(s, g)| *s = g.widen()),
        (None, false) => sum.iter_mut().zip(g).for_each(|(s, g)| *s += g.widen()),
        (Some(w), true) => sum.iter_mut().zip(g).for_each(|(s, g)| *s = w * g.widen()),
        (Some(w), false) => sum.iter_mut().zip(g).for_each(|(s, g)| *s += w * g.widen()),
    }
}

/// [`accumulate`] over `V`'s lanes, the same operations in the same operand order (`w·g`, then `sum + w·g`), the
/// elements past the last full vector by the reference.
///
/// # Safety
/// The CPU supports `V`'s ISA; `sum.len() == g.len()`.
#[inline(always)]
pub(crate) unsafe fn accumulate_body<V: Lanes<T = f32>, G: Grad<f32>>(
    sum: &mut [f32],
    g: &[G],
    weight: Option<f32>,
    first: bool,
) {
    debug_assert_eq!(sum.len(), g.len());
    let n = sum.len();
    let (sp, gp) = (sum.as_mut_ptr(), g.as_ptr());
    let mut j = 0;
    // SAFETY: the ISA is present (contract); every load and store covers `j..j + V::N` with `j + V::N <= n`.
    unsafe {
        let wv = weight.map(|w| V::splat(w));
        while j + V::N <= n {
            let x = V::load_grad(gp.add(j));
            let x = match wv {
                Some(w) => w.mul(x),
                None => x,
            };
            let x = if first { x } else { V::load(sp.add(j)).add(x) };
            x.store(sp.add(j));
            j += V::N;
        }
    }
    accumulate_same_len(&mut sum[j..], &g[j..], weight, first);
}

/// The element-wise accumulator's decoupled decay, applied to a row before its dense step: `w ← f32(w·c)` with
/// `c` from [`RowHyper::decoupled_factor`]. (L2 decay needs nothing here: the dense step adds `wd·w` itself.)
pub fn decay_elementwise(w: &mut [f32], c: f32) {
    for x in w {
        *x *= c;
    }
}

/// Asks for every cache line of `row` to be brought into the cache ahead of use (a hint: it never faults and
/// never changes a value). Embedding steps call it on the rows a few rows ahead of the one they update, whose
/// random addresses no hardware prefetcher can guess.
#[inline(always)]
pub fn prefetch_row<T>(row: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // Every cache line the row touches, from the one holding its first byte (a row need not start a line).
        let (start, bytes) = (row.as_ptr().cast::<i8>(), std::mem::size_of_val(row));
        let skew = start as usize % 64;
        for off in (0..bytes + skew).step_by(64) {
            // SAFETY: prefetching never faults; the address lies within the lines that hold `row`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_sub(skew).wrapping_add(off)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}

/// 16-bit table formats: [`bf16`] and [`f16`](struct@f16).
pub trait Narrow:
    crate::sealed::Sealed + bytemuck::Pod + Copy + Send + Sync + std::fmt::Debug
{
    /// The format's name.
    const NAME: &'static str;
    /// Exact widening.
    fn widen(self) -> f32;
    /// Round to nearest, ties to even.
    fn nearest(x: f32) -> Self;
    /// The raw bits.
    fn bits(self) -> u16;
    /// From raw bits.
    fn from_bits(b: u16) -> Self;
}

impl Narrow for bf16 {
    const NAME: &'static str = "bf16";
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }
    #[inline(always)]
    fn nearest(x: f32) -> Self {
        bf16::from_bits(crate::bf16_bits_rne(x))
    }
    #[inline(always)]
    fn bits(self) -> u16 {
        self.to_bits()
    }
    #[inline(always)]
    fn from_bits(b: u16) -> Self {
        bf16::from_bits(b)
    }
}

impl Narrow for f16 {
    const NAME: &'static str = "f16";
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }
    #[inline(always)]
    fn nearest(x: f32) -> Self {
        f16::from_f32(x)
    }
    #[inline(always)]
    fn bits(self) -> u16 {
        self.to_bits()
    }
    #[inline(always)]
    fn from_bits(b: u16) -> Self {
        f16::from_bits(b)
    }
}

/// How updated weights are rounded to a 16-bit table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Rounding {
    /// To nearest, ties to even (FBGEMM on CPU, PyTorch). The default.
    #[default]
    NearestEven,
    /// Stochastic: to one of the two neighbouring values with probability proportional to nearness, from a
    /// counter-based generator keyed on (seed, step, row, column), so the result is reproducible at any thread
    /// count and unbiased in expectation.
    Stochastic {
        /// The generator's seed.
        seed: u64,
    },
}

/// Which row of which step a 16-bit row is (the stochastic rounding key, with the column added per element).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RowKey {
    /// The generator's seed (from [`Rounding::Stochastic`]).
    pub seed: u64,
    /// The step number.
    pub step: u64,
    /// The row index in the table.
    pub row: u64,
}

impl RowKey {
    /// The generator state after seed, step and row.
    #[inline(always)]
    fn row_stream(self) -> u64 {
        mix(mix(mix(self.seed ^ 0x243F_6A88_85A3_08D3) ^ self.step) ^ self.row)
    }
}

/// SplitMix64's finalizer: a bijection on u64 whose outputs pass the usual randomness tests for counter inputs.
#[inline(always)]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 32 random bits for (seed, step, row, column).
///
/// ```
/// use adagrad_kernels::rowwise::{random_bits, RowKey};
/// let k = RowKey { seed: 7, step: 1, row: 3 };
/// assert_eq!(random_bits(k, 5), random_bits(k, 5));
/// assert_ne!(random_bits(k, 5), random_bits(k, 6));
/// ```
pub fn random_bits(key: RowKey, column: u64) -> u32 {
    column_bits(key.row_stream(), column)
}

#[inline(always)]
fn column_bits(row: u64, column: u64) -> u32 {
    (mix(row.wrapping_add(column.wrapping_mul(0x9E37_79B9_7F4A_7C15))) >> 32) as u32
}

impl Rounding {
    /// Rounds `x` for column `column` of the row whose generator state is `row` (see [`RowKey`]).
    #[inline(always)]
    fn round<W: Narrow>(self, x: f32, row: &u64, column: u64) -> W {
        match self {
            Rounding::NearestEven => W::nearest(x),
            Rounding::Stochastic { .. } => stochastic(x, column_bits(*row, column)),
        }
    }

    /// The rounding with its seed put into `key` (stochastic), for [`update_narrow`].
    pub fn key(self, step: u64, row: u64) -> RowKey {
        let seed = match self {
            Rounding::NearestEven => 0,
            Rounding::Stochastic { seed } => seed,
        };
        RowKey { seed, step, row }
    }

    /// Rounds a row of f32 values into a 16-bit row, for `key`'s row.
    pub fn round_row<W: Narrow>(self, src: &[f32], dst: &mut [W], key: RowKey) {
        let row = key.row_stream();
        for (j, (d, &x)) in dst.iter_mut().zip(src).enumerate() {
            *d = self.round(x, &row, j as u64);
        }
    }
}

/// Stochastic rounding of `x` to `W` with 32 random bits `r`: the neighbour away from zero is taken with
/// probability `(|x| − |lo|) / (|hi| − |lo|)` (decided exactly: `r < p·2³²`), where `lo` is `x` rounded toward
/// zero and `hi` the next value away from zero (past the largest finite value, ±∞ with the spacing of the last
/// binade). Exact values, NaN and ±∞ round as [`Narrow::nearest`] does.
///
/// ```
/// use adagrad_kernels::{bf16, rowwise::stochastic};
/// let x = 1.0 + 2f32.powi(-9); // a quarter of the way from 1 to the next bf16 (1 + 2⁻⁷)
/// assert_eq!(stochastic::<bf16>(x, 0).to_f32(), 1.0 + 2f32.powi(-7));
/// assert_eq!(stochastic::<bf16>(x, u32::MAX).to_f32(), 1.0);
/// ```
pub fn stochastic<W: Narrow>(x: f32, r: u32) -> W {
    let near = W::nearest(x);
    let nw = near.widen();
    if nw == x || !x.is_finite() || nw.is_nan() {
        return near;
    }
    // Neighbours by magnitude: bits ± 1 in the sign-magnitude encoding.
    let sign = near.bits() & 0x8000;
    let mag = near.bits() & 0x7FFF;
    let (lo, hi) = if nw.abs() > x.abs() {
        (W::from_bits(sign | (mag - 1)), near)
    } else {
        (near, W::from_bits(sign | (mag + 1)))
    };
    let lo_mag = f64::from(lo.widen().abs());
    let hi_mag = match f64::from(hi.widen().abs()) {
        // Past the largest finite value: the spacing of the last binade.
        h if h.is_infinite() => {
            let below = f64::from(W::from_bits((lo.bits() & 0x7FFF) - 1).widen().abs());
            2.0 * lo_mag - below
        }
        h => h,
    };
    let p = (f64::from(x.abs()) - lo_mag) / (hi_mag - lo_mag);
    // `p` is a ratio of exact f64 differences of f32 values; `p·2³²` is compared exactly with the draw.
    if (r as f64) < p * 4_294_967_296.0 {
        hi
    } else {
        lo
    }
}

/// The row-wise f32 body over 8-lane vectors (every SIMD path; FBGEMM's lane sums need exactly 8 lanes).
///
/// # Safety
/// The CPU supports `V`'s ISA, `V::N == 8`, `w.len() == g.len() > 0`.
#[inline(always)]
pub(crate) unsafe fn body<V: Lanes<T = f32>>(w: &mut [f32], g: &[f32], h: &mut f32, hy: &RowHyper) {
    debug_assert!(V::N == 8 && w.len() == g.len() && !w.is_empty());
    let n = w.len();
    let (wp, gp) = (w.as_mut_ptr(), g.as_ptr());
    // SAFETY: the ISA is present (contract); every load and store below covers `j..j + 8` with `j + 8 <= n`, or
    // a local 8-element buffer.
    unsafe {
        let sign = V::splat(if hy.maximize { -0.0 } else { 0.0 });
        let wd = V::splat(hy.weight_decay);
        let l2 = hy.l2();
        let mut acc = V::splat(0.0);
        let mut j = 0;
        while j + 8 <= n {
            acc = acc.add(squared(
                V::load(wp.add(j)),
                V::load(gp.add(j)),
                sign,
                wd,
                l2,
            ));
            j += 8;
        }
        if j < n {
            // Lanes past the row add +0 (a zero gradient squares to +0, also negated or decayed from w = 0).
            let (mut wb, mut gb) = ([0.0f32; 8], [0.0f32; 8]);
            wb[..n - j].copy_from_slice(&w[j..]);
            gb[..n - j].copy_from_slice(&g[j..]);
            acc = acc.add(squared(
                V::load(wb.as_ptr()),
                V::load(gb.as_ptr()),
                sign,
                wd,
                l2,
            ));
        }
        let mut a = [0.0f32; 8];
        acc.store(a.as_mut_ptr());
        let (m, c) = hy.finish(combine(a), n, h);
        let (mv, cv, neg) = (V::splat(m), V::splat(c), V::splat(-0.0));
        let mut j = 0;
        while j + 8 <= n {
            let t = V::load(gp.add(j)).xor(sign).mul(mv).xor(neg);
            cv.mul_add(V::load(wp.add(j)), t).store(wp.add(j));
            j += 8;
        }
        for k in j..n {
            w[k] = hy.apply(w[k], g[k], m, c);
        }
    }
}

/// `f32(g'·g')` per lane, `g'` the signed (and L2-decayed) gradient. A function, not a closure, so that it inlines
/// into the entry point with its target features.
///
/// # Safety
/// The CPU supports `V`'s ISA.
#[inline(always)]
unsafe fn squared<V: Lanes<T = f32>>(w: V, g: V, sign: V, wd: V, l2: bool) -> V {
    // SAFETY: this function's contract.
    unsafe {
        let g = g.xor(sign);
        let g = if l2 { w.mul_add(wd, g) } else { g };
        g.mul(g)
    }
}
