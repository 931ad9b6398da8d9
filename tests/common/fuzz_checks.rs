//! The properties the fuzz targets check, shared with tests/fuzz_regressions.rs (which replays every saved
//! crashing input) through `#[path]`.

use adagrad::kernels::{EpsPlacement, Hyper, Isa, Kernels, Precision, reference};
use adagrad::{Adagrad, Config, Float, bf16, f16};

/// Checkpoint loader: arbitrary bytes never panic; a failed load changes nothing; an accepted checkpoint
/// serializes back to exactly the same bytes (but the CRC, which the loader does not check under the fuzzer).
pub fn checkpoint(data: &[u8]) {
    // Small models of both dtypes, so that well-formed inputs can match one.
    for lens in [&[3usize, 0, 2][..], &[1][..], &[][..]] {
        load_or_unchanged::<f32>(data, lens);
        load_or_unchanged::<f64>(data, lens);
    }
}

/// Loads `data` into a fresh optimizer over `lens`: accepted bytes round-trip, rejected ones change nothing.
fn load_or_unchanged<T: Float + bytemuck::Pod>(data: &[u8], lens: &[usize]) {
    let body = |b: &[u8]| {
        if cfg!(fuzzing) {
            b[..b.len().saturating_sub(4)].to_vec()
        } else {
            b.to_vec()
        }
    };
    let mut opt = Adagrad::<T>::new(Config::default(), lens).unwrap();
    let before = opt.to_checkpoint_bytes();
    match opt.load_bytes(data) {
        Ok(()) => {
            assert_eq!(
                body(&opt.to_checkpoint_bytes()),
                body(data),
                "accepted bytes do not round-trip"
            );
            // Whatever was loaded, the following steps return Ok or a typed error, never panic; an error changes
            // nothing (issue 13: a forged step count used to overflow on the next step).
            let mut params: Vec<Vec<T>> = lens.iter().map(|&n| vec![T::from_f64(0.5); n]).collect();
            let grads: Vec<Vec<T>> = lens.iter().map(|&n| vec![T::from_f64(0.25); n]).collect();
            for _ in 0..2 {
                let snapshot = opt.to_checkpoint_bytes();
                let mut ps: Vec<&mut [T]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
                let gs: Vec<&[T]> = grads.iter().map(|g| g.as_slice()).collect();
                if opt.step(&mut ps, &gs).is_err() {
                    assert_eq!(
                        opt.to_checkpoint_bytes(),
                        snapshot,
                        "a failed step changed the optimizer"
                    );
                }
            }
        }
        Err(_) => assert_eq!(
            opt.to_checkpoint_bytes(),
            before,
            "a failed load changed the optimizer"
        ),
    }
}

/// Bits equal, or both NaN.
fn same<T: Float>(a: &[T], b: &[T]) -> bool {
    a.iter().zip(b).all(|(x, y)| {
        let (x, y) = (x.to_f64(), y.to_f64());
        x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
    })
}

fn take<const N: usize>(data: &mut &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let n = N.min(data.len());
    out[..n].copy_from_slice(&data[..n]);
    *data = &data[n..];
    out
}

/// Kernels: lengths, start offsets, values (any bit pattern), hyperparameters and formats from the bytes; every
/// available path in Exact mode equals the reference bit for bit (NaN equals NaN).
pub fn kernels(mut data: &[u8]) {
    let head = take::<16>(&mut data);
    let f = |b: u8, scale: f64| {
        if b < 32 {
            0.0
        } else {
            b as f64 / 255.0 * scale
        }
    };
    let placement = if head[0] & 1 == 0 {
        EpsPlacement::Outside
    } else {
        EpsPlacement::Inside
    };
    let maximize = head[0] & 2 != 0;
    let eps = if head[0] & 4 != 0 {
        0.0
    } else {
        f(head[1], 1e-6)
    };
    let h64 = Hyper::<f64>::new(
        f(head[2], 1.0),
        f(head[3], 0.1),
        head[4] as u64 + 1,
        f(head[5], 0.5),
        eps,
        maximize,
        placement,
    );
    let scale = (head[0] & 8 != 0).then(|| 2f64.powi(head[6] as i32 - 128));
    let h64 = match scale {
        Some(s) => h64.with_grad_scale(s),
        None => h64,
    };
    let h32 = Hyper::<f32> {
        clr: h64.clr as f32,
        weight_decay: h64.weight_decay as f32,
        eps: h64.eps as f32,
        maximize,
        eps_placement: placement,
        grad_scale: h64.grad_scale.map(|s| s as f32),
    };
    let off = (head[7] % 16) as usize;
    let kind = head[8] % 4;
    match kind {
        0 | 1 | 3 => {
            // f32 params/state; kind 1: bf16 gradients with f16 copy-out; kind 3: bf16 gradients with bf16
            // copy-out.
            let n = data.len() / 12;
            let v: Vec<[f32; 3]> = (0..n)
                .map(|i| {
                    let c = &data[12 * i..12 * i + 12];
                    let w = |j: usize| f32::from_le_bytes(c[4 * j..4 * j + 4].try_into().unwrap());
                    [w(0), w(1), w(2).abs()]
                })
                .collect();
            let off = off.min(n);
            let p: Vec<f32> = v.iter().map(|x| x[0]).collect();
            let g: Vec<f32> = v.iter().map(|x| x[1]).collect();
            let s: Vec<f32> = v.iter().map(|x| x[2]).collect();
            match kind {
                0 => f32_step(&p, &g, &s, off, &h32),
                1 => mixed_step::<f16>(&p, &g, &s, off, &h32),
                _ => mixed_step::<bf16>(&p, &g, &s, off, &h32),
            }
        }
        _ => {
            // kind 2: f64.
            let n = data.len() / 24;
            let v: Vec<[f64; 3]> = (0..n)
                .map(|i| {
                    let c = &data[24 * i..24 * i + 24];
                    let w = |j: usize| f64::from_le_bytes(c[8 * j..8 * j + 8].try_into().unwrap());
                    [w(0), w(1), w(2).abs()]
                })
                .collect();
            let off = off.min(n);
            let p: Vec<f64> = v.iter().map(|x| x[0]).collect();
            let g: Vec<f64> = v.iter().map(|x| x[1]).collect();
            let s: Vec<f64> = v.iter().map(|x| x[2]).collect();
            let (mut rp, mut rs) = (p.clone(), s.clone());
            reference::update(&mut rp[off..], &g[off..], &mut rs[off..], &h64).unwrap();
            for isa in paths() {
                let k = Kernels::new(isa).unwrap();
                let (mut kp, mut ks) = (p.clone(), s.clone());
                k.update(
                    &mut kp[off..],
                    &g[off..],
                    &mut ks[off..],
                    &h64,
                    Precision::Exact,
                )
                .unwrap();
                assert!(
                    same(&kp, &rp) && same(&ks, &rs),
                    "{isa} differs from the reference"
                );
            }
        }
    }
}

/// Every path this CPU runs; a path `ADAGRAD_REQUIRE_ISA` names but the CPU lacks is a failure, not a skip.
fn paths() -> Vec<Isa> {
    let required = std::env::var("ADAGRAD_REQUIRE_ISA").unwrap_or_default();
    for isa in Isa::ALL {
        let named = required
            .split(',')
            .any(|r| r.trim().eq_ignore_ascii_case(isa.name()));
        assert!(
            !named || isa.is_available(),
            "ADAGRAD_REQUIRE_ISA names {isa}, which this CPU lacks"
        );
    }
    Isa::available().collect()
}

/// f32 gradients, no copy-out: every path Exact equals the reference; Fast leaves the state exact.
fn f32_step(p: &[f32], g: &[f32], s: &[f32], off: usize, h: &Hyper<f32>) {
    let (mut rp, mut rs) = (p.to_vec(), s.to_vec());
    reference::update(&mut rp[off..], &g[off..], &mut rs[off..], h).unwrap();
    for isa in paths() {
        let k = Kernels::new(isa).unwrap();
        let (mut kp, mut ks) = (p.to_vec(), s.to_vec());
        k.update(
            &mut kp[off..],
            &g[off..],
            &mut ks[off..],
            h,
            Precision::Exact,
        )
        .unwrap();
        assert!(
            same(&kp, &rp) && same(&ks, &rs),
            "{isa} differs from the reference"
        );
        let (mut fp, mut fs) = (p.to_vec(), s.to_vec());
        k.update(
            &mut fp[off..],
            &g[off..],
            &mut fs[off..],
            h,
            Precision::Fast,
        )
        .unwrap();
        assert!(same(&fs, &rs), "{isa} fast changed the state");
    }
}

/// bf16 gradients (the top halves of `g`) with a copy-out in format `O`: every path equals the reference, copy-out
/// bits included.
fn mixed_step<O: adagrad::CopyOut<f32> + adagrad::Grad<f32>>(
    p: &[f32],
    g: &[f32],
    s: &[f32],
    off: usize,
    h: &Hyper<f32>,
) {
    let n = p.len();
    let gb: Vec<bf16> = g
        .iter()
        .map(|&x| bf16::from_bits((x.to_bits() >> 16) as u16))
        .collect();
    let (mut rp, mut rs) = (p.to_vec(), s.to_vec());
    let mut rout = vec![<O as adagrad::CopyOut<f32>>::ZERO_VALUE; n];
    reference::update_mixed(
        &mut rp[off..],
        &gb[off..],
        &mut rs[off..],
        Some(&mut rout[off..]),
        h,
    )
    .unwrap();
    for isa in paths() {
        let k = Kernels::new(isa).unwrap();
        let (mut kp, mut ks) = (p.to_vec(), s.to_vec());
        let mut kout = vec![<O as adagrad::CopyOut<f32>>::ZERO_VALUE; n];
        k.update_with(
            &mut kp[off..],
            &gb[off..],
            &mut ks[off..],
            Some(&mut kout[off..]),
            h,
            Precision::Exact,
        )
        .unwrap();
        assert!(
            same(&kp, &rp) && same(&ks, &rs),
            "{isa} differs from the reference"
        );
        let bits = |v: &[O]| -> Vec<u16> { bytemuck::cast_slice::<O, u16>(v).to_vec() };
        assert_eq!(bits(&kout), bits(&rout), "{isa} copy-out differs");
    }
}

/// Embedding steps from arbitrary bytes: ids (any i64, out of range and negative included), offsets, weights
/// and gradient bits parsed from the input. A refused step changes nothing (table, state, count); an accepted one
/// equals a model written here (each row's gradients summed in lookup order with a map, then the row spec, or
/// the dense reference per row). Arbitrary bytes loaded as an embedding checkpoint never panic and, refused,
/// change nothing.
pub fn embedding(data: &[u8]) {
    embedding_accepted(data);
}

/// [`embedding`], saying whether the step was accepted (so that the regression inputs can be shown to reach the
/// model comparison).
pub fn embedding_accepted(data: &[u8]) -> bool {
    use adagrad::embedding::{Accumulator, EmbeddingAdagrad, Lookups, TableOptions};
    use adagrad::kernels::rowwise::{self, DecayMode, RowHyper};
    use std::collections::BTreeMap;
    let Some((&head, rest)) = data.split_first() else {
        return false;
    };
    let (rows, dim) = (1 + (head & 7) as usize, 1 + ((head >> 3) & 7) as usize);
    let accumulator = if head & 0x40 != 0 {
        Accumulator::ElementWise
    } else {
        Accumulator::RowWise
    };
    let form = rest.first().copied().unwrap_or(0) % 3;
    let rest = rest.get(1..).unwrap_or(&[]);
    // Lookups: one byte each for the id (a few out of range or negative), then gradient bits.
    let n = rest.len().min(24) / 2;
    let ids: Vec<i64> = rest[..n]
        .iter()
        .map(|&b| b as i8 as i64 % (rows as i64 + 2))
        .collect();
    let mut words = rest[n..].chunks(4).map(|c| {
        let mut w = [0u8; 4];
        w[..c.len()].copy_from_slice(c);
        f32::from_le_bytes(w)
    });
    let mut take = |k: usize| -> Vec<f32> { (0..k).map(|_| words.next().unwrap_or(0.5)).collect() };
    let grads = take(n * dim);
    let offsets: Vec<i64> = rest[..n.min(4)]
        .iter()
        .map(|&b| (b % (n as u8 + 2)) as i64)
        .collect();
    let weights = take(n);
    let config = Config::default().lr(0.05).eps(1e-8).weight_decay(0.01);
    let options = TableOptions::default()
        .accumulator(accumulator)
        .decay(if head & 0x80 != 0 {
            DecayMode::Decoupled
        } else {
            DecayMode::L2
        });
    let mut opt = EmbeddingAdagrad::<f32>::new(config.clone(), rows, dim, options).unwrap();
    let mut table: Vec<f32> = (0..rows * dim).map(|i| (i as f32 * 0.37).sin()).collect();
    let (t0, s0) = (table.clone(), opt.state().to_vec());
    let lookups = match form {
        0 => Lookups::Rows {
            ids: &ids,
            grads: &grads,
        },
        1 => Lookups::Coalesced {
            ids: &ids,
            grads: &grads,
        },
        _ => Lookups::Bags {
            ids: &ids,
            offsets: &offsets,
            weights: Some(&weights),
            grads: &grads[..grads.len().min(offsets.len().saturating_sub(1) * dim)],
        },
    };
    let result = opt.step(&mut table, lookups);
    if result.is_err() {
        assert_eq!(
            table.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            t0.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(
            opt.state().iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            s0.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(opt.step_count(), 0);
    } else {
        // The model: per-lookup gradient rows (bags expanded), summed per row in lookup order.
        let row_of = |pos: usize| -> Vec<f32> {
            match form {
                2 => {
                    let b = offsets
                        .windows(2)
                        .position(|o| (o[0]..o[1]).contains(&(pos as i64)))
                        .unwrap();
                    grads[b * dim..(b + 1) * dim]
                        .iter()
                        .map(|g| weights[pos] * g)
                        .collect()
                }
                _ => grads[pos * dim..(pos + 1) * dim].to_vec(),
            }
        };
        let mut sums: BTreeMap<usize, Vec<f32>> = BTreeMap::new();
        for (pos, &id) in ids.iter().enumerate() {
            let g = row_of(pos);
            match sums.get_mut(&(id as usize)) {
                Some(s) => s.iter_mut().zip(&g).for_each(|(s, g)| *s += g),
                None => {
                    sums.insert(id as usize, g);
                }
            }
        }
        let mut model = t0.clone();
        let mut state = s0.clone();
        let hy = RowHyper::new(
            0.05,
            0.0,
            1,
            0.01,
            options.decay,
            1e-8,
            false,
            EpsPlacement::Outside,
        );
        let dense = Hyper::<f32>::new(
            0.05,
            0.0,
            1,
            if options.decay == DecayMode::L2 {
                0.01
            } else {
                0.0
            },
            1e-8,
            false,
            EpsPlacement::Outside,
        );
        for (r, g) in &sums {
            let w = &mut model[r * dim..(r + 1) * dim];
            match accumulator {
                Accumulator::RowWise => rowwise::update_f32(w, g, &mut state[*r], &hy).unwrap(),
                Accumulator::ElementWise => {
                    if let Some(c) = hy.decoupled_factor() {
                        rowwise::decay_elementwise(w, c);
                    }
                    reference::update(w, g, &mut state[r * dim..(r + 1) * dim], &dense).unwrap()
                }
            }
        }
        // Bit for bit, except that which NaN a NaN result is (sign, payload) is not promised (README,
        // "Exactness"): the fuzzer found a row whose NaN payload depends on the order of operands.
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert!(
            table.len() == model.len() && same(&table, &model),
            "table {:?} != model {:?}",
            bits(&table),
            bits(&model)
        );
        assert!(
            opt.state().len() == state.len() && same(opt.state(), &state),
            "state {:?} != model {:?}",
            bits(opt.state()),
            bits(&state)
        );
    }
    // The same bytes as a checkpoint.
    let before = opt.to_checkpoint_bytes();
    if opt.load_bytes(data).is_err() {
        assert_eq!(opt.to_checkpoint_bytes(), before);
    }
    result.is_ok()
}
