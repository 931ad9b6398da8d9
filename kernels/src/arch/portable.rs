//! The portable path: `wide`'s vectors, whose instructions are fixed when this crate is compiled (SSE2 on a
//! baseline x86-64 build, AVX+FMA on x86-64-v3, NEON on aarch64).
//!
//! `wide`'s `mul_add` is unfused unless the target has FMA, so without FMA the fused multiply-add is done per
//! lane with `f32::mul_add` / `f64::mul_add` (rounded once, like the reference). bf16/f16 conversions are per
//! lane, through the same functions the reference uses.

use crate::dispatch::Path;
use crate::lanes::{self, Lanes, Pass};
use crate::rowwise::{self, RowHyper};
use crate::{CopyOut, Grad, Hyper, NoCopy};
use wide::{f32x8, f64x4};

#[derive(Clone, Copy)]
pub(crate) struct F32s(f32x8);
#[derive(Clone, Copy)]
pub(crate) struct F64s(f64x4);

/// Whether `wide`'s `mul_add` is a fused instruction on this compile target (x86-64 with FMA; on aarch64 `wide`
/// 0.7 does not fuse, so the per-lane path below is used, which LLVM turns into `fmla`).
const WIDE_FUSES: bool = cfg!(all(target_arch = "x86_64", target_feature = "fma"));

// The methods are `unsafe` only because the trait's are: `wide` needs nothing beyond the compile target, except
// the loads and stores, whose pointers must be valid for N elements.
impl Lanes for F32s {
    type T = f32;
    const N: usize = 8;
    const EST_BITS: u32 = if cfg!(target_arch = "x86_64") { 12 } else { 8 };
    // `wide`'s estimates (rcpps/rsqrtps, frecpe/frsqrte): normal inputs and results, with margin.
    const EST_MIN: f64 = 1.0 / (1u128 << 125) as f64;
    const EST_MAX: f64 = (1u128 << 125) as f64;
    const FAST_PAYS: bool = WIDE_FUSES || cfg!(target_arch = "aarch64");
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
    unsafe fn xor(self, b: Self) -> Self {
        Self(self.0 ^ b.0)
    }
    #[inline(always)]
    unsafe fn all_within(self, lo: Self, hi: Self) -> bool {
        let (x, lo, hi) = (self.0.to_array(), lo.0.to_array()[0], hi.0.to_array()[0]);
        x.iter().all(|&v| v >= lo && v <= hi)
    }
    #[inline(always)]
    unsafe fn rsqrt_est(self) -> Self {
        Self(self.0.recip_sqrt())
    }
    #[inline(always)]
    unsafe fn recip_est(self) -> Self {
        Self(self.0.recip())
    }
    #[inline(always)]
    unsafe fn load_grad<G: Grad<f32>>(ptr: *const G) -> Self {
        // SAFETY: the caller guarantees `ptr` is valid for 8 reads.
        Self(f32x8::from(
            unsafe { ptr.cast::<[G; 8]>().read_unaligned() }.map(G::widen),
        ))
    }
    #[inline(always)]
    unsafe fn store_out<O: CopyOut<f32>>(self, ptr: *mut O) {
        // SAFETY: the caller guarantees `ptr` is valid for 8 writes.
        unsafe {
            ptr.cast::<[O; 8]>()
                .write_unaligned(self.0.to_array().map(O::narrow))
        }
    }
}

impl Lanes for F64s {
    type T = f64;
    const N: usize = 4;
    // `wide` has no f64 estimate: these are the exact 1/√x and 1/x, so Fast would only add work.
    const EST_BITS: u32 = 53;
    const EST_MIN: f64 = f64::MIN_POSITIVE * 4.0;
    const EST_MAX: f64 = 1.0 / (f64::MIN_POSITIVE * 4.0);
    const FAST_PAYS: bool = false;
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
    unsafe fn xor(self, b: Self) -> Self {
        Self(self.0 ^ b.0)
    }
    #[inline(always)]
    unsafe fn all_within(self, lo: Self, hi: Self) -> bool {
        let (x, lo, hi) = (self.0.to_array(), lo.0.to_array()[0], hi.0.to_array()[0]);
        x.iter().all(|&v| v >= lo && v <= hi)
    }
    #[inline(always)]
    unsafe fn rsqrt_est(self) -> Self {
        Self(f64x4::splat(1.0) / self.0.sqrt())
    }
    #[inline(always)]
    unsafe fn recip_est(self) -> Self {
        Self(f64x4::splat(1.0) / self.0)
    }
    #[inline(always)]
    unsafe fn load_grad<G: Grad<f64>>(ptr: *const G) -> Self {
        // SAFETY: the caller guarantees `ptr` is valid for 4 reads.
        Self(f64x4::from(
            unsafe { ptr.cast::<[G; 4]>().read_unaligned() }.map(G::widen),
        ))
    }
    #[inline(always)]
    unsafe fn store_out<O: CopyOut<f64>>(self, ptr: *mut O) {
        // SAFETY: the caller guarantees `ptr` is valid for 4 writes.
        unsafe {
            ptr.cast::<[O; 4]>()
                .write_unaligned(self.0.to_array().map(O::narrow))
        }
    }
}

/// The portable path's entry points.
pub(crate) struct Portable;

// `wide` needs no runtime feature, so these carry no `#[target_feature]`.
impl Path for Portable {
    unsafe fn f32<G: Grad<f32>, O: CopyOut<f32>>(
        p: &mut [f32],
        g: &[G],
        s: &mut [f32],
        out: &mut [O],
        h: &Hyper<f32>,
        pass: Pass,
    ) {
        // SAFETY: the body's contract is this function's.
        unsafe { lanes::update::<F32s, G, O>(p, g, s, out, h, pass) }
    }
    unsafe fn f64(p: &mut [f64], g: &[f64], s: &mut [f64], h: &Hyper<f64>, pass: Pass) {
        // SAFETY: the body's contract is this function's.
        unsafe { lanes::update::<F64s, f64, NoCopy>(p, g, s, &mut [], h, pass) }
    }
    unsafe fn rowwise(w: &mut [f32], g: &[f32], h: &mut f32, hy: &RowHyper) {
        // SAFETY: the body's contract is this function's (F32s has 8 lanes).
        unsafe { rowwise::body::<F32s>(w, g, h, hy) }
    }
    unsafe fn accumulate<G: Grad<f32>>(sum: &mut [f32], g: &[G], weight: Option<f32>, first: bool) {
        // SAFETY: the body's contract is this function's.
        unsafe { rowwise::accumulate_body::<F32s, G>(sum, g, weight, first) }
    }
}
