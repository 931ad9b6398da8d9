//! The optimizer: state per tensor, the step count, and the step itself.

use crate::config::validate_value;
use crate::parallel::Seg;
use crate::{Config, Error, Parallelism};
use adagrad_kernels::{Float, Hyper, Isa, Kernels};

/// Adagrad over a fixed list of parameter tensors of type `T` (`f32` or `f64`).
///
/// The kernel path is chosen once, at construction ([`Config::isa`], else `ADAGRAD_ISA`, else the best the CPU
/// has). Every step checks all counts and lengths before writing anything.
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
    config: Config,
    kernels: Kernels,
    state: Vec<Vec<T>>,
    step: u64,
}

impl<T: Float> Adagrad<T> {
    /// An optimizer for tensors of the given lengths, each accumulator set to `initial_accumulator_value`.
    pub fn new(config: Config, lengths: &[usize]) -> Result<Self, Error> {
        config.validate()?;
        let kernels = match config.isa {
            Some(isa) => Kernels::new(isa)?,
            None => Kernels::from_env()?,
        };
        let init = T::from_f64(config.initial_accumulator_value);
        let state = lengths.iter().map(|&n| vec![init; n]).collect();
        Ok(Adagrad {
            config,
            kernels,
            state,
            step: 0,
        })
    }

    /// One step over every tensor: `params[i]` and `grads[i]` must have the length of tensor `i`.
    ///
    /// On any mismatch, returns the error and changes nothing.
    pub fn step(&mut self, params: &mut [&mut [T]], grads: &[&[T]]) -> Result<(), Error> {
        self.check(params, grads)?;
        let h = self.hyper(self.step + 1);
        let pr = self.config.precision;
        let threshold = self.config.parallel_threshold;
        let seg = Seg::new(params, grads, &mut self.state);
        let k = &self.kernels;
        match &self.config.parallelism {
            Parallelism::Sequential => seg.run(k, &h, pr, 1, threshold),
            Parallelism::Global => seg.run(k, &h, pr, rayon::current_num_threads(), threshold),
            Parallelism::Pool(pool) => {
                let threads = pool.current_num_threads();
                if threads <= 1 || seg.len() < threshold {
                    seg.run(k, &h, pr, 1, threshold);
                } else {
                    pool.install(|| seg.run(k, &h, pr, threads, threshold));
                }
            }
        }
        self.step += 1;
        Ok(())
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
    pub fn step_flat(&mut self, params: &mut [T], grads: &[T]) -> Result<(), Error> {
        self.step(&mut [params], &[grads])
    }

    fn check(&self, params: &[&mut [T]], grads: &[&[T]]) -> Result<(), Error> {
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

    /// The accumulators G, one vector per tensor.
    pub fn state(&self) -> &[Vec<T>] {
        &self.state
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
