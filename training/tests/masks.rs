//! Mask rules (I-JEPA multiblock, A-JEPA time-frequency) and the curriculum.

use audio_jepa_training::masks::{
    curriculum_probability, sample_batch, sample_for_step, Curriculum, MaskConfig, MaskKind,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const F: usize = 8;
const T: usize = 16;

fn rc(i: u32) -> (usize, usize) {
    (i as usize % F, i as usize / F)
}

#[test]
fn multiblock_rules_hold() {
    let cfg = MaskConfig::default();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for _ in 0..200 {
        let m = sample_batch(&cfg, MaskKind::RandomBlock, F, T, 16, &mut rng);
        assert_eq!(m.targets.len(), 4);
        assert_eq!(m.context.len(), 16);
        let k = m.context[0].len();
        assert!(k >= cfg.min_keep, "context {k} < min_keep");
        for (b, ctx) in m.context.iter().enumerate() {
            assert_eq!(ctx.len(), k, "contexts are cut to one length");
            assert!(ctx.windows(2).all(|w| w[0] < w[1]), "sorted, no duplicates");
            for tm in &m.targets {
                // Sizes shared per batch; each block a rectangle of the drawn scale and aspect.
                assert_eq!(tm[b].len(), tm[0].len());
                let rows: std::collections::BTreeSet<_> = tm[b].iter().map(|&i| rc(i).0).collect();
                let cols: std::collections::BTreeSet<_> = tm[b].iter().map(|&i| rc(i).1).collect();
                let (h, w) = (rows.len(), cols.len());
                assert_eq!(h * w, tm[b].len(), "a rectangle");
                assert!(h < F && w < T);
                let scale = (h * w) as f64 / (F * T) as f64;
                // Rounding of h and w moves the scale a little outside (0.15, 0.2).
                assert!((0.09..=0.27).contains(&scale), "scale {scale}");
                let aspect = h as f64 / w as f64;
                assert!((0.4..=2.5).contains(&aspect), "aspect {aspect}");
                if m.relaxed == 0 {
                    assert!(
                        ctx.iter().all(|i| !tm[b].contains(i)),
                        "context overlaps a target"
                    );
                }
            }
        }
    }
}

#[test]
fn time_frequency_targets_remove_whole_columns_or_rows() {
    let cfg = MaskConfig::default();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let (mut saw_cols, mut saw_rows) = (false, false);
    for _ in 0..100 {
        let m = sample_batch(&cfg, MaskKind::TimeFrequency, F, T, 8, &mut rng);
        assert_eq!(m.targets.len(), 3);
        for tm in &m.targets {
            for (b, t) in tm.iter().enumerate() {
                let rows: std::collections::BTreeSet<_> = t.iter().map(|&i| rc(i).0).collect();
                let cols: std::collections::BTreeSet<_> = t.iter().map(|&i| rc(i).1).collect();
                assert_eq!(rows.len() * cols.len(), t.len());
                if rows.len() == F {
                    saw_cols = true;
                } else {
                    assert_eq!(cols.len(), T, "neither whole columns nor whole rows");
                    saw_rows = true;
                }
                assert!(m.context[b].iter().all(|i| !t.contains(i)) || m.relaxed > 0);
            }
        }
    }
    assert!(saw_cols && saw_rows);
}

#[test]
fn masks_are_deterministic_under_a_seed() {
    let cfg = MaskConfig::default();
    let a = sample_for_step(&cfg, 10, 100, F, T, 8, &mut ChaCha8Rng::seed_from_u64(7));
    let b = sample_for_step(&cfg, 10, 100, F, T, 8, &mut ChaCha8Rng::seed_from_u64(7));
    let c = sample_for_step(&cfg, 10, 100, F, T, 8, &mut ChaCha8Rng::seed_from_u64(8));
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn curriculum_values() {
    let c0: f64 = 0.01;
    let s = 1000;
    // f(s) = min(1, sqrt(s (1 - c0^2) / S + c0^2))
    assert!((curriculum_probability(Curriculum::Root, c0, 0, s) - 0.01).abs() < 1e-12);
    let half = (0.5 * (1.0 - c0 * c0) + c0 * c0).sqrt();
    assert!((curriculum_probability(Curriculum::Root, c0, 500, s) - half).abs() < 1e-12);
    assert_eq!(curriculum_probability(Curriculum::Root, c0, 1000, s), 1.0);
    assert!((curriculum_probability(Curriculum::Linear, c0, 500, s) - 0.505).abs() < 1e-12);
    assert_eq!(
        curriculum_probability(Curriculum::Constant, 0.5, 900, s),
        0.5
    );
    assert_eq!(curriculum_probability(Curriculum::Inverse, c0, 0, s), 1.0);
    assert!((curriculum_probability(Curriculum::Inverse, c0, 1000, s) - 0.01).abs() < 1e-12);
    // The sampled mix follows the probability.
    let cfg = MaskConfig::default();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let tf = (0..400)
        .filter(|_| {
            sample_for_step(&cfg, 500, 1000, F, T, 1, &mut rng).kind == MaskKind::TimeFrequency
        })
        .count();
    let p = tf as f64 / 400.0;
    assert!((p - half).abs() < 0.08, "sampled {p}, expected {half}");
}

#[test]
fn min_keep_is_enforced_or_relaxed_visibly() {
    // Targets so large that the context cannot keep min_keep patches: the batch says so.
    let cfg = MaskConfig {
        target_scale: (0.45, 0.5),
        min_keep: 100,
        ..MaskConfig::default()
    };
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let m = sample_batch(&cfg, MaskKind::RandomBlock, F, T, 8, &mut rng);
    assert!(m.relaxed > 0);
    assert!(m.context.iter().all(|c| c.len() >= 100));
}
