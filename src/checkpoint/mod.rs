//! Checkpoints: the optimizer's full state in a versioned little-endian binary format, saved atomically and
//! loaded with every field checked.
//!
//! # Format (version 1)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `b"ADAGRAD\0"` |
//! | 8 | 4 | format version, u32 (1) |
//! | 12 | 1 | element size in bytes: 4 (f32) or 8 (f64) |
//! | 13 | 1 | eps placement: 0 outside, 1 inside |
//! | 14 | 1 | maximize: 0 or 1 |
//! | 15 | 1 | precision: 0 exact, 1 fast |
//! | 16 | 1 | non-finite policy: 0 propagate, 1 skip step, 2 error |
//! | 17 | 7 | reserved, zero |
//! | 24 | 40 | lr, lr_decay, weight_decay, initial_accumulator_value, eps: f64 each |
//! | 64 | 8 | step count, u64 |
//! | 72 | 8 | tensor count n, u64 |
//! | 80 | 8·n | tensor lengths, u64 each |
//! | 80 + 8n | Σ lengths × element size | every accumulator, tensor after tensor |
//! | end − 4 | 4 | CRC-32 (IEEE) of every byte before it, u32 |
//!
//! All integers and floats are little-endian. Mixed-precision optimizers (bf16/f16 gradients or copy-out) keep
//! f32 parameters and f32 state, so their checkpoints are f32 checkpoints: the 16-bit formats are chosen per step
//! and hold no state.
//!
//! Embedding optimizers ([`crate::embedding::EmbeddingAdagrad`]) write their own format, with magic
//! `b"ADAGEMB\0"` (see [`EMBEDDING_MAGIC`]), whose first 72 bytes are laid out as these.
//!
//! Saving writes a temporary file in the target's directory, fsyncs it, renames it over the target and fsyncs
//! the directory, so a crash leaves either the old checkpoint or the new one. Loading checks magic, version,
//! sizes (before allocating anything), the checksum, the dtype and every tensor length against the optimizer it
//! is loaded into, and changes nothing unless all of it holds.
//!
//! # Where things are
//!
//! `frame.rs` is the format discipline, written once: the shared 72-byte head, the CRC-32 trailer, the checks every
//! load opens and closes with (magic, version, exact length, checksum; the settings validated last), the atomic
//! save and the bounded read. `dense.rs` ([`crate::Adagrad`]) and `embedding.rs`
//! ([`crate::embedding::EmbeddingAdagrad`]) each add only their own fields: their header's tail, the state they
//! hold, and the checks that a file fits the optimizer it is loaded into.

mod dense;
mod embedding;
mod frame;

pub use embedding::EMBEDDING_MAGIC;

use std::fmt;
use std::io;

/// The first eight bytes of every dense optimizer's checkpoint.
pub const MAGIC: [u8; 8] = *b"ADAGRAD\0";
/// The format version this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Why a checkpoint could not be saved or loaded. Loading changed nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckpointError {
    /// The file system failed.
    Io {
        /// The error's kind.
        kind: io::ErrorKind,
        /// What failed, with the path.
        message: String,
    },
    /// The first bytes are not [`MAGIC`]: not a checkpoint.
    BadMagic,
    /// The path is not a regular file (a directory, FIFO, device, socket): nothing was read.
    NotAFile {
        /// The path.
        path: String,
    },
    /// A format version this crate cannot read.
    UnsupportedVersion(u32),
    /// The data ends before the size its header declares.
    Truncated {
        /// Bytes the header calls for (u64::MAX if that overflows).
        needed: u64,
        /// Bytes present.
        available: u64,
    },
    /// There are bytes after the declared end.
    TrailingBytes {
        /// Bytes the header calls for.
        expected: u64,
        /// Bytes present.
        actual: u64,
    },
    /// The CRC-32 does not match: the data is corrupt.
    Checksum {
        /// The checksum in the file.
        stored: u32,
        /// The checksum of the data.
        computed: u32,
    },
    /// The checkpoint holds another element type.
    DtypeMismatch {
        /// Element size in the file.
        file: u8,
        /// Element size of the optimizer.
        expected: u8,
    },
    /// The checkpoint holds another number of tensors.
    TensorCount {
        /// In the file.
        file: u64,
        /// In the optimizer.
        expected: usize,
    },
    /// A tensor's length differs.
    TensorLength {
        /// The tensor's index.
        tensor: usize,
        /// In the file.
        file: u64,
        /// In the optimizer.
        expected: usize,
    },
    /// A header field holds a value no writer produces.
    BadField {
        /// The field.
        field: &'static str,
        /// What is wrong.
        detail: String,
    },
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointError::Io { message, .. } => write!(f, "I/O error: {message}"),
            CheckpointError::BadMagic => write!(f, "not an adagrad checkpoint (bad magic)"),
            CheckpointError::NotAFile { path } => {
                write!(f, "{path} is not a regular file; nothing was read")
            }
            CheckpointError::UnsupportedVersion(v) => {
                write!(
                    f,
                    "unsupported format version {v} (this build reads {FORMAT_VERSION})"
                )
            }
            CheckpointError::Truncated { needed, available } => {
                write!(
                    f,
                    "truncated: the header calls for {needed} bytes, {available} present"
                )
            }
            CheckpointError::TrailingBytes { expected, actual } => {
                write!(
                    f,
                    "{} unexpected bytes after the declared end ({expected} bytes)",
                    actual - expected
                )
            }
            CheckpointError::Checksum { stored, computed } => {
                write!(
                    f,
                    "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
                )
            }
            CheckpointError::DtypeMismatch { file, expected } => write!(
                f,
                "dtype mismatch: the checkpoint holds {}-byte elements, the optimizer {expected}-byte",
                file
            ),
            CheckpointError::TensorCount { file, expected } => {
                write!(
                    f,
                    "tensor count mismatch: the checkpoint holds {file}, the optimizer {expected}"
                )
            }
            CheckpointError::TensorLength {
                tensor,
                file,
                expected,
            } => {
                write!(
                    f,
                    "length mismatch in tensor {tensor}: the checkpoint holds {file}, the optimizer {expected}"
                )
            }
            CheckpointError::BadField { field, detail } => write!(f, "bad {field}: {detail}"),
        }
    }
}

impl std::error::Error for CheckpointError {}
