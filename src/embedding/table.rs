//! The table element types ([`Table`]: f32, and bf16/f16 with f32 state and rounding on the way back) and each
//! one's update of a single row from its summed gradient, through the kernels. Touches one row of the table and
//! its state at a time, as `update.rs` hands them over.

use super::types::Accumulator;
use adagrad_kernels::rowwise::{self, Narrow, Rounding, RowHyper};
use adagrad_kernels::{Hyper, Kernels, Precision, bf16, f16};
use std::fmt;

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for adagrad_kernels::bf16 {}
    impl Sealed for adagrad_kernels::f16 {}
}

/// What one row's update needs besides the row.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct RowCtx<'a> {
    pub(super) kernels: &'a Kernels,
    pub(super) accumulator: Accumulator,
    pub(super) row: RowHyper,
    pub(super) dense: Hyper<f32>,
    pub(super) precision: Precision,
    pub(super) rounding: Rounding,
    pub(super) step: u64,
    /// [`crate::Tuning::rows_ahead`] and [`crate::Tuning::lookups_ahead`].
    pub(super) rows_ahead: usize,
    pub(super) lookups_ahead: usize,
}

/// Table element types: `f32`, [`bf16`] and [`f16`](struct@f16) (with f32 state).
pub trait Table:
    sealed::Sealed + bytemuck::Pod + Copy + Send + Sync + fmt::Debug + 'static
{
    /// The type's name.
    const NAME: &'static str;
    /// Updates row `row` (`w`) with its summed gradient `g` and its state `s` (1 or `dim` elements); `buf` holds
    /// `dim` f32 of scratch.
    #[doc(hidden)]
    fn update_row(
        ctx: &RowCtx<'_>,
        w: &mut [Self],
        g: &[f32],
        s: &mut [f32],
        row: u64,
        buf: &mut [f32],
    );
}

impl Table for f32 {
    const NAME: &'static str = "f32";
    fn update_row(
        ctx: &RowCtx<'_>,
        w: &mut [f32],
        g: &[f32],
        s: &mut [f32],
        _: u64,
        _: &mut [f32],
    ) {
        let done = match ctx.accumulator {
            Accumulator::RowWise => ctx.kernels.rowwise(w, g, &mut s[0], &ctx.row),
            Accumulator::ElementWise => {
                if let Some(c) = ctx.row.decoupled_factor() {
                    rowwise::decay_elementwise(w, c);
                }
                ctx.kernels.update(w, g, s, &ctx.dense, ctx.precision)
            }
        };
        done.expect("row lengths checked before the step");
    }
}

fn update_narrow_row<W: Narrow>(
    ctx: &RowCtx<'_>,
    w: &mut [W],
    g: &[f32],
    s: &mut [f32],
    row: u64,
    buf: &mut [f32],
) {
    let key = ctx.rounding.key(ctx.step, row);
    let done = match ctx.accumulator {
        Accumulator::RowWise => {
            rowwise::update_narrow(w, g, &mut s[0], &ctx.row, ctx.rounding, key)
        }
        Accumulator::ElementWise => {
            let buf = &mut buf[..w.len()];
            for (b, x) in buf.iter_mut().zip(w.iter()) {
                *b = x.widen();
            }
            if let Some(c) = ctx.row.decoupled_factor() {
                rowwise::decay_elementwise(buf, c);
            }
            let done = ctx.kernels.update(buf, g, s, &ctx.dense, ctx.precision);
            ctx.rounding.round_row(buf, w, key);
            done
        }
    };
    done.expect("row lengths checked before the step");
}

impl Table for bf16 {
    const NAME: &'static str = "bf16";
    fn update_row(
        ctx: &RowCtx<'_>,
        w: &mut [bf16],
        g: &[f32],
        s: &mut [f32],
        row: u64,
        buf: &mut [f32],
    ) {
        update_narrow_row(ctx, w, g, s, row, buf)
    }
}

impl Table for f16 {
    const NAME: &'static str = "f16";
    fn update_row(
        ctx: &RowCtx<'_>,
        w: &mut [f16],
        g: &[f32],
        s: &mut [f32],
        row: u64,
        buf: &mut [f32],
    ) {
        update_narrow_row(ctx, w, g, s, row, buf)
    }
}
