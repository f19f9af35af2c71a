//! `ajepa-train prepare`: a dataset's log-mel features as compressed, checksummed shards.

use std::path::PathBuf;

use anyhow::bail;
use audio_jepa_training::config::TrainConfig;
use audio_jepa_training::shards::write_shards;

use crate::pretrain::Sources;
use indicatif::ProgressStyle;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    sources: Sources,
    /// Output folder (index.json and shard-NNNNN.ajs)
    #[arg(long)]
    out: PathBuf,
    /// Bits per value: 6, 7, 8 or 16 (quantised per clip, largest error reported) or 32 (exact)
    #[arg(long, default_value_t = 8)]
    bits: u8,
    /// Uncompressed size of one shard, MiB
    #[arg(long, default_value_t = 16.0)]
    shard_mib: f64,
    /// Training config whose [frontend] the features use (default: the built-in front end)
    #[arg(long)]
    config: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let fe = match &args.config {
        Some(p) => TrainConfig::load(p)?.frontend,
        None => audio_jepa::FrontendConfig::default(),
    };
    if args.out.join(audio_jepa_training::shards::INDEX).exists() {
        bail!(
            "{} already holds shards; choose another --out",
            args.out.display()
        );
    }
    let clips = args.sources.load(&fe, &[])?.clips;
    let started = std::time::Instant::now();
    let bar = crate::progress_bar(clips.len() as u64).with_style(
        ProgressStyle::with_template("shards {bar:30} {pos}/{len} clips {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let w = write_shards(
        &clips,
        &fe,
        &args.out,
        args.bits,
        (args.shard_mib * 1024.0 * 1024.0) as usize,
        |i| bar.set_position(i as u64),
    )?;
    bar.finish_and_clear();
    let frames: usize = clips.iter().map(|c| c.n_frames).sum();
    println!(
        "{} clips, {:.2} h of audio -> {} shard(s), {:.1} MiB in {} ({:.2} bytes per value, {:.0} s); largest error {:.4} (log-mel units; {:.3} dB)",
        clips.len(),
        frames as f64 * fe.frame_shift_ms / 3.6e6,
        w.index.shards.len(),
        w.total_bytes as f64 / 1048576.0,
        args.out.display(),
        w.total_bytes as f64 / (frames * fe.n_mels) as f64,
        started.elapsed().as_secs_f64(),
        w.max_error,
        w.max_error as f64 * 10.0 / std::f64::consts::LN_10
    );
    Ok(())
}
