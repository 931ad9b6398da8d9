//! Embedding checkpoints: a run resumed from one continues bit for bit; every corruption, truncation or mismatch
//! is refused with nothing changed.

#[path = "common/files.rs"]
mod files;

use adagrad::embedding::{Accumulator, EmbeddingAdagrad, Lookups, Table, TableOptions};
use adagrad::kernels::rowwise::{DecayMode, Rounding};
use adagrad::{Adagrad, CheckpointError, Config, EMBEDDING_MAGIC, Error, bf16, f16};
use files::fix_crc;

const ROWS: usize = 40;
const DIM: usize = 6;

fn batch(step: u64) -> (Vec<u32>, Vec<f32>) {
    let ids: Vec<u32> = (0..25)
        .map(|i| ((i * 7 + step * 3) % ROWS as u64) as u32)
        .collect();
    let grads = (0..ids.len() * DIM)
        .map(|i| ((i as f32 + step as f32) * 0.37).sin())
        .collect();
    (ids, grads)
}

fn config() -> Config {
    Config::default()
        .lr(0.1)
        .lr_decay(0.01)
        .weight_decay(0.01)
        .eps(1e-8)
}

fn resumed_run_is_identical<W: Table>(options: TableOptions, from: fn(f32) -> W) {
    let mut table: Vec<W> = (0..ROWS * DIM)
        .map(|i| from((i as f32 * 0.1).cos()))
        .collect();
    let mut opt = EmbeddingAdagrad::<W>::new(config(), ROWS, DIM, options).unwrap();
    for t in 1..=3 {
        let (ids, g) = batch(t);
        opt.step(
            &mut table,
            Lookups::Rows {
                ids: &ids,
                grads: &g,
            },
        )
        .unwrap();
    }
    let path = std::env::temp_dir().join(format!(
        "adagrad-emb-{}-{}.ckpt",
        W::NAME,
        std::process::id()
    ));
    opt.save(&path).unwrap();
    // A fresh optimizer with other hyperparameters and options takes the file's.
    let other = TableOptions {
        rounding: Rounding::NearestEven,
        decay: DecayMode::L2,
        ..options
    };
    let mut resumed = EmbeddingAdagrad::<W>::new(Config::default(), ROWS, DIM, other).unwrap();
    resumed.load(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(resumed.options(), opt.options());
    assert_eq!(resumed.config().lr_decay, 0.01);
    let mut table2 = table.clone();
    for t in 4..=6 {
        let (ids, g) = batch(t);
        opt.step(
            &mut table,
            Lookups::Rows {
                ids: &ids,
                grads: &g,
            },
        )
        .unwrap();
        resumed
            .step(
                &mut table2,
                Lookups::Rows {
                    ids: &ids,
                    grads: &g,
                },
            )
            .unwrap();
    }
    assert_eq!(
        bytemuck::cast_slice::<W, u8>(&table),
        bytemuck::cast_slice::<W, u8>(&table2)
    );
    assert_eq!(opt.state(), resumed.state());
    assert_eq!(resumed.step_count(), 6);
}

#[test]
fn resumed_runs_continue_bit_for_bit() {
    let sr = TableOptions::default()
        .rounding(Rounding::Stochastic { seed: 77 })
        .decay(DecayMode::Decoupled);
    resumed_run_is_identical::<f32>(TableOptions::default(), |x| x);
    resumed_run_is_identical::<f32>(sr.accumulator(Accumulator::ElementWise), |x| x);
    resumed_run_is_identical::<bf16>(sr, bf16::from_f32);
    resumed_run_is_identical::<f16>(sr.accumulator(Accumulator::ElementWise), f16::from_f32);
}

#[test]
fn corrupt_and_mismatched_checkpoints_change_nothing() {
    let mut table = vec![0.5f32; ROWS * DIM];
    let mut src =
        EmbeddingAdagrad::<f32>::new(config(), ROWS, DIM, TableOptions::default()).unwrap();
    let (ids, g) = batch(1);
    src.step(
        &mut table,
        Lookups::Rows {
            ids: &ids,
            grads: &g,
        },
    )
    .unwrap();
    let good = src.to_checkpoint_bytes();
    assert_eq!(good[..8], EMBEDDING_MAGIC);
    let mut dst =
        EmbeddingAdagrad::<f32>::new(Config::default(), ROWS, DIM, TableOptions::default())
            .unwrap();
    let before = (dst.state().to_vec(), dst.step_count(), dst.config().lr);
    let unchanged = |d: &EmbeddingAdagrad<f32>| {
        assert_eq!((d.state().to_vec(), d.step_count(), d.config().lr), before);
    };
    // Every single-byte change is refused (checksum, or a field check ahead of it).
    for i in 0..good.len() {
        let mut b = good.clone();
        b[i] ^= 0x41;
        assert!(dst.load_bytes(&b).is_err(), "byte {i}");
        unchanged(&dst);
    }
    // Truncated, extended, empty.
    for b in [&good[..good.len() - 1], &good[..50], &[][..]] {
        assert!(matches!(
            dst.load_bytes(b),
            Err(Error::Checkpoint(CheckpointError::Truncated { .. }))
        ));
    }
    // Shorter than a header and its checksum (100 bytes): exactly what was needed; a bad magic first.
    for n in [50, 95, 99] {
        assert_eq!(
            dst.load_bytes(&good[..n]),
            Err(Error::Checkpoint(CheckpointError::Truncated {
                needed: 100,
                available: n as u64
            }))
        );
    }
    let mut bad = good[..50].to_vec();
    bad[0] = b'X';
    assert_eq!(
        dst.load_bytes(&bad),
        Err(Error::Checkpoint(CheckpointError::BadMagic))
    );
    // Exactly a header and its checksum: read through to the accumulators it lacks.
    assert!(matches!(
        dst.load_bytes(&good[..100]),
        Err(Error::Checkpoint(CheckpointError::Truncated { needed, available: 100 })) if needed > 100
    ));
    let mut long = good.clone();
    long.push(0);
    assert!(matches!(
        dst.load_bytes(&long),
        Err(Error::Checkpoint(CheckpointError::TrailingBytes { .. }))
    ));
    unchanged(&dst);
    // Another shape, accumulator or table type.
    let mut other =
        EmbeddingAdagrad::<f32>::new(Config::default(), ROWS + 1, DIM, TableOptions::default())
            .unwrap();
    assert!(matches!(
        other.load_bytes(&good),
        Err(Error::Checkpoint(
            CheckpointError::Truncated { .. } | CheckpointError::BadField { .. }
        ))
    ));
    let elem = TableOptions::default().accumulator(Accumulator::ElementWise);
    let mut e = EmbeddingAdagrad::<f32>::new(Config::default(), ROWS, DIM, elem).unwrap();
    let r = e.load_bytes(&good);
    assert!(
        matches!(
            r,
            Err(Error::Checkpoint(CheckpointError::BadField {
                field: "accumulator",
                ..
            }))
        ),
        "{r:?}"
    );
    let mut h = EmbeddingAdagrad::<f16>::new(Config::default(), ROWS, DIM, TableOptions::default())
        .unwrap();
    assert!(matches!(
        h.load_bytes(&good),
        Err(Error::Checkpoint(CheckpointError::BadField {
            field: "table type",
            ..
        }))
    ));
    // A dense checkpoint is not an embedding one, and vice versa.
    let dense = Adagrad::<f32>::new(Config::default(), &[ROWS])
        .unwrap()
        .to_checkpoint_bytes();
    assert!(matches!(
        dst.load_bytes(&dense),
        Err(Error::Checkpoint(CheckpointError::BadMagic))
    ));
    let mut d = Adagrad::<f32>::new(Config::default(), &[ROWS]).unwrap();
    assert!(matches!(
        d.load_bytes(&good),
        Err(Error::Checkpoint(CheckpointError::BadMagic))
    ));
    // A path that is not a file, and a file that is too large for this optimizer, are refused before reading.
    assert!(matches!(
        dst.load(std::env::temp_dir()),
        Err(Error::Checkpoint(CheckpointError::NotAFile { .. }))
    ));
    // A file with a good header and a megabyte more: refused after reading one byte past this optimizer's
    // checkpoint size, saying how long the file is.
    let big = std::env::temp_dir().join(format!("adagrad-emb-big-{}", std::process::id()));
    let mut long = good.clone();
    long.resize(good.len() + (1 << 20), 0);
    std::fs::write(&big, &long).unwrap();
    let r = dst.load(&big);
    std::fs::remove_file(&big).unwrap();
    assert_eq!(
        r,
        Err(Error::Checkpoint(CheckpointError::TrailingBytes {
            expected: good.len() as u64,
            actual: long.len() as u64
        }))
    );
    unchanged(&dst);
    dst.load_bytes(&good).unwrap();
    assert_eq!((dst.state(), dst.step_count()), (src.state(), 1));
}

/// Each table type has its own code in the file (byte 12: 0 f32, 1 bf16, 2 f16), and a checkpoint loads only into
/// an optimizer of its own table type.
#[test]
fn table_types_are_recorded_and_never_mixed() {
    fn bytes<W: Table>() -> Vec<u8> {
        EmbeddingAdagrad::<W>::new(config(), ROWS, DIM, TableOptions::default())
            .unwrap()
            .to_checkpoint_bytes()
    }
    fn load<W: Table>(b: &[u8]) -> Result<(), Error> {
        EmbeddingAdagrad::<W>::new(config(), ROWS, DIM, TableOptions::default())
            .unwrap()
            .load_bytes(b)
    }
    let files = [bytes::<f32>(), bytes::<bf16>(), bytes::<f16>()];
    for (code, file) in files.iter().enumerate() {
        assert_eq!(file[12] as usize, code);
        let loads = [
            load::<f32>(file).is_ok(),
            load::<bf16>(file).is_ok(),
            load::<f16>(file).is_ok(),
        ];
        let expected: Vec<bool> = (0..3).map(|c| c == code).collect();
        assert_eq!(loads.to_vec(), expected, "table code {code}");
    }
}

/// The reserved bytes (20..24) must be zero: a file with any of them set is refused as such even with a matching
/// checksum, and the optimizer is unchanged.
#[test]
fn reserved_bytes_must_be_zero() {
    let good = EmbeddingAdagrad::<f32>::new(config(), ROWS, DIM, TableOptions::default())
        .unwrap()
        .to_checkpoint_bytes();
    assert!(good[20..24].iter().all(|&x| x == 0));
    let mut dst =
        EmbeddingAdagrad::<f32>::new(Config::default(), ROWS, DIM, TableOptions::default())
            .unwrap();
    let before = (dst.state().to_vec(), dst.step_count(), dst.config().lr);
    for at in 20..24 {
        let mut b = good.clone();
        b[at] = 1;
        fix_crc(&mut b);
        assert_eq!(
            dst.load_bytes(&b),
            Err(Error::Checkpoint(CheckpointError::BadField {
                field: "reserved bytes",
                detail: "not zero".into()
            })),
            "byte {at}"
        );
        assert_eq!(
            (dst.state().to_vec(), dst.step_count(), dst.config().lr),
            before
        );
    }
    dst.load_bytes(&good).unwrap();
}
