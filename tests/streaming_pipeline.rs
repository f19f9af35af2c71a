//! The streaming pipeline (the engine's kernels) computes, hop by hop, what the offline front
//! end and candle encoder compute on the same windows, however the samples arrive.

mod common;

use std::sync::Arc;

use audio_jepa::frontend::patches::{normalize, patchify};
use audio_jepa::frontend::{LogMel, LogMelExtractor};
use audio_jepa::model::head::Head;
use audio_jepa::model::{Encoder, EncoderConfig};
use audio_jepa::stream::worker::{Pipeline, PipelineConfig};
use audio_jepa::FrontendConfig;
use candle_core::{Device, Tensor};

fn encoder() -> Arc<Encoder> {
    let cfg = EncoderConfig::preset("tiny").unwrap();
    Arc::new(common::encoder(&cfg, &common::random_tensors(&cfg, 0.05)))
}

fn offline_hops(samples: &[f32], enc: &Encoder, pcfg: &PipelineConfig) -> Vec<Vec<f32>> {
    let fe = FrontendConfig::default();
    let spec = LogMelExtractor::new(&fe).unwrap().compute(samples);
    let (wf, hf) = (pcfg.window_columns * 16, pcfg.hop_columns * 16);
    let mut out = Vec::new();
    let mut start = 0;
    while start + wf <= spec.n_frames {
        let mut w = LogMel {
            n_frames: wf,
            n_mels: 128,
            data: spec.data[start * 128..(start + wf) * 128].to_vec(),
        };
        normalize(&mut w.data, &fe);
        let p = patchify(&w, 16, 16).unwrap();
        let x = Tensor::from_slice(&p.data, (1, p.grid.n_patches(), 256), &Device::Cpu).unwrap();
        let h = enc
            .forward(&x, None)
            .unwrap()
            .mean(1)
            .unwrap()
            .flatten_all()
            .unwrap();
        out.push(h.to_vec1().unwrap());
        start += hf;
    }
    out
}

#[test]
fn streaming_hops_equal_offline_windows() {
    // A real clip when the shared data is there, else noise.
    let samples = match common::shared_data("streaming_hops_equal_offline_windows (real clip)") {
        Some(d) => {
            audio_jepa::audio::load(d.join("esc50/audio/1-100038-A-14.flac"), 16_000)
                .unwrap()
                .samples
        }
        None => common::noise(16_000 * 3, 3),
    };
    let enc = encoder();
    let pcfg = PipelineConfig::default();
    let expected = offline_hops(&samples, &enc, &pcfg);
    assert!(expected.len() > 5);
    let mut pipe = Pipeline::new(
        pcfg,
        &FrontendConfig::default(),
        16_000,
        common::engine(&enc, pcfg.window_columns),
        Head::untrained(64),
    )
    .unwrap();
    let mut got = Vec::new();
    let mut rest = &samples[..];
    let mut k = 0usize;
    while !rest.is_empty() {
        let n = [1usize, 37, 160, 999, 4096][k % 5].min(rest.len());
        pipe.push(&rest[..n], &mut |h| got.push(h.pooled.clone()));
        rest = &rest[n..];
        k += 1;
    }
    assert_eq!(got.len(), expected.len());
    let mut worst = 0f32;
    for (a, b) in got.iter().zip(&expected) {
        for (x, y) in a.iter().zip(b) {
            worst = worst.max((x - y).abs());
        }
    }
    eprintln!("{} hops, max |streaming - offline| = {worst:e}", got.len());
    assert!(worst <= 1e-5, "{worst}");
}

#[test]
fn other_input_rates_are_resampled_in_the_stream() {
    let enc = encoder();
    let mut pipe = Pipeline::new(
        PipelineConfig::default(),
        &FrontendConfig::default(),
        48_000,
        common::engine(&enc, 6),
        Head::untrained(64),
    )
    .unwrap();
    let mut hops = 0;
    let x = common::noise(48_000 * 2, 9);
    for c in x.chunks(480) {
        pipe.push(c, &mut |_| hops += 1);
    }
    // 2 s at 16 kHz: ~198 frames; first hop at 96 frames, then one per 16.
    assert!((6..=8).contains(&hops), "{hops} hops");
}
