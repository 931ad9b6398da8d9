//! The user-facing API: configuration, validation, typed errors that change nothing, paths, schedulers.

use adagrad::{Adagrad, Config, EpsPlacement, Error, Isa, IsaError, Parallelism, Precision};
#[path = "../kernels/tests/common/mod.rs"]
mod isa_paths;

#[test]
fn pytorch_defaults_and_presets() {
    let c = Config::default();
    assert_eq!(
        (
            c.lr,
            c.lr_decay,
            c.weight_decay,
            c.initial_accumulator_value,
            c.eps,
            c.maximize
        ),
        (0.01, 0.0, 0.0, 0.0, 1e-10, false)
    );
    assert_eq!(c.eps_placement, EpsPlacement::Outside);
    assert_eq!(c.precision, Precision::Exact);
    let o = Config::optax();
    assert_eq!(
        (o.lr, o.eps, o.initial_accumulator_value, o.eps_placement),
        (0.01, 1e-7, 0.1, EpsPlacement::Inside)
    );
    let k = Config::keras();
    assert_eq!(
        (k.lr, k.eps, k.initial_accumulator_value, k.eps_placement),
        (0.001, 1e-7, 0.1, EpsPlacement::Inside)
    );
    for c in [Config::torch(), Config::optax(), Config::keras()] {
        c.validate().unwrap();
    }
}

#[test]
fn every_field_rejects_negative_nan_and_infinities_by_name() {
    type Set = fn(Config, f64) -> Config;
    let fields: [(&str, Set); 5] = [
        ("lr", Config::lr),
        ("lr_decay", Config::lr_decay),
        ("weight_decay", Config::weight_decay),
        (
            "initial_accumulator_value",
            Config::initial_accumulator_value,
        ),
        ("eps", Config::eps),
    ];
    for (name, set) in fields {
        for bad in [-1.0, -1e-300, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let err = set(Config::default(), bad).validate().unwrap_err();
            match &err {
                Error::InvalidConfig { field, value, .. } => {
                    assert_eq!(*field, name);
                    assert!(value.to_bits() == bad.to_bits());
                }
                other => panic!("{name} = {bad}: {other:?}"),
            }
            assert!(err.to_string().contains(name), "{err}");
            assert!(Adagrad::<f32>::new(set(Config::default(), bad), &[3]).is_err());
        }
        set(Config::default(), 0.5).validate().unwrap();
    }
}

#[test]
fn zero_eps_needs_a_positive_initial_accumulator() {
    let err = Config::default().eps(0.0).validate().unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { field: "eps", .. }));
    assert!(err.to_string().contains("0/0"), "{err}");
    Config::default()
        .eps(0.0)
        .initial_accumulator_value(0.1)
        .validate()
        .unwrap();
}

fn snapshot(opt: &Adagrad<f32>) -> (Vec<Vec<u32>>, u64) {
    (
        opt.state()
            .iter()
            .map(|s| s.iter().map(|x| x.to_bits()).collect())
            .collect(),
        opt.step_count(),
    )
}

#[test]
fn mismatches_are_typed_errors_that_change_nothing() {
    let mut opt = Adagrad::<f32>::new(
        Config::default().initial_accumulator_value(0.25),
        &[4, 0, 3],
    )
    .unwrap();
    let (mut a, mut b, mut c) = (vec![1.0f32; 4], vec![], vec![2.0f32; 3]);
    let (ga, gb, gc) = (vec![0.5f32; 4], vec![], vec![0.5f32; 3]);
    opt.step(&mut [&mut a, &mut b, &mut c], &[&ga, &gb, &gc])
        .unwrap();
    let before = snapshot(&opt);
    let (a0, c0) = (a.clone(), c.clone());

    let e = opt.step(&mut [&mut a, &mut b], &[&ga, &gb]).unwrap_err();
    assert_eq!(
        e,
        Error::TensorCount {
            expected: 3,
            params: 2,
            grads: 2
        }
    );
    let e = opt
        .step(&mut [&mut a, &mut b, &mut c], &[&ga, &gb])
        .unwrap_err();
    assert_eq!(
        e,
        Error::TensorCount {
            expected: 3,
            params: 3,
            grads: 2
        }
    );
    let short = vec![0.5f32; 2];
    let e = opt
        .step(&mut [&mut a, &mut b, &mut c], &[&ga, &gb, &short])
        .unwrap_err();
    assert_eq!(
        e,
        Error::Length {
            tensor: 2,
            expected: 3,
            params: 3,
            grads: 2
        }
    );
    let mut long = vec![1.0f32; 5];
    let e = opt
        .step(&mut [&mut long, &mut b, &mut c], &[&ga, &gb, &gc])
        .unwrap_err();
    assert_eq!(
        e,
        Error::Length {
            tensor: 0,
            expected: 4,
            params: 5,
            grads: 4
        }
    );
    assert!(e.to_string().contains("tensor 0"));
    assert!(opt.step_flat(&mut a, &ga).is_err());
    assert!(opt.set_lr(f64::NAN).is_err());
    assert!(opt.set_lr(-0.1).is_err());

    assert_eq!(snapshot(&opt), before);
    assert_eq!((a, c), (a0, c0));
    assert_eq!(long, vec![1.0f32; 5]);
    assert_eq!(opt.lr(), 0.01);
}

#[test]
fn state_step_count_and_scheduler() {
    let mut opt = Adagrad::<f64>::new(Config::default().lr(1.0), &[1]).unwrap();
    let mut p = [0.0f64];
    opt.step_flat(&mut p, &[2.0]).unwrap();
    let p1 = -(2.0 / (2.0 + 1e-10));
    assert_eq!((p[0], opt.state()[0][0], opt.step_count()), (p1, 4.0, 1));
    opt.set_lr(0.5).unwrap();
    assert_eq!(opt.lr(), 0.5);
    opt.step_flat(&mut p, &[0.0]).unwrap();
    assert_eq!((p[0], opt.step_count()), (p1, 2));
    // G = 4 + 9 = 13, update 0.5 * 3 / (√13 + 1e-10).
    opt.step_flat(&mut p, &[3.0]).unwrap();
    assert_eq!(p[0], p1 - (0.5 * 3.0) / (13f64.sqrt() + 1e-10));
}

#[test]
fn lr_decay_follows_pytorch() {
    // clr_t = lr / (1 + (t - 1) * lr_decay), computed in f64 and rounded once.
    let mut opt = Adagrad::<f32>::new(Config::default().lr(0.3).lr_decay(0.5), &[1]).unwrap();
    for t in 1..=4u64 {
        let want = (0.3 / (1.0 + (t - 1) as f64 * 0.5)) as f32;
        assert_eq!(opt.hyper(t).clr, want);
    }
    let mut p = [1.0f32];
    opt.step_flat(&mut p, &[1.0]).unwrap();
    opt.step_flat(&mut p, &[0.0]).unwrap();
    assert_eq!(p[0], 1.0 - 0.3 / (1.0 + 1e-10f32));
}

#[test]
fn forced_paths_and_the_path_in_use() {
    for isa in Isa::ALL {
        let r = Adagrad::<f32>::new(Config::default().isa(isa), &[10]);
        if isa.is_available() {
            assert_eq!(r.unwrap().isa(), isa);
        } else {
            assert_eq!(r.unwrap_err(), Error::Isa(IsaError::Unavailable(isa)));
        }
    }
    assert_eq!("AVX2".parse::<Isa>().unwrap(), Isa::Avx2);
    let e = "sse9".parse::<Isa>().unwrap_err();
    assert!(
        e.to_string().contains("scalar, portable, avx2, avx512"),
        "{e}"
    );
    assert!(Isa::best().is_available());
}

#[test]
fn every_path_and_parallelism_gives_the_same_bits() {
    // Above every table entry's parallel threshold, so that the parallel runs really split the step.
    let n = 100_003;
    let grads: Vec<Vec<f32>> = (0..5)
        .map(|k| {
            (0..n)
                .map(|i| ((i * 7 + k * 13) % 101) as f32 * 0.01 - 0.5)
                .collect()
        })
        .collect();
    let run = |c: Config| {
        let mut opt = Adagrad::<f32>::new(c.weight_decay(0.01).maximize(true), &[n]).unwrap();
        let mut p: Vec<f32> = (0..n).map(|i| i as f32 * 1e-4).collect();
        for g in &grads {
            opt.step_flat(&mut p, g).unwrap();
        }
        (p, opt.state()[0].to_vec())
    };
    let want = run(Config::default()
        .isa(Isa::Scalar)
        .parallelism(Parallelism::Sequential));
    for isa in isa_paths::paths("api") {
        for par in [
            Parallelism::Sequential,
            Parallelism::Global,
            Parallelism::Threads(3),
        ] {
            let got = run(Config::default().isa(isa).parallelism(par));
            assert!(
                got.0
                    .iter()
                    .zip(&want.0)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{isa}"
            );
            assert!(
                got.1
                    .iter()
                    .zip(&want.1)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{isa}"
            );
        }
    }
}

/// `ADAGRAD_ISA` picks the path; an unknown or unavailable name is an error naming the accepted values. Run in a
/// child process, since the environment is process-wide.
#[test]
fn adagrad_isa_environment_override() {
    let run = |value: &str| {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "env_override_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("ADAGRAD_TEST_ENV_CHILD", "1")
            .env("ADAGRAD_ISA", value)
            .output()
            .unwrap();
        assert!(out.status.success(), "child failed for {value:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(run("scalar").contains("path: scalar"));
    assert!(run("Portable").contains("path: portable"));
    let bogus = run("sse9");
    assert!(
        bogus.contains("error: unknown ISA \"sse9\"")
            && bogus.contains("scalar, portable, avx2, avx512"),
        "{bogus}"
    );
    for isa in [Isa::Avx2, Isa::Avx512] {
        let out = run(isa.name());
        if isa.is_available() {
            assert!(out.contains(&format!("path: {isa}")), "{out}");
        } else {
            assert!(out.contains("not available on this CPU"), "{out}");
        }
    }
}

/// The child side of `adagrad_isa_environment_override`.
#[test]
fn env_override_child() {
    if std::env::var_os("ADAGRAD_TEST_ENV_CHILD").is_none() {
        return;
    }
    match Adagrad::<f32>::new(Config::default(), &[3]) {
        Ok(opt) => println!("path: {}", opt.isa()),
        Err(e) => println!("error: {e}"),
    }
}
