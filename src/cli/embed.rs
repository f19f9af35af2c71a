//! `ajepa embed`: an audio file through the front end and an encoder, token embeddings out.

use std::path::PathBuf;

use anyhow::{bail, Context};
use audio_jepa::frontend::patches::{normalize, patchify};
use audio_jepa::frontend::LogMelExtractor;
use candle_core::{Device, Tensor};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Audio file (any rate and channel count)
    input: PathBuf,
    /// Encoder weights (.safetensors, with its .json config beside it), or `default` (the
    /// built-in model)
    #[arg(long, env = "AJEPA_MODEL")]
    model: PathBuf,
    /// Token embeddings, [patches, width] in time-major patch order (.npy); clips over 10.24 s
    /// are encoded in consecutive 10.24 s windows
    #[arg(long)]
    out: PathBuf,
    /// Also write the normalised patches the encoder saw, [patches, 256] (.npy)
    #[arg(long)]
    patches_out: Option<PathBuf>,
    /// Front-end profile (name in firmware-config/ or a path)
    #[arg(long, env = "AJEPA_PROFILE")]
    profile: Option<PathBuf>,
    /// Replace an existing output file of another kind (never an input)
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut inputs = super::model::files(&args.model);
    inputs.push(args.input.clone());
    super::check_output(&args.out, &inputs, &["npy"], args.force)?;
    if let Some(p) = &args.patches_out {
        super::check_output(p, &inputs, &["npy"], args.force)?;
    }
    let profile = super::load_profile(args.profile.as_deref())?;
    let cfg = &profile.frontend;
    let (encoder, _) = super::model::load(&args.model)?;
    let ecfg = encoder.config().clone();
    let audio = audio_jepa::audio::load(&args.input, cfg.sample_rate)?;
    let mut spec = LogMelExtractor::new(cfg)?.compute(&audio.samples);
    normalize(&mut spec.data, cfg);
    let patches = patchify(&spec, ecfg.patch_size, ecfg.patch_size)?;
    let n = patches.grid.n_patches();
    if n == 0 {
        bail!(
            "{}: {:.2} s is shorter than one patch column ({} frames)",
            args.input.display(),
            audio.duration_secs(),
            ecfg.patch_size
        );
    }
    // Long clips in windows; memory is bounded by a window (see MAX_WINDOW_COLUMNS).
    use super::MAX_WINDOW_COLUMNS as WINDOW;
    let (nf, pl, d) = (patches.grid.n_freq, ecfg.patch_len(), ecfg.embed_dim);
    let cols = patches.grid.n_time;
    let mut out: Vec<f32> = Vec::with_capacity(n * d);
    for c0 in (0..cols).step_by(WINDOW) {
        let c1 = (c0 + WINDOW).min(cols);
        let part = &patches.data[c0 * nf * pl..c1 * nf * pl];
        let x = Tensor::from_slice(part, (1, (c1 - c0) * nf, pl), &Device::Cpu)?;
        let h = encoder.forward(&x, None).context("encoder forward")?;
        out.extend(h.flatten_all()?.to_vec1::<f32>()?);
    }
    audio_jepa::arrays::write_npy(&args.out, &[n, d], &out)?;
    if let Some(p) = &args.patches_out {
        audio_jepa::arrays::write_npy(p, &[n, ecfg.patch_len()], &patches.data)?;
    }
    note!(
        "{}: {} patches ({} x {}) -> {} x {} embeddings, wrote {}",
        args.input.display(),
        n,
        patches.grid.n_freq,
        patches.grid.n_time,
        n,
        d,
        args.out.display()
    );
    Ok(())
}
