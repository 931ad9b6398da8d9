//! Which path runs: CPU detection (once, cached), the `ADAGRAD_ISA` override, and the kernel table that can only
//! be built for a path the CPU supports.

use crate::lanes::{Mode, Pass};
use crate::rowwise::{self, RowHyper};
use crate::{CopyOut, Float, Grad, Hyper, LengthMismatch, NoCopy, Precision, arch, reference};
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

/// A type-erased update entry point: gradients and copy-out behind raw pointers, their formats fixed by the table
/// slot. Callers must guarantee the ISA, equal lengths, and that the pointers match the slot's formats.
pub(crate) type RawFn<T> = unsafe fn(&mut [T], *const (), &mut [T], *mut (), &Hyper<T>, Pass);

/// One dtype's entry points of a path, `update[grad kind][copy-out kind]`.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct Entry<T> {
    update: [[RawFn<T>; 3]; 3],
}

/// One path's entry points, implemented by one zero-sized type per ISA file.
///
/// # Safety (of every method)
/// The CPU supports the path; the slices have the same length, and `out` is empty when `O` is `NoCopy`.
pub(crate) trait Path {
    unsafe fn f32<G: Grad<f32>, O: CopyOut<f32>>(
        p: &mut [f32],
        g: &[G],
        s: &mut [f32],
        out: &mut [O],
        h: &Hyper<f32>,
        pass: Pass,
    );
    unsafe fn f64(p: &mut [f64], g: &[f64], s: &mut [f64], h: &Hyper<f64>, pass: Pass);
    /// One row-wise step of an f32 row ([`crate::rowwise::update_f32`]); `w.len() == g.len() > 0`.
    unsafe fn rowwise(w: &mut [f32], g: &[f32], h: &mut f32, hy: &RowHyper);
    /// One lookup's gradient row added into its row's sum ([`crate::rowwise::accumulate`]); `sum.len() == g.len()`.
    unsafe fn accumulate<G: Grad<f32>>(sum: &mut [f32], g: &[G], weight: Option<f32>, first: bool);
}

/// A type-erased [`Path::accumulate`]: the gradients behind a raw pointer, their format fixed by the table slot.
type RawAcc = unsafe fn(&mut [f32], *const (), Option<f32>, bool);

/// The scalar path: the reference, element by element.
struct Scalar;

impl Path for Scalar {
    unsafe fn f32<G: Grad<f32>, O: CopyOut<f32>>(
        p: &mut [f32],
        g: &[G],
        s: &mut [f32],
        out: &mut [O],
        h: &Hyper<f32>,
        _: Pass,
    ) {
        reference::mixed_same_len(p, g, s, out, h)
    }
    unsafe fn f64(p: &mut [f64], g: &[f64], s: &mut [f64], h: &Hyper<f64>, _: Pass) {
        reference::mixed_same_len::<f64, f64, NoCopy>(p, g, s, &mut [], h)
    }
    unsafe fn rowwise(w: &mut [f32], g: &[f32], h: &mut f32, hy: &RowHyper) {
        // The lengths agree (contract), so the reference cannot refuse.
        let _ = rowwise::update_f32(w, g, h, hy);
    }
    unsafe fn accumulate<G: Grad<f32>>(sum: &mut [f32], g: &[G], weight: Option<f32>, first: bool) {
        rowwise::accumulate_same_len(sum, g, weight, first)
    }
}

/// Restores the gradient slice behind a [`RawAcc`] call and calls the path.
///
/// # Safety
/// `g` points to `sum.len()` values of `G`; the CPU supports the path.
unsafe fn raw_acc<P: Path, G: Grad<f32>>(
    sum: &mut [f32],
    g: *const (),
    weight: Option<f32>,
    first: bool,
) {
    // SAFETY: this function's contract.
    unsafe {
        let g = std::slice::from_raw_parts(g.cast::<G>(), sum.len());
        P::accumulate(sum, g, weight, first)
    }
}

/// Restores the slices behind a [`RawFn`] call and calls the path.
///
/// # Safety
/// `g` points to `p.len()` values of `G`; `out` to `p.len()` values of `O` unless `O` is `NoCopy`; the rest is
/// [`Path`]'s contract.
unsafe fn raw32<P: Path, G: Grad<f32>, O: CopyOut<f32>>(
    p: &mut [f32],
    g: *const (),
    s: &mut [f32],
    out: *mut (),
    h: &Hyper<f32>,
    pass: Pass,
) {
    let n = p.len();
    // SAFETY: this function's contract.
    unsafe {
        let g = std::slice::from_raw_parts(g.cast::<G>(), n);
        let out = std::slice::from_raw_parts_mut(out.cast::<O>(), if O::KIND == 0 { 0 } else { n });
        P::f32(p, g, s, out, h, pass)
    }
}

/// As [`raw32`], for f64 (f64 gradients, no copy-out: the only formats `Grad<f64>` and `CopyOut<f64>` allow).
///
/// # Safety
/// `g` points to `p.len()` f64 values; the rest is [`Path`]'s contract.
unsafe fn raw64<P: Path>(
    p: &mut [f64],
    g: *const (),
    s: &mut [f64],
    _: *mut (),
    h: &Hyper<f64>,
    pass: Pass,
) {
    // SAFETY: this function's contract.
    unsafe {
        P::f64(
            p,
            std::slice::from_raw_parts(g.cast::<f64>(), p.len()),
            s,
            h,
            pass,
        )
    }
}

/// The table of path `P`.
fn table<P: Path>(isa: Isa) -> Kernels {
    use half::{bf16, f16};
    let f64_update: RawFn<f64> = raw64::<P>;
    Kernels {
        isa,
        prefetch: 0,
        rowwise: P::rowwise,
        accumulate: [raw_acc::<P, f32>, raw_acc::<P, bf16>, raw_acc::<P, f16>],
        f32: Entry {
            update: [
                [
                    raw32::<P, f32, NoCopy>,
                    raw32::<P, f32, bf16>,
                    raw32::<P, f32, f16>,
                ],
                [
                    raw32::<P, bf16, NoCopy>,
                    raw32::<P, bf16, bf16>,
                    raw32::<P, bf16, f16>,
                ],
                [
                    raw32::<P, f16, NoCopy>,
                    raw32::<P, f16, bf16>,
                    raw32::<P, f16, f16>,
                ],
            ],
        },
        // f64 has one format pair; every slot holds it (the others are unreachable through `Grad`/`CopyOut`).
        f64: Entry {
            update: [[f64_update; 3]; 3],
        },
    }
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
        let Some(v) = std::env::var_os("ADAGRAD_ISA") else {
            return Ok(None);
        };
        // A value that is not UTF-8 is not one of the names either: an error, not a silent fallback.
        let v = v
            .into_string()
            .map_err(|v| IsaError::Unknown(v.to_string_lossy().into_owned()))?;
        if v.trim().is_empty() {
            return Ok(None);
        }
        let isa: Isa = v.parse()?;
        if isa.is_available() {
            Ok(Some(isa))
        } else {
            Err(IsaError::Unavailable(isa))
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
/// one proves its entry points are safe to call. It also carries the software prefetch distance its passes use
/// ([`Kernels::with_prefetch`]; none by default), a hint that never changes results.
#[derive(Clone, Copy)]
pub struct Kernels {
    isa: Isa,
    prefetch: usize,
    pub(crate) f32: Entry<f32>,
    pub(crate) f64: Entry<f64>,
    rowwise: unsafe fn(&mut [f32], &[f32], &mut f32, &RowHyper),
    /// [`Path::accumulate`] per gradient format (`Grad::KIND`).
    accumulate: [RawAcc; 3],
}

impl fmt::Debug for Kernels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kernels")
            .field("isa", &self.isa)
            .field("prefetch", &self.prefetch)
            .finish()
    }
}

impl Kernels {
    /// The table of `isa`, or [`IsaError::Unavailable`] if this CPU cannot run it.
    pub fn new(isa: Isa) -> Result<Kernels, IsaError> {
        if !isa.is_available() {
            return Err(IsaError::Unavailable(isa));
        }
        Ok(match isa {
            Isa::Scalar => table::<Scalar>(isa),
            Isa::Portable => table::<arch::portable::Portable>(isa),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => table::<arch::avx2::Avx2>(isa),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => table::<arch::avx512::Avx512>(isa),
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2 | Isa::Avx512 => return Err(IsaError::Unavailable(isa)),
        })
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
        table::<Scalar>(Isa::Scalar)
    }

    /// The path this table runs.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The same table, asking for cache lines `bytes` ahead of the loop in each stream (0: no software
    /// prefetch, the hardware prefetcher alone). Results are identical whatever the distance; only speed at
    /// memory-bound sizes changes, and which distance is best depends on the CPU (see `adagrad::Tuning`). Values
    /// above [`Kernels::MAX_PREFETCH`] are clamped to it.
    ///
    /// ```
    /// use adagrad_kernels::Kernels;
    /// let k = Kernels::best().with_prefetch(4096);
    /// assert_eq!(k.prefetch(), 4096);
    /// assert_eq!(Kernels::best().prefetch(), 0);
    /// ```
    pub fn with_prefetch(self, bytes: usize) -> Kernels {
        Kernels {
            prefetch: bytes.min(Self::MAX_PREFETCH),
            ..self
        }
    }

    /// The largest prefetch distance [`Kernels::with_prefetch`] accepts (1 MiB).
    pub const MAX_PREFETCH: usize = 1 << 20;

    /// The software prefetch distance in bytes (0: none).
    pub fn prefetch(&self) -> usize {
        self.prefetch
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
        self.update_with::<T, T, NoCopy>(params, grads, state, None, h, precision)
    }

    /// One step with gradients in format `G` (for f32 parameters: f32, [`bf16`](crate::bf16) or
    /// [`f16`](crate::f16)), optionally writing the updated parameters rounded to format `O` into `out` in the same
    /// pass. Bit-identical to [`reference::update_mixed`].
    ///
    /// Returns [`LengthMismatch`] and changes nothing unless every slice (and `out`, if given) has the same length.
    ///
    /// ```
    /// use adagrad_kernels::{bf16, EpsPlacement, Hyper, Kernels, Precision};
    /// let k = Kernels::best();
    /// let h = Hyper::<f32>::new(0.1, 0.0, 1, 0.0, 1e-10, false, EpsPlacement::Outside);
    /// let (mut p, mut s) = (vec![1.0f32; 20], vec![0.0f32; 20]);
    /// let g = vec![bf16::from_f32(0.5); 20];
    /// let mut out = vec![bf16::ZERO; 20];
    /// k.update_with(&mut p, &g, &mut s, Some(&mut out), &h, Precision::Exact).unwrap();
    /// assert!(p.iter().all(|&x| x == 0.9) && out.iter().all(|&x| x == bf16::from_f32(0.9)));
    /// ```
    #[inline]
    pub fn update_with<T: Float, G: Grad<T>, O: CopyOut<T>>(
        &self,
        params: &mut [T],
        grads: &[G],
        state: &mut [T],
        out: Option<&mut [O]>,
        h: &Hyper<T>,
        precision: Precision,
    ) -> Result<(), LengthMismatch> {
        let mode = match precision {
            Precision::Exact => Mode::Exact,
            Precision::Fast => Mode::Fast,
        };
        let pass = Pass {
            mode,
            prefetch: self.prefetch,
        };
        self.run(params, grads, state, out, h, pass)
    }

    /// One row-wise step of an f32 embedding row `w` with its summed gradient `g` and its accumulator `h`,
    /// bit-identical to [`rowwise::update_f32`] (the 8-lane sum of FBGEMM's kernel on every SIMD path).
    ///
    /// Returns [`LengthMismatch`] and changes nothing unless `w` and `g` have the same length.
    ///
    /// ```
    /// use adagrad_kernels::{EpsPlacement, Kernels, rowwise::{DecayMode, RowHyper}};
    /// let hy = RowHyper::new(0.1, 0.0, 1, 0.0, DecayMode::L2, 1e-8, false, EpsPlacement::Outside);
    /// let (mut w, mut h) = (vec![1.0f32; 64], 0.0f32);
    /// Kernels::best().rowwise(&mut w, &[2.0; 64], &mut h, &hy).unwrap();
    /// assert_eq!((w[63], h), (0.9, 4.0));
    /// ```
    #[inline]
    pub fn rowwise(
        &self,
        w: &mut [f32],
        g: &[f32],
        h: &mut f32,
        hy: &RowHyper,
    ) -> Result<(), LengthMismatch> {
        LengthMismatch::check(w.len(), g.len(), w.len())?;
        if w.is_empty() {
            return Ok(());
        }
        // SAFETY: `self` was built by `Kernels::new`, which checked that the CPU runs `self.isa`; the lengths
        // agree and are not zero (checked above).
        unsafe { (self.rowwise)(w, g, h, hy) };
        Ok(())
    }

    /// Adds one lookup's gradient row `g` (f32, bf16 or f16), times `weight` if any, into `sum` — or sets `sum` to
    /// it for a row's `first` lookup — on this path's vectors, bit-identical to [`rowwise::accumulate`] (where a NaN
    /// meets a NaN, which one's payload the result carries is left open, as Rust leaves it).
    ///
    /// Returns [`LengthMismatch`] (and changes nothing) unless `sum` and `g` have the same length.
    ///
    /// ```
    /// use adagrad_kernels::{f16, Kernels};
    /// let mut sum = vec![0.0f32; 20];
    /// let k = Kernels::best();
    /// k.accumulate(&mut sum, &[1.0f32; 20], None, true).unwrap();
    /// k.accumulate(&mut sum, &[f16::from_f32(3.0); 20], Some(0.5), false).unwrap();
    /// assert_eq!(sum, vec![2.5f32; 20]);
    /// ```
    #[inline]
    pub fn accumulate<G: Grad<f32>>(
        &self,
        sum: &mut [f32],
        g: &[G],
        weight: Option<f32>,
        first: bool,
    ) -> Result<(), LengthMismatch> {
        LengthMismatch::check(sum.len(), g.len(), sum.len())?;
        // SAFETY: `self` was built by `Kernels::new`, which checked that the CPU runs `self.isa`; slot `G::KIND`
        // was filled for exactly `G` by `table`, and `g` holds `sum.len()` values of it (checked above).
        unsafe { (self.accumulate[G::KIND])(sum, g.as_ptr().cast(), weight, first) };
        Ok(())
    }

    /// Checks the lengths and calls the table entry of these formats.
    #[inline]
    fn run<T: Float, G: Grad<T>, O: CopyOut<T>>(
        &self,
        params: &mut [T],
        grads: &[G],
        state: &mut [T],
        out: Option<&mut [O]>,
        h: &Hyper<T>,
        pass: Pass,
    ) -> Result<(), LengthMismatch> {
        LengthMismatch::check(params.len(), grads.len(), state.len())?;
        let (out_kind, out_ptr) = match out {
            Some(o) if O::KIND != 0 => {
                LengthMismatch::check(params.len(), o.len(), state.len())?;
                (O::KIND, o.as_mut_ptr().cast::<()>())
            }
            _ => (0, std::ptr::NonNull::<()>::dangling().as_ptr()),
        };
        let f = T::entry(self).update[G::KIND][out_kind];
        // SAFETY: `self` was built by `Kernels::new`, which checked that the CPU runs `self.isa`; the lengths were
        // checked above; slot [G::KIND][out_kind] was filled for exactly these formats by `table`, and `out_ptr`
        // is only read as a slice when `out_kind` is not 0.
        unsafe { f(params, grads.as_ptr().cast(), state, out_ptr, h, pass) };
        Ok(())
    }
}
