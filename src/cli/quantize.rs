//! `ajepa quantize`: an encoder in a smaller form.
//!
//! - `f16`, `bf16`: every weight in half precision (half the file); the loader widens them to
//!   f32, so inference is unchanged apart from the rounding.
//! - `q8`: the blocks' matrices in int8 per output channel (a quarter of f32); `listen` and
//!   `bench` then run the engine's int8 kernels (int8 weights and activations).
//! - `q4`: 4 bits per weight for storage (an eighth); computed in int8.
//!
//! The report compares pooled embeddings of the original (f32) and the result, computed as a
//! user will run each, on a fixed batch of windows, or on real clips with `--clips`.

use std::path::PathBuf;

use anyhow::Context;
use audio_jepa::engine::{FastEncoder, Isa, Precision};
use audio_jepa::model::checkpoint::{
    load_encoder_with_quant, save_encoder, save_encoder_quantized, WeightQuant,
};
use audio_jepa::model::Encoder;
use candle_core::{DType, Device, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    F16,
    Bf16,
    Q8,
    Q4,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Encoder weights (.safetensors with its .json), or `default` (the built-in model)
    #[arg(long, env = "AJEPA_MODEL")]
    pub model: PathBuf,
    /// Output .safetensors (its .json is written beside it)
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long = "type", value_enum)]
    pub kind: Kind,
    /// Audio clips to compare embeddings on (default: a fixed batch of random windows)
    #[arg(long, num_args = 1..)]
    pub clips: Vec<PathBuf>,
}

/// Windows of patches to compare on: every 0.96 s window of each clip, or 8 random windows.
fn windows(clips: &[PathBuf], enc: &Encoder) -> anyhow::Result<Vec<Vec<f32>>> {
    let cfg = enc.config();
    if clips.is_empty() {
        let n = 6 * cfg.n_freq() * cfg.patch_len();
        return (0..8)
            .map(|_| Ok(Tensor::randn(0f32, 0.5, (n,), &Device::Cpu)?.to_vec1::<f32>()?))
            .collect();
    }
    let fe = audio_jepa::FrontendConfig::default();
    let mut lm = audio_jepa::frontend::LogMelExtractor::new(&fe)?;
    let spec = audio_jepa::finetune::windows::WindowSpec::default();
    let mut out = Vec::new();
    for c in clips {
        let w = audio_jepa::finetune::windows::load_clip_windows(c, &mut lm, &fe, &spec)
            .with_context(|| format!("clip {}", c.display()))?;
        out.extend((0..w.n).map(|i| w.window(i).to_vec()));
    }
    Ok(out)
}

/// Pooled embeddings of `wins` through the engine in `precision`.
fn pooled(enc: &Encoder, precision: Precision, wins: &[Vec<f32>]) -> anyhow::Result<Vec<Vec<f32>>> {
    let cols = wins.iter().map(|w| w.len()).max().unwrap_or(0)
        / (enc.config().n_freq() * enc.config().patch_len()).max(1);
    let fast = FastEncoder::from_encoder(enc, precision, Isa::detect(), cols.max(1))?;
    let mut s = fast.scratch();
    wins.iter()
        .map(|w| {
            fast.forward(w, &mut s)?;
            Ok(s.pooled.clone())
        })
        .collect()
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // The same file under another spelling too, and its .json.
    let inputs = super::model::files(&args.model);
    super::check_output(&args.out, &inputs, &["safetensors"], false)?;
    super::check_output(&args.out.with_extension("json"), &inputs, &["json"], false)?;
    let (enc, _) = super::model::load(&args.model)?;
    let tensors = super::model::tensors(&args.model)?;
    match args.kind {
        Kind::F16 | Kind::Bf16 => {
            let dtype = if args.kind == Kind::F16 {
                DType::F16
            } else {
                DType::BF16
            };
            let small = tensors
                .iter()
                .map(|(k, v)| Ok((k.clone(), v.to_dtype(dtype)?)))
                .collect::<candle_core::Result<std::collections::HashMap<_, _>>>()?;
            save_encoder(&args.out, &small, enc.config())?;
        }
        Kind::Q8 => save_encoder_quantized(&args.out, &tensors, enc.config(), WeightQuant::Q8)?,
        Kind::Q4 => save_encoder_quantized(&args.out, &tensors, enc.config(), WeightQuant::Q4)?,
    }
    let (back, quant) = load_encoder_with_quant(&args.out, &Device::Cpu)
        .with_context(|| format!("reloading {}", args.out.display()))?;
    let precision = super::model::precision(quant);
    let wins = windows(&args.clips, &enc)?;
    let a = pooled(&enc, Precision::F32, &wins)?;
    let b = pooled(&back, precision, &wins)?;
    let cos: Vec<f32> = a
        .iter()
        .zip(&b)
        .map(|(x, y)| audio_jepa::engine::math::cosine(x, y))
        .collect();
    let lowest = cos.iter().copied().fold(f32::INFINITY, f32::min);
    let mean = cos.iter().sum::<f32>() / cos.len().max(1) as f32;
    // Pooled embeddings share a large common component, which flatters the plain cosine; the
    // centred one (the original's mean over windows removed from both) shows what differs.
    let d = a.first().map_or(0, Vec::len);
    let mut mu = vec![0f32; d];
    for v in &a {
        for (m, x) in mu.iter_mut().zip(v) {
            *m += x / a.len() as f32;
        }
    }
    let centred = |v: &[f32]| v.iter().zip(&mu).map(|(x, m)| x - m).collect::<Vec<f32>>();
    let ccos: Vec<f32> = a
        .iter()
        .zip(&b)
        .map(|(x, y)| audio_jepa::engine::math::cosine(&centred(x), &centred(y)))
        .collect();
    let clow = ccos.iter().copied().fold(f32::INFINITY, f32::min);
    let cmean = ccos.iter().sum::<f32>() / ccos.len().max(1) as f32;
    let size = |p: &PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) as f64 / 1048576.0;
    println!(
        "{} ({:.2} MiB) -> {} ({:.2} MiB, {:?}, computed in {:?})",
        super::model::name(&args.model),
        if super::model::is_built_in(&args.model) {
            audio_jepa::default_model::encoder_bytes() as f64 / 1048576.0
        } else {
            size(&args.model)
        },
        args.out.display(),
        size(&args.out),
        args.kind,
        precision
    );
    println!(
        "pooled embeddings vs the f32 original on {} {}: cosine similarity mean {mean:.5}, lowest {lowest:.5}; centred: mean {cmean:.5}, lowest {clow:.5}",
        wins.len(),
        if args.clips.is_empty() { "random windows" } else { "clip windows" }
    );
    Ok(())
}
