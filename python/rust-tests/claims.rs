//! The binding's memory claims (`python/src/mem.rs`, which needs no Python), tested in Rust: which spans clash,
//! and that a claim waits exactly while a clashing claim is held. (The binding's other tests are pytest.)

#[path = "../src/mem.rs"]
#[allow(dead_code)]
mod mem;

use mem::{Claim, Dtype, Mem, Span};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

fn span(start: usize, end: usize, written: bool) -> Span {
    Span {
        start,
        end,
        written,
    }
}

/// Two spans clash when they share a byte and one of them is written: overlapping, nested and equal ranges do;
/// adjacent ranges, disjoint ones, two reads and empty ranges do not.
#[test]
fn spans_clash_when_they_share_a_written_byte() {
    let w = |a, b| span(a, b, true);
    let r = |a, b| span(a, b, false);
    for (a, b, clash) in [
        (w(0, 10), w(0, 10), true),
        (w(0, 10), w(9, 20), true),
        (w(9, 20), w(0, 10), true),
        (w(0, 10), r(5, 6), true),
        (r(5, 6), w(0, 10), true),
        (r(0, 10), w(3, 4), true),
        (w(0, 10), w(10, 20), false),
        (w(10, 20), w(0, 10), false),
        (w(0, 10), r(11, 20), false),
        (r(0, 10), r(0, 10), false),
        (w(0, 10), w(5, 5), false),
        (w(5, 5), w(0, 10), false),
    ] {
        assert_eq!(a.clashes(&b), clash, "{a:?} {b:?}");
    }
}

/// A span covers its memory's bytes: `len` elements of the dtype's size from `addr`.
#[test]
fn a_span_covers_its_bytes() {
    let m = Mem::new(4096, 10, Dtype::F32).unwrap();
    assert_eq!(Span::of(m, true), span(4096, 4136, true));
    let m = Mem::new(8192, 3, Dtype::F64).unwrap();
    assert_eq!(Span::of(m, false), span(8192, 8216, false));
}

/// A claim waits while a clashing claim is held and proceeds when it is released; a claim that clashes with
/// nothing held does not wait.
#[test]
fn a_claim_waits_for_a_clashing_claim_and_only_for_one() {
    let first = Claim::new(vec![span(1 << 40, (1 << 40) + 100, true)]);
    // Disjoint, and a read beside it: no wait.
    drop(Claim::new(vec![span(
        (1 << 40) + 100,
        (1 << 40) + 200,
        true,
    )]));
    let released = AtomicBool::new(false);
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let _c = Claim::new(vec![span((1 << 40) + 50, (1 << 40) + 60, false)]);
            released.load(Ordering::SeqCst)
        });
        std::thread::sleep(Duration::from_millis(100));
        assert!(!waiter.is_finished(), "a clashing claim did not wait");
        released.store(true, Ordering::SeqCst);
        drop(first);
        assert!(
            waiter.join().unwrap(),
            "the waiter ran before the claim it clashed with was released"
        );
    });
    // Released claims hold nothing: the same span again does not wait.
    drop(Claim::new(vec![span(1 << 40, (1 << 40) + 100, true)]));
}
