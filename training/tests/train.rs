//! The training step on a tiny model: EMA, gradient flow, falling loss without collapse, and
//! exact resumption. Synthetic log-mel clips (moving tones over noise), so no shared data is needed.

use std::sync::Arc;

use audio_jepa_training::config::LossKind;
use audio_jepa_training::config::PatchInit;
use audio_jepa_training::config::Precision;
use audio_jepa_training::config::TrainConfig;
use audio_jepa_training::features::ClipFeatures;
use audio_jepa_training::jepa::{Jepa, MaskTensors};
use audio_jepa_training::loader::{fixed_batch, make_batch, Corpus, Loader};
use audio_jepa_training::train::Trainer;
use candle_core::{DType, Device, Tensor};

mod common;
use common::{max_diff, synthetic_clips, tiny_config};

#[test]
fn ema_update_moves_the_target_toward_the_context() {
    let cfg = tiny_config(10);
    let enc = cfg.model.encoder_config().unwrap();
    let jepa = Jepa::new(&enc, &cfg.predictor, &Device::Cpu, 0, PatchInit::Normal).unwrap();
    let (name, ctx) = jepa
        .trainable_vars()
        .into_iter()
        .find(|(n, _)| n == "context.norm.bias")
        .unwrap();
    let target = jepa
        .target_vars()
        .into_iter()
        .find(|(n, _)| n == "norm.bias")
        .unwrap()
        .1;
    assert_eq!(name, "context.norm.bias");
    // target = 0 (initial copy), context set to 1: after m = 0.75, target = 0.25.
    ctx.set(&ctx.as_tensor().ones_like().unwrap()).unwrap();
    jepa.ema_update(0.75).unwrap();
    let v: Vec<f32> = target.as_tensor().to_vec1().unwrap();
    assert!(v.iter().all(|&x| (x - 0.25).abs() < 1e-7), "{v:?}");
    jepa.ema_update(0.75).unwrap();
    let v: Vec<f32> = target.as_tensor().to_vec1().unwrap();
    assert!(v.iter().all(|&x| (x - 0.4375).abs() < 1e-7), "{v:?}");
}

/// Batch 0 of `clips` as the step's patch tensor and masks.
fn first_batch(clips: &Corpus, cfg: &TrainConfig) -> (Tensor, MaskTensors) {
    let batch = make_batch(clips, cfg, 0);
    let patches = Tensor::from_slice(
        &batch.patches,
        (batch.batch, batch.n_patches, 256),
        &Device::Cpu,
    )
    .unwrap();
    (
        patches,
        MaskTensors::new(&batch.masks, &Device::Cpu).unwrap(),
    )
}

/// The loss and every trainable gradient, flattened in `trainable_vars` order; both f32 (the
/// masters' dtype) whatever the compute precision.
fn loss_and_grads(jepa: &Jepa, patches: &Tensor, masks: &MaskTensors) -> (f32, Vec<f32>) {
    let loss = jepa.loss(patches, masks, LossKind::Mse).unwrap();
    assert_eq!(loss.dtype(), DType::F32);
    let grads = loss.backward().unwrap();
    let mut all = Vec::new();
    for (name, var) in jepa.trainable_vars() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        assert_eq!(g.dtype(), DType::F32, "{name}");
        all.extend(g.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }
    (loss.to_scalar::<f32>().unwrap(), all)
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| (x * y) as f64).sum();
    let norm = |g: &[f32]| g.iter().map(|x| (x * x) as f64).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

#[test]
fn gradients_reach_context_and_predictor_but_not_target() {
    let cfg = tiny_config(10);
    let enc = cfg.model.encoder_config().unwrap();
    let jepa = Jepa::new(&enc, &cfg.predictor, &Device::Cpu, 0, PatchInit::Normal).unwrap();
    let clips = Corpus::new(synthetic_clips(4), &cfg);
    let (patches, masks) = first_batch(&clips, &cfg);
    let loss = jepa.loss(&patches, &masks, LossKind::Mse).unwrap();
    let grads = loss.backward().unwrap();
    for (name, var) in jepa.trainable_vars() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let norm: f32 = g.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert!(norm.is_finite(), "{name}");
    }
    let some_nonzero = jepa.trainable_vars().iter().any(|(n, v)| {
        n.starts_with("context.blocks")
            && grads
                .get(v.as_tensor())
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 0.0
    });
    assert!(some_nonzero, "the context encoder's blocks get gradient");
    for (name, var) in jepa.target_vars() {
        assert!(
            grads.get(var.as_tensor()).is_none(),
            "target parameter {name} got a gradient"
        );
    }
}

/// Mixed precision (`[optim] precision = "bf16"`): on the same parameters and batch, the bf16
/// loss is within bf16 rounding of the f32 one, the gradients reach the f32 masters as f32 and
/// point the same way, and a bf16 run learns.
#[test]
fn bf16_mixed_precision_matches_f32_and_learns() {
    let cfg = tiny_config(10);
    let enc = cfg.model.encoder_config().unwrap();
    let mut jepa = Jepa::new(&enc, &cfg.predictor, &Device::Cpu, 0, PatchInit::Xavier).unwrap();
    let clips = Corpus::new(synthetic_clips(4), &cfg);
    let (patches, masks) = first_batch(&clips, &cfg);
    let (l32, g32) = loss_and_grads(&jepa, &patches, &masks);
    jepa.set_compute_dtype(DType::BF16).unwrap();
    let (l16, g16) = loss_and_grads(&jepa, &patches, &masks);
    let rel = ((l16 - l32) / l32).abs();
    let cosine = cosine(&g32, &g16);
    eprintln!(
        "loss f32 {l32:.6} bf16 {l16:.6} (rel {rel:.2e}); gradient cosine 1 - {:.2e}",
        1.0 - cosine
    );
    // Not silently f32: bf16 rounding must show.
    assert!(l16 != l32 && cosine < 1.0 - 1e-7, "bf16 made no difference");
    assert!(rel < 0.02, "bf16 loss {l16} vs f32 {l32}");
    assert!(cosine > 0.98, "gradient cosine {cosine}");
    for (name, var) in jepa.trainable_vars() {
        assert_eq!(var.as_tensor().dtype(), DType::F32, "{name} master");
    }
    assert!(jepa.set_compute_dtype(DType::F16).is_err());

    let steps = 60;
    let mut cfg = tiny_config(steps);
    cfg.optim.precision = Precision::Bf16;
    let clips = Corpus::new(synthetic_clips(16), &cfg);
    let mut trainer = Trainer::new(cfg.clone(), &Device::Cpu).unwrap();
    let losses: Vec<f64> = (0..steps)
        .map(|s| {
            trainer
                .train_step(&make_batch(&clips, &cfg, s))
                .unwrap()
                .loss
        })
        .collect();
    let first: f64 = losses[..10].iter().sum::<f64>() / 10.0;
    let last: f64 = losses[losses.len() - 10..].iter().sum::<f64>() / 10.0;
    eprintln!("bf16 run: loss {first:.4} -> {last:.4}");
    assert!(
        last < 0.9 * first,
        "bf16 loss did not fall: {first} -> {last}"
    );
}

/// `precision = "bf16"` on a CPU with AVX-512 BF16: f32 tensors with the fused linear layers'
/// products in bf16 (`engine::gemm_bf16`). Its gradients point where f32's do, and a run tracks
/// the f32 run of the same seed step by step (rounding, not a different function).
#[test]
fn cpu_bf16_products_track_the_f32_run() {
    let steps = 40;
    let cfg = tiny_config(steps);
    let mut bf16_cfg = cfg.clone();
    bf16_cfg.optim.precision = Precision::Bf16;
    let bf16 = Trainer::new(bf16_cfg.clone(), &Device::Cpu).unwrap();
    if !bf16.cpu_bf16_products() {
        assert!(!audio_jepa::model::fused::bf16_available());
        assert_eq!(
            bf16.jepa.compute_dtype(),
            DType::F32,
            "f32 where bf16 does not pay"
        );
        eprintln!("skipped: this CPU lacks AVX-512 BF16 (bf16 runs in f32 here)");
        return;
    }
    assert_eq!(bf16.jepa.compute_dtype(), DType::F32, "tensors stay f32");

    // One step's gradients, both ways, from the same weights and batch.
    let clips = Corpus::new(synthetic_clips(16), &cfg);
    let (patches, masks) = first_batch(&clips, &cfg);
    let flat = |on: bool| {
        audio_jepa::model::fused::with_bf16_products(on, || {
            loss_and_grads(&bf16.jepa, &patches, &masks)
        })
    };
    let ((l32, g32), (l16, g16)) = (flat(false), flat(true));
    let cosine = cosine(&g32, &g16);
    eprintln!(
        "step 0: loss f32 {l32} bf16 {l16}; gradient cosine 1 - {:.2e}",
        1.0 - cosine
    );
    assert!(l16 != l32, "bf16 products made no difference");
    assert!(((l16 - l32) / l32).abs() < 1e-2, "loss {l16} vs {l32}");
    assert!(cosine > 0.999, "gradient cosine {cosine}");

    let run = |cfg: &TrainConfig| -> Vec<f64> {
        let mut t = Trainer::new(cfg.clone(), &Device::Cpu).unwrap();
        (0..steps)
            .map(|s| t.train_step(&make_batch(&clips, cfg, s)).unwrap().loss)
            .collect()
    };
    let (a, b) = (run(&cfg), run(&bf16_cfg));
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| ((x - y) / x).abs())
        .fold(0f64, f64::max);
    eprintln!(
        "{steps} steps: loss f32 {:.4} -> {:.4}, bf16 {:.4} -> {:.4}; worst step {worst:.2e}",
        a[0],
        a[steps as usize - 1],
        b[0],
        b[steps as usize - 1]
    );
    assert!(worst < 0.05, "bf16 left the f32 curve by {worst}");
    assert!(b[steps as usize - 1] < 0.9 * b[0], "bf16 loss did not fall");
}

#[test]
fn a_tiny_model_learns_without_collapse() {
    let steps = 300;
    let cfg = tiny_config(steps);
    let clips = Arc::new(Corpus::new(synthetic_clips(32), &cfg));
    let mut trainer = Trainer::new(cfg.clone(), &Device::Cpu).unwrap();
    let (fixed, n) = fixed_batch(&clips, &cfg, 8);
    let fixed = Tensor::from_vec(fixed, (n, 64, 256), &Device::Cpu).unwrap();
    let rank0 = trainer.collapse(&fixed).unwrap();
    let loader = Loader::start(clips, Arc::new(cfg), 0);
    let mut losses = Vec::new();
    for s in 0..steps {
        let b = loader.get(s).unwrap();
        losses.push(trainer.train_step(&b).unwrap().loss);
    }
    let first: f64 = losses[..20].iter().sum::<f64>() / 20.0;
    let last: f64 = losses[losses.len() - 20..].iter().sum::<f64>() / 20.0;
    let rank = trainer.collapse(&fixed).unwrap();
    eprintln!(
        "loss {first:.4} -> {last:.4}; rank_tokens {:.2} -> {:.2}, spread {:.3} -> {:.3}",
        rank0.rank_tokens, rank.rank_tokens, rank0.spread, rank.spread
    );
    assert!(last < 0.8 * first, "loss did not fall: {first} -> {last}");
    assert!(
        rank.rank_tokens > 2.0 && rank.spread > 1e-2,
        "collapsed: {rank:?}"
    );
}

#[test]
fn a_resumed_run_equals_an_uninterrupted_one() {
    let cfg = tiny_config(8);
    let clips = Corpus::new(synthetic_clips(8), &cfg);
    let dir = tempfile::tempdir().unwrap();

    let mut straight = Trainer::new(cfg.clone(), &Device::Cpu).unwrap();
    for s in 0..8 {
        straight.train_step(&make_batch(&clips, &cfg, s)).unwrap();
    }

    let mut first = Trainer::new(cfg.clone(), &Device::Cpu).unwrap();
    for s in 0..4 {
        first.train_step(&make_batch(&clips, &cfg, s)).unwrap();
    }
    first.save(dir.path()).unwrap();
    drop(first);
    let mut resumed = Trainer::resume(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(resumed.step, 4);
    for s in 4..8 {
        resumed.train_step(&make_batch(&clips, &cfg, s)).unwrap();
    }
    let a = straight.jepa.tensors();
    let b = resumed.jepa.tensors();
    assert_eq!(a.len(), b.len());
    for (k, ta) in &a {
        let diff = max_diff(ta, &b[k]);
        assert!(diff <= 1e-6, "{k} differs by {diff}");
    }
}

#[test]
fn a_damaged_checkpoint_is_a_clear_error() {
    let cfg = tiny_config(2);
    let dir = tempfile::tempdir().unwrap();
    let t = Trainer::new(cfg, &Device::Cpu).unwrap();
    t.save(dir.path()).unwrap();
    let path = dir.path().join("checkpoint.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = Trainer::resume(dir.path(), &Device::Cpu)
        .err()
        .expect("must fail")
        .to_string();
    assert!(err.contains("checkpoint.safetensors"), "{err}");
}

/// Short clips (spoken digits in a long crop) and clips padded with digital silence (ESC-50):
/// duration sampling trims the silence and fills crops end to end, so no crop frame is padding,
/// and clips are drawn in proportion to their sound; the old clip sampling pads.
#[test]
fn duration_sampling_fills_crops_with_sound() {
    let mut cfg = tiny_config(4);
    cfg.data.sampling = audio_jepa_training::config::Sampling::Duration;
    let floor = cfg.frontend.log_floor.ln();
    let n_mels = 128;
    // 3 short clips of 20 frames of sound between 30 frames of digital silence; 1 long clip.
    let mut clips = Vec::new();
    for i in 0..3 {
        let data: Vec<f32> = (0..80 * n_mels)
            .map(|j| {
                let t = j / n_mels;
                if (30..50).contains(&t) {
                    -2.0 + i as f32
                } else {
                    floor
                }
            })
            .collect();
        clips.push(ClipFeatures {
            path: format!("short{i}").into(),
            n_frames: 80,
            data: data.into(),
        });
    }
    let long: Vec<f32> = (0..600 * n_mels).map(|j| ((j % 7) as f32) - 3.0).collect();
    clips.push(ClipFeatures {
        path: "long".into(),
        n_frames: 600,
        data: long.into(),
    });
    let corpus = Corpus::new(clips, &cfg);
    assert_eq!(corpus.spans[..3], [(30, 50); 3]);
    assert_eq!(corpus.spans[3], (0, 600));
    assert_eq!(corpus.active_frames(), 660);
    let norm_floor = (floor - cfg.frontend.norm_mean) / (2.0 * cfg.frontend.norm_std);
    let padded = |b: &audio_jepa_training::loader::Batch| {
        b.patches
            .iter()
            .filter(|&&v| (v - norm_floor).abs() < 1e-6)
            .count()
    };
    for s in 0..20 {
        let b = make_batch(&corpus, &cfg, s);
        assert_eq!(padded(&b), 0, "step {s}: padding in a crop");
    }
    cfg.data.sampling = audio_jepa_training::config::Sampling::Clip;
    let b = make_batch(&corpus, &cfg, 0);
    assert!(padded(&b) > 0, "clip sampling pads short clips");
}

/// Tile sampling (the default, as the PyTorch reference draws): every crop is one clip's sound
/// alone, a short clip repeated with itself, never padding and never a stranger's sound; sources
/// get their weights' share of the crops.
#[test]
fn tile_sampling_keeps_each_crop_to_one_clip_and_sources_to_their_weights() {
    let mut cfg = tiny_config(40);
    assert_eq!(
        cfg.data.sampling,
        audio_jepa_training::config::Sampling::Tile
    );
    cfg.data.gain_jitter_db = 0.0;
    let floor = cfg.frontend.log_floor.ln();
    let n_mels = 128;
    // Source 0: three short clips (20 frames of sound between digital silence), each its own
    // level; source 1: one long clip. A crop is 128 frames.
    let clip = |level: f32, frames: usize, sound: std::ops::Range<usize>| {
        let data: Vec<f32> = (0..frames * n_mels)
            .map(|j| {
                if sound.contains(&(j / n_mels)) {
                    level
                } else {
                    floor
                }
            })
            .collect();
        ClipFeatures {
            path: format!("level{level}").into(),
            n_frames: frames,
            data: data.into(),
        }
    };
    let clips = vec![
        clip(-3.0, 80, 30..50),
        clip(-2.0, 80, 30..50),
        clip(-1.0, 80, 30..50),
        clip(1.0, 600, 0..600),
    ];
    let norm = |v: f32| (v - cfg.frontend.norm_mean) / (2.0 * cfg.frontend.norm_std);
    let corpus = Corpus::with_sources(clips, vec![0, 0, 0, 1], &[0.9, 0.1], &cfg);
    let (mut from_short, mut total) = (0usize, 0usize);
    for s in 0..40 {
        let b = make_batch(&corpus, &cfg, s);
        for crop in b.patches.chunks(b.patches.len() / b.batch) {
            let first = crop[0];
            assert!(
                crop.iter().all(|&v| v == first),
                "step {s}: a crop mixes clips or padding"
            );
            assert!(
                [-3.0, -2.0, -1.0, 1.0]
                    .iter()
                    .any(|&l| (norm(l) - first).abs() < 1e-6),
                "step {s}: {first} is no clip's level (padding?)"
            );
            from_short += usize::from((norm(1.0) - first).abs() > 1e-6);
            total += 1;
        }
    }
    let share = from_short as f64 / total as f64;
    assert!(
        (0.84..=0.96).contains(&share),
        "short-clip source drew {share:.3} of {total} crops, weight 0.9"
    );
}

/// A wall-clock horizon: the schedules follow elapsed time, end exactly at the horizon, and the
/// step count no longer matters.
#[test]
fn a_wall_clock_horizon_drives_the_schedules() {
    let mut cfg = tiny_config(1_000_000);
    cfg.optim.minutes = Some(2.0);
    cfg.optim.start_lr = 0.0;
    cfg.validate().unwrap();
    assert_eq!(cfg.progress(5, 60.0), 0.5);
    assert_eq!(cfg.progress(999_999, 30.0), 0.25);
    assert_eq!(cfg.progress(1, 500.0), 1.0);
    let t = Trainer::new(cfg.clone(), &Device::Cpu).unwrap();
    let (lr, _, m) = t.schedules_at(1.0);
    assert!((lr - cfg.optim.final_lr).abs() < 1e-15 && m == cfg.optim.ema.1);
    let (lr, _, _) = t.schedules_at(cfg.optim.warmup_frac);
    assert!((lr - cfg.optim.lr).abs() < 1e-12, "{lr}");
    cfg.optim.minutes = Some(-1.0);
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("optim.minutes"), "{err}");
}

/// A tiny run trained for 3 steps and saved in a temporary folder: what `--init` starts from.
fn saved_run() -> (TrainConfig, Corpus, tempfile::TempDir, Trainer) {
    let cfg = tiny_config(8);
    let clips = Corpus::new(synthetic_clips(8), &cfg);
    let dir = tempfile::tempdir().unwrap();
    let mut first = Trainer::new(cfg.clone(), &Device::Cpu).unwrap();
    for s in 0..3 {
        first.train_step(&make_batch(&clips, &cfg, s)).unwrap();
    }
    first.save(dir.path()).unwrap();
    (cfg, clips, dir, first)
}

/// `pretrain --init ENCODER`: context and target take the encoder's weights, the predictor
/// keeps its own initialisation; an encoder of another shape is refused.
#[test]
fn a_run_can_start_from_an_encoder_alone() {
    let (cfg, clips, dir, first) = saved_run();
    let file = dir.path().join("context_encoder.safetensors");
    let encoder = audio_jepa::model::checkpoint::load_encoder(&file, &Device::Cpu).unwrap();

    let mut second_cfg = cfg.clone();
    second_cfg.run.seed = 7;
    let mut second = Trainer::new(second_cfg, &Device::Cpu).unwrap();
    let fresh = second.jepa.tensors();
    second.init_from_encoder(&encoder, &file).unwrap();
    let (a, b) = (first.jepa.tensors(), second.jepa.tensors());
    for (k, tb) in &b {
        if let Some(name) = k.strip_prefix("predictor.") {
            // The predictor keeps its own (seeded) initialisation.
            assert_eq!(max_diff(tb, &fresh[k]), 0.0, "predictor {name} changed");
        } else {
            // Context and target both start from the encoder: the first run's context.
            let name = k.split_once('.').unwrap().1;
            let want = &a[&format!("context.{name}")];
            assert_eq!(max_diff(tb, want), 0.0, "{k} is not the encoder's {name}");
        }
    }
    // It trains on from there.
    second.train_step(&make_batch(&clips, &cfg, 0)).unwrap();

    // An encoder of another shape is refused, naming both shapes.
    let mut deeper = cfg.clone();
    deeper.model.depth = Some(3);
    let mut other = Trainer::new(deeper, &Device::Cpu).unwrap();
    let err = other
        .init_from_encoder(&encoder, &file)
        .expect_err("must fail")
        .to_string();
    assert!(err.contains("must match") && err.contains("deep"), "{err}");
}

#[test]
fn a_frozen_encoder_waits_while_the_predictor_learns() {
    let mut cfg = tiny_config(4);
    cfg.optim.encoder_frozen_frac = 0.5;
    let clips = Corpus::new(synthetic_clips(8), &cfg);
    let mut t = Trainer::new(cfg.clone(), &Device::Cpu).unwrap();
    // Copies: the optimiser updates the variables' storage in place.
    let before: std::collections::HashMap<String, Tensor> = t
        .jepa
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, v.copy().unwrap()))
        .collect();
    let changed = |t: &Trainer, prefix: &str| {
        let now = t.jepa.tensors();
        now.iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .any(|(k, v)| max_diff(v, &before[k]) > 0.0)
    };
    for s in 0..2 {
        t.train_step(&make_batch(&clips, &cfg, s)).unwrap();
    }
    // Steps 0 and 1 (progress 0 and 0.25): the predictor alone moved.
    assert!(changed(&t, "predictor."));
    assert!(
        !changed(&t, "context."),
        "the context encoder moved while frozen"
    );
    assert!(!changed(&t, "target."), "the target moved while frozen");
    for s in 2..4 {
        t.train_step(&make_batch(&clips, &cfg, s)).unwrap();
    }
    assert!(changed(&t, "context.") && changed(&t, "target."));
    cfg.optim.encoder_frozen_frac = 1.0;
    assert!(cfg.validate().is_err());
}

/// `pretrain --init`: a new run takes another run's weights (both encoders and the predictor)
/// but starts its step, optimiser and schedules afresh; a different model shape is refused.
#[test]
fn a_run_can_start_from_another_runs_weights() {
    let (cfg, clips, dir, first) = saved_run();

    let mut second_cfg = cfg.clone();
    second_cfg.run.seed = 7;
    let mut second = Trainer::new(second_cfg, &Device::Cpu).unwrap();
    second.init_from(dir.path()).unwrap();
    assert_eq!(second.step, 0);
    let (a, b) = (first.jepa.tensors(), second.jepa.tensors());
    assert_eq!(a.len(), b.len());
    for (k, ta) in &a {
        assert_eq!(max_diff(ta, &b[k]), 0.0, "{k} was not copied");
    }
    // It trains on from there (fresh optimiser moments).
    second.train_step(&make_batch(&clips, &cfg, 0)).unwrap();

    let mut wider = cfg.clone();
    wider.predictor.embed_dim *= 2;
    let mut other = Trainer::new(wider, &Device::Cpu).unwrap();
    let err = other
        .init_from(dir.path())
        .expect_err("must fail")
        .to_string();
    assert!(err.contains("must match"), "{err}");
}
