//! The effective-learning-rate statistics from the optimizers: of the next step's rate, per tensor or table.

use adagrad::embedding::{Accumulator, EmbeddingAdagrad, Lookups, TableOptions};
use adagrad::stats::lr_stats;
use adagrad::{Adagrad, Config, EpsPlacement};

/// Per tensor, with the next step's decayed rate; growing accumulators push the rates down step after step.
#[test]
fn dense_stats_use_the_next_steps_rate_and_shrink() {
    let config = Config::default().lr(0.1).lr_decay(0.5).eps(1e-8);
    let mut opt = Adagrad::<f64>::new(config.clone(), &[3, 2]).unwrap();
    let (mut a, mut b) = (vec![1.0f64; 3], vec![1.0f64; 2]);
    let mut medians = Vec::new();
    for _ in 0..4 {
        opt.step(&mut [&mut a, &mut b], &[&[0.5, 0.1, 0.0], &[1.0, 1.0]])
            .unwrap();
        let stats = opt.lr_stats(0.01).unwrap();
        assert_eq!(stats.len(), 2);
        // Exactly the functional statistics with clr of step count + 1.
        let h = config.hyper::<f64>(opt.step_count() + 1);
        assert_eq!(stats[0], lr_stats(&opt.state()[0], &h, 0.01).unwrap());
        assert_eq!(stats[1], lr_stats(&opt.state()[1], &h, 0.01).unwrap());
        medians.push(stats[1].median);
    }
    assert!(medians.windows(2).all(|w| w[1] < w[0]), "{medians:?}");
    // After 4 steps: step 5's clr = 0.1 / (1 + 4·0.5); √G = √4 = 2 for b's elements.
    assert_eq!(
        opt.lr_stats(0.0).unwrap()[1].max,
        (0.1 / 3.0) / (2.0 + 1e-8)
    );
    // The element that never had a gradient keeps √G = 0: the largest rate, clr / ε.
    assert_eq!(opt.lr_stats(0.0).unwrap()[0].max, (0.1 / 3.0) / 1e-8);
}

/// A table's rates, row-wise and element-wise, with ε inside the root; refusal of a bad threshold changes nothing.
#[test]
fn embedding_stats_per_accumulator() {
    for acc in [Accumulator::RowWise, Accumulator::ElementWise] {
        let config = Config::default()
            .lr(0.05)
            .eps(1e-6)
            .eps_placement(EpsPlacement::Inside);
        let mut opt = EmbeddingAdagrad::<f32>::new(
            config.clone(),
            50,
            4,
            TableOptions::default().accumulator(acc),
        )
        .unwrap();
        let mut table = vec![0.0f32; 200];
        let ids = [3u32, 7, 3];
        opt.step(
            &mut table,
            Lookups::Rows {
                ids: &ids,
                grads: &[0.5f32; 12],
            },
        )
        .unwrap();
        let s = opt.lr_stats(0.05).unwrap();
        let h = config.hyper::<f32>(2);
        assert_eq!(s, lr_stats(opt.state(), &h, 0.05).unwrap());
        let per_row = if acc == Accumulator::RowWise { 1 } else { 4 };
        assert_eq!(s.elements, 50 * per_row);
        // Row 3 (looked up twice: gradient 1.0) fell to lr / √(1 + ε), just below 0.05; row 7 (0.5) to 0.1; the
        // rows never looked up keep lr / √ε = 50.
        assert_eq!(s.below, per_row);
        assert_eq!(opt.lr_stats(0.2).unwrap().below, 2 * per_row);
        assert_eq!(s.max, (0.05f32 / 1e-6f32.sqrt()) as f64);
        assert!(opt.lr_stats(f64::NAN).is_err());
        assert_eq!(opt.step_count(), 1);
    }
}
