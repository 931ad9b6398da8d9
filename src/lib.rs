//! Adagrad for CPUs, bit-exact with PyTorch's `torch.optim.Adagrad(fused=True)` on every SIMD path and at any
//! thread count, and faster.
//!
//! # What is here
//!
//! - [`Adagrad`]: the optimizer over a set of tensors — one multi-tensor step ([`Adagrad::step`]), one flat
//!   tensor ([`Adagrad::step_flat`]), and the CPU-offload step with 16-bit gradients, a loss scale and a 16-bit
//!   copy-out in the same pass ([`Adagrad::step_with`]); checkpoints ([`Adagrad::save`], [`Adagrad::load`]).
//! - [`functional::step`]: the same step on slices you own, with an [`Executor`] (kernel path, tuning, threads).
//! - [`embedding::EmbeddingAdagrad`]: embedding tables (f32, bf16, f16) trained from a batch's lookups, with
//!   row-wise (FBGEMM's `EXACT_ROWWISE_ADAGRAD`) or element-wise accumulators.
//! - [`stats`]: how far the effective learning rate has shrunk ([`Adagrad::lr_stats`],
//!   [`embedding::EmbeddingAdagrad::lr_stats`]).
//! - [`AlignedBuf`]: the crate's aligned, huge-page-advised allocation.
//! - The Python package `adagrad-cpu` (`python/` in the repository): a `torch.optim` drop-in, numpy and embedding
//!   APIs over this crate.
//!
//! # The update
//!
//! For every element, at step t (1-based), with clr = lr / (1 + (t − 1)·lr_decay):
//!
//! ```text
//! g  ← g / grad_scale             if a gradient scale is given (step_with, functional::step)
//! g  ← −g                         if maximize
//! g  ← g + wd·θ                   (one fused multiply-add), if wd ≠ 0
//! G  ← G + g²                     (one fused multiply-add)
//! θ  ← θ − clr·g / (√G + ε)       EpsPlacement::Outside (PyTorch, TensorFlow, DeepSpeed; the default)
//! θ  ← θ − clr·g / √(G + ε)       EpsPlacement::Inside  (Optax, Keras 3)
//! ```
//!
//! # The exactness contract
//!
//! The scalar reference ([`kernels::reference`]) is the specification: it computes in the parameter's type, with
//! IEEE square root and division and clr computed in f64 and rounded once. It reproduces PyTorch's
//! `Adagrad(fused=True)` on CPU bit for bit (tests/golden.rs replays PyTorch-generated trajectories). Every other
//! path — portable `wide`, AVX2+FMA, AVX-512F, any thread count, any grouping of elements into tensors — gives
//! the same bits. [`Precision::Fast`] is the only exception, with a documented bound.
//!
//! # Example
//!
//! ```
//! use adagrad::{Adagrad, Config, EpsPlacement};
//! // The textbook example: θ0 = 1, lr 0.1, ε = 1e-8 inside the root, g = 0.2, 0.4, 0.1.
//! let config = Config::default().lr(0.1).eps(1e-8).eps_placement(EpsPlacement::Inside);
//! let mut opt = Adagrad::<f64>::new(config, &[1])?;
//! let mut theta = [1.0f64];
//! for g in [0.2, 0.4, 0.1] {
//!     opt.step_flat(&mut theta, &[g])?;
//! }
//! assert!((theta[0] - 0.788735).abs() < 1e-6);
//! println!("path: {}", opt.isa());
//! # Ok::<(), adagrad::Error>(())
//! ```

mod buffer;
mod checkpoint;
mod config;
pub mod embedding;
mod error;
pub mod functional;
mod optimizer;
mod parallel;
pub mod stats;
mod tuning;

pub use adagrad_kernels::{
    CopyOut, Cpu, EpsPlacement, Float, Grad, Hyper, Isa, IsaError, Kernels, NoCopy, Precision,
    Vendor, bf16, f16,
};
pub use buffer::AlignedBuf;
pub use checkpoint::{CheckpointError, EMBEDDING_MAGIC, FORMAT_VERSION, MAGIC};
pub use config::{Config, HostTeam, MAX_THREADS, NonFinite, Parallelism};
pub use error::Error;
pub use functional::Executor;
pub use optimizer::{Adagrad, StepOutcome};
pub use parallel::{ALIGN, LINGER};
pub use tuning::{PARALLEL_THRESHOLD, Tuning, TuningSource};

/// The kernel crate, for direct use of one path (tests, benchmarks, custom loops).
pub use adagrad_kernels as kernels;

/// The README's Rust examples, compiled and run by `cargo test` as they are printed there.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
