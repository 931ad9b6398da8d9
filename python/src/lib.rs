//! `adagrad_cpu._native`: the Python binding of the `adagrad` crate, a thin skin over
//! [`adagrad::functional::step`]. The Python layer (`adagrad_cpu.torch`, `adagrad_cpu.numpy`) hands over the
//! step's tensors; this module reads their memory, refuses what the step cannot run on in place (with nothing
//! changed), and runs the step with the GIL released.

#[cfg(feature = "bench")]
mod bench;
mod embedding;
mod mem;
mod numpy;
mod openmp;
mod torch;

use ::numpy::PyArray1;
use ::numpy::ndarray::ArrayViewMut1;
use adagrad::embedding::{Accumulator, Lookups, TableOptions};
use adagrad::{
    AlignedBuf, Config, EpsPlacement, Executor, Float, Isa, Parallelism, Precision, Tuning,
};
use mem::{Dtype, Mem, Place, Role};
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

create_exception!(
    adagrad_cpu,
    AdagradError,
    PyValueError,
    "A step, or the optimizer's construction, refused its input; nothing was changed."
);

fn refused(msg: impl Into<String>) -> PyErr {
    AdagradError::new_err(msg.into())
}

pub(crate) fn crate_error(e: adagrad::Error) -> PyErr {
    refused(e.to_string())
}

/// What a step runs on: the kernel path, the tuning and the threads, resolved once, plus the settings that are
/// the optimizer's rather than a parameter group's (eps placement, precision).
#[pyclass(frozen, module = "adagrad_cpu._native")]
pub struct Engine {
    pub(crate) exec: Executor,
    base: Config,
    /// One embedding scratch per sparse gradient of a step, kept between steps.
    scratch: std::sync::Mutex<Vec<adagrad::embedding::Scratch>>,
}

/// A parameter group as `Engine.torch_step` receives it: `(params, backs, lr, lr_decay, weight_decay, eps,
/// maximize, initial_accumulator_value)`.
type GroupTuple<'py> = (
    Bound<'py, PyList>,
    Bound<'py, PyList>,
    f64,
    f64,
    f64,
    f64,
    bool,
    f64,
);

/// A parameter group's hyperparameters for one step.
pub(crate) struct Hyper {
    pub(crate) lr: f64,
    pub(crate) lr_decay: f64,
    pub(crate) weight_decay: f64,
    pub(crate) eps: f64,
    pub(crate) maximize: bool,
    /// The accumulators' starting value (validation refuses eps = 0 with a zero start: 0/0).
    pub(crate) init: f64,
}

impl Engine {
    /// The configuration and the checked work of a numpy step (everything validated; nothing run).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn numpy_work(
        &self,
        py: Python<'_>,
        h: &Hyper,
        params: &[Bound<'_, PyAny>],
        grads: &[Bound<'_, PyAny>],
        sums: &[Bound<'_, PyAny>],
        t: u64,
        grad_scale: Option<f64>,
    ) -> PyResult<(Config, mem::Work)> {
        let config = self.config(h);
        let work = numpy::plan(py, params, grads, sums, t).map_err(refused)?;
        validate(&config, &work, grad_scale)?;
        Ok((config, work))
    }

    fn config(&self, h: &Hyper) -> Config {
        self.base
            .clone()
            .lr(h.lr)
            .lr_decay(h.lr_decay)
            .weight_decay(h.weight_decay)
            .eps(h.eps)
            .maximize(h.maximize)
            .initial_accumulator_value(h.init)
    }
}

/// Checks `config` for every element type that `work` updates (the same checks the step makes, made before any
/// bucket runs, so that no bucket fails after another has written).
fn validate(config: &Config, work: &mem::Work, scale: Option<f64>) -> PyResult<()> {
    fn one<T: Float>(config: &Config, scale: Option<f64>) -> PyResult<()> {
        config.validate_for::<T>().map_err(crate_error)?;
        if let Some(s) = scale {
            let r = T::from_f64(s);
            if !(r.is_finite() && r > T::ZERO) {
                return Err(crate_error(adagrad::Error::InvalidGradScale(s)));
            }
        }
        Ok(())
    }
    if work.keys().any(|(k, _)| k.p == Dtype::F32) {
        one::<f32>(config, scale)?;
    }
    if work.keys().any(|(k, _)| k.p == Dtype::F64) {
        one::<f64>(config, scale)?;
    }
    Ok(())
}

/// PyTorch's defaults with the execution settings a Python optimizer takes: `threads` (`None`: one per CPU; at
/// least 1), `isa` (a kernel path's name, `None`: `ADAGRAD_ISA` or the best), `precision` ("exact" or "fast"),
/// `eps_placement` ("outside" or "inside"). Anything else is refused.
fn settings(
    threads: Option<usize>,
    team: &str,
    isa: Option<&str>,
    precision: &str,
    eps_placement: &str,
) -> PyResult<Config> {
    let mut base = Config::torch();
    base.precision = match precision {
        "exact" => Precision::Exact,
        "fast" => Precision::Fast,
        other => {
            return Err(refused(format!(
                "precision must be 'exact' or 'fast', not {other:?}"
            )));
        }
    };
    base.eps_placement = match eps_placement {
        "outside" => EpsPlacement::Outside,
        "inside" => EpsPlacement::Inside,
        other => {
            return Err(refused(format!(
                "eps_placement must be 'outside' or 'inside', not {other:?}"
            )));
        }
    };
    if let Some(name) = isa {
        base.isa = Some(
            name.parse::<Isa>()
                .map_err(|e: adagrad::IsaError| refused(e.to_string()))?,
        );
    }
    base.parallelism = match (threads, team) {
        (Some(0), _) => return Err(refused("threads must be at least 1")),
        (_, "pool" | "openmp") if threads == Some(1) => Parallelism::Sequential,
        (None, "pool") => Parallelism::Global,
        (Some(n), "pool") => Parallelism::Threads(n),
        (threads, "openmp") => match openmp::OpenMp::find(threads) {
            Some(omp) => Parallelism::Host(std::sync::Arc::new(omp)),
            None => {
                return Err(refused(
                    "team='openmp' needs an OpenMP runtime loaded in this process (import torch first); none is",
                ));
            }
        },
        (_, other) => {
            return Err(refused(format!(
                "team must be 'pool' or 'openmp', not {other:?}"
            )));
        }
    };
    Ok(base)
}

#[pymethods]
impl Engine {
    /// `threads`: threads a large step uses, the caller included (`None`: one per CPU, as rayon counts them;
    /// 1: the calling thread only). `isa`: a kernel path by name (`None`: `ADAGRAD_ISA`, else the best for this
    /// CPU). `precision`: "exact" (bit-identical to PyTorch) or "fast". `eps_placement`: "outside" (√G + ε,
    /// PyTorch) or "inside" (√(G + ε), Optax/Keras).
    #[new]
    #[pyo3(signature = (*, threads=None, isa=None, precision="exact", eps_placement="outside", team="pool"))]
    fn new(
        threads: Option<usize>,
        isa: Option<&str>,
        precision: &str,
        eps_placement: &str,
        team: &str,
    ) -> PyResult<Self> {
        let base = settings(threads, team, isa, precision, eps_placement)?;
        let exec = Executor::new(&base).map_err(crate_error)?;
        Ok(Engine {
            exec,
            base,
            scratch: Default::default(),
        })
    }

    /// The kernel path in use.
    #[getter]
    fn isa(&self) -> &'static str {
        self.exec.isa().name()
    }

    /// Threads a large step runs on, the caller included.
    #[getter]
    fn threads(&self) -> usize {
        self.exec.threads()
    }

    /// Whose threads a parallel step runs on: "openmp" (the host's OpenMP team), "pool" (the crate's own or
    /// rayon's), or "sequential" (the calling thread only).
    #[getter]
    fn team(&self) -> &'static str {
        match self.base.parallelism {
            _ if self.exec.threads() <= 1 => "sequential",
            Parallelism::Host(_) => "openmp",
            _ => "pool",
        }
    }

    /// The performance settings in use (from this CPU's table entry and `ADAGRAD_TUNE`).
    #[getter]
    fn tuning(&self) -> String {
        format!("{:?}", self.exec.tuning())
    }

    /// One step of a PyTorch optimizer. `groups`: per parameter group a tuple `(params, backs, lr, lr_decay,
    /// weight_decay, eps, maximize, initial_accumulator_value)`: the parameters that have state and per
    /// parameter `(sum, sum_array, step, step_array, master, master_array)`, the state tensors and the numpy
    /// arrays that own their memory (`master`: the float32 copy of a 16-bit parameter, else `None`); `cache`
    /// must be cleared whenever these change. `grads`: `None` (use `p.grad`) or one entry per parameter of every
    /// group, in order; `grad_scale`, `found_inf`: `torch._fused_adagrad_`'s. Parameters whose gradient is
    /// `None` are skipped. Everything is checked before anything is written. Returns how many parameters were
    /// updated.
    #[pyo3(signature = (cache, groups, grads=None, grad_scale=None, found_inf=None))]
    fn torch_step(
        &self,
        py: Python<'_>,
        mut cache: PyRefMut<'_, torch::TensorCache>,
        groups: &Bound<'_, PyList>,
        grads: Option<Bound<'_, PyList>>,
        grad_scale: Option<Bound<'_, PyAny>>,
        found_inf: Option<Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        // Reading the tensors takes a while with many of them: the helper threads wake meanwhile.
        if cache.parallel {
            self.exec.wake();
        }
        let mut parsed = Vec::with_capacity(groups.len());
        let mut hypers = Vec::with_capacity(groups.len());
        for g in groups.iter() {
            let g = g.cast_into::<PyTuple>()?;
            let (params, backs, lr, lr_decay, weight_decay, eps, maximize, init): GroupTuple<'_> =
                g.extract()?;
            parsed.push(torch::Group { params, backs });
            hypers.push(Hyper {
                lr,
                lr_decay,
                weight_decay,
                eps,
                maximize,
                init,
            });
        }
        let mut scalars: Vec<(Mem, Place)> = Vec::new();
        let scalar_place = Place {
            group: 0,
            index: usize::MAX,
            role: Role::Scalar,
        };
        let mut scale = None;
        if let Some(t) = &grad_scale {
            let (v, m) = torch::scalar(py, t, "grad_scale")?.map_err(|r| refused(r.0))?;
            if !(v.is_finite() && v > 0.0) {
                return Err(crate_error(adagrad::Error::InvalidGradScale(v as f64)));
            }
            scale = Some(v as f64);
            scalars.push((m, scalar_place));
        }
        let mut inf = 0.0f32;
        if let Some(t) = &found_inf {
            let (v, m) = torch::scalar(py, t, "found_inf")?.map_err(|r| refused(r.0))?;
            if v != 0.0 && v != 1.0 {
                return Err(refused(format!("found_inf must be 0.0 or 1.0, not {v}")));
            }
            inf = v;
            scalars.push((m, scalar_place));
        }
        let (planned, sparse) =
            match torch::plan(py, &mut cache, &parsed, grads.as_ref(), &scalars)? {
                torch::Plan::Ready(p, s) => (p, s),
                torch::Plan::Refused(r) => return Err(refused(r.0)),
            };
        let mut jobs = Vec::with_capacity(planned.len());
        for (h, pl) in hypers.iter().zip(&planned) {
            let config = self.config(h);
            let work = torch::work(pl);
            validate(&config, &work, scale)?;
            jobs.push((config, work));
        }
        // Sparse gradients: an element-wise embedding step on each parameter's `sum`, validated here with the rest.
        let mut scratches = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        if scratches.len() < sparse.len() {
            scratches.resize_with(sparse.len(), Default::default);
        }
        let mut sparse_jobs = Vec::with_capacity(sparse.len());
        for (sp, scratch) in sparse.iter().zip(scratches.iter_mut()) {
            let place = Place {
                group: sp.at.0,
                index: sp.at.1,
                role: Role::Grad,
            };
            if scale.is_some() || found_inf.is_some() {
                return Err(refused(format!(
                    "{place} is sparse; grad_scale and found_inf apply to dense gradients only (torch's fused \
                     Adagrad takes no sparse gradients either)"
                )));
            }
            let h = &hypers[sp.at.0];
            if h.weight_decay != 0.0 {
                return Err(refused(format!(
                    "{place} is sparse; weight_decay is not compatible with sparse gradients (as in \
                     torch.optim.Adagrad)"
                )));
            }
            let config = self.config(h);
            config.validate_for::<f32>().map_err(crate_error)?;
            let ids: &[i64] = mem::shared_slice(sp.grad.ids);
            let values: &[f32] = mem::shared_slice(sp.grad.values);
            let lookups = Lookups::Rows { ids, grads: values };
            let prepared = adagrad::embedding::prepare(
                &self.exec,
                sp.grad.rows,
                sp.grad.dim,
                lookups,
                scratch,
            )
            .map_err(|e| refused(format!("{place}: {e}")))?;
            sparse_jobs.push((config, prepared, sp));
        }
        // Whether this step's dense work is large enough to run on threads (see `TensorCache::parallel`).
        let weighted: usize = planned
            .iter()
            .flatten()
            .map(|pl| match pl.item.p.dtype {
                Dtype::F64 => pl.item.p.len.saturating_mul(Tuning::weight::<f64>()),
                _ => pl.item.p.len,
            })
            .fold(0, usize::saturating_add);
        cache.parallel =
            self.exec.threads() > 1 && weighted >= self.exec.tuning().parallel_threshold;
        let skip = inf == 1.0;
        if !skip {
            torch::increment_versions(py, &parsed, &planned, &sparse)?;
            let exec = &self.exec;
            let options = TableOptions::default().accumulator(Accumulator::ElementWise);
            py.detach(|| {
                let spans = jobs.iter().flat_map(|(_, work)| mem::Claim::spans(work));
                let sparse_spans = sparse_jobs.iter().flat_map(|(_, _, sp)| {
                    [
                        mem::Span::of(sp.table, true),
                        mem::Span::of(sp.sum, true),
                        mem::Span::of(sp.grad.ids, false),
                        mem::Span::of(sp.grad.values, false),
                    ]
                });
                let _claim = mem::Claim::new(spans.chain(sparse_spans).collect());
                jobs.iter()
                    .try_for_each(|(config, work)| mem::run(exec, config, work, scale))?;
                sparse_jobs.iter().try_for_each(|(config, prepared, sp)| {
                    let table: &mut [f32] = mem::mut_slice(sp.table);
                    let state: &mut [f32] = mem::mut_slice(sp.sum);
                    adagrad::embedding::apply(
                        exec,
                        config,
                        &options,
                        sp.t as u64,
                        table,
                        state,
                        prepared,
                    )
                })
            })
            .map_err(crate_error)?;
        }
        // torch._fused_adagrad's step counts: + 1 before the kernel, − found_inf after, in float32.
        let mut updated = 0;
        let steps = planned.iter().flatten().map(|pl| (pl.step, pl.t));
        for (step, t) in steps.chain(sparse.iter().map(|sp| (sp.step, sp.t))) {
            // SAFETY: step is a validated, aligned float32 element of a step tensor held by `groups`, and no
            // other region of this step overlaps it (checked in plan).
            unsafe { *(step.addr as *mut f32) = t - inf };
            updated += 1;
        }
        Ok(if skip { 0 } else { updated })
    }

    /// One step over numpy arrays, in place: `params`, `grads`, `sums` (one array each per tensor, C-contiguous,
    /// the same shapes; float32 parameters and sums with float32 or float16 gradients, or float64 throughout),
    /// the step number `t` (from 1), the hyperparameters (`init`: the accumulators' starting value, which the
    /// validation of `eps` needs), and optionally a gradient scale to divide by.
    /// Everything is checked before anything is written.
    #[pyo3(signature = (params, grads, sums, t, lr, lr_decay, weight_decay, eps, maximize, init, grad_scale=None))]
    #[allow(clippy::too_many_arguments)]
    fn numpy_step(
        &self,
        py: Python<'_>,
        params: Vec<Bound<'_, PyAny>>,
        grads: Vec<Bound<'_, PyAny>>,
        sums: Vec<Bound<'_, PyAny>>,
        t: u64,
        lr: f64,
        lr_decay: f64,
        weight_decay: f64,
        eps: f64,
        maximize: bool,
        init: f64,
        grad_scale: Option<f64>,
    ) -> PyResult<()> {
        let hyper = Hyper {
            lr,
            lr_decay,
            weight_decay,
            eps,
            maximize,
            init,
        };
        let (config, work) = self.numpy_work(py, &hyper, &params, &grads, &sums, t, grad_scale)?;
        let exec = &self.exec;
        py.detach(|| {
            let _claim = mem::Claim::new(mem::Claim::spans(&work).collect());
            mem::run(exec, &config, &work, grad_scale)
        })
        .map_err(crate_error)
    }
}

/// Whether two lists hold the same objects, in order (identity, never `==`: tensors compare element-wise).
fn same_objects(a: &Bound<'_, PyList>, b: &Bound<'_, PyList>) -> bool {
    a.len() == b.len() && a.iter().zip(b.iter()).all(|(x, y)| x.is(&y))
}

/// Whether the optimizer's snapshot still describes its groups: per group (`param_groups[i]["params"]` against
/// `snaps[i].params`) the same parameter objects in order, and none of the parameters waiting for state
/// (`snaps[i].pending`, `(flat index, parameter)` pairs) has a gradient now (in `p.grad`, or in `grads` at its
/// flat index when given). One native call, so that a step after a large one (cold caches) runs little code.
#[pyfunction]
fn unchanged(
    py: Python<'_>,
    groups: &Bound<'_, PyList>,
    snaps: &Bound<'_, PyList>,
    grads: Option<&Bound<'_, PyList>>,
) -> PyResult<bool> {
    if groups.len() != snaps.len() {
        return Ok(false);
    }
    for (g, s) in groups.iter().zip(snaps.iter()) {
        let params = g.get_item(intern!(py, "params"))?;
        let (Ok(params), Ok(known)) = (
            params.cast_into::<PyList>(),
            s.getattr(intern!(py, "params"))?.cast_into::<PyList>(),
        ) else {
            return Ok(false);
        };
        if !same_objects(&params, &known) {
            return Ok(false);
        }
        for pending in s.getattr(intern!(py, "pending"))?.try_iter()? {
            let (i, p): (usize, Bound<'_, PyAny>) = pending?.extract()?;
            let has = match grads {
                None => !p.getattr(intern!(py, "grad"))?.is_none(),
                Some(gs) => gs.get_item(i).is_ok_and(|g| !g.is_none()),
            };
            if has {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Memory the state arrays live in: the crate's [`AlignedBuf`] (64-byte aligned; from 2 MiB on, 2 MiB aligned and
/// advised for transparent huge pages), owned by the numpy array that views it (its base object).
#[pyclass(frozen)]
struct Block {
    /// Held, never read: the array reads and writes the memory.
    _memory: AlignedBuf<u8>,
}

/// `nbytes` zero bytes of aligned memory (see [`Block`]) as a writable one-dimensional uint8 numpy array, for
/// the Python layer's state (`sum`, master copies): no vector load or store of the step then straddles two cache
/// lines at a tensor's start, which numpy's own allocations (16 bytes past a 64-byte boundary when large) do.
#[pyfunction]
fn aligned_zeros(py: Python<'_>, nbytes: usize) -> PyResult<Bound<'_, PyArray1<u8>>> {
    let mut buf = AlignedBuf::<u8>::filled(nbytes, 0).map_err(crate_error)?;
    let ptr = buf.as_mut_slice().as_mut_ptr();
    let block = Bound::new(py, Block { _memory: buf })?;
    // SAFETY: `ptr` points at the block's `nbytes` bytes, which stay where they are (moving an `AlignedBuf` does
    // not move its memory) and are neither read nor written through Rust references while the block lives.
    let view = unsafe { ArrayViewMut1::from_shape_ptr(nbytes, ptr) };
    // SAFETY: the array's base object is the block, which owns the viewed memory and outlives every array
    // (numpy keeps its base alive); nothing else frees it.
    Ok(unsafe { PyArray1::borrow_from_array(&view, block.into_any()) })
}

/// Statistics of the effective learning rate of the accumulators `sums` (a C-contiguous float32 or float64 numpy
/// array, read, never written) for step `step` (1-based: the step after `step - 1` taken) with PyTorch's `lr`,
/// `lr_decay` and `eps` and `eps_placement` ("outside" or "inside"), counting values below `threshold`: a dict of
/// `elements`, `min`, `median`, `max`, `mean`, `below`, `fraction_below` (see `adagrad::stats`). Waits for a
/// native call writing the same memory; the GIL is released while it reads.
#[pyfunction]
#[pyo3(signature = (sums, *, lr, lr_decay, step, eps, eps_placement, threshold))]
#[allow(clippy::too_many_arguments)]
fn lr_stats<'py>(
    py: Python<'py>,
    sums: &Bound<'py, PyAny>,
    lr: f64,
    lr_decay: f64,
    step: u64,
    eps: f64,
    eps_placement: &str,
    threshold: f64,
) -> PyResult<Bound<'py, PyDict>> {
    let mut config = settings(Some(1), "pool", None, "exact", eps_placement)?;
    config.lr = lr;
    config.lr_decay = lr_decay;
    config.eps = eps;
    let m = numpy::memory(py, sums).map_err(refused)?;
    if step == 0 {
        return Err(refused("step counts from 1"));
    }
    let stats = match m.dtype {
        mem::Dtype::F32 => stats_of::<f32>(py, m, &config, step, threshold)?,
        mem::Dtype::F64 => stats_of::<f64>(py, m, &config, step, threshold)?,
        other => {
            return Err(refused(format!(
                "accumulators are float32 or float64, not {}",
                other.name()
            )));
        }
    }
    .map_err(crate_error)?;
    stats_dict(py, &stats)
}

/// [`lr_stats`] for accumulators of type `T` at `m`: the configuration checked as `T` holds it, then the state
/// read with the GIL released, while no native call writes it.
fn stats_of<T: adagrad::stats::StatsFloat>(
    py: Python<'_>,
    m: mem::Mem,
    config: &Config,
    step: u64,
    threshold: f64,
) -> PyResult<Result<adagrad::stats::LrStats, adagrad::Error>> {
    config.validate_for::<T>().map_err(crate_error)?;
    let h = config.hyper::<T>(step);
    Ok(py.detach(|| {
        let _claim = mem::Claim::new(vec![mem::Span::of(m, false)]);
        adagrad::stats::lr_stats(mem::shared_slice::<T>(m), &h, threshold)
    }))
}

/// Learning-rate statistics as the Python layer returns them: a dict of plain numbers.
pub(crate) fn stats_dict<'py>(
    py: Python<'py>,
    stats: &adagrad::stats::LrStats,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("elements", stats.elements)?;
    d.set_item("min", stats.min)?;
    d.set_item("median", stats.median)?;
    d.set_item("max", stats.max)?;
    d.set_item("mean", stats.mean)?;
    d.set_item("below", stats.below)?;
    d.set_item("fraction_below", stats.fraction_below())?;
    Ok(d)
}

/// The kernel paths this CPU can run, best first.
#[pyfunction]
fn available_isas() -> Vec<&'static str> {
    Isa::available().map(Isa::name).collect()
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Engine>()?;
    m.add_class::<embedding::Embedding>()?;
    m.add_class::<torch::TensorCache>()?;
    m.add_function(wrap_pyfunction!(available_isas, m)?)?;
    m.add_function(wrap_pyfunction!(aligned_zeros, m)?)?;
    m.add_function(wrap_pyfunction!(unchanged, m)?)?;
    #[cfg(feature = "bench")]
    bench::register(m)?;
    m.add_function(wrap_pyfunction!(lr_stats, m)?)?;
    m.add("AdagradError", m.py().get_type::<AdagradError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
