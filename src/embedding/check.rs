//! Stage 1, the lookups checked: every id against the table's rows (writing each lookup's sort key in the same
//! pass), the gradients', weights' and offsets' lengths, the offsets' order, and after grouping no id given twice
//! in coalesced input. Writes nothing but the scratch's keys and bag numbers; every error is reported before any
//! row is touched.

use super::group::{self, Plan, Scratch, at_least, reserve};
use super::types::{Id, LookupError, Lookups};
use super::update::Source;
use crate::Error;
use crate::functional::Executor;
use crate::parallel::{Grain, Split, run_chunks};
use adagrad_kernels::Grad;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Validates the lookups for a table of `rows × dim` (all but duplicates in coalesced input: see
/// [`first_duplicate`], once they are grouped) and writes the scratch's keys, in position order, and each lookup's
/// bag; returns where the gradient rows come from and how the grouping is divided.
pub(super) fn lookups<'a, 'e, I: Id, G: Grad<f32>>(
    exec: &'e Executor,
    rows: usize,
    dim: usize,
    lookups: Lookups<'a, I, G>,
    s: &mut Scratch,
) -> Result<(Source<'a, G>, Plan<'e>), Error> {
    let (ids, grads_rows, src) = match lookups {
        Lookups::Rows { ids, grads } => (ids, ids.len(), Source::Rows(grads)),
        Lookups::Coalesced { ids, grads } => (ids, ids.len(), Source::Rows(grads)),
        Lookups::Bags {
            ids,
            offsets,
            weights,
            grads,
        } => {
            let Some(bags) = offsets.len().checked_sub(1) else {
                return Err(LookupError::Offset {
                    position: 0,
                    value: 0,
                    reason: "no offsets: bags need bags + 1 of them",
                }
                .into());
            };
            (
                ids,
                bags,
                Source::Bags {
                    grads,
                    weights,
                    bag_of: &[],
                },
            )
        }
    };
    let n = ids.len();
    if n > u32::MAX as usize {
        return Err(LookupError::TooManyLookups { lookups: n }.into());
    }
    // The keys, each id checked against `rows`: on the step's threads when the sort runs there (one piece of
    // consecutive lookups per thread), the first offending position reported whichever piece finds it.
    at_least(&mut s.keys, n)?;
    s.keys.truncate(n);
    let plan = group::plan(exec, n);
    let first_bad = AtomicUsize::new(n);
    let build = |piece: KeyPiece<'_, I>| {
        for (i, (key, &id)) in piece.keys.iter_mut().zip(piece.ids).enumerate() {
            match id.index() {
                Some(r) if r < rows as u64 => *key = (r << 32) | (piece.first + i) as u64,
                _ => {
                    first_bad.fetch_min(piece.first + i, Ordering::Relaxed);
                    return;
                }
            }
        }
    };
    let all = KeyPiece {
        first: 0,
        ids,
        keys: &mut s.keys,
    };
    run_chunks(
        all,
        plan.team,
        Grain::fixed(n.div_ceil(plan.chunks)),
        &build,
    );
    let bad = first_bad.into_inner();
    if let Some(&id) = ids.get(bad) {
        return Err(LookupError::Id {
            position: bad,
            id: id.value(),
            rows,
        }
        .into());
    }
    let want = grads_rows.saturating_mul(dim);
    let got = src.grads_len();
    if got != want {
        return Err(LookupError::GradLength {
            expected: want,
            got,
        }
        .into());
    }
    let src = match (src, lookups) {
        (Source::Bags { grads, weights, .. }, Lookups::Bags { offsets, .. }) => {
            if let Some(w) = weights
                && w.len() != n
            {
                return Err(LookupError::WeightsLength {
                    expected: n,
                    got: w.len(),
                }
                .into());
            }
            fill_bags(offsets, n, &mut s.bag_of)?;
            Source::Bags {
                grads,
                weights,
                bag_of: &[],
            }
        }
        (src, _) => src,
    };
    Ok((src, plan))
}

/// `rows · dim`, for a shape the steps can handle: `dim ≥ 1`, `rows < 2³²`, the product addressable.
pub(super) fn table_elements(rows: usize, dim: usize) -> Result<usize, Error> {
    let shape = |reason| Error::TableShape { rows, dim, reason };
    if dim == 0 {
        return Err(shape("dim must be at least 1"));
    }
    if rows > u32::MAX as usize {
        return Err(shape("at most 4294967295 rows"));
    }
    rows.checked_mul(dim).ok_or(shape("rows × dim overflows"))
}

/// Checks the offsets (start at 0, never decrease, end at `lookups`) and writes each lookup's bag.
fn fill_bags<I: Id>(offsets: &[I], lookups: usize, bag_of: &mut Vec<u32>) -> Result<(), Error> {
    let bad = |position, value: I, reason| {
        Err(Error::from(LookupError::Offset {
            position,
            value: value.value(),
            reason,
        }))
    };
    let last = offsets.len() - 1;
    let mut prev = 0u64;
    for (i, &o) in offsets.iter().enumerate() {
        let Some(v) = o.index() else {
            return bad(i, o, "negative");
        };
        if i == 0 && v != 0 {
            return bad(i, o, "the first offset must be 0");
        }
        if v < prev {
            return bad(i, o, "offsets must not decrease");
        }
        if v > lookups as u64 {
            return bad(i, o, "beyond the number of lookups");
        }
        if i == last && v != lookups as u64 {
            return bad(i, o, "the last offset must equal the number of lookups");
        }
        prev = v;
    }
    bag_of.clear();
    reserve(bag_of, lookups)?;
    for (b, pair) in offsets.windows(2).enumerate() {
        let (lo, hi) = (pair[0].index().unwrap_or(0), pair[1].index().unwrap_or(0));
        bag_of.extend((lo..hi).map(|_| b as u32));
    }
    Ok(())
}

/// In coalesced input, the first position whose id came earlier, as an error.
pub(super) fn first_duplicate(keys: &[u64], starts: &[u32]) -> Result<(), Error> {
    let mut first: Option<(usize, u64)> = None;
    for run in starts.windows(2) {
        let (lo, hi) = (run[0] as usize, run[1] as usize);
        if hi - lo > 1 {
            // The run is in ascending position: its second key is the row's first repeat.
            let k = keys[lo + 1];
            let pos = (k & 0xFFFF_FFFF) as usize;
            if first.is_none_or(|(p, _)| pos < p) {
                first = Some((pos, k >> 32));
            }
        }
    }
    match first {
        Some((position, id)) => Err(LookupError::Duplicate { position, id }.into()),
        None => Ok(()),
    }
}

/// Consecutive lookups, from position `first`, whose keys one piece of the key building writes.
struct KeyPiece<'a, I> {
    first: usize,
    ids: &'a [I],
    keys: &'a mut [u64],
}

impl<I: Id> Split for KeyPiece<'_, I> {
    fn len(&self) -> usize {
        self.keys.len()
    }

    fn split(self, at: usize) -> (Self, Self) {
        let at = at.min(self.keys.len());
        let (i0, i1) = self.ids.split_at(at);
        let (k0, k1) = self.keys.split_at_mut(at);
        (
            KeyPiece {
                first: self.first,
                ids: i0,
                keys: k0,
            },
            KeyPiece {
                first: self.first + at,
                ids: i1,
                keys: k1,
            },
        )
    }
}
