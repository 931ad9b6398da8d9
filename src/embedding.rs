//! Embedding tables: sparse Adagrad with one accumulator per row ([`Accumulator::RowWise`], FBGEMM's
//! `EXACT_ROWWISE_ADAGRAD`, TorchRec's default) or per element ([`Accumulator::ElementWise`], `torch.optim.Adagrad`
//! on sparse gradients, FBGEMM's `EXACT_ADAGRAD`).
//!
//! A step takes the lookups of a batch as frameworks produce them — one gradient row per lookup, pooled bags
//! (offsets into the ids, one gradient row per bag, optional per-lookup weights), or rows already coalesced — sums
//! each row's gradients in ascending lookup position (so the result never depends on the thread count), then updates
//! every touched row once. The per-row math is [`adagrad_kernels::rowwise`] (row-wise; bit-exact with FBGEMM 1.9.0)
//! and the dense step (element-wise; a step that touches every row once equals the dense step on that gradient).
//!
//! ```
//! use adagrad::embedding::{EmbeddingAdagrad, Lookups, TableOptions};
//! use adagrad::Config;
//! let (rows, dim) = (1000, 4);
//! let mut table = vec![0.5f32; rows * dim];
//! let mut opt = EmbeddingAdagrad::<f32>::new(Config::default().lr(0.1).eps(1e-8), rows, dim, TableOptions::default())?;
//! // Three lookups, row 7 twice: its two gradient rows are summed first, then the row is updated once.
//! let ids = [7u32, 42, 7];
//! let grads = [1.0f32; 3 * 4];
//! opt.step(&mut table, Lookups::Rows { ids: &ids, grads: &grads })?;
//! assert_eq!(opt.state()[7], 4.0); // the mean of the summed row's squares, (1 + 1)²
//! assert_eq!(table[7 * dim], 0.4); // 0.5 − 0.1·2/(√4 + 1e-8)
//! assert_eq!(table[0], 0.5); // untouched
//! # Ok::<(), adagrad::Error>(())
//! ```

use crate::functional::Executor;
use crate::parallel::{Grain, Split, Team, run_chunks};
use crate::{AlignedBuf, Config, Error, NonFinite, StepOutcome};
use adagrad_kernels::rowwise::{self, DecayMode, Narrow, Rounding, RowHyper};
use adagrad_kernels::{Grad, Hyper, Isa, Kernels, Precision, bf16, f16};
use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Which accumulator the optimizer keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Accumulator {
    /// One per row: the mean of the row's squared (summed) gradient is added to it (FBGEMM, TorchRec). The default.
    #[default]
    RowWise,
    /// One per element, as dense Adagrad.
    ElementWise,
}

/// The embedding-specific settings (the hyperparameters and execution settings are a [`Config`]'s).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TableOptions {
    /// Row-wise (default) or element-wise accumulator.
    pub accumulator: Accumulator,
    /// How [`Config::weight_decay`] enters: L2 (default) or decoupled.
    pub decay: DecayMode,
    /// How updates are rounded into a bf16/f16 table (ignored for f32 tables): to nearest even (default) or
    /// stochastically.
    pub rounding: Rounding,
}

impl TableOptions {
    /// Sets [`TableOptions::accumulator`].
    pub fn accumulator(mut self, a: Accumulator) -> Self {
        self.accumulator = a;
        self
    }
    /// Sets [`TableOptions::decay`].
    pub fn decay(mut self, d: DecayMode) -> Self {
        self.decay = d;
        self
    }
    /// Sets [`TableOptions::rounding`].
    pub fn rounding(mut self, r: Rounding) -> Self {
        self.rounding = r;
        self
    }
}

/// Row ids (and bag offsets) as frameworks hand them: `u32`, `u64`, `usize`, or signed `i32`/`i64` (torch), where
/// a negative value is refused.
pub trait Id: Copy + Send + Sync + fmt::Debug + 'static {
    /// The value, as a non-negative index, or `None` if negative.
    fn index(self) -> Option<u64>;
    /// The value, for error messages.
    fn value(self) -> i128;
}

macro_rules! impl_id {
    ($($t:ty),*) => {$(
        impl Id for $t {
            #[inline(always)]
            fn index(self) -> Option<u64> {
                u64::try_from(self).ok()
            }
            fn value(self) -> i128 {
                self as i128
            }
        }
    )*};
}
impl_id!(u32, u64, usize, i32, i64);

/// One step's lookups. Gradients are f32, or bf16/f16 widened exactly; rows are `dim` elements, row-major.
#[derive(Clone, Copy, Debug)]
pub enum Lookups<'a, I: Id, G: Grad<f32> = f32> {
    /// One gradient row per lookup, in lookup order (`grads.len() == ids.len() · dim`).
    Rows {
        /// The row id of each lookup.
        ids: &'a [I],
        /// One row per lookup.
        grads: &'a [G],
    },
    /// Pooled bags, as an `EmbeddingBag` (sum pooling) or TBE backward gives them: bag `b` holds lookups
    /// `offsets[b]..offsets[b + 1]` (`offsets` starts at 0, never decreases and ends at `ids.len()`), and the
    /// gradient of each lookup is its bag's row, times its weight when `weights` are given.
    Bags {
        /// The row id of each lookup.
        ids: &'a [I],
        /// `bags + 1` offsets into `ids`.
        offsets: &'a [I],
        /// Per-lookup weights (`ids.len()` of them), or none.
        weights: Option<&'a [f32]>,
        /// One row per bag.
        grads: &'a [G],
    },
    /// Already coalesced: each id at most once, one gradient row per id.
    Coalesced {
        /// Distinct row ids.
        ids: &'a [I],
        /// One row per id.
        grads: &'a [G],
    },
}

/// What is wrong with a step's table or lookups. Positions count lookups (or offsets) from 0; the first offending
/// one is named. Nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LookupError {
    /// The table slice does not have `rows · dim` elements.
    TableLength {
        /// `rows · dim`.
        expected: usize,
        /// The slice's length.
        got: usize,
    },
    /// An id is negative or not below the number of rows.
    Id {
        /// The lookup's position.
        position: usize,
        /// The id.
        id: i128,
        /// The table's rows.
        rows: usize,
    },
    /// The state slice does not have one accumulator per row (row-wise) or per element (element-wise).
    StateLength {
        /// `rows` or `rows · dim`.
        expected: usize,
        /// The slice's length.
        got: usize,
    },
    /// The gradient slice does not have one row per lookup (bag, id).
    GradLength {
        /// Rows × dim expected.
        expected: usize,
        /// The slice's length.
        got: usize,
    },
    /// The per-lookup weights are not one per id.
    WeightsLength {
        /// `ids.len()`.
        expected: usize,
        /// The weights' length.
        got: usize,
    },
    /// The offsets are unusable.
    Offset {
        /// The offset's position (`offsets.len()` when there are none).
        position: usize,
        /// Its value (0 when there are none).
        value: i128,
        /// Why.
        reason: &'static str,
    },
    /// Coalesced input with an id given twice.
    Duplicate {
        /// The later position.
        position: usize,
        /// The id.
        id: u64,
    },
    /// More lookups than a step handles (2³² − 1).
    TooManyLookups {
        /// Lookups given.
        lookups: usize,
    },
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LookupError::TableLength { expected, got } => {
                write!(
                    f,
                    "table has {got} elements, expected rows × dim = {expected}"
                )
            }
            LookupError::Id { position, id, rows } => {
                write!(
                    f,
                    "id {id} at position {position} is outside the table's {rows} rows"
                )
            }
            LookupError::StateLength { expected, got } => {
                write!(f, "state has {got} accumulators, expected {expected}")
            }
            LookupError::GradLength { expected, got } => {
                write!(f, "gradients have {got} elements, expected {expected}")
            }
            LookupError::WeightsLength { expected, got } => {
                write!(f, "{got} per-lookup weights for {expected} lookups")
            }
            LookupError::Offset {
                position,
                value,
                reason,
            } => write!(f, "offset {value} at position {position}: {reason}"),
            LookupError::Duplicate { position, id } => write!(
                f,
                "coalesced lookups give id {id} twice (again at position {position})"
            ),
            LookupError::TooManyLookups { lookups } => {
                write!(f, "{lookups} lookups in one step; at most 4294967295")
            }
        }
    }
}

impl std::error::Error for LookupError {}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for adagrad_kernels::bf16 {}
    impl Sealed for adagrad_kernels::f16 {}
}

/// What one row's update needs besides the row.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct RowCtx<'a> {
    kernels: &'a Kernels,
    accumulator: Accumulator,
    row: RowHyper,
    dense: Hyper<f32>,
    precision: Precision,
    rounding: Rounding,
    step: u64,
    /// [`crate::Tuning::rows_ahead`] and [`crate::Tuning::lookups_ahead`].
    rows_ahead: usize,
    lookups_ahead: usize,
}

/// Table element types: `f32`, [`bf16`] and [`f16`](struct@f16) (with f32 state).
pub trait Table:
    sealed::Sealed + bytemuck::Pod + Copy + Send + Sync + fmt::Debug + 'static
{
    /// The type's name.
    const NAME: &'static str;
    /// Updates row `row` (`w`) with its summed gradient `g` and its state `s` (1 or `dim` elements); `buf` holds
    /// `dim` f32 of scratch.
    #[doc(hidden)]
    fn update_row(
        ctx: &RowCtx<'_>,
        w: &mut [Self],
        g: &[f32],
        s: &mut [f32],
        row: u64,
        buf: &mut [f32],
    );
}

impl Table for f32 {
    const NAME: &'static str = "f32";
    fn update_row(
        ctx: &RowCtx<'_>,
        w: &mut [f32],
        g: &[f32],
        s: &mut [f32],
        _: u64,
        _: &mut [f32],
    ) {
        let done = match ctx.accumulator {
            Accumulator::RowWise => ctx.kernels.rowwise(w, g, &mut s[0], &ctx.row),
            Accumulator::ElementWise => {
                if let Some(c) = ctx.row.decoupled_factor() {
                    rowwise::decay_elementwise(w, c);
                }
                ctx.kernels.update(w, g, s, &ctx.dense, ctx.precision)
            }
        };
        done.expect("row lengths checked before the step");
    }
}

fn update_narrow_row<W: Narrow>(
    ctx: &RowCtx<'_>,
    w: &mut [W],
    g: &[f32],
    s: &mut [f32],
    row: u64,
    buf: &mut [f32],
) {
    let key = ctx.rounding.key(ctx.step, row);
    let done = match ctx.accumulator {
        Accumulator::RowWise => {
            rowwise::update_narrow(w, g, &mut s[0], &ctx.row, ctx.rounding, key)
        }
        Accumulator::ElementWise => {
            let buf = &mut buf[..w.len()];
            for (b, x) in buf.iter_mut().zip(w.iter()) {
                *b = x.widen();
            }
            if let Some(c) = ctx.row.decoupled_factor() {
                rowwise::decay_elementwise(buf, c);
            }
            let done = ctx.kernels.update(buf, g, s, &ctx.dense, ctx.precision);
            ctx.rounding.round_row(buf, w, key);
            done
        }
    };
    done.expect("row lengths checked before the step");
}

impl Table for bf16 {
    const NAME: &'static str = "bf16";
    fn update_row(
        ctx: &RowCtx<'_>,
        w: &mut [bf16],
        g: &[f32],
        s: &mut [f32],
        row: u64,
        buf: &mut [f32],
    ) {
        update_narrow_row(ctx, w, g, s, row, buf)
    }
}

impl Table for f16 {
    const NAME: &'static str = "f16";
    fn update_row(
        ctx: &RowCtx<'_>,
        w: &mut [f16],
        g: &[f32],
        s: &mut [f32],
        row: u64,
        buf: &mut [f32],
    ) {
        update_narrow_row(ctx, w, g, s, row, buf)
    }
}

/// Scratch an embedding step keeps between steps (its lookups grouped by row), so that steps of repeating sizes
/// allocate nothing: one per table, for [`prepare`].
#[derive(Debug, Default)]
pub struct Scratch {
    /// `(id << 32) | position` per lookup, sorted: duplicates adjacent, in ascending position.
    keys: Vec<u64>,
    /// Where each touched row's run of keys starts, then `keys.len()`: the first `runs + 1` elements.
    starts: Vec<u32>,
    /// Touched rows (runs of keys) of the last grouping.
    runs: usize,
    /// Run starts found per chunk of keys, while they are gathered.
    found: Vec<usize>,
    /// The bag of each lookup (bags input).
    bag_of: Vec<u32>,
    /// The radix sort's second buffer.
    spare: Vec<u64>,
    /// The radix sort's digit counts, one row of `1 << RADIX_BITS` per chunk of lookups.
    counts: Vec<usize>,
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
fn reserve<T>(v: &mut Vec<T>, n: usize) -> Result<(), Error> {
    v.try_reserve(n).map_err(|_| Error::Alloc { elements: n })
}

/// Lengthens scratch `v` to at least `len` elements (the new ones zero; a longer `v` is left as it is), or reports
/// the allocation failure.
fn at_least<T: Copy + Default>(v: &mut Vec<T>, len: usize) -> Result<(), Error> {
    if let Some(more) = len.checked_sub(v.len()) {
        reserve(v, more)?;
        v.resize(len, T::default());
    }
    Ok(())
}

/// Adagrad for one embedding table of `rows × dim` elements of type `W`, with f32 state.
///
/// The table itself is the caller's (a slice given to every step); the optimizer owns the accumulators (`rows`
/// of them for [`Accumulator::RowWise`], `rows · dim` for [`Accumulator::ElementWise`]) and the step count. Every
/// step validates all of its input before writing anything. Threads, kernel path and tuning come from the
/// [`Config`], as for [`crate::Adagrad`]; results never depend on them.
#[derive(Debug)]
pub struct EmbeddingAdagrad<W: Table> {
    pub(crate) config: Config,
    pub(crate) options: TableOptions,
    exec: Executor,
    pub(crate) rows: usize,
    pub(crate) dim: usize,
    state: AlignedBuf<f32>,
    pub(crate) step: u64,
    scratch: Scratch,
    _table: std::marker::PhantomData<fn(&mut [W])>,
}

impl<W: Table> EmbeddingAdagrad<W> {
    /// An optimizer for a table of `rows × dim` elements (`dim ≥ 1`, `rows < 2³²`), every accumulator set to
    /// `initial_accumulator_value`. The configuration is validated as f32 values (the state's type).
    pub fn new(
        config: Config,
        rows: usize,
        dim: usize,
        options: TableOptions,
    ) -> Result<Self, Error> {
        config.validate_for::<f32>()?;
        let elements = table_elements(rows, dim)?;
        let exec = Executor::new(&config)?;
        let n = match options.accumulator {
            Accumulator::RowWise => rows,
            Accumulator::ElementWise => elements,
        };
        let state = AlignedBuf::filled(n, config.initial_accumulator_value as f32)?;
        Ok(EmbeddingAdagrad {
            config,
            options,
            exec,
            rows,
            dim,
            state,
            step: 0,
            scratch: Scratch::default(),
            _table: std::marker::PhantomData,
        })
    }

    /// One step: validates `table` and `lookups` (see [`LookupError`]), sums each touched row's gradients in
    /// ascending lookup position, and updates each touched row once. On any error nothing is changed; with
    /// [`NonFinite::SkipStep`] a step whose summed row gradients (see [`Prepared::non_finite`]) hold NaN or ±∞
    /// changes nothing and returns [`StepOutcome::Skipped`].
    pub fn step<I: Id, G: Grad<f32>>(
        &mut self,
        table: &mut [W],
        lookups: Lookups<'_, I, G>,
    ) -> Result<StepOutcome, Error> {
        let t = self.step.checked_add(1).ok_or(Error::StepCountOverflow)?;
        let expected = self.rows * self.dim;
        if table.len() != expected {
            return Err(LookupError::TableLength {
                expected,
                got: table.len(),
            }
            .into());
        }
        let prepared = prepare(&self.exec, self.rows, self.dim, lookups, &mut self.scratch)?;
        if self.config.non_finite != NonFinite::Propagate {
            let bad = prepared.non_finite(&self.exec);
            if bad > 0 {
                return match self.config.non_finite {
                    NonFinite::Error => Err(Error::NonFiniteGradient { count: bad }),
                    _ => Ok(StepOutcome::Skipped { non_finite: bad }),
                };
            }
        }
        apply(
            &self.exec,
            &self.config,
            &self.options,
            t,
            table,
            self.state.as_mut_slice(),
            &prepared,
        )?;
        self.step = t;
        Ok(StepOutcome::Applied)
    }

    /// The accumulators: one per row (row-wise) or `rows · dim`, row-major (element-wise).
    pub fn state(&self) -> &[f32] {
        self.state.as_slice()
    }

    /// The accumulators, to set them (initialising or restoring a table's state). Every value must be finite and
    /// not negative for the steps' results to mean anything; nothing checks them here.
    pub fn state_mut(&mut self) -> &mut [f32] {
        self.state.as_mut_slice()
    }

    /// Steps taken so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Statistics of the effective learning rate the next step would give each accumulator (each row's, or each
    /// element's), `clr / (√G + ε)` (or `clr / √(G + ε)`), and how many are below `threshold` (see
    /// [`crate::stats`]). A row never looked up keeps its initial accumulator, and so the largest rate. Computed
    /// from the state on request (two reads of it, on the calling thread; about 5 steps' time), never inside a step.
    pub fn lr_stats(&self, threshold: f64) -> Result<crate::stats::LrStats, Error> {
        let h = self.config.hyper::<f32>(self.step.saturating_add(1));
        crate::stats::lr_stats(self.state.as_slice(), &h, threshold)
    }

    /// Rows of the table.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Elements per row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The embedding-specific options.
    pub fn options(&self) -> TableOptions {
        self.options
    }

    /// The kernel path.
    pub fn isa(&self) -> Isa {
        self.exec.isa()
    }

    /// Threads a large step runs on, the caller included.
    pub fn threads(&self) -> usize {
        self.exec.threads()
    }

    /// The performance settings in use (prefetch distances, thresholds); they change no bit of any result.
    pub fn tuning(&self) -> crate::Tuning {
        self.exec.tuning()
    }

    /// Changes the base learning rate for the following steps; a negative, NaN or infinite value (or one that
    /// overflows f32) is refused and nothing changes.
    pub fn set_lr(&mut self, lr: f64) -> Result<(), Error> {
        Config {
            lr,
            ..self.config.clone()
        }
        .validate_for::<f32>()?;
        self.config.lr = lr;
        Ok(())
    }
}

/// Lookups validated for a table of `rows × dim`, grouped by row in the scratch they borrow: what [`apply`] runs.
pub struct Prepared<'a, G> {
    src: Source<'a, G>,
    keys: &'a [u64],
    starts: &'a [u32],
    rows: usize,
    dim: usize,
}

impl<G: Grad<f32>> Prepared<'_, G> {
    /// Elements of the gradients the update will use that are NaN or ±∞: each touched row's gradient summed over
    /// its lookups, weights applied, exactly as the row update sums it (so a sum that overflows to ∞, or a weight
    /// of 1e30 on a gradient of 1e30, counts, and a gradient row no lookup uses does not). A pass that sums without
    /// writing anything, on `exec`'s threads for large steps; the step's policy ([`crate::NonFinite`]) judges by
    /// it.
    pub fn non_finite(&self, exec: &Executor) -> usize {
        let dim = self.dim;
        let found = AtomicUsize::new(0);
        let leaf = |piece: RunList<'_>| {
            let mut block = [0f32; CHECK_BLOCK];
            let mut bad = 0;
            for run in piece.starts.windows(2) {
                let keys = &self.keys[run[0] as usize..run[1] as usize];
                for c0 in (0..dim).step_by(CHECK_BLOCK) {
                    let sum = &mut block[..(dim - c0).min(CHECK_BLOCK)];
                    let cols = c0..c0 + sum.len();
                    for (i, &k) in keys.iter().enumerate() {
                        self.src.accumulate(
                            (k & 0xFFFF_FFFF) as usize,
                            dim,
                            cols.clone(),
                            sum,
                            i == 0,
                        );
                    }
                    bad += sum.iter().filter(|x| !x.is_finite()).count();
                }
            }
            found.fetch_add(bad, Ordering::Relaxed);
        };
        let all = RunList {
            starts: self.starts,
        };
        let team = exec.team_for::<f32>(self.keys.len().saturating_mul(dim));
        run_chunks(all, team, exec.row_grain(dim), &leaf);
        found.into_inner()
    }

    /// Rows the step touches.
    pub fn touched_rows(&self) -> usize {
        self.starts.len() - 1
    }
}

/// The functional form's first half: validates `lookups` for a table of `rows × dim` (ids, lengths, offsets,
/// weights, duplicates in coalesced input: see [`LookupError`]) and groups them by row in `scratch` (keep one per
/// table and reuse it: steps of repeating sizes then allocate nothing), on `exec`'s threads for large steps.
/// Writes nothing but the scratch.
///
/// ```
/// use adagrad::embedding::{self, Accumulator, Lookups, Scratch, TableOptions};
/// use adagrad::{Config, Executor};
/// let config = Config::default().lr(0.1).eps(1e-8);
/// let exec = Executor::new(&config)?;
/// let options = TableOptions::default().accumulator(Accumulator::ElementWise);
/// let (rows, dim) = (10, 2);
/// let (mut table, mut state) = (vec![1.0f32; rows * dim], vec![0.0f32; rows * dim]); // caller-owned
/// let mut scratch = Scratch::default();
/// let prepared = embedding::prepare(&exec, rows, dim, Lookups::Rows { ids: &[3i64], grads: &[2.0, 2.0] }, &mut scratch)?;
/// embedding::apply(&exec, &config, &options, 1, &mut table, &mut state, &prepared)?;
/// assert_eq!((table[6], state[6]), (0.9, 4.0));
/// # Ok::<(), adagrad::Error>(())
/// ```
pub fn prepare<'a, I: Id, G: Grad<f32>>(
    exec: &Executor,
    rows: usize,
    dim: usize,
    lookups: Lookups<'a, I, G>,
    scratch: &'a mut Scratch,
) -> Result<Prepared<'a, G>, Error> {
    table_elements(rows, dim)?;
    let src = fill(exec, rows, dim, lookups, scratch)?;
    let scratch: &'a Scratch = scratch;
    Ok(Prepared {
        src: src.with_bags(&scratch.bag_of),
        keys: &scratch.keys,
        starts: &scratch.starts[..=scratch.runs],
        rows,
        dim,
    })
}

/// The functional form's second half: applies `prepared` to the caller's `table` (`rows × dim`) and `state`
/// (`rows` accumulators for [`Accumulator::RowWise`], `rows × dim` for [`Accumulator::ElementWise`]) as step `t`
/// (1-based: 0 is refused, as by [`crate::functional::step`]) with `config`'s hyperparameters (validated here, as
/// f32) on `exec`'s path and threads — the same
/// arithmetic, threads and bits as [`EmbeddingAdagrad::step`], which is this pair on its own state. Checks every
/// length first; on error nothing is changed. (The non-finite policy is the caller's: see
/// [`Prepared::non_finite`].)
pub fn apply<W: Table, G: Grad<f32>>(
    exec: &Executor,
    config: &Config,
    options: &TableOptions,
    t: u64,
    table: &mut [W],
    state: &mut [f32],
    prepared: &Prepared<'_, G>,
) -> Result<(), Error> {
    crate::functional::check_step(t)?;
    config.validate_for::<f32>()?;
    let (rows, dim) = (prepared.rows, prepared.dim);
    if table.len() != rows * dim {
        return Err(LookupError::TableLength {
            expected: rows * dim,
            got: table.len(),
        }
        .into());
    }
    let per_row = match options.accumulator {
        Accumulator::RowWise => 1,
        Accumulator::ElementWise => dim,
    };
    if state.len() != rows * per_row {
        return Err(LookupError::StateLength {
            expected: rows * per_row,
            got: state.len(),
        }
        .into());
    }
    let c = config;
    let tuning = exec.tuning();
    let ctx = RowCtx {
        kernels: exec.kernels(),
        accumulator: options.accumulator,
        row: RowHyper::new(
            c.lr,
            c.lr_decay,
            t,
            c.weight_decay,
            options.decay,
            c.eps,
            c.maximize,
            c.eps_placement,
        ),
        dense: Hyper::new(
            c.lr,
            c.lr_decay,
            t,
            if options.decay == DecayMode::L2 {
                c.weight_decay
            } else {
                0.0
            },
            c.eps,
            c.maximize,
            c.eps_placement,
        ),
        precision: c.precision,
        rounding: options.rounding,
        step: t,
        rows_ahead: tuning.rows_ahead,
        lookups_ahead: tuning.lookups_ahead,
    };
    let work = Rows {
        keys: prepared.keys,
        starts: prepared.starts,
        first_row: 0,
        table,
        state,
        dim,
        per_row,
    };
    let src = &prepared.src;
    let leaf = |piece: Rows<'_, W>| piece.run(&ctx, src);
    // The dense step's thresholds, counted in touched elements: below the parallel threshold on the calling
    // thread; otherwise in chunks of rows from a shared cursor, each of at least `min_piece` elements.
    let touched = work.len().saturating_mul(dim);
    run_chunks(
        work,
        exec.team_for::<f32>(touched),
        exec.row_grain(dim),
        &leaf,
    );
    Ok(())
}

/// Validates the lookups and fills the scratch: sorted keys and the start of each touched row's run.
fn fill<'a, I: Id, G: Grad<f32>>(
    exec: &Executor,
    rows: usize,
    dim: usize,
    lookups: Lookups<'a, I, G>,
    s: &mut Scratch,
) -> Result<Source<'a, G>, Error> {
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
    let team = exec.team().filter(|_| n >= exec.tuning().sort_threshold);
    let chunks = team.map_or(1, |t| t.threads.min(MAX_CHUNKS));
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
    run_chunks(all, team, Grain::fixed(n.div_ceil(chunks)), &build);
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
    sort_keys(team, chunks, &mut s.keys, &mut s.spare, &mut s.counts, rows)?;
    s.runs = find_runs(team, chunks, &s.keys, &mut s.starts, &mut s.found)?;
    if let Lookups::Coalesced { .. } = lookups {
        first_duplicate(&s.keys, &s.starts[..=s.runs])?;
    }
    Ok(src)
}

/// `rows · dim`, for a shape the steps can handle: `dim ≥ 1`, `rows < 2³²`, the product addressable.
fn table_elements(rows: usize, dim: usize) -> Result<usize, Error> {
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
fn first_duplicate(keys: &[u64], starts: &[u32]) -> Result<(), Error> {
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

/// Where a lookup's gradient row comes from.
#[derive(Clone, Copy)]
enum Source<'a, G> {
    Rows(&'a [G]),
    Bags {
        grads: &'a [G],
        weights: Option<&'a [f32]>,
        bag_of: &'a [u32],
    },
}

impl<'a, G: Grad<f32>> Source<'a, G> {
    /// The same source, reading bag numbers from `bag_of` (filled by [`fill_bags`]).
    fn with_bags(self, bag_of: &'a [u32]) -> Self {
        match self {
            Source::Bags { grads, weights, .. } => Source::Bags {
                grads,
                weights,
                bag_of,
            },
            rows => rows,
        }
    }

    fn grads_len(&self) -> usize {
        match self {
            Source::Rows(g) | Source::Bags { grads: g, .. } => g.len(),
        }
    }
}

/// Columns the non-finite check sums at a time (on the stack).
const CHECK_BLOCK: usize = 64;

/// Runs of keys (by their starts, and the end of the last), read only: what the non-finite check walks.
struct RunList<'a> {
    starts: &'a [u32],
}

impl Split for RunList<'_> {
    fn len(&self) -> usize {
        self.starts.len() - 1
    }

    fn split(self, at: usize) -> (Self, Self) {
        let at = at.min(self.len());
        (
            RunList {
                starts: &self.starts[..=at],
            },
            RunList {
                starts: &self.starts[at..],
            },
        )
    }
}

/// A run of touched rows: the rows of `starts[..]`'s runs, with the part of the table and state that holds them.
struct Rows<'a, W> {
    keys: &'a [u64],
    /// Run starts into `keys`, and the end of the last run.
    starts: &'a [u32],
    /// The row index of `table`'s first row.
    first_row: usize,
    table: &'a mut [W],
    state: &'a mut [f32],
    dim: usize,
    /// State elements per row (1 or dim).
    per_row: usize,
}

impl<W: Table> Split for Rows<'_, W> {
    fn len(&self) -> usize {
        self.starts.len() - 1
    }

    fn split(self, at: usize) -> (Self, Self) {
        let at = at.min(self.len());
        let boundary = if at == self.len() {
            self.first_row + self.table.len() / self.dim
        } else {
            (self.keys[self.starts[at] as usize] >> 32) as usize
        };
        let r = boundary - self.first_row;
        let (t0, t1) = self.table.split_at_mut(r * self.dim);
        let (s0, s1) = self.state.split_at_mut(r * self.per_row);
        (
            Rows {
                keys: self.keys,
                starts: &self.starts[..=at],
                first_row: self.first_row,
                table: t0,
                state: s0,
                dim: self.dim,
                per_row: self.per_row,
            },
            Rows {
                keys: self.keys,
                starts: &self.starts[at..],
                first_row: boundary,
                table: t1,
                state: s1,
                dim: self.dim,
                per_row: self.per_row,
            },
        )
    }
}

thread_local! {
    /// Per-thread rows of scratch: the summed gradient and a widened 16-bit row.
    static ROW_SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl<W: Table> Rows<'_, W> {
    /// Sums and applies every row of this run, on this thread.
    fn run<G: Grad<f32>>(self, ctx: &RowCtx<'_>, src: &Source<'_, G>) {
        let dim = self.dim;
        ROW_SCRATCH.with_borrow_mut(|buf| {
            if buf.len() < 2 * dim {
                buf.resize(2 * dim, 0.0);
            }
            let (sum, wide) = buf.split_at_mut(dim);
            let (rows_ahead, lookups_ahead) = (ctx.rows_ahead, ctx.lookups_ahead);
            for (i, run) in self.starts.windows(2).enumerate() {
                if rows_ahead > 0
                    && let Some(ahead) = self.starts.get(i + rows_ahead..i + rows_ahead + 2)
                {
                    self.prefetch(ahead[0] as usize, ahead[1] as usize, src);
                }
                let keys = &self.keys[run[0] as usize..run[1] as usize];
                let row = (keys[0] >> 32) as usize;
                // A row looked up once, with f32 gradient rows: its gradient is that row, read in place.
                let g: &[f32] = match (keys, src) {
                    ([k], Source::Rows(g)) if G::KIND == 0 => {
                        let pos = (k & 0xFFFF_FFFF) as usize;
                        bytemuck::cast_slice(&g[pos * dim..(pos + 1) * dim])
                    }
                    _ => {
                        for (i, &k) in keys.iter().enumerate() {
                            // A hot row's lookups lie anywhere in the batch: fetch those ahead.
                            if lookups_ahead > 0
                                && let Some(&next) = keys.get(i + lookups_ahead)
                            {
                                src.prefetch((next & 0xFFFF_FFFF) as usize, dim);
                            }
                            src.accumulate((k & 0xFFFF_FFFF) as usize, dim, 0..dim, sum, i == 0);
                        }
                        sum
                    }
                };
                let r = row - self.first_row;
                W::update_row(
                    ctx,
                    &mut self.table[r * dim..(r + 1) * dim],
                    g,
                    &mut self.state[r * self.per_row..(r + 1) * self.per_row],
                    row as u64,
                    &mut wide[..dim],
                );
            }
        });
    }
}

impl<W: Table> Rows<'_, W> {
    /// Prefetches what the run of keys `lo..hi` will touch: its table row and state, and the gradient rows of its
    /// first lookups.
    #[inline]
    fn prefetch<G: Grad<f32>>(&self, lo: usize, hi: usize, src: &Source<'_, G>) {
        let r = (self.keys[lo] >> 32) as usize - self.first_row;
        rowwise::prefetch_row(&self.table[r * self.dim..(r + 1) * self.dim]);
        rowwise::prefetch_row(&self.state[r * self.per_row..(r + 1) * self.per_row]);
        for &k in &self.keys[lo..hi.min(lo + 2)] {
            src.prefetch((k & 0xFFFF_FFFF) as usize, self.dim);
        }
    }
}

impl<G: Grad<f32>> Source<'_, G> {
    /// Prefetches lookup `pos`'s gradient row.
    #[inline]
    fn prefetch(&self, pos: usize, dim: usize) {
        let row = match *self {
            Source::Rows(_) => pos,
            Source::Bags { bag_of, .. } => bag_of[pos] as usize,
        };
        let g = match *self {
            Source::Rows(g) | Source::Bags { grads: g, .. } => g,
        };
        rowwise::prefetch_row(&g[row * dim..(row + 1) * dim]);
    }

    /// Adds columns `cols` of lookup `pos`'s gradient row into `sum` (or sets it, for a row's first lookup).
    #[inline]
    fn accumulate(
        &self,
        pos: usize,
        dim: usize,
        cols: std::ops::Range<usize>,
        sum: &mut [f32],
        first: bool,
    ) {
        let (row, weight, g) = match *self {
            Source::Rows(g) => (pos, None, g),
            Source::Bags {
                grads,
                weights,
                bag_of,
            } => (bag_of[pos] as usize, weights.map(|w| w[pos]), grads),
        };
        add_row(
            sum,
            &g[row * dim + cols.start..row * dim + cols.end],
            weight,
            first,
        )
    }
}

/// `sum (+)= weight · g`, element by element in f32 (the product rounded, then the sum).
#[inline(always)]
fn add_row<G: Grad<f32>>(sum: &mut [f32], g: &[G], weight: Option<f32>, first: bool) {
    match (weight, first) {
        (None, true) => sum.iter_mut().zip(g).for_each(|(s, g)| *s = g.widen()),
        (None, false) => sum.iter_mut().zip(g).for_each(|(s, g)| *s += g.widen()),
        (Some(w), true) => sum.iter_mut().zip(g).for_each(|(s, g)| *s = w * g.widen()),
        (Some(w), false) => sum.iter_mut().zip(g).for_each(|(s, g)| *s += w * g.widen()),
    }
}
