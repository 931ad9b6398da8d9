//! What a step allocates after the first, over hundreds of steps: nothing when it runs on the calling thread (a
//! sequential optimizer, or a step below the parallel threshold); one task record for rayon when it runs on
//! threads (`Scope::spawn` boxes the helper task; rayon offers no way to reuse it), and rayon's job queue one block
//! per 63 injected tasks.

use adagrad::{Adagrad, Config, Parallelism};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const STEPS: usize = 300;

/// Allocations in `STEPS` steps after two warm-up steps.
fn allocations(par: Parallelism, sizes: &[usize]) -> usize {
    let mut opt = Adagrad::<f32>::new(Config::default().parallelism(par), sizes).unwrap();
    let mut params: Vec<Vec<f32>> = sizes.iter().map(|&n| vec![0.5; n]).collect();
    let grads: Vec<Vec<f32>> = sizes.iter().map(|&n| vec![0.25; n]).collect();
    let mut ps: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
    let gs: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
    for _ in 0..2 {
        opt.step(&mut ps, &gs).unwrap();
    }
    let before = ALLOCS.load(Ordering::SeqCst);
    for _ in 0..STEPS {
        opt.step(&mut ps, &gs).unwrap();
    }
    ALLOCS.load(Ordering::SeqCst) - before
}

#[test]
fn steps_allocate_nothing_on_the_calling_thread_and_one_task_on_threads() {
    let big: Vec<usize> = (0..64).map(|i| 1000 + i * 5000).chain([1 << 20]).collect();
    let small = [1000, 2000, 3000]; // below every table entry's parallel threshold
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap(),
    );
    assert_eq!(allocations(Parallelism::Sequential, &big), 0, "Sequential");
    for par in [
        Parallelism::Global,
        Parallelism::Threads(3),
        Parallelism::Pool(pool),
    ] {
        // The big steps first: they start the helper threads, whose start-up allocations are not a step's.
        let n = allocations(par.clone(), &big);
        println!("{par:?}: {n} allocations in {STEPS} parallel steps");
        // One boxed task per step, and one block of rayon's injector queue (63 slots) per 63 steps.
        assert!(
            (STEPS..=STEPS + STEPS.div_ceil(63)).contains(&n),
            "{par:?}: {n} allocations in {STEPS} parallel steps"
        );
        assert_eq!(
            allocations(par.clone(), &small),
            0,
            "{par:?} below the threshold"
        );
    }
}
