//! The int8 encoder on real audio: pooled embeddings of the built-in model's int8 engine against
//! its f32 engine on ESC-50 clips (cosine >= 0.99, also after removing the mean embedding), a
//! q8 file written by `quantize` giving the same int8 model back, and damaged quantized files
//! rejected with a clear error.

mod common;

use audio_jepa::engine::{FastEncoder, Isa, Precision};
use audio_jepa::finetune::windows::{load_clip_windows, WindowSpec};
use audio_jepa::frontend::LogMelExtractor;
use audio_jepa::model::checkpoint::{
    load_encoder_with_quant, load_tensors, save_encoder_quantized, WeightQuant,
};
use audio_jepa::FrontendConfig;
use candle_core::Device;

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

fn pooled_all(fast: &FastEncoder, windows: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let mut s = fast.scratch();
    windows
        .iter()
        .map(|w| {
            fast.forward(w, &mut s).unwrap();
            s.pooled.clone()
        })
        .collect()
}

#[test]
fn int8_embeddings_of_real_clips_stay_within_cosine_0_99_of_f32() {
    let Some(data) = common::shared_data("int8 embeddings of real clips") else {
        return;
    };
    let enc = audio_jepa::default_model::encoder().unwrap();
    let fe = FrontendConfig::default();
    let mut lm = LogMelExtractor::new(&fe).unwrap();
    let spec = WindowSpec::default();
    // Fold 4 (never used to pick anything), ten classes of sound.
    let clips = [
        "4-125929-A-40.flac",
        "4-167077-B-20.flac",
        "4-171207-A-12.flac",
        "4-164859-A-1.flac",
        "1-100038-A-14.flac",
        "1-17367-A-10.flac",
    ];
    let mut windows = Vec::new();
    for c in clips {
        let path = data.join("esc50/audio").join(c);
        let w = load_clip_windows(&path, &mut lm, &fe, &spec).unwrap();
        windows.extend((0..w.n).map(|i| w.window(i).to_vec()));
    }
    assert!(windows.len() >= 30, "{} windows", windows.len());
    let f32_engine = FastEncoder::from_encoder(&enc, Precision::F32, Isa::detect(), 6).unwrap();
    let a = pooled_all(&f32_engine, &windows);
    let d = a[0].len();
    let mean: Vec<f32> = (0..d)
        .map(|j| a.iter().map(|v| v[j]).sum::<f32>() / a.len() as f32)
        .collect();
    let centred = |v: &[f32]| v.iter().zip(&mean).map(|(x, m)| x - m).collect::<Vec<_>>();
    for isa in Isa::all_supported() {
        let q8 = FastEncoder::from_encoder(&enc, Precision::Q8, isa, 6).unwrap();
        let b = pooled_all(&q8, &windows);
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| cosine(x, y))
            .fold(1f32, f32::min);
        let worst_c = a
            .iter()
            .zip(&b)
            .map(|(x, y)| cosine(&centred(x), &centred(y)))
            .fold(1f32, f32::min);
        eprintln!(
            "{isa:?}: {} windows, lowest cosine {worst:.5}, centred {worst_c:.5}",
            windows.len()
        );
        assert!(
            worst >= 0.99 && worst_c >= 0.99,
            "{isa:?}: {worst} / {worst_c}"
        );
    }
}

#[test]
fn a_q8_file_round_trips_and_damage_is_a_clear_error() {
    let enc = audio_jepa::default_model::encoder().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tensors: std::collections::HashMap<_, _> = enc.named_tensors().into_iter().collect();
    let path = dir.path().join("q8.safetensors");
    save_encoder_quantized(&path, &tensors, enc.config(), WeightQuant::Q8).unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    let (back, quant) = load_encoder_with_quant(&path, &Device::Cpu).unwrap();
    assert_eq!(quant, Some(WeightQuant::Q8));
    // An f32 model is 4 bytes a weight; the q8 file about 1 (plus f32 norms, biases, patch
    // embedding and scales).
    let params = enc.config().num_params() as u64;
    assert!(
        size < params * 3 / 2,
        "{size} bytes for {params} parameters"
    );
    // The int8 engine of the reloaded file is the int8 engine of the original: the same
    // integers and scales.
    let x: Vec<f32> = (0..48 * 256)
        .map(|i| ((i * 31 % 97) as f32 / 97.0) - 0.5)
        .collect();
    let direct = FastEncoder::from_encoder(&enc, Precision::Q8, Isa::detect(), 6).unwrap();
    let from_file = FastEncoder::from_encoder(&back, Precision::Q8, Isa::detect(), 6).unwrap();
    let (mut s1, mut s2) = (direct.scratch(), from_file.scratch());
    direct.forward(&x, &mut s1).unwrap();
    from_file.forward(&x, &mut s2).unwrap();
    let diff = s1
        .output()
        .iter()
        .zip(s2.output())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff < 1e-4, "file vs direct int8: {diff}");

    // Truncated: an error naming the file, no panic.
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::copy(dir.path().join("q8.json"), dir.path().join("cut.json")).unwrap();
    let err = load_encoder_with_quant(&cut, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("cut.safetensors"), "{err}");
    // A scale missing: the error names the tensor.
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != "blocks.0.attn.qkv.weight_scale")
        .collect();
    let no_scale = dir.path().join("noscale.safetensors");
    std::fs::write(
        &no_scale,
        safetensors::tensor::serialize(kept, meta.metadata().clone()).unwrap(),
    )
    .unwrap();
    let err = load_tensors(&no_scale, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("blocks.0.attn.qkv.weight_scale"), "{err}");
}
