//! Embedding-table steps: an independent model of the duplicate sums (a map of rows, summed in lookup order, then
//! the row spec) on every path; the element-wise step against the dense optimizer; thread counts and input forms
//! that must not change a bit; every refusal, with nothing changed.

#[path = "../kernels/tests/common/mod.rs"]
mod kernels_common;

use adagrad::embedding::{
    Accumulator, EmbeddingAdagrad, LookupError, Lookups, Table, TableOptions,
};
use adagrad::kernels::rowwise::{self, DecayMode, Rounding, RowHyper};
use adagrad::{
    Adagrad, Config, EpsPlacement, Error, Isa, NonFinite, Parallelism, StepOutcome, Tuning, bf16,
    f16,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

/// A configuration that splits even tiny steps across `threads` threads (pieces of one row).
fn config(isa: Isa, threads: usize) -> Config {
    Config::default()
        .lr(0.05)
        .lr_decay(0.01)
        .eps(1e-8)
        .isa(isa)
        .parallelism(Parallelism::Threads(threads))
        .tuning(Tuning {
            parallel_threshold: 0,
            min_piece: 1,
            // The coalescing sort on the threads too, whatever this CPU's table entry says.
            sort_threshold: 0,
            ..Tuning::for_cpu(&adagrad::Cpu::this())
        })
}

/// An f32 table's optimizer with the default options, on `threads` threads of the best path ([`config`]).
fn default_table(threads: usize, rows: usize, dim: usize) -> EmbeddingAdagrad<f32> {
    EmbeddingAdagrad::new(
        config(Isa::best(), threads),
        rows,
        dim,
        TableOptions::default(),
    )
    .unwrap()
}

/// Three lookups (rows 1, 2 and 3) pooled into one bag, with per-lookup `weights`.
fn one_bag<'a>(weights: &'a [f32], grads: &'a [f32]) -> Lookups<'a, u32> {
    Lookups::Bags {
        ids: &[1, 2, 3],
        offsets: &[0, 3],
        weights: Some(weights),
        grads,
    }
}

/// Skewed ids (a few hot rows, many cold), the shape of real lookups.
fn ids(rng: &mut StdRng, n: usize, rows: usize) -> Vec<i64> {
    (0..n)
        .map(|_| {
            let u: f64 = rng.r#gen();
            ((u * u * u * rows as f64) as usize).min(rows - 1) as i64
        })
        .collect()
}

fn values(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

fn bits<W: Table>(v: &[W]) -> Vec<u8> {
    bytemuck::cast_slice(v).to_vec()
}

/// The model: each touched row's gradient summed in ascending lookup position, then the row spec (row-wise) —
/// written with a map, sharing nothing with the crate's sorting and splitting.
#[test]
fn row_wise_steps_match_an_independent_model_on_every_path() {
    let (rows, dim) = (300, 21);
    for isa in Isa::ALL {
        if kernels_common::kernels_or_skip(isa, "row_wise_model").is_none() {
            continue;
        }
        for (wd, decay, maximize) in [
            (0.0, DecayMode::L2, false),
            (0.01, DecayMode::L2, true),
            (0.02, DecayMode::Decoupled, false),
        ] {
            let mut rng = StdRng::seed_from_u64(1);
            let mut table = values(&mut rng, rows * dim);
            let mut model = table.clone();
            let mut h = vec![0.1f32; rows];
            let c = config(isa, 2)
                .weight_decay(wd)
                .maximize(maximize)
                .initial_accumulator_value(0.1);
            let mut opt = EmbeddingAdagrad::<f32>::new(
                c.clone(),
                rows,
                dim,
                TableOptions::default().decay(decay),
            )
            .unwrap();
            for t in 1..=6u64 {
                let ids = ids(&mut rng, if t % 2 == 0 { 500 } else { 3000 }, rows); // both sorts
                let grads = values(&mut rng, ids.len() * dim);
                opt.step(
                    &mut table,
                    Lookups::Rows {
                        ids: &ids,
                        grads: &grads,
                    },
                )
                .unwrap();
                let mut sums: BTreeMap<usize, Vec<f32>> = BTreeMap::new();
                for (pos, &id) in ids.iter().enumerate() {
                    let g = &grads[pos * dim..(pos + 1) * dim];
                    match sums.get_mut(&(id as usize)) {
                        Some(s) => s.iter_mut().zip(g).for_each(|(s, g)| *s += g),
                        None => {
                            sums.insert(id as usize, g.to_vec());
                        }
                    }
                }
                let hy = RowHyper::new(
                    c.lr,
                    c.lr_decay,
                    t,
                    wd,
                    decay,
                    c.eps,
                    maximize,
                    EpsPlacement::Outside,
                );
                for (r, g) in &sums {
                    rowwise::update_f32(&mut model[r * dim..(r + 1) * dim], g, &mut h[*r], &hy)
                        .unwrap();
                }
                assert_eq!(bits(&table), bits(&model), "{isa} step {t} wd {wd}");
                assert_eq!(bits(opt.state()), bits(&h), "{isa} step {t}");
                assert_eq!(opt.step_count(), t);
            }
        }
    }
}

/// An element-wise step that touches every row once is the dense step on that gradient, bit for bit.
#[test]
fn element_wise_step_over_every_row_is_the_dense_step() {
    let (rows, dim) = (97, 13);
    for isa in Isa::ALL {
        if kernels_common::kernels_or_skip(isa, "element_wise_dense").is_none() {
            continue;
        }
        for (wd, maximize, placement) in [
            (0.0, false, EpsPlacement::Outside),
            (0.03, true, EpsPlacement::Outside),
            (0.0, false, EpsPlacement::Inside),
        ] {
            let c = config(isa, 3)
                .weight_decay(wd)
                .maximize(maximize)
                .eps_placement(placement);
            let mut rng = StdRng::seed_from_u64(2);
            let mut table = values(&mut rng, rows * dim);
            let mut dense = table.clone();
            let opts = TableOptions::default().accumulator(Accumulator::ElementWise);
            let mut opt = EmbeddingAdagrad::<f32>::new(c.clone(), rows, dim, opts).unwrap();
            let mut dopt = Adagrad::<f32>::new(c, &[rows * dim]).unwrap();
            for step in 0..5 {
                // Every row once, in a shuffled order.
                let mut order: Vec<u32> = (0..rows as u32).collect();
                for i in (1..order.len()).rev() {
                    order.swap(i, rng.gen_range(0..=i));
                }
                let g_dense = values(&mut rng, rows * dim);
                let grads: Vec<f32> = order
                    .iter()
                    .flat_map(|&r| g_dense[r as usize * dim..(r as usize + 1) * dim].to_vec())
                    .collect();
                opt.step(
                    &mut table,
                    Lookups::Rows {
                        ids: &order,
                        grads: &grads,
                    },
                )
                .unwrap();
                dopt.step_flat(&mut dense, &g_dense).unwrap();
                assert_eq!(bits(&table), bits(&dense), "{isa} step {step}");
                assert_eq!(
                    bits(opt.state()),
                    bits(&dopt.state()[0]),
                    "{isa} step {step}"
                );
            }
        }
    }
}

/// Runs four steps of a random skewed workload on a `W` table and returns the table and state bits.
fn workload<W: Table>(
    isa: Isa,
    threads: usize,
    options: TableOptions,
    from_f32: fn(f32) -> W,
) -> (Vec<u8>, Vec<u8>) {
    workload_ahead(isa, threads, options, from_f32, None)
}

/// [`workload`] with the prefetch distances (rows ahead, lookups ahead) set, or this CPU's.
fn workload_ahead<W: Table>(
    isa: Isa,
    threads: usize,
    options: TableOptions,
    from_f32: fn(f32) -> W,
    ahead: Option<(usize, usize)>,
) -> (Vec<u8>, Vec<u8>) {
    let (rows, dim) = (2000, 19);
    let mut rng = StdRng::seed_from_u64(3);
    let mut table: Vec<W> = values(&mut rng, rows * dim)
        .into_iter()
        .map(from_f32)
        .collect();
    let mut c = config(isa, threads).weight_decay(0.01);
    if let Some((rows_ahead, lookups_ahead)) = ahead {
        let t = c.tuning.expect("config sets a tuning");
        c = c.tuning(Tuning {
            rows_ahead,
            lookups_ahead,
            ..t
        });
    }
    let mut opt = EmbeddingAdagrad::<W>::new(c, rows, dim, options).unwrap();
    for _ in 0..4 {
        let ids = ids(&mut rng, 3000, rows);
        let grads = values(&mut rng, ids.len() * dim);
        opt.step(
            &mut table,
            Lookups::Rows {
                ids: &ids,
                grads: &grads,
            },
        )
        .unwrap();
    }
    (bits(&table), bits(opt.state()))
}

/// Thread counts and paths never change a bit: row-wise and element-wise, f32, bf16 (stochastic rounding) and f16
/// tables, every decay mode.
#[test]
fn threads_and_paths_give_the_same_bits() {
    for accumulator in [Accumulator::RowWise, Accumulator::ElementWise] {
        for decay in [DecayMode::L2, DecayMode::Decoupled] {
            let o = TableOptions::default()
                .accumulator(accumulator)
                .decay(decay);
            let sr = o.rounding(Rounding::Stochastic { seed: 9 });
            let base32 = workload::<f32>(Isa::Scalar, 1, o, |x| x);
            let base16 = workload::<f16>(Isa::Scalar, 1, o, f16::from_f32);
            let base_b = workload::<bf16>(Isa::Scalar, 1, sr, bf16::from_f32);
            assert_ne!(base_b, workload::<bf16>(Isa::Scalar, 1, o, bf16::from_f32));
            for isa in Isa::ALL {
                if kernels_common::kernels_or_skip(isa, "threads_and_paths").is_none() {
                    continue;
                }
                for threads in [1, 2, 3, 4] {
                    let what = format!("{isa} {threads} {accumulator:?} {decay:?}");
                    assert_eq!(
                        workload::<f32>(isa, threads, o, |x| x),
                        base32,
                        "f32 {what}"
                    );
                    assert_eq!(
                        workload::<f16>(isa, threads, o, f16::from_f32),
                        base16,
                        "f16 {what}"
                    );
                    assert_eq!(
                        workload::<bf16>(isa, threads, sr, bf16::from_f32),
                        base_b,
                        "bf16 {what}"
                    );
                }
            }
        }
    }
}

/// The prefetch distances change no bit (none, the nearest, odd ones, the largest allowed), and the optimizer
/// uses the ones it is given.
#[test]
fn prefetch_distances_change_nothing() {
    for accumulator in [Accumulator::RowWise, Accumulator::ElementWise] {
        let o = TableOptions::default().accumulator(accumulator);
        let base = workload::<f32>(Isa::Scalar, 1, o, |x| x);
        for ahead in [
            (0, 0),
            (1, 1),
            (3, 2),
            (0, 5),
            (Tuning::MAX_AHEAD, Tuning::MAX_AHEAD),
        ] {
            for threads in [1, 2] {
                assert_eq!(
                    workload_ahead::<f32>(Isa::Scalar, threads, o, |x| x, Some(ahead)),
                    base,
                    "{accumulator:?} {ahead:?} {threads}"
                );
            }
        }
    }
    let c = config(Isa::Scalar, 1);
    let t = Tuning {
        rows_ahead: 3,
        lookups_ahead: 2,
        ..c.tuning.unwrap()
    };
    let opt = EmbeddingAdagrad::<f32>::new(c.tuning(t), 10, 2, TableOptions::default()).unwrap();
    assert_eq!(
        (opt.tuning().rows_ahead, opt.tuning().lookups_ahead),
        (3, 2)
    );
    let too_far = Tuning {
        lookups_ahead: Tuning::MAX_AHEAD + 1,
        ..t
    };
    assert!(matches!(
        EmbeddingAdagrad::<f32>::new(
            config(Isa::Scalar, 1).tuning(too_far),
            10,
            2,
            TableOptions::default()
        ),
        Err(adagrad::Error::InvalidTune(_))
    ));
}

/// Bags with weights are the per-lookup rows `f32(weight · bag row)`; coalesced input is per-lookup input with
/// distinct ids; bf16 gradients are their exact f32 values; u32, u64, usize and i32 ids are i64 ids.
#[test]
fn input_forms_agree() {
    let (rows, dim) = (500, 9);
    let mut rng = StdRng::seed_from_u64(4);
    let table0 = values(&mut rng, rows * dim);
    let run = |f: &dyn Fn(&mut EmbeddingAdagrad<f32>, &mut Vec<f32>)| {
        let mut t = table0.clone();
        let mut opt = default_table(2, rows, dim);
        f(&mut opt, &mut t);
        (bits(&t), bits(opt.state()))
    };
    let ids = ids(&mut rng, 800, rows);
    let offsets: Vec<i64> = [0i64, 0, 5, 100, 100, 333, 700, 800].to_vec();
    let weights = values(&mut rng, ids.len());
    let bag_grads = values(&mut rng, (offsets.len() - 1) * dim);
    let mut expanded = Vec::new();
    for (pos, w) in weights.iter().enumerate() {
        let b = offsets
            .windows(2)
            .position(|o| (o[0]..o[1]).contains(&(pos as i64)))
            .unwrap();
        expanded.extend(bag_grads[b * dim..(b + 1) * dim].iter().map(|g| w * g));
    }
    let bags = run(&|o, t| {
        o.step(
            t,
            Lookups::Bags {
                ids: &ids,
                offsets: &offsets,
                weights: Some(&weights),
                grads: &bag_grads,
            },
        )
        .unwrap();
    });
    let rows_form = run(&|o, t| {
        o.step(
            t,
            Lookups::Rows {
                ids: &ids,
                grads: &expanded,
            },
        )
        .unwrap();
    });
    assert_eq!(bags, rows_form);
    // Unweighted bags: the bag row itself for each lookup.
    let mut plain = Vec::new();
    for pos in 0..ids.len() {
        let b = offsets
            .windows(2)
            .position(|o| (o[0]..o[1]).contains(&(pos as i64)))
            .unwrap();
        plain.extend_from_slice(&bag_grads[b * dim..(b + 1) * dim]);
    }
    assert_eq!(
        run(&|o, t| {
            o.step(
                t,
                Lookups::Bags {
                    ids: &ids,
                    offsets: &offsets,
                    weights: None,
                    grads: &bag_grads,
                },
            )
            .unwrap();
        }),
        run(&|o, t| {
            o.step(
                t,
                Lookups::Rows {
                    ids: &ids,
                    grads: &plain,
                },
            )
            .unwrap();
        })
    );
    // Coalesced: distinct ids in any order.
    let mut uniq: Vec<u32> = (0..rows as u32).filter(|r| r % 3 == 1).collect();
    uniq.reverse();
    let g = values(&mut rng, uniq.len() * dim);
    let coalesced = run(&|o, t| {
        o.step(
            t,
            Lookups::Coalesced {
                ids: &uniq,
                grads: &g,
            },
        )
        .unwrap();
    });
    assert_eq!(
        coalesced,
        run(&|o, t| {
            o.step(
                t,
                Lookups::Rows {
                    ids: &uniq,
                    grads: &g,
                },
            )
            .unwrap();
        })
    );
    // Id types.
    let as_u64: Vec<u64> = uniq.iter().map(|&x| x as u64).collect();
    let as_usize: Vec<usize> = uniq.iter().map(|&x| x as usize).collect();
    let as_i32: Vec<i32> = uniq.iter().map(|&x| x as i32).collect();
    for other in [
        run(&|o, t| {
            o.step(
                t,
                Lookups::Rows {
                    ids: &as_u64,
                    grads: &g,
                },
            )
            .unwrap();
        }),
        run(&|o, t| {
            o.step(
                t,
                Lookups::Rows {
                    ids: &as_usize,
                    grads: &g,
                },
            )
            .unwrap();
        }),
        run(&|o, t| {
            o.step(
                t,
                Lookups::Rows {
                    ids: &as_i32,
                    grads: &g,
                },
            )
            .unwrap();
        }),
    ] {
        assert_eq!(other, coalesced);
    }
    // bf16 gradients.
    let gb: Vec<bf16> = g.iter().map(|&x| bf16::from_f32(x)).collect();
    let gw: Vec<f32> = gb.iter().map(|x| x.to_f32()).collect();
    assert_eq!(
        run(&|o, t| {
            o.step(
                t,
                Lookups::Rows {
                    ids: &uniq,
                    grads: &gb,
                },
            )
            .unwrap();
        }),
        run(&|o, t| {
            o.step(
                t,
                Lookups::Rows {
                    ids: &uniq,
                    grads: &gw,
                },
            )
            .unwrap();
        })
    );
}

/// Every malformed input is refused with the first offending position, and nothing changes.
#[test]
fn refusals_change_nothing() {
    let (rows, dim) = (10, 3);
    let mut opt = EmbeddingAdagrad::<f32>::new(
        Config::default().non_finite(NonFinite::Error),
        rows,
        dim,
        TableOptions::default(),
    )
    .unwrap();
    let mut table = vec![1.0f32; rows * dim];
    let g = |n: usize| vec![0.5f32; n * dim];
    // One good step, so that state and count are not at their initial values.
    opt.step(
        &mut table,
        Lookups::Rows {
            ids: &[1u32, 2],
            grads: &g(2),
        },
    )
    .unwrap();
    let (t0, s0) = (table.clone(), opt.state().to_vec());
    let cases: Vec<(Result<StepOutcome, Error>, LookupError)> = vec![
        (
            opt.step(
                &mut table[..29],
                Lookups::Rows {
                    ids: &[1u32],
                    grads: &g(1),
                },
            ),
            LookupError::TableLength {
                expected: 30,
                got: 29,
            },
        ),
        (
            opt.step(
                &mut table,
                Lookups::Rows {
                    ids: &[1i64, 2, 3, 10, -1],
                    grads: &g(5),
                },
            ),
            LookupError::Id {
                position: 3,
                id: 10,
                rows: 10,
            },
        ),
        (
            opt.step(
                &mut table,
                Lookups::Rows {
                    ids: &[1i64, -4, 30],
                    grads: &g(3),
                },
            ),
            LookupError::Id {
                position: 1,
                id: -4,
                rows: 10,
            },
        ),
        (
            opt.step(
                &mut table,
                Lookups::Rows {
                    ids: &[1u32, 2],
                    grads: &g(3),
                },
            ),
            LookupError::GradLength {
                expected: 6,
                got: 9,
            },
        ),
        (
            opt.step(
                &mut table,
                Lookups::Coalesced {
                    ids: &[4u32, 3, 4, 3],
                    grads: &g(4),
                },
            ),
            LookupError::Duplicate { position: 2, id: 4 },
        ),
        (
            opt.step(
                &mut table,
                Lookups::Bags {
                    ids: &[1i64, 2],
                    offsets: &[],
                    weights: None,
                    grads: &g(0),
                },
            ),
            LookupError::Offset {
                position: 0,
                value: 0,
                reason: "no offsets: bags need bags + 1 of them",
            },
        ),
        (
            opt.step(
                &mut table,
                Lookups::Bags {
                    ids: &[1i64, 2],
                    offsets: &[1, 2],
                    weights: None,
                    grads: &g(1),
                },
            ),
            LookupError::Offset {
                position: 0,
                value: 1,
                reason: "the first offset must be 0",
            },
        ),
        (
            opt.step(
                &mut table,
                Lookups::Bags {
                    ids: &[1i64, 2, 3],
                    offsets: &[0, 2, 1, 3],
                    weights: None,
                    grads: &g(3),
                },
            ),
            LookupError::Offset {
                position: 2,
                value: 1,
                reason: "offsets must not decrease",
            },
        ),
        (
            opt.step(
                &mut table,
                Lookups::Bags {
                    ids: &[1i64, 2, 3],
                    offsets: &[0, 4, 3],
                    weights: None,
                    grads: &g(2),
                },
            ),
            LookupError::Offset {
                position: 1,
                value: 4,
                reason: "beyond the number of lookups",
            },
        ),
        (
            opt.step(
                &mut table,
                Lookups::Bags {
                    ids: &[1i64, 2, 3],
                    offsets: &[0, 1, 2],
                    weights: None,
                    grads: &g(2),
                },
            ),
            LookupError::Offset {
                position: 2,
                value: 2,
                reason: "the last offset must equal the number of lookups",
            },
        ),
        (
            opt.step(
                &mut table,
                Lookups::Bags {
                    ids: &[1i64, 2, 3],
                    offsets: &[0, -1, 3],
                    weights: None,
                    grads: &g(2),
                },
            ),
            LookupError::Offset {
                position: 1,
                value: -1,
                reason: "negative",
            },
        ),
        (
            opt.step(
                &mut table,
                Lookups::Bags {
                    ids: &[1i64, 2, 3],
                    offsets: &[0, 3],
                    weights: Some(&[1.0; 2]),
                    grads: &g(1),
                },
            ),
            LookupError::WeightsLength {
                expected: 3,
                got: 2,
            },
        ),
    ];
    for (i, (got, want)) in cases.into_iter().enumerate() {
        assert_eq!(got, Err(Error::Lookup(want)), "case {i}");
    }
    // Non-finite gradients under NonFinite::Error, and weights too.
    let mut bad = g(2);
    bad[4] = f32::NAN;
    assert_eq!(
        opt.step(
            &mut table,
            Lookups::Rows {
                ids: &[1u32, 2],
                grads: &bad
            }
        ),
        Err(Error::NonFiniteGradient { count: 1 })
    );
    // An ∞ weight makes row 3's whole gradient (its 3 elements) infinite.
    assert_eq!(
        opt.step(&mut table, one_bag(&[1.0, 2.0, f32::INFINITY], &g(1))),
        Err(Error::NonFiniteGradient { count: 3 })
    );
    assert_eq!(
        (table.clone(), opt.state().to_vec(), opt.step_count()),
        (t0.clone(), s0.clone(), 1)
    );
    // SkipStep reports the count and changes nothing either.
    let mut skip = EmbeddingAdagrad::<f32>::new(
        Config::default().non_finite(NonFinite::SkipStep),
        rows,
        dim,
        TableOptions::default(),
    )
    .unwrap();
    assert_eq!(
        skip.step(
            &mut table,
            Lookups::Rows {
                ids: &[1u32, 2],
                grads: &bad
            }
        ),
        Ok(StepOutcome::Skipped { non_finite: 1 })
    );
    assert_eq!((table, skip.step_count()), (t0, 0));
    // Shapes and configurations refused at construction.
    let shape = |rows, dim| {
        EmbeddingAdagrad::<f16>::new(Config::default(), rows, dim, TableOptions::default())
    };
    assert!(matches!(
        shape(10, 0),
        Err(Error::TableShape {
            reason: "dim must be at least 1",
            ..
        })
    ));
    assert!(matches!(shape(1 << 33, 1), Err(Error::TableShape { .. })));
    assert!(matches!(
        shape(usize::MAX / 2, 3),
        Err(Error::TableShape { .. })
    ));
    assert!(matches!(
        EmbeddingAdagrad::<f32>::new(Config::default().lr(1e39), 1, 1, TableOptions::default()),
        Err(Error::InvalidConfig { field: "lr", .. })
    ));
    // Messages name what is wrong.
    let e = Error::Lookup(LookupError::Id {
        position: 3,
        id: 10,
        rows: 10,
    });
    assert_eq!(
        e.to_string(),
        "lookups: id 10 at position 3 is outside the table's 10 rows"
    );
}

/// Untouched rows keep their bits and state; an empty step only counts.
#[test]
fn untouched_rows_are_left_alone() {
    let (rows, dim) = (50, 4);
    let mut table = vec![0.25f32; rows * dim];
    let mut opt =
        EmbeddingAdagrad::<bf16>::new(Config::default(), rows, dim, TableOptions::default())
            .unwrap();
    let mut t16: Vec<bf16> = table.iter().map(|&x| bf16::from_f32(x)).collect();
    opt.step(
        &mut t16,
        Lookups::Rows {
            ids: &[7u32, 7, 9],
            grads: &[1.0f32; 12],
        },
    )
    .unwrap();
    for r in 0..rows {
        let changed = t16[r * dim..(r + 1) * dim]
            .iter()
            .any(|x| x.to_f32() != 0.25);
        assert_eq!(changed, r == 7 || r == 9, "row {r}");
        assert_eq!(opt.state()[r] != 0.0, r == 7 || r == 9);
    }
    let none: [u32; 0] = [];
    let before = t16.clone();
    opt.step(
        &mut t16,
        Lookups::Rows {
            ids: &none,
            grads: &[0.0f32; 0],
        },
    )
    .unwrap();
    assert_eq!((opt.step_count(), bits(&t16)), (2, bits(&before)));
    table.clear();
}

/// Element-wise decoupled decay from its definition, on a few elements: each touched weight is first scaled by
/// `f32(1 − lr·wd)`, then takes the dense step (no decay); untouched rows keep their weights.
#[test]
fn element_wise_decoupled_decay_from_its_definition() {
    let (lr, wd) = (0.1f64, 0.2f64);
    let config = Config::default().lr(lr).weight_decay(wd).eps(1e-8);
    let options = TableOptions::default()
        .accumulator(Accumulator::ElementWise)
        .decay(DecayMode::Decoupled);
    let (rows, dim) = (3, 2);
    let mut opt = EmbeddingAdagrad::<f32>::new(config.clone(), rows, dim, options).unwrap();
    let w0 = [0.75f32, -1.5, 0.25, 2.0, -0.5, 3.0];
    let mut table = w0.to_vec();
    let g = [0.5f32, -0.25, 1.0, 0.125];
    opt.step(
        &mut table,
        Lookups::Rows {
            ids: &[0u32, 2],
            grads: &g,
        },
    )
    .unwrap();
    let c = 1.0f32 - (lr as f32) * (wd as f32);
    let mut decayed: Vec<f32> = [0, 1, 4, 5].iter().map(|&i| w0[i] * c).collect();
    let mut dense = Adagrad::<f32>::new(config.weight_decay(0.0), &[4]).unwrap();
    dense.step(&mut [&mut decayed], &[&g]).unwrap();
    let want = [decayed[0], decayed[1], w0[2], w0[3], decayed[2], decayed[3]];
    assert_eq!(bits(&table), bits(&want));
    assert_ne!(c, 1.0);
}

/// `set_lr` refuses what the step could not use (negative, NaN, infinite, beyond f32) with nothing changed, and
/// a valid rate is the one the following steps use.
#[test]
fn set_lr_refuses_bad_rates_and_takes_good_ones() {
    let (rows, dim) = (8, 4);
    let step = |opt: &mut EmbeddingAdagrad<f32>, table: &mut Vec<f32>| {
        opt.step(
            table,
            Lookups::Rows {
                ids: &[1u32, 3, 1],
                grads: &[
                    0.5f32, -0.25, 1.0, 2.0, 0.125, 0.75, -1.5, 0.0, 1.0, 1.0, -1.0, 0.5,
                ],
            },
        )
        .unwrap();
    };
    for accumulator in [Accumulator::RowWise, Accumulator::ElementWise] {
        let options = TableOptions::default().accumulator(accumulator);
        let make = |lr: f64| {
            EmbeddingAdagrad::<f32>::new(Config::default().lr(lr), rows, dim, options).unwrap()
        };
        let mut opt = make(0.1);
        let mut table = vec![0.5f32; rows * dim];
        for bad in [-0.1, f64::NAN, f64::INFINITY, 1e39] {
            assert!(opt.set_lr(bad).is_err(), "{bad}");
            assert_eq!(opt.config().lr, 0.1, "{bad}");
        }
        // The refused rates left the rate the optimizer was built with.
        let (mut same, mut same_table) = (make(0.1), vec![0.5f32; rows * dim]);
        step(&mut opt, &mut table);
        step(&mut same, &mut same_table);
        assert_eq!(bits(&table), bits(&same_table));
        // A new rate is the following steps' rate: the second step at 0.02 is not the second step at 0.1.
        opt.set_lr(0.02).unwrap();
        assert_eq!(opt.config().lr, 0.02);
        step(&mut opt, &mut table);
        step(&mut same, &mut same_table);
        assert_ne!(bits(&table), bits(&same_table), "{accumulator:?}");
    }
}

/// The functional pair over caller-owned state is the optimizer's step, bit for bit, and checks the state's length.
#[test]
fn functional_form_equals_the_optimizer() {
    use adagrad::Executor;
    use adagrad::embedding::{self, Scratch};
    let (rows, dim) = (300, 7);
    for accumulator in [Accumulator::RowWise, Accumulator::ElementWise] {
        let options = TableOptions::default().accumulator(accumulator);
        let c = config(Isa::best(), 2).weight_decay(0.02);
        let exec = Executor::new(&c).unwrap();
        let mut rng = StdRng::seed_from_u64(8);
        let mut a = values(&mut rng, rows * dim);
        let mut b = a.clone();
        let mut opt = EmbeddingAdagrad::<f32>::new(c.clone(), rows, dim, options).unwrap();
        let per_row = if accumulator == Accumulator::RowWise {
            1
        } else {
            dim
        };
        let mut state = vec![0.0f32; rows * per_row];
        let mut scratch = Scratch::default();
        for t in 1..=4 {
            let ids = ids(&mut rng, 400, rows);
            let grads = values(&mut rng, ids.len() * dim);
            opt.step(
                &mut a,
                Lookups::Rows {
                    ids: &ids,
                    grads: &grads,
                },
            )
            .unwrap();
            let p = embedding::prepare(
                &exec,
                rows,
                dim,
                Lookups::Rows {
                    ids: &ids,
                    grads: &grads,
                },
                &mut scratch,
            )
            .unwrap();
            assert!(p.touched_rows() > 0 && p.non_finite(&exec) == 0);
            embedding::apply(&exec, &c, &options, t, &mut b, &mut state, &p).unwrap();
            assert_eq!(bits(&a), bits(&b), "{accumulator:?} step {t}");
            assert_eq!(bits(opt.state()), bits(&state));
        }
        let p = embedding::prepare(
            &exec,
            rows,
            dim,
            Lookups::Rows {
                ids: &[1u32],
                grads: &[0.5; 7],
            },
            &mut scratch,
        )
        .unwrap();
        let before = bits(&b);
        assert_eq!(
            embedding::apply(&exec, &c, &options, 5, &mut b, &mut state[1..], &p),
            Err(Error::Lookup(LookupError::StateLength {
                expected: rows * per_row,
                got: rows * per_row - 1
            }))
        );
        assert_eq!(
            embedding::apply(
                &exec,
                &c.clone().lr(-1.0),
                &options,
                5,
                &mut b,
                &mut state,
                &p
            )
            .map_err(|e| matches!(e, Error::InvalidConfig { .. })),
            Err(true)
        );
        assert_eq!(bits(&b), before);
    }
    let mut scratch = Scratch::default();
    assert!(matches!(
        embedding::prepare(
            &Executor::new(&Config::default()).unwrap(),
            5,
            0,
            Lookups::Rows {
                ids: &[1u32],
                grads: &[0.0f32; 0]
            },
            &mut scratch
        ),
        Err(Error::TableShape { .. })
    ));
}

/// A step large enough for the parallel coalescing sort (ids cut into one range per thread) gives the bits of
/// the one-thread step and of the independent model, on 1–4, 64 and 100 threads and with tables of fewer rows
/// than threads.
#[test]
fn parallel_coalescing_gives_the_same_order() {
    // 100,000 and 3000 rows: two radix passes; 3 rows: one (the sorted keys end in the second buffer).
    for (rows, n) in [(100_000usize, 40_000usize), (3000, 40_000), (3, 40_000)] {
        let dim = 4;
        let mut rng = StdRng::seed_from_u64(12);
        let ids = ids(&mut rng, n, rows);
        let grads = values(&mut rng, n * dim);
        let table0 = values(&mut rng, rows * dim);
        let run = |threads: usize| {
            let mut t = table0.clone();
            let mut opt = default_table(threads, rows, dim);
            opt.step(
                &mut t,
                Lookups::Rows {
                    ids: &ids,
                    grads: &grads,
                },
            )
            .unwrap();
            (bits(&t), bits(opt.state()))
        };
        let one = run(1);
        // 64 threads: as many chunks as the sort cuts at most; 100: more threads than chunks.
        for threads in [2, 3, 4, 64, 100] {
            assert_eq!(run(threads), one, "rows {rows}, {threads} threads");
        }
        // The model: sums in lookup order per row, then the row spec.
        let mut sums: BTreeMap<usize, Vec<f32>> = BTreeMap::new();
        for (pos, &id) in ids.iter().enumerate() {
            let g = &grads[pos * dim..(pos + 1) * dim];
            match sums.get_mut(&(id as usize)) {
                Some(s) => s.iter_mut().zip(g).for_each(|(s, g)| *s += g),
                None => {
                    sums.insert(id as usize, g.to_vec());
                }
            }
        }
        let c = config(Isa::best(), 1);
        let hy = RowHyper::new(
            c.lr,
            c.lr_decay,
            1,
            0.0,
            DecayMode::L2,
            c.eps,
            false,
            EpsPlacement::Outside,
        );
        let (mut model, mut h) = (table0.clone(), vec![0.0f32; rows]);
        for (r, g) in &sums {
            rowwise::update_f32(&mut model[r * dim..(r + 1) * dim], g, &mut h[*r], &hy).unwrap();
        }
        assert_eq!(one, (bits(&model), bits(&h)), "rows {rows}");
    }
}

/// On the threads (keys built and runs found one chunk of lookups per thread), the first offending position is
/// still the one reported — an out-of-range or negative id, or a repeated id in coalesced input, in several
/// chunks at once — and nothing changes; with no offence, coalesced input over unique rows gives the bits of the
/// one-thread step.
#[test]
fn parallel_checks_report_the_first_offending_position() {
    let (rows, dim, n) = (50_000usize, 2usize, 40_000usize);
    let grads = vec![0.25f32; n * dim];
    // Unique rows, shuffled: valid coalesced input.
    let mut rng = StdRng::seed_from_u64(21);
    let mut unique: Vec<i64> = (0..n as i64).map(|i| (i * 7) % rows as i64).collect();
    for i in (1..n).rev() {
        unique.swap(i, rng.gen_range(0..=i));
    }
    let one_thread = {
        let mut t = vec![1.0f32; rows * dim];
        let mut opt = default_table(1, rows, dim);
        opt.step(
            &mut t,
            Lookups::Coalesced {
                ids: &unique,
                grads: &grads,
            },
        )
        .unwrap();
        (bits(&t), bits(opt.state()))
    };
    for threads in [2, 3, 4, 64, 100] {
        let mut table = vec![1.0f32; rows * dim];
        let mut opt = default_table(threads, rows, dim);
        // Offences in the last, a middle and an early chunk (for every thread count here): the earliest wins.
        let mut bad = unique.clone();
        bad[39_990] = rows as i64;
        bad[25_000] = -3;
        bad[17_321] = rows as i64 + 5;
        let mut repeated = unique.clone();
        repeated[39_000] = repeated[1];
        repeated[30_500] = repeated[30_000];
        repeated[12_345] = repeated[12_000];
        let first_bad = LookupError::Id {
            position: 17_321,
            id: rows as i128 + 5,
            rows,
        };
        let bad_forms = [
            Lookups::Rows {
                ids: &bad,
                grads: &grads,
            },
            Lookups::Coalesced {
                ids: &bad,
                grads: &grads,
            },
        ];
        for lookups in bad_forms {
            let got = opt.step(&mut table, lookups);
            assert_eq!(
                got,
                Err(Error::Lookup(first_bad.clone())),
                "{threads} threads"
            );
        }
        let got = opt.step(
            &mut table,
            Lookups::Coalesced {
                ids: &repeated,
                grads: &grads,
            },
        );
        let first_repeat = LookupError::Duplicate {
            position: 12_345,
            id: unique[12_000] as u64,
        };
        assert_eq!(got, Err(Error::Lookup(first_repeat)), "{threads} threads");
        assert_eq!(opt.step_count(), 0, "{threads} threads");
        assert!(table.iter().all(|&x| x == 1.0) && opt.state().iter().all(|&s| s == 0.0));
        opt.step(
            &mut table,
            Lookups::Coalesced {
                ids: &unique,
                grads: &grads,
            },
        )
        .unwrap();
        assert_eq!(
            (bits(&table), bits(opt.state())),
            one_thread,
            "{threads} threads"
        );
    }
}

/// What an optimizer and a prepared step report: its shape, options, threads, the touched rows; the table-length
/// error of the functional form; the largest table the row ids allow; finite weights under a non-finite policy.
#[test]
fn reported_values_and_limits() {
    use adagrad::Executor;
    use adagrad::embedding::{self, Scratch};
    let options = TableOptions::default()
        .accumulator(Accumulator::ElementWise)
        .decay(DecayMode::Decoupled)
        .rounding(Rounding::Stochastic { seed: 4 });
    let c = config(Isa::Scalar, 3).non_finite(NonFinite::Error);
    let mut opt = EmbeddingAdagrad::<f32>::new(c.clone(), 7, 5, options).unwrap();
    assert_eq!(
        (opt.rows(), opt.dim(), opt.options(), opt.threads()),
        (7, 5, options, 3)
    );
    // Finite weights pass the non-finite check.
    let mut table = vec![0.5f32; 7 * 5];
    assert_eq!(
        opt.step(&mut table, one_bag(&[1.0, 2.0, 3.0], &[0.25; 5])),
        Ok(StepOutcome::Applied)
    );
    let exec = Executor::new(&c).unwrap();
    let mut scratch = Scratch::default();
    let ids = [4u32, 1, 4, 6, 1, 1];
    let grads = [0.5f32; 6 * 5];
    let lookups = Lookups::Rows {
        ids: &ids,
        grads: &grads,
    };
    let p = embedding::prepare(&exec, 7, 5, lookups, &mut scratch).unwrap();
    assert_eq!((p.touched_rows(), p.non_finite(&exec)), (3, 0));
    let mut state = vec![0.0f32; 7 * 5];
    let mut short = vec![0.5f32; 7 * 5 - 1];
    assert_eq!(
        embedding::apply(&exec, &c, &options, 1, &mut short, &mut state, &p),
        Err(Error::Lookup(LookupError::TableLength {
            expected: 35,
            got: 34
        }))
    );
    // Step 0 is refused, as by the dense functional step, and changes nothing.
    let mut full = vec![0.5f32; 7 * 5];
    assert_eq!(
        embedding::apply(&exec, &c, &options, 0, &mut full, &mut state, &p),
        Err(Error::InvalidConfig {
            field: "step",
            value: 0.0,
            reason: "steps are counted from 1"
        })
    );
    assert!(full.iter().all(|&x| x == 0.5) && state.iter().all(|&s| s == 0.0));
    // Row ids are 32-bit: a table of 2^32 - 1 rows is allowed (prepare allocates nothing per row), 2^32 is not.
    let one = Lookups::Rows {
        ids: &[3u64],
        grads: &[1.0f32],
    };
    let largest = u32::MAX as usize;
    let p = embedding::prepare(&exec, largest, 1, one, &mut scratch).unwrap();
    assert_eq!(p.touched_rows(), 1);
    assert!(matches!(
        embedding::prepare(&exec, largest + 1, 1, one, &mut scratch),
        Err(Error::TableShape { rows, dim: 1, .. }) if rows == largest + 1
    ));
}

/// The non-finite policy judges the gradient the update uses: a row looked up twice whose sum overflows to ∞, or
/// a finite weight times a finite gradient that overflows, is refused (`Error`) or skipped (`SkipStep`) with
/// nothing changed, on one thread and on several, for both accumulators; a NaN in a gradient row no lookup uses
/// changes nothing in the step and is not counted; `Propagate` applies it.
#[test]
fn non_finite_sums_and_products_are_judged_after_summing() {
    let (rows, dim) = (6, 4);
    let big = vec![3e38f32; 2 * dim];
    let twice = Lookups::Rows {
        ids: &[2u32, 2],
        grads: &big,
    };
    let product = Lookups::Bags {
        ids: &[1u32, 4],
        offsets: &[0, 2],
        weights: Some(&[1e30, 0.5]),
        grads: &[1e30f32; 4],
    };
    // Bag 1 has no lookups: its NaN row is never used.
    let unused = Lookups::Bags {
        ids: &[1u32, 4],
        offsets: &[0, 2, 2],
        weights: None,
        grads: &[0.5, 0.5, 0.5, 0.5, f32::NAN, 0.0, 0.0, 0.0],
    };
    for accumulator in [Accumulator::RowWise, Accumulator::ElementWise] {
        for par in [Parallelism::Sequential, Parallelism::Threads(3)] {
            let tuning = Tuning {
                parallel_threshold: 0,
                min_piece: 1,
                ..Tuning::for_cpu(&adagrad::Cpu::this())
            };
            let make = |policy| {
                EmbeddingAdagrad::<f32>::new(
                    Config::default()
                        .non_finite(policy)
                        .parallelism(par.clone())
                        .tuning(tuning),
                    rows,
                    dim,
                    TableOptions::default().accumulator(accumulator),
                )
                .unwrap()
            };
            let what = format!("{accumulator:?} {par:?}");
            for (lookups, bad) in [(twice, dim), (product, dim)] {
                let mut table = vec![0.25f32; rows * dim];
                let mut opt = make(NonFinite::Error);
                assert_eq!(
                    opt.step(&mut table, lookups),
                    Err(Error::NonFiniteGradient { count: bad }),
                    "{what}"
                );
                let mut skip = make(NonFinite::SkipStep);
                assert_eq!(
                    skip.step(&mut table, lookups),
                    Ok(StepOutcome::Skipped { non_finite: bad }),
                    "{what}"
                );
                assert!(table.iter().all(|&x| x == 0.25), "{what}");
                assert!(opt.state().iter().chain(skip.state()).all(|&s| s == 0.0));
                assert_eq!((opt.step_count(), skip.step_count()), (0, 0));
                let mut apply = make(NonFinite::Propagate);
                assert_eq!(apply.step(&mut table, lookups), Ok(StepOutcome::Applied));
                assert!(table.iter().any(|x| !x.is_finite()), "{what}: applied");
            }
            let mut table = vec![0.25f32; rows * dim];
            let mut opt = make(NonFinite::Error);
            assert_eq!(
                opt.step(&mut table, unused),
                Ok(StepOutcome::Applied),
                "{what}"
            );
            assert!(table.iter().all(|x| x.is_finite()), "{what}");
        }
    }
    // Rows wider than the check's 64-column blocks: an overflow in columns 70-74 of a row looked up twice, and
    // one in column 99 of a weighted bag, are counted where they are (the check sums block by block).
    let (rows, dim) = (5, 100);
    let mut wide = vec![0.25f32; 3 * dim];
    wide[70..75].fill(3e38);
    wide[dim + 70..dim + 75].fill(3e38);
    let mut bag = vec![0.5f32; dim];
    bag[99] = 1e30;
    for (lookups, bad) in [
        (
            Lookups::Rows {
                ids: &[3u32, 3, 1],
                grads: &wide,
            },
            5,
        ),
        (
            Lookups::Bags {
                ids: &[0u32, 4],
                offsets: &[0, 2],
                weights: Some(&[1e30, 1.0]),
                grads: &bag,
            },
            1,
        ),
    ] {
        let mut opt = EmbeddingAdagrad::<f32>::new(
            Config::default().non_finite(NonFinite::Error),
            rows,
            dim,
            TableOptions::default().accumulator(Accumulator::ElementWise),
        )
        .unwrap();
        let mut table = vec![0.25f32; rows * dim];
        assert_eq!(
            opt.step(&mut table, lookups),
            Err(Error::NonFiniteGradient { count: bad })
        );
        assert!(table.iter().all(|&x| x == 0.25));
    }
}
