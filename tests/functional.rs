//! The functional step over caller-owned state: the same bits as `Adagrad`, the same validation, nothing
//! written on error.

use adagrad::{
    Adagrad, Config, EpsPlacement, Error, Executor, NonFinite, Parallelism, StepOutcome, bf16,
    functional,
};

fn inputs(sizes: &[usize], steps: usize) -> (Vec<Vec<f32>>, Vec<Vec<Vec<f32>>>) {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let p = sizes
        .iter()
        .map(|&n| (0..n).map(|_| next()).collect())
        .collect();
    let g = (0..steps)
        .map(|_| {
            sizes
                .iter()
                .map(|&n| (0..n).map(|_| next() * 0.1).collect())
                .collect()
        })
        .collect();
    (p, g)
}

#[test]
fn functional_steps_equal_the_optimizer_bit_for_bit() {
    let sizes = [0usize, 5, 70_000, 1, 40_000];
    let (p0, grads) = inputs(&sizes, 4);
    for par in [
        Parallelism::Sequential,
        Parallelism::Threads(2),
        Parallelism::Threads(3),
    ] {
        let config = Config::default()
            .lr(0.05)
            .lr_decay(0.01)
            .weight_decay(0.01)
            .maximize(true)
            .eps_placement(EpsPlacement::Inside)
            .initial_accumulator_value(0.1)
            .parallelism(par.clone());
        let mut opt = Adagrad::<f32>::new(config.clone(), &sizes).unwrap();
        let mut p_opt = p0.clone();
        let exec = Executor::new(&config).unwrap();
        let mut p_fun = p0.clone();
        let mut state: Vec<Vec<f32>> = sizes.iter().map(|&n| vec![0.1; n]).collect();
        for (t, g) in grads.iter().enumerate() {
            let gs: Vec<&[f32]> = g.iter().map(|x| x.as_slice()).collect();
            let mut ps: Vec<&mut [f32]> = p_opt.iter_mut().map(|x| x.as_mut_slice()).collect();
            opt.step(&mut ps, &gs).unwrap();
            let mut ps: Vec<&mut [f32]> = p_fun.iter_mut().map(|x| x.as_mut_slice()).collect();
            let mut ss: Vec<&mut [f32]> = state.iter_mut().map(|x| x.as_mut_slice()).collect();
            let r = functional::step(
                &exec,
                &config,
                t as u64 + 1,
                &mut ps,
                &gs,
                &mut ss,
                None::<&mut [&mut [bf16]]>,
                None,
            );
            assert_eq!(r, Ok(StepOutcome::Applied));
        }
        let bits =
            |v: &[Vec<f32>]| -> Vec<u32> { v.concat().iter().map(|x| x.to_bits()).collect() };
        assert_eq!(bits(&p_opt), bits(&p_fun), "{par:?}: params");
        let s_opt: Vec<Vec<f32>> = opt.state().iter().map(|s| s.to_vec()).collect();
        assert_eq!(bits(&s_opt), bits(&state), "{par:?}: state");
    }
}

#[test]
fn functional_errors_change_nothing() {
    let config = Config::default().non_finite(NonFinite::Error);
    let exec = Executor::new(&config).unwrap();
    let mut p = vec![1.0f32; 4];
    let mut s = vec![0.0f32; 4];
    let mut short = vec![0.0f32; 3];
    let g = [0.5f32; 4];
    let none = None::<&mut [&mut [bf16]]>;
    let cases: Vec<(&str, Result<StepOutcome, Error>)> = vec![
        (
            "t = 0",
            functional::step(
                &exec,
                &config,
                0,
                &mut [&mut p],
                &[&g],
                &mut [&mut s],
                none,
                None,
            ),
        ),
        (
            "state length",
            functional::step(
                &exec,
                &config,
                1,
                &mut [&mut p],
                &[&g],
                &mut [&mut short],
                None::<&mut [&mut [bf16]]>,
                None,
            ),
        ),
        (
            "state count",
            functional::step(
                &exec,
                &config,
                1,
                &mut [&mut p],
                &[&g],
                &mut [],
                None::<&mut [&mut [bf16]]>,
                None,
            ),
        ),
        (
            "config in f32",
            functional::step(
                &exec,
                &config.clone().lr(1e39),
                1,
                &mut [&mut p],
                &[&g],
                &mut [&mut s],
                None::<&mut [&mut [bf16]]>,
                None,
            ),
        ),
        (
            "non-finite",
            functional::step(
                &exec,
                &config,
                1,
                &mut [&mut p],
                &[&[f32::NAN, 0.0, 0.0, 0.0]],
                &mut [&mut s],
                None::<&mut [&mut [bf16]]>,
                None,
            ),
        ),
    ];
    for (what, r) in cases {
        assert!(r.is_err(), "{what}: {r:?}");
        assert_eq!(
            (p.as_slice(), s.as_slice()),
            ([1.0f32; 4].as_slice(), [0.0f32; 4].as_slice()),
            "{what}"
        );
    }
}

#[test]
fn executor_reports_threads_and_no_copy_out_is_ignored() {
    for (par, want) in [
        (Parallelism::Sequential, 1),
        (Parallelism::Threads(1), 1),
        (Parallelism::Threads(3), 3),
    ] {
        let config = Config::default().parallelism(par.clone());
        assert_eq!(Executor::new(&config).unwrap().threads(), want, "{par:?}");
        assert_eq!(
            Adagrad::<f32>::new(config, &[1]).unwrap().threads(),
            want,
            "{par:?}"
        );
    }
    // A "copy-out" in the NoCopy format writes nothing and is not checked: it is the absence of one.
    let mut opt = Adagrad::<f32>::new(Config::default(), &[3]).unwrap();
    let mut p = vec![1.0f32; 3];
    let r = opt.step_with::<f32, adagrad::NoCopy>(
        &mut [&mut p],
        &[&[0.5; 3]],
        Some(&mut [&mut []]),
        None,
    );
    assert_eq!(r, Ok(StepOutcome::Applied));
}
