//! Per-CPU performance settings: how far ahead the kernels prefetch, from what step size threads pay, and how
//! small a step's pieces may get. None of them changes a single bit of any result; they only change speed, and
//! the best values depend on the microarchitecture, so they are chosen per CPU:
//!
//! 1. the table below, keyed on the CPU's vendor and family ([`Tuning::for_cpu`]), each entry backed by a
//!    measurement (`docs/results/`, and `cargo run --release --example calibrate` to repeat it);
//! 2. then `ADAGRAD_TUNE` (for example `ADAGRAD_TUNE=prefetch=0,threshold=65536,piece=16384`) overrides any of
//!    them for every optimizer built afterwards;
//! 3. an explicit [`crate::Config::tuning`] replaces both.
//!
//! [`crate::Adagrad::tuning`] says what an optimizer uses.

use crate::Error;
use adagrad_kernels::{Cpu, Kernels, Vendor};
use std::fmt;

/// Performance settings of an optimizer (see the module documentation). Results are bit-identical whatever they
/// are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuning {
    /// Software prefetch distance in bytes ahead of the loop, in each of the step's streams; 0: none (the
    /// hardware prefetcher alone). At most [`Kernels::MAX_PREFETCH`].
    pub prefetch: usize,
    /// Steps with fewer elements than this run on the calling thread only.
    pub parallel_threshold: usize,
    /// A parallel step is cut into one piece per thread, but never into pieces smaller than this many elements.
    pub min_piece: usize,
    /// Where these values come from.
    pub source: TuningSource,
}

/// Where a [`Tuning`] comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TuningSource {
    /// The built-in table's entry of this name.
    Table(&'static str),
    /// The table, with `ADAGRAD_TUNE` overriding some values.
    Env(&'static str),
    /// Given in the configuration.
    Config,
}

impl fmt::Display for TuningSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TuningSource::Table(e) => write!(f, "table entry \"{e}\""),
            TuningSource::Env(e) => write!(f, "table entry \"{e}\" with ADAGRAD_TUNE"),
            TuningSource::Config => f.write_str("Config::tuning"),
        }
    }
}

impl fmt::Display for Tuning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "prefetch={},threshold={},piece={} ({})",
            self.prefetch, self.parallel_threshold, self.min_piece, self.source
        )
    }
}

/// The default [`Tuning::parallel_threshold`] of every table entry: below 65,536 elements a step runs on the
/// calling thread (see [`Tuning::for_cpu`] for the measurements).
pub const PARALLEL_THRESHOLD: usize = 1 << 16;

impl Tuning {
    /// The table entry for `cpu`.
    ///
    /// | entry | CPUs | prefetch | threshold | piece | measured |
    /// |---|---|---:|---:|---:|---|
    /// | `intel` | Intel family 6 (Core, Xeon) | 0 | 65,536 | 16,384 | Sapphire Rapids, `docs/results/calibrate-intel-spr.txt` |
    /// | `amd-zen` | AMD families 0x17–0x1A (Zen 1–5) | 0 | 65,536 | 16,384 | Zen 4: a 8 KiB prefetch cost 25–30% at 16M elements (issue 10) |
    /// | `other` | anything else | 0 | 65,536 | 16,384 | the hardware prefetcher alone: no hint is the safe default |
    pub fn for_cpu(cpu: &Cpu) -> Tuning {
        let (name, prefetch) = match (cpu.vendor, cpu.family) {
            (Vendor::Intel, 6) => ("intel", 0),
            (Vendor::Amd, 0x17..=0x1A) => ("amd-zen", 0),
            _ => ("other", 0),
        };
        Tuning {
            prefetch,
            parallel_threshold: PARALLEL_THRESHOLD,
            min_piece: 1 << 14,
            source: TuningSource::Table(name),
        }
    }

    /// This CPU's table entry, with `ADAGRAD_TUNE` applied when it is set. An unreadable or invalid
    /// `ADAGRAD_TUNE` is an error, never silently ignored.
    pub fn detect() -> Result<Tuning, Error> {
        let table = Tuning::for_cpu(&Cpu::this());
        match std::env::var_os("ADAGRAD_TUNE") {
            None => Ok(table),
            Some(v) => match v.to_str() {
                Some(s) if s.trim().is_empty() => Ok(table),
                Some(s) => table.with_overrides(s),
                None => Err(Error::InvalidTune(format!(
                    "ADAGRAD_TUNE is not valid UTF-8: {v:?}"
                ))),
            },
        }
    }

    /// These values with overrides in `ADAGRAD_TUNE`'s syntax: comma-separated `key=value` pairs, keys
    /// `prefetch` (bytes, 0 = none), `threshold` and `piece` (elements), values decimal integers.
    ///
    /// ```
    /// use adagrad::{Cpu, Tuning};
    /// let t = Tuning::for_cpu(&Cpu::this()).with_overrides("prefetch=4096, threshold=0")?;
    /// assert_eq!((t.prefetch, t.parallel_threshold), (4096, 0));
    /// assert!(Tuning::for_cpu(&Cpu::this()).with_overrides("prefetch=lots").is_err());
    /// # Ok::<(), adagrad::Error>(())
    /// ```
    pub fn with_overrides(mut self, spec: &str) -> Result<Tuning, Error> {
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let Some((key, value)) = item.split_once('=') else {
                return Err(Error::InvalidTune(format!(
                    "{item:?} is not key=value (keys: prefetch, threshold, piece)"
                )));
            };
            let (key, value) = (key.trim(), value.trim());
            let n: usize = value.parse().map_err(|_| {
                Error::InvalidTune(format!(
                    "{key}={value:?}: not a non-negative decimal integer"
                ))
            })?;
            match key {
                "prefetch" if n > Kernels::MAX_PREFETCH => {
                    return Err(Error::InvalidTune(format!(
                        "prefetch={n}: at most {} bytes",
                        Kernels::MAX_PREFETCH
                    )));
                }
                "prefetch" => self.prefetch = n,
                "threshold" => self.parallel_threshold = n,
                "piece" if n == 0 => {
                    return Err(Error::InvalidTune("piece=0: at least 1 element".into()));
                }
                "piece" => self.min_piece = n,
                _ => {
                    return Err(Error::InvalidTune(format!(
                        "unknown key {key:?} (keys: prefetch, threshold, piece)"
                    )));
                }
            }
        }
        if let TuningSource::Table(name) = self.source {
            self.source = TuningSource::Env(name);
        }
        Ok(self)
    }

    /// Checks an explicitly configured tuning (the same limits as `ADAGRAD_TUNE`).
    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.prefetch > Kernels::MAX_PREFETCH {
            return Err(Error::InvalidTune(format!(
                "prefetch={}: at most {} bytes",
                self.prefetch,
                Kernels::MAX_PREFETCH
            )));
        }
        if self.min_piece == 0 {
            return Err(Error::InvalidTune("piece=0: at least 1 element".into()));
        }
        Ok(())
    }
}
