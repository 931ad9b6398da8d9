//! The OpenMP team's Python-free parts (`python/src/openmp.rs`), tested in Rust: when steps leave a team whose
//! workers were asleep out, and that no team is found where no OpenMP runtime is loaded.

#[path = "../src/openmp.rs"]
#[allow(dead_code)]
mod openmp;

use openmp::{Backoff, OpenMp};
use std::time::Duration;

const US: Duration = Duration::from_micros(1);

/// A step that waited at the closing barrier longer than its own work and than `Backoff::WAIT` makes the next
/// `SKIP` steps leave the team out; then the team is tried again. Short waits, and waits shorter than the work,
/// never do.
#[test]
fn a_long_wait_for_sleeping_workers_leaves_the_team_out_for_a_while() {
    let b = Backoff::default();
    assert!(!b.skip());
    // Workers awake: the region ends with the caller's part.
    b.after(1000 * US, 1050 * US);
    assert!(!b.skip());
    // A wait of 90 µs after 50 µs of work: below WAIT.
    b.after(50 * US, 140 * US);
    assert!(!b.skip());
    // A wait of 400 µs after 500 µs of work: shorter than the work.
    b.after(500 * US, 900 * US);
    assert!(!b.skip());
    // At the bounds: a wait equal to the work, or equal to WAIT, does not count.
    b.after(300 * US, 600 * US);
    assert!(!b.skip());
    b.after(50 * US, 150 * US);
    assert!(!b.skip());
    // A 5 ms wait after 300 µs of work: the workers were asleep.
    b.after(300 * US, 5300 * US);
    for _ in 0..Backoff::SKIP {
        assert!(b.skip());
    }
    assert!(!b.skip());
    assert_eq!((Backoff::SKIP, Backoff::WAIT), (16, 100 * US));
}

/// A process without an OpenMP runtime (this test) has no team to lend.
#[test]
fn no_team_without_an_openmp_runtime() {
    assert!(OpenMp::find(Some(2)).is_none());
    assert!(OpenMp::find(None).is_none());
}

use adagrad::HostTeam;
use std::ffi::{c_uint, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Calls `f(data)` on `n` threads, the calling thread among them, as `GOMP_parallel` does.
unsafe extern "C" fn team(f: extern "C" fn(*mut c_void), data: *mut c_void, n: c_uint, _: c_uint) {
    let data = data as usize;
    std::thread::scope(|s| {
        for _ in 1..n {
            s.spawn(move || f(data as *mut c_void));
        }
        f(data as *mut c_void);
    });
}

/// The same, with the other threads waking 20 ms late (asleep when the region started).
unsafe extern "C" fn sleepy(
    f: extern "C" fn(*mut c_void),
    data: *mut c_void,
    n: c_uint,
    _: c_uint,
) {
    let data = data as usize;
    std::thread::scope(|s| {
        for _ in 1..n {
            s.spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                f(data as *mut c_void)
            });
        }
        f(data as *mut c_void);
    });
}

/// The job runs on every thread of the team, the caller's among them; the team is named "openmp".
#[test]
fn the_job_runs_on_every_thread_of_the_team() {
    let omp = OpenMp::with(team, 3);
    assert_eq!((omp.threads(), omp.name()), (3, "openmp"));
    let calls = AtomicUsize::new(0);
    let threads = std::sync::Mutex::new(Vec::new());
    omp.run(3, &|| {
        calls.fetch_add(1, Ordering::SeqCst);
        threads.lock().unwrap().push(std::thread::current().id());
    });
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let threads = threads.into_inner().unwrap();
    assert!(threads.contains(&std::thread::current().id()));
}

/// A team whose other threads were asleep keeps the caller waiting: the next `SKIP` runs leave the team out (the
/// job does not run: the crate then runs it on the calling thread), and the run after them uses the team again.
#[test]
fn a_team_that_kept_the_caller_waiting_is_left_out_for_a_while() {
    let omp = OpenMp::with(sleepy, 2);
    let calls = AtomicUsize::new(0);
    let job = || {
        calls.fetch_add(1, Ordering::SeqCst);
    };
    omp.run(2, &job);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    for _ in 0..Backoff::SKIP {
        omp.run(2, &job);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    omp.run(2, &job);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

/// A panic in the job on a team thread reaches the caller (after the region has ended).
#[test]
fn a_panic_on_a_team_thread_reaches_the_caller() {
    let omp = OpenMp::with(team, 2);
    let caller = std::thread::current().id();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        omp.run(2, &|| {
            if std::thread::current().id() != caller {
                panic!("planted");
            }
        })
    }));
    assert!(r.is_err());
}
