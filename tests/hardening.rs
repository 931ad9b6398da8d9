//! Hostile and careless inputs (issue 13): values valid in f64 but not in the parameter type, non-finite
//! gradients created by unscaling, forged step counts, files that are not files or belong to another optimizer,
//! absurd sizes, unreadable environment variables. Every refusal is a typed error that changes nothing.

#[path = "common/files.rs"]
mod files;

use adagrad::{
    Adagrad, CheckpointError, Config, Cpu, Error, NonFinite, Parallelism, StepOutcome, Tuning,
};
use files::{fix_crc, tmpdir};

fn snapshot(opt: &Adagrad<f32>, p: &[f32]) -> (Vec<u32>, Vec<u32>, u64, f64) {
    (
        p.iter().map(|x| x.to_bits()).collect(),
        opt.state()[0].iter().map(|x| x.to_bits()).collect(),
        opt.step_count(),
        opt.lr(),
    )
}

#[test]
fn values_are_validated_as_the_parameter_type_holds_them() {
    let cases: [(&str, Config); 5] = [
        ("lr", Config::default().lr(1e39)),
        ("weight_decay", Config::default().weight_decay(1e39)),
        (
            "initial_accumulator_value",
            Config::default().initial_accumulator_value(1e39),
        ),
        ("eps", Config::default().eps(1e39)),
        ("eps", Config::default().eps(1e-50)),
    ];
    for (field, c) in cases {
        match Adagrad::<f32>::new(c.clone(), &[4]) {
            Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
        // The same values are fine in f64 (1e-50 is a positive eps there).
        assert!(Adagrad::<f64>::new(c, &[4]).is_ok(), "{field} in f64");
    }
    // eps that rounds to 0 is fine when the accumulator starts positive (no 0/0).
    assert!(
        Adagrad::<f32>::new(
            Config::default().eps(1e-50).initial_accumulator_value(0.1),
            &[4]
        )
        .is_ok()
    );
    assert!(Adagrad::<f64>::new(Config::default().eps(1e-330), &[4]).is_err());
    // set_lr: the same rule, and nothing changes on refusal.
    let mut opt = Adagrad::<f32>::new(Config::default(), &[4]).unwrap();
    assert!(matches!(
        opt.set_lr(1e39),
        Err(Error::InvalidConfig { field: "lr", .. })
    ));
    assert_eq!(opt.lr(), 0.01);
}

#[test]
fn a_grad_scale_is_judged_after_rounding() {
    for policy in [NonFinite::Propagate, NonFinite::SkipStep, NonFinite::Error] {
        let mut opt = Adagrad::<f32>::new(Config::default().non_finite(policy), &[3]).unwrap();
        let mut p = vec![1.0f32, 2.0, 3.0];
        let g = [0.5f32, 0.5, 0.5];
        let before = snapshot(&opt, &p);
        for scale in [1e-50, 1e39, 0.0, -1.0, f64::NAN] {
            let r = opt.step_with::<f32, adagrad::NoCopy>(&mut [&mut p], &[&g], None, Some(scale));
            assert!(
                matches!(r, Err(Error::InvalidGradScale(_))),
                "{policy:?} {scale}: {r:?}"
            );
            assert_eq!(snapshot(&opt, &p), before);
        }
        // f64 accepts 1e-50: it is positive there.
        let mut o64 = Adagrad::<f64>::new(Config::default(), &[1]).unwrap();
        let r =
            o64.step_with::<f64, adagrad::NoCopy>(&mut [&mut [1.0]], &[&[0.0]], None, Some(1e-50));
        assert!(r.is_ok());
    }
}

#[test]
fn skip_step_judges_the_unscaled_gradient() {
    for threads in [1, 2] {
        let par = if threads == 1 {
            Parallelism::Sequential
        } else {
            Parallelism::Threads(threads)
        };
        let config = Config::default()
            .non_finite(NonFinite::SkipStep)
            .parallelism(par)
            .parallel_threshold(0);
        let n = 100_000;
        let mut opt = Adagrad::<f32>::new(config.clone(), &[n]).unwrap();
        let mut p = vec![1.0f32; n];
        let mut g = vec![0.25f32; n];
        g[n - 7] = 3e38; // finite; ÷ 0.5 is +∞
        let before = snapshot(&opt, &p);
        let r = opt.step_with::<f32, adagrad::NoCopy>(&mut [&mut p], &[&g], None, Some(0.5));
        assert_eq!(r, Ok(StepOutcome::Skipped { non_finite: 1 }));
        assert_eq!(snapshot(&opt, &p), before);
        // Under Error the same gradient is refused.
        let mut opt = Adagrad::<f32>::new(config.non_finite(NonFinite::Error), &[n]).unwrap();
        let r = opt.step_with::<f32, adagrad::NoCopy>(&mut [&mut p], &[&g], None, Some(0.5));
        assert_eq!(r, Err(Error::NonFiniteGradient { count: 1 }));
        // Without the scale it is finite and applied.
        let r = opt.step_with::<f32, adagrad::NoCopy>(&mut [&mut p], &[&g], None, None);
        assert_eq!(r, Ok(StepOutcome::Applied));
    }
}

/// The non-finite count over many tensors on threads, in chunks as small as 64 elements that start and end
/// inside tensors and span several: every planted NaN and ∞ is counted exactly once, wherever it falls (a
/// tensor's first or last element, a chunk's edge, an empty tensor between), for every thread count.
#[test]
fn non_finite_elements_are_counted_once_across_tensors_and_chunks() {
    let sizes = [1usize, 0, 129, 64, 1000, 0, 3, 5000, 63, 65, 2];
    let mut grads: Vec<Vec<f32>> = sizes.iter().map(|&n| vec![0.5; n]).collect();
    let mut planted = 0;
    for (t, g) in grads.iter_mut().enumerate() {
        let n = g.len();
        for at in [0, 63, 64, n / 2, n.saturating_sub(1)] {
            if at < n && g[at].is_finite() {
                g[at] = if (t + at) % 2 == 0 {
                    f32::NAN
                } else {
                    f32::INFINITY
                };
                planted += 1;
            }
        }
    }
    for threads in [1, 2, 3, 7] {
        let tuning = Tuning {
            parallel_threshold: 0,
            min_piece: 64,
            ..Tuning::for_cpu(&adagrad::Cpu::this())
        };
        let config = Config::default()
            .non_finite(NonFinite::Error)
            .parallelism(Parallelism::Threads(threads))
            .tuning(tuning);
        let mut opt = Adagrad::<f32>::new(config, &sizes).unwrap();
        let mut params: Vec<Vec<f32>> = sizes.iter().map(|&n| vec![1.0; n]).collect();
        let mut ps: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
        let gs: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
        assert_eq!(
            opt.step(&mut ps, &gs),
            Err(Error::NonFiniteGradient { count: planted }),
            "{threads} threads"
        );
        assert!(params.iter().flatten().all(|&x| x == 1.0));
    }
}

/// Sets the step count field of a checkpoint and recomputes the CRC.
fn with_step(mut b: Vec<u8>, step: u64) -> Vec<u8> {
    b[64..72].copy_from_slice(&step.to_le_bytes());
    fix_crc(&mut b);
    b
}

#[test]
fn a_step_count_that_cannot_advance_is_refused() {
    let mut opt = Adagrad::<f32>::new(Config::default(), &[2]).unwrap();
    let mut p = vec![1.0f32; 2];
    opt.step_flat(&mut p, &[0.5, 0.5]).unwrap();
    let bytes = opt.to_checkpoint_bytes();
    let mut fresh = Adagrad::<f32>::new(Config::default(), &[2]).unwrap();
    let r = fresh.load_bytes(&with_step(bytes.clone(), u64::MAX));
    assert!(
        matches!(
            r,
            Err(Error::Checkpoint(CheckpointError::BadField {
                field: "step count",
                ..
            }))
        ),
        "{r:?}"
    );
    assert_eq!(fresh.step_count(), 0);
    // One below: it loads, one step advances to the maximum, the next is a typed error that changes nothing.
    fresh.load_bytes(&with_step(bytes, u64::MAX - 1)).unwrap();
    fresh.step_flat(&mut p, &[0.5, 0.5]).unwrap();
    assert_eq!(fresh.step_count(), u64::MAX);
    let before = snapshot(&fresh, &p);
    assert_eq!(
        fresh.step_flat(&mut p, &[0.5, 0.5]),
        Err(Error::StepCountOverflow)
    );
    assert_eq!(snapshot(&fresh, &p), before);
}

#[cfg(unix)]
#[test]
fn load_refuses_what_is_not_a_regular_file_without_blocking() {
    let tmp = tmpdir("hard");
    let dir = tmp.path().to_path_buf();
    let fifo = dir.join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    let mut opt = Adagrad::<f32>::new(Config::default(), &[4]).unwrap();
    let mut paths = vec![dir.clone(), "/dev/zero".into(), "/dev/null".into()];
    if made {
        paths.push(fifo); // no writer: opening it for reading would block forever
    } else {
        println!("mkfifo unavailable: the FIFO case is not run");
    }
    for path in paths {
        if !path.exists() {
            continue;
        }
        let t = std::time::Instant::now();
        let r = opt.load(&path);
        assert!(
            matches!(r, Err(Error::Checkpoint(CheckpointError::NotAFile { .. }))),
            "{}: {r:?}",
            path.display()
        );
        assert!(t.elapsed().as_secs() < 5);
        let msg = r.unwrap_err().to_string();
        assert!(
            msg.contains("is not a regular file; nothing was read"),
            "{msg}"
        );
    }
    tmp.close().unwrap();
}

#[test]
fn a_larger_file_says_what_differs() {
    let tmp = tmpdir("big");
    let dir = tmp.path().to_path_buf();
    let path = dir.join("ckpt");
    let mut small = Adagrad::<f32>::new(Config::default(), &[10, 3]).unwrap();
    let before = small.state().concat();
    // An f64 optimizer of the same shape: twice the bytes.
    Adagrad::<f64>::new(Config::default(), &[10, 3])
        .unwrap()
        .save(&path)
        .unwrap();
    let r = small.load(&path);
    assert!(
        matches!(
            r,
            Err(Error::Checkpoint(CheckpointError::DtypeMismatch {
                file: 8,
                expected: 4
            }))
        ),
        "{r:?}"
    );
    // Other tensor lengths, more tensors: each said as such.
    for (lengths, want) in [
        (
            &[10usize, 300][..],
            CheckpointError::TensorLength {
                tensor: 1,
                file: 300,
                expected: 3,
            },
        ),
        (
            &[10, 3, 1][..],
            CheckpointError::TensorCount {
                file: 3,
                expected: 2,
            },
        ),
    ] {
        Adagrad::<f32>::new(Config::default(), lengths)
            .unwrap()
            .save(&path)
            .unwrap();
        assert_eq!(
            small.load(&path),
            Err(Error::Checkpoint(want)),
            "{lengths:?}"
        );
    }
    // An invalid element size in a larger file is not reported as a dtype: the header's next disagreement is.
    let mut bytes = Adagrad::<f32>::new(Config::default(), &[10, 300])
        .unwrap()
        .to_checkpoint_bytes();
    bytes[12] = 7;
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(
        small.load(&path),
        Err(Error::Checkpoint(CheckpointError::TensorLength {
            tensor: 1,
            file: 300,
            expected: 3
        }))
    );
    // Garbage that is merely long.
    std::fs::write(&path, vec![7u8; 100_000]).unwrap();
    let r = small.load(&path);
    assert!(
        matches!(
            r,
            Err(Error::Checkpoint(CheckpointError::TrailingBytes { .. }))
        ),
        "{r:?}"
    );
    assert_eq!(small.state().concat(), before);
    tmp.close().unwrap();
}

#[test]
fn absurd_sizes_are_typed_errors() {
    for lengths in [
        vec![usize::MAX],
        vec![1 << 40],
        vec![3, usize::MAX / 2],
        vec![1 << 62],
    ] {
        let r = Adagrad::<f32>::new(Config::default(), &lengths);
        assert!(matches!(r, Err(Error::Alloc { .. })), "{lengths:?}: {r:?}");
        let r = Adagrad::<f64>::new(Config::default(), &lengths);
        assert!(matches!(r, Err(Error::Alloc { .. })), "{lengths:?}: {r:?}");
    }
    assert!(adagrad::AlignedBuf::<f64>::filled(usize::MAX / 4, 0.0).is_err());
}

#[test]
fn tune_overrides_parse_strictly() {
    let base = Tuning::for_cpu(&Cpu::this());
    let t = base
        .with_overrides(" prefetch = 0 , threshold=5,piece=3,avx512=1")
        .unwrap();
    assert_eq!(
        (t.prefetch, t.parallel_threshold, t.min_piece, t.avx512),
        (0, 5, 3, true)
    );
    assert_eq!(base.with_overrides("").unwrap().prefetch, base.prefetch);
    for bad in [
        "prefetch",
        "prefetch=-1",
        "prefetch=1e3",
        "prefetch=2000000",
        "piece=0",
        "avx512=2",
        "threads=4",
        "prefetch=99999999999999999999999",
    ] {
        assert!(
            matches!(base.with_overrides(bad), Err(Error::InvalidTune(_))),
            "{bad}"
        );
    }
    // A configured tuning is checked the same way.
    let bad = Tuning {
        min_piece: 0,
        ..base
    };
    assert!(matches!(
        Adagrad::<f32>::new(Config::default().tuning(bad), &[1]),
        Err(Error::InvalidTune(_))
    ));
}

/// `ADAGRAD_ISA` and `ADAGRAD_TUNE` that are not UTF-8, unknown or invalid are errors (run in a child process:
/// the environment is process-wide).
#[cfg(unix)]
#[test]
fn unreadable_environment_variables_are_errors() {
    use std::os::unix::ffi::OsStrExt;
    let run = |var: &str, value: &std::ffi::OsStr| {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "env_child", "--nocapture", "--test-threads=1"])
            .env("ADAGRAD_TEST_ENV_CHILD", "1")
            .env(var, value)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let not_utf8 = std::ffi::OsStr::from_bytes(b"avx\xff2");
    assert!(run("ADAGRAD_ISA", not_utf8).contains("error: unknown ISA"));
    // Config::isa(Some(..)) ignores ADAGRAD_ISA, valid or not.
    for bad in [not_utf8, "avx3".as_ref()] {
        let out = run("ADAGRAD_ISA", bad);
        assert!(
            out.contains("error: unknown ISA") && out.contains("forced path: scalar"),
            "{out}"
        );
    }
    assert!(run("ADAGRAD_TUNE", not_utf8).contains("error: invalid tuning"));
    assert!(run("ADAGRAD_TUNE", "prefetch=x".as_ref()).contains("error: invalid tuning"));
    let ok = run("ADAGRAD_TUNE", "prefetch=128,threshold=7".as_ref());
    assert!(
        ok.contains("tuning: prefetch=128,threshold=7,") && ok.contains("with ADAGRAD_TUNE"),
        "{ok}"
    );
    // An absurd RAYON_NUM_THREADS (the default `Parallelism::Global` follows it) is refused, nothing started.
    let absurd = run("RAYON_NUM_THREADS", "1000000000".as_ref());
    assert!(
        absurd.contains("error: 1000000000 threads (RAYON_NUM_THREADS): at most 1024"),
        "{absurd}"
    );
    assert!(absurd.contains("threads running: 2"), "{absurd}");
    let ok = run("RAYON_NUM_THREADS", "3".as_ref());
    assert!(ok.contains("threads: 3"), "{ok}");
    // 0 (or junk) means what rayon makes of it: one thread per CPU.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    for unset in ["0", "many"] {
        let out = run("RAYON_NUM_THREADS", unset.as_ref());
        assert!(
            out.contains(&format!("threads: {cpus}\n")),
            "{unset}: {out}"
        );
    }
    // Set but blank: the table entry, unmodified (not "with ADAGRAD_TUNE").
    let blank = run("ADAGRAD_TUNE", " \t ".as_ref());
    assert!(
        blank.contains("tuning: ") && !blank.contains("ADAGRAD_TUNE") && !blank.contains("error"),
        "{blank}"
    );
}

/// The child side of `unreadable_environment_variables_are_errors`.
#[test]
fn env_child() {
    if std::env::var_os("ADAGRAD_TEST_ENV_CHILD").is_none() {
        return;
    }
    match Adagrad::<f32>::new(Config::default(), &[3]) {
        Ok(opt) => println!("tuning: {}, threads: {}", opt.tuning(), opt.threads()),
        Err(e) => println!("error: {e}"),
    }
    // A path named in the configuration: `ADAGRAD_ISA` is not read at all.
    match Adagrad::<f32>::new(Config::default().isa(adagrad::Isa::Scalar), &[3]) {
        Ok(opt) => println!("forced path: {}", opt.isa().name()),
        Err(e) => println!("forced path error: {e}"),
    }
    println!("threads running: {}", threads_running());
}

/// Threads of this process (Linux's `/proc/self/status`; 0 elsewhere).
fn threads_running() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Thread counts above `MAX_THREADS` are refused before any thread starts, for the dense optimizer, the
/// functional executor and the embedding optimizer; `MAX_THREADS` itself is the bound.
#[test]
fn absurd_thread_counts_are_refused_before_anything_starts() {
    use adagrad::embedding::{EmbeddingAdagrad, TableOptions};
    use adagrad::{Error, Executor, MAX_THREADS, Parallelism};
    for n in [MAX_THREADS + 1, 1 << 20, 1_000_000_000, usize::MAX] {
        let config = Config::default().parallelism(Parallelism::Threads(n));
        let refused = |r: Result<(), Error>| {
            assert!(
                matches!(r, Err(Error::TooManyThreads { threads, from: "Parallelism::Threads" }) if threads == n),
                "{n}: {r:?}"
            )
        };
        refused(Adagrad::<f32>::new(config.clone(), &[3]).map(drop));
        refused(Executor::new(&config).map(drop));
        refused(
            EmbeddingAdagrad::<f32>::new(config.clone(), 4, 2, TableOptions::default()).map(drop),
        );
        let msg = Executor::new(&config).unwrap_err().to_string();
        assert_eq!(
            msg,
            format!("{n} threads (Parallelism::Threads): at most 1024 are allowed")
        );
    }
    assert_eq!(MAX_THREADS, 1024);
}
