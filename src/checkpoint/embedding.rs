//! The embedding optimizer's checkpoint ([`EmbeddingAdagrad`]; the format is [`EMBEDDING_MAGIC`]'s
//! documentation): after the shared head, the rounding seed and the table's shape, then the accumulators. Adds to
//! `frame.rs` only what is its own: the table type, the options, and that a file fits the optimizer it is loaded
//! into. The table itself is the caller's to save.

use super::CheckpointError;
use super::frame::{self, u64_at};
use crate::embedding::{Accumulator, EmbeddingAdagrad, Table, TableOptions};
use crate::{Config, Error};
use adagrad_kernels::rowwise::{DecayMode, Rounding};
use std::io::Write;
use std::path::Path;

/// The first eight bytes of an embedding optimizer's checkpoint.
///
/// # Embedding format (version 1)
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 8 | magic `b"ADAGEMB\0"` |
/// | 8 | 4 | format version, u32 (1) |
/// | 12 | 1 | table type: 0 f32, 1 bf16, 2 f16 |
/// | 13 | 1 | eps placement: 0 outside, 1 inside |
/// | 14 | 1 | maximize: 0 or 1 |
/// | 15 | 1 | precision: 0 exact, 1 fast |
/// | 16 | 1 | non-finite policy: 0 propagate, 1 skip step, 2 error |
/// | 17 | 1 | accumulator: 0 row-wise, 1 element-wise |
/// | 18 | 1 | decay mode: 0 L2, 1 decoupled |
/// | 19 | 1 | rounding: 0 nearest even, 1 stochastic |
/// | 20 | 4 | reserved, zero |
/// | 24 | 40 | lr, lr_decay, weight_decay, initial_accumulator_value, eps: f64 each |
/// | 64 | 8 | step count, u64 |
/// | 72 | 8 | stochastic rounding seed, u64 (0 for nearest even) |
/// | 80 | 8 | rows, u64 |
/// | 88 | 8 | dim, u64 |
/// | 96 | 4·n | the accumulators, f32 (n = rows, or rows · dim) |
/// | end − 4 | 4 | CRC-32 (IEEE) of every byte before it, u32 |
pub const EMBEDDING_MAGIC: [u8; 8] = *b"ADAGEMB\0";
/// Bytes before an embedding checkpoint's accumulators: the shared head, the seed, rows and dim.
const EMB_FIXED: usize = frame::HEAD + 24;

/// The table type's code at offset 12.
fn table_code<W: Table>() -> u8 {
    match W::NAME {
        "bf16" => 1,
        "f16" => 2,
        _ => 0,
    }
}

impl<W: Table> EmbeddingAdagrad<W> {
    fn emb_header(&self) -> Vec<u8> {
        let o = &self.options;
        let seed = match o.rounding {
            Rounding::NearestEven => None,
            Rounding::Stochastic { seed } => Some(seed),
        };
        let own = [
            (o.accumulator == Accumulator::ElementWise) as u8,
            (o.decay == DecayMode::Decoupled) as u8,
            seed.is_some() as u8,
            0,
            0,
            0,
            0,
        ];
        let mut h = frame::head(
            &EMBEDDING_MAGIC,
            table_code::<W>(),
            own,
            &self.config,
            self.step,
            EMB_FIXED,
        );
        for v in [seed.unwrap_or(0), self.rows as u64, self.dim as u64] {
            h.extend_from_slice(&v.to_le_bytes());
        }
        h
    }

    /// Writes the checkpoint to `w` (see [`EMBEDDING_MAGIC`] for the format): hyperparameters, options, step
    /// count, shape and every accumulator. The table itself is the caller's to save.
    pub fn write_checkpoint<Wr: Write>(&self, w: Wr) -> Result<(), Error> {
        frame::write_framed(w, &self.emb_header(), [self.state()])
    }

    /// The checkpoint as bytes.
    pub fn to_checkpoint_bytes(&self) -> Vec<u8> {
        frame::to_vec(|v| self.write_checkpoint(v))
    }

    /// Saves atomically to `path` (as [`crate::Adagrad::save`]).
    ///
    /// ```
    /// use adagrad::embedding::{EmbeddingAdagrad, Lookups, TableOptions};
    /// use adagrad::Config;
    /// let path = std::env::temp_dir().join(format!("adagrad-emb-doc-{}.ckpt", std::process::id()));
    /// let mut table = vec![0.0f32; 10 * 4];
    /// let mut opt = EmbeddingAdagrad::<f32>::new(Config::default(), 10, 4, TableOptions::default())?;
    /// opt.step(&mut table, Lookups::Rows { ids: &[3u32], grads: &[1.0; 4] })?;
    /// opt.save(&path)?;
    /// let mut resumed = EmbeddingAdagrad::<f32>::new(Config::default(), 10, 4, TableOptions::default())?;
    /// resumed.load(&path)?;
    /// assert_eq!((resumed.step_count(), resumed.state()), (1, opt.state()));
    /// # std::fs::remove_file(&path).unwrap();
    /// # Ok::<(), adagrad::Error>(())
    /// ```
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        frame::save_atomic(path.as_ref(), |w| self.write_checkpoint(w))
    }

    fn emb_checkpoint_len(&self) -> u64 {
        (EMB_FIXED + 4 * self.state().len() + 4) as u64
    }

    /// Loads the checkpoint at `path`: accumulators, step count, hyperparameters and options (the kernel path
    /// and parallelism stay this optimizer's). It must be for this table type, shape and accumulator; on any
    /// error nothing changes.
    pub fn load(&mut self, path: impl AsRef<Path>) -> Result<(), Error> {
        let bytes = frame::read_bounded(path.as_ref(), self.emb_checkpoint_len(), |b| {
            self.emb_check(b).err()
        })?;
        self.load_bytes(&bytes)
    }

    /// Loads a checkpoint from bytes (see [`EmbeddingAdagrad::load`]). Never panics; on any error nothing
    /// changes.
    pub fn load_bytes(&mut self, b: &[u8]) -> Result<(), Error> {
        let (config, options) = self.emb_check(b)?;
        let state = self.state_mut();
        for (s, chunk) in state.iter_mut().zip(b[EMB_FIXED..].chunks_exact(4)) {
            *s = f32::from_le_bytes(chunk.try_into().expect("4 bytes"));
        }
        self.step = frame::step(b);
        self.config = config;
        self.options = options;
        Ok(())
    }

    /// Validates everything; returns the configuration and options the checkpoint holds.
    fn emb_check(&self, b: &[u8]) -> Result<(Config, TableOptions), CheckpointError> {
        frame::open(b, &EMBEDDING_MAGIC, EMB_FIXED)?;
        let (rows, dim) = (u64_at(b, 80), u64_at(b, 88));
        let n = match b[17] {
            0 => Some(rows),
            _ => rows.checked_mul(dim),
        };
        let needed = n
            .and_then(|n| n.checked_mul(4))
            .and_then(|d| d.checked_add(EMB_FIXED as u64 + 4));
        frame::close(b, needed)?;
        let bad = |field: &'static str, detail: String| CheckpointError::BadField { field, detail };
        let flag = |at, field, max| frame::flag(b, at, field, max);
        let table = flag(12, "table type", 2)?;
        if table != table_code::<W>() {
            return Err(bad(
                "table type",
                format!(
                    "the file is for {}, this optimizer's table is {}",
                    ["f32", "bf16", "f16"][table as usize],
                    W::NAME
                ),
            ));
        }
        let accumulator = flag(17, "accumulator", 1)?;
        let decay = flag(18, "decay mode", 1)?;
        let rounding = flag(19, "rounding", 1)?;
        frame::reserved(&b[20..24])?;
        if rows != self.rows as u64 || dim != self.dim as u64 {
            return Err(bad(
                "shape",
                format!(
                    "the file is for {rows} × {dim}, this optimizer's table is {} × {}",
                    self.rows, self.dim
                ),
            ));
        }
        let acc = [Accumulator::RowWise, Accumulator::ElementWise][accumulator as usize];
        if acc != self.options.accumulator {
            return Err(bad(
                "accumulator",
                format!(
                    "the file holds {acc:?} state, this optimizer {:?}",
                    self.options.accumulator
                ),
            ));
        }
        let seed = u64_at(b, 72);
        if rounding == 0 && seed != 0 {
            return Err(bad("seed", "set without stochastic rounding".into()));
        }
        let c = frame::settings::<f32>(b, &self.config)?;
        let options = TableOptions {
            accumulator: acc,
            decay: [DecayMode::L2, DecayMode::Decoupled][decay as usize],
            rounding: if rounding == 1 {
                Rounding::Stochastic { seed }
            } else {
                Rounding::NearestEven
            },
        };
        Ok((c, options))
    }
}
