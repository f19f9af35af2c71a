//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use audio_jepa::arrays::{read_npy, Array};
use audio_jepa::model::checkpoint::encoder_from_tensors;
use audio_jepa::model::{Encoder, EncoderConfig};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

/// The repository's own fixtures (copied from ../shared/fixtures with their README).
pub fn fixture(name: &str) -> Array {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/frontend")
        .join(name);
    read_npy(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// `../shared/data` when present; otherwise prints why the caller skips and returns `None`.
pub fn shared_data(test: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED {test}: {} is absent (it holds ESC-50 and FSDD; see README)",
            dir.display()
        );
        None
    }
}

/// A terminal screen (ratatui's `TestBackend` buffer) as text, one line per row.
pub fn screen(buf: &ratatui::buffer::Buffer) -> String {
    (0..buf.area.height)
        .map(|y| {
            (0..buf.area.width)
                .map(|x| buf[(x, y)].symbol().to_string())
                .collect::<String>()
                + "\n"
        })
        .collect()
}

/// Deterministic noise in [-0.5, 0.5).
pub fn noise(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_add(0x9e37_79b9);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Every parameter of an encoder with `cfg`, with non-trivial values: N(0, std), plus 1 for the
/// norms' scales (a fresh VarMap has norms at 1 and biases at 0, which hides mistakes).
pub fn random_tensors(cfg: &EncoderConfig, std: f32) -> HashMap<String, Tensor> {
    let vm = VarMap::new();
    Encoder::load(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu), cfg).unwrap();
    let data = vm.data().lock().unwrap();
    data.iter()
        .map(|(k, v)| {
            let noise = Tensor::randn(0f32, std, v.shape(), &Device::Cpu).unwrap();
            let t = if k.contains("norm") && k.ends_with("weight") {
                (noise + 1.0).unwrap()
            } else {
                noise
            };
            (k.clone(), t)
        })
        .collect()
}

/// An encoder built from `tensors`, the way a loaded model is.
pub fn encoder(cfg: &EncoderConfig, tensors: &HashMap<String, Tensor>) -> Encoder {
    encoder_from_tensors(tensors.clone(), cfg, &Device::Cpu, Path::new("<random>")).unwrap()
}

/// The `ajepa` binary as a command, through `AJEPA_TEST_RUNNER` (qemu) when it is set.
#[allow(dead_code)]
pub fn ajepa_cmd() -> std::process::Command {
    let bin = env!("CARGO_BIN_EXE_ajepa");
    match std::env::var_os("AJEPA_TEST_RUNNER") {
        Some(runner) => {
            let mut c = std::process::Command::new(runner);
            c.arg(bin);
            c
        }
        None => std::process::Command::new(bin),
    }
}

/// Runs the `ajepa` binary, asserts it succeeded (showing its stderr if not), returns stdout.
/// `AJEPA_TEST_RUNNER` (e.g. `qemu-aarch64`, set by scripts/aarch64.sh) runs it through an
/// emulator when the tests were built for another architecture.
pub fn ajepa<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = ajepa_cmd().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The CPU engine (f32) of `enc`, for windows of up to `columns` patch columns.
#[allow(dead_code)]
pub fn engine(enc: &Encoder, columns: usize) -> std::sync::Arc<audio_jepa::engine::FastEncoder> {
    use audio_jepa::engine::{FastEncoder, Isa, Precision};
    std::sync::Arc::new(
        FastEncoder::from_encoder(enc, Precision::F32, Isa::detect(), columns).unwrap(),
    )
}

/// Writes `samples` as a mono 16 kHz 16-bit WAV at `path` (hound).
pub fn write_wav_16k(path: &Path, samples: impl IntoIterator<Item = i16>) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for v in samples {
        w.write_sample(v).unwrap();
    }
    w.finalize().unwrap();
}
