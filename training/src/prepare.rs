//! `ajepa-train prepare`: a dataset's log-mel features as compressed, checksummed shards.

use std::path::PathBuf;

use anyhow::{bail, Context};
use audio_jepa::finetune::labeled::parse_where;
use audio_jepa_training::config::TrainConfig;
use audio_jepa_training::data::list_audio_where;
use audio_jepa_training::features::load_features;
use audio_jepa_training::shards::write_shards;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Audio: a folder (recursive) or a CSV with a `filename` column; repeat for several
    #[arg(long, required = true)]
    data: Vec<PathBuf>,
    /// For CSV sources with a `fold` column: only these folds
    #[arg(long, value_delimiter = ',')]
    folds: Option<Vec<u32>>,
    /// For CSV sources: only rows where COLUMN equals VALUE, e.g. esc10=True
    #[arg(long = "where", value_name = "COLUMN=VALUE", value_parser = parse_where)]
    where_: Option<(String, String)>,
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
    /// Feature cache folder (default: ~/.cache/audio-jepa/features)
    #[arg(long)]
    cache: Option<PathBuf>,
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
    let mut files = Vec::new();
    for d in &args.data {
        files.extend(
            list_audio_where(
                d,
                args.folds.as_deref(),
                args.where_.as_ref().map(|(c, v)| (c.as_str(), v.as_str())),
            )
            .with_context(|| format!("listing {}", d.display()))?,
        );
    }
    let cache = args
        .cache
        .clone()
        .unwrap_or_else(crate::pretrain::default_cache);
    let bar = ProgressBar::new(files.len() as u64).with_style(
        ProgressStyle::with_template("features {bar:30} {pos}/{len} files {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let (clips, skipped) =
        load_features(&files, &fe, Some(&cache), |i| bar.set_position(i as u64))?;
    bar.finish_and_clear();
    for (p, why) in &skipped.0 {
        eprintln!("skipped {}: {why}", p.display());
    }
    if clips.is_empty() {
        bail!("no usable audio in {:?}", args.data);
    }
    let started = std::time::Instant::now();
    let bar = ProgressBar::new(clips.len() as u64).with_style(
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
