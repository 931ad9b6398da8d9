//! Stage 3, the rows updated: each touched row's gradient rows summed in ascending lookup position (weights
//! applied), then the row and its state updated once by its [`Table`] type, with the rows and gradients ahead
//! prefetched; the rows are cut into pieces for the threads at row boundaries, so each piece owns its part of the
//! table and state. The non-finite check walks the same runs and sums the same way, writing nothing.

use super::optimizer::Prepared;
use super::table::{RowCtx, Table};
use crate::functional::Executor;
use crate::parallel::{Split, run_chunks};
use adagrad_kernels::rowwise;
use adagrad_kernels::{Grad, Kernels};
use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Where a lookup's gradient row comes from.
#[derive(Clone, Copy)]
pub(super) enum Source<'a, G> {
    Rows(&'a [G]),
    Bags {
        grads: &'a [G],
        weights: Option<&'a [f32]>,
        bag_of: &'a [u32],
    },
}

impl<'a, G: Grad<f32>> Source<'a, G> {
    /// The same source, reading bag numbers from `bag_of` (filled by `check.rs`).
    pub(super) fn with_bags(self, bag_of: &'a [u32]) -> Self {
        match self {
            Source::Bags { grads, weights, .. } => Source::Bags {
                grads,
                weights,
                bag_of,
            },
            rows => rows,
        }
    }

    pub(super) fn grads_len(&self) -> usize {
        match self {
            Source::Rows(g) | Source::Bags { grads: g, .. } => g.len(),
        }
    }
}

/// Updates every row `prepared` touches in `table` and `state` (`per_row` accumulators a row): each row's gradient
/// summed from its lookups, then the row updated once. The dense step's thresholds, counted in touched
/// elements: below the parallel threshold on the calling thread; otherwise in pieces of whole rows taken from a
/// shared cursor by `exec`'s threads, each of at least its grain.
pub(super) fn rows<W: Table, G: Grad<f32>>(
    exec: &Executor,
    ctx: &RowCtx<'_>,
    prepared: &Prepared<'_, G>,
    table: &mut [W],
    state: &mut [f32],
    per_row: usize,
) {
    let dim = prepared.dim;
    let work = Rows {
        keys: prepared.keys,
        starts: prepared.starts,
        first_row: 0,
        table,
        state,
        dim,
        per_row,
    };
    let leaf = |piece: Rows<'_, W>| piece.run(ctx, &prepared.src);
    let touched = work.len().saturating_mul(dim);
    run_chunks(
        work,
        exec.team_for::<f32>(touched),
        exec.row_grain(dim),
        &leaf,
    );
}

/// Elements of the summed row gradients (see [`Prepared::non_finite`]) that are NaN or ±∞, summed as [`rows`]
/// sums them without writing anything, on `exec`'s threads for large steps.
pub(super) fn non_finite<G: Grad<f32>>(exec: &Executor, prepared: &Prepared<'_, G>) -> usize {
    let Prepared {
        src,
        keys,
        starts,
        dim,
        ..
    } = *prepared;
    let found = AtomicUsize::new(0);
    let kernels = exec.kernels();
    let leaf = |piece: RunList<'_>| {
        let mut block = [0f32; CHECK_BLOCK];
        let mut bad = 0;
        for run in piece.starts.windows(2) {
            let keys = &keys[run[0] as usize..run[1] as usize];
            for c0 in (0..dim).step_by(CHECK_BLOCK) {
                let sum = &mut block[..(dim - c0).min(CHECK_BLOCK)];
                let cols = c0..c0 + sum.len();
                for (i, &k) in keys.iter().enumerate() {
                    src.accumulate(
                        kernels,
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
    let all = RunList { starts };
    let team = exec.team_for::<f32>(keys.len().saturating_mul(dim));
    run_chunks(all, team, exec.row_grain(dim), &leaf);
    found.into_inner()
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
    pub(super) fn run<G: Grad<f32>>(self, ctx: &RowCtx<'_>, src: &Source<'_, G>) {
        let dim = self.dim;
        ROW_SCRATCH.with_borrow_mut(|buf| {
            if buf.len() < 2 * dim {
                buf.resize(2 * dim, 0.0);
            }
            let (sum, wide) = buf.split_at_mut(dim);
            let (rows_ahead, lookups_ahead) = (ctx.rows_ahead, ctx.lookups_ahead);
            // The piece's lookups, in grouped order, end here: prefetches look no further.
            let end = self.starts[self.starts.len() - 1] as usize;
            // The gradient rows are one stream in grouped order, whatever rows they belong to: the one
            // `lookups_ahead` lookups ahead of lookup `j` is prefetched as `j` is read (a hot row's lookups lie
            // anywhere in the batch, and so does the next row's first one).
            let stream = |j: usize| {
                if lookups_ahead > 0 && j + lookups_ahead < end {
                    src.prefetch((self.keys[j + lookups_ahead] & 0xFFFF_FFFF) as usize, dim);
                }
            };
            for (i, run) in self.starts.windows(2).enumerate() {
                if rows_ahead > 0
                    && let Some(&ahead) = self.starts.get(i + rows_ahead)
                    && (ahead as usize) < end
                {
                    self.prefetch(ahead as usize);
                }
                let (lo, hi) = (run[0] as usize, run[1] as usize);
                let keys = &self.keys[lo..hi];
                let row = (keys[0] >> 32) as usize;
                // A row looked up once, with f32 gradient rows: its gradient is that row, read in place.
                let g: &[f32] = match (keys, src) {
                    ([k], Source::Rows(g)) if G::KIND == 0 => {
                        stream(lo);
                        let pos = (k & 0xFFFF_FFFF) as usize;
                        bytemuck::cast_slice(&g[pos * dim..(pos + 1) * dim])
                    }
                    _ => {
                        for (i, &k) in keys.iter().enumerate() {
                            stream(lo + i);
                            src.accumulate(
                                ctx.kernels,
                                (k & 0xFFFF_FFFF) as usize,
                                dim,
                                0..dim,
                                sum,
                                i == 0,
                            );
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
    /// Prefetches the table row and state of the run of keys starting at `lo` (its gradient rows come with the
    /// lookups' stream).
    #[inline]
    fn prefetch(&self, lo: usize) {
        let r = (self.keys[lo] >> 32) as usize - self.first_row;
        rowwise::prefetch_row(&self.table[r * self.dim..(r + 1) * self.dim]);
        rowwise::prefetch_row(&self.state[r * self.per_row..(r + 1) * self.per_row]);
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

    /// Adds columns `cols` of lookup `pos`'s gradient row into `sum` (or sets it, for a row's first lookup), on
    /// `kernels`' vectors ([`rowwise::accumulate`]'s arithmetic).
    #[inline]
    fn accumulate(
        &self,
        kernels: &Kernels,
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
        kernels
            .accumulate(
                sum,
                &g[row * dim + cols.start..row * dim + cols.end],
                weight,
                first,
            )
            .expect("a column range of one row, as long as the sum");
    }
}
