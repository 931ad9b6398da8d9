//! Running one step over many tensors: split by element count, not by tensor.
//!
//! The tensors of a step are seen as one sequence of elements. A [`Seg`] is a contiguous run of it: an optional
//! piece of a tensor, whole tensors, and an optional piece of another. Splitting a `Seg` in two (at a point that is
//! a multiple of [`ALIGN`] from its tensor's start, so only a tensor's last piece has a kernel tail) needs no
//! allocation, only re-borrows. A parallel step is cut into one piece per thread: the calling thread runs the
//! first itself, one helper task on the pool runs the rest (split further with `rayon::join`, one piece per
//! remaining thread), and the caller spins until the helper is done instead of sleeping, so that steps of a few
//! tens of microseconds still gain from threads. Small tensors end up batched in one piece, huge ones split.

use crate::functional::StateSlice;
use adagrad_kernels::{CopyOut, Float, Grad, Hyper, Kernels, Precision};
use rayon::ThreadPool;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Split points within a tensor are multiples of this many elements (the widest unrolled body: 4 × 16 lanes).
pub const ALIGN: usize = 64;

/// A piece of one tensor, with its copy-out piece when there is one.
pub(crate) struct Part<'x, T, G, O> {
    p: &'x mut [T],
    g: &'x [G],
    s: &'x mut [T],
    out: Option<&'x mut [O]>,
}

impl<'x, T, G, O> Part<'x, T, G, O> {
    fn len(&self) -> usize {
        self.p.len()
    }

    fn split_at(self, at: usize) -> (Self, Self) {
        let (p0, p1) = self.p.split_at_mut(at);
        let (g0, g1) = self.g.split_at(at);
        let (s0, s1) = self.s.split_at_mut(at);
        let (o0, o1) = match self.out {
            Some(o) => {
                let (a, b) = o.split_at_mut(at);
                (Some(a), Some(b))
            }
            None => (None, None),
        };
        (
            Part {
                p: p0,
                g: g0,
                s: s0,
                out: o0,
            },
            Part {
                p: p1,
                g: g1,
                s: s1,
                out: o1,
            },
        )
    }
}

/// A contiguous run of a step's elements: `head`, then whole tensors, then `tail`. `out` is empty when the step
/// has no copy-out, else it has one slice per tensor.
pub(crate) struct Seg<'x, 'b, 'c, T: Float, G, O, S> {
    head: Option<Part<'x, T, G, O>>,
    p: &'x mut [&'b mut [T]],
    g: &'x [&'x [G]],
    s: &'x mut [S],
    out: &'x mut [&'c mut [O]],
    tail: Option<Part<'x, T, G, O>>,
    len: usize,
}

/// Rounds a split point inside a tensor down to a multiple of [`ALIGN`].
fn align(at: usize) -> usize {
    at - at % ALIGN
}

impl<'x, 'b, 'c, T: Float, G: Grad<T>, O: CopyOut<T>, S: StateSlice<T>>
    Seg<'x, 'b, 'c, T, G, O, S>
{
    /// Every tensor, whole. The caller has checked that the counts and lengths agree.
    pub(crate) fn new(
        p: &'x mut [&'b mut [T]],
        g: &'x [&'x [G]],
        s: &'x mut [S],
        out: &'x mut [&'c mut [O]],
    ) -> Self {
        let len = s.iter().map(|s| s.len()).sum();
        Seg {
            head: None,
            p,
            g,
            s,
            out,
            tail: None,
            len,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Splits into `[..≈at]` and the rest; the point moves down to an aligned offset within its tensor.
    fn split(self, at: usize) -> (Self, Self) {
        let Seg {
            head,
            p,
            g,
            s,
            out,
            tail,
            len,
        } = self;
        let head_len = head.as_ref().map_or(0, Part::len);
        if at < head_len {
            let (h0, h1) = head.expect("at < head_len").split_at(align(at));
            let left_len = h0.len();
            let left = Seg {
                head: Some(h0),
                p: &mut [],
                g: &[],
                s: &mut [],
                out: &mut [],
                tail: None,
                len: left_len,
            };
            let right = Seg {
                head: Some(h1),
                p,
                g,
                s,
                out,
                tail,
                len: len - left_len,
            };
            return (left, right);
        }
        let mut before = head_len;
        let mut i = 0;
        while i < s.len() && before + s[i].len() <= at {
            before += s[i].len();
            i += 1;
        }
        if i == s.len() {
            // The point is in the tail.
            let (t0, t1) = tail
                .expect("split point beyond the segment")
                .split_at(align(at - before));
            let left_len = before + t0.len();
            let left = Seg {
                head,
                p,
                g,
                s,
                out,
                tail: Some(t0),
                len: left_len,
            };
            let right = Seg {
                head: Some(t1),
                p: &mut [],
                g: &[],
                s: &mut [],
                out: &mut [],
                tail: None,
                len: len - left_len,
            };
            return (left, right);
        }
        // The point is in whole tensor i: it becomes the left's tail and the right's head.
        let (p0, p1) = p.split_at_mut(i);
        let (g0, g1) = g.split_at(i);
        let (s0, s1) = s.split_at_mut(i);
        let (pi, p1) = p1.split_first_mut().expect("i < len");
        let (gi, g1) = g1.split_first().expect("i < len");
        let (si, s1) = s1.split_first_mut().expect("i < len");
        let (o0, oi, o1) = if out.is_empty() {
            (&mut [][..], None, &mut [][..])
        } else {
            let (o0, o1) = out.split_at_mut(i);
            let (oi, o1) = o1.split_first_mut().expect("one copy-out slice per tensor");
            (o0, Some(&mut **oi), o1)
        };
        let whole = Part {
            p: pi,
            g: gi,
            s: si.slice(),
            out: oi,
        };
        let (m0, m1) = whole.split_at(align(at - before));
        let left_len = before + m0.len();
        let left = Seg {
            head,
            p: p0,
            g: g0,
            s: s0,
            out: o0,
            tail: Some(m0),
            len: left_len,
        };
        let right = Seg {
            head: Some(m1),
            p: p1,
            g: g1,
            s: s1,
            out: o1,
            tail,
            len: len - left_len,
        };
        (left, right)
    }

    /// Runs every piece on this thread.
    fn run_here(self, k: &Kernels, h: &Hyper<T>, pr: Precision) {
        let Seg {
            head,
            p,
            g,
            s,
            out,
            tail,
            ..
        } = self;
        let one = |part: Part<'_, T, G, O>| {
            k.update_with(part.p, part.g, part.s, part.out, h, pr)
                .expect("lengths checked before the step");
        };
        if let Some(part) = head {
            one(part);
        }
        let mut outs = out.iter_mut();
        for ((p, g), s) in p.iter_mut().zip(g).zip(s.iter_mut()) {
            one(Part {
                p,
                g,
                s: s.slice(),
                out: outs.next().map(|o| &mut **o),
            });
        }
        if let Some(part) = tail {
            one(part);
        }
    }

    /// Runs the step on `threads` threads (the caller and `threads − 1` of `pool`'s), in pieces of at least
    /// `min_piece` elements; on the calling thread alone when there is no pool, one thread, or one piece.
    pub(crate) fn run(
        self,
        k: &Kernels,
        h: &Hyper<T>,
        pr: Precision,
        pool: Option<&ThreadPool>,
        threads: usize,
        min_piece: usize,
    ) {
        run_pieces(self, pool, threads, min_piece, &|piece: Self| {
            piece.run_here(k, h, pr)
        });
    }
}

impl<'x, 'b, 'c, T: Float, G: Grad<T>, O: CopyOut<T>, S: StateSlice<T>> Split
    for Seg<'x, 'b, 'c, T, G, O, S>
{
    fn len(&self) -> usize {
        self.len
    }
    fn split(self, at: usize) -> (Self, Self) {
        Seg::split(self, at)
    }
}

/// Work that can be cut in two near a given point (a step's elements, an embedding step's rows).
pub(crate) trait Split: Sized + Send {
    /// The amount of work (what split points count).
    fn len(&self) -> usize;
    /// `[..≈at]` and the rest.
    fn split(self, at: usize) -> (Self, Self);
}

/// Runs as `pieces` pieces of about equal length, each on `rayon::join`, each by `leaf`.
fn run_split<S: Split, F: Fn(S) + Sync>(work: S, pieces: usize, leaf: &F) {
    if pieces <= 1 {
        return leaf(work);
    }
    let left = pieces / 2;
    let at = (work.len() as u128 * left as u128 / pieces as u128) as usize;
    let (l, r) = work.split(at);
    rayon::join(
        || run_split(l, left, leaf),
        || run_split(r, pieces - left, leaf),
    );
}

/// Runs `work` on `threads` threads (the caller and `threads − 1` of `pool`'s) in pieces of at least `min_piece`,
/// `leaf` on each: the caller takes the first piece and spins until the pool's are done. On the calling thread
/// alone when there is no pool, one thread, or one piece.
pub(crate) fn run_pieces<S: Split, F: Fn(S) + Sync>(
    work: S,
    pool: Option<&ThreadPool>,
    threads: usize,
    min_piece: usize,
    leaf: &F,
) {
    let pieces = threads.min(work.len() / min_piece.max(1));
    let Some(pool) = pool.filter(|_| pieces > 1) else {
        return leaf(work);
    };
    let share = work.len() / pieces;
    let (mine, rest) = work.split(share);
    if mine.len() == 0 || rest.len() == 0 {
        // Nothing to split at an allowed point (one short tensor).
        leaf(mine);
        return leaf(rest);
    }
    let done = AtomicBool::new(false);
    let seen = STARTED.fetch_add(1, Ordering::AcqRel) + 1;
    pool.in_place_scope(|scope| {
        scope.spawn(|_| {
            {
                let _done = SetOnDrop(&done);
                run_split(rest, pieces - 1, leaf);
            }
            // This crate's helpers stay awake a while for the next step (a detached task: the caller is not held
            // up). A caller's own pool is left alone: its threads may have other work.
            if OURS.with(Cell::get) {
                rayon::spawn_broadcast(move |_| linger(seen));
            }
        });
        leaf(mine);
        wait(&done);
    });
}

/// Parallel steps started so far, on any pool: a lingering helper returns as soon as this moves.
static STARTED: AtomicU64 = AtomicU64::new(0);

/// How long a helper thread stays awake after a parallel step, waiting for the next one, before it goes back to
/// rayon (which sleeps after a few dozen yields). Waking a sleeping thread costs tens of microseconds on these
/// VMs, paid at every step of a loop whose steps come a little further apart than rayon's own spinning lasts (a
/// Python loop over a step). Short on purpose: whatever runs next on the machine (a training loop's forward pass
/// on torch's threads) shares the CPUs with a lingering helper, so it spins (`pause`) for at most this long.
/// A caller with a longer preparation ahead wakes the helpers itself ([`Executor::wake`](crate::Executor::wake)).
pub const LINGER: Duration = Duration::from_micros(200);

/// Spins (with `pause`, never holding a lock) until another parallel step starts or `LINGER` has passed.
fn linger(seen: u64) {
    let until = Instant::now() + LINGER;
    let mut spins = 0u32;
    while STARTED.load(Ordering::Acquire) == seen {
        std::hint::spin_loop();
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(256) && Instant::now() >= until {
            return;
        }
    }
}

thread_local! {
    /// Set on the threads of this crate's helper pools.
    static OURS: Cell<bool> = const { Cell::new(false) };
}

/// Wakes `pool`'s threads now, so that a parallel step starting within [`LINGER`] finds them running instead of
/// paying their wake-up: for a caller about to spend a while preparing a step (reading many tensors).
pub(crate) fn wake(pool: &ThreadPool) {
    let seen = STARTED.load(Ordering::Acquire);
    pool.spawn_broadcast(move |_| linger(seen));
}

/// Sets the flag when dropped: on completion and, should the task unwind, then too, so the caller never waits
/// forever.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Waits for the helper: spinning first (a step's pieces finish within microseconds of each other, and a sleeping
/// caller would pay a wake-up on every step), yielding the CPU after that.
fn wait(done: &AtomicBool) {
    let mut spins = 0u32;
    while !done.load(Ordering::Acquire) {
        if spins < SPINS {
            std::hint::spin_loop();
            spins += 1;
        } else {
            std::thread::yield_now();
        }
    }
}

/// Spin iterations before the caller starts yielding (tens of microseconds to a few milliseconds, depending on
/// the CPU's pause latency).
const SPINS: u32 = 1 << 15;

/// The helper pool for `threads` threads in all (`threads − 1` workers; the caller is the last), built once per
/// count and shared. `None` for one thread or fewer, or if the threads cannot be started (the step then runs
/// on the calling thread).
pub(crate) fn helpers(threads: usize) -> Option<Arc<ThreadPool>> {
    /// The pools built so far, by thread count.
    type Pools = Mutex<Vec<(usize, Arc<ThreadPool>)>>;
    static POOLS: OnceLock<Pools> = OnceLock::new();
    if threads <= 1 {
        return None;
    }
    let pools = POOLS.get_or_init(|| Mutex::new(Vec::new()));
    let mut pools = pools.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = pools.iter().find(|(n, _)| *n == threads) {
        return Some(p.clone());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads - 1)
        .thread_name(|i| format!("adagrad-{i}"))
        .start_handler(|_| OURS.with(|o| o.set(true)))
        .build()
        .ok()?;
    let pool = Arc::new(pool);
    pools.push((threads, pool.clone()));
    Some(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Calls `f` with a segment over zero-filled tensors of the given lengths.
    fn with_seg<R>(
        lens: &[usize],
        f: impl FnOnce(Seg<'_, '_, '_, f32, f32, adagrad_kernels::NoCopy, &mut [f32]>) -> R,
    ) -> R {
        let mut p: Vec<Vec<f32>> = lens.iter().map(|&n| vec![0.0; n]).collect();
        let g: Vec<Vec<f32>> = lens.iter().map(|&n| vec![0.0; n]).collect();
        let mut st: Vec<Vec<f32>> = lens.iter().map(|&n| vec![0.0; n]).collect();
        let mut ps: Vec<&mut [f32]> = p.iter_mut().map(|x| x.as_mut_slice()).collect();
        let gs: Vec<&[f32]> = g.iter().map(|x| x.as_slice()).collect();
        let mut ss: Vec<&mut [f32]> = st.iter_mut().map(|x| x.as_mut_slice()).collect();
        f(Seg::new(&mut ps, &gs, &mut ss, &mut []))
    }

    /// Splits land where they should: at the aligned point inside the head, a whole tensor, or the tail, so that
    /// pieces are as even as alignment allows (the bits never depend on it; the balance does).
    #[test]
    fn splits_land_on_the_aligned_point_in_head_tensor_and_tail() {
        with_seg(&[100, 300, 50], |seg| {
            assert_eq!(seg.len(), 450);
            // In whole tensor 1, 150 elements in: aligned down to 128.
            let (l, r) = seg.split(250);
            assert_eq!((l.len(), r.len()), (228, 222));
            // The left part's tail is tensor 1's first 128: a point in it (100 in) aligns to 64.
            let (ll, lr) = l.split(200);
            assert_eq!((ll.len(), lr.len()), (164, 64));
            // The right part's head is tensor 1's last 172: a point in it aligns down to 64.
            let (rl, rr) = r.split(100);
            assert_eq!((rl.len(), rr.len()), (64, 158));
            // A point exactly at the head's end takes the whole head; in tensor 2, 22 in, aligns to 0.
            let (a, b) = rr.split(108);
            assert_eq!((a.len(), b.len()), (108, 50));
            let (rrl, _) = Seg::<f32, f32, adagrad_kernels::NoCopy, &mut [f32]>::split(b, 22);
            assert_eq!(rrl.len(), 0);
        });
    }

    /// Split points inside a tensor fall on multiples of ALIGN, so that only a tensor's last piece has a tail.
    #[test]
    fn split_points_are_aligned_down() {
        for (at, want) in [
            (0, 0),
            (1, 0),
            (63, 0),
            (64, 64),
            (65, 64),
            (130, 128),
            (1000, 960),
        ] {
            assert_eq!(align(at), want, "{at}");
        }
    }

    /// Where each piece of a step ran: (elements, rayon worker index or `None` for the calling thread), in
    /// the order they were recorded.
    fn pieces(lens: &[usize], threads: usize, min_piece: usize) -> Vec<(usize, Option<usize>)> {
        let pool = helpers(threads);
        let seen = Mutex::new(Vec::new());
        with_seg(lens, |seg| {
            run_pieces(seg, pool.as_deref(), threads, min_piece, &|piece| {
                let me = rayon::current_thread_index();
                seen.lock().unwrap().push((piece.len(), me));
            })
        });
        seen.into_inner().unwrap()
    }

    /// A step is cut into one piece per thread, as even as alignment allows; the caller runs exactly one of
    /// them and the pool's workers the rest.
    #[test]
    fn pieces_are_balanced_one_per_thread() {
        for (lens, threads) in [
            (vec![9000usize], 2),
            (vec![1000, 3000, 5000], 3),
            (vec![70_000], 4),
            (vec![10, 20_000, 7, 30_000, 64], 5),
        ] {
            let total: usize = lens.iter().sum();
            let got = pieces(&lens, threads, 64);
            assert_eq!(got.len(), threads, "{lens:?} on {threads}");
            assert_eq!(got.iter().map(|p| p.0).sum::<usize>(), total);
            let even = total / threads;
            for &(len, _) in &got {
                // Each nested split moves its point down by less than ALIGN.
                assert!(
                    len.abs_diff(even) < ALIGN * threads,
                    "{lens:?}/{threads}: piece {len}, even {even}"
                );
            }
            assert_eq!(got.iter().filter(|p| p.1.is_none()).count(), 1, "{got:?}");
        }
    }

    /// A step too small to split at an aligned point runs whole on the calling thread, as does one below
    /// `threads × min_piece`.
    #[test]
    fn unsplittable_steps_stay_on_the_caller() {
        let got = pieces(&[100], 2, 1);
        assert!(got.iter().all(|p| p.1.is_none()), "{got:?}");
        assert_eq!(got.iter().map(|p| p.0).sum::<usize>(), 100);
        let got = pieces(&[1000], 4, 512);
        assert_eq!(got, vec![(1000, None)]);
    }

    /// The crate's pool for n threads has n − 1 workers (the caller is the n-th); none for one thread.
    #[test]
    fn helper_pools_have_one_worker_fewer_than_threads() {
        assert!(helpers(1).is_none());
        assert!(helpers(0).is_none());
        for n in [2, 3, 5] {
            assert_eq!(helpers(n).unwrap().current_num_threads(), n - 1);
        }
    }
}
