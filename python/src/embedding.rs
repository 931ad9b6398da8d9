//! Embedding tables from Python: a thin skin over [`adagrad::embedding::EmbeddingAdagrad`] for float32 tables held
//! in numpy arrays (or torch tensors through `.numpy()`), updated in place with the GIL released.

use crate::mem::{Claim, Span};
use crate::{crate_error, refused};
use adagrad::embedding::{Accumulator, EmbeddingAdagrad, Lookups, TableOptions};
use adagrad::kernels::rowwise::{DecayMode, Rounding};
use numpy::{PyReadonlyArray1, PyReadonlyArrayDyn, PyReadwriteArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The optimizer, by table type.
enum Opt {
    F32(EmbeddingAdagrad<f32>),
    F16(EmbeddingAdagrad<adagrad::f16>),
    Bf16(EmbeddingAdagrad<adagrad::bf16>),
}

/// Row-wise or element-wise Adagrad for one table of `rows × dim` float32, float16 or bfloat16 elements (see
/// `adagrad_cpu.embedding`).
#[pyclass(module = "adagrad_cpu._native")]
pub struct Embedding {
    opt: Opt,
}

/// Calls `$body` with `$o` bound to the optimizer, whatever its table type.
macro_rules! with_opt {
    ($self:expr, $o:ident => $body:expr) => {
        match &$self.opt {
            Opt::F32($o) => $body,
            Opt::F16($o) => $body,
            Opt::Bf16($o) => $body,
        }
    };
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

/// The elements of a C-contiguous array, or a refusal naming it.
pub(crate) fn contiguous<'a, T: numpy::Element>(
    what: &str,
    a: &'a PyReadonlyArrayDyn<'_, T>,
) -> PyResult<&'a [T]> {
    a.as_slice()
        .map_err(|_| refused(format!("{what} is not C-contiguous")))
}

#[pymethods]
impl Embedding {
    /// See `adagrad_cpu.embedding.EmbeddingAdagrad`.
    #[new]
    #[pyo3(signature = (rows, dim, *, lr, lr_decay, weight_decay, eps, maximize, initial_accumulator_value,
        accumulator, decay, stochastic_seed, threads, isa, eps_placement, table_dtype="float32", team="pool"))]
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
        table_dtype: &str,
        team: &str,
    ) -> PyResult<Self> {
        let c = crate::settings(threads, team, isa, "exact", eps_placement)?
            .lr(lr)
            .lr_decay(lr_decay)
            .weight_decay(weight_decay)
            .eps(eps)
            .maximize(maximize)
            .initial_accumulator_value(initial_accumulator_value);
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
        let opt = match table_dtype {
            "float32" => {
                Opt::F32(EmbeddingAdagrad::new(c, rows, dim, options).map_err(crate_error)?)
            }
            "float16" => {
                Opt::F16(EmbeddingAdagrad::new(c, rows, dim, options).map_err(crate_error)?)
            }
            "bfloat16" => {
                Opt::Bf16(EmbeddingAdagrad::new(c, rows, dim, options).map_err(crate_error)?)
            }
            o => {
                return Err(refused(format!(
                    "table_dtype must be 'float32', 'float16' or 'bfloat16', not {o:?}"
                )));
            }
        };
        Ok(Embedding { opt })
    }

    /// One step: `table` (C-contiguous, writeable, `rows × dim` elements of the table type: float32, float16, or
    /// for bfloat16 a uint16 array holding the bits), `ids` (int64, int32, uint64 or uint32, one per lookup),
    /// `grads` (float32, one row per lookup, or per bag when `offsets` is given), optional `offsets` (the ids'
    /// dtype, bags + 1) and `weights` (float32, one per lookup). Everything is checked before the table is written.
    #[pyo3(signature = (table, ids, grads, offsets=None, weights=None))]
    fn step(
        &mut self,
        py: Python<'_>,
        table: &Bound<'_, PyAny>,
        ids: &Bound<'_, PyAny>,
        grads: &Bound<'_, PyAny>,
        offsets: Option<&Bound<'_, PyAny>>,
        weights: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        // Wrong types are refused like every other malformed input: AdagradError, nothing changed.
        let grads: PyReadonlyArrayDyn<'_, f32> = grads.extract().map_err(|_| {
            refused(format!(
                "grads must be a numpy array of float32 (native byte order), not {}",
                describe(grads)
            ))
        })?;
        let weights: Option<PyReadonlyArray1<'_, f32>> = weights
            .map(|w| {
                w.extract().map_err(|_| {
                    refused(format!(
                        "weights must be a one-dimensional numpy array of float32 (native byte order), not {}",
                        describe(w)
                    ))
                })
            })
            .transpose()?;
        /// Runs the step with the ids (and offsets) as numpy arrays of `$t` (numpy's `$name`), if `ids` is one.
        macro_rules! with_ids {
            ($($t:ty: $name:literal),*) => {$(
                if let Ok(ids) = ids.extract::<PyReadonlyArrayDyn<'_, $t>>() {
                    let offsets = offsets
                        .map(|o| {
                            o.extract::<PyReadonlyArrayDyn<'_, $t>>().map_err(|_| {
                                refused(concat!("offsets: must be a numpy array of the ids' dtype, ", $name))
                            })
                        })
                        .transpose()?;
                    return self.step_ids(py, table, &ids, &grads, offsets.as_ref(), weights.as_ref());
                }
            )*};
        }
        with_ids!(i64: "int64", i32: "int32", u64: "uint64", u32: "uint32");
        Err(refused(
            "ids: must be a numpy array of int64, int32, uint64 or uint32",
        ))
    }

    /// A copy of the accumulators.
    fn state<'py>(&self, py: Python<'py>) -> Bound<'py, numpy::PyArray1<f32>> {
        with_opt!(self, o => numpy::PyArray1::from_slice(py, o.state()))
    }

    /// Statistics of the effective learning rate the next step would give each accumulator (see
    /// `adagrad::stats`), as a dict of plain numbers.
    fn lr_stats<'py>(&self, py: Python<'py>, threshold: f64) -> PyResult<Bound<'py, PyDict>> {
        let stats = with_opt!(self, o => o.lr_stats(threshold)).map_err(crate::crate_error)?;
        crate::stats_dict(py, &stats)
    }

    /// Steps taken so far.
    #[getter]
    fn step_count(&self) -> u64 {
        with_opt!(self, o => o.step_count())
    }

    /// The kernel path's name.
    #[getter]
    fn isa(&self) -> &'static str {
        with_opt!(self, o => o.isa().name())
    }

    /// Threads a large step uses.
    #[getter]
    fn threads(&self) -> usize {
        with_opt!(self, o => o.threads())
    }
}

impl Embedding {
    /// [`Embedding::step`] once the ids' type is known.
    fn step_ids<I: adagrad::embedding::Id + numpy::Element>(
        &mut self,
        py: Python<'_>,
        table: &Bound<'_, PyAny>,
        ids: &PyReadonlyArrayDyn<'_, I>,
        grads: &PyReadonlyArrayDyn<'_, f32>,
        offsets: Option<&PyReadonlyArrayDyn<'_, I>>,
        weights: Option<&PyReadonlyArray1<'_, f32>>,
    ) -> PyResult<()> {
        let ids_s = contiguous("ids", ids)?;
        let grads_s = contiguous("grads", grads)?;
        let offsets_s = offsets.map(|o| contiguous("offsets", o)).transpose()?;
        let weights_s = weights
            .map(|w| {
                w.as_slice()
                    .map_err(|_| refused("weights is not C-contiguous"))
            })
            .transpose()?;
        if offsets_s.is_none() && weights_s.is_some() {
            return Err(refused("weights are per lookup of a bag: give offsets too"));
        }
        let inputs = Inputs {
            ids: ids_s,
            grads: grads_s,
            offsets: offsets_s,
            weights: weights_s,
        };
        match &mut self.opt {
            Opt::F32(o) => run(py, o, table, "float32", inputs, |t: &mut [f32]| t),
            Opt::F16(o) => run(py, o, table, "float16", inputs, |t: &mut [adagrad::f16]| t),
            Opt::Bf16(o) => run(
                py,
                o,
                table,
                "bfloat16 (as uint16 bits)",
                inputs,
                |t: &mut [u16]| bytemuck::cast_slice_mut::<u16, adagrad::bf16>(t),
            ),
        }
    }
}

/// What a refused argument is, for messages: a numpy array's dtype and dimensions, else its Python type.
fn describe(x: &Bound<'_, PyAny>) -> String {
    match x.cast::<numpy::PyUntypedArray>() {
        Ok(a) => format!("a {}-dimensional array of {}", a.ndim(), a.dtype()),
        Err(_) => format!(
            "a {}",
            x.get_type()
                .name()
                .map_or_else(|_| "?".into(), |n| n.to_string())
        ),
    }
}

/// A step's inputs other than the table.
struct Inputs<'a, I> {
    ids: &'a [I],
    grads: &'a [f32],
    offsets: Option<&'a [I]>,
    weights: Option<&'a [f32]>,
}

/// Borrows `table` as an array of `E` (its numpy element type), views it as the optimizer's table type `W`,
/// refuses inputs that share its memory, and runs the step with the GIL released.
fn run<W: adagrad::embedding::Table, E: numpy::Element, I: adagrad::embedding::Id>(
    py: Python<'_>,
    opt: &mut EmbeddingAdagrad<W>,
    table: &Bound<'_, PyAny>,
    what: &str,
    inputs: Inputs<'_, I>,
    view: impl FnOnce(&mut [E]) -> &mut [W],
) -> PyResult<()> {
    let mut arr: PyReadwriteArrayDyn<'_, E> = table.extract().map_err(|e| {
        refused(format!(
            "table: must be a writeable numpy array of {what} ({e})"
        ))
    })?;
    if !arr.is_c_contiguous() {
        return Err(refused("table is not C-contiguous; the step runs in place"));
    }
    let table_s = view(
        arr.as_slice_mut()
            .map_err(|_| refused("table is not C-contiguous"))?,
    );
    let t = span(table_s);
    disjoint(t, "ids", inputs.ids)?;
    disjoint(t, "grads", inputs.grads)?;
    if let Some(o) = inputs.offsets {
        disjoint(t, "offsets", o)?;
    }
    if let Some(w) = inputs.weights {
        disjoint(t, "weights", w)?;
    }
    py.detach(|| {
        // No other native call touches the table meanwhile, nor writes what this step reads.
        let mut spans = vec![
            Span::of_slice(&*table_s, true),
            Span::of_slice(inputs.ids, false),
            Span::of_slice(inputs.grads, false),
        ];
        spans.extend(inputs.offsets.map(|o| Span::of_slice(o, false)));
        spans.extend(inputs.weights.map(|w| Span::of_slice(w, false)));
        let _claim = Claim::new(spans);
        let lookups = match inputs.offsets {
            Some(offsets) => Lookups::Bags {
                ids: inputs.ids,
                offsets,
                weights: inputs.weights,
                grads: inputs.grads,
            },
            None => Lookups::Rows {
                ids: inputs.ids,
                grads: inputs.grads,
            },
        };
        opt.step(table_s, lookups)
    })
    .map_err(crate_error)?;
    Ok(())
}
