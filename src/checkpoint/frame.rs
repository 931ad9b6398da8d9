//! The checkpoint discipline both formats share, written once: the 72-byte head they lay out alike, the CRC-32
//! trailer, the checks every load opens and closes with, the settings read and validated last, the atomic save
//! and the bounded read. Knows no optimizer: `dense.rs` and `embedding.rs` call it with their own fields.

use super::{CheckpointError, FORMAT_VERSION};
use crate::{Config, EpsPlacement, Error, Float, NonFinite, Precision};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Bytes 0..72 of both formats, laid out alike: magic (0..8), format version (8..12), the element or table type
/// (12), the flags (13..17: eps placement, maximize, precision, non-finite policy), seven bytes of the format's
/// own (17..24), the five hyperparameters (24..64), the step count (64..72).
pub(super) const HEAD: usize = 72;
/// Where the step count is.
const STEP_AT: usize = 64;

/// The shared head (see [`HEAD`]) of a checkpoint with `magic`, type byte `kind` and the format's own bytes
/// `own`, in a vector with room for `capacity` bytes (the whole header).
pub(super) fn head(
    magic: &[u8; 8],
    kind: u8,
    own: [u8; 7],
    c: &Config,
    step: u64,
    capacity: usize,
) -> Vec<u8> {
    let mut h = Vec::with_capacity(capacity);
    h.extend_from_slice(magic);
    h.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    h.push(kind);
    h.extend_from_slice(&flag_bytes(c));
    h.extend_from_slice(&own);
    h.extend_from_slice(&hyper_bytes(c));
    h.extend_from_slice(&step.to_le_bytes());
    debug_assert_eq!(h.len(), HEAD);
    h
}

/// The checks a load opens with, before any field is read: `magic` (when there are 8 bytes to compare), a header
/// of `fixed` bytes and the checksum's 4, this crate's format version.
pub(super) fn open(b: &[u8], magic: &[u8; 8], fixed: usize) -> Result<(), CheckpointError> {
    if b.len() >= 8 && b[..8] != *magic {
        return Err(CheckpointError::BadMagic);
    }
    if b.len() < fixed + 4 {
        return Err(CheckpointError::Truncated {
            needed: (fixed + 4) as u64,
            available: b.len() as u64,
        });
    }
    let version = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(CheckpointError::UnsupportedVersion(version));
    }
    Ok(())
}

/// The checks once the header says how long the file is: exactly `needed` bytes (`None`: more than a u64
/// counts), with an intact checksum.
pub(super) fn close(b: &[u8], needed: Option<u64>) -> Result<(), CheckpointError> {
    let available = b.len() as u64;
    let needed = needed.unwrap_or(u64::MAX);
    if needed > available {
        return Err(CheckpointError::Truncated { needed, available });
    }
    if needed < available {
        return Err(CheckpointError::TrailingBytes {
            expected: needed,
            actual: available,
        });
    }
    verify_crc(b)
}

/// The flag byte at `at` of a checkpoint, named `field`: at most `max` (values no writer produces are refused).
pub(super) fn flag(
    b: &[u8],
    at: usize,
    field: &'static str,
    max: u8,
) -> Result<u8, CheckpointError> {
    if b[at] > max {
        return Err(CheckpointError::BadField {
            field,
            detail: format!("{}", b[at]),
        });
    }
    Ok(b[at])
}

/// Reserved bytes, which must be zero.
pub(super) fn reserved(bytes: &[u8]) -> Result<(), CheckpointError> {
    if bytes.iter().any(|&x| x != 0) {
        return Err(CheckpointError::BadField {
            field: "reserved bytes",
            detail: "not zero".into(),
        });
    }
    Ok(())
}

/// What a load checks last: the configuration the file holds (`base` with its flags and hyperparameters),
/// validated as values of `T` (the state's type), and a step count that leaves room for one more step.
pub(super) fn settings<T: Float>(b: &[u8], base: &Config) -> Result<Config, CheckpointError> {
    let c = read_config(b, base)?;
    c.validate_for::<T>()
        .map_err(|e| CheckpointError::BadField {
            field: "hyperparameters",
            detail: e.to_string(),
        })?;
    if step(b) == u64::MAX {
        return Err(CheckpointError::BadField {
            field: "step count",
            detail: "u64::MAX: no further step could be counted".into(),
        });
    }
    Ok(c)
}

/// The step count of a checkpoint that [`open`] accepted.
pub(super) fn step(b: &[u8]) -> u64 {
    u64_at(b, STEP_AT)
}

pub(super) fn io_err(what: &str, path: &Path, e: io::Error) -> Error {
    Error::Checkpoint(CheckpointError::Io {
        kind: e.kind(),
        message: format!("{what} {}: {e}", path.display()),
    })
}

pub(super) fn u64_at(b: &[u8], at: usize) -> u64 {
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
pub(super) fn save_atomic(
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
pub(super) fn read_bounded(
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

/// Writes a checkpoint of either format: `header`, then every part's elements little-endian, then the CRC-32 of
/// all of it; flushes `w`.
pub(super) fn write_framed<'a, W: Write, T: bytemuck::Pod>(
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

/// A checkpoint written by `write` into memory.
pub(super) fn to_vec(write: impl FnOnce(&mut Vec<u8>) -> Result<(), Error>) -> Vec<u8> {
    let mut v = Vec::new();
    write(&mut v).expect("writing to a Vec cannot fail");
    v
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
    let flag = |at, field, max| flag(b, at, field, max).map(usize::from);
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
