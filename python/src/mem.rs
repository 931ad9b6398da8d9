//! Caller-owned memory as the step sees it: validated descriptors, the overlap check, and the one place where
//! they become slices for [`adagrad::functional::step`].

use adagrad::{
    Config, CopyOut, Error, Executor, Float, Grad, NoCopy, StepOutcome, bf16, f16, functional,
};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Condvar, Mutex};

/// An element type the step handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dtype {
    F32,
    F64,
    Bf16,
    F16,
    /// Indices of a sparse gradient.
    I64,
}

impl Dtype {
    /// Bytes per element (also the alignment a slice of it needs).
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F64 | Dtype::I64 => 8,
            Dtype::Bf16 | Dtype::F16 => 2,
        }
    }

    /// The name frameworks use.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "float32",
            Dtype::F64 => "float64",
            Dtype::Bf16 => "bfloat16",
            Dtype::F16 => "float16",
            Dtype::I64 => "int64",
        }
    }
}

/// What a tensor is to the step; named in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Param,
    Grad,
    Sum,
    Step,
    Master,
    Scalar,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Param => "parameter",
            Role::Grad => "gradient",
            Role::Sum => "state 'sum'",
            Role::Step => "state 'step'",
            Role::Master => "state 'master'",
            Role::Scalar => "grad_scale/found_inf",
        }
    }

    /// Whether the step writes it.
    fn written(self) -> bool {
        matches!(self, Role::Param | Role::Sum | Role::Step | Role::Master)
    }
}

/// Where a tensor sits: its group and index within the group (`usize::MAX`: not a per-parameter tensor).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    pub group: usize,
    pub index: usize,
    pub role: Role,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.index == usize::MAX {
            write!(f, "{}", self.role.name())
        } else {
            write!(
                f,
                "the {} of param_groups[{}]['params'][{}]",
                self.role.name(),
                self.group,
                self.index
            )
        }
    }
}

/// A contiguous run of `len` elements of `dtype` at `addr`: checked non-null and aligned for its element type
/// (unless empty), and within the address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mem {
    pub addr: usize,
    pub len: usize,
    pub dtype: Dtype,
}

impl Mem {
    /// Validates a raw descriptor; the error says what is wrong with it.
    pub fn new(addr: usize, len: usize, dtype: Dtype) -> Result<Mem, String> {
        let bytes = len
            .checked_mul(dtype.size())
            .filter(|&b| b <= isize::MAX as usize && addr.checked_add(b).is_some())
            .ok_or_else(|| format!("{len} elements do not fit in memory"))?;
        if bytes > 0 && addr == 0 {
            return Err(format!(
                "{len} elements at a null data pointer (freed storage?)"
            ));
        }
        // An empty region is never dereferenced (its slice is made without its pointer), so any address will do:
        // torch gives empty tensors null or unaligned ones (an empty shard of an FSDP2 parameter).
        if bytes > 0 && !addr.is_multiple_of(dtype.size()) {
            return Err(format!(
                "data at {addr:#x} is not aligned for {}",
                dtype.name()
            ));
        }
        Ok(Mem { addr, len, dtype })
    }

    fn bytes(&self) -> usize {
        self.len * self.dtype.size()
    }
}

/// Refuses any two of `regions` that share a byte where at least one of them is written by the step (two
/// gradients may share memory; nothing may share memory with a parameter or a state tensor).
pub fn check_overlap(regions: &mut [(Mem, Place)]) -> Result<(), String> {
    regions.sort_unstable_by_key(|(m, _)| m.addr);
    // The furthest end so far of any region, and of any written region, with who reached it.
    let mut any: Option<(usize, Place)> = None;
    let mut written: Option<(usize, Place)> = None;
    for &(m, place) in regions.iter() {
        if m.bytes() == 0 {
            continue;
        }
        let clash = if place.role.written() { any } else { written };
        if let Some((_, other)) = clash.filter(|&(end, _)| m.addr < end) {
            return Err(format!(
                "{other} and {place} overlap in memory (views of one storage?); each must have memory of its own"
            ));
        }
        let end = m.addr + m.bytes();
        if any.is_none_or(|(e, _)| end > e) {
            any = Some((end, place));
        }
        if place.role.written() && written.is_none_or(|(e, _)| end > e) {
            written = Some((end, place));
        }
    }
    Ok(())
}

/// A byte range a native call touches while it runs with the GIL released, and whether it writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub written: bool,
}

impl Span {
    /// The bytes of `m`.
    pub fn of(m: Mem, written: bool) -> Span {
        Span {
            start: m.addr,
            end: m.addr + m.bytes(),
            written,
        }
    }

    /// The bytes of `s`.
    pub fn of_slice<T>(s: &[T], written: bool) -> Span {
        let start = s.as_ptr() as usize;
        Span {
            start,
            end: start + size_of_val(s),
            written,
        }
    }

    /// Whether two calls touching these ranges would race: they share a byte (so neither is empty) and one of
    /// them writes it.
    pub fn clashes(&self, other: &Span) -> bool {
        let shared = self.start.max(other.start) < self.end.min(other.end);
        shared && (self.written || other.written)
    }
}

/// The calls running now (with the GIL released) and the memory each touches.
struct InFlight {
    next: u64,
    calls: Vec<(u64, Vec<Span>)>,
}

static IN_FLIGHT: Mutex<InFlight> = Mutex::new(InFlight {
    next: 0,
    calls: Vec::new(),
});
static FINISHED: Condvar = Condvar::new();

/// A running call's hold on its memory: no two native calls of this module ever touch the same bytes at once
/// where one of them writes (two Python threads stepping one optimizer, two optimizers or functional calls
/// sharing a tensor). A call whose memory clashes with a running call's waits until that call has finished, so
/// such calls are serialized: every one of them happens whole, in some order. Released when dropped.
pub struct Claim(u64);

impl Claim {
    /// Waits until no running call clashes with `spans`, then holds them. Call it with the GIL released (inside
    /// `py.detach`), so that the calls it waits for can finish.
    pub fn new(spans: Vec<Span>) -> Claim {
        let mut all = IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner());
        while all
            .calls
            .iter()
            .any(|(_, theirs)| theirs.iter().any(|t| spans.iter().any(|s| s.clashes(t))))
        {
            all = FINISHED.wait(all).unwrap_or_else(|e| e.into_inner());
        }
        let id = all.next;
        all.next += 1;
        all.calls.push((id, spans));
        Claim(id)
    }

    /// The memory of `work`: parameters, accumulators and 16-bit copies written, gradients read.
    pub fn spans(work: &Work) -> impl Iterator<Item = Span> + '_ {
        work.values().flatten().flat_map(|it| {
            [
                Some(Span::of(it.p, true)),
                Some(Span::of(it.s, true)),
                it.out.map(|o| Span::of(o, true)),
                Some(Span::of(it.g, false)),
            ]
            .into_iter()
            .flatten()
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut all = IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner());
        all.calls.retain(|(id, _)| *id != self.0);
        FINISHED.notify_all();
    }
}

/// One tensor's step: the f32/f64 values updated (`p`: the parameter, or its master copy), the gradient, the
/// accumulator, and the 16-bit parameter written from the master copy.
#[derive(Clone, Copy, Debug)]
pub struct Item {
    pub p: Mem,
    pub g: Mem,
    pub s: Mem,
    pub out: Option<Mem>,
}

/// The element types of one call of the functional step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Kind {
    pub p: Dtype,
    pub g: Dtype,
    pub out: Option<Dtype>,
}

impl Kind {
    /// The kind of `item`, if the crate has a step for it.
    pub fn of(item: &Item) -> Result<Kind, String> {
        let kind = Kind {
            p: item.p.dtype,
            g: item.g.dtype,
            out: item.out.map(|m| m.dtype),
        };
        let ok = matches!(
            (kind.p, kind.g, kind.out),
            (Dtype::F64, Dtype::F64, None)
                | (
                    Dtype::F32,
                    Dtype::F32 | Dtype::Bf16 | Dtype::F16,
                    None | Some(Dtype::Bf16 | Dtype::F16),
                )
        );
        if ok {
            Ok(kind)
        } else {
            Err(match kind.out {
                None => format!(
                    "{} parameters with {} gradients are not supported (float32 takes float32, bfloat16 or \
                     float16 gradients; float64 takes float64)",
                    kind.p.name(),
                    kind.g.name()
                ),
                Some(o) => format!(
                    "a {} parameter with a {} master copy is not supported",
                    o.name(),
                    kind.p.name()
                ),
            })
        }
    }
}

/// The work of one step: items by kind and step number, run in that order (float32 kinds first).
pub type Work = BTreeMap<(Kind, u64), Vec<Item>>;

/// Runs every bucket of `work`. The caller has validated every descriptor, the kinds, the overlap, and that the
/// configuration and the gradient scale are valid for each element type present, so no bucket fails after
/// another has written.
pub fn run(exec: &Executor, config: &Config, work: &Work, scale: Option<f64>) -> Result<(), Error> {
    for (&(kind, t), items) in work {
        match kind.p {
            Dtype::F64 => step::<f64, f64, NoCopy>(exec, config, t, items, scale)?,
            _ => match kind.g {
                Dtype::F32 => f32_bucket::<f32>(exec, config, t, items, kind.out, scale)?,
                Dtype::Bf16 => f32_bucket::<bf16>(exec, config, t, items, kind.out, scale)?,
                _ => f32_bucket::<f16>(exec, config, t, items, kind.out, scale)?,
            },
        };
    }
    Ok(())
}

fn f32_bucket<G: Grad<f32>>(
    exec: &Executor,
    config: &Config,
    t: u64,
    items: &[Item],
    out: Option<Dtype>,
    scale: Option<f64>,
) -> Result<StepOutcome, Error> {
    match out {
        Some(Dtype::Bf16) => step::<f32, G, bf16>(exec, config, t, items, scale),
        Some(Dtype::F16) => step::<f32, G, f16>(exec, config, t, items, scale),
        _ => step::<f32, G, NoCopy>(exec, config, t, items, scale),
    }
}

/// # Safety (of the whole binding)
/// Every `Mem` here was validated by [`Mem::new`] from a live tensor or array whose element type matches, the
/// regions passed [`check_overlap`] (no written region shares memory with any other), and the Python objects
/// that own the memory are kept alive by the caller for the duration of the call.
fn step<T: Float, G: Grad<T>, O: CopyOut<T>>(
    exec: &Executor,
    config: &Config,
    t: u64,
    items: &[Item],
    scale: Option<f64>,
) -> Result<StepOutcome, Error> {
    let mut p: Vec<&mut [T]> = items.iter().map(|it| mut_slice(it.p)).collect();
    let g: Vec<&[G]> = items.iter().map(|it| shared_slice(it.g)).collect();
    let mut s: Vec<&mut [T]> = items.iter().map(|it| mut_slice(it.s)).collect();
    let mut out: Option<Vec<&mut [O]>> = items
        .iter()
        .map(|it| it.out.map(mut_slice))
        .collect::<Option<Vec<_>>>();
    functional::step(
        exec,
        config,
        t,
        &mut p,
        &g,
        &mut s,
        out.as_deref_mut(),
        scale,
    )
}

pub(crate) fn mut_slice<'a, X>(m: Mem) -> &'a mut [X] {
    debug_assert_eq!(m.dtype.size(), size_of::<X>());
    if m.len == 0 {
        return &mut [];
    }
    // SAFETY: `m` is non-null, aligned for X (checked by Mem::new for its dtype, whose size is X's), spans
    // m.len elements of live memory owned by a Python object the caller keeps alive, and no other slice made
    // for this call overlaps it (check_overlap: written regions share memory with nothing).
    unsafe { std::slice::from_raw_parts_mut(m.addr as *mut X, m.len) }
}

pub(crate) fn shared_slice<'a, X>(m: Mem) -> &'a [X] {
    debug_assert_eq!(m.dtype.size(), size_of::<X>());
    if m.len == 0 {
        return &[];
    }
    // SAFETY: as in mut_slice; read-only regions may overlap each other but never a written one.
    unsafe { std::slice::from_raw_parts(m.addr as *const X, m.len) }
}
