//! AVX-512F: `__m512` (16 × f32) and `__m512d` (8 × f64).
//!
//! Every intrinsic below needs AVX-512F (the sign flip uses integer XOR, as `_mm512_xor_ps` needs AVX-512DQ);
//! the lane types are only used inside the `#[target_feature]`
//! entry points at the bottom, which [`crate::Kernels`] hands out only after checking the CPU.

use crate::lanes::{self, Lanes};
use crate::{Hyper, Precision};
use core::arch::x86_64::*;

#[derive(Clone, Copy)]
pub(crate) struct F32s(__m512);
#[derive(Clone, Copy)]
pub(crate) struct F64s(__m512d);

impl Lanes for F32s {
    type T = f32;
    const N: usize = 16;
    const EST_BITS: u32 = 14;
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        // SAFETY: AVX-512F is present (trait contract).
        Self(unsafe { _mm512_set1_ps(x) })
    }
    #[inline(always)]
    unsafe fn load(ptr: *const f32) -> Self {
        // SAFETY: AVX-512F is present and `ptr` is valid for 16 reads (trait contract).
        Self(unsafe { _mm512_loadu_ps(ptr) })
    }
    #[inline(always)]
    unsafe fn store(self, ptr: *mut f32) {
        // SAFETY: AVX-512F is present and `ptr` is valid for 16 writes (trait contract).
        unsafe { _mm512_storeu_ps(ptr, self.0) }
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        // SAFETY: AVX-512F is present (trait contract).
        Self(unsafe { _mm512_add_ps(self.0, b.0) })
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        // SAFETY: AVX-512F is present (trait contract).
        Self(unsafe { _mm512_sub_ps(self.0, b.0) })
    }
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        // SAFETY: AVX-512F is present (trait contract).
        Self(unsafe { _mm512_mul_ps(self.0, b.0) })
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        // SAFETY: AVX-512F is present (trait contract).
        Self(unsafe { _mm512_fmadd_ps(self.0, b.0, c.0) })
    }
    #[inline(always)]
    unsafe fn div(self, b: Self) -> Self {
        // SAFETY: AVX-512F is present (trait contract).
        Self(unsafe { _mm512_div_ps(self.0, b.0) })
    }
    #[inline(always)]
    unsafe fn sqrt(self) -> Self {
        // SAFETY: AVX-512F is present (trait contract).
        Self(unsafe { _mm512_sqrt_ps(self.0) })
    }
    #[inline(always)]
    unsafe fn neg(self) -> Self {
        // SAFETY: AVX-512F is present (trait contract).
        Self(unsafe {
            _mm512_castsi512_ps(_mm512_xor_si512(
                _mm512_castps_si512(self.0),
                _mm512_set1_epi32(i32::MIN),
            ))
        })
    }
    #[inline(always)]
    unsafe fn rsqrt_est(self) -> Self {
        // SAFETY: AVX-512F is present (trait contract).
        Self(unsafe { _mm512_rsqrt14_ps(self.0) })
    }
    #[inline(always)]
    unsafe fn recip_est(self) -> Self {
        // SAFETY: AVX-512F is present (trait contract).
        Self(unsafe { _mm512_rcp14_ps(self.0) })
    }
}

impl Lanes for F64s {
    type T = f64;
    const N: usize = 8;
    const EST_BITS: u32 = 14;
    #[inline(always)]
    unsafe fn splat(x: f64) -> Self {
        // SAFETY: AVX-512F is present (trait contract).
        Self(unsafe { _mm512_set1_pd(x) })
    }
    #[inline(always)]
    unsafe fn load(ptr: *const f64) -> Self {
        // SAFETY: AVX-512F is present and `ptr` is valid for 8 reads (trait contract).
        Self(unsafe { _mm512_loadu_pd(ptr) })
    }
    #[inline(always)]
    unsafe fn store(self, ptr: *mut f64) {
        // SAFETY: AVX-512F is present and `ptr` is valid for 8 writes (trait contract).
        unsafe { _mm512_storeu_pd(ptr, self.0) }
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        // SAFETY: AVX-512F is present (trait contract).
        Self(unsafe { _mm512_add_pd(self.0, b.0) })
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        // SAFETY: AVX-512F is present (trait contract).
        Self(unsafe { _mm512_sub_pd(self.0, b.0) })
    }
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        // SAFETY: AVX-512F is present (trait contract).
        Self(unsafe { _mm512_mul_pd(self.0, b.0) })
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        // SAFETY: AVX-512F is present (trait contract).
        Self(unsafe { _mm512_fmadd_pd(self.0, b.0, c.0) })
    }
    #[inline(always)]
    unsafe fn div(self, b: Self) -> Self {
        // SAFETY: AVX-512F is present (trait contract).
        Self(unsafe { _mm512_div_pd(self.0, b.0) })
    }
    #[inline(always)]
    unsafe fn sqrt(self) -> Self {
        // SAFETY: AVX-512F is present (trait contract).
        Self(unsafe { _mm512_sqrt_pd(self.0) })
    }
    #[inline(always)]
    unsafe fn neg(self) -> Self {
        // SAFETY: AVX-512F is present (trait contract).
        Self(unsafe {
            _mm512_castsi512_pd(_mm512_xor_si512(
                _mm512_castpd_si512(self.0),
                _mm512_set1_epi64(i64::MIN),
            ))
        })
    }
    #[inline(always)]
    unsafe fn rsqrt_est(self) -> Self {
        // SAFETY: AVX-512F is present (trait contract).
        Self(unsafe { _mm512_rsqrt14_pd(self.0) })
    }
    #[inline(always)]
    unsafe fn recip_est(self) -> Self {
        // SAFETY: AVX-512F is present (trait contract).
        Self(unsafe { _mm512_rcp14_pd(self.0) })
    }
}

/// # Safety
/// The CPU has AVX-512F; the three slices have the same length.
#[target_feature(enable = "avx512f")]
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
/// The CPU has AVX-512F; the three slices have the same length.
#[target_feature(enable = "avx512f")]
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
/// The CPU has AVX-512F; the three slices have the same length.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn stream_f32(p: &mut [f32], g: &[f32], s: &mut [f32]) {
    // SAFETY: this function's contract is the body's.
    unsafe { lanes::stream::<F32s>(p, g, s) }
}

/// The same-traffic stream (benchmark ceiling).
///
/// # Safety
/// The CPU has AVX-512F; the three slices have the same length.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn stream_f64(p: &mut [f64], g: &[f64], s: &mut [f64]) {
    // SAFETY: this function's contract is the body's.
    unsafe { lanes::stream::<F64s>(p, g, s) }
}
