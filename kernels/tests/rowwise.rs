//! The embedding-table row math: every path's row-wise step against the reference bit for bit (row lengths
//! around the 8-lane width, special values, every decay mode, both ε placements, maximize, many steps); the
//! reference against an independent, separately written lane sum; stochastic rounding's neighbours, exactness
//! and bias, decided exactly.

use adagrad_kernels::rowwise::{self, DecayMode, Rounding, RowHyper, RowKey, random_bits};
use adagrad_kernels::{EpsPlacement, Isa, bf16, f16};
mod common;

use common::{kernels_or_skip, same_f32};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn hypers() -> Vec<RowHyper> {
    let mut v = Vec::new();
    for (wd, decay) in [
        (0.0, DecayMode::L2),
        (0.1, DecayMode::L2),
        (0.05, DecayMode::Decoupled),
    ] {
        for maximize in [false, true] {
            for placement in [EpsPlacement::Outside, EpsPlacement::Inside] {
                v.push(RowHyper::new(
                    0.1, 0.01, 3, wd, decay, 1e-8, maximize, placement,
                ));
            }
        }
    }
    v
}

fn row(rng: &mut StdRng, n: usize, special: bool) -> Vec<f32> {
    (0..n)
        .map(|i| {
            if special && i % 5 == 0 {
                [0.0, -0.0, 1e-20, -3e-39, 1e10, 65504.0, -1e-3][i / 5 % 7]
            } else {
                rng.gen_range(-1.0f32..1.0)
            }
        })
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Every path gives the reference's bits for the weights and the accumulator, for row lengths 1–80 and 127–129,
/// over eight steps.
#[test]
fn every_path_matches_the_reference_row_wise() {
    let lens: Vec<usize> = (1..=80).chain([127, 128, 129]).collect();
    for isa in Isa::ALL {
        let Some(k) = kernels_or_skip(isa, "every_path_matches_the_reference_row_wise") else {
            continue;
        };
        let mut rng = StdRng::seed_from_u64(7);
        for hy in hypers() {
            for &n in &lens {
                let special = n % 3 == 0;
                let mut w = row(&mut rng, n, special);
                let mut wr = w.clone();
                let (mut h, mut hr) = (0.25f32, 0.25f32);
                for step in 0..8 {
                    let g = row(&mut rng, n, special && step % 2 == 0);
                    k.rowwise(&mut w, &g, &mut h, &hy).unwrap();
                    rowwise::update_f32(&mut wr, &g, &mut hr, &hy).unwrap();
                    assert_eq!(
                        (bits(&w), h.to_bits()),
                        (bits(&wr), hr.to_bits()),
                        "{isa} n={n} step {step} {hy:?}"
                    );
                }
            }
        }
    }
}

/// The reference's lane sum, written separately: chunks of eight added lane by lane, then FBGEMM's pairing.
fn independent_f32(w: &mut [f32], g: &[f32], h: &mut f32, lr: f32, eps: f32) {
    let mut lanes = [0.0f32; 8];
    for chunk in g.chunks(8) {
        for (lane, x) in lanes.iter_mut().zip(chunk) {
            *lane += x * x;
        }
    }
    let [a0, a1, a2, a3, a4, a5, a6, a7] = lanes;
    let total = ((a4 + a5) + (a6 + a7)) + ((a0 + a1) + (a2 + a3));
    *h += total / g.len() as f32;
    let step = -lr / (h.sqrt() + eps);
    for (x, gj) in w.iter_mut().zip(g) {
        *x += step * gj;
    }
}

/// Without decay, ε outside, the reference is FBGEMM's f32 kernel as its authors wrote it (lane sums, `step·G +
/// w`), computed here without any of the reference's helpers.
#[test]
fn reference_matches_an_independent_lane_sum() {
    let mut rng = StdRng::seed_from_u64(11);
    let hy = RowHyper::new(
        0.05,
        0.0,
        1,
        0.0,
        DecayMode::L2,
        1e-8,
        false,
        EpsPlacement::Outside,
    );
    for n in (1..=70).chain([128, 200]) {
        let mut w = row(&mut rng, n, false);
        let mut wi = w.clone();
        let (mut h, mut hi) = (0.0f32, 0.0f32);
        for _ in 0..5 {
            let g = row(&mut rng, n, false);
            rowwise::update_f32(&mut w, &g, &mut h, &hy).unwrap();
            independent_f32(&mut wi, &g, &mut hi, 0.05, 1e-8);
            assert_eq!((bits(&w), h.to_bits()), (bits(&wi), hi.to_bits()), "n={n}");
        }
    }
}

/// The decay modes do what their names say: L2 is the gradient plus `wd·w` (the accumulator sees it), decoupled
/// shrinks the weights by `1 − clr·wd` (the accumulator does not see it), maximize negates the step; checked on a
/// one-element row, where every quantity is a single rounding away from f64.
#[test]
fn decay_modes_and_maximize_on_one_element() {
    let (w0, g, lr, wd) = (0.5f32, 0.25f32, 0.1f32, 0.2f32);
    let eps = 1e-8f32;
    let hy = |decay, maximize| {
        RowHyper::new(
            lr as f64,
            0.0,
            1,
            wd as f64,
            decay,
            eps as f64,
            maximize,
            EpsPlacement::Outside,
        )
    };
    // L2: g' = g + wd·w; h = g'²; m = lr/(√h+ε); w = (1 − m·wd)·w − g·m.
    let (mut w, mut h) = ([w0], 0.0f32);
    rowwise::update_f32(&mut w, &[g], &mut h, &hy(DecayMode::L2, false)).unwrap();
    let gp = w0.mul_add(wd, g);
    assert_eq!(h, gp * gp);
    let m = lr / (h.sqrt() + eps);
    assert_eq!(w[0], (1.0 - m * wd).mul_add(w0, -(g * m)));
    // Decoupled: h = g²; w = (1 − lr·wd)·w − g·m.
    let (mut w, mut h) = ([w0], 0.0f32);
    rowwise::update_f32(&mut w, &[g], &mut h, &hy(DecayMode::Decoupled, false)).unwrap();
    assert_eq!(h, g * g);
    let m = lr / (h.sqrt() + eps);
    assert_eq!(w[0], (1.0 - lr * wd).mul_add(w0, -(g * m)));
    // Maximize with L2: the gradient is negated before the decay is added.
    let (mut w, mut h) = ([w0], 0.0f32);
    rowwise::update_f32(&mut w, &[g], &mut h, &hy(DecayMode::L2, true)).unwrap();
    let gp = w0.mul_add(wd, -g);
    assert_eq!(h, gp * gp);
    let m = lr / (h.sqrt() + eps);
    assert_eq!(w[0], (1.0 - m * wd).mul_add(w0, g * m));
    // ε inside the root: with h = 1 + g² (ε below h's last bit) and with h = g² ≈ ε (where ε decides the root).
    let mut hi = hy(DecayMode::L2, false);
    hi.weight_decay = 0.0;
    hi.eps_placement = EpsPlacement::Inside;
    let (mut w, mut h) = ([w0], 1.0f32);
    rowwise::update_f32(&mut w, &[g], &mut h, &hi).unwrap();
    assert_eq!(h, 1.0 + g * g);
    assert_eq!(w[0], w0 - g * (lr / (h + eps).sqrt()));
    let small = 1e-4f32;
    let (mut w, mut h) = ([w0], 0.0f32);
    rowwise::update_f32(&mut w, &[small], &mut h, &hi).unwrap();
    assert_eq!(h, small * small);
    assert!((h + eps).sqrt() > 1.3 * h.sqrt(), "ε must matter here");
    assert_eq!(w[0], w0 - small * (lr / (h + eps).sqrt()));
    assert_eq!(hi.decoupled_factor(), None);
    assert_eq!(
        hy(DecayMode::Decoupled, false).decoupled_factor(),
        Some(1.0 - lr * wd)
    );
    assert_eq!(hy(DecayMode::L2, false).decoupled_factor(), None);
}

/// The 16-bit row sums its squares sequentially with FMA (FBGEMM's generic template), not in lanes.
#[test]
fn narrow_rows_sum_sequentially_with_fma() {
    let hy = RowHyper::new(
        0.1,
        0.0,
        1,
        0.1,
        DecayMode::L2,
        1e-8,
        false,
        EpsPlacement::Outside,
    );
    let mut rng = StdRng::seed_from_u64(3);
    for n in [1usize, 5, 16, 33] {
        let w0: Vec<f16> = row(&mut rng, n, false)
            .into_iter()
            .map(f16::from_f32)
            .collect();
        let g = row(&mut rng, n, false);
        let (mut w, mut h) = (w0.clone(), 0.5f32);
        rowwise::update_narrow(
            &mut w,
            &g,
            &mut h,
            &hy,
            Rounding::NearestEven,
            RowKey::default(),
        )
        .unwrap();
        let mut s = 0.0f32;
        for (x, gj) in w0.iter().zip(&g) {
            let gp = x.to_f32().mul_add(0.1, *gj);
            s = gp.mul_add(gp, s);
        }
        let hw = 0.5 + s / n as f32;
        assert_eq!(h, hw, "n={n}");
        let m = 0.1f32 / (hw.sqrt() + 1e-8);
        let c = 1.0 - m * 0.1;
        for j in 0..n {
            let want = f16::from_f32(c.mul_add(w0[j].to_f32(), -(g[j] * m)));
            assert_eq!(w[j].to_bits(), want.to_bits(), "n={n} j={j}");
        }
    }
}

/// Mismatched lengths are refused with nothing changed; an empty row changes nothing.
#[test]
fn lengths_are_checked_and_empty_rows_are_no_ops() {
    let hy = RowHyper::new(
        0.1,
        0.0,
        1,
        0.0,
        DecayMode::L2,
        1e-8,
        false,
        EpsPlacement::Outside,
    );
    let k = adagrad_kernels::Kernels::best();
    let (mut w, mut h) = ([1.0f32; 3], 2.0f32);
    assert!(k.rowwise(&mut w, &[1.0; 2], &mut h, &hy).is_err());
    assert!(rowwise::update_f32(&mut w, &[1.0; 4], &mut h, &hy).is_err());
    let mut n = [f16::ONE; 3];
    assert!(
        rowwise::update_narrow(
            &mut n,
            &[1.0],
            &mut h,
            &hy,
            Rounding::NearestEven,
            RowKey::default()
        )
        .is_err()
    );
    assert_eq!((w, h, n), ([1.0; 3], 2.0, [f16::ONE; 3]));
    k.rowwise(&mut [], &[], &mut h, &hy).unwrap();
    rowwise::update_f32(&mut [], &[], &mut h, &hy).unwrap();
    assert_eq!(h, 2.0);
}

/// For `r = k·2¹⁶`, k = 0..2¹⁶, stochastic rounding picks the upper neighbour exactly ⌈p·2¹⁶⌉ times: the
/// expected value is `x` to within 2⁻¹⁶ of a spacing.
fn check_stochastic<W: rowwise::Narrow>(x: f32) {
    let near = W::nearest(x).widen();
    let (lo, hi) = {
        let (a, b) = (
            rowwise::stochastic::<W>(x, 0).widen(),
            rowwise::stochastic::<W>(x, u32::MAX).widen(),
        );
        (a.min(b), a.max(b))
    };
    if near == x {
        assert_eq!((lo, hi), (x, x), "{} {x}: exact values stay", W::NAME);
        return;
    }
    assert!(lo < x && x < hi, "{} {x}: {lo} {hi}", W::NAME);
    assert!(near == lo || near == hi);
    // The two are neighbours: their magnitudes' encodings differ by one (∞ after the largest finite value).
    let mag = |v: f32| W::nearest(v).bits() & 0x7FFF;
    assert_eq!(mag(lo).abs_diff(mag(hi)), 1, "{} {x}: {lo} {hi}", W::NAME);
    let mut sum = 0.0f64;
    for k in 0..1u32 << 16 {
        let v = rowwise::stochastic::<W>(x, k << 16).widen();
        assert!(v == lo || v == hi, "{} {x}: {v}", W::NAME);
        sum += v as f64;
    }
    let mean = sum / 65536.0;
    let spacing = (hi - lo) as f64;
    assert!(
        (mean - x as f64).abs() <= spacing / 65536.0 * 1.0001,
        "{} {x}: mean {mean}",
        W::NAME
    );
}

#[test]
fn stochastic_rounding_is_unbiased_and_exact_where_it_should_be() {
    let mut rng = StdRng::seed_from_u64(5);
    let mut xs = vec![
        1.0 + 2f32.powi(-9),
        -(1.0 + 2f32.powi(-9)),
        0.1,
        -0.3,
        1e-6,
        3e-8,
        1.0,
        -2.0,
        0.0,
        65500.0,
        1e-40,
    ];
    xs.extend((0..40).map(|_| rng.gen_range(-4.0f32..4.0)));
    for &x in &xs {
        check_stochastic::<bf16>(x);
        check_stochastic::<f16>(x);
    }
    // Past f16's largest finite value the upper neighbour is ∞; NaN and ∞ round to nearest.
    let big = 65504.0 + 8.0;
    assert_eq!(rowwise::stochastic::<f16>(big, 0).to_f32(), f32::INFINITY);
    assert_eq!(rowwise::stochastic::<f16>(big, u32::MAX).to_f32(), 65504.0);
    assert!(rowwise::stochastic::<bf16>(f32::NAN, 0).to_f32().is_nan());
    assert_eq!(
        rowwise::stochastic::<f16>(f32::NEG_INFINITY, 0).to_f32(),
        f32::NEG_INFINITY
    );
}

/// The draw is compared with `p·2³²` exactly: at `p = ¼` and `¾` (nearest below and above `x`, both signs) and
/// past the largest finite value (where the upper neighbour is ∞, one last-binade spacing up), `r = p·2³² − 1`
/// rounds up in magnitude and `r = p·2³²` does not.
#[test]
fn stochastic_thresholds_are_exact() {
    fn at<W: rowwise::Narrow>(x: f32, p_quarters: u32, up: f32, down: f32) {
        let t = p_quarters << 30;
        for (r, want) in [(t - 1, up), (t, down)] {
            let got = rowwise::stochastic::<W>(x, r).widen();
            assert_eq!(got.to_bits(), want.to_bits(), "{} {x} r={r}", W::NAME);
        }
    }
    for s in [1.0f32, -1.0] {
        // bf16 spacing at 1 is 2⁻⁷, f16's 2⁻¹⁰.
        at::<bf16>(s * (1.0 + 2f32.powi(-9)), 1, s * (1.0 + 2f32.powi(-7)), s);
        at::<bf16>(
            s * (1.0 + 3.0 * 2f32.powi(-9)),
            3,
            s * (1.0 + 2f32.powi(-7)),
            s,
        );
        at::<f16>(s * (1.0 + 2f32.powi(-12)), 1, s * (1.0 + 2f32.powi(-10)), s);
        at::<f16>(
            s * (1.0 + 3.0 * 2f32.powi(-12)),
            3,
            s * (1.0 + 2f32.powi(-10)),
            s,
        );
        // Past the largest finite value: f16's is 65504 (spacing 32), bf16's (2 − 2⁻⁷)·2¹²⁷ (spacing 2¹²⁰).
        at::<f16>(s * (65504.0 + 8.0), 1, s * f32::INFINITY, s * 65504.0);
        let max = bf16::MAX.to_f32();
        at::<bf16>(s * (max + 2f32.powi(118)), 1, s * f32::INFINITY, s * max);
        at::<bf16>(
            s * (max + 3.0 * 2f32.powi(118)),
            3,
            s * f32::INFINITY,
            s * max,
        );
    }
}

/// The generator is a function of (seed, step, row, column) only, and each of them changes it.
#[test]
fn random_bits_depend_on_every_key_part() {
    let k = RowKey {
        seed: 1,
        step: 2,
        row: 3,
    };
    let base = random_bits(k, 4);
    assert_eq!(base, random_bits(k, 4));
    for other in [
        random_bits(RowKey { seed: 9, ..k }, 4),
        random_bits(RowKey { step: 9, ..k }, 4),
        random_bits(RowKey { row: 9, ..k }, 4),
        random_bits(k, 9),
    ] {
        assert_ne!(base, other);
    }
    // Roughly uniform: the mean of 2¹⁶ draws is within 1% of the middle.
    let mean = (0..1u64 << 16)
        .map(|c| random_bits(k, c) as f64)
        .sum::<f64>()
        / 65536.0;
    assert!((mean / 2f64.powi(31) - 1.0).abs() < 0.01, "{mean}");
    // A stochastic row is rounded with these bits, column by column.
    let src = [1.0 + 2f32.powi(-9); 32];
    let mut dst = [bf16::ZERO; 32];
    let r = Rounding::Stochastic { seed: 1 };
    r.round_row(&src, &mut dst, r.key(2, 3));
    for (j, d) in dst.iter().enumerate() {
        let want = rowwise::stochastic::<bf16>(src[j], random_bits(k, j as u64));
        assert_eq!(d.to_bits(), want.to_bits());
    }
    assert!(dst.iter().any(|d| d.to_f32() == 1.0) && dst.iter().any(|d| d.to_f32() > 1.0));
    Rounding::NearestEven.round_row(&src, &mut dst, r.key(2, 3));
    assert!(dst.iter().all(|d| d.to_f32() == 1.0));
}

/// The generator is its documented definition, written again here: SplitMix64's finalizer (pinned by the
/// published first output of SplitMix64 seeded with 0), the row stream `mix(mix(mix(seed ^ π's bits) ^ step) ^
/// row)`, and a column's bits the high half of `mix(stream + column · γ)`. Runs resumed from a checkpoint, on any
/// thread count, rely on this stream never changing.
#[test]
fn random_bits_follow_their_definition() {
    fn finalizer(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }
    const GAMMA: u64 = 0x9e3779b97f4a7c15;
    // SplitMix64(0)'s first output: the state advanced by γ, finalized.
    assert_eq!(finalizer(GAMMA), 0xe220a8397b1dcdaf);
    let mut rng = StdRng::seed_from_u64(11);
    for _ in 0..2000 {
        let k = RowKey {
            seed: rng.r#gen(),
            step: rng.gen_range(0..1_000_000),
            row: rng.gen_range(0..10_000_000),
        };
        let column: u64 = rng.gen_range(0..4096);
        let stream = finalizer(finalizer(finalizer(k.seed ^ 0x243f6a8885a308d3) ^ k.step) ^ k.row);
        let want = (finalizer(stream.wrapping_add(column.wrapping_mul(GAMMA))) >> 32) as u32;
        assert_eq!(random_bits(k, column), want, "{k:?} column {column}");
    }
}

/// A gradient row of `n` values in format `G` with special values sprinkled in: signed zeros, subnormals, ±∞, NaNs
/// with distinct payloads (quiet and signalling in f32), the format's largest values.
fn grad_row<G: adagrad_kernels::Grad<f32>>(rng: &mut StdRng, n: usize, special: bool) -> Vec<G> {
    let specials = [
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::from_bits(0x7FC0_1234),
        f32::from_bits(0xFF80_0001),
        1e-40,
        -3e38,
        65504.0,
        -6e-8,
    ];
    (0..n)
        .map(|i| {
            let x = if special && i % 3 == 0 {
                specials[(i / 3) % specials.len()]
            } else {
                rng.gen_range(-4.0f32..4.0)
            };
            G::round_from(x)
        })
        .collect()
}

fn accumulate_matches<G: adagrad_kernels::Grad<f32>>(name: &str) {
    let lens: Vec<usize> = (0..=80).chain([127, 128, 129, 255, 256, 257]).collect();
    let weights = [
        None,
        Some(1.0),
        Some(0.37),
        Some(-2.5),
        Some(0.0),
        Some(-0.0),
        Some(f32::INFINITY),
        Some(f32::from_bits(0x7FC0_0042)),
        Some(3e-39),
    ];
    for isa in Isa::ALL {
        let Some(k) = kernels_or_skip(isa, "every_path_accumulates_as_the_reference") else {
            continue;
        };
        let mut rng = StdRng::seed_from_u64(11);
        for &n in &lens {
            for offset in [0, 1, 3] {
                for weight in weights {
                    let special = (n + offset) % 2 == 0;
                    // Five lookups of the same row: the first sets the sum, the others add to it; the sum and
                    // the gradient start `offset` elements into their buffers (rows need not be aligned).
                    let mut sum = vec![f32::from_bits(0x7FC0_0DEF); n + offset];
                    let mut sum_ref = sum.clone();
                    for lookup in 0..5 {
                        let g = grad_row::<G>(&mut rng, n + offset, special && lookup % 2 == 0);
                        let first = lookup == 0;
                        k.accumulate(&mut sum[offset..], &g[offset..], weight, first)
                            .unwrap();
                        rowwise::accumulate(&mut sum_ref[offset..], &g[offset..], weight, first)
                            .unwrap();
                        assert!(
                            same_f32(&sum, &sum_ref),
                            "{isa} {name} n={n} offset {offset} weight {weight:?} lookup {lookup}:\n{:?}\n{:?}",
                            bits(&sum),
                            bits(&sum_ref)
                        );
                    }
                }
            }
        }
    }
}

/// Every path sums a row's gradient rows as the reference does, bit for bit (NaN equals NaN): f32, bf16 and f16 gradients, with
/// and without per-lookup weights (special ones included), row lengths 0–80 and around 128 and 256, rows at odd
/// offsets, special values (NaN payloads, ±0, ±∞, subnormals) in the gradients.
#[test]
fn every_path_accumulates_as_the_reference() {
    accumulate_matches::<f32>("f32");
    accumulate_matches::<bf16>("bf16");
    accumulate_matches::<f16>("f16");
}

/// The reference against its definition, written out: the first lookup sets the sum (a −0 gradient stays −0, which
/// adding it to a zeroed sum would lose), later ones add the rounded product; lengths are checked first.
#[test]
fn accumulate_follows_its_definition() {
    let g = [1.5f32, -0.0, 3.0, f32::from_bits(1)];
    let mut sum = [9.0f32; 4];
    rowwise::accumulate(&mut sum, &g, None, true).unwrap();
    assert_eq!(bits(&sum), bits(&g));
    assert_eq!(sum[1].to_bits(), (-0.0f32).to_bits());
    rowwise::accumulate(&mut sum, &g, Some(0.1), false).unwrap();
    for j in 0..4 {
        let product = 0.1f32 * g[j]; // rounded to f32 before the sum: no fused multiply-add
        assert_eq!(sum[j].to_bits(), (g[j] + product).to_bits(), "element {j}");
    }
    // 16-bit gradients widen exactly.
    let mut s16 = [0.0f32; 2];
    rowwise::accumulate(
        &mut s16,
        &[bf16::from_f32(1.0078125), bf16::from_f32(-3.0)],
        Some(2.0),
        true,
    )
    .unwrap();
    assert_eq!(s16, [2.015625, -6.0]);
    // A product that would differ if fused: w·g rounds first.
    let (w, x, s0) = (1.0f32 + f32::EPSILON, 1.0f32 - f32::EPSILON, -1.0f32);
    let mut s = [s0];
    rowwise::accumulate(&mut s, &[x], Some(w), false).unwrap();
    assert_eq!(s[0], s0 + w * x);
    assert_ne!(s[0], w.mul_add(x, s0));
    // Mismatched lengths: refused, nothing written, on every path.
    let mut short = [7.0f32; 3];
    assert!(rowwise::accumulate(&mut short, &g, None, true).is_err());
    for isa in Isa::ALL {
        if let Some(k) = kernels_or_skip(isa, "accumulate_follows_its_definition") {
            assert!(k.accumulate(&mut short, &g, None, false).is_err());
        }
    }
    assert_eq!(short, [7.0; 3]);
}
