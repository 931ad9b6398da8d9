//! How far the effective learning rate has shrunk: statistics of `clr / (√G + ε)` (or `clr / √(G + ε)`) over an
//! optimizer's accumulators, computed on request, never inside a step.
//!
//! Adagrad's accumulators only grow, so each element's effective learning rate only shrinks; in long or deep
//! training it can fall so low that the element stops learning. [`lr_stats`] reads a tensor's accumulators and
//! reports the smallest, median, largest and mean effective learning rate of its next step and how many elements
//! are below a threshold. Cost: one read of the state computes the rates (in blocks the compiler vectorizes: their
//! mean and the count below the threshold), the smallest and largest, and counts the accumulators' highest 16 bits;
//! one more read (f32; three more for f64) selects the median exactly from the counts of the next 16 bits. About
//! 1.5 MiB of counters; on the calling thread. Measured on the Sapphire Rapids VM: 4.4 ms for 1M f32 accumulators
//! and 84 ms for 16.7M, the time of 5–9 steps (`cargo bench --bench stats`, `docs/results/lr-stats-intel-spr.txt`):
//! call it every few hundred steps, not every step.

use crate::Error;
use adagrad_kernels::{EpsPlacement, Float, Hyper};

/// Statistics of the effective learning rate over one tensor's (or table's) accumulators. Exact: each value is
/// the effective learning rate of one element, computed in the state's type as `clr / (√G + ε)` (ε outside) or
/// `clr / √(G + ε)` (ε inside), with the next step's `clr`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrStats {
    /// Accumulators read (elements; rows for a row-wise embedding table). With none, every statistic is NaN.
    pub elements: usize,
    /// The smallest effective learning rate (NaN if an accumulator is NaN).
    pub min: f64,
    /// The median: of `n` values, the `⌈n/2⌉`-th smallest (the lower median when `n` is even).
    pub median: f64,
    /// The largest effective learning rate.
    pub max: f64,
    /// The mean, summed in f64.
    pub mean: f64,
    /// How many effective learning rates are below [`LrStats::threshold`] (NaN ones are not).
    pub below: usize,
    /// The threshold `below` counts against.
    pub threshold: f64,
}

impl LrStats {
    /// The fraction of the elements whose effective learning rate is below the threshold (0 with no elements).
    pub fn fraction_below(&self) -> f64 {
        if self.elements == 0 {
            0.0
        } else {
            self.below as f64 / self.elements as f64
        }
    }
}

/// The effective learning rate of one accumulator value, in the state's type, as the step divides by it.
fn effective<T: Float>(g: T, h: &Hyper<T>) -> T {
    match h.eps_placement {
        EpsPlacement::Outside => h.clr / (g.sqrt() + h.eps),
        EpsPlacement::Inside => h.clr / (g + h.eps).sqrt(),
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// The accumulators' types, f32 and f64 (sealed): their bits as keys ordered as the values are (a total order:
/// −0 before +0, NaN last), which the median's selection counts.
pub trait StatsFloat: Float + sealed::Sealed {
    /// Significant bits of the key.
    #[doc(hidden)]
    const BITS: u32;
    /// The key of a value.
    #[doc(hidden)]
    fn key(self) -> u64;
    /// The value of a key.
    #[doc(hidden)]
    fn from_key(key: u64) -> Self;
}

impl StatsFloat for f32 {
    const BITS: u32 = 32;
    fn key(self) -> u64 {
        let b = self.to_bits();
        u64::from(if b >> 31 == 1 { !b } else { b | (1 << 31) })
    }
    fn from_key(key: u64) -> Self {
        let k = key as u32;
        f32::from_bits(if k >> 31 == 1 { k & !(1 << 31) } else { !k })
    }
}

impl StatsFloat for f64 {
    const BITS: u32 = 64;
    fn key(self) -> u64 {
        let b = self.to_bits();
        if b >> 63 == 1 { !b } else { b | (1 << 63) }
    }
    fn from_key(key: u64) -> Self {
        f64::from_bits(if key >> 63 == 1 {
            key & !(1 << 63)
        } else {
            !key
        })
    }
}

/// Bits chosen per counting pass (the last pass takes what is left).
const DIGIT: u32 = 16;
const RADIX: usize = 1 << DIGIT;
/// Keys are counted round-robin into this many copies of the counters, so that a run of equal digits (accumulators
/// close in value share their high bits) does not make every increment wait for the one before.
const COPIES: usize = 4;
/// Keys counted into the 32-bit copies before they are added into the totals (no copy can overflow).
const FLUSH: usize = 1 << 30;

/// The counts of one digit of the keys.
struct Hist {
    /// One slot more than digits: keys outside the prefix a pass selects are counted there (a branch on the
    /// prefix would be mispredicted whenever the accumulators' values mix).
    copies: Vec<[u32; RADIX + 1]>,
    totals: Vec<usize>,
    pending: usize,
}

impl Hist {
    fn new() -> Hist {
        Hist {
            copies: vec![[0; RADIX + 1]; COPIES],
            totals: vec![0; RADIX + 1],
            pending: 0,
        }
    }

    /// Counts four digits, one into each copy.
    #[inline(always)]
    fn add4(&mut self, d: [usize; COPIES]) {
        for (copy, &d) in self.copies.iter_mut().zip(&d) {
            copy[d] += 1;
        }
        self.pending += COPIES;
        if self.pending >= FLUSH {
            self.flush();
        }
    }

    /// Counts the digit `digit_of` gives each key of `sums` ([`RADIX`]: the spare slot), four at a time
    /// round-robin over the copies.
    #[inline(always)]
    fn count<T: StatsFloat>(&mut self, sums: &[T], mut digit_of: impl FnMut(u64) -> usize) {
        let mut quads = sums.chunks_exact(COPIES);
        for quad in &mut quads {
            let mut four = [0usize; COPIES];
            for (f, &g) in four.iter_mut().zip(quad) {
                *f = digit_of(g.key());
            }
            self.add4(four);
        }
        for &g in quads.remainder() {
            self.totals[digit_of(g.key())] += 1;
        }
    }

    /// Adds the copies into the totals and clears them.
    fn flush(&mut self) {
        for copy in &mut self.copies {
            for (t, c) in self.totals.iter_mut().zip(copy.iter_mut()) {
                *t += *c as usize;
                *c = 0;
            }
        }
        self.pending = 0;
    }

    /// The totals, the copies flushed; then cleared for the next digit by [`Hist::clear`].
    fn totals(&mut self) -> &[usize] {
        self.flush();
        &self.totals
    }

    fn clear(&mut self) {
        self.totals.fill(0);
    }
}

/// The digit of `key` below bit `shift + width`, `width` bits wide.
#[inline(always)]
fn digit(key: u64, shift: u32, width: u32) -> usize {
    ((key >> shift) & ((1 << width) - 1)) as usize
}

/// The width and the shift of each digit, highest first: 16 bits each, the last one what is left.
fn digits(bits: u32) -> impl Iterator<Item = (u32, u32)> {
    let mut left = bits;
    std::iter::from_fn(move || {
        (left > 0).then(|| {
            let width = left.min(DIGIT);
            left -= width;
            (width, left)
        })
    })
}

/// The accumulator of rank `rank` (0-based, ascending) among `sums`, by radix selection: a digit's counts say in
/// which digit value the rank falls; the next pass counts the next digit of the keys sharing the digits chosen so
/// far. `hist` holds, on entry, the counts of the first (highest) digit over all of `sums` ([`first_pass`] makes
/// them).
fn select<T: StatsFloat>(sums: &[T], rank: usize, hist: &mut Hist) -> T {
    let mut prefix = 0u64;
    let mut rank = rank;
    let mut levels = digits(T::BITS).peekable();
    while let Some((width, shift)) = levels.next() {
        let counts = hist.totals();
        let mut d = 0;
        while rank >= counts[d] {
            rank -= counts[d];
            d += 1;
        }
        prefix = (prefix << width) | d as u64;
        let Some(&(next_width, next_shift)) = levels.peek() else {
            break;
        };
        // The next digit's counts, over the keys whose higher bits are the prefix chosen so far.
        hist.clear();
        // Keys of another prefix go to the spare slot, without a branch.
        hist.count(sums, |k| {
            if k >> shift == prefix {
                digit(k, next_shift, next_width)
            } else {
                RADIX
            }
        });
    }
    T::from_key(prefix)
}

/// The effective-learning-rate statistics of the accumulators `sums` for the step whose hyperparameters are `h`
/// (its `clr`, `eps` and `eps_placement`: see [`crate::Config::hyper`]), counting values below `threshold`.
/// `threshold` must be finite and not negative.
///
/// ```
/// use adagrad::{stats::lr_stats, Config};
/// let sums = [0.0f32, 1.0, 4.0, 9.0];
/// let s = lr_stats(&sums, &Config::default().lr(0.1).eps(0.0).hyper::<f32>(1), 0.04)?;
/// // Computed in the state's type (f32): 0.1/√9, 0.1/√4, 0.1/√1 and 0.1/√0 = ∞.
/// assert_eq!((s.min, s.max), ((0.1f32 / 3.0) as f64, f64::INFINITY));
/// assert_eq!(s.median, (0.1f32 / 2.0) as f64); // the lower median of the four
/// assert_eq!(s.below, 1); // only 0.1/3 is below 0.04
/// # Ok::<(), adagrad::Error>(())
/// ```
pub fn lr_stats<T: StatsFloat>(sums: &[T], h: &Hyper<T>, threshold: f64) -> Result<LrStats, Error> {
    if !(threshold.is_finite() && threshold >= 0.0) {
        return Err(Error::InvalidConfig {
            field: "threshold",
            value: threshold,
            reason: "must be finite and not negative",
        });
    }
    let n = sums.len();
    if n == 0 {
        return Ok(LrStats {
            elements: 0,
            min: f64::NAN,
            median: f64::NAN,
            max: f64::NAN,
            mean: f64::NAN,
            below: 0,
            threshold,
        });
    }
    let mut hist = Hist::new();
    let first = first_pass(sums, h, threshold, &mut hist);
    // The effective learning rate falls as the accumulator grows: the largest accumulator gives the smallest rate,
    // and the median rate is the rate of the accumulator of the mirrored rank.
    let middle = select(sums, n - 1 - (n - 1) / 2, &mut hist);
    let (sum, below) = (first.sum, first.below);
    let (largest, smallest) = (T::from_key(first.max_key), T::from_key(first.min_key));
    Ok(LrStats {
        elements: n,
        min: effective(largest, h).to_f64(),
        median: effective(middle, h).to_f64(),
        max: effective(smallest, h).to_f64(),
        mean: sum / n as f64,
        below,
        threshold,
    })
}

/// Lanes per block of the first pass: the compiler keeps a block's arithmetic in vector registers.
const BLOCK: usize = 16;

/// What the first read of the accumulators finds.
struct First {
    /// The effective learning rates' sum, in f64.
    sum: f64,
    /// How many are below the threshold.
    below: usize,
    /// The smallest and largest accumulator's keys.
    min_key: u64,
    max_key: u64,
}

/// One read of `sums`: the sum (in f64) of the effective learning rates and how many are below `threshold` —
/// each block of lanes computed side by side, then added in lane order (a fixed order: the same sum on every
/// run) — the smallest and largest keys, and in `hist` the counts of the keys' highest 16 bits (the median's
/// first digit).
fn first_pass<T: StatsFloat>(sums: &[T], h: &Hyper<T>, threshold: f64, hist: &mut Hist) -> First {
    let mut acc = [0.0f64; BLOCK];
    let mut below = [0usize; BLOCK];
    let (mut min_key, mut max_key) = (u64::MAX, 0u64);
    let (width, shift) = digits(T::BITS).next().unwrap_or((0, 0));
    let mut add = |eff: &[T], block: &[T]| {
        for (i, &e) in eff.iter().enumerate() {
            let v = e.to_f64();
            acc[i] += v;
            below[i] += usize::from(v < threshold);
        }
        hist.count(block, |k| {
            min_key = min_key.min(k);
            max_key = max_key.max(k);
            digit(k, shift, width)
        });
    };
    let mut blocks = sums.chunks_exact(BLOCK);
    for block in &mut blocks {
        let mut eff = [T::ZERO; BLOCK];
        for (e, &g) in eff.iter_mut().zip(block) {
            *e = effective(g, h);
        }
        add(&eff, block);
    }
    let rest = blocks.remainder();
    let mut eff = [T::ZERO; BLOCK];
    for (e, &g) in eff.iter_mut().zip(rest) {
        *e = effective(g, h);
    }
    add(&eff[..rest.len()], rest);
    First {
        sum: acc.iter().sum(),
        below: below.iter().sum(),
        min_key,
        max_key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    /// The keys order every value as `total_cmp` does, and give the value back.
    #[test]
    fn keys_follow_the_total_order_and_round_trip() {
        let v32 = [
            f32::NEG_INFINITY,
            -1.0,
            -f32::MIN_POSITIVE,
            -0.0,
            0.0,
            f32::from_bits(1),
            1.0,
            f32::MAX,
            f32::INFINITY,
            f32::NAN,
        ];
        for w in v32.windows(2) {
            assert!(w[0].key() < w[1].key(), "{w:?}");
        }
        for v in v32 {
            assert_eq!(f32::from_key(v.key()).to_bits(), v.to_bits());
        }
        let v64 = [
            f64::NEG_INFINITY,
            -0.0,
            0.0,
            1e-300,
            2.0,
            f64::INFINITY,
            f64::NAN,
        ];
        for w in v64.windows(2) {
            assert!(w[0].key() < w[1].key(), "{w:?}");
        }
        for v in v64 {
            assert_eq!(f64::from_key(v.key()).to_bits(), v.to_bits());
        }
    }

    /// The element of rank `rank`, the first digit counted by the first pass.
    fn nth<T: StatsFloat>(v: &[T], rank: usize) -> T {
        let mut hist = Hist::new();
        first_pass(v, &Config::default().hyper::<T>(1), 0.0, &mut hist);
        select(v, rank, &mut hist)
    }

    /// Every rank of a set with ties, repeats across digits and both signs is the sorted set's element.
    #[test]
    fn selection_is_the_sorted_order() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut v: Vec<f32> = (0..3000)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                match i % 5 {
                    0 => 1.5,                                 // ties
                    1 => f32::from_bits((x as u32) & 0x7fff), // subnormals: the same upper digit
                    _ => (x as u32 >> 9) as f32 * 1e-3 - 2e3, // both signs
                }
            })
            .collect();
        let mut sorted = v.clone();
        sorted.sort_by(f32::total_cmp);
        for rank in [0, 1, 599, 600, 1499, 1500, 2998, 2999] {
            assert_eq!(
                nth(&v, rank).to_bits(),
                sorted[rank].to_bits(),
                "rank {rank}"
            );
        }
        let w: Vec<f64> = v.iter_mut().map(|&mut a| a as f64 * 1e-200).collect();
        let mut ws = w.clone();
        ws.sort_by(f64::total_cmp);
        for rank in [0, 1234, 2999] {
            assert_eq!(nth(&w, rank).to_bits(), ws[rank].to_bits());
        }
    }

    /// Against a plain computation over every element: the statistics, both ε placements, both types, lengths
    /// around the vector block, odd and even counts.
    #[test]
    fn statistics_are_those_of_every_element() {
        for n in [1usize, 2, 15, 16, 17, 100, 1001] {
            for placement in [EpsPlacement::Outside, EpsPlacement::Inside] {
                let config = Config::default()
                    .lr(0.05)
                    .lr_decay(0.01)
                    .eps(1e-8)
                    .eps_placement(placement);
                let sums: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 * 0.37).collect();
                let h = config.hyper::<f32>(11);
                let s = lr_stats(&sums, &h, 0.01).unwrap();
                let mut eff: Vec<f32> = sums.iter().map(|&g| effective(g, &h)).collect();
                eff.sort_by(f32::total_cmp);
                assert_eq!(s.elements, n);
                assert_eq!(s.min, eff[0] as f64);
                assert_eq!(s.max, eff[n - 1] as f64);
                assert_eq!(s.median, eff[(n - 1) / 2] as f64, "n {n}");
                assert_eq!(s.below, eff.iter().filter(|&&e| (e as f64) < 0.01).count());
                let mean = eff.iter().map(|&e| e as f64).sum::<f64>() / n as f64;
                assert!(
                    (s.mean - mean).abs() <= 1e-12 * mean.abs(),
                    "{} {mean}",
                    s.mean
                );
                let d: Vec<f64> = sums.iter().map(|&g| g as f64).collect();
                let hd = config.hyper::<f64>(11);
                let sd = lr_stats(&d, &hd, 0.01).unwrap();
                let mut ed: Vec<f64> = d.iter().map(|&g| effective(g, &hd)).collect();
                ed.sort_by(f64::total_cmp);
                assert_eq!(
                    (sd.min, sd.median, sd.max),
                    (ed[0], ed[(n - 1) / 2], ed[n - 1])
                );
            }
        }
    }

    /// The 32-bit copies are added into the totals before any can overflow: after `FLUSH` keys at the latest.
    #[test]
    fn copies_are_flushed_before_they_can_overflow() {
        let mut h = Hist::new();
        h.add4([1, 2, 3, 1]);
        assert_eq!(h.pending, COPIES);
        assert_eq!(h.totals[1], 0);
        // As if FLUSH − 4 keys had been counted since the last flush: the next four flush the copies.
        h.pending = FLUSH - COPIES;
        h.add4([1, 1, 1, 1]);
        assert_eq!(h.pending, 0);
        assert_eq!(h.totals[..4], [0, 6, 1, 1]);
        assert!(h.copies.iter().all(|c| c.iter().all(|&x| x == 0)));
        h.add4([0, 0, 0, 0]);
        assert_eq!(h.totals()[..4], [4, 6, 1, 1]);
        h.clear();
        assert!(h.totals().iter().all(|&t| t == 0));
    }

    /// No elements: NaN statistics, nothing below; a threshold that is negative, NaN or infinite is refused.
    #[test]
    fn empty_state_and_bad_thresholds() {
        let h = Config::default().hyper::<f32>(1);
        let s = lr_stats::<f32>(&[], &h, 0.5).unwrap();
        assert!(
            s.elements == 0
                && s.min.is_nan()
                && s.median.is_nan()
                && s.max.is_nan()
                && s.mean.is_nan()
        );
        assert_eq!((s.below, s.fraction_below()), (0, 0.0));
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                lr_stats(&[1.0f32], &h, bad),
                Err(Error::InvalidConfig {
                    field: "threshold",
                    ..
                })
            ));
        }
        let one = lr_stats(&[3.0f32, 1.0], &h, 1.0).unwrap();
        assert_eq!(one.fraction_below(), 1.0);
        // "Below" is strictly below: a rate equal to the threshold is not counted.
        let h = Config::default().lr(0.1).eps(0.0).hyper::<f32>(1);
        let at = lr_stats(&[4.0f32, 16.0], &h, (0.1f32 / 2.0) as f64).unwrap();
        assert_eq!((at.below, at.min), (1, (0.1f32 / 4.0) as f64));
    }
}
