//! Per-CPU performance settings: how far ahead the kernels prefetch, from what step size threads pay, and how
//! small a step's pieces may get. None of them changes a single bit of any result; they only change speed, and
//! the best values depend on the microarchitecture, so they are chosen per CPU:
//!
//! 1. the table below, keyed on the CPU's vendor and family ([`Tuning::for_cpu`]), each entry backed by a
//!    measurement (`docs/results/`, and `cargo run --release --example calibrate` to repeat it);
//! 2. then `ADAGRAD_TUNE` (for example `ADAGRAD_TUNE=prefetch=0,threshold=65536,piece=16384`) overrides any of
//!    them for every optimizer built afterwards (keys `prefetch`, `threshold`, `piece`, `avx512`, `rows_ahead`,
//!    `lookups_ahead`, `sort`, `linger`);
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
    /// Steps with fewer elements than this run on the calling thread only. Counted in f32 elements: an f64
    /// element counts as [`Tuning::weight`] (4), as its square root and divide take about 3.5 times as long.
    pub parallel_threshold: usize,
    /// A parallel step is taken in chunks from a shared cursor, never smaller than this many (f32) elements
    /// (the last piece of a tensor aside).
    pub min_piece: usize,
    /// Whether the default path may be AVX-512 where the CPU has it; `false`: AVX2 (256-bit) is used instead,
    /// because on this CPU the exact step, bound by the square-root and divide unit in cache, runs faster on
    /// 256-bit vectors. Only the default changes: `Config::isa` and `ADAGRAD_ISA` still force any path.
    pub avx512: bool,
    /// Embedding steps: how many touched rows ahead of the one being updated have their table row and state
    /// prefetched; 0: none. At most [`Tuning::MAX_AHEAD`].
    pub rows_ahead: usize,
    /// Embedding steps: how many lookups ahead of the one being read, in grouped order (row by row, each row's
    /// lookups in position order, across rows), have their gradient rows prefetched; 0: none. At most
    /// [`Tuning::MAX_AHEAD`].
    pub lookups_ahead: usize,
    /// Embedding steps: from how many lookups the coalescing sort runs on the step's threads (below, on the
    /// calling thread: its passes are too short to pay for waking the helpers).
    pub sort_threshold: usize,
    /// Microseconds a helper thread of this crate's pools stays awake after a parallel step, waiting for the next
    /// one (spinning for a few microseconds, then yielding its CPU to any thread that wants it); 0: it goes back
    /// to rayon's pool at once (which sleeps after a few dozen yields). At most [`Tuning::MAX_LINGER`].
    pub linger: usize,
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
            "prefetch={},threshold={},piece={},avx512={},rows_ahead={},lookups_ahead={},sort={},linger={} ({})",
            self.prefetch,
            self.parallel_threshold,
            self.min_piece,
            u8::from(self.avx512),
            self.rows_ahead,
            self.lookups_ahead,
            self.sort_threshold,
            self.linger,
            self.source
        )
    }
}

/// The keys of `ADAGRAD_TUNE`.
const KEYS: &str = "prefetch, threshold, piece, avx512, rows_ahead, lookups_ahead, sort, linger";

/// [`Tuning::linger`] of every table entry, in microseconds.
const LINGER_US: usize = 200;

/// The embedding prefetch distances of every table entry, ([`Tuning::rows_ahead`], [`Tuning::lookups_ahead`]):
/// chosen once for all CPUs (see [`Tuning::for_cpu`]).
const EMBEDDING_AHEAD: (usize, usize) = (8, 8);

/// [`Tuning::sort_threshold`] of every table entry (see [`Tuning::for_cpu`]).
const SORT: usize = 1 << 17;

/// The conservative [`Tuning::parallel_threshold`] of the table entries without thread measurements: below
/// 65,536 elements a step runs on the calling thread (see [`Tuning::for_cpu`]).
pub const PARALLEL_THRESHOLD: usize = 1 << 16;

impl Tuning {
    /// The table entry for `cpu`.
    ///
    /// | entry | CPUs | prefetch | threshold | piece | avx512 | rows / lookups ahead | sort | measured |
    /// |---|---|---:|---:|---:|---|---:|---:|---|
    /// | `intel` | Intel family 6 (Core, Xeon) | 4096 | 16,384 | 8,192 | no | 8 / 8 | 131,072 | Sapphire Rapids (2 vCPUs): `docs/results/` |
    /// | `amd-zen` | AMD families 0x17–0x1A (Zen 1–5) | 0 | 65,536 | 16,384 | yes | 8 / 8 | 131,072 | Zen 4: an 8 KiB prefetch cost 25–30% at 16M elements; threads and widths not yet measured here; the embedding settings are every entry's |
    /// | `other` | anything else | 0 | 65,536 | 16,384 | yes | 8 / 8 | 131,072 | not measured: the hardware prefetcher alone, the conservative threshold; the embedding settings are every entry's |
    ///
    /// On the Sapphire Rapids VM (interleaved rounds, medians of per-round ratios): a 2–8 KiB prefetch is
    /// 1.04–1.20× faster at 16M elements (f32 and f64, one and two threads) and no different at 1M; two threads are
    /// 1.32× at 16,384 f32 elements and 1.63× at 65,536 (f64: 1.61× already at 8,192); AVX2 is 1.07–1.08× faster
    /// than AVX-512 for the exact step in cache, 1.09–1.17× for Fast. Against PyTorch in the same run, AVX2 gave
    /// 1.24 ns/element for f64 in cache where AVX-512 gave 1.34, and 0.34 against 0.37 for f32
    /// (`docs/results/vs-torch-*.json`). For embedding steps (`calibrate --embedding`: 32 configurations —
    /// D = 64 and 128, 16,384 and 262,144 lookups, Zipf(1.05) and uniform ids, both accumulators, one and two
    /// threads), prefetching 8 rows ahead and, inside a row's lookups, 8 lookups ahead was a median 1.10× faster
    /// than the earlier 24 rows ahead with none inside a row (0.89–1.31×; 1.20–1.26× on the Zipf rows of 262,144
    /// lookups at D = 128), and the best or within a few percent of the best of six variants in most
    /// configurations (`docs/results/embedding-prefetch-intel-spr.txt`). Since the gradient rows are prefetched
    /// as one stream in grouped order across rows, 8 / 8 was 2.5% faster again (median of 32 workloads, up to 13% at
    /// D = 64: `docs/results/embedding-stream-ab-intel-spr.txt`), and 4 / 4, 16 / 16, 8 / 16 and 16 / 8 were
    /// within 1% of it (geometric means over 32 configurations), 8 / 0 14% and 0 / 0 18% slower
    /// (`docs/results/embedding-prefetch-stream-intel-spr.txt`): a choice this flat is made once for every CPU,
    /// and the Zen 4 run that lost to FBGEMM with the unmeasured 24 / 0 (no gradient row prefetched beyond a row's
    /// first two) now gets it too; `calibrate --embedding` prints what another CPU would pick. The grouping of the
    /// lookups (keys, sort and runs) on two threads, each step after reading twice
    /// the largest cache, was slower than on the calling thread at 65,536 uniform lookups and below (0.34× at
    /// 16,384, 0.73× at 65,536: waking the helper costs more than half of each phase saves) and faster from
    /// 131,072 (1.25×; 1.38× at 262,144, 1.97× at 1,048,576: `calibrate --sort`,
    /// `docs/results/embedding-sort-intel-spr.txt`; when only the sort's passes ran on the threads, 1.00× at
    /// 131,072 and 1.15× at 262,144 had set 262,144). What it measures — waking a helper costs more than half
    /// of a short phase saves — is not particular to one CPU, so every entry takes it (`calibrate --sort` prints
    /// another CPU's pick).
    pub fn for_cpu(cpu: &Cpu) -> Tuning {
        // Only the dense settings differ per CPU; the embedding ones, like the linger, are every entry's.
        let (name, prefetch, parallel_threshold, min_piece, avx512) = match (cpu.vendor, cpu.family)
        {
            (Vendor::Intel, 6) => ("intel", 4096, 1 << 14, 1 << 13, false),
            (Vendor::Amd, 0x17..=0x1A) => ("amd-zen", 0, PARALLEL_THRESHOLD, 1 << 14, true),
            _ => ("other", 0, PARALLEL_THRESHOLD, 1 << 14, true),
        };
        Tuning {
            prefetch,
            parallel_threshold,
            min_piece,
            avx512,
            rows_ahead: EMBEDDING_AHEAD.0,
            lookups_ahead: EMBEDDING_AHEAD.1,
            sort_threshold: SORT,
            linger: LINGER_US,
            source: TuningSource::Table(name),
        }
    }

    /// How many f32 elements one element of `T` counts as in [`Tuning::parallel_threshold`] and
    /// [`Tuning::min_piece`]: 1 for f32, 4 for f64 (an exact f64 element costs 3.4–3.7 times an f32 one in cache,
    /// `docs/results/calibrate-intel-spr.txt`).
    pub fn weight<T: adagrad_kernels::Float>() -> usize {
        if size_of::<T>() == 8 { 4 } else { 1 }
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

    /// The largest [`Tuning::rows_ahead`] and [`Tuning::lookups_ahead`].
    pub const MAX_AHEAD: usize = 4096;

    /// The largest [`Tuning::linger`]: 100 ms.
    pub const MAX_LINGER: usize = 100_000;

    /// These values with overrides in `ADAGRAD_TUNE`'s syntax: comma-separated `key=value` pairs, keys
    /// `prefetch` (bytes, 0 = none), `threshold` and `piece` (elements), `avx512` (0 or 1), `rows_ahead` and
    /// `lookups_ahead` (0 = none), `sort` (lookups), `linger` (microseconds), values decimal integers.
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
                    "{item:?} is not key=value (keys: {KEYS})"
                )));
            };
            let (key, value) = (key.trim(), value.trim());
            let n: usize = value.parse().map_err(|_| {
                Error::InvalidTune(format!(
                    "{key}={value:?}: not a non-negative decimal integer"
                ))
            })?;
            match key {
                "prefetch" => self.prefetch = n,
                "threshold" => self.parallel_threshold = n,
                "piece" => self.min_piece = n,
                "avx512" if n <= 1 => self.avx512 = n == 1,
                "rows_ahead" => self.rows_ahead = n,
                "lookups_ahead" => self.lookups_ahead = n,
                "sort" => self.sort_threshold = n,
                "linger" => self.linger = n,
                "avx512" => {
                    return Err(Error::InvalidTune(format!("avx512={n}: 0 or 1")));
                }
                _ => {
                    return Err(Error::InvalidTune(format!(
                        "unknown key {key:?} (keys: {KEYS})"
                    )));
                }
            }
        }
        // The limits (prefetch distance, piece size) are the ones a configured tuning must respect.
        self.validate()?;
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
        for (key, n, max) in [
            ("rows_ahead", self.rows_ahead, Tuning::MAX_AHEAD),
            ("lookups_ahead", self.lookups_ahead, Tuning::MAX_AHEAD),
            ("linger", self.linger, Tuning::MAX_LINGER),
        ] {
            if n > max {
                return Err(Error::InvalidTune(format!("{key}={n}: at most {max}")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(vendor: Vendor, family: u32) -> Cpu {
        Cpu {
            vendor,
            family,
            model: 1,
        }
    }

    #[test]
    fn the_table_keys_on_vendor_and_family() {
        let intel = Tuning::for_cpu(&cpu(Vendor::Intel, 6));
        assert_eq!(
            (
                intel.prefetch,
                intel.parallel_threshold,
                intel.min_piece,
                intel.avx512
            ),
            (4096, 16_384, 8192, false)
        );
        assert_eq!((intel.rows_ahead, intel.lookups_ahead), (8, 8));
        assert_eq!(intel.sort_threshold, 131_072);
        assert_eq!(intel.source, TuningSource::Table("intel"));
        for family in [0x17, 0x19, 0x1A] {
            let amd = Tuning::for_cpu(&cpu(Vendor::Amd, family));
            assert_eq!(
                (
                    amd.prefetch,
                    amd.parallel_threshold,
                    amd.min_piece,
                    amd.avx512
                ),
                (0, 65_536, 16_384, true)
            );
            assert_eq!((amd.rows_ahead, amd.lookups_ahead), (8, 8));
            assert_eq!(amd.sort_threshold, 131_072);
            assert_eq!(amd.source, TuningSource::Table("amd-zen"));
        }
        for other in [
            cpu(Vendor::Amd, 0x16),
            cpu(Vendor::Amd, 0x1B),
            cpu(Vendor::Intel, 0xF),
            cpu(Vendor::Other, 6),
        ] {
            let t = Tuning::for_cpu(&other);
            assert_eq!(t.source, TuningSource::Table("other"), "{other}");
            assert_eq!(
                (t.prefetch, t.parallel_threshold, t.avx512),
                (0, 65_536, true)
            );
            assert_eq!((t.rows_ahead, t.lookups_ahead), (8, 8));
            assert_eq!(t.sort_threshold, 131_072);
        }
    }

    #[test]
    fn overrides_mark_their_source_and_display_round_trips() {
        let t = Tuning::for_cpu(&cpu(Vendor::Intel, 6))
            .with_overrides("prefetch=0")
            .unwrap();
        assert_eq!(t.source, TuningSource::Env("intel"));
        assert_eq!(
            t.to_string(),
            "prefetch=0,threshold=16384,piece=8192,avx512=0,rows_ahead=8,lookups_ahead=8,sort=131072,linger=200 (table entry \"intel\" with ADAGRAD_TUNE)"
        );
        // The displayed settings parse back to the same values.
        let spec = t.to_string();
        let spec = spec.split(' ').next().unwrap();
        let back = Tuning::for_cpu(&cpu(Vendor::Amd, 0x19))
            .with_overrides(spec)
            .unwrap();
        assert_eq!(
            Tuning {
                source: t.source,
                ..back
            },
            t
        );
        assert_eq!(TuningSource::Config.to_string(), "Config::tuning");
        assert_eq!(
            TuningSource::Table("other").to_string(),
            "table entry \"other\""
        );
    }

    #[test]
    fn limits_are_checked() {
        let base = Tuning::for_cpu(&cpu(Vendor::Other, 0));
        assert!(base.validate().is_ok());
        assert!(
            Tuning {
                prefetch: Kernels::MAX_PREFETCH,
                ..base
            }
            .validate()
            .is_ok()
        );
        assert!(
            Tuning {
                prefetch: Kernels::MAX_PREFETCH + 1,
                ..base
            }
            .validate()
            .is_err()
        );
        assert!(
            Tuning {
                min_piece: 0,
                ..base
            }
            .validate()
            .is_err()
        );
        assert!(base.with_overrides("prefetch=1048576").is_ok());
        assert!(base.with_overrides("prefetch=1048577").is_err());
        assert!(base.with_overrides("avx512=0").is_ok_and(|t| !t.avx512));
        for key in ["rows_ahead", "lookups_ahead"] {
            let max = base
                .with_overrides(&format!("{key}={}", Tuning::MAX_AHEAD))
                .unwrap();
            assert_eq!(
                (max.rows_ahead, max.lookups_ahead),
                if key == "rows_ahead" {
                    (Tuning::MAX_AHEAD, base.lookups_ahead)
                } else {
                    (base.rows_ahead, Tuning::MAX_AHEAD)
                }
            );
            let over = base.with_overrides(&format!("{key}={}", Tuning::MAX_AHEAD + 1));
            assert!(
                matches!(&over, Err(Error::InvalidTune(m)) if m.starts_with(key) && m.contains("at most 4096")),
                "{over:?}"
            );
        }
        assert!(
            matches!(base.with_overrides("avx512=2"), Err(Error::InvalidTune(m)) if m.contains("0 or 1"))
        );
        assert!(
            matches!(base.with_overrides("piece=0"), Err(Error::InvalidTune(m)) if m.contains("at least 1"))
        );
        assert!(
            matches!(base.with_overrides("bogus=1"), Err(Error::InvalidTune(m)) if m.contains("unknown key"))
        );
        assert_eq!(Tuning::weight::<f32>(), 1);
        assert_eq!(Tuning::weight::<f64>(), 4);
    }
}
