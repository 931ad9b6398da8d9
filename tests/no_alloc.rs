//! What a step allocates after the first, over hundreds of steps: nothing when it runs on the calling thread (a
//! sequential optimizer, or a step below the parallel threshold). A step on threads allocates, on the calling
//! thread, two records per parallel run: the meeting point its helpers share with it (they may start after the
//! run is over, so it is reference-counted) and rayon's record of the broadcast that wakes them (rayon offers no
//! way to reuse it), and now and then a block of rayon's per-thread broadcast queues; nothing on the helper
//! threads (their lingering runs inside the broadcast task).

use adagrad::{Adagrad, Config, Parallelism};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Allocations made by this thread (for steps that run on the calling thread alone: another test's pool
    /// threads, winding down, allocate on their own threads).
    static MINE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn count() {
    ALLOCS.fetch_add(1, Ordering::Relaxed);
    let _ = MINE.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: forwards to the system allocator, counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const STEPS: usize = 300;

/// The allocation counter is global: the tests of this file take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Allocations in `STEPS` steps after two warm-up steps: on the calling thread, and in all.
fn allocations(par: Parallelism, sizes: &[usize]) -> (usize, usize) {
    let mut opt = Adagrad::<f32>::new(Config::default().parallelism(par), sizes).unwrap();
    let mut params: Vec<Vec<f32>> = sizes.iter().map(|&n| vec![0.5; n]).collect();
    let grads: Vec<Vec<f32>> = sizes.iter().map(|&n| vec![0.25; n]).collect();
    let mut ps: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
    let gs: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
    for _ in 0..2 {
        opt.step(&mut ps, &gs).unwrap();
    }
    let before = (MINE.with(|c| c.get()), ALLOCS.load(Ordering::SeqCst));
    for _ in 0..STEPS {
        opt.step(&mut ps, &gs).unwrap();
    }
    (
        MINE.with(|c| c.get()) - before.0,
        ALLOCS.load(Ordering::SeqCst) - before.1,
    )
}

#[test]
fn steps_allocate_nothing_on_the_calling_thread_and_two_records_on_threads() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let big: Vec<usize> = (0..64).map(|i| 1000 + i * 5000).chain([1 << 20]).collect();
    let small = [1000, 2000, 3000]; // below every table entry's parallel threshold
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap(),
    );
    assert_eq!(
        allocations(Parallelism::Sequential, &big),
        (0, 0),
        "Sequential"
    );
    for par in [
        Parallelism::Global,
        Parallelism::Threads(3),
        Parallelism::Pool(pool),
    ] {
        // The big steps first: they start the helper threads, whose start-up allocations are not a step's.
        let (mine, all) = allocations(par.clone(), &big);
        let helpers = all - mine;
        println!(
            "{par:?}: {mine} allocations on the calling thread and {helpers} on helper threads in {STEPS} parallel \
             steps"
        );
        // Two records per step, and now and then a block of rayon's queues (63 slots).
        assert!(
            (2 * STEPS..=2 * STEPS + STEPS.div_ceil(63)).contains(&mine),
            "{par:?}: {mine} allocations on the calling thread in {STEPS} parallel steps"
        );
        // Nothing on the helper threads, on this crate's pools or a caller's, but a queue block now and then.
        assert!(
            helpers <= STEPS / 8,
            "{par:?}: {helpers} allocations on helper threads in {STEPS} parallel steps"
        );
        assert_eq!(
            allocations(par.clone(), &small),
            (0, 0),
            "{par:?} below the threshold"
        );
    }
}

/// A host team that runs the job on the calling thread (as an OpenMP team of one does).
struct CallerOnly;

impl adagrad::HostTeam for CallerOnly {
    fn run(&self, _threads: usize, job: &(dyn Fn() + Sync)) {
        job();
    }
    fn threads(&self) -> usize {
        2
    }
    fn name(&self) -> &str {
        "caller-only"
    }
}

/// A parallel step on a host team allocates nothing: the chunks' cursor lives on the caller's stack.
#[test]
fn steps_on_a_host_team_allocate_nothing() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let big: Vec<usize> = (0..64).map(|i| 1000 + i * 5000).chain([1 << 20]).collect();
    assert_eq!(
        allocations(Parallelism::Host(Arc::new(CallerOnly)), &big),
        (0, 0)
    );
}

/// Embedding steps of repeating sizes on the calling thread allocate nothing after the first (sorted keys, the
/// radix sort's second buffer, bag numbers and the per-thread row buffer are all kept), for every input form.
#[test]
fn embedding_steps_allocate_nothing_after_the_first() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    use adagrad::embedding::{Accumulator, EmbeddingAdagrad, Lookups, TableOptions};
    let (rows, dim, n) = (5000, 16, 4000);
    let (ids, grads) = spread_lookups(rows, dim, n);
    let offsets: Vec<i64> = (0..=n as i64).step_by(4).collect();
    let bag_grads = vec![0.02f32; (offsets.len() - 1) * dim];
    let weights = vec![0.5f32; n];
    for accumulator in [Accumulator::RowWise, Accumulator::ElementWise] {
        let mut table = vec![0.1f32; rows * dim];
        let mut opt = EmbeddingAdagrad::<f32>::new(
            Config::default().parallelism(Parallelism::Sequential),
            rows,
            dim,
            TableOptions::default().accumulator(accumulator),
        )
        .unwrap();
        let step = |opt: &mut EmbeddingAdagrad<f32>, table: &mut Vec<f32>| {
            opt.step(
                table,
                Lookups::Rows {
                    ids: &ids,
                    grads: &grads,
                },
            )
            .unwrap();
            opt.step(
                table,
                Lookups::Bags {
                    ids: &ids,
                    offsets: &offsets,
                    weights: Some(&weights),
                    grads: &bag_grads,
                },
            )
            .unwrap();
        };
        step(&mut opt, &mut table);
        let before = MINE.with(|c| c.get());
        for _ in 0..STEPS {
            step(&mut opt, &mut table);
        }
        assert_eq!(MINE.with(|c| c.get()) - before, 0, "{accumulator:?}");
    }
}

/// Embedding steps on threads (the grouping and the row updates on 3 threads): on the calling thread, the two
/// records of a parallel run (see the top of this file) per parallel phase — building the keys, the sort's count
/// and scatter in each of its two passes, finding the runs, and the row updates — plus a block of rayon's queues
/// now and then; nothing else after the first step.
#[test]
fn embedding_steps_on_threads_allocate_two_records_per_phase() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    use adagrad::Tuning;
    use adagrad::embedding::{EmbeddingAdagrad, Lookups, TableOptions};
    // 100,000 rows: ids of 17 bits, two radix passes.
    let (rows, dim, n) = (100_000, 8, 40_000);
    let (ids, grads) = spread_lookups(rows, dim, n);
    let config = Config::default()
        .parallelism(Parallelism::Threads(3))
        .tuning(Tuning {
            sort_threshold: 0,
            parallel_threshold: 0,
            ..Tuning::for_cpu(&adagrad::Cpu::this())
        });
    let mut opt = EmbeddingAdagrad::<f32>::new(config, rows, dim, TableOptions::default()).unwrap();
    let mut table = vec![0.1f32; rows * dim];
    let mut step = || {
        opt.step(
            &mut table,
            Lookups::Rows {
                ids: &ids,
                grads: &grads,
            },
        )
        .unwrap()
    };
    for _ in 0..2 {
        step();
    }
    let before = MINE.with(|c| c.get());
    for _ in 0..STEPS {
        step();
    }
    let mine = MINE.with(|c| c.get()) - before;
    println!("embedding on 3 threads: {mine} allocations on the calling thread in {STEPS} steps");
    let phases = 7;
    assert!(
        (2 * phases * STEPS..=2 * phases * STEPS + (phases * STEPS).div_ceil(63)).contains(&mine),
        "{mine} allocations on the calling thread in {STEPS} steps of {phases} parallel phases"
    );
}

/// `n` lookups spread over `rows` rows (every 7919th row, wrapping), and their gradient rows of `dim` elements.
fn spread_lookups(rows: usize, dim: usize, n: usize) -> (Vec<i64>, Vec<f32>) {
    let ids = (0..n as i64).map(|i| (i * 7919) % rows as i64).collect();
    (ids, vec![0.01f32; n * dim])
}
