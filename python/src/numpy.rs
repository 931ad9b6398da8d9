//! numpy arrays: reading a step's arrays and refusing what the step cannot run on in place.

use crate::mem::{Dtype, Item, Kind, Mem, Place, Role, Work, check_overlap};
use numpy::npyffi::flags::NPY_ARRAY_WRITEABLE;
use numpy::{PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods, dtype};
use pyo3::prelude::*;

fn place(index: usize, role: Role) -> Place {
    Place {
        group: 0,
        index,
        role,
    }
}

fn what(p: Place) -> String {
    let list = match p.role {
        Role::Param => "params",
        Role::Grad => "grads",
        _ => "sums",
    };
    format!("{list}[{}]", p.index)
}

/// An array's memory and shape, if it is a C-contiguous array of a supported dtype (writeable if `write`).
fn inspect(
    py: Python<'_>,
    a: &Bound<'_, PyAny>,
    at: Place,
    write: bool,
) -> Result<(Mem, Vec<usize>), String> {
    let arr = a
        .cast::<PyUntypedArray>()
        .map_err(|_| format!("{} is not a numpy array", what(at)))?;
    let dt = arr.dtype();
    let dtype = if dt.is_equiv_to(&dtype::<f32>(py)) {
        Dtype::F32
    } else if dt.is_equiv_to(&dtype::<f64>(py)) {
        Dtype::F64
    } else if dt.is_equiv_to(&dtype::<adagrad::f16>(py)) {
        Dtype::F16
    } else {
        return Err(format!(
            "{} has dtype {dt}, which is not supported (float32, float64, float16 gradients)",
            what(at)
        ));
    };
    if !arr.is_c_contiguous() {
        return Err(format!(
            "{} is not C-contiguous; the step runs in place on contiguous memory",
            what(at)
        ));
    }
    // SAFETY: `arr` is a live numpy array (checked by the cast); reading its header fields is what numpy's own
    // PyArray_DATA and PyArray_FLAGS macros do.
    let (data, flags) = unsafe {
        let raw = arr.as_array_ptr();
        ((*raw).fields.data as usize, (*raw).fields.flags)
    };
    if write && flags & NPY_ARRAY_WRITEABLE == 0 {
        return Err(format!("{} is read-only", what(at)));
    }
    let mem = Mem::new(data, arr.len(), dtype).map_err(|e| format!("{}: {e}", what(at)))?;
    Ok((mem, arr.shape().to_vec()))
}

/// The memory of a C-contiguous, writeable array of a supported dtype (the optimizer's own state arrays).
pub fn memory(py: Python<'_>, a: &Bound<'_, PyAny>) -> Result<Mem, String> {
    inspect(py, a, place(0, Role::Sum), true).map(|(m, _)| m)
}

/// Checks the arrays of one numpy step and sorts them into the functional step's buckets.
pub fn plan(
    py: Python<'_>,
    params: &[Bound<'_, PyAny>],
    grads: &[Bound<'_, PyAny>],
    sums: &[Bound<'_, PyAny>],
    t: u64,
) -> Result<Work, String> {
    if grads.len() != params.len() || sums.len() != params.len() {
        return Err(format!(
            "{} params, {} grads and {} sums: one of each per tensor",
            params.len(),
            grads.len(),
            sums.len()
        ));
    }
    if t == 0 {
        return Err("t (the step number) counts from 1".into());
    }
    let mut regions = Vec::with_capacity(3 * params.len());
    let mut work = Work::new();
    for i in 0..params.len() {
        let (p, ps) = inspect(py, &params[i], place(i, Role::Param), true)?;
        let (g, gs) = inspect(py, &grads[i], place(i, Role::Grad), false)?;
        let (s, ss) = inspect(py, &sums[i], place(i, Role::Sum), true)?;
        if gs != ps || ss != ps {
            return Err(format!(
                "params[{i}] has shape {ps:?}, grads[{i}] {gs:?}, sums[{i}] {ss:?}: they must be equal"
            ));
        }
        if s.dtype != p.dtype {
            return Err(format!(
                "sums[{i}] is {}; it must have its parameter's dtype, {}",
                s.dtype.name(),
                p.dtype.name()
            ));
        }
        let item = Item { p, g, s, out: None };
        let kind = Kind::of(&item).map_err(|e| format!("params[{i}]: {e}"))?;
        regions.push((p, place(i, Role::Param)));
        regions.push((g, place(i, Role::Grad)));
        regions.push((s, place(i, Role::Sum)));
        work.entry((kind, t)).or_default().push(item);
    }
    check_overlap(&mut regions).map_err(|e| {
        // Name arrays as the numpy API's caller knows them.
        e.replace("param_groups[0]['params']", "params")
    })?;
    Ok(work)
}
