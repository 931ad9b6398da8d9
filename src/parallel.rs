//! Running one step over many tensors: split by element count, not by tensor.
//!
//! The tensors of a step are seen as one sequence of elements. A [`Seg`] is a contiguous run of it: an optional
//! piece of a tensor, whole tensors, and an optional piece of another. Splitting a `Seg` in two (at a point that is
//! a multiple of [`ALIGN`] from its tensor's start, so only a tensor's last piece has a kernel tail) needs no
//! allocation, only re-borrows, so a step can recurse with `rayon::join` down to pieces of about
//! [`GRAIN`] elements: small tensors end up batched in one task, huge ones split across all threads.

use adagrad_kernels::{CopyOut, Float, Grad, Hyper, Kernels, Precision};

/// Split points within a tensor are multiples of this many elements (the widest unrolled body: 4 × 16 lanes).
pub const ALIGN: usize = 64;
/// The default [`crate::Config::parallel_threshold`]: below this many elements in a step, the step runs on the
/// calling thread, as a fork/join costs more than it saves. Chosen from `cargo bench --bench parallel`, group
/// `crossover-f32` (2 threads always splitting vs one thread, f32, 2-vCPU Xeon): splitting loses up to 32,768
/// elements (0.62 vs 0.52 ns/element there) and wins from 65,536 (0.42 vs 0.62).
pub const PARALLEL_THRESHOLD: usize = 1 << 16;
/// Leaves of the recursion hold about this many elements (or fewer, when that is needed to give every thread
/// several pieces).
pub const GRAIN: usize = 1 << 15;

/// A piece of one tensor, with its copy-out piece when there is one.
pub(crate) struct Part<'x, T, G, O> {
    p: &'x mut [T],
    g: &'x [G],
    s: &'x mut [T],
    out: Option<&'x mut [O]>,
}

impl<'x, T, G, O> Part<'x, T, G, O> {
    fn len(&self) -> usize {
        self.p.len()
    }

    fn split_at(self, at: usize) -> (Self, Self) {
        let (p0, p1) = self.p.split_at_mut(at);
        let (g0, g1) = self.g.split_at(at);
        let (s0, s1) = self.s.split_at_mut(at);
        let (o0, o1) = match self.out {
            Some(o) => {
                let (a, b) = o.split_at_mut(at);
                (Some(a), Some(b))
            }
            None => (None, None),
        };
        (
            Part {
                p: p0,
                g: g0,
                s: s0,
                out: o0,
            },
            Part {
                p: p1,
                g: g1,
                s: s1,
                out: o1,
            },
        )
    }
}

/// A contiguous run of a step's elements: `head`, then whole tensors, then `tail`. `out` is empty when the step
/// has no copy-out, else it has one slice per tensor.
pub(crate) struct Seg<'x, 'b, 'c, T, G, O> {
    head: Option<Part<'x, T, G, O>>,
    p: &'x mut [&'b mut [T]],
    g: &'x [&'x [G]],
    s: &'x mut [Vec<T>],
    out: &'x mut [&'c mut [O]],
    tail: Option<Part<'x, T, G, O>>,
    len: usize,
}

/// Rounds a split point inside a tensor down to a multiple of [`ALIGN`].
fn align(at: usize) -> usize {
    at - at % ALIGN
}

impl<'x, 'b, 'c, T: Float, G: Grad<T>, O: CopyOut<T>> Seg<'x, 'b, 'c, T, G, O> {
    /// Every tensor, whole. The caller has checked that the counts and lengths agree.
    pub(crate) fn new(
        p: &'x mut [&'b mut [T]],
        g: &'x [&'x [G]],
        s: &'x mut [Vec<T>],
        out: &'x mut [&'c mut [O]],
    ) -> Self {
        let len = s.iter().map(Vec::len).sum();
        Seg {
            head: None,
            p,
            g,
            s,
            out,
            tail: None,
            len,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Splits into `[..≈at]` and the rest; the point moves down to an aligned offset within its tensor.
    fn split(self, at: usize) -> (Self, Self) {
        let Seg {
            head,
            p,
            g,
            s,
            out,
            tail,
            len,
        } = self;
        let head_len = head.as_ref().map_or(0, Part::len);
        if at < head_len {
            let (h0, h1) = head.expect("at < head_len").split_at(align(at));
            let left_len = h0.len();
            let left = Seg {
                head: Some(h0),
                p: &mut [],
                g: &[],
                s: &mut [],
                out: &mut [],
                tail: None,
                len: left_len,
            };
            let right = Seg {
                head: Some(h1),
                p,
                g,
                s,
                out,
                tail,
                len: len - left_len,
            };
            return (left, right);
        }
        let mut before = head_len;
        let mut i = 0;
        while i < s.len() && before + s[i].len() <= at {
            before += s[i].len();
            i += 1;
        }
        if i == s.len() {
            // The point is in the tail.
            let (t0, t1) = tail
                .expect("split point beyond the segment")
                .split_at(align(at - before));
            let left_len = before + t0.len();
            let left = Seg {
                head,
                p,
                g,
                s,
                out,
                tail: Some(t0),
                len: left_len,
            };
            let right = Seg {
                head: Some(t1),
                p: &mut [],
                g: &[],
                s: &mut [],
                out: &mut [],
                tail: None,
                len: len - left_len,
            };
            return (left, right);
        }
        // The point is in whole tensor i: it becomes the left's tail and the right's head.
        let (p0, p1) = p.split_at_mut(i);
        let (g0, g1) = g.split_at(i);
        let (s0, s1) = s.split_at_mut(i);
        let (pi, p1) = p1.split_first_mut().expect("i < len");
        let (gi, g1) = g1.split_first().expect("i < len");
        let (si, s1) = s1.split_first_mut().expect("i < len");
        let (o0, oi, o1) = if out.is_empty() {
            (&mut [][..], None, &mut [][..])
        } else {
            let (o0, o1) = out.split_at_mut(i);
            let (oi, o1) = o1.split_first_mut().expect("one copy-out slice per tensor");
            (o0, Some(&mut **oi), o1)
        };
        let whole = Part {
            p: pi,
            g: gi,
            s: si.as_mut_slice(),
            out: oi,
        };
        let (m0, m1) = whole.split_at(align(at - before));
        let left_len = before + m0.len();
        let left = Seg {
            head,
            p: p0,
            g: g0,
            s: s0,
            out: o0,
            tail: Some(m0),
            len: left_len,
        };
        let right = Seg {
            head: Some(m1),
            p: p1,
            g: g1,
            s: s1,
            out: o1,
            tail,
            len: len - left_len,
        };
        (left, right)
    }

    /// Runs every piece on this thread.
    fn run_here(self, k: &Kernels, h: &Hyper<T>, pr: Precision) {
        let Seg {
            head,
            p,
            g,
            s,
            out,
            tail,
            ..
        } = self;
        let one = |part: Part<'_, T, G, O>| {
            k.update_with(part.p, part.g, part.s, part.out, h, pr)
                .expect("lengths checked before the step");
        };
        if let Some(part) = head {
            one(part);
        }
        let mut outs = out.iter_mut();
        for ((p, g), s) in p.iter_mut().zip(g).zip(s.iter_mut()) {
            one(Part {
                p,
                g,
                s: s.as_mut_slice(),
                out: outs.next().map(|o| &mut **o),
            });
        }
        if let Some(part) = tail {
            one(part);
        }
    }

    /// Splits in halves down to about `grain` elements, each half on `rayon::join`.
    fn run_split(self, k: &Kernels, h: &Hyper<T>, pr: Precision, grain: usize) {
        if self.len <= grain {
            return self.run_here(k, h, pr);
        }
        let half = self.len / 2;
        let (l, r) = self.split(half);
        if l.len == 0 || r.len == 0 {
            // Nothing to split at an aligned point (a single short piece).
            l.run_here(k, h, pr);
            return r.run_here(k, h, pr);
        }
        rayon::join(
            || l.run_split(k, h, pr, grain),
            || r.run_split(k, h, pr, grain),
        );
    }

    /// Runs the step: on this thread below `threshold` elements or with one thread, else split for `threads`.
    pub(crate) fn run(
        self,
        k: &Kernels,
        h: &Hyper<T>,
        pr: Precision,
        threads: usize,
        threshold: usize,
    ) {
        if threads <= 1 || self.len < threshold {
            return self.run_here(k, h, pr);
        }
        // At least four pieces per thread for balance, none smaller than an eighth of GRAIN.
        let grain = GRAIN.min(self.len / (4 * threads)).max(GRAIN / 8);
        self.run_split(k, h, pr, grain);
    }
}
