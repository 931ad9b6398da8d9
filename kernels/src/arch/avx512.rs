//! AVX-512F: `__m512` (16 × f32) and `__m512d` (8 × f64).
//!
//! Every intrinsic below needs AVX-512F; the lane types are only used inside the `#[target_feature]` entry
//! points at the bottom, which [`crate::Kernels`] hands out only after checking the CPU.
//! The sign flip uses integer XOR, as `_mm512_xor_ps` would need AVX-512DQ.

use crate::dispatch::Path;
use crate::lanes::{self, Lanes, Pass};
use crate::rowwise::{self, RowHyper};
use crate::{CopyOut, Grad, Hyper, NoCopy};
use core::arch::x86_64::*;

#[derive(Clone, Copy)]
pub(crate) struct F32s(__m512);
#[derive(Clone, Copy)]
pub(crate) struct F64s(__m512d);

impl Lanes for F32s {
    type T = f32;
    const N: usize = 16;
    const EST_BITS: u32 = 14;
    // rcp14ps/rsqrt14ps: normal inputs and results (2^±126), with margin.
    const EST_MIN: f64 = 1.0 / (1u128 << 125) as f64;
    const EST_MAX: f64 = (1u128 << 125) as f64;
    const FAST_PAYS: bool = true;
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
    unsafe fn div(self, b: Self) -> Self {
        // SAFETY: AVX-512F is present (trait contract).
        Self(unsafe { _mm512_div_ps(self.0, b.0) })
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        // SAFETY: AVX-512F is present (trait contract).
        Self(unsafe { _mm512_fmadd_ps(self.0, b.0, c.0) })
    }
    #[inline(always)]
    unsafe fn sqrt(self) -> Self {
        // SAFETY: AVX-512F is present (trait contract).
        Self(unsafe { _mm512_sqrt_ps(self.0) })
    }
    #[inline(always)]
    unsafe fn xor(self, b: Self) -> Self {
        // SAFETY: AVX-512F is present (trait contract).
        Self(unsafe {
            _mm512_castsi512_ps(_mm512_xor_si512(
                _mm512_castps_si512(self.0),
                _mm512_castps_si512(b.0),
            ))
        })
    }
    #[inline(always)]
    unsafe fn all_within(self, lo: Self, hi: Self) -> bool {
        // SAFETY: AVX-512F is present (trait contract).
        unsafe {
            let ge = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(self.0, lo.0);
            _mm512_mask_cmp_ps_mask::<_CMP_LE_OQ>(ge, self.0, hi.0) == 0xFFFF
        }
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
    #[inline(always)]
    unsafe fn load_grad<G: Grad<f32>>(ptr: *const G) -> Self {
        // SAFETY: the ISA is present and `ptr` is valid for 16 reads of `G` (trait contract); `G::KIND` names
        // `G`'s format (a sealed trait), so each cast reads the type that is there.
        unsafe {
            match G::KIND {
                0 => Self::load(ptr.cast()),
                1 => Self(_mm512_castsi512_ps(_mm512_slli_epi32::<16>(
                    _mm512_cvtepu16_epi32(_mm256_loadu_si256(ptr.cast())),
                ))),
                _ => Self(_mm512_cvtph_ps(_mm256_loadu_si256(ptr.cast()))),
            }
        }
    }
    #[inline(always)]
    unsafe fn store_out<O: CopyOut<f32>>(self, ptr: *mut O) {
        // SAFETY: the ISA is present and `ptr` is valid for 16 writes of `O` (trait contract); `O::KIND` names
        // `O`'s format (a sealed trait).
        unsafe {
            match O::KIND {
                0 => {}
                1 => {
                    let b = _mm512_castps_si512(self.0);
                    let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(b), _mm512_set1_epi32(1));
                    let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(
                        _mm512_add_epi32(b, _mm512_set1_epi32(0x7FFF)),
                        lsb,
                    ));
                    let quiet =
                        _mm512_or_si512(_mm512_srli_epi32::<16>(b), _mm512_set1_epi32(0x40));
                    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(self.0, self.0);
                    let v = _mm512_mask_blend_epi32(nan, rounded, quiet);
                    _mm256_storeu_si256(ptr.cast(), _mm512_cvtepi32_epi16(v))
                }
                _ => _mm256_storeu_si256(
                    ptr.cast(),
                    _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(self.0),
                ),
            }
        }
    }
}

impl Lanes for F64s {
    type T = f64;
    const N: usize = 8;
    const EST_BITS: u32 = 14;
    // rcp14pd/rsqrt14pd: normal inputs and results (2^±1022), with margin.
    const EST_MIN: f64 = f64::MIN_POSITIVE * 4.0;
    const EST_MAX: f64 = 1.0 / (f64::MIN_POSITIVE * 4.0);
    const FAST_PAYS: bool = true;
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
    unsafe fn div(self, b: Self) -> Self {
        // SAFETY: AVX-512F is present (trait contract).
        Self(unsafe { _mm512_div_pd(self.0, b.0) })
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        // SAFETY: AVX-512F is present (trait contract).
        Self(unsafe { _mm512_fmadd_pd(self.0, b.0, c.0) })
    }
    #[inline(always)]
    unsafe fn sqrt(self) -> Self {
        // SAFETY: AVX-512F is present (trait contract).
        Self(unsafe { _mm512_sqrt_pd(self.0) })
    }
    #[inline(always)]
    unsafe fn xor(self, b: Self) -> Self {
        // SAFETY: AVX-512F is present (trait contract).
        Self(unsafe {
            _mm512_castsi512_pd(_mm512_xor_si512(
                _mm512_castpd_si512(self.0),
                _mm512_castpd_si512(b.0),
            ))
        })
    }
    #[inline(always)]
    unsafe fn all_within(self, lo: Self, hi: Self) -> bool {
        // SAFETY: AVX-512F is present (trait contract).
        unsafe {
            let ge = _mm512_cmp_pd_mask::<_CMP_GE_OQ>(self.0, lo.0);
            _mm512_mask_cmp_pd_mask::<_CMP_LE_OQ>(ge, self.0, hi.0) == 0xFF
        }
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
    #[inline(always)]
    unsafe fn load_grad<G: Grad<f64>>(ptr: *const G) -> Self {
        // SAFETY: the only `Grad<f64>` is f64 itself (a sealed trait); the rest is `load`'s contract.
        unsafe { Self::load(ptr.cast()) }
    }
    #[inline(always)]
    unsafe fn store_out<O: CopyOut<f64>>(self, _: *mut O) {
        // The only `CopyOut<f64>` is `NoCopy`: nothing to write.
    }
}

/// The AVX-512F path's entry points.
pub(crate) struct Avx512;

impl Path for Avx512 {
    unsafe fn f32<G: Grad<f32>, O: CopyOut<f32>>(
        p: &mut [f32],
        g: &[G],
        s: &mut [f32],
        out: &mut [O],
        h: &Hyper<f32>,
        pass: Pass,
    ) {
        // SAFETY: `update_f32`'s contract is this function's.
        unsafe { update_f32(p, g, s, out, h, pass) }
    }
    unsafe fn f64(p: &mut [f64], g: &[f64], s: &mut [f64], h: &Hyper<f64>, pass: Pass) {
        // SAFETY: `update_f64`'s contract is this function's.
        unsafe { update_f64(p, g, s, h, pass) }
    }
    unsafe fn rowwise(w: &mut [f32], g: &[f32], h: &mut f32, hy: &RowHyper) {
        // SAFETY: `rowwise_f32`'s contract is this function's.
        unsafe { rowwise_f32(w, g, h, hy) }
    }
    unsafe fn accumulate<G: Grad<f32>>(sum: &mut [f32], g: &[G], weight: Option<f32>, first: bool) {
        // SAFETY: `accumulate_f32`'s contract is this function's.
        unsafe { accumulate_f32(sum, g, weight, first) }
    }
}

/// # Safety
/// The CPU has AVX-512F; the contract of [`Path::f32`].
#[target_feature(enable = "avx512f")]
unsafe fn update_f32<G: Grad<f32>, O: CopyOut<f32>>(
    p: &mut [f32],
    g: &[G],
    s: &mut [f32],
    out: &mut [O],
    h: &Hyper<f32>,
    pass: Pass,
) {
    // SAFETY: this function's contract is the body's.
    unsafe { lanes::update::<F32s, G, O>(p, g, s, out, h, pass) }
}

/// # Safety
/// The CPU has AVX-512F; the three slices have the same length.
#[target_feature(enable = "avx512f")]
unsafe fn update_f64(p: &mut [f64], g: &[f64], s: &mut [f64], h: &Hyper<f64>, pass: Pass) {
    // SAFETY: this function's contract is the body's.
    unsafe { lanes::update::<F64s, f64, NoCopy>(p, g, s, &mut [], h, pass) }
}

/// # Safety
/// The CPU has AVX-512F (which implies AVX2 and FMA); `w.len() == g.len() > 0`.
#[target_feature(enable = "avx512f")]
unsafe fn rowwise_f32(w: &mut [f32], g: &[f32], h: &mut f32, hy: &RowHyper) {
    // SAFETY: this function's contract is the body's (super::avx2::F32s has 8 lanes).
    unsafe { rowwise::body::<super::avx2::F32s>(w, g, h, hy) }
}

/// # Safety
/// The CPU has AVX-512F; `sum.len() == g.len()`.
#[target_feature(enable = "avx512f")]
unsafe fn accumulate_f32<G: Grad<f32>>(sum: &mut [f32], g: &[G], weight: Option<f32>, first: bool) {
    // SAFETY: this function's contract is the body's.
    unsafe { rowwise::accumulate_body::<F32s, G>(sum, g, weight, first) }
}
