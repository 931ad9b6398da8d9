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
//! `b"ADAGEMB\0"` (see [`EMBEDDING_MAGIC`]), through the same atomic save and bounded, checked load.
//!
//! Saving writes a temporary file in the target's directory, fsyncs it, renames it over the target and fsyncs
//! the directory, so a crash leaves either the old checkpoint or the new one. Loading checks magic, version,
//! sizes (before allocating anything), the checksum, the dtype and every tensor length against the optimizer it
//! is loaded into, and changes nothing unless all of it holds.

use crate::{Adagrad, Config, EpsPlacement, Error, Float, NonFinite, Precision};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// The first eight bytes of every checkpoint.
pub const MAGIC: [u8; 8] = *b"ADAGRAD\0";
/// The format version this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes before the tensor lengths.
const FIXED: usize = 80;

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

fn io_err(what: &str, path: &Path, e: io::Error) -> Error {
    Error::Checkpoint(CheckpointError::Io {
        kind: e.kind(),
        message: format!("{what} {}: {e}", path.display()),
    })
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn f64_at(b: &[u8], at: usize) -> f64 {
    f64::from_bits(u64_at(b, at))
}

/// A writer that feeds a CRC-32 on the way.
struct Crc<W> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for Crc<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `data`'s elements in little-endian order (zero-copy on little-endian hosts).
fn write_le<T: bytemuck::Pod, W: Write>(w: &mut W, data: &[T]) -> io::Result<()> {
    let bytes: &[u8] = bytemuck::cast_slice(data);
    if cfg!(target_endian = "little") {
        return w.write_all(bytes);
    }
    let size = size_of::<T>();
    let mut buf = [0u8; 4096];
    for chunk in bytes.chunks(buf.len()) {
        let out = &mut buf[..chunk.len()];
        for (o, c) in out.chunks_mut(size).zip(chunk.chunks(size)) {
            o.iter_mut().zip(c.iter().rev()).for_each(|(o, c)| *o = *c);
        }
        w.write_all(out)?;
    }
    Ok(())
}

/// Writes a file atomically: `write` fills a temporary file in `path`'s directory, which is fsynced and renamed
/// over `path`, then the directory is fsynced. A crash at any point leaves the previous file (or none) at `path`,
/// never a partial one; on error the temporary file is removed.
fn save_atomic(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<(), Error>,
) -> Result<(), Error> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| {
        io_err(
            "saving to",
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "no file name"),
        )
    })?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let tmp = dir.join(format!(
        ".{}.{}.{nanos}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| io_err("creating", &tmp, e))?;
        let mut w = io::BufWriter::with_capacity(1 << 20, file);
        write(&mut w)?;
        let file = w
            .into_inner()
            .map_err(|e| io_err("writing", &tmp, e.into_error()))?;
        file.sync_all().map_err(|e| io_err("syncing", &tmp, e))?;
        drop(file);
        fs::rename(&tmp, path).map_err(|e| io_err("renaming over", path, e))?;
        #[cfg(unix)]
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err("syncing directory", &dir, e))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads the regular file at `path`, at most `expected + 1` bytes (never allocating more, whatever its metadata
/// says). A larger file is refused with `mismatch`'s reading of its header (why it is not this optimizer's), or
/// else as trailing bytes.
fn read_bounded(
    path: &Path,
    expected: u64,
    mismatch: impl FnOnce(&[u8]) -> Option<CheckpointError>,
) -> Result<Vec<u8>, Error> {
    // Only a regular file is read: a FIFO could block forever at open, a character device or a proc file could
    // report length 0 and never end.
    let meta = fs::metadata(path).map_err(|e| io_err("inspecting", path, e))?;
    if !meta.is_file() {
        return Err(CheckpointError::NotAFile {
            path: path.display().to_string(),
        }
        .into());
    }
    let file = File::open(path).map_err(|e| io_err("opening", path, e))?;
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact((expected + 1).min(meta.len().saturating_add(1)) as usize)
        .map_err(|_| CheckpointError::Io {
            kind: io::ErrorKind::OutOfMemory,
            message: format!("reading {}: out of memory", path.display()),
        })?;
    file.take(expected + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_err("reading", path, e))?;
    if bytes.len() as u64 > expected {
        // The format's header check names what differs; trailing bytes are this function's to report, with the
        // file's whole length (a format's own check would see only the part read).
        return Err(mismatch(&bytes)
            .filter(|e| !matches!(e, CheckpointError::TrailingBytes { .. }))
            .unwrap_or(CheckpointError::TrailingBytes {
                expected,
                actual: meta.len().max(bytes.len() as u64),
            })
            .into());
    }
    Ok(bytes)
}

impl<T: Float + bytemuck::Pod> Adagrad<T> {
    fn header(&self) -> Vec<u8> {
        let c = &self.config;
        let mut h = Vec::with_capacity(FIXED + 8 * self.state.len());
        h.extend_from_slice(&MAGIC);
        h.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        h.push(size_of::<T>() as u8);
        h.extend_from_slice(&flag_bytes(c));
        h.extend_from_slice(&[0; 7]);
        h.extend_from_slice(&hyper_bytes(c));
        h.extend_from_slice(&self.step.to_le_bytes());
        h.extend_from_slice(&(self.state.len() as u64).to_le_bytes());
        for s in &self.state {
            h.extend_from_slice(&(s.len() as u64).to_le_bytes());
        }
        h
    }

    /// Writes the checkpoint to `w` (header, every accumulator, CRC-32).
    pub fn write_checkpoint<W: Write>(&self, w: W) -> Result<(), Error> {
        write_framed(w, &self.header(), self.state.iter().map(|s| s.as_slice()))
    }

    /// The checkpoint as bytes.
    pub fn to_checkpoint_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.write_checkpoint(&mut v)
            .expect("writing to a Vec cannot fail");
        v
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
        save_atomic(path.as_ref(), |w| self.write_checkpoint(w))
    }

    /// Loads the checkpoint at `path` into this optimizer: state, step count and hyperparameters (the kernel path
    /// and parallelism stay this optimizer's). The file must hold this dtype and exactly this optimizer's tensor
    /// lengths; on any error nothing changes.
    pub fn load(&mut self, path: impl AsRef<Path>) -> Result<(), Error> {
        let bytes = read_bounded(path.as_ref(), self.to_checkpoint_len(), |b| {
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
        if version != FORMAT_VERSION {
            return Some(CheckpointError::UnsupportedVersion(version));
        }
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
        self.step = u64_at(b, 64);
        self.config = config;
        Ok(())
    }

    /// Validates everything and returns the configuration the checkpoint holds; reads no data into `self`.
    fn check_checkpoint(&self, b: &[u8]) -> Result<Config, CheckpointError> {
        let available = b.len() as u64;
        if b.len() < FIXED + 4 {
            if b.len() >= 8 && b[..8] != MAGIC {
                return Err(CheckpointError::BadMagic);
            }
            return Err(CheckpointError::Truncated {
                needed: (FIXED + 4) as u64,
                available,
            });
        }
        if b[..8] != MAGIC {
            return Err(CheckpointError::BadMagic);
        }
        let version = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
        if version != FORMAT_VERSION {
            return Err(CheckpointError::UnsupportedVersion(version));
        }
        let elem = b[12];
        if elem != 4 && elem != 8 {
            return Err(CheckpointError::BadField {
                field: "element size",
                detail: format!("{elem}"),
            });
        }
        // The declared size, in checked u64 arithmetic: a header may claim anything.
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
        let needed = data
            .and_then(|d| d.checked_add(lengths_end + 4))
            .unwrap_or(u64::MAX);
        if needed > available {
            return Err(CheckpointError::Truncated { needed, available });
        }
        if needed < available {
            return Err(CheckpointError::TrailingBytes {
                expected: needed,
                actual: available,
            });
        }
        verify_crc(b)?;
        // Whole and intact: now does it fit this optimizer?
        if elem as usize != size_of::<T>() {
            return Err(CheckpointError::DtypeMismatch {
                file: elem,
                expected: size_of::<T>() as u8,
            });
        }
        if count != self.state.len() as u64 {
            return Err(CheckpointError::TensorCount {
                file: count,
                expected: self.state.len(),
            });
        }
        for (tensor, s) in self.state.iter().enumerate() {
            let file = u64_at(b, FIXED + 8 * tensor);
            if file != s.len() as u64 {
                return Err(CheckpointError::TensorLength {
                    tensor,
                    file,
                    expected: s.len(),
                });
            }
        }
        if b[17..24].iter().any(|&x| x != 0) {
            return Err(CheckpointError::BadField {
                field: "reserved bytes",
                detail: "not zero".into(),
            });
        }
        let c = read_config(b, &self.config)?;
        c.validate_for::<T>()
            .map_err(|e| CheckpointError::BadField {
                field: "hyperparameters",
                detail: e.to_string(),
            })?;
        if u64_at(b, 64) == u64::MAX {
            return Err(CheckpointError::BadField {
                field: "step count",
                detail: "u64::MAX: no further step could be counted".into(),
            });
        }
        Ok(c)
    }
}

/// Writes a checkpoint of either format: `header`, then every part's elements little-endian, then the CRC-32 of
/// all of it; flushes `w`.
fn write_framed<'a, W: Write, T: bytemuck::Pod>(
    w: W,
    header: &[u8],
    parts: impl IntoIterator<Item = &'a [T]>,
) -> Result<(), Error> {
    let io = |e: io::Error| {
        Error::Checkpoint(CheckpointError::Io {
            kind: e.kind(),
            message: format!("writing checkpoint: {e}"),
        })
    };
    let mut w = Crc {
        inner: w,
        crc: crc32fast::Hasher::new(),
    };
    w.write_all(header).map_err(io)?;
    for part in parts {
        write_le(&mut w, part).map_err(io)?;
    }
    let crc = w.crc.clone().finalize();
    w.inner.write_all(&crc.to_le_bytes()).map_err(io)?;
    w.inner.flush().map_err(io)
}

/// Checks the CRC-32 in the last four bytes of a checkpoint of either format (`b` holds at least four bytes).
/// Under the fuzzer (cargo-fuzz sets `cfg(fuzzing)`) a wrong checksum is let through, so that it can reach the
/// checks behind it; it cannot forge CRCs.
fn verify_crc(b: &[u8]) -> Result<(), CheckpointError> {
    let (body, tail) = b.split_at(b.len() - 4);
    let stored = u32::from_le_bytes(tail.try_into().expect("4 bytes"));
    let computed = crc32fast::hash(body);
    if stored != computed && !cfg!(fuzzing) {
        return Err(CheckpointError::Checksum { stored, computed });
    }
    Ok(())
}

/// The four flag bytes both formats hold at offsets 13..17: eps placement, maximize, precision, non-finite policy.
fn flag_bytes(c: &Config) -> [u8; 4] {
    [
        (c.eps_placement == EpsPlacement::Inside) as u8,
        c.maximize as u8,
        (c.precision == Precision::Fast) as u8,
        match c.non_finite {
            NonFinite::Propagate => 0,
            NonFinite::SkipStep => 1,
            NonFinite::Error => 2,
        },
    ]
}

/// The five hyperparameters both formats hold at offsets 24..64.
fn hyper_bytes(c: &Config) -> Vec<u8> {
    [
        c.lr,
        c.lr_decay,
        c.weight_decay,
        c.initial_accumulator_value,
        c.eps,
    ]
    .iter()
    .flat_map(|v| v.to_le_bytes())
    .collect()
}

/// `base` with the flags (13..17) and hyperparameters (24..64) of a checkpoint of either format (`b` holds at
/// least 64 bytes). Flags no writer produces are refused; the values are validated by the caller, per dtype.
fn read_config(b: &[u8], base: &Config) -> Result<Config, CheckpointError> {
    let flag = |at: usize, field: &'static str, max: u8| {
        if b[at] > max {
            Err(CheckpointError::BadField {
                field,
                detail: format!("{}", b[at]),
            })
        } else {
            Ok(b[at] as usize)
        }
    };
    let mut c = base.clone();
    c.eps_placement = [EpsPlacement::Outside, EpsPlacement::Inside][flag(13, "eps placement", 1)?];
    c.maximize = flag(14, "maximize", 1)? == 1;
    c.precision = [Precision::Exact, Precision::Fast][flag(15, "precision", 1)?];
    c.non_finite = [NonFinite::Propagate, NonFinite::SkipStep, NonFinite::Error]
        [flag(16, "non-finite policy", 2)?];
    c.lr = f64_at(b, 24);
    c.lr_decay = f64_at(b, 32);
    c.weight_decay = f64_at(b, 40);
    c.initial_accumulator_value = f64_at(b, 48);
    c.eps = f64_at(b, 56);
    Ok(c)
}

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
/// Bytes before an embedding checkpoint's accumulators.
const EMB_FIXED: usize = 96;

mod embedding_format {
    use super::*;
    use crate::embedding::{Accumulator, EmbeddingAdagrad, Table, TableOptions};
    use adagrad_kernels::rowwise::{DecayMode, Rounding};

    fn table_code<W: Table>() -> u8 {
        match W::NAME {
            "bf16" => 1,
            "f16" => 2,
            _ => 0,
        }
    }

    impl<W: Table> EmbeddingAdagrad<W> {
        fn emb_header(&self) -> Vec<u8> {
            let c = &self.config;
            let o = &self.options;
            let mut h = Vec::with_capacity(EMB_FIXED);
            h.extend_from_slice(&EMBEDDING_MAGIC);
            h.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
            let seed = match o.rounding {
                Rounding::NearestEven => None,
                Rounding::Stochastic { seed } => Some(seed),
            };
            h.push(table_code::<W>());
            h.extend_from_slice(&flag_bytes(c));
            h.extend_from_slice(&[
                (o.accumulator == Accumulator::ElementWise) as u8,
                (o.decay == DecayMode::Decoupled) as u8,
                seed.is_some() as u8,
                0,
                0,
                0,
                0,
            ]);
            h.extend_from_slice(&hyper_bytes(c));
            for v in [
                self.step,
                seed.unwrap_or(0),
                self.rows as u64,
                self.dim as u64,
            ] {
                h.extend_from_slice(&v.to_le_bytes());
            }
            h
        }

        /// Writes the checkpoint to `w` (see [`EMBEDDING_MAGIC`] for the format): hyperparameters, options, step
        /// count, shape and every accumulator. The table itself is the caller's to save.
        pub fn write_checkpoint<Wr: Write>(&self, w: Wr) -> Result<(), Error> {
            write_framed(w, &self.emb_header(), [self.state()])
        }

        /// The checkpoint as bytes.
        pub fn to_checkpoint_bytes(&self) -> Vec<u8> {
            let mut v = Vec::new();
            self.write_checkpoint(&mut v)
                .expect("writing to a Vec cannot fail");
            v
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
            save_atomic(path.as_ref(), |w| self.write_checkpoint(w))
        }

        fn emb_checkpoint_len(&self) -> u64 {
            (EMB_FIXED + 4 * self.state().len() + 4) as u64
        }

        /// Loads the checkpoint at `path`: accumulators, step count, hyperparameters and options (the kernel path
        /// and parallelism stay this optimizer's). It must be for this table type, shape and accumulator; on any
        /// error nothing changes.
        pub fn load(&mut self, path: impl AsRef<Path>) -> Result<(), Error> {
            let bytes = read_bounded(path.as_ref(), self.emb_checkpoint_len(), |b| {
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
            self.step = u64_at(b, 64);
            self.config = config;
            self.options = options;
            Ok(())
        }

        /// Validates everything; returns the configuration and options the checkpoint holds.
        fn emb_check(&self, b: &[u8]) -> Result<(Config, TableOptions), CheckpointError> {
            let available = b.len() as u64;
            if b.len() >= 8 && b[..8] != EMBEDDING_MAGIC {
                return Err(CheckpointError::BadMagic);
            }
            if b.len() < EMB_FIXED + 4 {
                return Err(CheckpointError::Truncated {
                    needed: (EMB_FIXED + 4) as u64,
                    available,
                });
            }
            let version = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
            if version != FORMAT_VERSION {
                return Err(CheckpointError::UnsupportedVersion(version));
            }
            let (rows, dim) = (u64_at(b, 80), u64_at(b, 88));
            let n = match b[17] {
                0 => Some(rows),
                _ => rows.checked_mul(dim),
            };
            let needed = n
                .and_then(|n| n.checked_mul(4))
                .and_then(|d| d.checked_add(EMB_FIXED as u64 + 4))
                .unwrap_or(u64::MAX);
            if needed > available {
                return Err(CheckpointError::Truncated { needed, available });
            }
            if needed < available {
                return Err(CheckpointError::TrailingBytes {
                    expected: needed,
                    actual: available,
                });
            }
            verify_crc(b)?;
            let bad =
                |field: &'static str, detail: String| CheckpointError::BadField { field, detail };
            let flag = |at: usize, field: &'static str, max: u8| {
                if b[at] > max {
                    Err(bad(field, format!("{}", b[at])))
                } else {
                    Ok(b[at])
                }
            };
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
            if b[20..24].iter().any(|&x| x != 0) {
                return Err(bad("reserved bytes", "not zero".into()));
            }
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
            let c = read_config(b, &self.config)?;
            c.validate_for::<f32>()
                .map_err(|e| bad("hyperparameters", e.to_string()))?;
            if u64_at(b, 64) == u64::MAX {
                return Err(bad(
                    "step count",
                    "u64::MAX: no further step could be counted".into(),
                ));
            }
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
}
