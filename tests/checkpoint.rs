//! Checkpoints: exact resume, every load error typed and harmless, no panic on any bytes, and a crash while
//! saving never leaves a loadable partial file.

#[path = "common/files.rs"]
mod files;

use adagrad::{Adagrad, CheckpointError, Config, EpsPlacement, Error, Float, MAGIC};
use files::{fix_crc, tmpdir};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const SIZES: [usize; 4] = [1000, 0, 37, 4097];

fn grads<T: Float>(step: usize) -> Vec<Vec<T>> {
    SIZES
        .iter()
        .map(|&n| {
            (0..n)
                .map(|i| T::from_f64(((i * 13 + step * 7) % 101) as f64 * 1e-2 - 0.5))
                .collect()
        })
        .collect()
}

fn run<T: Float>(opt: &mut Adagrad<T>, params: &mut [Vec<T>], from: usize, to: usize) {
    for k in from..to {
        let g = grads::<T>(k);
        let mut ps: Vec<&mut [T]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
        let gs: Vec<&[T]> = g.iter().map(|x| x.as_slice()).collect();
        opt.step(&mut ps, &gs).unwrap();
    }
}

fn config() -> Config {
    Config::default()
        .lr(0.05)
        .lr_decay(0.01)
        .weight_decay(1e-3)
        .initial_accumulator_value(0.1)
}

fn resume_is_exact<T: Float + bytemuck::Pod>() {
    let dir = tmpdir(&format!("test-resume-{}", T::NAME));
    let path = dir.path().join("opt.ckpt");
    let init = || {
        SIZES
            .iter()
            .map(|&n| vec![T::from_f64(0.3); n])
            .collect::<Vec<_>>()
    };
    // N + M straight steps, with a learning-rate change after N.
    let (n, m) = (5, 7);
    let mut straight = Adagrad::<T>::new(config(), &SIZES).unwrap();
    let mut p_straight = init();
    run(&mut straight, &mut p_straight, 0, n);
    straight.set_lr(0.02).unwrap();
    run(&mut straight, &mut p_straight, n, n + m);
    // N steps, lr change, save; a fresh optimizer (other hyperparameters) loads and takes M more.
    let mut first = Adagrad::<T>::new(config(), &SIZES).unwrap();
    let mut p = init();
    run(&mut first, &mut p, 0, n);
    first.set_lr(0.02).unwrap();
    first.save(&path).unwrap();
    drop(first);
    let mut resumed = Adagrad::<T>::new(Config::optax(), &SIZES).unwrap();
    resumed.load(&path).unwrap();
    assert_eq!(resumed.step_count(), n as u64);
    assert_eq!(resumed.lr(), 0.02);
    assert_eq!(resumed.config().eps_placement, EpsPlacement::Outside);
    run(&mut resumed, &mut p, n, n + m);
    assert_eq!(
        format!("{:?}", resumed.state()),
        format!("{:?}", straight.state())
    );
    let same = |a: Vec<T>, b: Vec<T>| {
        a.len() == b.len()
            && a.iter()
                .zip(&b)
                .all(|(x, y)| x.to_f64().to_bits() == y.to_f64().to_bits())
    };
    assert!(
        same(resumed.state().concat(), straight.state().concat())
            && same(p.concat(), p_straight.concat())
    );
    dir.close().unwrap();
}

#[test]
fn resume_is_exact_f32() {
    resume_is_exact::<f32>();
}

#[test]
fn resume_is_exact_f64() {
    resume_is_exact::<f64>();
}

fn trained() -> Adagrad<f32> {
    let mut opt = Adagrad::<f32>::new(config(), &SIZES).unwrap();
    let mut p: Vec<Vec<f32>> = SIZES.iter().map(|&n| vec![0.3; n]).collect();
    run(&mut opt, &mut p, 0, 3);
    opt
}

fn load_err(bytes: &[u8]) -> CheckpointError {
    let mut fresh = Adagrad::<f32>::new(Config::default(), &SIZES).unwrap();
    let before = format!("{:?}{:?}", fresh.state(), fresh.config());
    let e = match fresh.load_bytes(bytes) {
        Err(Error::Checkpoint(e)) => e,
        other => panic!("expected a checkpoint error, got {other:?}"),
    };
    assert_eq!(
        format!("{:?}{:?}", fresh.state(), fresh.config()),
        before,
        "a failed load changed the optimizer"
    );
    assert_eq!(fresh.step_count(), 0);
    e
}

#[test]
fn every_load_error_is_typed_and_changes_nothing() {
    let good = trained().to_checkpoint_bytes();
    let mut b = good.clone();
    b[0] = b'X';
    assert_eq!(load_err(&b), CheckpointError::BadMagic);
    let mut b = good.clone();
    b[8..12].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(load_err(&b), CheckpointError::UnsupportedVersion(2));
    let mut b = good.clone();
    let last = b.len() - 10;
    b[last] ^= 1;
    assert!(matches!(load_err(&b), CheckpointError::Checksum { .. }));
    assert!(matches!(
        load_err(&good[..good.len() - 1]),
        CheckpointError::Truncated { .. }
    ));
    let mut long = good.clone();
    long.push(0);
    assert!(matches!(
        load_err(&long),
        CheckpointError::TrailingBytes { .. }
    ));
    // A length claiming far more data than the file holds: refused before any allocation.
    let mut b = good.clone();
    b[80..88].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    fix_crc(&mut b);
    assert!(matches!(load_err(&b), CheckpointError::Truncated { .. }));
    let mut b = good.clone();
    b[72..80].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        load_err(&b),
        CheckpointError::Truncated {
            needed: u64::MAX,
            ..
        }
    ));
    // Shorter than a header and its checksum (84 bytes): the magic decides between the two errors, and the
    // error says exactly what was needed.
    let mut short = good[..40].to_vec();
    assert_eq!(
        load_err(&short),
        CheckpointError::Truncated {
            needed: 84,
            available: 40
        }
    );
    short[0] = b'X';
    assert_eq!(load_err(&short), CheckpointError::BadMagic);
    // Exactly a header and its checksum, claiming no tensors: read through (no truncation), then refused as
    // another model.
    let mut empty = good[..84].to_vec();
    empty[72..80].copy_from_slice(&0u64.to_le_bytes());
    fix_crc(&mut empty);
    assert_eq!(
        load_err(&empty),
        CheckpointError::TensorCount {
            file: 0,
            expected: 4
        }
    );
    // A tensor count whose length table alone overruns the file: the bytes needed for it and the checksum.
    let mut b = good.clone();
    b[72..80].copy_from_slice(&100_000u64.to_le_bytes());
    assert_eq!(
        load_err(&b),
        CheckpointError::Truncated {
            needed: 80 + 8 * 100_000 + 4,
            available: good.len() as u64
        }
    );
    // Well-formed, but not this model.
    let other = Adagrad::<f32>::new(Config::default(), &[1000, 0, 37])
        .unwrap()
        .to_checkpoint_bytes();
    assert_eq!(
        load_err(&other),
        CheckpointError::TensorCount {
            file: 3,
            expected: 4
        }
    );
    let other = Adagrad::<f32>::new(Config::default(), &[1000, 0, 38, 4097])
        .unwrap()
        .to_checkpoint_bytes();
    assert_eq!(
        load_err(&other),
        CheckpointError::TensorLength {
            tensor: 2,
            file: 38,
            expected: 37
        }
    );
    let f64s = Adagrad::<f64>::new(Config::default(), &SIZES)
        .unwrap()
        .to_checkpoint_bytes();
    assert_eq!(
        load_err(&f64s),
        CheckpointError::DtypeMismatch {
            file: 8,
            expected: 4
        }
    );
    let mut b = good.clone();
    b[13] = 7;
    fix_crc(&mut b);
    assert!(matches!(
        load_err(&b),
        CheckpointError::BadField {
            field: "eps placement",
            ..
        }
    ));
    let mut b = good.clone();
    b[24..32].copy_from_slice(&f64::NAN.to_le_bytes());
    fix_crc(&mut b);
    assert!(matches!(
        load_err(&b),
        CheckpointError::BadField {
            field: "hyperparameters",
            ..
        }
    ));
    // Files: missing, and larger than this model's checkpoint (not read).
    let dir = tmpdir("test-errors");
    let mut opt = Adagrad::<f32>::new(Config::default(), &SIZES).unwrap();
    assert!(matches!(
        opt.load(dir.path().join("missing")),
        Err(Error::Checkpoint(CheckpointError::Io { .. }))
    ));
    std::fs::write(dir.path().join("big"), vec![0u8; good.len() + 1]).unwrap();
    assert!(matches!(
        opt.load(dir.path().join("big")),
        Err(Error::Checkpoint(CheckpointError::TrailingBytes { .. }))
    ));
    assert!(opt.save(dir.path().join("no-such-dir").join("x")).is_err());
    dir.close().unwrap();
    assert_eq!(&good[..8], &MAGIC);
}

#[test]
fn no_bytes_make_the_loader_panic() {
    let good = trained().to_checkpoint_bytes();
    // Every prefix (truncation anywhere).
    for n in 0..good.len() {
        load_err(&good[..n]);
    }
    // Random single-byte and multi-byte corruptions; random garbage.
    let mut rng = StdRng::seed_from_u64(1);
    for _ in 0..3000 {
        let mut b = good.clone();
        for _ in 0..rng.gen_range(1..4) {
            let i = rng.gen_range(0..b.len());
            b[i] = rng.r#gen();
        }
        if b != good {
            load_err(&b);
        }
        let garbage: Vec<u8> = (0..rng.gen_range(0..200)).map(|_| rng.r#gen()).collect();
        load_err(&garbage);
    }
}

/// Saving over an existing checkpoint while being killed: the path always loads (old or new content, each
/// internally consistent), and a leftover temporary file never loads as valid unless it is complete.
#[test]
fn crash_while_saving_never_corrupts() {
    let dir = tmpdir("test-crash");
    let path = dir.path().join("opt.ckpt");
    let opt = Adagrad::<f32>::new(Config::default(), &CRASH_SIZES).unwrap();
    opt.save(&path).unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let mut steps_seen = 0;
    for round in 0..6 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child_saver",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("ADAGRAD_CRASH_CHILD", &path)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the child is in its save loop (however slow the machine), then kill it at a random moment.
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("saving") {
            line.clear();
            if std::io::BufRead::read_line(&mut out, &mut line).unwrap() == 0 {
                panic!("round {round}: the child ended before saving");
            }
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(20..400)));
        child.kill().unwrap();
        child.wait().unwrap();
        let mut loaded = Adagrad::<f32>::new(Config::default(), &CRASH_SIZES).unwrap();
        loaded
            .load(&path)
            .unwrap_or_else(|e| panic!("round {round}: the checkpoint does not load: {e}"));
        assert_consistent(&loaded);
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let p = entry.unwrap().path();
            if p == path {
                continue;
            }
            let mut o = Adagrad::<f32>::new(Config::default(), &CRASH_SIZES).unwrap();
            if let Ok(bytes) = std::fs::read(&p)
                && o.load_bytes(&bytes).is_ok()
            {
                assert_consistent(&o);
            }
            std::fs::remove_file(&p).unwrap();
        }
        eprintln!("round {round}: checkpoint at step {}", loaded.step_count());
        steps_seen = steps_seen.max(loaded.step_count());
    }
    // Saves really happened (the kills did not all land before the first one completed).
    assert!(steps_seen > 0, "no save completed in any round");
    dir.close().unwrap();
}

const CRASH_SIZES: [usize; 2] = [3_000_000, 1_000_001];

/// Gradients of 1 from a zero accumulator: after k steps every accumulator is exactly k.
fn assert_consistent(opt: &Adagrad<f32>) {
    let k = opt.step_count() as f32;
    assert!(
        opt.state().iter().flatten().all(|&s| s == k),
        "state does not match step {k}"
    );
}

/// The child side of the crash test: steps and saves in a loop until killed (10 s at most).
#[test]
fn crash_child_saver() {
    let Some(path) = std::env::var_os("ADAGRAD_CRASH_CHILD") else {
        return;
    };
    let path = Path::new(&path);
    let mut opt = Adagrad::<f32>::new(Config::default(), &CRASH_SIZES).unwrap();
    opt.load(path).unwrap();
    let mut p: Vec<Vec<f32>> = CRASH_SIZES.iter().map(|&n| vec![0.0; n]).collect();
    let g: Vec<Vec<f32>> = CRASH_SIZES.iter().map(|&n| vec![1.0; n]).collect();
    let t0 = Instant::now();
    println!("saving");
    std::io::Write::flush(&mut std::io::stdout()).unwrap();
    while t0.elapsed() < Duration::from_secs(10) {
        let mut ps: Vec<&mut [f32]> = p.iter_mut().map(|x| x.as_mut_slice()).collect();
        let gs: Vec<&[f32]> = g.iter().map(|x| x.as_slice()).collect();
        opt.step(&mut ps, &gs).unwrap();
        opt.save(path).unwrap();
    }
}

/// A bare file name (no directory part) saves into the current directory: the temporary file and the directory
/// sync use `.`, not an empty path.
#[test]
fn save_to_a_bare_file_name_uses_the_current_directory() {
    let name = format!("adagrad-bare-{}.ckpt", std::process::id());
    let mut opt = adagrad::Adagrad::<f32>::new(adagrad::Config::default(), &[3]).unwrap();
    let mut p = vec![1.0f32; 3];
    opt.step_flat(&mut p, &[0.5, 0.25, 0.125]).unwrap();
    let saved = opt.save(&name);
    let mut back = adagrad::Adagrad::<f32>::new(adagrad::Config::default(), &[3]).unwrap();
    let loaded = back.load(&name);
    let _ = std::fs::remove_file(&name);
    saved.unwrap();
    loaded.unwrap();
    assert_eq!(back.state(), opt.state());
}

/// Every flag at its highest value (ε inside, maximize, Fast, the last non-finite policy) survives a round trip.
#[test]
fn flags_at_their_highest_values_round_trip() {
    use adagrad::{EpsPlacement, NonFinite, Precision};
    let config = Config::default()
        .eps_placement(EpsPlacement::Inside)
        .maximize(true)
        .precision(Precision::Fast)
        .non_finite(NonFinite::Error);
    let src = Adagrad::<f32>::new(config.clone(), &SIZES).unwrap();
    let mut dst = Adagrad::<f32>::new(Config::default(), &SIZES).unwrap();
    dst.load_bytes(&src.to_checkpoint_bytes()).unwrap();
    assert_eq!(format!("{:?}", dst.config()), format!("{config:?}"));
}

/// The reserved bytes (17..24) must be zero: a file with any of them set is refused as such, with the checksum
/// made to match, and the optimizer is unchanged.
#[test]
fn reserved_bytes_must_be_zero() {
    let good = trained().to_checkpoint_bytes();
    assert!(good[17..24].iter().all(|&x| x == 0));
    for at in 17..24 {
        let mut b = good.clone();
        b[at] = 1;
        fix_crc(&mut b);
        assert_eq!(
            load_err(&b),
            CheckpointError::BadField {
                field: "reserved bytes",
                detail: "not zero".into()
            },
            "byte {at}"
        );
    }
}
