//! `ajepa features IN --out OUT.npy [--png OUT.png]`

use std::path::PathBuf;

use anyhow::bail;
use audio_jepa::arrays::write_npy;
use audio_jepa::frontend::{normalize, LogMelExtractor};
use audio_jepa::render::{write_png, RenderOptions};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Audio file (WAV, FLAC, Ogg/Vorbis, MP3; any rate, any channel count)
    input: PathBuf,
    /// Write the log-mel array here as .npy, shape (frames, mel bins), float32
    #[arg(long)]
    out: Option<PathBuf>,
    /// Render the spectrogram to this PNG (frequency up, time right, magma colour map)
    #[arg(long)]
    png: Option<PathBuf>,
    /// Apply the model-input normalisation (x - mean) / (2 std) to the .npy output
    #[arg(long)]
    normalize: bool,
    /// Profile: a TOML file, or a name in firmware-config/ (default: built-in laptop settings)
    #[arg(long, env = "AJEPA_PROFILE")]
    profile: Option<PathBuf>,
    /// Dynamic range of the PNG below its loudest value, in dB
    #[arg(long, default_value_t = 45.0)]
    png_range_db: f32,
    /// Replace an existing output file of another kind (never the input)
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.out.is_none() && args.png.is_none() {
        bail!("nothing to write: give --out OUT.npy and/or --png OUT.png");
    }
    if let Some(out) = &args.out {
        super::check_output(out, &[&args.input], &["npy"], args.force)?;
    }
    if let Some(png) = &args.png {
        super::check_output(png, &[&args.input], &["png"], args.force)?;
    }
    let profile = super::load_profile(args.profile.as_deref())?;
    let cfg = &profile.frontend;
    // AudioError already names the file and the cause.
    let audio = audio_jepa::audio::load(&args.input, cfg.sample_rate)?;
    let mut fe = LogMelExtractor::new(cfg)?;
    let mut spec = fe.compute(&audio.samples);
    if spec.n_frames == 0 {
        bail!(
            "{}: {:.3} s of audio is shorter than one {} ms frame",
            args.input.display(),
            audio.duration_secs(),
            cfg.frame_length_ms
        );
    }
    if let Some(png) = &args.png {
        // dB of power = 10 log10(e) ln, so ln units = dB / 4.343.
        let opts = RenderOptions {
            dynamic_range: args.png_range_db / (10.0 * std::f32::consts::LOG10_E),
            ..RenderOptions::default()
        };
        write_png(png, &spec, &opts)?;
    }
    if let Some(out) = &args.out {
        if args.normalize {
            normalize(&mut spec.data, cfg);
        }
        write_npy(out, &[spec.n_frames, spec.n_mels], &spec.data)?;
    }
    note!(
        "{}: {:.2} s, {} Hz x {} ch -> {} frames x {} mel bins{}{}",
        args.input.display(),
        audio.duration_secs(),
        audio.source_rate,
        audio.source_channels,
        spec.n_frames,
        spec.n_mels,
        args.out
            .as_ref()
            .map(|p| format!(", wrote {}", p.display()))
            .unwrap_or_default(),
        args.png
            .as_ref()
            .map(|p| format!(", drew {}", p.display()))
            .unwrap_or_default(),
    );
    Ok(())
}
