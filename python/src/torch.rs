//! PyTorch tensors: reading a step's tensors (data pointer, element type, length) and refusing what the step
//! cannot run on in place, with a per-position cache so that a step over many small tensors costs little more
//! than the kernels.

use crate::mem::{Dtype, Item, Kind, Mem, Place, Role, Work, check_overlap};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyList, PyWeakrefMethods, PyWeakrefReference};
use pyo3::{Py, PyAny, intern};

/// torch's dtype objects and `torch.strided`, looked up once.
struct Torch {
    f32: Py<PyAny>,
    f64: Py<PyAny>,
    bf16: Py<PyAny>,
    f16: Py<PyAny>,
    strided: Py<PyAny>,
    sparse_coo: Py<PyAny>,
    i64: Py<PyAny>,
    /// `torch._C.TensorBase.data_ptr`, called directly (no attribute lookup on each tensor).
    data_ptr: Py<PyAny>,
    /// `torch._C._increment_version`, which `torch.autograd.graph.increment_version` calls.
    increment_version: Py<PyAny>,
}

static TORCH: PyOnceLock<Torch> = PyOnceLock::new();

fn torch(py: Python<'_>) -> PyResult<&Torch> {
    TORCH.get_or_try_init(py, || {
        let t = py.import("torch")?;
        Ok(Torch {
            f32: t.getattr("float32")?.unbind(),
            f64: t.getattr("float64")?.unbind(),
            bf16: t.getattr("bfloat16")?.unbind(),
            f16: t.getattr("float16")?.unbind(),
            strided: t.getattr("strided")?.unbind(),
            sparse_coo: t.getattr("sparse_coo")?.unbind(),
            i64: t.getattr("int64")?.unbind(),
            data_ptr: t
                .getattr("_C")?
                .getattr("TensorBase")?
                .getattr("data_ptr")?
                .unbind(),
            increment_version: t.getattr("_C")?.getattr("_increment_version")?.unbind(),
        })
    })
}

fn dtype_of(py: Python<'_>, t: &Bound<'_, PyAny>) -> PyResult<Result<Dtype, String>> {
    let tt = torch(py)?;
    let d = t.getattr(intern!(py, "dtype"))?;
    Ok(if d.is(&tt.f32) {
        Ok(Dtype::F32)
    } else if d.is(&tt.f64) {
        Ok(Dtype::F64)
    } else if d.is(&tt.bf16) {
        Ok(Dtype::Bf16)
    } else if d.is(&tt.f16) {
        Ok(Dtype::F16)
    } else {
        Err(format!(
            "dtype {d} is not supported (float32, float64, bfloat16, float16 are)"
        ))
    })
}

fn data_ptr(py: Python<'_>, t: &Bound<'_, PyAny>) -> PyResult<usize> {
    let addr = torch(py)?.data_ptr.bind(py).call1((t,))?;
    // `PyLong_AsUnsignedLong` (64 bits here) reads a multi-digit int in a short loop, where u64's
    // `PyLong_AsUnsignedLongLong` goes through the generic byte-array conversion: this runs twice per tensor
    // per step.
    // SAFETY: `addr` is a live object; the call checks its type and sets a Python error when it fails.
    let v = unsafe { pyo3::ffi::PyLong_AsUnsignedLong(addr.as_ptr()) };
    if v == std::ffi::c_ulong::MAX
        && let Some(e) = PyErr::take(py)
    {
        return Err(e);
    }
    usize::try_from(v).map_err(|_| pyo3::exceptions::PyOverflowError::new_err("data_ptr"))
}

/// Marks the parameters this step updates (`planned` and `sparse`, at their `(group, index)` in `groups`) as
/// modified in place for autograd's saved-tensor checks, as torch's own in-place step does for the parameters it
/// is given (those with a gradient), before the kernels run: done here, the calls find the tensors still in cache.
/// A group whose parameters are all updated (the usual case) is handed over as its own list.
pub fn increment_versions(
    py: Python<'_>,
    groups: &[Group<'_>],
    planned: &[Vec<Planned>],
    sparse: &[SparsePlanned],
) -> PyResult<()> {
    let updated = || {
        let dense = planned.iter().flatten().map(|pl| pl.at);
        dense.chain(sparse.iter().map(|sp| sp.at))
    };
    let mut counts = vec![0usize; groups.len()];
    for (g, _) in updated() {
        counts[g] += 1;
    }
    let whole = |g: usize| counts[g] > 0 && counts[g] == groups[g].params.len();
    let f = torch(py)?.increment_version.bind(py);
    let rest = PyList::empty(py);
    for (g, i) in updated().filter(|&(g, _)| !whole(g)) {
        rest.append(groups[g].params.get_item(i)?)?;
    }
    for (g, group) in groups.iter().enumerate() {
        if whole(g) {
            f.call1((&group.params,))?;
        }
    }
    if !rest.is_empty() {
        f.call1((rest,))?;
    }
    Ok(())
}

/// A refusal: what is wrong, where.
pub struct Refusal(pub String);

type Checked<T> = Result<T, Refusal>;

fn refuse<T>(place: Place, why: impl std::fmt::Display) -> PyResult<Checked<T>> {
    Ok(Err(Refusal(format!("{place} {why}"))))
}

/// Everything about one tensor the step relies on: a dense, contiguous CPU tensor of a supported dtype, not a
/// negative view, with its memory.
fn inspect(py: Python<'_>, t: &Bound<'_, PyAny>, place: Place) -> PyResult<Checked<Mem>> {
    let tt = torch(py)?;
    if !t.getattr(intern!(py, "layout"))?.is(&tt.strided) {
        let why = if place.role == Role::Grad {
            "only dense (strided) and sparse COO gradients are supported"
        } else {
            "only dense (strided) tensors are supported"
        };
        return refuse(place, why);
    }
    if !t.getattr(intern!(py, "is_cpu"))?.extract::<bool>()? {
        let device = t.getattr(intern!(py, "device"))?;
        return refuse(
            place,
            format!("is on {device}; the step runs on CPU tensors only"),
        );
    }
    let dtype = match dtype_of(py, t)? {
        Ok(d) => d,
        Err(e) => return refuse(place, e),
    };
    if !t
        .call_method0(intern!(py, "is_contiguous"))?
        .extract::<bool>()?
    {
        return refuse(
            place,
            "is not contiguous; the step runs in place on contiguous memory (call .contiguous() once, before \
             handing the tensor to the optimizer)",
        );
    }
    if t.call_method0(intern!(py, "is_neg"))?.extract::<bool>()? {
        return refuse(
            place,
            "is a negative view; resolve it first (.resolve_neg())",
        );
    }
    let len: usize = t.call_method0(intern!(py, "numel"))?.extract()?;
    match Mem::new(data_ptr(py, t)?, len, dtype) {
        Ok(m) => Ok(Ok(m)),
        Err(e) => refuse(place, e),
    }
}

/// A gradient's memory: a dense tensor's, or the marker of a sparse COO one (read by [`inspect_sparse`]).
enum GradMem {
    Dense(Mem),
    Sparse,
}

/// A gradient, checked against its parameter: the cheap checks first (every step meets a fresh gradient
/// tensor), the full inspection only to explain a refusal.
fn inspect_grad(
    py: Python<'_>,
    g: &Bound<'_, PyAny>,
    len: usize,
    place: Place,
) -> PyResult<Checked<GradMem>> {
    let contiguous = match g.call_method0(intern!(py, "is_contiguous")) {
        Ok(c) => c.extract::<bool>()?,
        // Sparse tensors have no is_contiguous.
        Err(_) => false,
    };
    let cpu = g.getattr(intern!(py, "is_cpu"))?.extract::<bool>()?;
    let neg = contiguous && g.call_method0(intern!(py, "is_neg"))?.extract::<bool>()?;
    if !contiguous && g.getattr(intern!(py, "layout"))?.is(&torch(py)?.sparse_coo) {
        return Ok(Ok(GradMem::Sparse));
    }
    if !(contiguous && cpu) || neg {
        return Ok(match inspect(py, g, place)? {
            Ok(_) => Err(Refusal(format!("{place}: cannot be used"))),
            Err(r) => Err(r),
        });
    }
    let dtype = match dtype_of(py, g)? {
        Ok(d) => d,
        Err(e) => return refuse(place, e),
    };
    let n: usize = g.call_method0(intern!(py, "numel"))?.extract()?;
    if n != len {
        let shape = g.getattr(intern!(py, "shape"))?;
        return refuse(
            place,
            format!("has shape {shape} ({n} elements); its parameter has {len} elements"),
        );
    }
    match Mem::new(data_ptr(py, g)?, len, dtype) {
        Ok(m) => Ok(Ok(GradMem::Dense(m))),
        Err(e) => refuse(place, e),
    }
}

/// A row-sparse gradient (what `nn.Embedding(sparse=True)` gives): its row ids and value rows, the tensors kept
/// alive for the step.
pub struct SparseGrad {
    pub ids: Mem,
    pub values: Mem,
    pub rows: usize,
    pub dim: usize,
    _keep: [Py<PyAny>; 3],
}

/// Reads a sparse COO gradient of parameter `p` (float32, `rows × …`): it must be row-sparse (`sparse_dim() ==
/// 1`) with the parameter's shape, int64 indices and float32 values, contiguous, on the CPU.
fn inspect_sparse(
    py: Python<'_>,
    g: &Bound<'_, PyAny>,
    p: &Bound<'_, PyAny>,
    place: Place,
) -> PyResult<Checked<SparseGrad>> {
    let tt = torch(py)?;
    if !g.getattr(intern!(py, "is_cpu"))?.extract::<bool>()? {
        return refuse(place, "is not on the CPU");
    }
    let (gs, ps) = (
        g.getattr(intern!(py, "shape"))?,
        p.getattr(intern!(py, "shape"))?,
    );
    if !gs.eq(&ps)? {
        return refuse(
            place,
            format!("has shape {gs}; its parameter has shape {ps}"),
        );
    }
    let sparse_dim: usize = g.call_method0(intern!(py, "sparse_dim"))?.extract()?;
    if sparse_dim != 1 {
        return refuse(
            place,
            format!(
                "is sparse in {sparse_dim} dimensions; only row-sparse gradients (sparse_dim() == 1, as \
                 nn.Embedding(sparse=True) gives) are supported"
            ),
        );
    }
    let shape: Vec<usize> = ps.extract()?;
    let rows = shape.first().copied().unwrap_or(0);
    let dim: usize = shape[1..].iter().product();
    let idx = g.call_method0(intern!(py, "_indices"))?;
    let vals = g.call_method0(intern!(py, "_values"))?;
    if !idx.getattr(intern!(py, "dtype"))?.is(&tt.i64) {
        return refuse(place, "has indices that are not int64");
    }
    let vdt = match dtype_of(py, &vals)? {
        Ok(Dtype::F32) => Dtype::F32,
        Ok(d) => {
            return refuse(
                place,
                format!("has {} values; sparse gradients must be float32", d.name()),
            );
        }
        Err(e) => return refuse(place, e),
    };
    for t in [&idx, &vals] {
        if !t
            .call_method0(intern!(py, "is_contiguous"))?
            .extract::<bool>()?
        {
            return refuse(place, "has non-contiguous indices or values");
        }
    }
    let nnz: usize = idx.call_method0(intern!(py, "numel"))?.extract()?;
    let nvals: usize = vals.call_method0(intern!(py, "numel"))?.extract()?;
    if nvals != nnz * dim {
        return refuse(place, format!("has {nvals} values for {nnz} rows of {dim}"));
    }
    let ids = match Mem::new(data_ptr(py, &idx)?, nnz, Dtype::I64) {
        Ok(m) => m,
        Err(e) => return refuse(place, e),
    };
    let values = match Mem::new(data_ptr(py, &vals)?, nvals, vdt) {
        Ok(m) => m,
        Err(e) => return refuse(place, e),
    };
    Ok(Ok(SparseGrad {
        ids,
        values,
        rows,
        dim,
        _keep: [g.clone().unbind(), idx.unbind(), vals.unbind()],
    }))
}

/// The optimizer's own state memory for one parameter: the memory of the numpy arrays that own the state tensors'
/// memory (`sum`, `step`, `master`). The arrays are held here, so the memory stays valid whatever happens to
/// the tensor objects; it never needs to be re-read.
struct Backing {
    s: Mem,
    k: Mem,
    m: Option<Mem>,
    _arrays: Vec<Py<PyAny>>,
}

/// What was last found valid at one position: the parameter and its memory, the state's memory, and the last
/// gradient (held weakly, so that `zero_grad()` still frees it) with its memory.
struct Entry {
    param: Py<PyAny>,
    p: Mem,
    back: Backing,
    grad: Option<(Py<PyWeakrefReference>, Mem)>,
    /// The serial of the last plan this entry was in, and the parameter and gradient memory it had then.
    planned: (u64, Option<(Mem, Mem)>),
}

/// The per-position cache of one optimizer (a list per parameter group). The parameter's data pointer is read
/// every step (`p.data = ...` and ZeRO's bucket views move it); a gradient is inspected in full unless it is the
/// same object as last step at the same address.
#[pyclass(module = "adagrad_cpu._native")]
#[derive(Default)]
pub struct TensorCache {
    groups: Vec<Vec<Option<Entry>>>,
    /// Counts plans; an entry planned in the previous one with the same memory throughout (and the same
    /// parameters planned, and the same scalars) means the overlap check passed on exactly this memory already.
    serial: u64,
    /// How many parameters the last plan that passed the overlap check had, and its scalars (`None`: none passed).
    checked: Option<(usize, Vec<(Mem, Place)>)>,
    /// Whether the last step was large enough to run on the helper threads: the next one wakes them before it
    /// reads its tensors.
    pub parallel: bool,
}

#[pymethods]
impl TensorCache {
    #[new]
    fn new() -> Self {
        TensorCache::default()
    }

    /// Forgets every entry.
    fn clear(&mut self) {
        self.groups.clear();
        self.checked = None;
    }
}

/// One parameter group as the Python layer hands it over: the parameters that have state and per parameter a
/// tuple `(sum, sum_array, step, step_array, master, master_array)` (`master`s `None` unless the parameter is
/// 16-bit) of the state tensors and the numpy arrays owning their memory. The Python layer clears the cache
/// whenever it rebuilds these (any change to the groups or the state), so an entry, once made, stays the
/// truth about its position's state while the same parameter object sits there.
pub struct Group<'py> {
    pub params: Bound<'py, PyList>,
    pub backs: Bound<'py, PyList>,
}

/// A parameter with a gradient, ready to run: its item and its kind, its step tensor's memory and new value, its
/// place.
pub struct Planned {
    pub item: Item,
    pub kind: Kind,
    pub step: Mem,
    pub t: f32,
    pub at: (usize, usize),
}

/// A parameter with a sparse gradient, ready to run as an element-wise embedding step on its `sum`.
pub struct SparsePlanned {
    pub table: Mem,
    pub sum: Mem,
    pub grad: SparseGrad,
    pub step: Mem,
    pub t: f32,
    pub at: (usize, usize),
}

/// What planning found: the work (dense, per group; sparse), or a refusal.
pub enum Plan {
    Ready(Vec<Vec<Planned>>, Vec<SparsePlanned>),
    Refused(Refusal),
}

/// Reads the step's tensors of every group; `grads`, when given, replaces `p.grad` (one entry per parameter
/// with state, over all groups in order; `None` skips).
pub fn plan(
    py: Python<'_>,
    cache: &mut TensorCache,
    groups: &[Group<'_>],
    grads: Option<&Bound<'_, PyList>>,
    scalars: &[(Mem, Place)],
) -> PyResult<Plan> {
    macro_rules! check {
        ($e:expr) => {
            match $e {
                Ok(x) => x,
                Err(r) => return Ok(Plan::Refused(r)),
            }
        };
    }
    let total: usize = groups.iter().map(|g| g.params.len()).sum();
    if let Some(gs) = grads
        && gs.len() != total
    {
        return Ok(Plan::Refused(Refusal(format!(
            "{} gradients for {total} parameters",
            gs.len()
        ))));
    }
    cache.groups.resize_with(groups.len(), Vec::new);
    cache.serial += 1;
    let serial = cache.serial;
    // Whether anything differs from the last plan that passed the overlap check.
    // Taken: a plan that returns early (a refusal) leaves none, so the next one checks in full.
    let prev = cache.checked.take();
    let mut changed = prev.as_ref().is_none_or(|(_, sc)| sc.as_slice() != scalars);
    let mut count = 0;
    let mut out = Vec::with_capacity(groups.len());
    let mut sparse = Vec::new();
    let mut flat = 0;
    for (gi, group) in groups.iter().enumerate() {
        let n = group.params.len();
        if group.backs.len() != n {
            return Ok(Plan::Refused(Refusal(format!(
                "param_groups[{gi}]: the state lists do not match its {n} parameters"
            ))));
        }
        let entries = &mut cache.groups[gi];
        entries.resize_with(n, || None);
        let mut planned = Vec::new();
        for (i, slot) in entries.iter_mut().enumerate() {
            let at = |role| Place {
                group: gi,
                index: i,
                role,
            };
            let p = group.params.get_item(i)?;
            let g = match grads {
                Some(gs) => gs.get_item(flat + i)?,
                None => p.getattr(intern!(py, "grad"))?,
            };
            if g.is_none() {
                continue;
            }
            let reuse = slot.as_ref().is_some_and(|e| p.is(&e.param));
            if !reuse {
                *slot = None;
                let back = group.backs.get_item(i)?;
                let pm = check!(inspect(py, &p, at(Role::Param))?);
                let b = check!(backing(py, &back, at)?);
                check!(fits(pm, &b, at));
                *slot = Some(Entry {
                    param: p.clone().unbind(),
                    p: pm,
                    back: b,
                    grad: None,
                    planned: (0, None),
                });
            }
            let e = slot.as_mut().expect("filled above");
            // The parameter's memory may have moved (p.data = ..., ZeRO's bucket views).
            if data_ptr(py, &p)? != e.p.addr {
                let pm = check!(inspect(py, &p, at(Role::Param))?);
                check!(fits(pm, &e.back, at));
                e.p = pm;
            }
            let cached = e.grad.as_ref().and_then(|(w, m)| {
                let alive = w.bind(py).upgrade()?;
                alive.is(&g).then_some(*m)
            });
            // SAFETY: e.back.k is one aligned float32 element of a numpy array this cache holds.
            let before = unsafe { *(e.back.k.addr as *const f32) };
            let t = before + 1.0;
            if !(t >= 1.0 && t.is_finite() && t.fract() == 0.0) {
                return Ok(Plan::Refused(Refusal(format!(
                    "{} is {before}, not a step count",
                    at(Role::Step)
                ))));
            }
            let gm = match cached {
                Some(m) if data_ptr(py, &g)? == m.addr => m,
                _ => {
                    let m = match check!(inspect_grad(py, &g, e.p.len, at(Role::Grad))?) {
                        GradMem::Dense(m) => m,
                        GradMem::Sparse => {
                            let sg = check!(inspect_sparse(py, &g, &p, at(Role::Grad))?);
                            if e.back.m.is_some() || e.p.dtype != Dtype::F32 {
                                return Ok(Plan::Refused(Refusal(format!(
                                    "{} is {}; sparse gradients update float32 parameters only",
                                    at(Role::Param),
                                    e.p.dtype.name()
                                ))));
                            }
                            sparse.push(SparsePlanned {
                                table: e.p,
                                sum: e.back.s,
                                grad: sg,
                                step: e.back.k,
                                t,
                                at: (gi, i),
                            });
                            e.grad = None;
                            changed = true;
                            continue;
                        }
                    };
                    // A gradient in p.grad has p's shape (torch's setter checks it); one passed in `grads`
                    // must be checked here: equal lengths are not equal shapes.
                    if grads.is_some() {
                        let (gs, ps) = (
                            g.getattr(intern!(py, "shape"))?,
                            p.getattr(intern!(py, "shape"))?,
                        );
                        if !gs.eq(&ps)? {
                            return Ok(Plan::Refused(Refusal(format!(
                                "{} has shape {gs}; its parameter has shape {ps}",
                                at(Role::Grad)
                            ))));
                        }
                    }
                    // A tensor that takes no weak reference is simply not cached.
                    e.grad = PyWeakrefReference::new(&g).ok().map(|w| (w.unbind(), m));
                    m
                }
            };
            let (upd, out16) = match e.back.m {
                Some(mm) => (mm, Some(e.p)),
                None => (e.p, None),
            };
            let item = Item {
                p: upd,
                g: gm,
                s: e.back.s,
                out: out16,
            };
            let kind = match Kind::of(&item) {
                Ok(kind) => kind,
                Err(why) => {
                    return Ok(Plan::Refused(Refusal(format!(
                        "{}: {why}",
                        at(Role::Param)
                    ))));
                }
            };
            changed |= e.planned != (serial - 1, Some((e.p, gm))) || !reuse;
            e.planned = (serial, Some((e.p, gm)));
            count += 1;
            planned.push(Planned {
                item,
                kind,
                step: e.back.k,
                t,
                at: (gi, i),
            });
        }
        flat += n;
        out.push(planned);
    }
    changed |= prev.as_ref().is_none_or(|(n, _)| *n != count);
    if !changed {
        cache.checked = prev;
    } else {
        let mut regions = scalars.to_vec();
        for pl in out.iter().flatten() {
            let at = |role| Place {
                group: pl.at.0,
                index: pl.at.1,
                role,
            };
            let it = &pl.item;
            let (param, master) = match it.out {
                Some(o) => (o, Some(it.p)),
                None => (it.p, None),
            };
            regions.push((param, at(Role::Param)));
            regions.push((it.g, at(Role::Grad)));
            regions.push((it.s, at(Role::Sum)));
            regions.push((pl.step, at(Role::Step)));
            if let Some(m) = master {
                regions.push((m, at(Role::Master)));
            }
        }
        for sp in &sparse {
            let at = |role| Place {
                group: sp.at.0,
                index: sp.at.1,
                role,
            };
            regions.push((sp.table, at(Role::Param)));
            regions.push((sp.sum, at(Role::Sum)));
            regions.push((sp.step, at(Role::Step)));
            regions.push((sp.grad.ids, at(Role::Grad)));
            regions.push((sp.grad.values, at(Role::Grad)));
        }
        if let Err(e) = check_overlap(&mut regions) {
            return Ok(Plan::Refused(Refusal(e)));
        }
        // A step with sparse gradients is checked in full every time (its gradients are new tensors each step).
        if sparse.is_empty() {
            cache.checked = Some((count, scalars.to_vec()));
        }
    }
    Ok(Plan::Ready(out, sparse))
}

/// `(sum, sum_array, step, step_array, master, master_array)`.
type BackTuple<'py> = (
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
    Option<Bound<'py, PyAny>>,
    Option<Bound<'py, PyAny>>,
);

/// Reads a backing tuple `(sum, sum_array, step, step_array, master, master_array)`.
fn backing(
    py: Python<'_>,
    back: &Bound<'_, PyAny>,
    at: impl Fn(Role) -> Place,
) -> PyResult<Checked<Backing>> {
    let (_sum, sa, _step, ka, master, ma): BackTuple<'_> = back.extract()?;
    let s = match crate::numpy::memory(py, &sa) {
        Ok(m) => m,
        Err(e) => return refuse(at(Role::Sum), e),
    };
    let k = match crate::numpy::memory(py, &ka) {
        Ok(m) if m.dtype == Dtype::F32 && m.len == 1 => m,
        Ok(_) => return refuse(at(Role::Step), "must be one float32 element"),
        Err(e) => return refuse(at(Role::Step), e),
    };
    let m = match (&master, &ma) {
        (Some(_), Some(a)) => match crate::numpy::memory(py, a) {
            Ok(m) if m.dtype == Dtype::F32 => Some(m),
            Ok(_) => return refuse(at(Role::Master), "must be float32"),
            Err(e) => return refuse(at(Role::Master), e),
        },
        (None, None) => None,
        _ => {
            return refuse(
                at(Role::Master),
                "the master copy and its memory must come together",
            );
        }
    };
    let mut arrays = vec![sa.unbind(), ka.unbind()];
    arrays.extend(ma.map(Bound::unbind));
    Ok(Ok(Backing {
        s,
        k,
        m,
        _arrays: arrays,
    }))
}

/// Whether a parameter's memory and its state fit together.
fn fits(p: Mem, b: &Backing, at: impl Fn(Role) -> Place) -> Checked<()> {
    let upd = match b.m {
        Some(m) => {
            if m.len != p.len {
                return Err(Refusal(format!(
                    "{} has {} elements; its parameter {}",
                    at(Role::Master),
                    m.len,
                    p.len
                )));
            }
            m
        }
        None if matches!(p.dtype, Dtype::Bf16 | Dtype::F16) => {
            return Err(Refusal(format!(
                "{} is {}: 16-bit parameters need a float32 master copy to be updated exactly; construct the \
                 optimizer with master_weights=True (or keep float32 parameters)",
                at(Role::Param),
                p.dtype.name()
            )));
        }
        None => p,
    };
    if b.s.dtype != upd.dtype || b.s.len != p.len {
        return Err(Refusal(format!(
            "{}: must be {} with the parameter's {} elements; it is {} with {}",
            at(Role::Sum),
            upd.dtype.name(),
            p.len,
            b.s.dtype.name(),
            b.s.len
        )));
    }
    Ok(())
}

/// A one-element float32 CPU tensor's value and memory (grad_scale, found_inf).
pub fn scalar(py: Python<'_>, t: &Bound<'_, PyAny>, name: &str) -> PyResult<Checked<(f32, Mem)>> {
    let place = Place {
        group: 0,
        index: usize::MAX,
        role: Role::Scalar,
    };
    let m = match inspect(py, t, place)? {
        Ok(m) => m,
        Err(r) => return Ok(Err(r)),
    };
    if m.dtype != Dtype::F32 || m.len != 1 {
        return Ok(Err(Refusal(format!(
            "{name} must be a float32 tensor of one element"
        ))));
    }
    // SAFETY: one aligned, live float32 element, validated just above; the caller holds the tensor.
    let v = unsafe { *(m.addr as *const f32) };
    Ok(Ok((v, m)))
}

/// Sorts planned items into the functional step's buckets (element types, step number).
pub fn work(planned: &[Planned]) -> Work {
    let mut w = Work::new();
    for pl in planned {
        w.entry((pl.kind, pl.t as u64)).or_default().push(pl.item);
    }
    w
}
