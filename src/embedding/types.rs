//! The public vocabulary of the embedding step: which accumulator ([`Accumulator`]), the table's options
//! ([`TableOptions`]), the id types ([`Id`]), a batch's lookups ([`Lookups`]) and what can be wrong with them
//! ([`LookupError`]). Data only: nothing here reads a table or writes anything.

use adagrad_kernels::Grad;
use adagrad_kernels::rowwise::{DecayMode, Rounding};
use std::fmt;

/// Which accumulator the optimizer keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Accumulator {
    /// One per row: the mean of the row's squared (summed) gradient is added to it (FBGEMM, TorchRec). The default.
    #[default]
    RowWise,
    /// One per element, as dense Adagrad.
    ElementWise,
}

/// The embedding-specific settings (the hyperparameters and execution settings are a [`Config`](crate::Config)'s).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TableOptions {
    /// Row-wise (default) or element-wise accumulator.
    pub accumulator: Accumulator,
    /// How [`Config::weight_decay`](crate::Config::weight_decay) enters: L2 (default) or decoupled.
    pub decay: DecayMode,
    /// How updates are rounded into a bf16/f16 table (ignored for f32 tables): to nearest even (default) or
    /// stochastically.
    pub rounding: Rounding,
}

impl TableOptions {
    /// Sets [`TableOptions::accumulator`].
    pub fn accumulator(mut self, a: Accumulator) -> Self {
        self.accumulator = a;
        self
    }
    /// Sets [`TableOptions::decay`].
    pub fn decay(mut self, d: DecayMode) -> Self {
        self.decay = d;
        self
    }
    /// Sets [`TableOptions::rounding`].
    pub fn rounding(mut self, r: Rounding) -> Self {
        self.rounding = r;
        self
    }
}

/// Row ids (and bag offsets) as frameworks hand them: `u32`, `u64`, `usize`, or signed `i32`/`i64` (torch), where
/// a negative value is refused.
pub trait Id: Copy + Send + Sync + fmt::Debug + 'static {
    /// The value, as a non-negative index, or `None` if negative.
    fn index(self) -> Option<u64>;
    /// The value, for error messages.
    fn value(self) -> i128;
}

macro_rules! impl_id {
    ($($t:ty),*) => {$(
        impl Id for $t {
            #[inline(always)]
            fn index(self) -> Option<u64> {
                u64::try_from(self).ok()
            }
            fn value(self) -> i128 {
                self as i128
            }
        }
    )*};
}
impl_id!(u32, u64, usize, i32, i64);

/// One step's lookups. Gradients are f32, or bf16/f16 widened exactly; rows are `dim` elements, row-major.
#[derive(Clone, Copy, Debug)]
pub enum Lookups<'a, I: Id, G: Grad<f32> = f32> {
    /// One gradient row per lookup, in lookup order (`grads.len() == ids.len() · dim`).
    Rows {
        /// The row id of each lookup.
        ids: &'a [I],
        /// One row per lookup.
        grads: &'a [G],
    },
    /// Pooled bags, as an `EmbeddingBag` (sum pooling) or TBE backward gives them: bag `b` holds lookups
    /// `offsets[b]..offsets[b + 1]` (`offsets` starts at 0, never decreases and ends at `ids.len()`), and the
    /// gradient of each lookup is its bag's row, times its weight when `weights` are given.
    Bags {
        /// The row id of each lookup.
        ids: &'a [I],
        /// `bags + 1` offsets into `ids`.
        offsets: &'a [I],
        /// Per-lookup weights (`ids.len()` of them), or none.
        weights: Option<&'a [f32]>,
        /// One row per bag.
        grads: &'a [G],
    },
    /// Already coalesced: each id at most once, one gradient row per id.
    Coalesced {
        /// Distinct row ids.
        ids: &'a [I],
        /// One row per id.
        grads: &'a [G],
    },
}

/// What is wrong with a step's table or lookups. Positions count lookups (or offsets) from 0; the first offending
/// one is named. Nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LookupError {
    /// The table slice does not have `rows · dim` elements.
    TableLength {
        /// `rows · dim`.
        expected: usize,
        /// The slice's length.
        got: usize,
    },
    /// An id is negative or not below the number of rows.
    Id {
        /// The lookup's position.
        position: usize,
        /// The id.
        id: i128,
        /// The table's rows.
        rows: usize,
    },
    /// The state slice does not have one accumulator per row (row-wise) or per element (element-wise).
    StateLength {
        /// `rows` or `rows · dim`.
        expected: usize,
        /// The slice's length.
        got: usize,
    },
    /// The gradient slice does not have one row per lookup (bag, id).
    GradLength {
        /// Rows × dim expected.
        expected: usize,
        /// The slice's length.
        got: usize,
    },
    /// The per-lookup weights are not one per id.
    WeightsLength {
        /// `ids.len()`.
        expected: usize,
        /// The weights' length.
        got: usize,
    },
    /// The offsets are unusable.
    Offset {
        /// The offset's position (`offsets.len()` when there are none).
        position: usize,
        /// Its value (0 when there are none).
        value: i128,
        /// Why.
        reason: &'static str,
    },
    /// Coalesced input with an id given twice.
    Duplicate {
        /// The later position.
        position: usize,
        /// The id.
        id: u64,
    },
    /// More lookups than a step handles (2³² − 1).
    TooManyLookups {
        /// Lookups given.
        lookups: usize,
    },
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LookupError::TableLength { expected, got } => {
                write!(
                    f,
                    "table has {got} elements, expected rows × dim = {expected}"
                )
            }
            LookupError::Id { position, id, rows } => {
                write!(
                    f,
                    "id {id} at position {position} is outside the table's {rows} rows"
                )
            }
            LookupError::StateLength { expected, got } => {
                write!(f, "state has {got} accumulators, expected {expected}")
            }
            LookupError::GradLength { expected, got } => {
                write!(f, "gradients have {got} elements, expected {expected}")
            }
            LookupError::WeightsLength { expected, got } => {
                write!(f, "{got} per-lookup weights for {expected} lookups")
            }
            LookupError::Offset {
                position,
                value,
                reason,
            } => write!(f, "offset {value} at position {position}: {reason}"),
            LookupError::Duplicate { position, id } => write!(
                f,
                "coalesced lookups give id {id} twice (again at position {position})"
            ),
            LookupError::TooManyLookups { lookups } => {
                write!(f, "{lookups} lookups in one step; at most 4294967295")
            }
        }
    }
}

impl std::error::Error for LookupError {}
