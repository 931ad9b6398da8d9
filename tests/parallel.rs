//! Threads and multi-tensor steps: bit-identical to the reference for any thread count and any grouping of the
//! same elements into tensors.

use adagrad::{Adagrad, Config, Cpu, Isa, PARALLEL_THRESHOLD, Parallelism, Tuning};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;

fn pool(threads: usize) -> Parallelism {
    Parallelism::Pool(Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap(),
    ))
}

/// Tensor-size mixes, several above the parallel threshold in total.
fn mixes() -> Vec<Vec<usize>> {
    let mut rng = StdRng::seed_from_u64(42);
    vec![
        vec![0],
        vec![],
        vec![PARALLEL_THRESHOLD * 3 + 17],
        vec![1 << 20],
        vec![1024; 200],
        vec![0, 0, 70_000, 0, 5, 0, 130_001, 0],
        (0..300).map(|i| (i * 37) % 1500).collect(),
        (0..50).map(|_| rng.gen_range(0..20_000)).collect(),
        vec![1, 2, 3, 200_000, 63, 64, 65, 127, 129, 0, 99_999],
        vec![300_000, 1, 300_000],
    ]
}

fn inputs(total: usize, steps: usize, seed: u64) -> (Vec<f32>, Vec<Vec<f32>>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let p = (0..total).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let g = (0..steps)
        .map(|_| {
            (0..total)
                .map(|_| rng.gen_range(-1.0f32..1.0) * 10f32.powi(rng.gen_range(-3..2)))
                .collect()
        })
        .collect();
    (p, g)
}

/// Runs `steps` steps of `sizes` (a split of one flat vector) and returns the flat params and state.
fn run(config: Config, sizes: &[usize], p0: &[f32], grads: &[Vec<f32>]) -> (Vec<f32>, Vec<f32>) {
    let mut opt = Adagrad::<f32>::new(
        config
            .lr(0.05)
            .weight_decay(0.01)
            .initial_accumulator_value(0.1),
        sizes,
    )
    .unwrap();
    let mut p = p0.to_vec();
    for g in grads {
        let mut ps: Vec<&mut [f32]> = Vec::new();
        let mut gs: Vec<&[f32]> = Vec::new();
        let (mut rest_p, mut rest_g) = (&mut p[..], &g[..]);
        for &n in sizes {
            let (a, b) = std::mem::take(&mut rest_p).split_at_mut(n);
            ps.push(a);
            rest_p = b;
            let (c, d) = rest_g.split_at(n);
            gs.push(c);
            rest_g = d;
        }
        opt.step(&mut ps, &gs).unwrap();
    }
    let s = opt.state().concat();
    (p, s)
}

/// The scalar reference on the calling thread: what every thread count and team must give.
fn reference(sizes: &[usize], p0: &[f32], grads: &[Vec<f32>]) -> (Vec<f32>, Vec<f32>) {
    let config = Config::default()
        .isa(Isa::Scalar)
        .parallelism(Parallelism::Sequential);
    run(config, sizes, p0, grads)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn any_thread_count_equals_the_reference() {
    for (m, sizes) in mixes().iter().enumerate() {
        let total: usize = sizes.iter().sum();
        let (p0, grads) = inputs(total, 3, m as u64);
        let want = reference(sizes, &p0, &grads);
        for threads in [1, 2, 3, 8] {
            // The default threshold, and 0 so that even small steps are split.
            for threshold in [PARALLEL_THRESHOLD, 0] {
                let config = Config::default()
                    .parallelism(pool(threads))
                    .parallel_threshold(threshold);
                let got = run(config, sizes, &p0, &grads);
                let what = format!(
                    "mix {m} ({} tensors), {threads} threads, threshold {threshold}",
                    sizes.len()
                );
                assert_eq!(bits(&got.0), bits(&want.0), "{what}: params");
                assert_eq!(bits(&got.1), bits(&want.1), "{what}: state");
            }
        }
        let got = run(Config::default(), sizes, &p0, &grads);
        assert_eq!(bits(&got.0), bits(&want.0), "mix {m}, global pool");
    }
}

#[test]
fn any_grouping_into_tensors_gives_the_same_bits() {
    let total = 400_000;
    let (p0, grads) = inputs(total, 2, 9);
    let want = run(
        Config::default().parallelism(Parallelism::Sequential),
        &[total],
        &p0,
        &grads,
    );
    let mut rng = StdRng::seed_from_u64(3);
    for _ in 0..8 {
        let mut sizes = Vec::new();
        let mut left = total;
        while left > 0 {
            let cap = left.min(rng.gen_range(1..150_000));
            let n = if rng.gen_bool(0.2) {
                0
            } else {
                rng.gen_range(1..=cap)
            };
            sizes.push(n);
            left -= n;
        }
        for threads in [1, 2, 3, 8] {
            let got = run(
                Config::default().parallelism(pool(threads)),
                &sizes,
                &p0,
                &grads,
            );
            assert_eq!(
                bits(&got.0),
                bits(&want.0),
                "{} tensors, {threads} threads",
                sizes.len()
            );
            assert_eq!(bits(&got.1), bits(&want.1));
        }
    }
}

/// Every tuning gives the same bits: prefetch distances, piece sizes (from 1 element, so pieces split inside
/// tensors at every aligned point), thresholds, on one to eight threads, own pools and a caller's pool.
#[test]
fn any_tuning_gives_the_same_bits() {
    let sizes = [0, 70_000, 5, 130_001, 64, 0, 200_000];
    let total: usize = sizes.iter().sum();
    let (p0, grads) = inputs(total, 3, 77);
    let want = run(
        Config::default()
            .isa(Isa::Scalar)
            .parallelism(Parallelism::Sequential),
        &sizes,
        &p0,
        &grads,
    );
    let base = Tuning::for_cpu(&Cpu::this());
    for (i, (prefetch, piece, threshold)) in [
        (0, 16_384, PARALLEL_THRESHOLD),
        (8192, 16_384, 0),
        (64, 1, 0),
        (4096, 1000, 100_000),
        (1 << 20, 64, 0),
        (0, usize::MAX, 0),
    ]
    .into_iter()
    .enumerate()
    {
        let tuning = Tuning {
            prefetch,
            min_piece: piece,
            parallel_threshold: threshold,
            ..base
        };
        for par in [
            Parallelism::Sequential,
            Parallelism::Threads(2),
            Parallelism::Threads(3),
            Parallelism::Threads(8),
            pool(2),
            Parallelism::Global,
        ] {
            let what = format!("tuning {i} ({tuning}), {par:?}");
            let got = run(
                Config::default().parallelism(par).tuning(tuning),
                &sizes,
                &p0,
                &grads,
            );
            assert_eq!(bits(&got.0), bits(&want.0), "{what}: params");
            assert_eq!(bits(&got.1), bits(&want.1), "{what}: state");
        }
    }
}

/// A host team for the tests: runs the job on `spawn` scoped threads besides the caller (or not at all), and
/// counts the calls.
struct TestTeam {
    spawn: Option<usize>,
    threads: usize,
    calls: std::sync::atomic::AtomicUsize,
}

impl adagrad::HostTeam for TestTeam {
    fn run(&self, threads: usize, job: &(dyn Fn() + Sync)) {
        assert_eq!(threads, self.threads);
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some(spawn) = self.spawn else { return };
        std::thread::scope(|s| {
            for _ in 0..spawn {
                s.spawn(job);
            }
            job();
        });
    }
    fn threads(&self) -> usize {
        self.threads
    }
    fn name(&self) -> &str {
        "test"
    }
}

/// A step on a host team (`Parallelism::Host`) gives the reference's bits whether the team runs the job on many
/// threads, on the caller alone, or not at all (the crate then finishes the step on the calling thread), and the
/// team is used exactly when the step is parallel.
#[test]
fn a_host_team_gives_the_reference_bits_however_it_runs_the_job() {
    for (m, sizes) in mixes().iter().enumerate() {
        let total: usize = sizes.iter().sum();
        let (p0, grads) = inputs(total, 3, m as u64 + 100);
        let want = reference(sizes, &p0, &grads);
        for spawn in [Some(3), Some(1), Some(0), None] {
            let team = Arc::new(TestTeam {
                spawn,
                threads: 4,
                calls: 0.into(),
            });
            let config = Config::default()
                .parallelism(Parallelism::Host(team.clone()))
                .tuning(Tuning {
                    parallel_threshold: 0,
                    min_piece: 1024,
                    ..Tuning::for_cpu(&Cpu::this())
                });
            let got = run(config, sizes, &p0, &grads);
            let what = format!("mix {m}, host team spawning {spawn:?}");
            assert_eq!(bits(&got.0), bits(&want.0), "{what}: params");
            assert_eq!(bits(&got.1), bits(&want.1), "{what}: state");
            // One parallel run per step when the step is more than one chunk (1,024 elements or more).
            let calls = team.calls.load(std::sync::atomic::Ordering::Relaxed);
            assert_eq!(calls, if total > 1024 { 3 } else { 0 }, "{what}");
        }
    }
    // The executor says which team it runs on.
    let host = Arc::new(TestTeam {
        spawn: None,
        threads: 4,
        calls: 0.into(),
    });
    let exec =
        adagrad::Executor::new(&Config::default().parallelism(Parallelism::Host(host))).unwrap();
    assert!(
        format!("{exec:?}").contains("Host(test, 4 threads)"),
        "{exec:?}"
    );
    let exec =
        adagrad::Executor::new(&Config::default().parallelism(Parallelism::Threads(3))).unwrap();
    assert!(format!("{exec:?}").contains("Pool(2 threads)"), "{exec:?}");
    let team = TestTeam {
        spawn: None,
        threads: adagrad::MAX_THREADS + 1,
        calls: 0.into(),
    };
    let refused = Adagrad::<f32>::new(
        Config::default().parallelism(Parallelism::Host(Arc::new(team))),
        &[3],
    );
    assert!(
        matches!(
            refused,
            Err(adagrad::Error::TooManyThreads {
                threads: 1025,
                from: "Parallelism::Host"
            })
        ),
        "{refused:?}"
    );
}
