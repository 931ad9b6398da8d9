//! The functional step: one multi-tensor Adagrad step over caller-owned parameters, gradients and accumulators.
//!
//! Frameworks own their state tensors (PyTorch keeps `sum` per parameter in the optimizer's `state`); this is the
//! entry point for them, and the one [`crate::Adagrad`] itself uses on its own state: the same validation, the same
//! threads, the same bits. An [`Executor`] holds what is resolved once (kernel path, tuning, threads); the
//! [`Config`] holds the hyperparameters, and the step number `t` (1-based) is the caller's.
//!
//! ```
//! use adagrad::{functional, Config, Executor};
//! let config = Config::default().lr(0.1);
//! let exec = Executor::new(&config)?;
//! let (mut w, mut b) = (vec![1.0f32; 3], vec![0.0f32; 1]);
//! let (mut sw, mut sb) = (vec![0.0f32; 3], vec![0.0f32; 1]); // the caller's accumulators
//! functional::step(
//!     &exec, &config, 1,
//!     &mut [&mut w, &mut b], &[&[0.5, -0.5, 0.0], &[2.0]], &mut [&mut sw, &mut sb],
//!     None::<&mut [&mut [adagrad::bf16]]>, None,
//! )?;
//! assert_eq!((w, b, sw, sb), (vec![0.9, 1.1, 1.0], vec![-0.1], vec![0.25, 0.25, 0.0], vec![4.0]));
//! # Ok::<(), adagrad::Error>(())
//! ```

use crate::parallel::{
    Crew, CrewRef, Grain, MAX_CHUNK, Seg, Split, StateSlice, Team, helpers, run_chunks,
};
use crate::{Config, Error, MAX_THREADS, NonFinite, Parallelism, StepOutcome, Tuning};
use adagrad_kernels::{CopyOut, Float, Grad, Hyper, Isa, Kernels};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// What a step runs on, resolved once from a [`Config`]: the kernel path ([`Config::isa`], else `ADAGRAD_ISA`,
/// else the best path — AVX2 rather than AVX-512 where [`Tuning::avx512`] says so), the [`Tuning`]
/// ([`Config::tuning`], else this CPU's table entry with `ADAGRAD_TUNE`), and the threads
/// ([`Config::parallelism`]).
#[derive(Clone, Debug)]
pub struct Executor {
    kernels: Kernels,
    tuning: Tuning,
    /// Helper threads (`None`: sequential) and the number of threads a step uses, the caller included.
    crew: Option<Crew>,
    threads: usize,
    /// Whether `pool` is one of this crate's helper pools (not a caller's `Parallelism::Pool`).
    own_pool: bool,
}

impl Executor {
    /// Resolves the path, tuning and threads of `config`. An invalid `ADAGRAD_ISA` or `ADAGRAD_TUNE`, an unavailable
    /// path or an invalid tuning is an error.
    pub fn new(config: &Config) -> Result<Executor, Error> {
        let tuning = match config.tuning {
            Some(t) => {
                t.validate()?;
                t
            }
            None => Tuning::detect()?,
        };
        // `ADAGRAD_ISA` is read only when the configuration names no path.
        let isa = match config.isa {
            Some(isa) => Some(isa),
            None => Isa::from_env()?,
        };
        let kernels = match isa {
            Some(isa) => Kernels::new(isa)?,
            None if !tuning.avx512 && Isa::best() == Isa::Avx512 => Kernels::new(Isa::Avx2)?,
            None => Kernels::best(),
        }
        .with_prefetch(tuning.prefetch);
        let wanted = match &config.parallelism {
            Parallelism::Sequential => Some((1, "Parallelism::Sequential")),
            Parallelism::Global => Some((global_threads(), "RAYON_NUM_THREADS")),
            Parallelism::Threads(n) => Some((*n, "Parallelism::Threads")),
            Parallelism::Host(h) => Some((h.threads(), "Parallelism::Host")),
            Parallelism::Pool(_) => None,
        };
        if let Some((threads, from)) = wanted.filter(|w| w.0 > MAX_THREADS) {
            return Err(Error::TooManyThreads { threads, from });
        }
        let (crew, threads) = match (&config.parallelism, wanted) {
            (Parallelism::Pool(p), _) => (Some(Crew::Pool(p.clone())), p.current_num_threads()),
            (Parallelism::Host(h), _) => (Some(Crew::Host(h.clone())), h.threads()),
            (_, Some((n, _))) => (helpers(n).map(Crew::Pool), n),
            (_, None) => (None, 1),
        };
        let (crew, threads) = match crew {
            Some(c) if threads > 1 => (Some(c), threads),
            _ => (None, 1),
        };
        let own_pool = matches!(
            config.parallelism,
            Parallelism::Global | Parallelism::Threads(_)
        );
        Ok(Executor {
            kernels,
            tuning,
            crew,
            threads,
            own_pool,
        })
    }

    /// The kernel path.
    pub fn isa(&self) -> Isa {
        self.kernels.isa()
    }

    /// The kernel table.
    pub(crate) fn kernels(&self) -> &Kernels {
        &self.kernels
    }

    /// The threads a parallel run uses (`None`: sequential).
    pub(crate) fn team(&self) -> Option<Team<'_>> {
        self.crew.as_ref().map(|crew| Team {
            crew: match crew {
                Crew::Pool(p) => CrewRef::Pool(p),
                Crew::Host(h) => CrewRef::Host(&**h),
            },
            threads: self.threads,
            linger: Duration::from_micros(self.tuning.linger as u64),
        })
    }

    /// Wakes the helper threads (if any) now, so that a parallel step starting within [`LINGER`](crate::LINGER)
    /// finds them running rather than paying their wake-up (tens of microseconds): for a caller about to spend a
    /// while preparing a step, such as reading many tensors from Python. They wait (spinning a few microseconds,
    /// then yielding their CPUs) until that step starts or the time has passed. After every parallel step they
    /// stay for [`Tuning::linger`]. Does nothing on a sequential executor or on a caller's own pool
    /// (`Parallelism::Pool`), whose threads may have other work. A step never waits for a helper that is not
    /// awake: this only lets the helpers take a share sooner.
    ///
    /// ```
    /// use adagrad::{functional, Config, Executor, Parallelism};
    /// let config = Config::default().lr(0.1).parallelism(Parallelism::Threads(2));
    /// let exec = Executor::new(&config)?;
    /// exec.wake(); // then gather the step's slices (here: one large tensor) and run it
    /// let (mut w, mut s) = (vec![1.0f32; 1 << 20], vec![0.0f32; 1 << 20]);
    /// let g = vec![0.5f32; 1 << 20];
    /// functional::step(
    ///     &exec, &config, 1, &mut [&mut w], &[&g], &mut [&mut s],
    ///     None::<&mut [&mut [adagrad::bf16]]>, None,
    /// )?;
    /// assert!(w.iter().all(|&x| x == 0.9) && s.iter().all(|&x| x == 0.25));
    /// # Ok::<(), adagrad::Error>(())
    /// ```
    pub fn wake(&self) {
        if let Some(Crew::Pool(pool)) = self.crew.as_ref().filter(|_| self.own_pool) {
            crate::parallel::wake(pool);
        }
    }

    /// The performance settings.
    pub fn tuning(&self) -> Tuning {
        self.tuning
    }

    /// Threads a large step runs on, the caller included (1: sequential).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The helper pool for work on `elements` elements of `T`, or `None` when it runs on the calling thread:
    /// sequential, or below the threshold (which counts f32 elements; an f64 element is about four times the
    /// work).
    pub(crate) fn team_for<T: Float>(&self, elements: usize) -> Option<Team<'_>> {
        self.team().filter(|_| {
            elements.saturating_mul(Tuning::weight::<T>()) >= self.tuning.parallel_threshold
        })
    }

    /// The chunk sizes of a parallel step of `T` elements: at least [`Tuning::min_piece`], at most [`MAX_CHUNK`]
    /// above that (both count f32 elements).
    pub(crate) fn grain<T: Float>(&self) -> Grain {
        let w = Tuning::weight::<T>();
        Grain {
            min: self.tuning.min_piece.div_ceil(w),
            max: MAX_CHUNK / w,
        }
    }

    /// The chunk sizes, in rows, of work on rows of `dim` f32 elements (an embedding step's updates and checks):
    /// the bounds of [`Executor::grain`] rounded up to whole rows.
    pub(crate) fn row_grain(&self, dim: usize) -> Grain {
        Grain {
            min: self.tuning.min_piece.div_ceil(dim),
            max: MAX_CHUNK.div_ceil(dim),
        }
    }
}

/// The threads of [`Parallelism::Global`]: as rayon counts them for its global pool (`RAYON_NUM_THREADS` when it
/// is a positive integer, else the CPUs this process may run on), without starting that pool.
fn global_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// One step `t` (1-based: the learning rate decays as `lr / (1 + (t − 1)·lr_decay)`) over `params`, `grads` and
/// the caller's accumulators `state`, one slice of each per tensor, all of a tensor's the same length; optionally
/// gradients divided by `grad_scale` and the updated parameters written rounded to `O` into `copy_out`.
///
/// Everything is validated first (the configuration as `T` holds it, `t ≥ 1`, counts, lengths, the scale, and
/// under [`NonFinite::SkipStep`]/[`NonFinite::Error`] the unscaled gradients); on error, or on a skipped step,
/// nothing is written. Bit-identical to [`crate::Adagrad::step_with`] with the same inputs.
#[allow(clippy::too_many_arguments)]
pub fn step<T: Float, G: Grad<T>, O: CopyOut<T>>(
    exec: &Executor,
    config: &Config,
    t: u64,
    params: &mut [&mut [T]],
    grads: &[&[G]],
    state: &mut [&mut [T]],
    copy_out: Option<&mut [&mut [O]]>,
    grad_scale: Option<f64>,
) -> Result<StepOutcome, Error> {
    config.validate_for::<T>()?;
    run(exec, config, t, params, grads, state, copy_out, grad_scale)
}

/// [`step`] on any accumulator storage, with the configuration already validated.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run<T: Float, G: Grad<T>, O: CopyOut<T>, S: StateSlice<T>>(
    exec: &Executor,
    config: &Config,
    t: u64,
    params: &mut [&mut [T]],
    grads: &[&[G]],
    state: &mut [S],
    copy_out: Option<&mut [&mut [O]]>,
    grad_scale: Option<f64>,
) -> Result<StepOutcome, Error> {
    check_step(t)?;
    check(params, grads, state)?;
    let out: &mut [&mut [O]] = match copy_out {
        Some(out) if O::KIND != 0 => {
            check_out(out, state)?;
            out
        }
        _ => &mut [],
    };
    let mut h: Hyper<T> = config.hyper(t);
    if let Some(scale) = grad_scale {
        // Judged as the kernels will use it: rounded to T (1e-50 is positive in f64 and 0 in f32).
        let rounded = T::from_f64(scale);
        if !(rounded.is_finite() && rounded > T::ZERO) {
            return Err(Error::InvalidGradScale(scale));
        }
        h = h.with_grad_scale(scale);
    }
    if config.non_finite != NonFinite::Propagate {
        let count = count_non_finite(exec, grads, h.grad_scale);
        if count > 0 {
            return match config.non_finite {
                NonFinite::Error => Err(Error::NonFiniteGradient { count }),
                _ => Ok(StepOutcome::Skipped { non_finite: count }),
            };
        }
    }
    let seg = Seg::new(params, grads, state, out);
    let team = exec.team_for::<T>(seg.len());
    seg.run(&exec.kernels, &h, config.precision, team, exec.grain::<T>());
    Ok(StepOutcome::Applied)
}

/// The one rule for a caller's step count `t`, in the dense and the embedding step: steps are counted from 1.
pub(crate) fn check_step(t: u64) -> Result<(), Error> {
    if t == 0 {
        return Err(Error::InvalidConfig {
            field: "step",
            value: 0.0,
            reason: "steps are counted from 1",
        });
    }
    Ok(())
}

fn check<T, G, S: StateSlice<T>>(
    params: &[&mut [T]],
    grads: &[&[G]],
    state: &[S],
) -> Result<(), Error> {
    let expected = state.len();
    if params.len() != expected || grads.len() != expected {
        return Err(Error::TensorCount {
            expected,
            params: params.len(),
            grads: grads.len(),
        });
    }
    for (tensor, ((p, g), s)) in params.iter().zip(grads).zip(state).enumerate() {
        if p.len() != s.len() || g.len() != s.len() {
            return Err(Error::Length {
                tensor,
                expected: s.len(),
                params: p.len(),
                grads: g.len(),
            });
        }
    }
    Ok(())
}

fn check_out<T, O, S: StateSlice<T>>(out: &[&mut [O]], state: &[S]) -> Result<(), Error> {
    if out.len() != state.len() {
        return Err(Error::CopyOutCount {
            expected: state.len(),
            got: out.len(),
        });
    }
    for (tensor, (o, s)) in out.iter().zip(state).enumerate() {
        if o.len() != s.len() {
            return Err(Error::CopyOutLength {
                tensor,
                expected: s.len(),
                got: o.len(),
            });
        }
    }
    Ok(())
}

/// Counts NaN and ±∞ gradient elements as the update will use them (divided by the gradient scale, in `T`), on
/// the executor's threads for large steps (in chunks, as the step itself runs).
fn count_non_finite<T: Float, G: Grad<T>>(
    exec: &Executor,
    grads: &[&[G]],
    scale: Option<T>,
) -> usize {
    let count = |g: &[G]| match scale {
        Some(sc) => g.iter().filter(|x| !(x.widen() / sc).is_finite()).count(),
        None => g.iter().filter(|x| !x.widen().is_finite()).count(),
    };
    let total: usize = grads.iter().map(|g| g.len()).sum();
    let found = AtomicUsize::new(0);
    let leaf = |piece: Grads<'_, G>| {
        let n: usize = piece.slices().map(count).sum();
        found.fetch_add(n, Ordering::Relaxed);
    };
    let all = Grads {
        tensors: grads,
        from: 0,
        len: total,
    };
    run_chunks(all, exec.team_for::<T>(total), exec.grain::<T>(), &leaf);
    found.into_inner()
}

/// The gradient elements of a step as one sequence, from element `from` of the first tensor on, `len` of them.
struct Grads<'a, G> {
    tensors: &'a [&'a [G]],
    from: usize,
    len: usize,
}

impl<'a, G> Grads<'a, G> {
    /// The pieces of tensors this holds, in order.
    fn slices(&self) -> impl Iterator<Item = &'a [G]> + use<'a, G> {
        let mut from = self.from;
        let mut left = self.len;
        self.tensors.iter().map_while(move |t| {
            if left == 0 {
                return None;
            }
            let s = &t[from.min(t.len())..];
            let s = &s[..left.min(s.len())];
            from = 0;
            left -= s.len();
            Some(s)
        })
    }
}

impl<G: Sync> Split for Grads<'_, G> {
    fn len(&self) -> usize {
        self.len
    }

    fn split(self, at: usize) -> (Self, Self) {
        let at = at.min(self.len);
        // The tensor that holds element `at`, and where in it.
        let (mut i, mut off) = (0, self.from + at);
        while i + 1 < self.tensors.len() && off >= self.tensors[i].len() {
            off -= self.tensors[i].len();
            i += 1;
        }
        (
            Grads {
                tensors: &self.tensors[..=i.min(self.tensors.len().saturating_sub(1))],
                from: self.from,
                len: at,
            },
            Grads {
                tensors: &self.tensors[i..],
                from: off,
                len: self.len - at,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A step's chunks: at least the tuning's piece size, at most `MAX_CHUNK` f32 elements; an f64 element counts
    /// as four, so both bounds are a quarter as many f64 elements.
    #[test]
    fn chunk_bounds_follow_the_tuning_and_the_element_weight() {
        let tuning = Tuning {
            min_piece: 4096,
            ..Tuning::for_cpu(&adagrad_kernels::Cpu::this())
        };
        let exec = Executor::new(&Config::default().tuning(tuning)).unwrap();
        assert_eq!(
            exec.grain::<f32>(),
            Grain {
                min: 4096,
                max: MAX_CHUNK
            }
        );
        assert_eq!(
            exec.grain::<f64>(),
            Grain {
                min: 1024,
                max: MAX_CHUNK / 4
            }
        );
        assert_eq!(MAX_CHUNK, 1 << 18);
    }
}
