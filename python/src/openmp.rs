//! The OpenMP team the host process has loaded (PyTorch's libgomp), as the crate's [`HostTeam`]: a step's chunks
//! run on the threads torch's own parallel work has just used, which are still awake then, and
//! `torch.set_num_threads` sets how many. Found at run time in the process's global symbols (torch loads its
//! libgomp there); nothing is linked or loaded by this module. When the team's workers turn out to have been
//! asleep (the step waited for them), the next steps leave the team out for a while ([`Backoff`]).

use adagrad::HostTeam;
use std::any::Any;
use std::ffi::{c_int, c_uint, c_void};
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// libgomp's entry for `#pragma omp parallel`: calls `f(data)` on a team of `threads` threads (0: the default
/// number), the calling thread among them, and returns when all calls have returned.
pub type GompParallel =
    unsafe extern "C" fn(extern "C" fn(*mut c_void), *mut c_void, c_uint, c_uint);

/// The OpenMP runtime's default team size.
type OmpGetMaxThreads = unsafe extern "C" fn() -> c_int;

/// A loaded libgomp's `GOMP_parallel`, the team size steps use, and when to leave the team out.
pub struct OpenMp {
    parallel: GompParallel,
    threads: usize,
    backoff: Backoff,
}

/// When the team's workers were asleep: an OpenMP region ends at a barrier, so a step whose calling thread has
/// taken every chunk still waits there for workers that had gone to sleep (after the host was idle a while) to
/// wake — on a VM, up to milliseconds, longer than the step. A step that waited so (longer than its own work and
/// than [`Backoff::WAIT`]) makes the next [`Backoff::SKIP`] steps run on the calling thread alone, without the
/// team; then the team is tried again. Steps that follow the host's own parallel work, whose workers are still
/// spinning, never wait so and always use the team.
#[derive(Default)]
pub struct Backoff {
    /// Steps still to run without the team.
    skip: AtomicU32,
}

impl Backoff {
    /// Steps run without the team after one that waited for sleeping workers.
    pub const SKIP: u32 = 16;
    /// A wait at the closing barrier shorter than this never counts (a wake-up of spinning workers).
    pub const WAIT: Duration = Duration::from_micros(100);

    /// Whether this step runs without the team (counting it down).
    pub fn skip(&self) -> bool {
        self.skip
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    /// After a step on the team: the calling thread's own part took `work`, the whole region `total`.
    pub fn after(&self, work: Duration, total: Duration) {
        let waited = total.saturating_sub(work);
        if waited > work && waited > Self::WAIT {
            self.skip.store(Self::SKIP, Ordering::Relaxed);
        }
    }
}

impl OpenMp {
    /// The libgomp in this process's global symbols, for teams of `threads` threads (`None`: the runtime's own
    /// default, `omp_get_max_threads()`); `None` when no libgomp is loaded there.
    pub fn find(threads: Option<usize>) -> Option<OpenMp> {
        let parallel = symbol(c"GOMP_parallel")?;
        // SAFETY: `GOMP_parallel` has this signature in every libgomp (its ABI since GCC 4.9:
        // `void GOMP_parallel (void (*) (void *), void *, unsigned, unsigned)`).
        let parallel = unsafe { std::mem::transmute::<*mut c_void, GompParallel>(parallel) };
        let threads = match threads {
            Some(n) => n,
            None => {
                let max = symbol(c"omp_get_max_threads")?;
                // SAFETY: `int omp_get_max_threads (void)`, as the OpenMP standard defines it.
                let max = unsafe { std::mem::transmute::<*mut c_void, OmpGetMaxThreads>(max) };
                // SAFETY: a plain query of the runtime's settings.
                usize::try_from(unsafe { max() }).unwrap_or(1).max(1)
            }
        };
        Some(OpenMp {
            parallel,
            threads,
            backoff: Backoff::default(),
        })
    }
}

#[cfg(test)]
impl OpenMp {
    /// A team around a stand-in for `GOMP_parallel` (the Rust tests have no OpenMP runtime). Used by
    /// `rust-tests/openmp.rs`, which includes this file; the library's own test build does not call it.
    #[allow(dead_code)]
    pub fn with(parallel: GompParallel, threads: usize) -> OpenMp {
        OpenMp {
            parallel,
            threads,
            backoff: Backoff::default(),
        }
    }
}

/// A symbol of the process's global scope, or `None`.
#[cfg(target_os = "linux")]
fn symbol(name: &std::ffi::CStr) -> Option<*mut c_void> {
    // SAFETY: looks a NUL-terminated name up in the global scope; loads nothing.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!p.is_null()).then_some(p)
}

#[cfg(not(target_os = "linux"))]
fn symbol(_name: &std::ffi::CStr) -> Option<*mut c_void> {
    None
}

/// What one `GOMP_parallel` call hands its threads: the job, the first panic any of them met, and the calling
/// thread with when its part ended.
struct Call<'a> {
    job: &'a (dyn Fn() + Sync),
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    caller: ThreadId,
    caller_done: Mutex<Option<Instant>>,
}

/// Runs the job on an OpenMP thread; a panic is caught there (it must not unwind through C) and kept for the
/// caller.
extern "C" fn trampoline(data: *mut c_void) {
    // SAFETY: `data` is the `Call` that `OpenMp::run` passed to `GOMP_parallel`, which lives until that call has
    // returned, after every thread of the team has returned from here.
    let call = unsafe { &*(data as *const Call<'_>) };
    if let Err(e) = std::panic::catch_unwind(AssertUnwindSafe(|| (call.job)())) {
        call.panic
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(e);
    }
    if std::thread::current().id() == call.caller {
        *call.caller_done.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }
}

impl HostTeam for OpenMp {
    fn run(&self, threads: usize, job: &(dyn Fn() + Sync)) {
        if self.backoff.skip() {
            // The crate runs the job on the calling thread.
            return;
        }
        let call = Call {
            job,
            panic: Mutex::new(None),
            caller: std::thread::current().id(),
            caller_done: Mutex::new(None),
        };
        let n = c_uint::try_from(threads).unwrap_or(c_uint::MAX);
        let start = Instant::now();
        // SAFETY: `trampoline` matches the function type `GOMP_parallel` takes, and `&call` outlives the call
        // (see `trampoline`); `GOMP_parallel` returns only when every thread of the team is done.
        unsafe { (self.parallel)(trampoline, (&raw const call).cast_mut().cast(), n, 0) };
        let total = start.elapsed();
        if let Some(done) = *call.caller_done.lock().unwrap_or_else(|p| p.into_inner()) {
            self.backoff.after(done.duration_since(start), total);
        }
        if let Some(e) = call.panic.into_inner().unwrap_or_else(|p| p.into_inner()) {
            std::panic::resume_unwind(e);
        }
    }

    fn threads(&self) -> usize {
        self.threads
    }

    fn name(&self) -> &str {
        "openmp"
    }
}
