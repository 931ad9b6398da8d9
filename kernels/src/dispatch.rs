//! Which path runs: CPU detection (once, cached), the `ADAGRAD_ISA` override, and the kernel table that can only
//! be built for a path the CPU supports.

use crate::{Float, Hyper, LengthMismatch, Precision, arch, reference};
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

/// An update entry point. Callers must guarantee the ISA and equal slice lengths.
pub type UpdateFn<T> = unsafe fn(&mut [T], &[T], &mut [T], &Hyper<T>, Precision);
/// A same-traffic stream entry point. Callers must guarantee the ISA and equal slice lengths.
pub type StreamFn<T> = unsafe fn(&mut [T], &[T], &mut [T]);

/// One dtype's entry points of a path.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct Entry<T> {
    update: UpdateFn<T>,
    stream: StreamFn<T>,
}

/// An instruction-set path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Isa {
    /// The scalar reference, one element at a time.
    Scalar,
    /// `wide`'s portable vectors, as compiled for the target (SSE2 on baseline x86-64, NEON on aarch64).
    Portable,
    /// AVX2 + FMA, 256-bit (x86-64).
    Avx2,
    /// AVX-512F, 512-bit (x86-64).
    Avx512,
}

impl Isa {
    /// Every path, slowest first.
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Portable, Isa::Avx2, Isa::Avx512];
    /// The names `ADAGRAD_ISA` accepts.
    pub const NAMES: &'static str = "scalar, portable, avx2, avx512";

    /// The name used by `ADAGRAD_ISA` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// Whether this CPU can run the path. Detection runs once (std caches it); a build with the features enabled at
    /// compile time answers without detecting.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar | Isa::Portable => true,
            Isa::Avx2 => has_avx2_fma(),
            Isa::Avx512 => has_avx512f(),
        }
    }

    /// The paths this CPU can run, slowest first.
    pub fn available() -> impl Iterator<Item = Isa> {
        Isa::ALL.into_iter().filter(|i| i.is_available())
    }

    /// The fastest available path (detected once, then cached).
    pub fn best() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| Isa::available().last().unwrap_or(Isa::Scalar))
    }

    /// The path named by `ADAGRAD_ISA`, if the variable is set (and not empty).
    ///
    /// An unknown name, or a path this CPU lacks, is an error, never a silent fallback.
    pub fn from_env() -> Result<Option<Isa>, IsaError> {
        match std::env::var("ADAGRAD_ISA") {
            Ok(v) if !v.trim().is_empty() => {
                let isa: Isa = v.parse()?;
                if isa.is_available() {
                    Ok(Some(isa))
                } else {
                    Err(IsaError::Unavailable(isa))
                }
            }
            _ => Ok(None),
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Isa {
    type Err = IsaError;
    fn from_str(s: &str) -> Result<Isa, IsaError> {
        let s = s.trim();
        Isa::ALL
            .into_iter()
            .find(|i| i.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| IsaError::Unknown(s.to_string()))
    }
}

/// A path that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IsaError {
    /// The name is not one of [`Isa::NAMES`].
    Unknown(String),
    /// This CPU lacks the instructions.
    Unavailable(Isa),
}

impl fmt::Display for IsaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IsaError::Unknown(s) => {
                write!(f, "unknown ISA {s:?} (ADAGRAD_ISA accepts: {})", Isa::NAMES)
            }
            IsaError::Unavailable(i) => write!(
                f,
                "ISA {i} is not available on this CPU (available: {})",
                Isa::available()
                    .map(Isa::name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

impl std::error::Error for IsaError {}

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    cfg!(all(target_feature = "avx2", target_feature = "fma"))
        || (std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"))
}
#[cfg(not(target_arch = "x86_64"))]
fn has_avx2_fma() -> bool {
    false
}
#[cfg(target_arch = "x86_64")]
fn has_avx512f() -> bool {
    cfg!(target_feature = "avx512f") || std::is_x86_feature_detected!("avx512f")
}
#[cfg(not(target_arch = "x86_64"))]
fn has_avx512f() -> bool {
    false
}

/// The kernel table of one path. It can only be built through [`Kernels::new`], which checks the CPU, so holding
/// one proves its entry points are safe to call.
#[derive(Clone, Copy)]
pub struct Kernels {
    isa: Isa,
    pub(crate) f32: Entry<f32>,
    pub(crate) f64: Entry<f64>,
}

impl fmt::Debug for Kernels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kernels").field("isa", &self.isa).finish()
    }
}

/// # Safety
/// Equal slice lengths (the reference needs no CPU feature).
unsafe fn scalar_f32(p: &mut [f32], g: &[f32], s: &mut [f32], h: &Hyper<f32>, _: Precision) {
    reference::update_same_len(p, g, s, h)
}
/// # Safety
/// Equal slice lengths (the reference needs no CPU feature).
unsafe fn scalar_f64(p: &mut [f64], g: &[f64], s: &mut [f64], h: &Hyper<f64>, _: Precision) {
    reference::update_same_len(p, g, s, h)
}
/// # Safety
/// None beyond the signature (scalar, any lengths).
unsafe fn scalar_stream<T: Float>(p: &mut [T], g: &[T], s: &mut [T]) {
    for ((p, &g), s) in p.iter_mut().zip(g).zip(s.iter_mut()) {
        *p = *p + g;
        *s = *s + g;
    }
}

impl Kernels {
    /// The table of `isa`, or [`IsaError::Unavailable`] if this CPU cannot run it.
    pub fn new(isa: Isa) -> Result<Kernels, IsaError> {
        if !isa.is_available() {
            return Err(IsaError::Unavailable(isa));
        }
        use arch::*;
        let (f32, f64) = match isa {
            Isa::Scalar => return Ok(Kernels::scalar()),
            Isa::Portable => (
                Entry {
                    update: portable::update_f32 as UpdateFn<f32>,
                    stream: portable::stream_f32 as StreamFn<f32>,
                },
                Entry {
                    update: portable::update_f64 as UpdateFn<f64>,
                    stream: portable::stream_f64 as StreamFn<f64>,
                },
            ),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => (
                Entry {
                    update: avx2::update_f32 as UpdateFn<f32>,
                    stream: avx2::stream_f32 as StreamFn<f32>,
                },
                Entry {
                    update: avx2::update_f64 as UpdateFn<f64>,
                    stream: avx2::stream_f64 as StreamFn<f64>,
                },
            ),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => (
                Entry {
                    update: avx512::update_f32 as UpdateFn<f32>,
                    stream: avx512::stream_f32 as StreamFn<f32>,
                },
                Entry {
                    update: avx512::update_f64 as UpdateFn<f64>,
                    stream: avx512::stream_f64 as StreamFn<f64>,
                },
            ),
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2 | Isa::Avx512 => return Err(IsaError::Unavailable(isa)),
        };
        Ok(Kernels { isa, f32, f64 })
    }

    /// The table of the fastest path on this CPU (detected once, cached).
    pub fn best() -> Kernels {
        static BEST: OnceLock<Kernels> = OnceLock::new();
        *BEST.get_or_init(|| Kernels::new(Isa::best()).unwrap_or_else(|_| Kernels::scalar()))
    }

    /// The path `ADAGRAD_ISA` names, or the best one when it is unset.
    pub fn from_env() -> Result<Kernels, IsaError> {
        match Isa::from_env()? {
            Some(isa) => Kernels::new(isa),
            None => Ok(Kernels::best()),
        }
    }

    fn scalar() -> Kernels {
        Kernels {
            isa: Isa::Scalar,
            f32: Entry {
                update: scalar_f32,
                stream: scalar_stream::<f32>,
            },
            f64: Entry {
                update: scalar_f64,
                stream: scalar_stream::<f64>,
            },
        }
    }

    /// The path this table runs.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// One Adagrad step over `params`, `grads`, `state` (see [`crate::reference`] for the math).
    ///
    /// Returns [`LengthMismatch`] and changes nothing unless the three slices have the same length.
    #[inline]
    pub fn update<T: Float>(
        &self,
        params: &mut [T],
        grads: &[T],
        state: &mut [T],
        h: &Hyper<T>,
        precision: Precision,
    ) -> Result<(), LengthMismatch> {
        LengthMismatch::check(params.len(), grads.len(), state.len())?;
        let f = T::entry(self).update;
        // SAFETY: `self` was built by `Kernels::new`, which checked that the CPU runs `self.isa`; the lengths were
        // checked just above.
        unsafe { f(params, grads, state, h, precision) };
        Ok(())
    }

    /// The same-traffic stream on this path: reads the three slices and writes `params ← params + grads`,
    /// `state ← state + grads`. It moves exactly the bytes of an update with trivially cheap arithmetic, at the
    /// same vector width: benchmarks use it as the ceiling of a memory-bound step.
    pub fn stream<T: Float>(
        &self,
        params: &mut [T],
        grads: &[T],
        state: &mut [T],
    ) -> Result<(), LengthMismatch> {
        LengthMismatch::check(params.len(), grads.len(), state.len())?;
        let f = T::entry(self).stream;
        // SAFETY: as in `update`: the CPU runs `self.isa` and the lengths are equal.
        unsafe { f(params, grads, state) };
        Ok(())
    }
}
