//! The optimizer: state per tensor, the step count, and the step itself.

use crate::functional::{self, Executor};
use crate::stats::{LrStats, StatsFloat, lr_stats};
use crate::{AlignedBuf, Config, Error, Tuning};
use adagrad_kernels::{CopyOut, Float, Grad, Hyper, Isa, NoCopy};

/// What a step did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    /// Parameters and state were updated and the step count advanced.
    Applied,
    /// [`crate::NonFinite::SkipStep`]: `non_finite` gradient elements were NaN or ±∞, so nothing changed.
    Skipped {
        /// How many gradient elements were non-finite.
        non_finite: usize,
    },
}

/// Adagrad over a fixed list of parameter tensors of type `T` (`f32` or `f64`).
///
/// The kernel path is chosen once, at construction ([`Config::isa`], else `ADAGRAD_ISA`, else the best the CPU
/// has — AVX2 rather than AVX-512 where [`Tuning::avx512`] says so), and so are the [`Tuning`] and the threads.
/// Every step checks all counts and lengths before writing anything. The accumulators are [`AlignedBuf`]s
/// (64-byte aligned; huge pages advised from 2 MiB).
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
    exec: Executor,
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
        let exec = Executor::new(&config)?;
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
        Ok(Adagrad {
            config,
            exec,
            state,
            step: 0,
        })
    }

    /// One step over every tensor: `params[i]` and `grads[i]` must have the length of tensor `i`. Gradients are
    /// `T`, or for f32 parameters also [`bf16`](crate::bf16) / [`f16`](crate::f16) (widened exactly).
    ///
    /// On any mismatch, returns the error and changes nothing. With [`crate::NonFinite::SkipStep`] a step whose
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
        let t = self.step.checked_add(1).ok_or(Error::StepCountOverflow)?;
        let outcome = functional::run(
            &self.exec,
            &self.config,
            t,
            params,
            grads,
            &mut self.state,
            copy_out,
            grad_scale,
        )?;
        if outcome == StepOutcome::Applied {
            self.step = t;
        }
        Ok(outcome)
    }

    /// The hyperparameters of step `t` (1-based), rounded to `T`.
    pub fn hyper(&self, t: u64) -> Hyper<T> {
        self.config.hyper(t)
    }

    /// Changes the base learning rate for the following steps (for schedulers). A negative, NaN or infinite value
    /// is refused and nothing changes.
    pub fn set_lr(&mut self, lr: f64) -> Result<(), Error> {
        // The whole configuration with the new rate, checked as T holds it (lr first, as before).
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
    /// println!("{}", opt.tuning()); // e.g. prefetch=4096,threshold=16384,piece=8192,avx512=0,rows_ahead=8,lookups_ahead=8,sort=131072 (table entry "intel")
    /// # Ok::<(), adagrad::Error>(())
    /// ```
    pub fn tuning(&self) -> Tuning {
        self.exec.tuning()
    }

    /// How many threads a large step runs on, the calling thread included (1: sequential).
    pub fn threads(&self) -> usize {
        self.exec.threads()
    }

    /// What the steps run on (path, tuning, threads), for [`functional::step`] calls alongside this optimizer.
    pub fn executor(&self) -> &Executor {
        &self.exec
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The kernel path every step runs.
    pub fn isa(&self) -> Isa {
        self.exec.isa()
    }
}

impl<T: StatsFloat> Adagrad<T> {
    /// Per tensor, statistics of the effective learning rate its next step will use, `clr / (√G + ε)` (or
    /// `clr / √(G + ε)`), and how many elements are below `threshold` (see [`crate::stats`]): Adagrad's rate only
    /// shrinks, and this shows how far. Computed from the state on request (two reads of it for f32, four for
    /// f64, on the calling thread; about 5 steps' time), never inside a step. `threshold` must be finite and not negative.
    ///
    /// ```
    /// use adagrad::{Adagrad, Config};
    /// let mut opt = Adagrad::<f32>::new(Config::default().lr(0.1).eps(1e-8), &[3])?;
    /// let mut w = [1.0f32; 3];
    /// for _ in 0..100 {
    ///     opt.step_flat(&mut w, &[0.5, 0.05, 0.0])?;
    /// }
    /// let s = opt.lr_stats(1e-3)?[0];
    /// assert!(s.min < 0.1 / 4.9 && s.max > 1e6);  // √G = 0.5·√100 = 5 for the first element; 0 for the last
    /// assert_eq!(s.below, 0);
    /// # Ok::<(), adagrad::Error>(())
    /// ```
    pub fn lr_stats(&self, threshold: f64) -> Result<Vec<LrStats>, Error> {
        let h = self.config.hyper::<T>(self.step.saturating_add(1));
        self.state
            .iter()
            .map(|g| lr_stats(g, &h, threshold))
            .collect()
    }
}
