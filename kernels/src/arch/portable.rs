//! The portable path: `wide`'s vectors, whose instructions are fixed when this crate is compiled (SSE2 on a
//! baseline x86-64 build, AVX+FMA on x86-64-v3, NEON on aarch64).
//!
//! `wide`'s `mul_add` is unfused unless the target has FMA, so without FMA the fused multiply-add is done per
//! lane with `f32::mul_add` / `f64::mul_add` (rounded once, like the reference).

use crate::lanes::{self, Lanes};
use crate::{Hyper, Precision};
use wide::{f32x8, f64x4};

#[derive(Clone, Copy)]
pub(crate) struct F32s(f32x8);
#[derive(Clone, Copy)]
pub(crate) struct F64s(f64x4);

/// Whether `wide`'s `mul_add` is a fused instruction on this compile target.
const WIDE_FUSES: bool = cfg!(all(target_arch = "x86_64", target_feature = "fma"));

// The methods are `unsafe` only because the trait's are: `wide` needs nothing beyond the compile target, except
// `load`/`store`, whose pointers must be valid for N elements.
impl Lanes for F32s {
    type T = f32;
    const N: usize = 8;
    const EST_BITS: u32 = if cfg!(target_arch = "x86_64") { 12 } else { 8 };
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        Self(f32x8::splat(x))
    }
    #[inline(always)]
    unsafe fn load(ptr: *const f32) -> Self {
        // SAFETY: the caller guarantees `ptr` is valid for 8 reads.
        Self(f32x8::from(unsafe {
            ptr.cast::<[f32; 8]>().read_unaligned()
        }))
    }
    #[inline(always)]
    unsafe fn store(self, ptr: *mut f32) {
        // SAFETY: the caller guarantees `ptr` is valid for 8 writes.
        unsafe { ptr.cast::<[f32; 8]>().write_unaligned(self.0.to_array()) }
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        Self(self.0 + b.0)
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        Self(self.0 - b.0)
    }
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        Self(self.0 * b.0)
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        if WIDE_FUSES {
            return Self(self.0.mul_add(b.0, c.0));
        }
        let (a, b, c) = (self.0.to_array(), b.0.to_array(), c.0.to_array());
        Self(f32x8::from(core::array::from_fn::<f32, 8, _>(|i| {
            a[i].mul_add(b[i], c[i])
        })))
    }
    #[inline(always)]
    unsafe fn div(self, b: Self) -> Self {
        Self(self.0 / b.0)
    }
    #[inline(always)]
    unsafe fn sqrt(self) -> Self {
        Self(self.0.sqrt())
    }
    #[inline(always)]
    unsafe fn neg(self) -> Self {
        Self(self.0 ^ f32x8::splat(-0.0))
    }
    #[inline(always)]
    unsafe fn rsqrt_est(self) -> Self {
        Self(self.0.recip_sqrt())
    }
    #[inline(always)]
    unsafe fn recip_est(self) -> Self {
        Self(self.0.recip())
    }
}

impl Lanes for F64s {
    type T = f64;
    const N: usize = 4;
    // `wide` has no f64 estimate: these are the exact 1/√x and 1/x, so Fast needs no Newton step.
    const EST_BITS: u32 = 53;
    #[inline(always)]
    unsafe fn splat(x: f64) -> Self {
        Self(f64x4::splat(x))
    }
    #[inline(always)]
    unsafe fn load(ptr: *const f64) -> Self {
        // SAFETY: the caller guarantees `ptr` is valid for 4 reads.
        Self(f64x4::from(unsafe {
            ptr.cast::<[f64; 4]>().read_unaligned()
        }))
    }
    #[inline(always)]
    unsafe fn store(self, ptr: *mut f64) {
        // SAFETY: the caller guarantees `ptr` is valid for 4 writes.
        unsafe { ptr.cast::<[f64; 4]>().write_unaligned(self.0.to_array()) }
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        Self(self.0 + b.0)
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        Self(self.0 - b.0)
    }
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        Self(self.0 * b.0)
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        if WIDE_FUSES {
            return Self(self.0.mul_add(b.0, c.0));
        }
        let (a, b, c) = (self.0.to_array(), b.0.to_array(), c.0.to_array());
        Self(f64x4::from(core::array::from_fn::<f64, 4, _>(|i| {
            a[i].mul_add(b[i], c[i])
        })))
    }
    #[inline(always)]
    unsafe fn div(self, b: Self) -> Self {
        Self(self.0 / b.0)
    }
    #[inline(always)]
    unsafe fn sqrt(self) -> Self {
        Self(self.0.sqrt())
    }
    #[inline(always)]
    unsafe fn neg(self) -> Self {
        Self(self.0 ^ f64x4::splat(-0.0))
    }
    #[inline(always)]
    unsafe fn rsqrt_est(self) -> Self {
        Self(f64x4::splat(1.0) / self.0.sqrt())
    }
    #[inline(always)]
    unsafe fn recip_est(self) -> Self {
        Self(f64x4::splat(1.0) / self.0)
    }
}

/// # Safety
/// The three slices have the same length.
pub(crate) unsafe fn update_f32(
    p: &mut [f32],
    g: &[f32],
    s: &mut [f32],
    h: &Hyper<f32>,
    pr: Precision,
) {
    // SAFETY: `wide` needs no runtime feature; equal lengths are this function's contract.
    unsafe { lanes::update::<F32s>(p, g, s, h, pr) }
}

/// # Safety
/// The three slices have the same length.
pub(crate) unsafe fn update_f64(
    p: &mut [f64],
    g: &[f64],
    s: &mut [f64],
    h: &Hyper<f64>,
    pr: Precision,
) {
    // SAFETY: `wide` needs no runtime feature; equal lengths are this function's contract.
    unsafe { lanes::update::<F64s>(p, g, s, h, pr) }
}

/// The same-traffic stream (benchmark ceiling).
///
/// # Safety
/// The three slices have the same length.
pub(crate) unsafe fn stream_f32(p: &mut [f32], g: &[f32], s: &mut [f32]) {
    // SAFETY: this function's contract is the body's.
    unsafe { lanes::stream::<F32s>(p, g, s) }
}

/// The same-traffic stream (benchmark ceiling).
///
/// # Safety
/// The three slices have the same length.
pub(crate) unsafe fn stream_f64(p: &mut [f64], g: &[f64], s: &mut [f64]) {
    // SAFETY: this function's contract is the body's.
    unsafe { lanes::stream::<F64s>(p, g, s) }
}
