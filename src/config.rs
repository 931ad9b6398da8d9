//! Hyperparameters, with PyTorch's names and defaults, and their validation.

use crate::{Error, Tuning, TuningSource};
use adagrad_kernels::{Cpu, EpsPlacement, Isa, Precision};
use std::fmt;
use std::sync::Arc;

/// What a step does when a gradient element is NaN or ±∞.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum NonFinite {
    /// Apply the step anyway: NaN and ∞ propagate into parameters and state, as in PyTorch. No check is made, so
    /// this costs nothing. The default.
    #[default]
    Propagate,
    /// Check every gradient first, as the update will use it (divided by the gradient scale; for an embedding
    /// step, each touched row's lookups summed with their weights); if any element is non-finite, change nothing
    /// (parameters, state, step count) and report [`crate::StepOutcome::Skipped`] with the count, as a dynamic
    /// loss scaler wants.
    SkipStep,
    /// The same check; return [`crate::Error::NonFiniteGradient`] and change nothing.
    Error,
}

/// The most threads a step may use ([`Parallelism::Threads`], or `RAYON_NUM_THREADS` for
/// [`Parallelism::Global`]); a larger count is refused with [`crate::Error::TooManyThreads`] before any thread is
/// started.
pub const MAX_THREADS: usize = 1024;

/// Where a step's work runs.
///
/// A parallel step is cut into chunks (by element count, across tensor boundaries, a few per thread) taken in
/// order from a shared cursor: the calling thread starts at once, helper threads join as they wake, and the caller
/// waits only for chunks a helper is running, never for a helper that has not started — so a step on many threads
/// is not slower than on one when the helpers are asleep or their CPUs busy with the host's work. Steps smaller
/// than [`Tuning::parallel_threshold`] run on the calling thread alone. At most [`MAX_THREADS`] threads: a larger
/// count is refused ([`crate::Error::TooManyThreads`]) when an optimizer or executor is built.
#[derive(Clone, Default)]
pub enum Parallelism {
    /// On the calling thread only.
    Sequential,
    /// As many threads as rayon's global pool would have (`RAYON_NUM_THREADS` when it is a positive integer, else
    /// one per CPU): the caller plus that many minus one helper threads of a pool this crate keeps for the purpose
    /// (the default). Rayon's global pool itself is not started.
    #[default]
    Global,
    /// `n` threads: the caller and `n − 1` helpers from a pool this crate keeps (shared by every optimizer that
    /// asks for `n`). `Threads(0)` and `Threads(1)` are sequential.
    Threads(usize),
    /// A caller-provided rayon pool of `t` threads: the caller and `t − 1` of the pool's threads work on a step
    /// (one stays free, as the caller takes its share). Prefer [`Parallelism::Threads`] unless the pool is shared
    /// with other work.
    Pool(Arc<rayon::ThreadPool>),
    /// A thread team the host program already runs, which steps borrow (see [`HostTeam`]): the Python package
    /// passes the OpenMP team PyTorch has loaded, so a step runs on threads that are awake right after torch's own
    /// parallel work and `torch.set_num_threads` sets its threads. Its [`HostTeam::threads`] count is bounded by
    /// [`MAX_THREADS`] like any other.
    Host(Arc<dyn HostTeam>),
}

/// A thread team of the host program that can run one closure on several of its threads at once, as an OpenMP
/// `parallel` region does: the crate's chunked steps ([`Parallelism::Host`]) hand it a closure that takes chunks
/// from a shared cursor until none are left, so any number of its threads (even only the caller) completes the
/// step, and the bits never depend on which thread took which chunk.
pub trait HostTeam: Send + Sync {
    /// Calls `job` on up to `threads` threads of the team, the calling thread among them, and returns when every
    /// call has returned. Whatever `job` leaves undone (a team that runs fewer threads, or none) the crate runs on
    /// the calling thread afterwards.
    fn run(&self, threads: usize, job: &(dyn Fn() + Sync));
    /// How many threads a step uses on this team, the caller included.
    fn threads(&self) -> usize;
    /// A name for messages and `Debug` (e.g. "openmp").
    fn name(&self) -> &str;
}

impl fmt::Debug for Parallelism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Parallelism::Sequential => f.write_str("Sequential"),
            Parallelism::Global => f.write_str("Global"),
            Parallelism::Threads(n) => write!(f, "Threads({n})"),
            Parallelism::Pool(p) => write!(f, "Pool({} threads)", p.current_num_threads()),
            Parallelism::Host(h) => write!(f, "Host({}, {} threads)", h.name(), h.threads()),
        }
    }
}

/// The optimizer's configuration. Field names and defaults are PyTorch's `torch.optim.Adagrad`.
///
/// ```
/// use adagrad::{Config, EpsPlacement};
/// let c = Config::default().lr(0.1).weight_decay(1e-4);
/// assert_eq!(c.eps, 1e-10);
/// assert_eq!(c.eps_placement, EpsPlacement::Outside);
/// assert!(c.validate().is_ok());
/// assert!(Config::default().lr(-1.0).validate().is_err());
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    /// Learning rate α (PyTorch default 0.01).
    pub lr: f64,
    /// Learning-rate decay: step t uses `lr / (1 + (t − 1)·lr_decay)` (default 0).
    pub lr_decay: f64,
    /// L2 penalty added to the gradient: `g + wd·θ` (default 0).
    pub weight_decay: f64,
    /// The accumulator's starting value G₀ (default 0).
    pub initial_accumulator_value: f64,
    /// ε (default 1e-10).
    pub eps: f64,
    /// Ascend the objective instead of descending it (default false).
    pub maximize: bool,
    /// `√G + ε` (Outside, PyTorch, default) or `√(G + ε)` (Inside, Optax, Keras 3).
    pub eps_placement: EpsPlacement,
    /// Exact (bit-identical to the reference, default) or Fast (bounded error, see [`Precision`]).
    pub precision: Precision,
    /// Force a kernel path; `None` (default) takes `ADAGRAD_ISA` if set, else the best the CPU has.
    pub isa: Option<Isa>,
    /// Where steps run (default: rayon's global pool).
    pub parallelism: Parallelism,
    /// Performance settings (prefetch distance, parallel threshold, piece size); `None` (default): this CPU's
    /// entry of the built-in table, with `ADAGRAD_TUNE` applied. They never change results.
    pub tuning: Option<Tuning>,
    /// What to do with NaN or ±∞ gradients (default: propagate, as PyTorch).
    pub non_finite: NonFinite,
}

impl Default for Config {
    fn default() -> Self {
        Config::torch()
    }
}

impl Config {
    /// PyTorch's defaults: lr 0.01, lr_decay 0, weight_decay 0, initial_accumulator_value 0, eps 1e-10, ε outside
    /// the root.
    pub fn torch() -> Self {
        Config {
            lr: 0.01,
            lr_decay: 0.0,
            weight_decay: 0.0,
            initial_accumulator_value: 0.0,
            eps: 1e-10,
            maximize: false,
            eps_placement: EpsPlacement::Outside,
            precision: Precision::Exact,
            isa: None,
            parallelism: Parallelism::Global,
            tuning: None,
            non_finite: NonFinite::Propagate,
        }
    }

    /// Optax's `adagrad` (and the textbook form): ε inside the root, eps 1e-7, initial accumulator 0.1, lr 0.01.
    pub fn optax() -> Self {
        Config {
            eps: 1e-7,
            initial_accumulator_value: 0.1,
            eps_placement: EpsPlacement::Inside,
            ..Config::torch()
        }
    }

    /// Keras 3's `Adagrad`: ε inside the root, lr 0.001, eps 1e-7, initial accumulator 0.1.
    pub fn keras() -> Self {
        Config {
            lr: 0.001,
            ..Config::optax()
        }
    }

    /// Sets [`Config::lr`].
    pub fn lr(mut self, lr: f64) -> Self {
        self.lr = lr;
        self
    }
    /// Sets [`Config::lr_decay`].
    pub fn lr_decay(mut self, lr_decay: f64) -> Self {
        self.lr_decay = lr_decay;
        self
    }
    /// Sets [`Config::weight_decay`].
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }
    /// Sets [`Config::initial_accumulator_value`].
    pub fn initial_accumulator_value(mut self, v: f64) -> Self {
        self.initial_accumulator_value = v;
        self
    }
    /// Sets [`Config::eps`].
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }
    /// Sets [`Config::maximize`].
    pub fn maximize(mut self, maximize: bool) -> Self {
        self.maximize = maximize;
        self
    }
    /// Sets [`Config::eps_placement`].
    pub fn eps_placement(mut self, placement: EpsPlacement) -> Self {
        self.eps_placement = placement;
        self
    }
    /// Sets [`Config::precision`].
    pub fn precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }
    /// Sets [`Config::isa`].
    pub fn isa(mut self, isa: Isa) -> Self {
        self.isa = Some(isa);
        self
    }
    /// Sets [`Config::parallelism`].
    pub fn parallelism(mut self, parallelism: Parallelism) -> Self {
        self.parallelism = parallelism;
        self
    }

    /// Sets [`Config::non_finite`].
    pub fn non_finite(mut self, policy: NonFinite) -> Self {
        self.non_finite = policy;
        self
    }
    /// Sets [`Config::tuning`] (replacing the table and `ADAGRAD_TUNE`).
    pub fn tuning(mut self, tuning: Tuning) -> Self {
        self.tuning = Some(Tuning {
            source: TuningSource::Config,
            ..tuning
        });
        self
    }
    /// Sets the tuning's [`Tuning::parallel_threshold`]: the configured tuning's, or else this CPU's table entry's
    /// (without `ADAGRAD_TUNE`).
    pub fn parallel_threshold(self, elements: usize) -> Self {
        let base = self.tuning.unwrap_or_else(|| Tuning::for_cpu(&Cpu::this()));
        self.tuning(Tuning {
            parallel_threshold: elements,
            ..base
        })
    }

    /// Checks every value: each must be finite and not negative, and eps = 0 together with
    /// initial_accumulator_value = 0 is refused (an untouched element would compute 0/0 = NaN).
    pub fn validate(&self) -> Result<(), Error> {
        for (field, value) in [
            ("lr", self.lr),
            ("lr_decay", self.lr_decay),
            ("weight_decay", self.weight_decay),
            ("initial_accumulator_value", self.initial_accumulator_value),
            ("eps", self.eps),
        ] {
            validate_value(field, value)?;
        }
        if let Some(t) = &self.tuning {
            t.validate()?;
        }
        if self.eps == 0.0 && self.initial_accumulator_value == 0.0 {
            return Err(Error::InvalidConfig {
                field: "eps",
                value: self.eps,
                reason: "eps = 0 with initial_accumulator_value = 0 makes an element whose gradient is 0 compute \
                         0/0 = NaN; make one of them positive",
            });
        }
        Ok(())
    }
}

impl Config {
    /// The hyperparameters of step `t` (1-based) for parameters of type `T`, rounded once (see [`crate::Hyper::new`]).
    pub fn hyper<T: adagrad_kernels::Float>(&self, t: u64) -> adagrad_kernels::Hyper<T> {
        adagrad_kernels::Hyper::new(
            self.lr,
            self.lr_decay,
            t,
            self.weight_decay,
            self.eps,
            self.maximize,
            self.eps_placement,
        )
    }

    /// [`Config::validate`], then every value as the kernels of an `Adagrad<T>` will use it, rounded to `T`:
    /// `lr`, `weight_decay`, `initial_accumulator_value` and `eps` must stay finite (1e39 is +∞ in f32), and
    /// `eps` and `initial_accumulator_value` must not both round to 0 (1e-50 is 0 in f32: 0/0 at the first step).
    ///
    /// ```
    /// use adagrad::Config;
    /// assert!(Config::default().lr(1e39).validate_for::<f64>().is_ok());
    /// assert!(Config::default().lr(1e39).validate_for::<f32>().is_err());
    /// assert!(Config::default().eps(1e-50).validate_for::<f32>().is_err());
    /// ```
    pub fn validate_for<T: adagrad_kernels::Float>(&self) -> Result<(), Error> {
        self.validate()?;
        for (field, value) in [
            ("lr", self.lr),
            ("weight_decay", self.weight_decay),
            ("initial_accumulator_value", self.initial_accumulator_value),
            ("eps", self.eps),
        ] {
            if !T::from_f64(value).is_finite() {
                return Err(Error::InvalidConfig {
                    field,
                    value,
                    reason: "overflows to infinity in the parameter type",
                });
            }
        }
        if T::from_f64(self.eps) == T::ZERO
            && T::from_f64(self.initial_accumulator_value) == T::ZERO
        {
            return Err(Error::InvalidConfig {
                field: "eps",
                value: self.eps,
                reason: "eps and initial_accumulator_value both round to 0 in the parameter type, so an element \
                         whose gradient is 0 would compute 0/0 = NaN; make one of them larger",
            });
        }
        Ok(())
    }
}

/// A hyperparameter must be finite and not negative.
pub(crate) fn validate_value(field: &'static str, value: f64) -> Result<(), Error> {
    let reason = if value.is_nan() {
        "is NaN"
    } else if value.is_infinite() {
        "is infinite"
    } else if value < 0.0 {
        "is negative"
    } else {
        return Ok(());
    };
    Err(Error::InvalidConfig {
        field,
        value,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_set_their_field() {
        let t = Tuning::for_cpu(&Cpu::this());
        let c = Config::default()
            .lr(0.5)
            .lr_decay(0.25)
            .weight_decay(0.125)
            .initial_accumulator_value(0.75)
            .eps(1e-6)
            .maximize(true)
            .eps_placement(EpsPlacement::Inside)
            .precision(Precision::Fast)
            .isa(Isa::Scalar)
            .parallelism(Parallelism::Threads(3))
            .non_finite(NonFinite::SkipStep)
            .tuning(t);
        assert_eq!(
            (
                c.lr,
                c.lr_decay,
                c.weight_decay,
                c.initial_accumulator_value,
                c.eps
            ),
            (0.5, 0.25, 0.125, 0.75, 1e-6)
        );
        assert!(c.maximize);
        assert_eq!(c.eps_placement, EpsPlacement::Inside);
        assert_eq!(c.precision, Precision::Fast);
        assert_eq!(c.isa, Some(Isa::Scalar));
        assert_eq!(c.non_finite, NonFinite::SkipStep);
        assert!(matches!(c.parallelism, Parallelism::Threads(3)));
        // A configured tuning is marked as such, and the threshold builder keeps the rest of it.
        let tuned = c.tuning.unwrap();
        assert_eq!(tuned.source, TuningSource::Config);
        assert_eq!((tuned.prefetch, tuned.min_piece), (t.prefetch, t.min_piece));
        let c = c.parallel_threshold(7);
        assert_eq!(c.tuning.unwrap().parallel_threshold, 7);
        assert_eq!(c.tuning.unwrap().prefetch, t.prefetch);
    }

    #[test]
    fn presets_have_their_libraries_defaults() {
        let t = Config::torch();
        assert_eq!(
            (
                t.lr,
                t.lr_decay,
                t.weight_decay,
                t.initial_accumulator_value,
                t.eps
            ),
            (0.01, 0.0, 0.0, 0.0, 1e-10)
        );
        assert_eq!(
            (t.eps_placement, t.precision, t.maximize),
            (EpsPlacement::Outside, Precision::Exact, false)
        );
        assert_eq!(Config::default().lr, t.lr);
        let o = Config::optax();
        assert_eq!(
            (o.lr, o.eps, o.initial_accumulator_value, o.eps_placement),
            (0.01, 1e-7, 0.1, EpsPlacement::Inside)
        );
        assert_eq!(Config::keras().lr, 0.001);
    }

    #[test]
    fn parallelism_debug_names_the_variant() {
        let pool = Arc::new(
            rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .build()
                .unwrap(),
        );
        assert_eq!(format!("{:?}", Parallelism::Sequential), "Sequential");
        assert_eq!(format!("{:?}", Parallelism::Global), "Global");
        assert_eq!(format!("{:?}", Parallelism::Threads(3)), "Threads(3)");
        assert_eq!(format!("{:?}", Parallelism::Pool(pool)), "Pool(2 threads)");
    }
}
