//! The objective's options against independent computations: several masked views average their
//! single-view losses, multi-layer targets follow data2vec's recipe computed here in plain Rust,
//! the utterance loss adds the pooled regression, and mixing is log-sum-exp in the power domain.

use audio_jepa_training::config::LossKind;
use audio_jepa_training::config::PatchInit;
use audio_jepa_training::jepa::{Jepa, MaskTensors};
use audio_jepa_training::loader::{make_batch, mix_student, Corpus};
use audio_jepa_training::objective::{target_latents, Objective};
use audio_jepa_training::train::Trainer;
use candle_core::{Device, Tensor};
use rand::SeedableRng;

mod common;
use common::{synthetic_clips, tiny_config};

/// A tiny JEPA and one batch of synthetic crops with two independent mask sets.
fn setup(views: usize) -> (Jepa, Tensor, Vec<MaskTensors>) {
    let mut cfg = tiny_config(10);
    cfg.objective.views = views;
    let enc = cfg.model.encoder_config().unwrap();
    let jepa = Jepa::new(&enc, &cfg.predictor, &Device::Cpu, 3, PatchInit::Xavier).unwrap();
    let corpus = Corpus::new(synthetic_clips(6), &cfg);
    let batch = make_batch(&corpus, &cfg, 2);
    assert_eq!(batch.extra_views.len(), views - 1);
    let patches = Tensor::from_slice(
        &batch.patches,
        (batch.batch, batch.n_patches, enc.patch_len()),
        &Device::Cpu,
    )
    .unwrap();
    let masks = std::iter::once(&batch.masks)
        .chain(&batch.extra_views)
        .map(|m| MaskTensors::new(m, &Device::Cpu).unwrap())
        .collect();
    (jepa, patches, masks)
}

fn scalar(t: &Tensor) -> f64 {
    t.to_scalar::<f32>().unwrap() as f64
}

/// Every value of `t`, flattened.
fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

#[test]
fn several_views_average_their_single_view_losses() {
    let (jepa, patches, views) = setup(3);
    let obj = Objective::plain(LossKind::Mse);
    let all = scalar(&jepa.objective_loss(&patches, None, &views, &obj).unwrap());
    let each: Vec<f64> = views
        .iter()
        .map(|v| scalar(&jepa.loss(&patches, v, LossKind::Mse).unwrap()))
        .collect();
    let mean = each.iter().sum::<f64>() / 3.0;
    assert!((all - mean).abs() <= 1e-6 * mean, "{all} vs {each:?}");
    // The views differ, so this is not one loss three times.
    assert!((each[0] - each[1]).abs() > 1e-6, "{each:?}");
}

/// Plain-Rust layer norm of each row of `[rows][d]`, no affine.
fn layer_norm_rows(x: &mut [f32], d: usize) {
    for row in x.chunks_mut(d) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
        for v in row {
            *v = ((*v as f64 - mean) / (var + 1e-5).sqrt()) as f32;
        }
    }
}

#[test]
fn multi_layer_targets_are_data2vecs_average_of_instance_normed_layers() {
    let (jepa, patches, _) = setup(1);
    let layers = jepa.target.forward_layers(&patches, 2).unwrap();
    assert_eq!(layers.len(), 2);
    let (b, n, d) = layers[0].dims3().unwrap();
    let mut avg = vec![0f32; b * n * d];
    for layer in &layers {
        let x = values(layer);
        for bi in 0..b {
            for c in 0..d {
                let at = |k: usize| x[(bi * n + k) * d + c] as f64;
                let mean = (0..n).map(at).sum::<f64>() / n as f64;
                let var = (0..n).map(|k| (at(k) - mean).powi(2)).sum::<f64>() / n as f64;
                for k in 0..n {
                    avg[(bi * n + k) * d + c] +=
                        ((at(k) - mean) / (var + 1e-5).sqrt() / 2.0) as f32;
                }
            }
        }
    }
    layer_norm_rows(&mut avg, d);
    let got = values(&target_latents(&jepa.target, &patches, 2).unwrap());
    let worst = max_abs_diff(&got, &avg);
    assert!(worst < 1e-4, "max difference {worst}");

    // One layer: the last block's output through the final norm (weight 1, bias 0 at
    // initialisation) then layer-normalised again, i.e. the last block's output layer-normed.
    let mut last = values(&jepa.target.forward_layers(&patches, 1).unwrap()[0]);
    layer_norm_rows(&mut last, d);
    let one = values(&jepa.targets(&patches).unwrap());
    let worst = max_abs_diff(&one, &last);
    assert!(worst < 1e-3, "max difference {worst}");
    assert!(jepa.target.forward_layers(&patches, 0).is_err());
    assert!(jepa.target.forward_layers(&patches, 3).is_err());
}

#[test]
fn the_utterance_loss_adds_the_pooled_regression() {
    let (jepa, patches, views) = setup(1);
    let plain = Objective::plain(LossKind::Mse);
    let with = Objective {
        utterance_weight: 0.5,
        ..plain
    };
    let a = scalar(&jepa.objective_loss(&patches, None, &views, &plain).unwrap());
    let b = scalar(&jepa.objective_loss(&patches, None, &views, &with).unwrap());
    let z: Vec<Vec<Vec<f32>>> = jepa
        .context
        .forward(&patches, Some(&views[0].context))
        .unwrap()
        .to_vec3()
        .unwrap();
    let h: Vec<Vec<Vec<f32>>> = jepa.targets(&patches).unwrap().to_vec3().unwrap();
    let mean =
        |x: &Vec<Vec<f32>>, c: usize| x.iter().map(|t| t[c] as f64).sum::<f64>() / x.len() as f64;
    let d = h[0][0].len();
    let mut se = 0.0;
    for (zb, hb) in z.iter().zip(&h) {
        for c in 0..d {
            se += (mean(zb, c) - mean(hb, c)).powi(2);
        }
    }
    let expected = 0.5 * se / (z.len() * d) as f64;
    assert!(expected > 1e-4, "{expected}");
    assert!(
        ((b - a) - expected).abs() < 1e-5 * (1.0 + expected),
        "{b} - {a} vs {expected}"
    );
}

#[test]
fn mixing_adds_power_and_leaves_the_target_input_alone() {
    let mut cfg = tiny_config(10);
    cfg.data.mix_prob = 0.0;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let patches: Vec<f32> = (0..2 * 10).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect();
    assert!(mix_student(&patches, 2, &cfg, &mut rng).is_none());

    // Two identical crops at 0 dB: the power doubles, ln 2 in natural-log energies, which
    // normalisation divides by 2 std.
    cfg.data.mix_prob = 1.0;
    cfg.data.mix_gain_db = (0.0, 0.0);
    let twin: Vec<f32> = patches[..10].repeat(2);
    let mixed = mix_student(&twin, 2, &cfg, &mut rng).unwrap();
    let shift = std::f32::consts::LN_2 / (2.0 * cfg.frontend.norm_std);
    for (m, x) in mixed.iter().zip(&twin) {
        assert!((m - (x + shift)).abs() < 1e-5, "{m} vs {x} + {shift}");
    }

    // At -60 dB another crop barely changes anything, and never lowers the energy.
    cfg.data.mix_gain_db = (-60.0, -60.0);
    let mixed = mix_student(&patches, 2, &cfg, &mut rng).unwrap();
    for (m, x) in mixed.iter().zip(&patches) {
        assert!(*m >= *x - 1e-6 && *m - *x < 1e-3, "{m} vs {x}");
    }
}

/// A full step with every option on: four views, three target layers, the utterance loss and
/// mixing. The loss is finite, the parameters move, and the step is reproducible.
#[test]
fn a_step_with_every_option_trains_and_reproduces() {
    let run = || {
        let mut cfg = tiny_config(10);
        cfg.objective.views = 4;
        cfg.objective.target_layers = 2;
        cfg.objective.utterance_weight = 1.0;
        cfg.data.mix_prob = 1.0;
        let corpus = Corpus::new(synthetic_clips(6), &cfg);
        let mut t = Trainer::new(cfg.clone(), &Device::Cpu).unwrap();
        let before = values(&t.jepa.context_encoder_tensors()["patch_embed.proj.weight"]);
        let mut losses = Vec::new();
        for s in 0..3 {
            let batch = make_batch(&corpus, &cfg, s);
            assert!(batch.student.is_some());
            assert_eq!(batch.extra_views.len(), 3);
            losses.push(t.train_step(&batch).unwrap().loss);
        }
        let after = values(&t.jepa.context_encoder_tensors()["patch_embed.proj.weight"]);
        assert!(before != after);
        losses
    };
    let a = run();
    assert!(a.iter().all(|l| l.is_finite() && *l > 0.0), "{a:?}");
    assert_eq!(a, run());
}
