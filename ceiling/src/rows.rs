//! The embedding step's memory ceiling: the same rows' traffic with trivially cheap arithmetic.
//!
//! An embedding step reads each lookup's gradient row, and reads and writes each touched table row and its state
//! (one value per row, or one per element). [`RowsCeiling`] moves exactly those bytes, in the same grouped order
//! (each touched row once, its lookups in position order; the order is given, its computation is not timed): a
//! row's lookups summed into one row (a row looked up once is read in place), then `w ← w + g` and `s ← s + g`
//! (row-wise: `s ← s + g₀`) — the least arithmetic those bytes allow. It shares no code with the crate: its own
//! loops, its own prefetch, its own threads (`std::thread::scope`, the touched rows cut into one contiguous run per
//! thread). Its variants ([`RowsCeiling::VARIANTS`]: no software prefetch; prefetching the rows 8 or 32 runs ahead;
//! and, as well, the gradient rows 8 lookups ahead inside a row's lookups) are timed one pass at a time
//! ([`RowsCeiling::time_pass`]), so that a caller can interleave them with what they bound and take the best.

use std::time::Instant;

/// A variant's prefetch distances: touched rows ahead, and lookups ahead inside a row's lookups (0: none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ahead {
    /// Touched rows ahead whose table row, state and first gradient row are prefetched.
    pub rows: usize,
    /// Lookups ahead, inside a row's lookups, whose gradient rows are prefetched.
    pub lookups: usize,
}

/// One touched row and its lookups' positions (`positions[start..end]`).
#[derive(Clone, Copy, Debug)]
struct Run {
    row: usize,
    start: usize,
    end: usize,
}

/// The grouped order of an embedding step's lookups, and the variants that move its bytes.
pub struct RowsCeiling {
    runs: Vec<Run>,
    positions: Vec<usize>,
    dim: usize,
    per_row: usize,
}

/// Prefetches the cache lines of `len` f32 from `p` (a hint).
#[inline(always)]
fn hint(p: *const f32, len: usize) {
    #[cfg(target_arch = "x86_64")]
    for off in (0..len).step_by(16) {
        // SAFETY: a prefetch never faults.
        unsafe {
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                p.wrapping_add(off).cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, len);
}

impl RowsCeiling {
    /// The order of `ids` (row ids, one per lookup) grouped by row, ascending, each row's lookups in position
    /// order; `per_row` state values per row (1: row-wise, `dim`: element-wise).
    pub fn new(ids: &[usize], dim: usize, per_row: usize) -> Self {
        let mut order: Vec<(usize, usize)> = ids.iter().copied().zip(0..).collect();
        order.sort_unstable();
        let positions = order.iter().map(|&(_, p)| p).collect();
        let mut runs: Vec<Run> = Vec::new();
        for (i, &(row, _)) in order.iter().enumerate() {
            match runs.last_mut() {
                Some(r) if r.row == row => r.end = i + 1,
                _ => runs.push(Run {
                    row,
                    start: i,
                    end: i + 1,
                }),
            }
        }
        RowsCeiling {
            runs,
            positions,
            dim,
            per_row,
        }
    }

    /// Touched rows.
    pub fn rows(&self) -> usize {
        self.runs.len()
    }

    /// Bytes one pass moves: table rows and state read and written, gradient rows read.
    pub fn bytes(&self) -> usize {
        self.runs.len() * (2 * self.dim + 2 * self.per_row) * 4
            + self.positions.len() * self.dim * 4
    }

    /// One pass over `runs` with the variant's prefetch; `table` and `state` start at row `base`.
    fn pass(
        &self,
        runs: &[Run],
        table: &mut [f32],
        state: &mut [f32],
        grads: &[f32],
        ahead: Ahead,
        base: usize,
    ) {
        let (d, sp) = (self.dim, self.per_row);
        let mut sum = vec![0.0f32; d];
        for (i, r) in runs.iter().enumerate() {
            if ahead.rows > 0
                && let Some(n) = runs.get(i + ahead.rows)
            {
                hint(table.as_ptr().wrapping_add((n.row - base) * d), d);
                hint(state.as_ptr().wrapping_add((n.row - base) * sp), sp);
                hint(grads.as_ptr().wrapping_add(self.positions[n.start] * d), d);
            }
            let row = r.row - base;
            let positions = &self.positions[r.start..r.end];
            // The row's gradient: its only lookup's row read in place, or its lookups' rows summed in `sum`.
            let g: &[f32] = if let [p] = positions {
                &grads[p * d..(p + 1) * d]
            } else {
                for (j, &p) in positions.iter().enumerate() {
                    if ahead.lookups > 0
                        && let Some(&q) = positions.get(j + ahead.lookups)
                    {
                        hint(grads.as_ptr().wrapping_add(q * d), d);
                    }
                    let g = &grads[p * d..(p + 1) * d];
                    if j == 0 {
                        sum.copy_from_slice(g);
                    } else {
                        for (x, y) in sum.iter_mut().zip(g) {
                            *x += y;
                        }
                    }
                }
                &sum
            };
            for (x, y) in table[row * d..(row + 1) * d].iter_mut().zip(g) {
                *x += y;
            }
            for (x, y) in state[row * sp..(row + 1) * sp].iter_mut().zip(g) {
                *x += y;
            }
        }
    }

    /// One pass of the variant `ahead`, on `threads` threads.
    fn pass_threads(
        &self,
        table: &mut [f32],
        state: &mut [f32],
        grads: &[f32],
        ahead: Ahead,
        threads: usize,
    ) {
        if threads <= 1 || self.runs.len() < 2 {
            return self.pass(&self.runs, table, state, grads, ahead, 0);
        }
        // Contiguous runs of touched rows per thread; the table and state split at the rows between them.
        let per = self.runs.len().div_ceil(threads);
        std::thread::scope(|sc| {
            let (mut t, mut s, mut base) = (table, state, 0usize);
            let count = self.runs.len().div_ceil(per);
            for (k, chunk) in self.runs.chunks(per).enumerate() {
                let end_row = self
                    .runs
                    .get((k + 1) * per)
                    .map_or(t.len() / self.dim + base, |r| r.row);
                let (t0, t1) = t.split_at_mut((end_row - base) * self.dim);
                let (s0, s1) = s.split_at_mut((end_row - base) * self.per_row);
                let chunk: &[Run] = chunk;
                let mut work = move || self.pass(chunk, t0, s0, grads, ahead, base);
                if k + 1 == count {
                    work();
                } else {
                    sc.spawn(work);
                }
                (t, s, base) = (t1, s1, end_row);
            }
        });
    }

    /// The prefetch distances of the variants.
    pub const VARIANTS: [Ahead; 5] = [
        Ahead {
            rows: 0,
            lookups: 0,
        },
        Ahead {
            rows: 8,
            lookups: 0,
        },
        Ahead {
            rows: 32,
            lookups: 0,
        },
        Ahead {
            rows: 8,
            lookups: 8,
        },
        Ahead {
            rows: 32,
            lookups: 8,
        },
    ];

    /// Seconds one pass of the variant `ahead` takes on `threads` threads (for callers that interleave the
    /// variants with other work, so that each pass starts as cold as what it bounds).
    pub fn time_pass(
        &self,
        table: &mut [f32],
        state: &mut [f32],
        grads: &[f32],
        ahead: Ahead,
        threads: usize,
    ) -> f64 {
        let t0 = Instant::now();
        self.pass_threads(table, state, grads, ahead, threads);
        t0.elapsed().as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant and thread count adds each lookup's gradient row to its table row (and state) exactly once.
    #[test]
    fn passes_add_each_lookup_once() {
        let (rows, dim) = (50, 3);
        let ids = [4usize, 9, 4, 49, 0, 9, 9];
        let grads: Vec<f32> = (0..ids.len() * dim).map(|i| i as f32).collect();
        let mut want = vec![0.0f32; rows * dim];
        for (p, &r) in ids.iter().enumerate() {
            for j in 0..dim {
                want[r * dim + j] += grads[p * dim + j];
            }
        }
        for per_row in [1, dim] {
            let c = RowsCeiling::new(&ids, dim, per_row);
            assert_eq!(
                (c.rows(), c.bytes()),
                (4, 4 * (2 * dim + 2 * per_row) * 4 + 7 * 3 * 4)
            );
            for threads in [1, 2, 3] {
                for ahead in RowsCeiling::VARIANTS {
                    let mut table = vec![0.0f32; rows * dim];
                    let mut state = vec![0.0f32; rows * per_row];
                    c.pass_threads(&mut table, &mut state, &grads, ahead, threads);
                    assert_eq!(table, want, "{threads} {ahead:?}");
                    // Row-wise: column 0 of each row's sum; element-wise: the sums themselves.
                    let want_state: Vec<f32> = if per_row == 1 {
                        want.iter().step_by(dim).copied().collect()
                    } else {
                        want.clone()
                    };
                    assert_eq!(state, want_state, "{threads} {ahead:?}");
                }
            }
        }
    }
}
