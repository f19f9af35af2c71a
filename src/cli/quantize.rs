//! `ajepa quantize`: an encoder's weights in a smaller storage type. f16 and bf16 halve the file
//! (the loader widens them to f32, so inference is unchanged apart from the rounding); the
//! reported cosine similarity compares pooled embeddings of the original and the result.

use std::path::PathBuf;

use anyhow::{bail, Context};
use audio_jepa::model::checkpoint::{load_encoder, load_tensors, save_encoder};
use candle_core::{DType, Device, Tensor};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    F16,
    Bf16,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Encoder weights (.safetensors with its .json)
    #[arg(long)]
    pub model: PathBuf,
    /// Output .safetensors (its .json is written beside it)
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long = "type", value_enum)]
    pub kind: Kind,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.out == args.model {
        bail!("--out must differ from --model");
    }
    let enc = load_encoder(&args.model, &Device::Cpu)?;
    let (tensors, _) = load_tensors(&args.model, &Device::Cpu)?;
    let dtype = match args.kind {
        Kind::F16 => DType::F16,
        Kind::Bf16 => DType::BF16,
    };
    let small = tensors
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.to_dtype(dtype)?)))
        .collect::<candle_core::Result<std::collections::HashMap<_, _>>>()?;
    save_encoder(&args.out, &small, enc.config())?;
    let back = load_encoder(&args.out, &Device::Cpu)
        .with_context(|| format!("reloading {}", args.out.display()))?;
    // Pooled embeddings of a fixed pseudo-random batch (8 one-second windows).
    let x = Tensor::randn(0f32, 0.5, (8, 48, enc.config().patch_len()), &Device::Cpu)?;
    let a = enc.forward(&x, None)?.mean(1)?;
    let b = back.forward(&x, None)?.mean(1)?;
    let cos = ((&a * &b)?.sum(1)? / (a.sqr()?.sum(1)?.sqrt()? * b.sqr()?.sum(1)?.sqrt()?)?)?
        .min(0)?
        .to_scalar::<f32>()?;
    let size = |p: &PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) as f64 / 1048576.0;
    println!(
        "{} ({:.1} MiB) -> {} ({:.1} MiB, {:?}); lowest cosine similarity of pooled embeddings {cos:.6}",
        args.model.display(),
        size(&args.model),
        args.out.display(),
        size(&args.out),
        args.kind
    );
    Ok(())
}
