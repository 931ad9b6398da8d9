//! After the first step, a step allocates nothing on the heap (sequential, global pool, own pool).

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

#[test]
fn steps_after_the_first_do_not_allocate() {
    let sizes: Vec<usize> = (0..64).map(|i| 1000 + i * 5000).chain([1 << 20]).collect();
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap(),
    );
    for par in [
        Parallelism::Sequential,
        Parallelism::Global,
        Parallelism::Pool(pool),
    ] {
        let mut opt =
            Adagrad::<f32>::new(Config::default().parallelism(par.clone()), &sizes).unwrap();
        let mut params: Vec<Vec<f32>> = sizes.iter().map(|&n| vec![0.5; n]).collect();
        let grads: Vec<Vec<f32>> = sizes.iter().map(|&n| vec![0.25; n]).collect();
        let mut ps: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
        let gs: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
        for _ in 0..2 {
            opt.step(&mut ps, &gs).unwrap();
        }
        let before = ALLOCS.load(Ordering::SeqCst);
        for _ in 0..5 {
            opt.step(&mut ps, &gs).unwrap();
        }
        let after = ALLOCS.load(Ordering::SeqCst);
        assert_eq!(
            after - before,
            0,
            "{par:?}: {} allocations in 5 steps",
            after - before
        );
    }
}
