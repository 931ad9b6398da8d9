//! Measurement support, compiled only with the `bench` feature (the test environment's build, `scripts/test`;
//! never the wheel `pip install ./python` builds): a Rust-level step loop for `benches/python_bench.py` and the
//! embedding step's independent memory ceiling (the `adagrad-ceiling` crate, linked only here) for
//! `benches/embedding_vs_fbgemm.py`. No step calls anything here.

use crate::embedding::contiguous;
use crate::{Engine, Hyper, crate_error, mem, refused};
use numpy::{PyReadonlyArrayDyn, PyReadwriteArrayDyn};
use pyo3::prelude::*;

/// Adds this module's functions and constants to the extension module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(rust_step_seconds, m)?)?;
    m.add_function(wrap_pyfunction!(embedding_ceiling, m)?)?;
    m.add(
        "EMBEDDING_CEILING_VARIANTS",
        adagrad_ceiling::rows::RowsCeiling::VARIANTS
            .map(|a| (a.rows, a.lookups, a.wide))
            .to_vec(),
    )?;
    Ok(())
}

/// For `benches/python_bench.py`: runs [`Engine::numpy_step`]'s work
/// `reps` times in Rust alone, after the same checks, and returns the seconds each repetition took, so that
/// the Python-level step can be compared with the Rust-level step on the same memory in the same process.
#[pyfunction]
#[pyo3(signature = (engine, params, grads, sums, reps, lr=0.01))]
fn rust_step_seconds(
    py: Python<'_>,
    engine: &Engine,
    params: Vec<Bound<'_, PyAny>>,
    grads: Vec<Bound<'_, PyAny>>,
    sums: Vec<Bound<'_, PyAny>>,
    reps: usize,
    lr: f64,
) -> PyResult<Vec<f64>> {
    let hyper = Hyper {
        lr,
        lr_decay: 0.0,
        weight_decay: 0.0,
        eps: 1e-10,
        maximize: false,
        init: 0.0,
    };
    let (config, work) = engine.numpy_work(py, &hyper, &params, &grads, &sums, 1, None)?;
    let exec = &engine.exec;
    py.detach(|| {
        (0..reps)
            .map(|_| {
                let start = std::time::Instant::now();
                mem::run(exec, &config, &work, None).map(|()| start.elapsed().as_secs_f64())
            })
            .collect::<Result<Vec<f64>, _>>()
    })
    .map_err(crate_error)
}

/// The most threads [`embedding_ceiling`] starts (it spawns its own, one per part).
const MAX_CEILING_THREADS: usize = 256;

/// For `benches/embedding_vs_fbgemm.py`: one pass of the embedding step's
/// independent memory ceiling (`adagrad_ceiling::rows`) over `table` (float32, `rows × dim`), a state array of
/// `rows × per_row` float32 (`per_row` 1 or `dim`), the lookups' `ids` and `grads` — the same rows' traffic with
/// trivial arithmetic — with the variant `ahead` (touched rows and lookups prefetched ahead, wide vectors; one of
/// `RowsCeiling::VARIANTS`), on `threads` threads (1 to 256). Anything else is refused (`AdagradError`). Returns the pass's seconds (grouping the lookups by row is not timed). The table and state
/// change (the ceiling adds into them).
#[pyfunction]
#[pyo3(signature = (table, state, ids, grads, per_row, threads, ahead))]
#[allow(clippy::too_many_arguments)]
fn embedding_ceiling(
    py: Python<'_>,
    mut table: PyReadwriteArrayDyn<'_, f32>,
    mut state: PyReadwriteArrayDyn<'_, f32>,
    ids: PyReadonlyArrayDyn<'_, i64>,
    grads: PyReadonlyArrayDyn<'_, f32>,
    per_row: usize,
    threads: usize,
    ahead: (usize, usize, bool),
) -> PyResult<f64> {
    let ids = contiguous("ids", &ids)?;
    let grads = contiguous("grads", &grads)?;
    let table = table
        .as_slice_mut()
        .map_err(|_| refused("table is not C-contiguous"))?;
    let state = state
        .as_slice_mut()
        .map_err(|_| refused("state is not C-contiguous"))?;
    let n = ids.len();
    if n == 0 || grads.is_empty() || grads.len() % n != 0 {
        return Err(refused(
            "ids and grads must describe at least one lookup of at least one element",
        ));
    }
    let dim = grads.len() / n;
    if per_row != 1 && per_row != dim {
        return Err(refused(
            "per_row must be 1 (row-wise) or dim (element-wise)",
        ));
    }
    if !(1..=MAX_CEILING_THREADS).contains(&threads) {
        return Err(refused("threads must be 1 to 256"));
    }
    let ahead = adagrad_ceiling::rows::Ahead {
        rows: ahead.0,
        lookups: ahead.1,
        wide: ahead.2,
    };
    if !adagrad_ceiling::rows::RowsCeiling::VARIANTS.contains(&ahead) {
        return Err(refused("ahead must be one of EMBEDDING_CEILING_VARIANTS"));
    }
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
    Ok(py.detach(|| c.time_pass(table, state, grads, ahead, threads)))
}
