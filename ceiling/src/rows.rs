//! The embedding step's memory ceiling: the same rows' traffic with trivially cheap arithmetic.
//!
//! An embedding step reads each lookup's gradient row, and reads and writes each touched table row and its state
//! (one value per row, or one per element). [`RowsCeiling`] moves exactly those bytes, in the same grouped order
//! (each touched row once, its lookups in position order; the order is given, its computation is not timed): a
//! row's lookups summed into one row (a row looked up once is read in place), then `w ← w + g` and `s ← s + g`
//! (row-wise: `s ← s + g₀`) — the least arithmetic those bytes allow. It shares no code with the crate: its own
//! loops, its own prefetch, its own threads. What the step may do to go faster, the ceiling does too, as variants
//! ([`RowsCeiling::VARIANTS`]) of which a caller takes the best:
//!
//! - prefetch: none; the table row and state some touched rows ahead; and, as well, the gradient rows some lookups
//!   ahead in grouped order, across rows (the step's own scheme), at several distances;
//! - vector width: each variant's loops compiled for the baseline target and for the widest this CPU has (AVX-512F,
//!   else AVX2);
//! - threads: a persistent team of its own (the caller is one), spinning between passes, taking chunks of touched
//!   rows from a shared cursor — as the step's threads do, so that neither thread start-up nor an uneven cut
//!   (Zipf ids put many lookups on a few rows) is charged to the ceiling alone.
//!
//! Each variant is timed one pass at a time ([`RowsCeiling::time_pass`]), so that a caller can interleave them with
//! what they bound.

use crate::Team;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A variant: prefetch distances and vector width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ahead {
    /// Touched rows ahead whose table row and state are prefetched (0: none).
    pub rows: usize,
    /// Lookups ahead, in grouped order across rows, whose gradient rows are prefetched (0: none).
    pub lookups: usize,
    /// Whether the loops run compiled for the widest vectors this CPU has (AVX-512F, else AVX2) rather than the
    /// baseline target. Where the CPU has neither, both forms run the baseline loops.
    pub wide: bool,
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

/// Prefetches the cache lines of `len` f32 from `p` (a hint), from the line that holds `p`.
#[inline(always)]
fn hint(p: *const f32, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let skew = p as usize % 64;
        let first = p.cast::<u8>().wrapping_sub(skew);
        for off in (0..len * 4 + skew).step_by(64) {
            // SAFETY: a prefetch never faults.
            unsafe {
                core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                    first.wrapping_add(off).cast(),
                )
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, len);
}

/// The memory one pass works on: the whole table and state (rows of distinct runs are disjoint) and the
/// gradients.
#[derive(Clone, Copy)]
struct Mem {
    table: *mut f32,
    state: *mut f32,
    grads: *const f32,
}
// SAFETY: a pass's threads write only the rows of the runs they take, which are distinct (each touched row is one
// run), and read the gradients, which nothing writes during the pass.
unsafe impl Send for Mem {}
// SAFETY: as for `Send`.
unsafe impl Sync for Mem {}

/// The persistent teams, one per thread count, kept for the process's life (measurement code); a team runs one
/// pass at a time (its lock).
fn team(threads: usize) -> Arc<Mutex<Team>> {
    static TEAMS: Mutex<Vec<(usize, Arc<Mutex<Team>>)>> = Mutex::new(Vec::new());
    let mut teams = TEAMS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, t)) = teams.iter().find(|(n, _)| *n == threads) {
        return t.clone();
    }
    let t = Arc::new(Mutex::new(Team::new(threads)));
    teams.push((threads, t.clone()));
    t
}

/// Touched rows a thread takes from the shared cursor at a time: about 8,192 elements of table.
fn chunk_rows(dim: usize) -> usize {
    (8192 / dim.max(1)).max(16)
}

/// The body of one pass over `runs` (the variant's loops, inlined into each width's entry point).
///
/// # Safety
/// `m` covers every row of `runs` (table `dim`, state `per_row` values a row) and every position's gradient row;
/// no other thread touches those rows during the call.
#[inline(always)]
unsafe fn body(c: &RowsCeiling, runs: &[Run], m: Mem, ahead: Ahead, sum: &mut [f32]) {
    let (d, sp) = (c.dim, c.per_row);
    // The lookups of these runs end here, in grouped order: the stream the gradient prefetch walks stops there.
    let Some(hi) = runs.last().map(|r| r.end) else {
        return;
    };
    for (i, r) in runs.iter().enumerate() {
        if ahead.rows > 0
            && let Some(n) = runs.get(i + ahead.rows)
        {
            hint(m.table.wrapping_add(n.row * d), d);
            hint(m.state.wrapping_add(n.row * sp), sp);
        }
        // SAFETY: the caller's contract: the row is this call's, the positions' gradient rows are in `m`.
        unsafe {
            let positions = &c.positions[r.start..r.end];
            let stream = |j: usize| {
                if ahead.lookups > 0 && j + ahead.lookups < hi {
                    hint(m.grads.add(c.positions[j + ahead.lookups] * d), d);
                }
            };
            // The row's gradient: its only lookup's row read in place, or its lookups' rows summed in `sum`.
            let g: &[f32] = if let [p] = positions {
                stream(r.start);
                std::slice::from_raw_parts(m.grads.add(p * d), d)
            } else {
                for (j, &p) in positions.iter().enumerate() {
                    stream(r.start + j);
                    let g = std::slice::from_raw_parts(m.grads.add(p * d), d);
                    if j == 0 {
                        sum.copy_from_slice(g);
                    } else {
                        for (x, y) in sum.iter_mut().zip(g) {
                            *x += y;
                        }
                    }
                }
                sum
            };
            let w = std::slice::from_raw_parts_mut(m.table.add(r.row * d), d);
            for (x, y) in w.iter_mut().zip(g) {
                *x += y;
            }
            let s = std::slice::from_raw_parts_mut(m.state.add(r.row * sp), sp);
            for (x, y) in s.iter_mut().zip(g) {
                *x += y;
            }
        }
    }
}

/// [`body`] for the baseline target.
///
/// # Safety
/// As [`body`].
unsafe fn body_base(c: &RowsCeiling, runs: &[Run], m: Mem, a: Ahead, sum: &mut [f32]) {
    // SAFETY: this function's contract.
    unsafe { body(c, runs, m, a, sum) }
}

/// [`body`] compiled for AVX2 and FMA.
///
/// # Safety
/// As [`body`], on a CPU with AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn body_avx2(c: &RowsCeiling, runs: &[Run], m: Mem, a: Ahead, sum: &mut [f32]) {
    // SAFETY: this function's contract.
    unsafe { body(c, runs, m, a, sum) }
}

/// [`body`] compiled for AVX-512F.
///
/// # Safety
/// As [`body`], on a CPU with AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn body_avx512(c: &RowsCeiling, runs: &[Run], m: Mem, a: Ahead, sum: &mut [f32]) {
    // SAFETY: this function's contract.
    unsafe { body(c, runs, m, a, sum) }
}

/// The entry point of the variant's width on this CPU.
type Body = unsafe fn(&RowsCeiling, &[Run], Mem, Ahead, &mut [f32]);

fn body_for(wide: bool) -> Body {
    #[cfg(target_arch = "x86_64")]
    if wide {
        if std::is_x86_feature_detected!("avx512f") {
            return body_avx512;
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return body_avx2;
        }
    }
    let _ = wide;
    body_base
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

    /// One pass of the variant `ahead` on `threads` threads: the caller and the team's others take chunks of
    /// touched rows from a shared cursor.
    ///
    /// # Panics
    /// If `table`, `state` or `grads` do not hold every touched row and lookup (measurement code: the callers
    /// check their inputs first).
    fn pass_threads(
        &self,
        table: &mut [f32],
        state: &mut [f32],
        grads: &[f32],
        ahead: Ahead,
        threads: usize,
    ) {
        let (d, sp) = (self.dim, self.per_row);
        let max_row = self.runs.last().map_or(0, |r| r.row + 1);
        assert!(table.len() >= max_row * d && state.len() >= max_row * sp);
        // Positions are 0..lookups, one per lookup: every gradient row a pass reads lies below this.
        assert!(self.positions.len() * d <= grads.len());
        let m = Mem {
            table: table.as_mut_ptr(),
            state: state.as_mut_ptr(),
            grads: grads.as_ptr(),
        };
        let f = body_for(ahead.wide);
        let chunk = chunk_rows(d);
        let cursor = AtomicUsize::new(0);
        let work = |_: usize| {
            let mut sum = vec![0.0f32; d];
            loop {
                let at = cursor.fetch_add(chunk, Ordering::Relaxed);
                if at >= self.runs.len() {
                    break;
                }
                let runs = &self.runs[at..(at + chunk).min(self.runs.len())];
                // SAFETY: the rows of `runs` are this chunk's alone (the cursor hands each chunk out once, and each
                // touched row is one run); the asserts above keep every row and gradient inside the buffers; `f`
                // is an entry point this CPU supports (`body_for`).
                unsafe { f(self, runs, m, ahead, &mut sum) };
            }
        };
        if threads <= 1 {
            work(0);
        } else {
            let team = team(threads);
            team.lock().unwrap_or_else(|e| e.into_inner()).run(&work);
        }
    }

    /// The variants: prefetch distances (rows ahead / lookups ahead) at both widths.
    pub const VARIANTS: [Ahead; 8] = [
        Ahead {
            rows: 0,
            lookups: 0,
            wide: false,
        },
        Ahead {
            rows: 0,
            lookups: 0,
            wide: true,
        },
        Ahead {
            rows: 8,
            lookups: 8,
            wide: false,
        },
        Ahead {
            rows: 8,
            lookups: 8,
            wide: true,
        },
        Ahead {
            rows: 16,
            lookups: 16,
            wide: false,
        },
        Ahead {
            rows: 16,
            lookups: 16,
            wide: true,
        },
        Ahead {
            rows: 32,
            lookups: 0,
            wide: false,
        },
        Ahead {
            rows: 32,
            lookups: 0,
            wide: true,
        },
    ];

    /// Seconds one pass of the variant `ahead` takes on `threads` threads (for callers that interleave the
    /// variants with other work, so that each pass starts as cold as what it bounds). The team of `threads` is
    /// started on first use and kept.
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
