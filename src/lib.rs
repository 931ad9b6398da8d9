//! SIMD-accelerated dense Adagrad for CPUs, bit-exact with PyTorch's `Adagrad(fused=True)`.
//!
//! # The update
//!
//! For every element, at step t (1-based), with clr = lr / (1 + (t − 1)·lr_decay):
//!
//! ```text
//! g  ← −g                         if maximize
//! g  ← g + wd·θ                   (one fused multiply-add), if wd ≠ 0
//! G  ← G + g²                     (one fused multiply-add)
//! θ  ← θ − clr·g / (√G + ε)       EpsPlacement::Outside (PyTorch, TensorFlow, DeepSpeed; the default)
//! θ  ← θ − clr·g / √(G + ε)       EpsPlacement::Inside  (Optax, Keras 3)
//! ```
//!
//! # The exactness contract
//!
//! The scalar reference ([`adagrad_kernels::reference`]) is the specification: it computes in the parameter's
//! type, with IEEE square root and division and clr computed in f64 and rounded once. It reproduces PyTorch's
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

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
