//! [`AlignedBuf`]: the crate's own allocation for accumulators, offered to users for parameters and gradients.
//!
//! Cache-line (64-byte) aligned, so no vector load of the kernels straddles two lines at a buffer's start; from
//! [`AlignedBuf::HUGE`] bytes on, aligned to 2 MiB and, on Linux, advised for transparent huge pages
//! (`madvise(MADV_HUGEPAGE)`), so that a large table is mapped with a few hundred TLB entries instead of tens of
//! thousands. Allocation is fallible: a size that cannot be allocated is an [`Error::Alloc`], never a panic or
//! an abort.

use crate::Error;
use bytemuck::Pod;
use std::alloc::{self, Layout};
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// A fixed-length, aligned, heap-allocated array of `T` (see the module documentation): parameters, gradients
/// (f32, f64, and with `half`'s types bf16 and f16), accumulators, copy-outs.
///
/// ```
/// use adagrad::AlignedBuf;
/// let mut w = AlignedBuf::<f32>::filled(1000, 0.5)?;
/// assert_eq!(w.as_ptr() as usize % 64, 0);
/// w[3] = 1.0;
/// assert_eq!(w[..4], [0.5, 0.5, 0.5, 1.0]);
/// # Ok::<(), adagrad::Error>(())
/// ```
pub struct AlignedBuf<T: Pod> {
    ptr: NonNull<T>,
    len: usize,
}

// SAFETY: an AlignedBuf owns its elements exclusively, like a Vec<T>; T is plain data (Pod), which is Send.
unsafe impl<T: Pod + Send> Send for AlignedBuf<T> {}
// SAFETY: as above; shared access only hands out &[T].
unsafe impl<T: Pod + Sync> Sync for AlignedBuf<T> {}

impl<T: Pod> AlignedBuf<T> {
    /// From this many bytes on, buffers are 2 MiB aligned and advised for transparent huge pages.
    pub const HUGE: usize = 2 << 20;
    /// The alignment of every buffer below [`AlignedBuf::HUGE`] bytes (one cache line).
    pub const ALIGN: usize = 64;

    fn layout(len: usize) -> Result<Layout, Error> {
        let bytes = len
            .checked_mul(size_of::<T>())
            .ok_or(Error::Alloc { elements: len })?;
        let align = if bytes >= Self::HUGE {
            Self::HUGE
        } else {
            Self::ALIGN
        };
        Layout::from_size_align(bytes, align).map_err(|_| Error::Alloc { elements: len })
    }

    /// `len` copies of `value`, or [`Error::Alloc`] if that much memory cannot be had.
    pub fn filled(len: usize, value: T) -> Result<Self, Error> {
        Self::from_fn(len, |_| value)
    }

    /// A copy of `data`, or [`Error::Alloc`].
    pub fn from_slice(data: &[T]) -> Result<Self, Error> {
        Self::from_fn(data.len(), |i| data[i])
    }

    /// Element `i` set to `f(i)`, each written once.
    fn from_fn(len: usize, f: impl Fn(usize) -> T) -> Result<Self, Error> {
        let layout = Self::layout(len)?;
        if layout.size() == 0 {
            // Nothing allocated; the pointer is still aligned as a buffer's (a 64-byte boundary), so that a view
            // of the empty buffer as a wider element type (the Python layer's byte buffers) is aligned too.
            let aligned = std::ptr::without_provenance_mut::<T>(layout.align());
            return Ok(AlignedBuf {
                ptr: NonNull::new(aligned).unwrap_or(NonNull::dangling()),
                len,
            });
        }
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc::alloc(layout) };
        let ptr = NonNull::new(raw.cast::<T>()).ok_or(Error::Alloc { elements: len })?;
        advise_huge(raw, layout);
        // SAFETY: `ptr` is valid for `len` writes of T (allocated with T's size, alignment ≥ T's).
        unsafe {
            for i in 0..len {
                ptr.as_ptr().add(i).write(f(i));
            }
        }
        Ok(AlignedBuf { ptr, len })
    }

    /// The elements.
    pub fn as_slice(&self) -> &[T] {
        self
    }

    /// The elements, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        self
    }
}

#[cfg(target_os = "linux")]
fn advise_huge(ptr: *mut u8, layout: Layout) {
    if layout.align() >= 2 << 20 {
        // SAFETY: [ptr, ptr + size) is one allocation of ours; madvise only changes how the kernel backs it
        // (a failure leaves it as it was, so the result is ignored).
        unsafe {
            libc::madvise(ptr.cast(), layout.size(), libc::MADV_HUGEPAGE);
        }
    }
}
#[cfg(not(target_os = "linux"))]
fn advise_huge(_: *mut u8, _: Layout) {}

impl<T: Pod> Drop for AlignedBuf<T> {
    fn drop(&mut self) {
        if let Ok(layout) = Self::layout(self.len)
            && layout.size() != 0
        {
            // SAFETY: allocated in `filled` with this same layout (a function of `len` alone).
            unsafe { alloc::dealloc(self.ptr.as_ptr().cast(), layout) }
        }
    }
}

impl<T: Pod> Deref for AlignedBuf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` is valid for `len` initialized elements (or dangling and aligned with len 0).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Pod> DerefMut for AlignedBuf<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for AlignedBuf<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: Pod + PartialEq> PartialEq for AlignedBuf<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: Pod + PartialEq, const N: usize> PartialEq<[T; N]> for AlignedBuf<T> {
    fn eq(&self, other: &[T; N]) -> bool {
        **self == *other
    }
}

impl<T: Pod + PartialEq> PartialEq<[T]> for AlignedBuf<T> {
    fn eq(&self, other: &[T]) -> bool {
        **self == *other
    }
}

impl<T: Pod + PartialEq> PartialEq<Vec<T>> for AlignedBuf<T> {
    fn eq(&self, other: &Vec<T>) -> bool {
        **self == **other
    }
}

impl<T: Pod> std::borrow::Borrow<[T]> for AlignedBuf<T> {
    fn borrow(&self) -> &[T] {
        self
    }
}

impl<'a, T: Pod> IntoIterator for &'a AlignedBuf<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_follows_the_size() {
        let small = AlignedBuf::<f32>::filled(1000, 1.5).unwrap();
        assert_eq!(small.as_ptr() as usize % AlignedBuf::<f32>::ALIGN, 0);
        assert_eq!(small.len(), 1000);
        assert!(small.iter().all(|&x| x == 1.5));
        // From HUGE bytes on: 2 MiB aligned (and advised for huge pages).
        let huge = AlignedBuf::<f64>::filled(AlignedBuf::<f64>::HUGE / 8, 2.0).unwrap();
        assert_eq!(huge.as_ptr() as usize % AlignedBuf::<f64>::HUGE, 0);
        assert!(huge.iter().all(|&x| x == 2.0));
        // One element less than HUGE bytes: only cache-line alignment is promised (and the layout says so).
        let below = AlignedBuf::<f32>::layout(AlignedBuf::<f32>::HUGE / 4 - 1).unwrap();
        assert_eq!(below.align(), 64);
        let at = AlignedBuf::<f32>::layout(AlignedBuf::<f32>::HUGE / 4).unwrap();
        assert_eq!((at.align(), at.size()), (2 << 20, 2 << 20));
    }

    /// From 2 MiB on, the mapping is advised for transparent huge pages: the kernel marks the VMA `hg` in
    /// /proc/self/smaps (whether huge pages are then used depends on the system's THP setting).
    #[cfg(target_os = "linux")]
    #[test]
    fn large_buffers_are_advised_for_huge_pages() {
        let flags_of = |addr: usize| -> Option<String> {
            let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
            let mut inside = false;
            for line in smaps.lines() {
                if let Some((range, _)) = line.split_once(' ')
                    && let Some((a, b)) = range.split_once('-')
                    && let (Ok(a), Ok(b)) =
                        (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                {
                    inside = (a..b).contains(&addr);
                    continue;
                }
                if inside && let Some(flags) = line.strip_prefix("VmFlags:") {
                    return Some(flags.to_string());
                }
            }
            None
        };
        let huge = AlignedBuf::<f32>::filled(AlignedBuf::<f32>::HUGE, 0.0).unwrap();
        match flags_of(huge.as_ptr() as usize) {
            Some(flags) => assert!(
                flags.split_whitespace().any(|f| f == "hg"),
                "VmFlags:{flags}"
            ),
            None => println!("skipped: /proc/self/smaps unreadable"),
        }
    }

    #[test]
    fn empty_and_impossible_sizes() {
        let empty = AlignedBuf::<f32>::filled(0, 1.0).unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty.as_slice(), &[] as &[f32]);
        // Even empty, aligned as a buffer: viewed as wider elements (bytes as f64 in the Python layer), too.
        assert_eq!(
            AlignedBuf::<u8>::filled(0, 0).unwrap().as_ptr() as usize % 64,
            0
        );
        assert_eq!(
            AlignedBuf::<f64>::filled(usize::MAX / 4, 0.0).err(),
            Some(Error::Alloc {
                elements: usize::MAX / 4
            })
        );
        assert!(AlignedBuf::<f32>::layout(usize::MAX).is_err());
    }

    #[test]
    fn copies_compares_and_iterates_like_a_slice() {
        let data = [1.0f32, -0.0, 3.5, f32::MAX];
        let mut b = AlignedBuf::from_slice(&data).unwrap();
        assert_eq!(b, data);
        assert_eq!(b, data.to_vec());
        assert_eq!(b, data[..]);
        assert_eq!(b.as_slice(), &data);
        assert!(b != data[..3] && b != [1.0f32, -0.0, 3.5, 0.0][..]);
        assert!(b != [9.0f32; 4] && b != vec![1.0f32]);
        assert!(b == AlignedBuf::from_slice(&data).unwrap());
        assert!(b != AlignedBuf::from_slice(&data[..3]).unwrap());
        b.as_mut_slice()[2] = 7.0;
        assert_eq!(
            (&b).into_iter().copied().collect::<Vec<_>>(),
            [1.0, -0.0, 7.0, f32::MAX]
        );
        let borrowed: &[f32] = std::borrow::Borrow::borrow(&b);
        assert_eq!(borrowed.len(), 4);
        assert_eq!(format!("{b:?}"), "[1.0, -0.0, 7.0, 3.4028235e38]");
        let halves = AlignedBuf::<half::bf16>::filled(3, half::bf16::ONE).unwrap();
        assert_eq!(halves[2], half::bf16::ONE);
    }
}
