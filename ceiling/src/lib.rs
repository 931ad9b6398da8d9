//! An independent memory ceiling for the benchmarks and the report.
//!
//! A step of the update reads parameters, gradients and state and writes parameters and state (and, for the
//! CPU-offload step, a 16-bit copy of the parameters). The ceiling moves exactly those bytes with trivially
//! cheap arithmetic (`p ← p + g`, `s ← s + g`, the copy the top half of `p`'s bits), so a memory-bound step
//! cannot beat it. It shares **no code** with the crate it bounds — not the lane trait, not the loop, not the
//! prefetch, not the buffers, not the threads — so whatever the update does wrong, the ceiling does not copy it.
//! It is the **best of several plain variants**, measured in the same run:
//!
//! - the loop as the compiler vectorizes it for the baseline target, for AVX2 and for AVX-512F;
//! - each with no software prefetch and with a 4 KiB and an 8 KiB prefetch;
//! - on ordinary `Vec` buffers and on 64-byte aligned buffers (2 MiB aligned and advised for transparent huge pages
//!   on Linux from 2 MiB);
//! - on several threads: a team of its own persistent threads (the caller is one), spinning between calls, with
//!   the elements cut into one contiguous run per thread.
//!
//! [`Ceiling::measure`] returns the fastest variant and its time.

pub mod rows;
pub mod workload;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

/// The CPU's model name from `/proc/cpuinfo` (the architecture's name where there is none).
pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// The traffic of one step format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// f32 parameters, gradients and state: 20 bytes per element.
    F32,
    /// f64: 40 bytes per element.
    F64,
    /// f32 parameters and state, bf16 gradients: 18 bytes.
    F32Bf16,
    /// f32 parameters and state, bf16 gradients, bf16 copy-out: 20 bytes.
    F32Bf16Out,
}

impl Format {
    /// Bytes moved per element.
    pub fn bytes(self) -> usize {
        match self {
            Format::F32 => 20,
            Format::F64 => 40,
            Format::F32Bf16 => 18,
            Format::F32Bf16Out => 20,
        }
    }
}

/// An element the stream adds.
trait Elem: Copy + Send + Sync + 'static {
    fn add(self, b: Self) -> Self;
    fn from_f64(x: f64) -> Self;
}
impl Elem for f32 {
    #[inline(always)]
    fn add(self, b: Self) -> Self {
        self + b
    }
    fn from_f64(x: f64) -> Self {
        x as f32
    }
}
impl Elem for f64 {
    #[inline(always)]
    fn add(self, b: Self) -> Self {
        self + b
    }
    fn from_f64(x: f64) -> Self {
        x
    }
}

/// A gradient storage format, widened to `E`.
trait Wide<E>: Copy + Send + Sync + 'static {
    fn wide(self) -> E;
    fn make(x: f64) -> Self;
}
impl Wide<f32> for f32 {
    #[inline(always)]
    fn wide(self) -> f32 {
        self
    }
    fn make(x: f64) -> Self {
        x as f32
    }
}
impl Wide<f64> for f64 {
    #[inline(always)]
    fn wide(self) -> f64 {
        self
    }
    fn make(x: f64) -> Self {
        x
    }
}
/// bf16 as its bits: widening is a shift.
impl Wide<f32> for u16 {
    #[inline(always)]
    fn wide(self) -> f32 {
        f32::from_bits((self as u32) << 16)
    }
    fn make(x: f64) -> Self {
        ((x as f32).to_bits() >> 16) as u16
    }
}

/// The plain loop: one pass over the arrays, the copy-out (when `out` is not empty) the top half of the bits.
#[inline(always)]
fn plain<E: Elem + ToBits, W: Wide<E>, const PF: usize>(
    p: &mut [E],
    g: &[W],
    s: &mut [E],
    out: &mut [u16],
) {
    let n = p.len().min(g.len()).min(s.len());
    let (p, g, s) = (&mut p[..n], &g[..n], &mut s[..n]);
    if PF == 0 {
        if out.is_empty() {
            for ((p, g), s) in p.iter_mut().zip(g).zip(s.iter_mut()) {
                let g = g.wide();
                *p = p.add(g);
                *s = s.add(g);
            }
        } else {
            let out = &mut out[..n];
            for (((p, g), s), o) in p.iter_mut().zip(g).zip(s.iter_mut()).zip(out.iter_mut()) {
                let g = g.wide();
                *p = p.add(g);
                *s = s.add(g);
                *o = p.top_bits();
            }
        }
        return;
    }
    // With prefetch: blocks of one cache line of parameters, each asking for the line PF bytes ahead.
    let per_line = 64 / size_of::<E>();
    let ahead = PF / size_of::<E>();
    let mut i = 0;
    while i < n {
        let end = (i + per_line).min(n);
        prefetch(p.as_ptr().wrapping_add(i + ahead));
        prefetch(s.as_ptr().wrapping_add(i + ahead));
        prefetch(g.as_ptr().wrapping_add(i + ahead));
        for j in i..end {
            let gw = g[j].wide();
            p[j] = p[j].add(gw);
            s[j] = s[j].add(gw);
            if !out.is_empty() {
                out[j] = p[j].top_bits();
            }
        }
        i = end;
    }
}

#[inline(always)]
fn prefetch<X>(ptr: *const X) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint and never faults, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(ptr.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}

/// The top 16 bits (the copy-out's traffic with the cheapest arithmetic).
trait ToBits {
    fn top_bits(self) -> u16;
}
impl ToBits for f32 {
    #[inline(always)]
    fn top_bits(self) -> u16 {
        (self.to_bits() >> 16) as u16
    }
}
impl ToBits for f64 {
    #[inline(always)]
    fn top_bits(self) -> u16 {
        (self.to_bits() >> 48) as u16
    }
}

type LoopFn<E, W> = fn(&mut [E], &[W], &mut [E], &mut [u16]);

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn avx2<E: Elem + ToBits, W: Wide<E>, const PF: usize>(
    p: &mut [E],
    g: &[W],
    s: &mut [E],
    o: &mut [u16],
) {
    plain::<E, W, PF>(p, g, s, o)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn avx512<E: Elem + ToBits, W: Wide<E>, const PF: usize>(
    p: &mut [E],
    g: &[W],
    s: &mut [E],
    o: &mut [u16],
) {
    plain::<E, W, PF>(p, g, s, o)
}

/// The loop variants this CPU can run: (name, function). The ISA-specific ones are wrapped in a safe function
/// only after the CPU check.
fn variants<E: Elem + ToBits, W: Wide<E>>() -> Vec<(String, LoopFn<E, W>)> {
    let mut v: Vec<(String, LoopFn<E, W>)> = vec![
        ("base".into(), plain::<E, W, 0>),
        ("base+pf4k".into(), plain::<E, W, 4096>),
        ("base+pf8k".into(), plain::<E, W, 8192>),
    ];
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY (each closure): the CPU has AVX2 and FMA, checked just above.
            v.push(("avx2".into(), |p, g, s, o| unsafe {
                avx2::<E, W, 0>(p, g, s, o)
            }));
            v.push(("avx2+pf4k".into(), |p, g, s, o| unsafe {
                avx2::<E, W, 4096>(p, g, s, o)
            }));
            v.push(("avx2+pf8k".into(), |p, g, s, o| unsafe {
                avx2::<E, W, 8192>(p, g, s, o)
            }));
        }
        if std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl")
        {
            // SAFETY (each closure): the CPU has AVX-512F/BW/VL, checked just above.
            v.push(("avx512".into(), |p, g, s, o| unsafe {
                avx512::<E, W, 0>(p, g, s, o)
            }));
            v.push(("avx512+pf4k".into(), |p, g, s, o| unsafe {
                avx512::<E, W, 4096>(p, g, s, o)
            }));
            v.push(("avx512+pf8k".into(), |p, g, s, o| unsafe {
                avx512::<E, W, 8192>(p, g, s, o)
            }));
        }
    }
    v
}

/// A buffer of `len` elements: a `Vec`, or a separately allocated aligned block.
struct Buf<X: Copy> {
    ptr: *mut X,
    len: usize,
    layout: Option<std::alloc::Layout>,
    _vec: Vec<X>,
}
// SAFETY: a Buf owns its memory exclusively, as a Vec does.
unsafe impl<X: Copy + Send> Send for Buf<X> {}
// SAFETY: shared access hands out only &[X].
unsafe impl<X: Copy + Sync> Sync for Buf<X> {}

impl<X: Copy> Buf<X> {
    fn new(len: usize, aligned: bool, fill: impl Fn(usize) -> X) -> Buf<X> {
        if !aligned || len == 0 {
            let mut v: Vec<X> = (0..len).map(&fill).collect();
            return Buf {
                ptr: v.as_mut_ptr(),
                len,
                layout: None,
                _vec: v,
            };
        }
        let bytes = len * size_of::<X>();
        let align = if bytes >= 2 << 20 { 2 << 20 } else { 64 };
        let layout = std::alloc::Layout::from_size_align(bytes, align).expect("layout");
        // SAFETY: non-zero size.
        let ptr = unsafe { std::alloc::alloc(layout) }.cast::<X>();
        assert!(!ptr.is_null(), "out of memory");
        #[cfg(target_os = "linux")]
        if align == 2 << 20 {
            // SAFETY: our own allocation; the advice only changes how it is backed.
            unsafe { libc::madvise(ptr.cast(), bytes, libc::MADV_HUGEPAGE) };
        }
        for i in 0..len {
            // SAFETY: i < len, within the allocation.
            unsafe { ptr.add(i).write(fill(i)) };
        }
        Buf {
            ptr,
            len,
            layout: Some(layout),
            _vec: Vec::new(),
        }
    }
    /// The `k`-th of `parts` contiguous runs (as long as the others, give or take one cache line).
    ///
    /// # Safety
    /// No two live slices of one buffer may overlap: callers take distinct `k`.
    #[allow(clippy::mut_from_ref)]
    unsafe fn part(&self, k: usize, parts: usize) -> &mut [X] {
        let (a, b) = bounds(self.len, k, parts);
        // SAFETY: [a, b) is within the buffer; the caller keeps the runs disjoint.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(a), b - a) }
    }
}

impl<X: Copy> Drop for Buf<X> {
    fn drop(&mut self) {
        if let Some(layout) = self.layout {
            // SAFETY: allocated with this layout in `new`.
            unsafe { std::alloc::dealloc(self.ptr.cast(), layout) }
        }
    }
}

/// Run `k` of `parts` over `len` elements, boundaries on multiples of 64 elements.
fn bounds(len: usize, k: usize, parts: usize) -> (usize, usize) {
    let at = |k: usize| {
        if k >= parts {
            len
        } else {
            (len * k / parts) / 64 * 64
        }
    };
    (at(k), at(k + 1))
}

/// Persistent threads for the multi-threaded ceiling: `n − 1` workers spin (then sleep) waiting for a call; the
/// caller runs part 0.
pub(crate) struct Team {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

struct Shared {
    epoch: AtomicUsize,
    done: AtomicUsize,
    stop: std::sync::atomic::AtomicBool,
    /// The current job: a `&(dyn Fn(usize) + Sync)` with its lifetime erased, valid while `epoch` is odd.
    job: std::sync::Mutex<Option<JobPtr>>,
}

#[derive(Clone, Copy)]
struct JobPtr(*const (dyn Fn(usize) + Sync));
// SAFETY: the pointee is Sync and outlives every use (`Team::run` waits for all workers before returning).
unsafe impl Send for JobPtr {}

impl Team {
    pub(crate) fn new(threads: usize) -> Team {
        let shared = Arc::new(Shared {
            epoch: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            stop: std::sync::atomic::AtomicBool::new(false),
            job: std::sync::Mutex::new(None),
        });
        let workers = (1..threads)
            .map(|k| {
                let sh = shared.clone();
                std::thread::spawn(move || worker(&sh, k))
            })
            .collect();
        Team { shared, workers }
    }

    pub(crate) fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f(0)` here and `f(k)` on worker `k`, and returns when all are done.
    pub(crate) fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() {
            return f(0);
        }
        // SAFETY: erases the lifetime; the pointer is only used until every worker has reported done below.
        let ptr: *const (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(f) };
        *self.shared.job.lock().unwrap() = Some(JobPtr(ptr));
        self.shared.done.store(0, Ordering::Relaxed);
        self.shared.epoch.fetch_add(1, Ordering::Release);
        for w in &self.workers {
            w.thread().unpark();
        }
        f(0);
        while self.shared.done.load(Ordering::Acquire) < self.workers.len() {
            std::hint::spin_loop();
        }
    }
}

fn worker(sh: &Shared, k: usize) {
    let mut seen = 0;
    loop {
        let mut spins = 0u32;
        loop {
            if sh.stop.load(Ordering::Acquire) {
                return;
            }
            let e = sh.epoch.load(Ordering::Acquire);
            if e != seen {
                seen = e;
                break;
            }
            spins += 1;
            if spins < 1 << 16 {
                std::hint::spin_loop();
            } else {
                std::thread::park_timeout(std::time::Duration::from_millis(1));
            }
        }
        let job = sh
            .job
            .lock()
            .unwrap()
            .expect("a job is set before the epoch moves");
        // SAFETY: `Team::run` keeps the closure alive until this worker increments `done`.
        unsafe { (*job.0)(k) };
        sh.done.fetch_add(1, Ordering::Release);
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        for w in self.workers.drain(..) {
            w.thread().unpark();
            let _ = w.join();
        }
    }
}

/// The arrays of one format, on plain and on aligned buffers.
struct Arrays<E: Copy, W: Copy> {
    p: Buf<E>,
    g: Buf<W>,
    s: Buf<E>,
    o: Buf<u16>,
}

impl<E: Elem + ToBits, W: Wide<E>> Arrays<E, W> {
    fn new(n: usize, aligned: bool, copy: bool) -> Self {
        Arrays {
            p: Buf::new(n, aligned, |i| E::from_f64(0.5 + (i % 13) as f64 * 0.01)),
            g: Buf::new(n, aligned, |i| W::make((i % 97) as f64 * 1e-9)),
            s: Buf::new(n, aligned, |_| E::from_f64(0.1)),
            o: Buf::new(if copy { n } else { 0 }, aligned, |_| 0u16),
        }
    }

    /// One pass of `f` over every element, on the team's threads.
    fn pass(&self, f: LoopFn<E, W>, team: &Team) {
        let t = team.threads();
        team.run(&|k| {
            // SAFETY: each thread takes a distinct part k of each buffer.
            unsafe {
                let o: &mut [u16] = if self.o.len == 0 {
                    &mut []
                } else {
                    self.o.part(k, t)
                };
                f(self.p.part(k, t), self.g.part(k, t), self.s.part(k, t), o)
            }
        });
    }
}

/// Median seconds per call of `f`: one warm-up call, then `samples` samples, each of as many calls as fill
/// `min_sample` seconds (measurement helper shared by the report, the calibration and the PyTorch comparison).
pub fn median_secs(f: &mut dyn FnMut(), samples: usize, min_sample: f64) -> f64 {
    f();
    let t0 = Instant::now();
    f();
    let one = t0.elapsed().as_secs_f64().max(1e-9);
    let iters = ((min_sample / one).ceil() as usize).clamp(1, 1 << 20);
    let mut v: Vec<f64> = (0..samples.max(1))
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_secs_f64() / iters as f64
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// What one variant computed: (name, parameters, state, copy-out).
pub type Checked = (String, Vec<f32>, Vec<f32>, Vec<u16>);

/// The ceiling of one format, size and thread count.
pub struct Ceiling {
    format: Format,
    n: usize,
    /// One team per thread count tried: `threads`, and 1 (a step may run on one thread, so may the ceiling).
    teams: Vec<Team>,
}

/// A measured ceiling: the fastest variant and its median seconds per pass, with every variant's time.
#[derive(Clone, Debug)]
pub struct Measured {
    /// The winning variant, e.g. `"avx512 aligned"`.
    pub best: String,
    /// Its median seconds per pass.
    pub secs: f64,
    /// Every variant: (name, median seconds per pass).
    pub all: Vec<(String, f64)>,
}

impl Ceiling {
    /// A ceiling for `n` elements of `format` on up to `threads` threads (its own, started now): every variant
    /// runs on `threads` threads and, when that is more than one, also on one (for small sizes one thread is
    /// faster, and what bounds a step must be at least as fast as any way of running it).
    pub fn new(format: Format, n: usize, threads: usize) -> Ceiling {
        let mut counts = vec![threads.max(1)];
        if threads > 1 {
            counts.push(1);
        }
        Ceiling {
            format,
            n,
            teams: counts.into_iter().map(Team::new).collect(),
        }
    }

    /// Measures every variant (`samples` samples of at least `min_sample` seconds each) and returns the best.
    pub fn measure(&self, samples: usize, min_sample: f64) -> Measured {
        let all: Vec<(String, f64)> = self
            .passes()
            .into_iter()
            .map(|(name, mut f)| (name, median_secs(&mut *f, samples, min_sample)))
            .collect();
        let (best, secs) = all
            .iter()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .cloned()
            .expect("at least the baseline variant");
        Measured { best, secs, all }
    }

    /// Every variant as a callable pass over its own arrays (for harnesses such as criterion): (name, pass).
    pub fn passes(&self) -> Vec<(String, Box<dyn FnMut() + '_>)> {
        match self.format {
            Format::F32 => self.each::<f32, f32>(false),
            Format::F64 => self.each::<f64, f64>(false),
            Format::F32Bf16 => self.each::<f32, u16>(false),
            Format::F32Bf16Out => self.each::<f32, u16>(true),
        }
    }

    fn each<E: Elem + ToBits, W: Wide<E>>(
        &self,
        copy: bool,
    ) -> Vec<(String, Box<dyn FnMut() + '_>)> {
        let mut out: Vec<(String, Box<dyn FnMut() + '_>)> = Vec::new();
        for aligned in [false, true] {
            let a = Arc::new(Arrays::<E, W>::new(self.n, aligned, copy));
            for team in &self.teams {
                for (name, f) in variants::<E, W>() {
                    let mem = if aligned { "aligned" } else { "vec" };
                    let a = a.clone();
                    let t = team.threads();
                    out.push((
                        format!("{name} {mem} {t}T"),
                        Box::new(move || a.pass(f, team)),
                    ));
                }
            }
        }
        out
    }

    /// Runs one pass of every variant on small arrays and returns what they computed, for tests:
    /// (p, s, copy-out) per variant, from p = 0.5 + (i mod 13)/100, s = 0.1, g as in the benchmarks.
    pub fn check_f32(n: usize, threads: usize) -> Vec<Checked> {
        let team = Team::new(threads);
        let mut res = Vec::new();
        for (name, f) in variants::<f32, u16>() {
            let a = Arrays::<f32, u16>::new(n, true, true);
            a.pass(f, &team);
            // SAFETY: no other slice of these buffers is live.
            let (p, s, o) = unsafe { (a.p.part(0, 1), a.s.part(0, 1), a.o.part(0, 1)) };
            res.push((name, p.to_vec(), s.to_vec(), o.to_vec()));
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant moves and computes what it claims, on one and several threads, at lengths that leave
    /// partial cache lines and uneven parts (a ceiling that skipped work would flatter everything it bounds).
    #[test]
    fn every_variant_computes_the_stream() {
        for threads in [1, 2, 3] {
            for n in [0usize, 1, 15, 64, 1000, 4099] {
                for (name, p, s, o) in Ceiling::check_f32(n, threads) {
                    for i in 0..n {
                        let g = f32::from_bits(
                            ((((i % 97) as f64 * 1e-9) as f32).to_bits() >> 16) << 16,
                        );
                        let want_p = (0.5 + (i % 13) as f64 * 0.01) as f32 + g;
                        assert_eq!(p[i], want_p, "{name} n={n} t={threads} i={i}");
                        assert_eq!(s[i], 0.1f32 + g, "{name} n={n} t={threads} i={i}");
                        assert_eq!(o[i], (want_p.to_bits() >> 16) as u16, "{name}");
                    }
                }
            }
        }
    }

    #[test]
    fn measure_returns_the_fastest() {
        let m = Ceiling::new(Format::F64, 4096, 2).measure(3, 1e-4);
        assert!(m.all.iter().all(|(_, t)| *t >= m.secs && t.is_finite()));
        assert!(m.all.len() >= 12);
        assert!(
            m.all.iter().any(|(n, _)| n.ends_with(" 1T"))
                && m.all.iter().any(|(n, _)| n.ends_with(" 2T"))
        );
    }
}
