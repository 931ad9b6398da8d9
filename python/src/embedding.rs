//! Embedding tables from Python: a thin skin over [`adagrad::embedding::EmbeddingAdagrad`] for float32 tables held
//! in numpy arrays (or torch tensors through `.numpy()`), updated in place with the GIL released.

use crate::{crate_error, refused};
use adagrad::embedding::{Accumulator, EmbeddingAdagrad, Lookups, TableOptions};
use adagrad::kernels::rowwise::{DecayMode, Rounding};
use adagrad::{Config, EpsPlacement, Parallelism};
use numpy::{PyReadonlyArray1, PyReadonlyArrayDyn, PyReadwriteArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;

/// Row-wise or element-wise Adagrad for one float32 table of `rows × dim` (see `adagrad_cpu.embedding`).
#[pyclass(module = "adagrad_cpu._native")]
pub struct Embedding {
    opt: EmbeddingAdagrad<f32>,
}

/// The byte range of an array's elements.
fn span<T>(s: &[T]) -> (usize, usize) {
    let a = s.as_ptr() as usize;
    (a, a + std::mem::size_of_val(s))
}

/// Refuses an input whose memory overlaps the table (the step writes the table while reading its inputs).
fn disjoint<T>(table: (usize, usize), what: &str, s: &[T]) -> PyResult<()> {
    let (a, b) = span(s);
    if a < table.1 && table.0 < b && a < b {
        return Err(refused(format!(
            "{what} shares memory with the table, which the step writes"
        )));
    }
    Ok(())
}

fn contiguous<'a, T: numpy::Element>(
    what: &str,
    a: &'a PyReadonlyArrayDyn<'_, T>,
) -> PyResult<&'a [T]> {
    a.as_slice()
        .map_err(|_| refused(format!("{what}: is not C-contiguous")))
}

#[pymethods]
impl Embedding {
    /// See `adagrad_cpu.embedding.EmbeddingAdagrad`.
    #[new]
    #[pyo3(signature = (rows, dim, *, lr, lr_decay, weight_decay, eps, maximize, initial_accumulator_value,
        accumulator, decay, stochastic_seed, threads, isa, eps_placement))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        rows: usize,
        dim: usize,
        lr: f64,
        lr_decay: f64,
        weight_decay: f64,
        eps: f64,
        maximize: bool,
        initial_accumulator_value: f64,
        accumulator: &str,
        decay: &str,
        stochastic_seed: Option<u64>,
        threads: Option<usize>,
        isa: Option<&str>,
        eps_placement: &str,
    ) -> PyResult<Self> {
        let mut c = Config::torch()
            .lr(lr)
            .lr_decay(lr_decay)
            .weight_decay(weight_decay)
            .eps(eps)
            .maximize(maximize)
            .initial_accumulator_value(initial_accumulator_value);
        c.eps_placement = match eps_placement {
            "outside" => EpsPlacement::Outside,
            "inside" => EpsPlacement::Inside,
            o => {
                return Err(refused(format!(
                    "eps_placement must be 'outside' or 'inside', not {o:?}"
                )));
            }
        };
        if let Some(name) = isa {
            c.isa = Some(
                name.parse()
                    .map_err(|e: adagrad::IsaError| refused(e.to_string()))?,
            );
        }
        c.parallelism = match threads {
            None => Parallelism::Global,
            Some(0) => return Err(refused("threads must be at least 1")),
            Some(n) => Parallelism::Threads(n),
        };
        let accumulator = match accumulator {
            "rowwise" => Accumulator::RowWise,
            "elementwise" => Accumulator::ElementWise,
            o => {
                return Err(refused(format!(
                    "accumulator must be 'rowwise' or 'elementwise', not {o:?}"
                )));
            }
        };
        let decay = match decay {
            "l2" => DecayMode::L2,
            "decoupled" => DecayMode::Decoupled,
            o => {
                return Err(refused(format!(
                    "decay must be 'l2' or 'decoupled', not {o:?}"
                )));
            }
        };
        let options = TableOptions {
            accumulator,
            decay,
            rounding: stochastic_seed
                .map_or(Rounding::NearestEven, |seed| Rounding::Stochastic { seed }),
        };
        let opt = EmbeddingAdagrad::new(c, rows, dim, options).map_err(crate_error)?;
        Ok(Embedding { opt })
    }

    /// One step: `table` (float32, `rows × dim` elements, C-contiguous, writeable), `ids` (int64, one per lookup),
    /// `grads` (float32, one row per lookup, or per bag when `offsets` is given), optional `offsets` (int64,
    /// bags + 1) and `weights` (float32, one per lookup). Everything is checked before the table is written.
    #[pyo3(signature = (table, ids, grads, offsets=None, weights=None))]
    fn step(
        &mut self,
        py: Python<'_>,
        mut table: PyReadwriteArrayDyn<'_, f32>,
        ids: PyReadonlyArrayDyn<'_, i64>,
        grads: PyReadonlyArrayDyn<'_, f32>,
        offsets: Option<PyReadonlyArrayDyn<'_, i64>>,
        weights: Option<PyReadonlyArray1<'_, f32>>,
    ) -> PyResult<()> {
        let ids_s = contiguous("ids", &ids)?;
        let grads_s = contiguous("grads", &grads)?;
        let offsets_s = offsets
            .as_ref()
            .map(|o| contiguous("offsets", o))
            .transpose()?;
        let weights_s = weights
            .as_ref()
            .map(|w| {
                w.as_slice()
                    .map_err(|_| refused("weights: is not C-contiguous"))
            })
            .transpose()?;
        if !table.is_c_contiguous() {
            return Err(refused(
                "table: is not C-contiguous; the step runs in place",
            ));
        }
        let table_s = table
            .as_slice_mut()
            .map_err(|_| refused("table: is not C-contiguous"))?;
        let t = span(table_s);
        disjoint(t, "ids", ids_s)?;
        disjoint(t, "grads", grads_s)?;
        if let Some(o) = offsets_s {
            disjoint(t, "offsets", o)?;
        }
        if let Some(w) = weights_s {
            disjoint(t, "weights", w)?;
        }
        if offsets_s.is_none() && weights_s.is_some() {
            return Err(refused("weights are per lookup of a bag: give offsets too"));
        }
        let opt = &mut self.opt;
        py.detach(|| {
            let lookups = match offsets_s {
                Some(offsets) => Lookups::Bags {
                    ids: ids_s,
                    offsets,
                    weights: weights_s,
                    grads: grads_s,
                },
                None => Lookups::Rows {
                    ids: ids_s,
                    grads: grads_s,
                },
            };
            opt.step(table_s, lookups)
        })
        .map_err(crate_error)?;
        Ok(())
    }

    /// A copy of the accumulators.
    fn state<'py>(&self, py: Python<'py>) -> Bound<'py, numpy::PyArray1<f32>> {
        numpy::PyArray1::from_slice(py, self.opt.state())
    }

    /// Steps taken so far.
    #[getter]
    fn step_count(&self) -> u64 {
        self.opt.step_count()
    }

    /// The kernel path's name.
    #[getter]
    fn isa(&self) -> &'static str {
        self.opt.isa().name()
    }

    /// Threads a large step uses.
    #[getter]
    fn threads(&self) -> usize {
        self.opt.threads()
    }
}

/// Benchmark support (`benches/embedding_vs_fbgemm.py`), not used by any step: one pass of the embedding step's
/// independent memory ceiling (`adagrad_ceiling::rows`) over `table` (float32, `rows × dim`), a state array of
/// `rows × per_row` float32, the lookups' `ids` and `grads` — the same rows' traffic with trivial arithmetic —
/// prefetching `ahead` runs ahead (one of `RowsCeiling::VARIANTS`), on `threads` threads. Returns the pass's
/// seconds (grouping the lookups by row is not timed). The table and state change (the ceiling adds into them).
#[pyfunction]
#[pyo3(signature = (table, state, ids, grads, per_row, threads, ahead))]
#[allow(clippy::too_many_arguments)]
pub fn embedding_ceiling(
    py: Python<'_>,
    mut table: PyReadwriteArrayDyn<'_, f32>,
    mut state: PyReadwriteArrayDyn<'_, f32>,
    ids: PyReadonlyArrayDyn<'_, i64>,
    grads: PyReadonlyArrayDyn<'_, f32>,
    per_row: usize,
    threads: usize,
    ahead: usize,
) -> PyResult<f64> {
    let ids = contiguous("ids", &ids)?;
    let grads = contiguous("grads", &grads)?;
    let table = table
        .as_slice_mut()
        .map_err(|_| refused("table: is not C-contiguous"))?;
    let state = state
        .as_slice_mut()
        .map_err(|_| refused("state: is not C-contiguous"))?;
    let n = ids.len();
    if n == 0 || grads.len() % n != 0 || per_row == 0 {
        return Err(refused(
            "ids, grads and per_row must describe at least one lookup",
        ));
    }
    let dim = grads.len() / n;
    let rows = table.len() / dim;
    if rows * dim != table.len() || state.len() != rows * per_row {
        return Err(refused(
            "table and state do not match rows × dim and rows × per_row",
        ));
    }
    let ids: Vec<usize> = ids
        .iter()
        .map(|&i| usize::try_from(i).ok().filter(|&i| i < rows))
        .collect::<Option<_>>()
        .ok_or_else(|| refused("an id is outside the table"))?;
    let c = adagrad_ceiling::rows::RowsCeiling::new(&ids, dim, per_row);
    Ok(py.detach(|| c.time_pass(table, state, grads, ahead, threads.max(1))))
}
