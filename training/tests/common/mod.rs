//! What several test files share: a tiny training config and synthetic log-mel clips.
#![allow(dead_code)]

use audio_jepa_training::config::TrainConfig;
use audio_jepa_training::features::ClipFeatures;
use candle_core::Tensor;

/// The tiny model and predictor the tests train (also written to a file for `ajepa-train`).
pub const TINY_TOML: &str = r#"
[model]
preset = "tiny"
[predictor]
embed_dim = 32
depth = 1
num_heads = 2
[optim]
batch_size = 8
lr = 1e-3
[data]
crop_frames = 128
[run]
seed = 5
rank_clips = 8
"#;

pub fn tiny_config(steps: u64) -> TrainConfig {
    let mut cfg = TrainConfig::from_toml_str(TINY_TOML, std::path::Path::new("tiny.toml")).unwrap();
    cfg.optim.steps = steps;
    cfg
}

/// Clips with structure a predictor can learn: a few harmonic tones that glide over time.
pub fn synthetic_clips(n: usize) -> Vec<ClipFeatures> {
    let mut state = 99u32;
    let mut rnd = move || {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (state >> 8) as f32 / (1u32 << 24) as f32
    };
    (0..n)
        .map(|c| {
            let frames = 200;
            let f0 = 10.0 + 40.0 * rnd();
            let slope = (rnd() - 0.5) * 0.2;
            let mut data = Vec::with_capacity(frames * 128);
            for t in 0..frames {
                for m in 0..128 {
                    let mut v = -6.0 + rnd();
                    for h in 1..4 {
                        let centre = (f0 + slope * t as f32) * h as f32;
                        v += 8.0 * (-((m as f32 - centre) / 2.0).powi(2)).exp();
                    }
                    data.push(v);
                }
            }
            ClipFeatures {
                path: format!("synthetic-{c}").into(),
                n_frames: frames,
                data: data.into(),
            }
        })
        .collect()
}

/// The largest |a - b| over two tensors of one shape.
pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap()
}
