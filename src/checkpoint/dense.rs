//! The dense optimizer's checkpoint ([`crate::Adagrad`]; the format is in the module's documentation): after the
//! shared head, the tensor count and lengths, then every accumulator. Adds to `frame.rs` only what is its own: the
//! element size, the tensor lengths, and that a file fits the optimizer it is loaded into.

use super::frame::{self, u64_at};
use super::{CheckpointError, MAGIC};
use crate::{Adagrad, Config, Error, Float};
use std::io::Write;
use std::path::Path;

/// Bytes before the tensor lengths: the shared head and the tensor count.
const FIXED: usize = frame::HEAD + 8;

impl<T: Float + bytemuck::Pod> Adagrad<T> {
    fn header(&self) -> Vec<u8> {
        let mut h = frame::head(
            &MAGIC,
            size_of::<T>() as u8,
            [0; 7],
            &self.config,
            self.step,
            FIXED + 8 * self.state.len(),
        );
        h.extend_from_slice(&(self.state.len() as u64).to_le_bytes());
        for s in &self.state {
            h.extend_from_slice(&(s.len() as u64).to_le_bytes());
        }
        h
    }

    /// Writes the checkpoint to `w` (header, every accumulator, CRC-32).
    pub fn write_checkpoint<W: Write>(&self, w: W) -> Result<(), Error> {
        frame::write_framed(w, &self.header(), self.state.iter().map(|s| s.as_slice()))
    }

    /// The checkpoint as bytes.
    pub fn to_checkpoint_bytes(&self) -> Vec<u8> {
        frame::to_vec(|v| self.write_checkpoint(v))
    }

    /// Saves atomically to `path`: a temporary file in the same directory, fsync, rename over `path`, fsync of the
    /// directory. A crash at any point leaves the previous checkpoint (or none) at `path`, never a partial one.
    ///
    /// ```
    /// use adagrad::{Adagrad, Config};
    /// let dir = std::env::temp_dir().join(format!("adagrad-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let path = dir.join("opt.ckpt");
    /// let mut opt = Adagrad::<f32>::new(Config::default(), &[3, 2])?;
    /// let (mut a, mut b) = (vec![1.0f32; 3], vec![1.0f32; 2]);
    /// opt.step(&mut [&mut a, &mut b], &[&[0.1, 0.2, 0.3], &[0.4, 0.5]])?;
    /// opt.save(&path)?;
    /// let mut resumed = Adagrad::<f32>::new(Config::default(), &[3, 2])?;
    /// resumed.load(&path)?;
    /// assert_eq!((resumed.step_count(), resumed.state()), (opt.step_count(), opt.state()));
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), adagrad::Error>(())
    /// ```
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        frame::save_atomic(path.as_ref(), |w| self.write_checkpoint(w))
    }

    /// Loads the checkpoint at `path` into this optimizer: state, step count and hyperparameters (the kernel path
    /// and parallelism stay this optimizer's). The file must hold this dtype and exactly this optimizer's tensor
    /// lengths; on any error nothing changes.
    pub fn load(&mut self, path: impl AsRef<Path>) -> Result<(), Error> {
        let bytes = frame::read_bounded(path.as_ref(), self.to_checkpoint_len(), |b| {
            self.header_mismatch(b)
        })?;
        self.load_bytes(&bytes)
    }

    /// For a file larger than this optimizer's checkpoint: the header's first disagreement with this optimizer
    /// (dtype, tensor count, a tensor's length), if the header is readable.
    fn header_mismatch(&self, b: &[u8]) -> Option<CheckpointError> {
        if b.len() < FIXED || b[..8] != MAGIC {
            return None;
        }
        let version = u32::from_le_bytes(b[8..12].try_into().ok()?);
        if version != super::FORMAT_VERSION {
            return Some(CheckpointError::UnsupportedVersion(version));
        }
        self.misfit(b)
    }

    /// The first way the header in `b` (as much of it as `b` holds; the element size at 12 and the tensor count at
    /// 72 at least) does not fit this optimizer: the dtype (when the element size is a valid one), the tensor
    /// count, a tensor's length.
    fn misfit(&self, b: &[u8]) -> Option<CheckpointError> {
        let elem = b[12];
        if (elem == 4 || elem == 8) && elem as usize != size_of::<T>() {
            return Some(CheckpointError::DtypeMismatch {
                file: elem,
                expected: size_of::<T>() as u8,
            });
        }
        let count = u64_at(b, 72);
        if count != self.state.len() as u64 {
            return Some(CheckpointError::TensorCount {
                file: count,
                expected: self.state.len(),
            });
        }
        for (tensor, s) in self.state.iter().enumerate() {
            let at = FIXED + 8 * tensor;
            if at + 8 > b.len() {
                return None;
            }
            let file = u64_at(b, at);
            if file != s.len() as u64 {
                return Some(CheckpointError::TensorLength {
                    tensor,
                    file,
                    expected: s.len(),
                });
            }
        }
        None
    }

    fn to_checkpoint_len(&self) -> u64 {
        let data: u64 = self
            .state
            .iter()
            .map(|s| (s.len() * size_of::<T>()) as u64)
            .sum();
        (FIXED + 8 * self.state.len()) as u64 + data + 4
    }

    /// Loads a checkpoint from bytes (see [`Adagrad::load`]). Never panics; on any error nothing changes.
    pub fn load_bytes(&mut self, b: &[u8]) -> Result<(), Error> {
        let config = self.check_checkpoint(b)?;
        let mut at = FIXED + 8 * self.state.len();
        for s in &mut self.state {
            let n = s.len() * size_of::<T>();
            bytemuck::cast_slice_mut::<T, u8>(s).copy_from_slice(&b[at..at + n]);
            if cfg!(target_endian = "big") {
                bytemuck::cast_slice_mut::<T, u8>(s)
                    .chunks_mut(size_of::<T>())
                    .for_each(|e| e.reverse());
            }
            at += n;
        }
        self.step = frame::step(b);
        self.config = config;
        Ok(())
    }

    /// Validates everything and returns the configuration the checkpoint holds; reads no data into `self`.
    fn check_checkpoint(&self, b: &[u8]) -> Result<Config, CheckpointError> {
        frame::open(b, &MAGIC, FIXED)?;
        let elem = b[12];
        if elem != 4 && elem != 8 {
            return Err(CheckpointError::BadField {
                field: "element size",
                detail: format!("{elem}"),
            });
        }
        // The declared size, in checked u64 arithmetic: a header may claim anything.
        let available = b.len() as u64;
        let count = u64_at(b, 72);
        let lengths_end = count
            .checked_mul(8)
            .and_then(|x| x.checked_add(FIXED as u64));
        let Some(lengths_end) = lengths_end.filter(|&e| e + 4 <= available) else {
            return Err(CheckpointError::Truncated {
                needed: lengths_end.map_or(u64::MAX, |e| e + 4),
                available,
            });
        };
        let mut data: Option<u64> = Some(0);
        for i in 0..count as usize {
            let n = u64_at(b, FIXED + 8 * i);
            data = data.and_then(|d| n.checked_mul(elem as u64).and_then(|x| d.checked_add(x)));
        }
        frame::close(b, data.and_then(|d| d.checked_add(lengths_end + 4)))?;
        // Whole and intact: now does it fit this optimizer?
        if let Some(e) = self.misfit(b) {
            return Err(e);
        }
        frame::reserved(&b[17..24])?;
        frame::settings::<T>(b, &self.config)
    }
}
