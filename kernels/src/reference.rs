//! The scalar reference: the specification every other path must reproduce bit for bit.
//!
//! For each element, in the parameter's type `T` (f32 or f64), with the step's hyperparameters already rounded
//! to `T` once (see [`Hyper::new`](crate::Hyper::new)):
//!
//! ```text
//! g ← g / grad_scale         if a gradient scale is given
//! g ← −g                     if maximize
//! g ← fma(θ, wd, g)          if wd ≠ 0
//! G ← fma(g, g, G)
//! d ← √G + ε                 (EpsPlacement::Outside, PyTorch, the default)
//! d ← √(G + ε)               (EpsPlacement::Inside, Optax, Keras 3)
//! θ ← θ − (clr · g) / d
//! ```
//!
//! `√` and `÷` are IEEE (correctly rounded), `fma` rounds once. This is exactly what PyTorch's
//! `Adagrad(fused=True)` computes on CPU (its kernel is FMA-contracted by the compiler), verified against
//! trajectories that PyTorch produced (tests/golden).

use crate::{CopyOut, EpsPlacement, Float, Grad, Hyper, LengthMismatch, NoCopy};

/// Updates one element; returns the new parameter and the new state. The one copy of the scalar math.
#[inline(always)]
pub fn update_one<T: Float>(p: T, g: T, s: T, h: &Hyper<T>) -> (T, T) {
    let mut g = g;
    if let Some(scale) = h.grad_scale {
        g = g / scale;
    }
    if h.maximize {
        g = -g;
    }
    if h.weight_decay != T::ZERO {
        g = p.mul_add(h.weight_decay, g);
    }
    let s = g.mul_add(g, s);
    let d = match h.eps_placement {
        EpsPlacement::Outside => s.sqrt() + h.eps,
        EpsPlacement::Inside => (s + h.eps).sqrt(),
    };
    (p - (h.clr * g) / d, s)
}

/// Applies one Adagrad step to `params` and `state` with gradient `grads`, element by element.
///
/// Returns [`LengthMismatch`] (and changes nothing) unless the three slices have the same length.
///
/// ```
/// use adagrad_kernels::{reference, EpsPlacement, Hyper};
/// let h = Hyper::<f32>::new(0.1, 0.0, 1, 0.0, 1e-8, false, EpsPlacement::Inside);
/// let (mut p, mut s) = ([1.0f32], [0.0f32]);
/// reference::update(&mut p, &[0.2], &mut s, &h).unwrap();
/// assert_eq!(p[0], 0.9);
/// ```
pub fn update<T: Float>(
    params: &mut [T],
    grads: &[T],
    state: &mut [T],
    h: &Hyper<T>,
) -> Result<(), LengthMismatch> {
    LengthMismatch::check(params.len(), grads.len(), state.len())?;
    mixed_same_len::<T, T, NoCopy>(params, grads, state, &mut [], h);
    Ok(())
}

/// The mixed-precision reference: gradients in format `G` widened exactly to `T`, then [`update_one`]; when `out`
/// is given, the updated parameters rounded to its format are written there too.
///
/// Returns [`LengthMismatch`] (and changes nothing) unless the slices (and `out`, if given) have the same length.
pub fn update_mixed<T: Float, G: Grad<T>, O: CopyOut<T>>(
    params: &mut [T],
    grads: &[G],
    state: &mut [T],
    out: Option<&mut [O]>,
    h: &Hyper<T>,
) -> Result<(), LengthMismatch> {
    LengthMismatch::check(params.len(), grads.len(), state.len())?;
    match out {
        Some(out) if O::KIND != 0 => {
            LengthMismatch::check(params.len(), out.len(), state.len())?;
            mixed_same_len(params, grads, state, out, h);
        }
        _ => mixed_same_len::<T, G, NoCopy>(params, grads, state, &mut [], h),
    }
    Ok(())
}

/// The loop of [`update_mixed`]; the caller guarantees equal lengths (`out` empty for `NoCopy`).
#[inline(always)]
pub(crate) fn mixed_same_len<T: Float, G: Grad<T>, O: CopyOut<T>>(
    params: &mut [T],
    grads: &[G],
    state: &mut [T],
    out: &mut [O],
    h: &Hyper<T>,
) {
    if O::KIND == 0 {
        for ((p, &g), s) in params.iter_mut().zip(grads).zip(state.iter_mut()) {
            (*p, *s) = update_one(*p, g.widen(), *s, h);
        }
        return;
    }
    for (((p, &g), s), o) in params
        .iter_mut()
        .zip(grads)
        .zip(state.iter_mut())
        .zip(out.iter_mut())
    {
        (*p, *s) = update_one(*p, g.widen(), *s, h);
        *o = O::narrow(*p);
    }
}
