//! Adagrad update kernels: the scalar reference, one generic SIMD body, and thin per-ISA implementations
//! (portable `wide`, AVX2+FMA, AVX-512F) chosen at run time. No threads, no allocation.
//!
//! One step, per element, in the parameter's type (see [`reference`](mod@reference) for the specification):
//!
//! ```text
//! g ← −g if maximize;   g ← fma(θ, wd, g) if wd ≠ 0;   G ← fma(g, g, G)
//! θ ← θ − clr·g / (√G + ε)      (EpsPlacement::Outside, PyTorch)
//! θ ← θ − clr·g / √(G + ε)      (EpsPlacement::Inside, Optax / Keras 3)
//! ```
//!
//! Every [`Isa`] gives the same bits as [`reference::update`] in [`Precision::Exact`].
//! [`Precision::Fast`] trades the last bits for speed within a documented bound.
//!
//! ```
//! use adagrad_kernels::{EpsPlacement, Hyper, Kernels, Precision};
//! let k = Kernels::best();
//! let h = Hyper::<f32>::new(0.1, 0.0, 1, 0.0, 1e-10, false, EpsPlacement::Outside);
//! let (mut p, g, mut s) = (vec![1.0f32; 100], vec![0.5f32; 100], vec![0.0f32; 100]);
//! k.update(&mut p, &g, &mut s, &h, Precision::Exact).unwrap();
//! assert!(p.iter().all(|&x| x == 0.9));
//! println!("ran on {}", k.isa());
//! ```
mod arch;
mod cpu;
mod dispatch;
mod lanes;
pub mod reference;
pub mod rowwise;

pub use cpu::{Cpu, Vendor};
pub use dispatch::{Isa, IsaError, Kernels};
pub use half::{bf16, f16};

use std::fmt;
use std::ops::{Add, Div, Mul, Neg, Sub};

/// Where ε goes in the denominator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum EpsPlacement {
    /// `√G + ε`: PyTorch, TensorFlow, DeepSpeed. The default.
    #[default]
    Outside,
    /// `√(G + ε)`: Optax, Keras 3.
    Inside,
}

/// Exact (bit-identical to the reference) or fast (approximate reciprocal square root / reciprocal refined by
/// Newton–Raphson steps).
///
/// Fast mode leaves the state `G` bit-identical to Exact and changes only the size of the update
/// `u = clr·g/d`. Its relative error `|u_fast − u| / |u|` is at most [`Precision::fast_bound`] (per dtype, the
/// same for both ε placements; measured worst 1.9·10⁻⁷ for f32 and 4.3·10⁻¹⁶ for f64) wherever Exact's update is
/// finite: a vector whose denominators (or `G + ε` under the root) leave the estimates' range — below about 2⁻¹²⁵
/// or above 2¹²⁵ for the f32 estimates (f32, and f64 on AVX2, whose estimate is taken in f32), 2^±1020 for
/// AVX-512's f64 estimates — or are ∞ or NaN, is computed with Exact's formula instead, so at the range's edges
/// Fast gives Exact's bits, and a zero gradient always gives a zero update. The scalar path, the portable path
/// where it is not faster (f64, or f32 built without hardware FMA), and steps with a bf16/f16 copy-out (measured no
/// faster) run Exact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// IEEE `√` and `÷`; bit-identical to [`reference::update`] on every path. The default.
    #[default]
    Exact,
    /// Approximate `1/√x` or `1/x` plus Newton–Raphson steps, with FMA.
    Fast,
}

impl Precision {
    /// The documented bound on the relative error of a Fast update, per element type (f32: 2⁻²⁰, f64: 2⁻⁴⁷).
    pub fn fast_bound<T: Float>() -> f64 {
        T::FAST_BOUND
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
    impl Sealed for half::bf16 {}
    impl Sealed for half::f16 {}
    impl Sealed for super::NoCopy {}
}

/// The parameter types the kernels support: `f32` and `f64`.
pub trait Float:
    sealed::Sealed
    + bytemuck::Pod
    + Copy
    + PartialEq
    + PartialOrd
    + fmt::Debug
    + Send
    + Sync
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + Grad<Self>
    + 'static
{
    /// `0`.
    const ZERO: Self;
    /// The type's name (`"f32"`, `"f64"`).
    const NAME: &'static str;
    /// Relative error bound of [`Precision::Fast`] updates.
    const FAST_BOUND: f64;
    /// Mantissa bits including the implicit one (24, 53).
    const MANTISSA_BITS: u32;
    /// Rounds an f64 to this type (once, to nearest even).
    fn from_f64(x: f64) -> Self;
    /// Widens to f64 (exact).
    fn to_f64(self) -> f64;
    /// `self · a + b` rounded once.
    fn mul_add(self, a: Self, b: Self) -> Self;
    /// IEEE square root.
    fn sqrt(self) -> Self;
    /// Neither NaN nor ±∞.
    fn is_finite(self) -> bool;
    /// Picks this type's entry of a kernel table.
    #[doc(hidden)]
    fn entry(k: &Kernels) -> &dispatch::Entry<Self>;
}

macro_rules! impl_float {
    ($t:ty, $name:literal, $bound:expr, $bits:literal, $field:ident) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const NAME: &'static str = $name;
            const FAST_BOUND: f64 = $bound;
            const MANTISSA_BITS: u32 = $bits;
            #[inline(always)]
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn mul_add(self, a: Self, b: Self) -> Self {
                <$t>::mul_add(self, a, b)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            #[inline(always)]
            fn entry(k: &Kernels) -> &dispatch::Entry<Self> {
                &k.$field
            }
        }
    };
}
impl_float!(f32, "f32", 1.0 / 1048576.0, 24, f32);
impl_float!(f64, "f64", 1.0 / 140737488355328.0, 53, f64);

/// The hyperparameters of one step, rounded once to the parameter type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hyper<T> {
    /// The step's learning rate `clr = lr / (1 + (t − 1)·lr_decay)`, computed in f64 and rounded once.
    pub clr: T,
    /// Weight decay (L2 penalty added to the gradient).
    pub weight_decay: T,
    /// ε.
    pub eps: T,
    /// Ascend instead of descend.
    pub maximize: bool,
    /// Where ε goes.
    pub eps_placement: EpsPlacement,
    /// Divide every gradient by this first (unscaling a mixed-precision loss scale, as PyTorch's fused
    /// optimizers do with `grad_scale`); `None` skips the division.
    pub grad_scale: Option<T>,
}

impl<T: Float> Hyper<T> {
    /// Builds the hyperparameters of step `t` (1-based) from PyTorch's f64 values, as PyTorch does:
    /// `clr = lr / (1 + (t − 1)·lr_decay)` in f64, then every value rounded once to `T`.
    ///
    /// ```
    /// use adagrad_kernels::{EpsPlacement, Hyper};
    /// let h = Hyper::<f32>::new(0.1, 0.5, 3, 0.0, 1e-10, false, EpsPlacement::Outside);
    /// assert_eq!(h.clr, 0.05);
    /// ```
    pub fn new(
        lr: f64,
        lr_decay: f64,
        t: u64,
        weight_decay: f64,
        eps: f64,
        maximize: bool,
        eps_placement: EpsPlacement,
    ) -> Self {
        let clr = lr / (1.0 + (t.saturating_sub(1)) as f64 * lr_decay);
        Hyper {
            clr: T::from_f64(clr),
            weight_decay: T::from_f64(weight_decay),
            eps: T::from_f64(eps),
            maximize,
            eps_placement,
            grad_scale: None,
        }
    }

    /// The same hyperparameters, dividing gradients by `scale` (rounded once to `T`) first.
    pub fn with_grad_scale(self, scale: f64) -> Self {
        Hyper {
            grad_scale: Some(T::from_f64(scale)),
            ..self
        }
    }
}

/// Gradient formats for parameters of type `T`: `T` itself, and [`bf16`] / [`f16`](struct@f16) for f32 parameters. Widening
/// to `T` is exact, so a step with these gradients equals the reference applied to the widened gradients.
pub trait Grad<T: Float>:
    sealed::Sealed + bytemuck::Pod + Copy + Send + Sync + fmt::Debug + 'static
{
    /// 0 for `T`, 1 for bf16, 2 for f16 (selects the kernel table entry).
    const KIND: usize;
    /// Zero in this format.
    const ZERO_VALUE: Self;
    /// Exact conversion to `T`.
    fn widen(self) -> T;
    /// Rounds a `T` to this format (to nearest, ties to even; the identity for `T`).
    fn round_from(x: T) -> Self;
}

impl Grad<f32> for f32 {
    const KIND: usize = 0;
    const ZERO_VALUE: Self = 0.0;
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }
    #[inline(always)]
    fn round_from(x: f32) -> Self {
        x
    }
}
impl Grad<f64> for f64 {
    const KIND: usize = 0;
    const ZERO_VALUE: Self = 0.0;
    #[inline(always)]
    fn widen(self) -> f64 {
        self
    }
    #[inline(always)]
    fn round_from(x: f64) -> Self {
        x
    }
}
impl Grad<f32> for bf16 {
    const KIND: usize = 1;
    const ZERO_VALUE: Self = bf16::ZERO;
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }
    #[inline(always)]
    fn round_from(x: f32) -> Self {
        bf16::from_bits(bf16_bits_rne(x))
    }
}
impl Grad<f32> for f16 {
    const KIND: usize = 2;
    const ZERO_VALUE: Self = f16::ZERO;
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }
    #[inline(always)]
    fn round_from(x: f32) -> Self {
        f16::from_f32(x)
    }
}

/// No low-precision copy-out (the default of every step).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoCopy;

/// Formats the updated parameters can be copied out to in the same pass: [`NoCopy`] (none), and [`bf16`] /
/// [`f16`](struct@f16) for f32 parameters, rounded to nearest, ties to even; NaN stays NaN (quieted), overflow gives ±∞.
pub trait CopyOut<T: Float>: sealed::Sealed + Copy + Send + Sync + fmt::Debug + 'static {
    /// 0 for none, 1 for bf16, 2 for f16 (selects the kernel table entry).
    const KIND: usize;
    /// Zero in this format.
    const ZERO_VALUE: Self;
    /// Rounds to this format.
    fn narrow(x: T) -> Self;
}

impl<T: Float> CopyOut<T> for NoCopy {
    const KIND: usize = 0;
    const ZERO_VALUE: Self = NoCopy;
    #[inline(always)]
    fn narrow(_: T) -> Self {
        NoCopy
    }
}
impl CopyOut<f32> for bf16 {
    const KIND: usize = 1;
    const ZERO_VALUE: Self = bf16::ZERO;
    #[inline(always)]
    fn narrow(x: f32) -> Self {
        bf16::from_bits(bf16_bits_rne(x))
    }
}
impl CopyOut<f32> for f16 {
    const KIND: usize = 2;
    const ZERO_VALUE: Self = f16::ZERO;
    #[inline(always)]
    fn narrow(x: f32) -> Self {
        f16::from_f32(x)
    }
}

/// f32 → bf16 bits, round to nearest, ties to even (as PyTorch's `c10::BFloat16` and the AVX-512 BF16
/// instructions); NaN keeps its sign and top payload bits and is quieted.
///
/// `half::bf16::from_f32` (2.7) differs on exact ties: it rounds them away from zero. This crate rounds ties to
/// even, as IEEE and PyTorch do.
#[inline(always)]
pub fn bf16_bits_rne(x: f32) -> u16 {
    let b = x.to_bits();
    if b & 0x7FFF_FFFF > 0x7F80_0000 {
        return ((b >> 16) | 0x0040) as u16;
    }
    ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

/// The slices given to one update do not have the same length. Nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LengthMismatch {
    /// Length of the parameters.
    pub params: usize,
    /// Length of the gradients.
    pub grads: usize,
    /// Length of the state.
    pub state: usize,
}

impl LengthMismatch {
    /// `Ok` when the three lengths agree.
    #[inline]
    pub fn check(params: usize, grads: usize, state: usize) -> Result<(), LengthMismatch> {
        if params == grads && grads == state {
            Ok(())
        } else {
            Err(LengthMismatch {
                params,
                grads,
                state,
            })
        }
    }
}

impl fmt::Display for LengthMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "length mismatch: params {}, grads {}, state {}",
            self.params, self.grads, self.state
        )
    }
}

impl std::error::Error for LengthMismatch {}
