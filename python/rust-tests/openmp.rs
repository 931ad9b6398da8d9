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
