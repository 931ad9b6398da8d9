//! The optimizer: [`EmbeddingAdagrad`] (owning the accumulators, step count and scratch) and the functional pair
//! it is made of, [`prepare`] (stages 1 and 2: check and group, writing only the scratch) and [`apply`] (stage 3
//! on the caller's table and state, after checking their lengths and the hyperparameters).

use super::check;
use super::group::{self, Scratch};
use super::table::{RowCtx, Table};
use super::types::{Accumulator, Id, LookupError, Lookups, TableOptions};
use super::update::{self, Source};
use crate::functional::Executor;
use crate::{AlignedBuf, Config, Error, NonFinite, StepOutcome};
use adagrad_kernels::rowwise::{DecayMode, RowHyper};
use adagrad_kernels::{Grad, Hyper, Isa};

/// Adagrad for one embedding table of `rows × dim` elements of type `W`, with f32 state.
///
/// The table itself is the caller's (a slice given to every step); the optimizer owns the accumulators (`rows`
/// of them for [`Accumulator::RowWise`], `rows · dim` for [`Accumulator::ElementWise`]) and the step count. Every
/// step validates all of its input before writing anything. Threads, kernel path and tuning come from the
/// [`Config`], as for [`crate::Adagrad`]; results never depend on them.
#[derive(Debug)]
pub struct EmbeddingAdagrad<W: Table> {
    pub(crate) config: Config,
    pub(crate) options: TableOptions,
    exec: Executor,
    pub(crate) rows: usize,
    pub(crate) dim: usize,
    state: AlignedBuf<f32>,
    pub(crate) step: u64,
    scratch: Scratch,
    _table: std::marker::PhantomData<fn(&mut [W])>,
}

impl<W: Table> EmbeddingAdagrad<W> {
    /// An optimizer for a table of `rows × dim` elements (`dim ≥ 1`, `rows < 2³²`), every accumulator set to
    /// `initial_accumulator_value`. The configuration is validated as f32 values (the state's type).
    pub fn new(
        config: Config,
        rows: usize,
        dim: usize,
        options: TableOptions,
    ) -> Result<Self, Error> {
        config.validate_for::<f32>()?;
        let elements = check::table_elements(rows, dim)?;
        let exec = Executor::new(&config)?;
        let n = match options.accumulator {
            Accumulator::RowWise => rows,
            Accumulator::ElementWise => elements,
        };
        let state = AlignedBuf::filled(n, config.initial_accumulator_value as f32)?;
        Ok(EmbeddingAdagrad {
            config,
            options,
            exec,
            rows,
            dim,
            state,
            step: 0,
            scratch: Scratch::default(),
            _table: std::marker::PhantomData,
        })
    }

    /// One step: validates `table` and `lookups` (see [`LookupError`]), sums each touched row's gradients in
    /// ascending lookup position, and updates each touched row once. On any error nothing is changed; with
    /// [`NonFinite::SkipStep`] a step whose summed row gradients (see [`Prepared::non_finite`]) hold NaN or ±∞
    /// changes nothing and returns [`StepOutcome::Skipped`].
    pub fn step<I: Id, G: Grad<f32>>(
        &mut self,
        table: &mut [W],
        lookups: Lookups<'_, I, G>,
    ) -> Result<StepOutcome, Error> {
        let t = self.step.checked_add(1).ok_or(Error::StepCountOverflow)?;
        let expected = self.rows * self.dim;
        if table.len() != expected {
            return Err(LookupError::TableLength {
                expected,
                got: table.len(),
            }
            .into());
        }
        let prepared = prepare(&self.exec, self.rows, self.dim, lookups, &mut self.scratch)?;
        if self.config.non_finite != NonFinite::Propagate {
            let bad = prepared.non_finite(&self.exec);
            if bad > 0 {
                return match self.config.non_finite {
                    NonFinite::Error => Err(Error::NonFiniteGradient { count: bad }),
                    _ => Ok(StepOutcome::Skipped { non_finite: bad }),
                };
            }
        }
        apply(
            &self.exec,
            &self.config,
            &self.options,
            t,
            table,
            self.state.as_mut_slice(),
            &prepared,
        )?;
        self.step = t;
        Ok(StepOutcome::Applied)
    }

    /// The accumulators: one per row (row-wise) or `rows · dim`, row-major (element-wise).
    pub fn state(&self) -> &[f32] {
        self.state.as_slice()
    }

    /// The accumulators, to set them (initialising or restoring a table's state). Every value must be finite and
    /// not negative for the steps' results to mean anything; nothing checks them here.
    pub fn state_mut(&mut self) -> &mut [f32] {
        self.state.as_mut_slice()
    }

    /// Steps taken so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Statistics of the effective learning rate the next step would give each accumulator (each row's, or each
    /// element's), `clr / (√G + ε)` (or `clr / √(G + ε)`), and how many are below `threshold` (see
    /// [`crate::stats`]). A row never looked up keeps its initial accumulator, and so the largest rate. Computed
    /// from the state on request (two reads of it, on the calling thread; about 5 steps' time), never inside a step.
    pub fn lr_stats(&self, threshold: f64) -> Result<crate::stats::LrStats, Error> {
        let h = self.config.hyper::<f32>(self.step.saturating_add(1));
        crate::stats::lr_stats(self.state.as_slice(), &h, threshold)
    }

    /// Rows of the table.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Elements per row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The embedding-specific options.
    pub fn options(&self) -> TableOptions {
        self.options
    }

    /// The kernel path.
    pub fn isa(&self) -> Isa {
        self.exec.isa()
    }

    /// Threads a large step runs on, the caller included.
    pub fn threads(&self) -> usize {
        self.exec.threads()
    }

    /// The performance settings in use (prefetch distances, thresholds); they change no bit of any result.
    pub fn tuning(&self) -> crate::Tuning {
        self.exec.tuning()
    }

    /// Changes the base learning rate for the following steps; a negative, NaN or infinite value (or one that
    /// overflows f32) is refused and nothing changes.
    pub fn set_lr(&mut self, lr: f64) -> Result<(), Error> {
        Config {
            lr,
            ..self.config.clone()
        }
        .validate_for::<f32>()?;
        self.config.lr = lr;
        Ok(())
    }
}

/// Lookups validated for a table of `rows × dim`, grouped by row in the scratch they borrow: what [`apply`] runs.
pub struct Prepared<'a, G> {
    pub(super) src: Source<'a, G>,
    pub(super) keys: &'a [u64],
    pub(super) starts: &'a [u32],
    pub(super) rows: usize,
    pub(super) dim: usize,
}

impl<G: Grad<f32>> Prepared<'_, G> {
    /// Elements of the gradients the update will use that are NaN or ±∞: each touched row's gradient summed over
    /// its lookups, weights applied, exactly as the row update sums it (so a sum that overflows to ∞, or a weight
    /// of 1e30 on a gradient of 1e30, counts, and a gradient row no lookup uses does not). A pass that sums without
    /// writing anything, on `exec`'s threads for large steps; the step's policy ([`crate::NonFinite`]) judges by
    /// it.
    pub fn non_finite(&self, exec: &Executor) -> usize {
        update::non_finite(exec, self)
    }

    /// Rows the step touches.
    pub fn touched_rows(&self) -> usize {
        self.starts.len() - 1
    }
}

/// The functional form's first half: validates `lookups` for a table of `rows × dim` (ids, lengths, offsets,
/// weights, duplicates in coalesced input: see [`LookupError`]) and groups them by row in `scratch` (keep one per
/// table and reuse it: steps of repeating sizes then allocate nothing), on `exec`'s threads for large steps.
/// Writes nothing but the scratch.
///
/// ```
/// use adagrad::embedding::{self, Accumulator, Lookups, Scratch, TableOptions};
/// use adagrad::{Config, Executor};
/// let config = Config::default().lr(0.1).eps(1e-8);
/// let exec = Executor::new(&config)?;
/// let options = TableOptions::default().accumulator(Accumulator::ElementWise);
/// let (rows, dim) = (10, 2);
/// let (mut table, mut state) = (vec![1.0f32; rows * dim], vec![0.0f32; rows * dim]); // caller-owned
/// let mut scratch = Scratch::default();
/// let prepared = embedding::prepare(&exec, rows, dim, Lookups::Rows { ids: &[3i64], grads: &[2.0, 2.0] }, &mut scratch)?;
/// embedding::apply(&exec, &config, &options, 1, &mut table, &mut state, &prepared)?;
/// assert_eq!((table[6], state[6]), (0.9, 4.0));
/// # Ok::<(), adagrad::Error>(())
/// ```
pub fn prepare<'a, I: Id, G: Grad<f32>>(
    exec: &Executor,
    rows: usize,
    dim: usize,
    lookups: Lookups<'a, I, G>,
    scratch: &'a mut Scratch,
) -> Result<Prepared<'a, G>, Error> {
    check::table_elements(rows, dim)?;
    let (src, plan) = check::lookups(exec, rows, dim, lookups, scratch)?;
    group::group(plan, scratch, rows)?;
    if let Lookups::Coalesced { .. } = lookups {
        check::first_duplicate(&scratch.keys, &scratch.starts[..=scratch.runs])?;
    }
    let scratch: &'a Scratch = scratch;
    Ok(Prepared {
        src: src.with_bags(&scratch.bag_of),
        keys: &scratch.keys,
        starts: &scratch.starts[..=scratch.runs],
        rows,
        dim,
    })
}

/// The functional form's second half: applies `prepared` to the caller's `table` (`rows × dim`) and `state`
/// (`rows` accumulators for [`Accumulator::RowWise`], `rows × dim` for [`Accumulator::ElementWise`]) as step `t`
/// (1-based: 0 is refused, as by [`crate::functional::step`]) with `config`'s hyperparameters (validated here, as
/// f32) on `exec`'s path and threads — the same
/// arithmetic, threads and bits as [`EmbeddingAdagrad::step`], which is this pair on its own state. Checks every
/// length first; on error nothing is changed. (The non-finite policy is the caller's: see
/// [`Prepared::non_finite`].)
pub fn apply<W: Table, G: Grad<f32>>(
    exec: &Executor,
    config: &Config,
    options: &TableOptions,
    t: u64,
    table: &mut [W],
    state: &mut [f32],
    prepared: &Prepared<'_, G>,
) -> Result<(), Error> {
    crate::functional::check_step(t)?;
    config.validate_for::<f32>()?;
    let (rows, dim) = (prepared.rows, prepared.dim);
    if table.len() != rows * dim {
        return Err(LookupError::TableLength {
            expected: rows * dim,
            got: table.len(),
        }
        .into());
    }
    let per_row = match options.accumulator {
        Accumulator::RowWise => 1,
        Accumulator::ElementWise => dim,
    };
    if state.len() != rows * per_row {
        return Err(LookupError::StateLength {
            expected: rows * per_row,
            got: state.len(),
        }
        .into());
    }
    let c = config;
    let tuning = exec.tuning();
    let ctx = RowCtx {
        kernels: exec.kernels(),
        accumulator: options.accumulator,
        row: RowHyper::new(
            c.lr,
            c.lr_decay,
            t,
            c.weight_decay,
            options.decay,
            c.eps,
            c.maximize,
            c.eps_placement,
        ),
        dense: Hyper::new(
            c.lr,
            c.lr_decay,
            t,
            if options.decay == DecayMode::L2 {
                c.weight_decay
            } else {
                0.0
            },
            c.eps,
            c.maximize,
            c.eps_placement,
        ),
        precision: c.precision,
        rounding: options.rounding,
        step: t,
        rows_ahead: tuning.rows_ahead,
        lookups_ahead: tuning.lookups_ahead,
    };
    update::rows(exec, &ctx, prepared, table, state, per_row);
    Ok(())
}
