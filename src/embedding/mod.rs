//! Embedding tables: sparse Adagrad with one accumulator per row ([`Accumulator::RowWise`], FBGEMM's
//! `EXACT_ROWWISE_ADAGRAD`, TorchRec's default) or per element ([`Accumulator::ElementWise`], `torch.optim.Adagrad`
//! on sparse gradients, FBGEMM's `EXACT_ADAGRAD`).
//!
//! A step takes the lookups of a batch as frameworks produce them — one gradient row per lookup, pooled bags
//! (offsets into the ids, one gradient row per bag, optional per-lookup weights), or rows already coalesced — sums
//! each row's gradients in ascending lookup position (so the result never depends on the thread count), then updates
//! every touched row once. The per-row math is [`adagrad_kernels::rowwise`] (row-wise; bit-exact with FBGEMM 1.9.0)
//! and the dense step (element-wise; a step that touches every row once equals the dense step on that gradient).
//!
//! ```
//! use adagrad::embedding::{EmbeddingAdagrad, Lookups, TableOptions};
//! use adagrad::Config;
//! let (rows, dim) = (1000, 4);
//! let mut table = vec![0.5f32; rows * dim];
//! let mut opt = EmbeddingAdagrad::<f32>::new(Config::default().lr(0.1).eps(1e-8), rows, dim, TableOptions::default())?;
//! // Three lookups, row 7 twice: its two gradient rows are summed first, then the row is updated once.
//! let ids = [7u32, 42, 7];
//! let grads = [1.0f32; 3 * 4];
//! opt.step(&mut table, Lookups::Rows { ids: &ids, grads: &grads })?;
//! assert_eq!(opt.state()[7], 4.0); // the mean of the summed row's squares, (1 + 1)²
//! assert_eq!(table[7 * dim], 0.4); // 0.5 − 0.1·2/(√4 + 1e-8)
//! assert_eq!(table[0], 0.5); // untouched
//! # Ok::<(), adagrad::Error>(())
//! ```
//!
//! # How a step flows
//!
//! A batch passes three stages, one file each, run in order by the optimizer (`optimizer.rs`: [`EmbeddingAdagrad`],
//! or the functional pair [`prepare`] — stages 1 and 2 — and [`apply`] — stage 3); only the last writes the table
//! and state:
//!
//! 1. `check.rs` — the lookups checked: ids against the table, lengths, offsets, weights; each lookup's sort key
//!    written as its id is checked. Nothing but the scratch is written, and any error leaves the table and state
//!    untouched.
//! 2. `group.rs` — grouped into runs by row: the keys sorted (a stable radix sort, chunked over the step's
//!    threads), the start of each touched row's run found; the [`Scratch`] that keeps these buffers between steps.
//! 3. `update.rs` — rows updated: each touched row's gradients summed in ascending lookup position, then the row
//!    and its state updated once, rows cut into pieces for the threads at row boundaries; the non-finite check
//!    sums the same way without writing.
//!
//! `types.rs` holds the public vocabulary ([`Accumulator`], [`TableOptions`], [`Id`], [`Lookups`],
//! [`LookupError`]) and `table.rs` the table element types ([`Table`]: f32, bf16, f16), each one's row update.

mod check;
mod group;
mod optimizer;
mod table;
mod types;
mod update;

pub use group::Scratch;
pub use optimizer::{EmbeddingAdagrad, Prepared, apply, prepare};
#[doc(hidden)]
pub use table::RowCtx;
pub use table::Table;
pub use types::{Accumulator, Id, LookupError, Lookups, TableOptions};
