//! Running one step over many tensors: split by element count, not by tensor, and run in chunks from a shared
//! cursor.
//!
//! The tensors of a step are seen as one sequence of elements. A [`Seg`] is a contiguous run of it: an optional
//! piece of a tensor, whole tensors, and an optional piece of another. Splitting a `Seg` in two (at a point that is
//! a multiple of [`ALIGN`] from its tensor's start, so only a tensor's last piece has a kernel tail) needs no
//! allocation, only re-borrows. A parallel step ([`run_chunks`]) is taken chunk by chunk from the front of what is
//! left: the calling thread starts at once, the pool's helpers join when they wake, and the caller never waits for
//! a helper that has not started — only for a chunk one is running. Small tensors end up batched in one chunk,
//! huge ones cut into many.

use crate::{AlignedBuf, HostTeam};
use adagrad_kernels::{CopyOut, Float, Grad, Hyper, Kernels, Precision};
use rayon::ThreadPool;
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Accumulator storage a [`Seg`] can run on: the caller's slices or the optimizer's own buffers. (Here, with the
/// segments that split it, so that this module depends on nothing above it.)
pub(crate) trait StateSlice<T>: Send {
    fn len(&self) -> usize;
    fn slice(&mut self) -> &mut [T];
}

impl<T: Float> StateSlice<T> for &mut [T] {
    fn len(&self) -> usize {
        <[T]>::len(self)
    }
    fn slice(&mut self) -> &mut [T] {
        self
    }
}

impl<T: Float> StateSlice<T> for AlignedBuf<T> {
    fn len(&self) -> usize {
        <[T]>::len(self)
    }
    fn slice(&mut self) -> &mut [T] {
        self
    }
}

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

    /// Runs the step on `team` (the calling thread alone when `None`), in chunks of `grain` elements.
    pub(crate) fn run(
        self,
        k: &Kernels,
        h: &Hyper<T>,
        pr: Precision,
        team: Option<Team<'_>>,
        grain: Grain,
    ) {
        run_chunks(self, team, grain, &|piece: Self| piece.run_here(k, h, pr));
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

/// The threads a parallel run may use: the caller and up to `threads − 1` of `pool`'s, and how long this crate's
/// helpers stay awake after it ([`crate::Tuning::linger`]).
#[derive(Clone, Copy)]
pub(crate) struct Team<'p> {
    pub(crate) crew: CrewRef<'p>,
    pub(crate) threads: usize,
    pub(crate) linger: Duration,
}

/// Where an executor's helper threads come from.
#[derive(Clone)]
pub(crate) enum Crew {
    /// A rayon pool: this crate's own (one per thread count) or a caller's.
    Pool(Arc<ThreadPool>),
    /// The host program's team.
    Host(Arc<dyn HostTeam>),
}

impl std::fmt::Debug for Crew {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Crew::Pool(p) => write!(f, "Pool({} threads)", p.current_num_threads()),
            Crew::Host(h) => write!(f, "Host({}, {} threads)", h.name(), h.threads()),
        }
    }
}

/// A [`Crew`], borrowed for one run.
#[derive(Clone, Copy)]
pub(crate) enum CrewRef<'p> {
    Pool(&'p ThreadPool),
    Host(&'p dyn HostTeam),
}

/// How large a run's chunks are, in units of [`Split::len`]: guided, as OpenMP's `schedule(guided)` — each chunk a
/// thread's share of what is left, so the first chunks are large (few chunks to take) and the last ones small (the
/// threads finish together); never smaller than `min` (a chunk must pay for taking it) and, above that,
/// never larger than `max` (what the caller may have to wait for, should a helper be descheduled in the middle of a
/// chunk).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Grain {
    pub(crate) min: usize,
    pub(crate) max: usize,
}

impl Grain {
    /// Chunks of exactly `n` units.
    pub(crate) fn fixed(n: usize) -> Grain {
        Grain { min: n, max: n }
    }

    /// The next chunk's size when `left` units are left for `threads` threads.
    fn size(self, left: usize, threads: usize) -> usize {
        (left / threads.max(1)).min(self.max).max(self.min).max(1)
    }
}

/// The largest chunk of a dense step, in f32 elements (an f64 element counts as four): 262,144 elements are 5 MB
/// of the step's five streams, about 100 µs on one core.
pub(crate) const MAX_CHUNK: usize = 1 << 18;

/// Runs `work` in chunks of [`Grain`] units (of [`Split::len`]), each by `leaf`, taken in order from a shared
/// cursor: the calling thread starts at once and takes chunk after chunk; up to `threads − 1` of the team's threads
/// join whenever they wake and take the chunks still left. When none are left the caller waits only for chunks a
/// helper is running, never for a helper that has not started (one that wakes later finds nothing to do and
/// returns). On the calling thread alone, as one piece, when there is no team, one thread, or one chunk.
///
/// Which thread runs which chunk changes no result: chunks are cut where `work` splits (for a step: aligned
/// points), whichever thread takes them.
pub(crate) fn run_chunks<S: Split, F: Fn(S) + Sync>(
    work: S,
    team: Option<Team<'_>>,
    grain: Grain,
    leaf: &F,
) {
    let Some(Team {
        crew,
        threads,
        linger: stay,
    }) = team.filter(|t| t.threads > 1)
    else {
        return leaf(work);
    };
    let rest = Mutex::new(Some(work));
    // The first chunk is cut before anyone is woken: a step of one chunk (no larger than the grain, or with no
    // aligned point inside it) runs whole on the calling thread, waking no helper. Otherwise the first chunk goes
    // to whoever arrives first.
    let first = next(&rest, grain, threads);
    if rest.lock().unwrap_or_else(|e| e.into_inner()).is_none() {
        return first.into_iter().for_each(leaf);
    }
    let first = Mutex::new(first);
    let job = || {
        let head = first.lock().unwrap_or_else(|e| e.into_inner()).take();
        for chunk in head
            .into_iter()
            .chain(std::iter::from_fn(|| next(&rest, grain, threads)))
        {
            leaf(chunk);
        }
    };
    let pool = match crew {
        CrewRef::Pool(pool) => pool,
        CrewRef::Host(host) => {
            // The host's team runs the job on its threads and returns when all of them are done; whatever it
            // left (a team of one, or a team that ran nothing) the caller finishes.
            host.run(threads, &job);
            return job();
        }
    };
    let meeting = Meeting::open(&job, threads - 1);
    let seen = STARTED.fetch_add(1, Ordering::AcqRel) + 1;
    let helper = Arc::clone(&meeting);
    pool.spawn_broadcast(move |_| {
        helper.join();
        // This crate's helpers may stay awake a while for the next run; a caller's own pool is left alone (its
        // threads may have other work).
        if OURS.with(Cell::get) {
            linger(seen, stay);
        }
    });
    // Closed and waited for on every way out of this function, an unwinding `leaf` included: no helper may
    // still run `job` once it is gone.
    let _close = Close(&meeting);
    job();
}

/// The next chunk of what is left (its first [`Grain::size`] units; the whole rest when it is no longer, or when
/// it cannot be cut there).
fn next<S: Split>(rest: &Mutex<Option<S>>, grain: Grain, threads: usize) -> Option<S> {
    let mut rest = rest.lock().unwrap_or_else(|e| e.into_inner());
    let work = rest.take()?;
    let size = grain.size(work.len(), threads);
    if work.len() <= size {
        return Some(work);
    }
    let (chunk, more) = work.split(size);
    if chunk.len() == 0 {
        return Some(more);
    }
    *rest = Some(more);
    Some(chunk)
}

/// Where the threads of one parallel run meet: the job (the caller's closure, which takes chunks until none are
/// left) and who is running it. Helpers hold it through an `Arc` and may start after the run is over; they then
/// find it closed and never touch the job.
struct Meeting {
    /// The caller's job, its lifetime erased: called only while `state` says the meeting is open, and the caller
    /// does not return (or unwind) past the job before every helper inside has left (see [`Close`]).
    job: *const (dyn Fn() + Sync),
    /// [`CLOSED`], plus 2 for each helper inside the job.
    state: AtomicUsize,
    /// Helpers that may still join (a caller's pool may have more threads than the step uses).
    seats: AtomicUsize,
}

/// The bit of [`Meeting::state`] set when the caller has closed the meeting.
const CLOSED: usize = 1;

// SAFETY: the job pointer is only dereferenced by `Meeting::join`, between entering an open meeting and leaving
// it, while the caller keeps the job alive (it waits in `Close::drop` until no helper is inside); the job is
// `Sync`, so calling it from several threads at once is allowed.
unsafe impl Send for Meeting {}
// SAFETY: as for `Send`; every other field is an atomic or plain data.
unsafe impl Sync for Meeting {}

impl Meeting {
    fn open<'j>(job: &'j (dyn Fn() + Sync + 'j), seats: usize) -> Arc<Meeting> {
        let job: *const (dyn Fn() + Sync + 'j) = job;
        // SAFETY: only the lifetime changes (the same fat pointer); `Meeting::job` says when it may be used.
        let job = unsafe {
            std::mem::transmute::<*const (dyn Fn() + Sync + 'j), *const (dyn Fn() + Sync)>(job)
        };
        Arc::new(Meeting {
            job,
            state: AtomicUsize::new(0),
            seats: AtomicUsize::new(seats),
        })
    }

    /// A helper's part: takes a seat, enters if the meeting is still open, runs the job, leaves.
    fn join(&self) {
        if self
            .seats
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| s.checked_sub(1))
            .is_err()
        {
            return;
        }
        let entered = self.state.fetch_add(2, Ordering::AcqRel);
        let _leave = Leave(&self.state);
        if entered & CLOSED == 0 {
            // SAFETY: the meeting was open when this helper entered, so the caller is still inside
            // `run_chunks` and keeps the job alive until this helper has left (`Close::drop` waits for it).
            unsafe { (*self.job)() };
        }
    }
}

/// Leaves a meeting when dropped (also should the job unwind).
struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(2, Ordering::AcqRel);
    }
}

/// The caller's side: closes the meeting when dropped and waits until no helper is inside — spinning briefly (a
/// helper's last chunk ends within microseconds of the caller's), then yielding its CPU, so that a helper that
/// shares it (or the host's threads) can run.
struct Close<'a>(&'a Meeting);

impl Drop for Close<'_> {
    fn drop(&mut self) {
        let state = &self.0.state;
        let mut inside = state.fetch_or(CLOSED, Ordering::AcqRel) >> 1;
        let mut spins = 0u32;
        while inside > 0 {
            pause(&mut spins);
            inside = state.load(Ordering::Acquire) >> 1;
        }
    }
}

/// One round of waiting, for a thread that waits on another's progress (the closing caller, a lingering helper):
/// a `pause` for the first [`SPINS`] rounds, yielding the CPU after that. `spins` counts the rounds.
fn pause(spins: &mut u32) {
    if *spins < SPINS {
        std::hint::spin_loop();
        *spins += 1;
    } else {
        std::thread::yield_now();
    }
}

/// Spin iterations before a waiting thread starts yielding (a few microseconds: the chunks a helper may still be
/// running are short).
const SPINS: u32 = 1 << 10;

/// Parallel steps started so far, on any pool: a lingering helper returns as soon as this moves.
static STARTED: AtomicU64 = AtomicU64::new(0);

/// How long [`wake`](crate::Executor::wake) keeps the helpers awake, waiting for the step that follows.
pub const LINGER: Duration = Duration::from_micros(200);

/// Stays awake until another parallel run starts or `time` has passed: spinning (`pause`) for the first few
/// microseconds, yielding the CPU after that, so that the host's threads (a training loop's next forward pass)
/// run first whenever they want this CPU.
fn linger(seen: u64, time: Duration) {
    if time.is_zero() {
        return;
    }
    let until = Instant::now() + time;
    let mut spins = 0u32;
    while STARTED.load(Ordering::Acquire) == seen {
        pause(&mut spins);
        if spins >= SPINS && Instant::now() >= until {
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
    pool.spawn_broadcast(move |_| linger(seen, LINGER));
}

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

    /// A team of `threads` on `pool`, with no lingering.
    fn team(pool: &ThreadPool, threads: usize) -> Option<Team<'_>> {
        Some(Team {
            crew: CrewRef::Pool(pool),
            threads,
            linger: Duration::ZERO,
        })
    }

    /// Where each chunk of a step ran: (elements, rayon worker index or `None` for the calling thread), in the
    /// order they were taken.
    fn chunks(lens: &[usize], threads: usize, grain: Grain) -> Vec<(usize, Option<usize>)> {
        let pool = helpers(threads);
        let seen = Mutex::new(Vec::new());
        with_seg(lens, |seg| {
            let team = pool.as_deref().and_then(|p| team(p, threads));
            run_chunks(seg, team, grain, &|piece| {
                let me = rayon::current_thread_index();
                seen.lock().unwrap().push((piece.len(), me));
            })
        });
        seen.into_inner().unwrap()
    }

    /// A step is cut into chunks taken from the front: every element exactly once, each chunk no larger than
    /// its guided size (moved down to an aligned point, or ending at a tensor's end). (Who takes them is a race:
    /// a helper may take every chunk before the caller's first.)
    #[test]
    fn chunks_cover_the_step_in_guided_pieces() {
        for (lens, threads, grain) in [
            (vec![9000usize], 2, Grain::fixed(1024)),
            (
                vec![1000, 3000, 5000],
                3,
                Grain {
                    min: 640,
                    max: 2048,
                },
            ),
            (
                vec![70_000],
                4,
                Grain {
                    min: 1024,
                    max: 8192,
                },
            ),
            (
                vec![10, 20_000, 7, 30_000, 64],
                5,
                Grain {
                    min: 4096,
                    max: 1 << 16,
                },
            ),
        ] {
            let total: usize = lens.iter().sum();
            let got = chunks(&lens, threads, grain);
            assert_eq!(got.iter().map(|p| p.0).sum::<usize>(), total, "{lens:?}");
            assert!(got.len() >= total / grain.max, "{lens:?}: {got:?}");
            let mut left = total;
            for &(len, _) in &got {
                assert!(
                    len > 0 && len <= grain.size(left, threads),
                    "{lens:?}/{grain:?}: chunk {len} of {left}"
                );
                left -= len;
            }
        }
    }

    /// Guided sizes: a thread's share of what is left, at least `min`, at most `max` unless `min` is larger, and
    /// never 0.
    #[test]
    fn guided_sizes_shrink_with_what_is_left_within_bounds() {
        let g = Grain {
            min: 1024,
            max: 1 << 16,
        };
        assert_eq!(g.size(1 << 16, 2), 1 << 15);
        assert_eq!(g.size(1 << 24, 2), 1 << 16);
        assert_eq!(g.size(1 << 18, 8), 1 << 15);
        assert_eq!(g.size(3000, 2), 1500);
        assert_eq!(g.size(1500, 2), 1024);
        assert_eq!(
            Grain {
                min: 1 << 17,
                max: 1 << 16
            }
            .size(1 << 20, 2),
            1 << 17
        );
        assert_eq!(Grain::fixed(0).size(100, 8), 1);
        assert_eq!(Grain::fixed(7).size(1 << 20, 3), 7);
        assert_eq!(Grain { min: 1, max: 1000 }.size(100, 0), 100);
    }

    /// A step too small to cut at an aligned point runs whole on the calling thread (no helper is woken to race
    /// the caller for it: many runs, none on a helper), as does one of at most one chunk, or one without a pool.
    #[test]
    fn unsplittable_steps_stay_on_the_caller() {
        for _ in 0..200 {
            let got = chunks(&[100], 2, Grain::fixed(1));
            assert_eq!(got, vec![(100, None)]);
        }
        assert_eq!(chunks(&[1000], 4, Grain::fixed(1000)), vec![(1000, None)]);
        assert_eq!(chunks(&[5000], 1, Grain::fixed(64)), vec![(5000, None)]);
    }

    /// The caller never waits for a helper that has not started: with the pool's only thread held by other
    /// work, the step runs to its end on the calling thread, chunk by chunk. (A step cut statically, one piece
    /// per thread, waits here until that work ends.)
    #[test]
    fn a_busy_pool_does_not_hold_up_the_caller() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, running) = std::sync::mpsc::channel::<()>();
        pool.spawn(move || {
            started.send(()).unwrap();
            // Held until the step below is over, or for a minute if it never ends.
            let _ = held.recv_timeout(Duration::from_secs(60));
        });
        running.recv().unwrap();
        let t0 = Instant::now();
        let seen = Mutex::new(Vec::new());
        with_seg(&[50_000], |seg| {
            run_chunks(seg, team(&pool, 2), Grain::fixed(4096), &|piece| {
                seen.lock()
                    .unwrap()
                    .push((piece.len(), rayon::current_thread_index()));
            })
        });
        let took = t0.elapsed();
        release.send(()).unwrap();
        let seen = seen.into_inner().unwrap();
        assert!(took < Duration::from_secs(30), "the step waited {took:?}");
        assert_eq!(seen.iter().map(|p| p.0).sum::<usize>(), 50_000);
        assert!(
            seen.len() >= 12 && seen.iter().all(|p| p.1.is_none()),
            "{seen:?}"
        );
    }

    /// Helpers join while the caller works and never more than `threads − 1` of them, whatever the pool's size:
    /// on a pool of 6 with a team of 3, every chunk waits until two different helpers have each taken one (so a
    /// step cannot finish unless two helpers join), and for the first half second until a third would have (the
    /// pool's other threads are idle and woken too): exactly two join.
    #[test]
    fn helpers_join_while_the_caller_works_and_at_most_threads_minus_one_of_them() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(6)
            .build()
            .unwrap();
        let seen = Mutex::new(Vec::new());
        let helpers_in = std::sync::Condvar::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let third = Instant::now() + Duration::from_millis(500);
        with_seg(&[64 * 40], |seg| {
            run_chunks(seg, team(&pool, 3), Grain::fixed(64), &|piece| {
                let mut seen = seen.lock().unwrap();
                seen.push((piece.len(), rayon::current_thread_index()));
                helpers_in.notify_all();
                let helpers = |s: &Vec<(usize, Option<usize>)>| {
                    let mut h: Vec<usize> = s.iter().filter_map(|p| p.1).collect();
                    h.sort();
                    h.dedup();
                    h.len()
                };
                while (helpers(&seen) < 2 && Instant::now() < deadline)
                    || (helpers(&seen) < 3 && Instant::now() < third)
                {
                    seen = helpers_in
                        .wait_timeout(seen, Duration::from_millis(100))
                        .unwrap()
                        .0;
                }
            })
        });
        let seen = seen.into_inner().unwrap();
        assert_eq!(seen.iter().map(|p| p.0).sum::<usize>(), 64 * 40);
        let mut takers: Vec<Option<usize>> = seen.iter().map(|p| p.1).collect();
        takers.sort();
        takers.dedup();
        let helpers = takers.iter().filter(|t| t.is_some()).count();
        assert_eq!(helpers, 2, "{takers:?}");
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
