//! Stage 2, the lookups grouped into runs by row: `(id << 32) | position` keys sorted by id (a stable radix sort,
//! its passes chunked over the step's threads; the standard sort for small batches), then where each row's run of
//! keys starts. Reads the keys `check.rs` wrote; writes only the [`Scratch`], which keeps every buffer between
//! steps so that steps of repeating sizes allocate nothing.

use crate::Error;
use crate::functional::Executor;
use crate::parallel::{Grain, Split, Team, run_chunks};

/// Scratch an embedding step keeps between steps (its lookups grouped by row), so that steps of repeating sizes
/// allocate nothing: one per table, for [`prepare`](super::prepare).
#[derive(Debug, Default)]
pub struct Scratch {
    /// `(id << 32) | position` per lookup, sorted: duplicates adjacent, in ascending position.
    pub(super) keys: Vec<u64>,
    /// Where each touched row's run of keys starts, then `keys.len()`: the first `runs + 1` elements.
    pub(super) starts: Vec<u32>,
    /// Touched rows (runs of keys) of the last grouping.
    pub(super) runs: usize,
    /// Run starts found per chunk of keys, while they are gathered.
    pub(super) found: Vec<usize>,
    /// The bag of each lookup (bags input).
    pub(super) bag_of: Vec<u32>,
    /// The radix sort's second buffer.
    pub(super) spare: Vec<u64>,
    /// The radix sort's digit counts, one row of `1 << RADIX_BITS` per chunk of lookups.
    pub(super) counts: Vec<usize>,
}

/// How the grouping of a step's lookups is divided (and the key building in `check.rs` with it).
#[derive(Clone, Copy)]
pub(super) struct Plan<'e> {
    /// The step's threads, from [`crate::Tuning::sort_threshold`] lookups up; none below (the calling thread).
    pub(super) team: Option<Team<'e>>,
    /// Chunks of lookups: one per thread (at most [`MAX_CHUNKS`]), or 1.
    pub(super) chunks: usize,
}

/// The division of the grouping of `n` lookups on `exec`'s threads.
pub(super) fn plan(exec: &Executor, n: usize) -> Plan<'_> {
    let team = exec.team().filter(|_| n >= exec.tuning().sort_threshold);
    let chunks = team.map_or(1, |t| t.threads.min(MAX_CHUNKS));
    Plan { team, chunks }
}

/// Groups the keys `check.rs` wrote into `s` by row: sorts them and finds where each row's run starts.
pub(super) fn group(plan: Plan<'_>, s: &mut Scratch, rows: usize) -> Result<(), Error> {
    let Plan { team, chunks } = plan;
    sort_keys(team, chunks, &mut s.keys, &mut s.spare, &mut s.counts, rows)?;
    s.runs = find_runs(team, chunks, &s.keys, &mut s.starts, &mut s.found)?;
    Ok(())
}

/// Bits of the id sorted per radix pass.
const RADIX_BITS: u32 = 11;

/// Bits needed for ids below `span`.
fn id_bits(span: u64) -> u32 {
    u64::BITS - span.saturating_sub(1).leading_zeros()
}

/// Sorts `(id << 32) | position` keys (built in position order) by id, keeping positions ascending within an id,
/// so the order never depends on how the work is divided (the keys are distinct: any correct sort gives the same
/// order). Small inputs use the standard sort; the others a stable radix sort ([`radix`]) with `spare` as the
/// second buffer and `counts` for its digit counts (both kept between steps: a step of a repeating size allocates
/// nothing), in `chunks` chunks of lookups taken by `team`'s threads (without a team, one on the calling thread).
fn sort_keys(
    team: Option<Team<'_>>,
    chunks: usize,
    keys: &mut Vec<u64>,
    spare: &mut Vec<u64>,
    counts: &mut Vec<usize>,
    rows: usize,
) -> Result<(), Error> {
    let n = keys.len();
    if n < 1024 {
        keys.sort_unstable();
        return Ok(());
    }
    // Rewritten in full (sequentially, ahead of the scattered writes of the passes) every step.
    spare.clear();
    reserve(spare, n)?;
    spare.resize(n, 0);
    let cells = chunks << RADIX_BITS;
    at_least(counts, cells)?;
    if !radix(
        team,
        chunks,
        keys,
        spare,
        &mut counts[..cells],
        id_bits(rows as u64),
    ) {
        std::mem::swap(keys, spare);
    }
    Ok(())
}

/// Chunk `c` of `chunks` near-equal chunks of `0..n`.
fn chunk(n: usize, chunks: usize, c: usize) -> std::ops::Range<usize> {
    (n * c / chunks)..(n * (c + 1) / chunks)
}

/// Writes where each run of equal ids in the sorted `keys` starts into `starts` (then `keys.len()`) and returns
/// their number: each of `chunks` chunks of keys (taken by `team`'s threads) writes the starts it finds at the front of
/// its own part of `starts` (a chunk has no more starts than keys) and their count into `found`, then the parts
/// are moved together.
fn find_runs(
    team: Option<Team<'_>>,
    chunks: usize,
    keys: &[u64],
    starts: &mut Vec<u32>,
    found: &mut Vec<usize>,
) -> Result<usize, Error> {
    let n = keys.len();
    at_least(starts, n + 1)?;
    at_least(found, chunks)?;
    let find = |piece: RunPiece<'_>| {
        let from = chunk(n, chunks, piece.first).start;
        for (i, found) in piece.found.iter_mut().enumerate() {
            let range = chunk(n, chunks, piece.first + i);
            let out = &mut piece.starts[range.start - from..range.end - from];
            let mut prev = range
                .start
                .checked_sub(1)
                .map_or(u64::MAX, |p| keys[p] >> 32);
            let mut m = 0;
            // Without a branch: every position is written at the next free place, which moves on at a new id
            // (`m` never passes the position's index in the chunk).
            for (j, &k) in keys[range.clone()].iter().enumerate() {
                out[m] = (range.start + j) as u32;
                m += usize::from(k >> 32 != prev);
                prev = k >> 32;
            }
            *found = m;
        }
    };
    let all = RunPiece {
        first: 0,
        chunks,
        n,
        found: &mut found[..chunks],
        starts: &mut starts[..n],
    };
    run_chunks(all, team, Grain::fixed(1), &find);
    let mut runs = 0;
    for (c, &m) in found[..chunks].iter().enumerate() {
        let start = chunk(n, chunks, c).start;
        if start != runs {
            starts.copy_within(start..start + m, runs);
        }
        runs += m;
    }
    starts[runs] = n as u32;
    Ok(runs)
}

/// Consecutive chunks of sorted keys, from chunk `first`, while their run starts are gathered: a count per chunk,
/// and the part of `starts` that holds their positions.
struct RunPiece<'a> {
    first: usize,
    chunks: usize,
    n: usize,
    found: &'a mut [usize],
    starts: &'a mut [u32],
}

impl Split for RunPiece<'_> {
    fn len(&self) -> usize {
        self.found.len()
    }

    fn split(self, at: usize) -> (Self, Self) {
        let at = at.min(self.found.len());
        let cut = chunk(self.n, self.chunks, self.first + at).start
            - chunk(self.n, self.chunks, self.first).start;
        let (f0, f1) = self.found.split_at_mut(at);
        let (s0, s1) = self.starts.split_at_mut(cut);
        (
            RunPiece {
                first: self.first,
                found: f0,
                starts: s0,
                ..self
            },
            RunPiece {
                first: self.first + at,
                found: f1,
                starts: s1,
                ..self
            },
        )
    }
}

/// Most chunks the parallel sort cuts the lookups into.
const MAX_CHUNKS: usize = 64;

/// A stable least-significant-digit radix sort of keys `(id << 32) | position` by id (below `2^id_bits`),
/// [`RADIX_BITS`] bits per pass, alternating between `a` and `b`. Each pass is cut into `chunks` chunks of
/// consecutive positions (as many as `team` has threads, taken by them as they come; without a team, one on the
/// calling thread): every chunk counts its digits, the counts give each (chunk, digit) run of keys its place — digit by digit, chunk by chunk — and
/// every chunk scatters its keys there in position order, so each pass stays stable. `counts` holds
/// `chunks << RADIX_BITS` cells. Returns whether the result is in `a`.
fn radix(
    team: Option<Team<'_>>,
    chunks: usize,
    a: &mut [u64],
    b: &mut [u64],
    counts: &mut [usize],
    id_bits: u32,
) -> bool {
    let (mut src, mut dst) = (a, b);
    let mut in_a = true;
    let mut shift = 0;
    while shift < id_bits {
        let digit = move |k: u64| ((k >> 32) >> shift) as usize & ((1 << RADIX_BITS) - 1);
        let n = src.len();
        let bounds = move |c: usize| chunk(n, chunks, c);
        // Each chunk's digit counts.
        let count = |piece: Chunks<'_>| {
            // Rows as arrays: a masked digit indexes them without a bounds check.
            for (i, row) in piece
                .rows
                .as_chunks_mut::<{ 1 << RADIX_BITS }>()
                .0
                .iter_mut()
                .enumerate()
            {
                row.fill(0);
                for &k in &src[bounds(piece.first + i)] {
                    row[digit(k)] += 1;
                }
            }
        };
        run_chunks(Chunks::new(counts), team, Grain::fixed(1), &count);
        // Digit by digit, chunk by chunk: where each (chunk, digit) run of keys starts.
        let mut at = 0;
        for d in 0..1 << RADIX_BITS {
            for c in 0..chunks {
                let cell = &mut counts[(c << RADIX_BITS) + d];
                (*cell, at) = (at, at + *cell);
            }
        }
        let out = Out(dst.as_mut_ptr(), dst.len());
        let scatter = |piece: Chunks<'_>| {
            for (i, row) in piece
                .rows
                .as_chunks_mut::<{ 1 << RADIX_BITS }>()
                .0
                .iter_mut()
                .enumerate()
            {
                for &k in &src[bounds(piece.first + i)] {
                    // The place taken before the write: the raw write cannot then make the count be read again.
                    let at = &mut row[digit(k)];
                    let place = *at;
                    *at += 1;
                    out.write(place, k);
                }
            }
        };
        run_chunks(Chunks::new(counts), team, Grain::fixed(1), &scatter);
        (src, dst) = (dst, src);
        in_a = !in_a;
        shift += RADIX_BITS;
    }
    in_a
}

/// The destination of a radix pass, written by every chunk at the places its counts gave it.
#[derive(Clone, Copy)]
struct Out(*mut u64, usize);

// SAFETY: `Out` is only used by `radix`, whose chunks write pairwise disjoint places of one buffer that
// nothing else reads or writes during the pass (see `Out::write`).
unsafe impl Send for Out {}
// SAFETY: as for `Send`: concurrent writes go to disjoint places.
unsafe impl Sync for Out {}

impl Out {
    /// Writes `k` at `at`.
    #[inline(always)]
    fn write(self, at: usize, k: u64) {
        assert!(at < self.1, "a radix place lies inside the buffer");
        // SAFETY: `at` is in bounds (checked above); the places of (chunk, digit) runs are disjoint ranges that
        // partition `0..len` (prefix sums of the counts), each written only by its own chunk, once per key, while
        // `radix` holds the buffer's only mutable borrow.
        unsafe { self.0.add(at).write(k) }
    }
}

/// Consecutive chunks of a radix pass: their rows of digit counts.
struct Chunks<'a> {
    first: usize,
    rows: &'a mut [usize],
}

impl<'a> Chunks<'a> {
    fn new(rows: &'a mut [usize]) -> Self {
        Chunks { first: 0, rows }
    }
}

impl Split for Chunks<'_> {
    fn len(&self) -> usize {
        self.rows.len() >> RADIX_BITS
    }

    fn split(self, at: usize) -> (Self, Self) {
        let at = at.min(self.len());
        let (r0, r1) = self.rows.split_at_mut(at << RADIX_BITS);
        (
            Chunks {
                first: self.first,
                rows: r0,
            },
            Chunks {
                first: self.first + at,
                rows: r1,
            },
        )
    }
}

/// Grows `v` to hold `n` more elements, or reports the allocation failure.
pub(super) fn reserve<T>(v: &mut Vec<T>, n: usize) -> Result<(), Error> {
    v.try_reserve(n).map_err(|_| Error::Alloc { elements: n })
}

/// Lengthens scratch `v` to at least `len` elements (the new ones zero; a longer `v` is left as it is), or reports
/// the allocation failure.
pub(super) fn at_least<T: Copy + Default>(v: &mut Vec<T>, len: usize) -> Result<(), Error> {
    if let Some(more) = len.checked_sub(v.len()) {
        reserve(v, more)?;
        v.resize(len, T::default());
    }
    Ok(())
}
