//! How far the effective learning rate has shrunk: statistics of `clr / (√G + ε)` (or `clr / √(G + ε)`) over an
//! optimizer's accumulators, computed on request, never inside a step.
//!
//! Adagrad's accumulators only grow, so each element's effective learning rate only shrinks; in long or deep
//! training it can fall so low that the element stops learning. [`lr_stats`] reads a tensor's accumulators and
//! reports the smallest, median, largest and mean effective learning rate of its next step and how many elements
//! are below a threshold. Cost: one read of the state with vector arithmetic (the mean and the count below the
//! threshold), plus two (f32) or four (f64) reads counting bit patterns to select the median, minimum and maximum
//! exactly; about 64 KiB of counters, nothing else allocated. It runs on the calling thread.

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

/// Bits chosen per counting pass.
const DIGIT: u32 = 16;

/// The accumulator of rank `rank` (0-based, ascending) among `sums`, by radix selection: each pass counts the
/// next 16 bits of the keys that share the bits chosen so far, and keeps the digit where the rank falls.
fn select<T: StatsFloat>(sums: &[T], rank: usize, counts: &mut [usize]) -> T {
    let mut prefix = 0u64;
    let mut rank = rank;
    let mut shift = T::BITS;
    while shift > 0 {
        shift -= DIGIT;
        counts.fill(0);
        let high = shift + DIGIT;
        for &g in sums {
            let k = g.key();
            // Keys whose bits above this digit are the prefix chosen so far (all of them in the first pass).
            if high == T::BITS || k >> high == prefix {
                counts[((k >> shift) & 0xffff) as usize] += 1;
            }
        }
        let mut digit = 0;
        while rank >= counts[digit] {
            rank -= counts[digit];
            digit += 1;
        }
        prefix = (prefix << DIGIT) | digit as u64;
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
    let (sum, below) = sum_and_count(sums, h, threshold);
    let mut counts = vec![0usize; 1 << DIGIT];
    // The effective learning rate falls as the accumulator grows: the largest accumulator gives the smallest rate.
    let largest = select(sums, n - 1, &mut counts);
    let smallest = select(sums, 0, &mut counts);
    let middle = select(sums, n - 1 - (n - 1) / 2, &mut counts);
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

/// Lanes per block of the vector pass: the compiler keeps a block's arithmetic in vector registers.
const BLOCK: usize = 16;

/// The sum (in f64) of the effective learning rates and how many are below `threshold`, one read of `sums`: each
/// block of lanes computed side by side, then added in lane order (a fixed order: the same sum on every run).
fn sum_and_count<T: Float>(sums: &[T], h: &Hyper<T>, threshold: f64) -> (f64, usize) {
    let mut acc = [0.0f64; BLOCK];
    let mut below = [0usize; BLOCK];
    let mut blocks = sums.chunks_exact(BLOCK);
    for block in &mut blocks {
        let mut eff = [T::ZERO; BLOCK];
        for (e, &g) in eff.iter_mut().zip(block) {
            *e = effective(g, h);
        }
        for i in 0..BLOCK {
            let v = eff[i].to_f64();
            acc[i] += v;
            below[i] += usize::from(v < threshold);
        }
    }
    for (i, &g) in blocks.remainder().iter().enumerate() {
        let v = effective(g, h).to_f64();
        acc[i] += v;
        below[i] += usize::from(v < threshold);
    }
    (acc.iter().sum(), below.iter().sum())
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

    /// Every rank of a set with ties, repeats across digits and both signs is the sorted set's element.
    #[test]
    fn selection_is_the_sorted_order() {
        let mut counts = vec![0usize; 1 << DIGIT];
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
                select(&v, rank, &mut counts).to_bits(),
                sorted[rank].to_bits(),
                "rank {rank}"
            );
        }
        let w: Vec<f64> = v.iter_mut().map(|&mut a| a as f64 * 1e-200).collect();
        let mut ws = w.clone();
        ws.sort_by(f64::total_cmp);
        for rank in [0, 1234, 2999] {
            assert_eq!(select(&w, rank, &mut counts).to_bits(), ws[rank].to_bits());
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
    }
}
