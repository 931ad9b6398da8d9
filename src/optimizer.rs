//! The optimizer: state per tensor, the step count, and the step itself.

use crate::config::validate_value;
use crate::parallel::{Seg, helpers};
use crate::{AlignedBuf, Config, Error, NonFinite, Parallelism, Tuning};
use adagrad_kernels::{CopyOut, Float, Grad, Hyper, Isa, Kernels, NoCopy};
use rayon::ThreadPool;
use rayon::prelude::*;
use std::sync::Arc;

/// What a step did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    /// Parameters and state were updated and the step count advanced.
    Applied,
    /// [`NonFinite::SkipStep`]: `non_finite` gradient elements were NaN or ±∞, so nothing changed.
    Skipped {
        /// How many gradient elements were non-finite.
        non_finite: usize,
    },
}

/// Adagrad over a fixed list of parameter tensors of type `T` (`f32` or `f64`).
///
/// The kernel path is chosen once, at construction ([`Config::isa`], else `ADAGRAD_ISA`, else the best the CPU
/// has — AVX2 rather than AVX-512 where [`Tuning::avx512`] says so), and so are the [`Tuning`] and the threads. Every step checks all counts and lengths before writing
/// anything. The accumulators are [`AlignedBuf`]s (64-byte aligned; huge pages advised from 2 MiB).
///
/// ```
/// use adagrad::{Adagrad, Config};
/// let mut w = vec![1.0f32; 3];
/// let mut b = vec![0.0f32; 1];
/// let mut opt = Adagrad::<f32>::new(Config::default().lr(0.1), &[w.len(), b.len()]).unwrap();
/// opt.step(&mut [&mut w, &mut b], &[&[0.5, -0.5, 0.0], &[2.0]]).unwrap();
/// assert_eq!(w, [0.9, 1.1, 1.0]);
/// assert_eq!(b, [-0.1]);
/// assert_eq!(opt.step_count(), 1);
/// assert_eq!(opt.state()[1], [4.0]);
/// ```
#[derive(Debug)]
pub struct Adagrad<T: Float> {
    pub(crate) config: Config,
    kernels: Kernels,
    tuning: Tuning,
    /// Helper threads (`None`: sequential) and the number of threads a step uses, the caller included.
    pool: Option<Arc<ThreadPool>>,
    threads: usize,
    pub(crate) state: Vec<AlignedBuf<T>>,
    pub(crate) step: u64,
}

impl<T: Float> Adagrad<T> {
    /// An optimizer for tensors of the given lengths, each accumulator set to `initial_accumulator_value`.
    ///
    /// Sizes that cannot be allocated are an [`Error::Alloc`]; an invalid `ADAGRAD_ISA` or `ADAGRAD_TUNE` is an
    /// error too.
    pub fn new(config: Config, lengths: &[usize]) -> Result<Self, Error> {
        config.validate_for::<T>()?;
        let tuning = match config.tuning {
            Some(t) => t,
            None => Tuning::detect()?,
        };
        let kernels = match (config.isa, Isa::from_env()?) {
            (Some(isa), _) | (None, Some(isa)) => Kernels::new(isa)?,
            // The default: the best path, or AVX2 where the tuning says 256-bit vectors are faster.
            (None, None) if !tuning.avx512 && Isa::best() == Isa::Avx512 => {
                Kernels::new(Isa::Avx2)?
            }
            (None, None) => Kernels::best(),
        };
        let kernels = kernels.with_prefetch(tuning.prefetch);
        let init = T::from_f64(config.initial_accumulator_value);
        let mut state = Vec::new();
        state
            .try_reserve_exact(lengths.len())
            .map_err(|_| Error::Alloc {
                elements: lengths.len(),
            })?;
        for &n in lengths {
            state.push(AlignedBuf::filled(n, init)?);
        }
        let (pool, threads) = match &config.parallelism {
            Parallelism::Sequential => (None, 1),
            Parallelism::Global => {
                let n = rayon::current_num_threads();
                (helpers(n), n)
            }
            Parallelism::Threads(n) => (helpers(*n), *n),
            Parallelism::Pool(p) => (Some(p.clone()), p.current_num_threads()),
        };
        let threads = if pool.is_some() { threads } else { 1 };
        Ok(Adagrad {
            config,
            kernels,
            tuning,
            pool,
            threads,
            state,
            step: 0,
        })
    }

    /// One step over every tensor: `params[i]` and `grads[i]` must have the length of tensor `i`. Gradients are
    /// `T`, or for f32 parameters also [`bf16`](crate::bf16) / [`f16`](crate::f16) (widened exactly).
    ///
    /// On any mismatch, returns the error and changes nothing. With [`NonFinite::SkipStep`] a step whose
    /// gradients hold NaN or ±∞ changes nothing and returns [`StepOutcome::Skipped`].
    pub fn step<G: Grad<T>>(
        &mut self,
        params: &mut [&mut [T]],
        grads: &[&[G]],
    ) -> Result<StepOutcome, Error> {
        self.step_with::<G, NoCopy>(params, grads, None, None)
    }

    /// One step of an optimizer that holds a single tensor.
    ///
    /// ```
    /// use adagrad::{Adagrad, Config};
    /// let mut p = vec![1.0f32; 4];
    /// let mut opt = Adagrad::<f32>::new(Config::default().lr(0.5), &[4]).unwrap();
    /// opt.step_flat(&mut p, &[1.0; 4]).unwrap();
    /// assert_eq!(p, [0.5; 4]); // 1 − 0.5·1/(√1 + 1e-10), and 1 + 1e-10 rounds to 1 in f32
    /// ```
    pub fn step_flat<G: Grad<T>>(
        &mut self,
        params: &mut [T],
        grads: &[G],
    ) -> Result<StepOutcome, Error> {
        self.step(&mut [params], &[grads])
    }

    /// The general step: gradients in format `G`, optionally divided by `grad_scale` inside the fused pass
    /// (bit-identical to dividing first; PyTorch's `grad_scale`), and optionally the updated parameters written,
    /// rounded to `O` ([`bf16`](crate::bf16) or [`f16`](crate::f16)), into `copy_out` in the same pass.
    ///
    /// ```
    /// use adagrad::{Adagrad, Config, bf16};
    /// // CPU-offloaded step: bf16 gradients in, f32 master weights and state kept, bf16 weights out.
    /// let mut master = vec![1.0f32; 8];
    /// let grads = vec![bf16::from_f32(1024.0); 8]; // scaled by a loss scale of 2048
    /// let mut weights = vec![bf16::ZERO; 8];
    /// let mut opt = Adagrad::<f32>::new(Config::default().lr(0.1), &[8])?;
    /// opt.step_with(&mut [&mut master], &[&grads], Some(&mut [&mut weights]), Some(2048.0))?;
    /// assert_eq!(master[0], 0.9);
    /// assert_eq!(opt.state()[0][0], 0.25); // (1024 / 2048)²
    /// assert_eq!(weights[0], bf16::from_f32(0.9));
    /// # Ok::<(), adagrad::Error>(())
    /// ```
    pub fn step_with<G: Grad<T>, O: CopyOut<T>>(
        &mut self,
        params: &mut [&mut [T]],
        grads: &[&[G]],
        copy_out: Option<&mut [&mut [O]]>,
        grad_scale: Option<f64>,
    ) -> Result<StepOutcome, Error> {
        self.check(params, grads)?;
        let out: &mut [&mut [O]] = match copy_out {
            Some(out) if O::KIND != 0 => {
                self.check_out(out)?;
                out
            }
            _ => &mut [],
        };
        let t = self.step.checked_add(1).ok_or(Error::StepCountOverflow)?;
        let mut h = self.hyper(t);
        if let Some(scale) = grad_scale {
            // Judged as the kernels will use it: rounded to T (1e-50 is positive in f64 and 0 in f32).
            let rounded = T::from_f64(scale);
            if !(rounded.is_finite() && rounded > T::ZERO) {
                return Err(Error::InvalidGradScale(scale));
            }
            h = h.with_grad_scale(scale);
        }
        if self.config.non_finite != NonFinite::Propagate {
            let count = self.count_non_finite(grads, h.grad_scale);
            if count > 0 {
                return match self.config.non_finite {
                    NonFinite::Error => Err(Error::NonFiniteGradient { count }),
                    _ => Ok(StepOutcome::Skipped { non_finite: count }),
                };
            }
        }
        let pr = self.config.precision;
        let seg = Seg::new(params, grads, &mut self.state, out);
        // Thresholds and piece sizes count f32 elements; an f64 element is about four times the work.
        let weight = Tuning::weight::<T>();
        let pool = self
            .pool
            .as_deref()
            .filter(|_| seg.len().saturating_mul(weight) >= self.tuning.parallel_threshold);
        seg.run(
            &self.kernels,
            &h,
            pr,
            pool,
            self.threads,
            self.tuning.min_piece.div_ceil(weight),
        );
        self.step += 1;
        Ok(StepOutcome::Applied)
    }

    fn check<G>(&self, params: &[&mut [T]], grads: &[&[G]]) -> Result<(), Error> {
        let expected = self.state.len();
        if params.len() != expected || grads.len() != expected {
            return Err(Error::TensorCount {
                expected,
                params: params.len(),
                grads: grads.len(),
            });
        }
        for (tensor, ((p, g), s)) in params.iter().zip(grads).zip(&self.state).enumerate() {
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

    fn check_out<O>(&self, out: &[&mut [O]]) -> Result<(), Error> {
        if out.len() != self.state.len() {
            return Err(Error::CopyOutCount {
                expected: self.state.len(),
                got: out.len(),
            });
        }
        for (tensor, (o, s)) in out.iter().zip(&self.state).enumerate() {
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

    /// Counts NaN and ±∞ gradient elements, on the optimizer's threads for large steps.
    /// The gradient judged is the one the update uses: divided by the gradient scale (in `T`, as the kernels
    /// divide), so a finite gradient that unscaling makes infinite counts too.
    fn count_non_finite<G: Grad<T>>(&self, grads: &[&[G]], scale: Option<T>) -> usize {
        let count = |g: &[G]| match scale {
            Some(sc) => g.iter().filter(|x| !(x.widen() / sc).is_finite()).count(),
            None => g.iter().filter(|x| !x.widen().is_finite()).count(),
        };
        let total: usize = grads.iter().map(|g| g.len()).sum();
        match &self.pool {
            Some(pool)
                if total.saturating_mul(Tuning::weight::<T>())
                    >= self.tuning.parallel_threshold =>
            {
                pool.install(|| {
                    grads
                        .par_iter()
                        .flat_map(|g| g.par_chunks(self.tuning.min_piece.max(1)))
                        .map(count)
                        .sum()
                })
            }
            _ => grads.iter().map(|g| count(g)).sum(),
        }
    }

    /// The hyperparameters of step `t` (1-based), rounded to `T`.
    pub fn hyper(&self, t: u64) -> Hyper<T> {
        let c = &self.config;
        Hyper::new(
            c.lr,
            c.lr_decay,
            t,
            c.weight_decay,
            c.eps,
            c.maximize,
            c.eps_placement,
        )
    }

    /// Changes the base learning rate for the following steps (for schedulers). A negative, NaN or infinite value
    /// is refused and nothing changes.
    pub fn set_lr(&mut self, lr: f64) -> Result<(), Error> {
        validate_value("lr", lr)?;
        Config {
            lr,
            ..self.config.clone()
        }
        .validate_for::<T>()?;
        self.config.lr = lr;
        Ok(())
    }

    /// The base learning rate.
    pub fn lr(&self) -> f64 {
        self.config.lr
    }

    /// Steps taken so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The accumulators G, one buffer per tensor.
    pub fn state(&self) -> &[AlignedBuf<T>] {
        &self.state
    }

    /// The performance settings every step uses (see [`Tuning`]).
    ///
    /// ```
    /// use adagrad::{Adagrad, Config};
    /// let opt = Adagrad::<f32>::new(Config::default(), &[10])?;
    /// println!("{}", opt.tuning()); // e.g. prefetch=0,threshold=65536,piece=16384 (table entry "intel")
    /// # Ok::<(), adagrad::Error>(())
    /// ```
    pub fn tuning(&self) -> Tuning {
        self.tuning
    }

    /// How many threads a large step runs on, the calling thread included (1: sequential).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The kernel path every step runs.
    pub fn isa(&self) -> Isa {
        self.kernels.isa()
    }
}
