//! The encoder: checkpoints round-trip, mismatched files are clear errors, inference and
//! training kernels agree, and a subset forward equals the full forward when it keeps all.

mod common;

use std::collections::HashMap;

use audio_jepa::model::checkpoint::{load_encoder, save_encoder};
use audio_jepa::model::{Encoder, EncoderConfig, Mode};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

fn random_encoder(cfg: &EncoderConfig) -> (Encoder, HashMap<String, Tensor>) {
    let tensors = common::random_tensors(cfg, 0.05);
    (common::encoder(cfg, &tensors), tensors)
}

fn patches(b: usize, n: usize) -> Tensor {
    Tensor::randn(0f32, 1.0, (b, n, 256), &Device::Cpu).unwrap()
}

/// Saving where nothing can be written says so (it said "cannot read") and leaves no file.
#[test]
fn a_save_that_cannot_write_says_so() {
    let cfg = EncoderConfig::preset("tiny").unwrap();
    let (_, tensors) = random_encoder(&cfg);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-folder/enc.safetensors");
    let e = save_encoder(&path, &tensors, &cfg).unwrap_err();
    let msg = format!("{e}: {}", std::error::Error::source(&e).unwrap());
    assert!(
        msg.contains("no-such-folder/enc.safetensors: cannot write"),
        "{msg}"
    );
    assert!(msg.contains("No such file or directory"), "{msg}");
    assert!(!path.exists());
}

#[test]
fn save_load_round_trip_gives_the_same_output() {
    let cfg = EncoderConfig::preset("tiny").unwrap();
    let (enc, tensors) = random_encoder(&cfg);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("enc.safetensors");
    save_encoder(&path, &tensors, &cfg).unwrap();
    assert!(
        dir.path().join("enc.json").is_file(),
        "config beside the weights"
    );
    let loaded = load_encoder(&path, &Device::Cpu).unwrap();
    assert_eq!(loaded.config(), &cfg);
    let x = patches(2, 48);
    let a: Vec<f32> = enc
        .forward(&x, None)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let b: Vec<f32> = loaded
        .forward(&x, None)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(a, b);
}

#[test]
fn mismatched_files_are_clear_errors() {
    let cfg = EncoderConfig::preset("tiny").unwrap();
    let (_, tensors) = random_encoder(&cfg);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("enc.safetensors");
    save_encoder(&path, &tensors, &cfg).unwrap();

    // A config that does not fit the weights.
    let wider = EncoderConfig {
        embed_dim: 128,
        ..cfg.clone()
    };
    std::fs::write(
        dir.path().join("enc.json"),
        serde_json::to_string(&wider).unwrap(),
    )
    .unwrap();
    let err = load_encoder(&path, &Device::Cpu).unwrap_err().to_string();
    assert!(
        err.contains("enc.safetensors") && err.contains("differs"),
        "{err}"
    );

    // Without the JSON, the config inside the file is used; a missing tensor is named.
    std::fs::remove_file(dir.path().join("enc.json")).unwrap();
    let mut fewer = tensors.clone();
    fewer.remove("blocks.1.mlp.fc2.weight");
    save_encoder(&path, &fewer, &cfg).unwrap();
    std::fs::remove_file(dir.path().join("enc.json")).unwrap();
    let err = load_encoder(&path, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("blocks.1.mlp.fc2.weight"), "{err}");

    // A wrong shape.
    let mut bad = tensors.clone();
    bad.insert(
        "norm.weight".into(),
        Tensor::ones(7, DType::F32, &Device::Cpu).unwrap(),
    );
    save_encoder(&path, &bad, &cfg).unwrap();
    let err = load_encoder(&path, &Device::Cpu).unwrap_err().to_string();
    assert!(
        err.contains("norm.weight") || err.contains("shape"),
        "{err}"
    );

    // Garbage and missing files.
    std::fs::write(&path, b"not safetensors at all").unwrap();
    assert!(load_encoder(&path, &Device::Cpu).is_err());
    assert!(load_encoder(&dir.path().join("none.safetensors"), &Device::Cpu).is_err());
}

#[test]
fn inference_and_training_kernels_agree() {
    let cfg = EncoderConfig::preset("tiny").unwrap();
    let (mut enc, _) = random_encoder(&cfg);
    let x = patches(2, 64);
    let a = enc.forward(&x, None).unwrap();
    enc.set_mode(Mode::Train);
    let b = enc.forward(&x, None).unwrap();
    let d: f32 = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(d < 1e-5, "{d}");
}

#[test]
fn keeping_every_patch_equals_the_full_forward() {
    let cfg = EncoderConfig::preset("tiny").unwrap();
    let (enc, _) = random_encoder(&cfg);
    let x = patches(2, 32);
    let all = Tensor::arange(0u32, 32, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap()
        .repeat((2, 1))
        .unwrap();
    let a = enc.forward(&x, None).unwrap();
    let b = enc.forward(&x, Some(&all)).unwrap();
    let d: f32 = (a.clone() - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert_eq!(d, 0.0);
    // A subset: shape [B, K, D], and patch 0 of the full grid keeps its position embedding.
    let some = Tensor::new(&[[0u32, 5, 9], [1, 2, 31]], &Device::Cpu).unwrap();
    assert_eq!(enc.forward(&x, Some(&some)).unwrap().dims(), &[2, 3, 64]);
    // A patch count that is not whole columns is refused.
    assert!(enc.forward(&patches(1, 30), None).is_err());
}

#[test]
fn half_precision_weights_load_as_f32() {
    let cfg = EncoderConfig::preset("tiny").unwrap();
    let vm = VarMap::new();
    Encoder::load(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu), &cfg).unwrap();
    let mut full = std::collections::HashMap::new();
    let mut half = std::collections::HashMap::new();
    for (k, v) in vm.data().lock().unwrap().iter() {
        let t = Tensor::randn(0f32, 0.05, v.shape(), &Device::Cpu).unwrap();
        let h = t.to_dtype(DType::F16).unwrap();
        full.insert(k.clone(), h.to_dtype(DType::F32).unwrap());
        half.insert(k.clone(), h);
    }
    let dir = tempfile::tempdir().unwrap();
    save_encoder(&dir.path().join("f32.safetensors"), &full, &cfg).unwrap();
    save_encoder(&dir.path().join("f16.safetensors"), &half, &cfg).unwrap();
    let a = load_encoder(&dir.path().join("f32.safetensors"), &Device::Cpu).unwrap();
    let b = load_encoder(&dir.path().join("f16.safetensors"), &Device::Cpu).unwrap();
    let x = Tensor::randn(0f32, 1.0, (1, 48, 256), &Device::Cpu).unwrap();
    let d = (a.forward(&x, None).unwrap() - b.forward(&x, None).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(d, 0.0);
}
