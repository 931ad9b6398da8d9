//! AVX2 + FMA: `__m256` (8 × f32) and `__m256d` (4 × f64).
//!
//! Every intrinsic below needs AVX, AVX2 or FMA; the lane types are only used inside the `#[target_feature]`
//! entry points at the bottom, which [`crate::Kernels`] hands out only after checking the CPU.

use crate::lanes::{self, Lanes};
use crate::{Hyper, Precision};
use core::arch::x86_64::*;

#[derive(Clone, Copy)]
pub(crate) struct F32s(__m256);
#[derive(Clone, Copy)]
pub(crate) struct F64s(__m256d);

impl Lanes for F32s {
    type T = f32;
    const N: usize = 8;
    const EST_BITS: u32 = 12;
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        // SAFETY: AVX is present (trait contract).
        Self(unsafe { _mm256_set1_ps(x) })
    }
    #[inline(always)]
    unsafe fn load(ptr: *const f32) -> Self {
        // SAFETY: AVX is present and `ptr` is valid for 8 reads (trait contract).
        Self(unsafe { _mm256_loadu_ps(ptr) })
    }
    #[inline(always)]
    unsafe fn store(self, ptr: *mut f32) {
        // SAFETY: AVX is present and `ptr` is valid for 8 writes (trait contract).
        unsafe { _mm256_storeu_ps(ptr, self.0) }
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        // SAFETY: AVX is present (trait contract).
        Self(unsafe { _mm256_add_ps(self.0, b.0) })
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        // SAFETY: AVX is present (trait contract).
        Self(unsafe { _mm256_sub_ps(self.0, b.0) })
    }
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        // SAFETY: AVX is present (trait contract).
        Self(unsafe { _mm256_mul_ps(self.0, b.0) })
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        // SAFETY: FMA is present (trait contract).
        Self(unsafe { _mm256_fmadd_ps(self.0, b.0, c.0) })
    }
    #[inline(always)]
    unsafe fn div(self, b: Self) -> Self {
        // SAFETY: AVX is present (trait contract).
        Self(unsafe { _mm256_div_ps(self.0, b.0) })
    }
    #[inline(always)]
    unsafe fn sqrt(self) -> Self {
        // SAFETY: AVX is present (trait contract).
        Self(unsafe { _mm256_sqrt_ps(self.0) })
    }
    #[inline(always)]
    unsafe fn neg(self) -> Self {
        // SAFETY: AVX is present (trait contract).
        Self(unsafe { _mm256_xor_ps(self.0, _mm256_set1_ps(-0.0)) })
    }
    #[inline(always)]
    unsafe fn rsqrt_est(self) -> Self {
        // SAFETY: AVX is present (trait contract).
        Self(unsafe { _mm256_rsqrt_ps(self.0) })
    }
    #[inline(always)]
    unsafe fn recip_est(self) -> Self {
        // SAFETY: AVX is present (trait contract).
        Self(unsafe { _mm256_rcp_ps(self.0) })
    }
}

impl Lanes for F64s {
    type T = f64;
    const N: usize = 4;
    // The estimates go through f32's 12-bit instructions.
    const EST_BITS: u32 = 12;
    #[inline(always)]
    unsafe fn splat(x: f64) -> Self {
        // SAFETY: AVX is present (trait contract).
        Self(unsafe { _mm256_set1_pd(x) })
    }
    #[inline(always)]
    unsafe fn load(ptr: *const f64) -> Self {
        // SAFETY: AVX is present and `ptr` is valid for 4 reads (trait contract).
        Self(unsafe { _mm256_loadu_pd(ptr) })
    }
    #[inline(always)]
    unsafe fn store(self, ptr: *mut f64) {
        // SAFETY: AVX is present and `ptr` is valid for 4 writes (trait contract).
        unsafe { _mm256_storeu_pd(ptr, self.0) }
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        // SAFETY: AVX is present (trait contract).
        Self(unsafe { _mm256_add_pd(self.0, b.0) })
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        // SAFETY: AVX is present (trait contract).
        Self(unsafe { _mm256_sub_pd(self.0, b.0) })
    }
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        // SAFETY: AVX is present (trait contract).
        Self(unsafe { _mm256_mul_pd(self.0, b.0) })
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        // SAFETY: FMA is present (trait contract).
        Self(unsafe { _mm256_fmadd_pd(self.0, b.0, c.0) })
    }
    #[inline(always)]
    unsafe fn div(self, b: Self) -> Self {
        // SAFETY: AVX is present (trait contract).
        Self(unsafe { _mm256_div_pd(self.0, b.0) })
    }
    #[inline(always)]
    unsafe fn sqrt(self) -> Self {
        // SAFETY: AVX is present (trait contract).
        Self(unsafe { _mm256_sqrt_pd(self.0) })
    }
    #[inline(always)]
    unsafe fn neg(self) -> Self {
        // SAFETY: AVX is present (trait contract).
        Self(unsafe { _mm256_xor_pd(self.0, _mm256_set1_pd(-0.0)) })
    }
    #[inline(always)]
    unsafe fn rsqrt_est(self) -> Self {
        // SAFETY: AVX is present (trait contract).
        Self(unsafe { _mm256_cvtps_pd(_mm_rsqrt_ps(_mm256_cvtpd_ps(self.0))) })
    }
    #[inline(always)]
    unsafe fn recip_est(self) -> Self {
        // SAFETY: AVX is present (trait contract).
        Self(unsafe { _mm256_cvtps_pd(_mm_rcp_ps(_mm256_cvtpd_ps(self.0))) })
    }
}

/// # Safety
/// The CPU has AVX2 and FMA; the three slices have the same length.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn update_f32(
    p: &mut [f32],
    g: &[f32],
    s: &mut [f32],
    h: &Hyper<f32>,
    pr: Precision,
) {
    // SAFETY: this function's contract is the body's.
    unsafe { lanes::update::<F32s>(p, g, s, h, pr) }
}

/// # Safety
/// The CPU has AVX2 and FMA; the three slices have the same length.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn update_f64(
    p: &mut [f64],
    g: &[f64],
    s: &mut [f64],
    h: &Hyper<f64>,
    pr: Precision,
) {
    // SAFETY: this function's contract is the body's.
    unsafe { lanes::update::<F64s>(p, g, s, h, pr) }
}

/// The same-traffic stream (benchmark ceiling).
///
/// # Safety
/// The CPU has AVX2 and FMA; the three slices have the same length.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn stream_f32(p: &mut [f32], g: &[f32], s: &mut [f32]) {
    // SAFETY: this function's contract is the body's.
    unsafe { lanes::stream::<F32s>(p, g, s) }
}

/// The same-traffic stream (benchmark ceiling).
///
/// # Safety
/// The CPU has AVX2 and FMA; the three slices have the same length.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn stream_f64(p: &mut [f64], g: &[f64], s: &mut [f64]) {
    // SAFETY: this function's contract is the body's.
    unsafe { lanes::stream::<F64s>(p, g, s) }
}
