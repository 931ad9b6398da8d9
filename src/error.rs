//! The crate's typed errors. Any call that returns one has changed nothing.

use adagrad_kernels::IsaError;
use std::fmt;

/// What went wrong. A call that returns an error has changed no parameter, state or step count.
#[derive(Debug, PartialEq)]
pub enum Error {
    /// A hyperparameter is negative, NaN or infinite, or the combination is unusable.
    InvalidConfig {
        /// The field, by its PyTorch name.
        field: &'static str,
        /// The value given.
        value: f64,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The number of tensors given does not match the optimizer's.
    TensorCount {
        /// Tensors the optimizer holds state for.
        expected: usize,
        /// Parameter tensors given.
        params: usize,
        /// Gradient tensors given.
        grads: usize,
    },
    /// A tensor's length does not match the optimizer's.
    Length {
        /// The tensor's index.
        tensor: usize,
        /// Its length in the optimizer's state.
        expected: usize,
        /// The parameter slice's length.
        params: usize,
        /// The gradient slice's length.
        grads: usize,
    },
    /// The number of copy-out tensors does not match the optimizer's.
    CopyOutCount {
        /// Tensors the optimizer holds state for.
        expected: usize,
        /// Copy-out slices given.
        got: usize,
    },
    /// A copy-out slice's length does not match its tensor's.
    CopyOutLength {
        /// The tensor's index.
        tensor: usize,
        /// Its length.
        expected: usize,
        /// The copy-out slice's length.
        got: usize,
    },
    /// A gradient scale that is not a positive finite number.
    InvalidGradScale(f64),
    /// Some gradient elements are NaN or ±∞ and the policy is [`crate::NonFinite::Error`].
    NonFiniteGradient {
        /// How many elements.
        count: usize,
    },
    /// The step count is at `u64::MAX` and cannot advance; the step was not applied.
    StepCountOverflow,
    /// The requested kernel path cannot be used.
    Isa(IsaError),
    /// Memory for this many elements cannot be allocated (or their size overflows the address space). Nothing
    /// was allocated.
    Alloc {
        /// Elements asked for.
        elements: usize,
    },
    /// `ADAGRAD_TUNE` or [`crate::Config::tuning`] holds something unusable (the message says what).
    InvalidTune(String),
    /// A checkpoint could not be written or read.
    Checkpoint(crate::CheckpointError),
    /// An embedding table's shape is unusable.
    TableShape {
        /// Rows asked for.
        rows: usize,
        /// Elements per row asked for.
        dim: usize,
        /// Why.
        reason: &'static str,
    },
    /// An embedding step's table or lookups are malformed (see [`crate::embedding::LookupError`]).
    Lookup(crate::embedding::LookupError),
    /// More threads asked for than [`crate::MAX_THREADS`]; nothing was started.
    TooManyThreads {
        /// Threads asked for.
        threads: usize,
        /// Where the count came from: `Parallelism::Threads` or `RAYON_NUM_THREADS` (for `Parallelism::Global`).
        from: &'static str,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidConfig {
                field,
                value,
                reason,
            } => write!(f, "invalid {field} = {value}: {reason}"),
            Error::TensorCount {
                expected,
                params,
                grads,
            } => write!(
                f,
                "tensor count mismatch: the optimizer has {expected}, got {params} parameter and {grads} gradient tensors"
            ),
            Error::Length {
                tensor,
                expected,
                params,
                grads,
            } => write!(
                f,
                "length mismatch in tensor {tensor}: state has {expected}, params {params}, grads {grads}"
            ),
            Error::CopyOutCount { expected, got } => {
                write!(
                    f,
                    "copy-out count mismatch: the optimizer has {expected} tensors, got {got} copy-out slices"
                )
            }
            Error::CopyOutLength {
                tensor,
                expected,
                got,
            } => {
                write!(
                    f,
                    "copy-out length mismatch in tensor {tensor}: expected {expected}, got {got}"
                )
            }
            Error::InvalidGradScale(v) => {
                write!(f, "invalid grad_scale = {v}: must be positive and finite")
            }
            Error::NonFiniteGradient { count } => {
                write!(
                    f,
                    "{count} gradient elements are NaN or infinite; the step was not applied"
                )
            }
            Error::Isa(e) => write!(f, "{e}"),
            Error::InvalidTune(m) => write!(f, "invalid tuning: {m}"),
            Error::StepCountOverflow => {
                write!(f, "the step count is at u64::MAX and cannot advance")
            }
            Error::Alloc { elements } => {
                write!(f, "cannot allocate {elements} elements")
            }
            Error::Checkpoint(e) => write!(f, "checkpoint: {e}"),
            Error::TableShape { rows, dim, reason } => {
                write!(f, "invalid table shape {rows} × {dim}: {reason}")
            }
            Error::Lookup(e) => write!(f, "lookups: {e}"),
            Error::TooManyThreads { threads, from } => write!(
                f,
                "{threads} threads ({from}): at most {} are allowed",
                crate::MAX_THREADS
            ),
        }
    }
}

impl std::error::Error for Error {}

impl From<IsaError> for Error {
    fn from(e: IsaError) -> Self {
        Error::Isa(e)
    }
}

impl From<crate::CheckpointError> for Error {
    fn from(e: crate::CheckpointError) -> Self {
        Error::Checkpoint(e)
    }
}

impl From<crate::embedding::LookupError> for Error {
    fn from(e: crate::embedding::LookupError) -> Self {
        Error::Lookup(e)
    }
}
