//! One short file per ISA: the [`Lanes`](crate::lanes::Lanes) impls and the `#[target_feature]` entry points.

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
pub(crate) mod portable;
