//! `ajepa-train`: JEPA pretraining.

use std::path::PathBuf;

use anyhow::Context;
use audio_jepa::FrontendConfig;
use audio_jepa_training::data::list_audio;
use clap::{Parser, Subcommand};

mod prepare;
mod pretrain;

#[derive(Debug, Parser)]
#[command(name = "ajepa-train", version, about = "Audio-JEPA pretraining")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// CPU threads for training (default: the machine's physical cores; the same as setting
    /// CANDLE_NUM_THREADS). Results do not depend on it.
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
    /// Only errors and warnings: no progress bars, no notes (as `ajepa -q`)
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// More on stderr: -v prints every logged step, rank measurement and checkpoint as a plain
    /// line (what a log file of an unattended run needs; the progress bar shows only on a
    /// terminal), -vv adds the libraries' debugging; RUST_LOG, if set, decides instead
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

impl Cli {
    /// The log filter `-q` / `-v` ask for. symphonia's own log (a warning per junk byte, an
    /// "ERROR probe reached EOF" for a file we then report as skipped) stays off unless -vv:
    /// the decode error we report says what matters.
    fn log_filter(&self) -> &'static str {
        match (self.quiet, self.verbose) {
            (true, _) | (false, 0) => "warn,symphonia=off",
            (false, 1) => "warn,symphonia=off,audio_jepa_training=info,ajepa_train=info",
            _ => "debug",
        }
    }
}

/// `-q`: notes and progress bars off (errors and warnings still show).
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn quiet() -> bool {
    QUIET.load(std::sync::atomic::Ordering::Relaxed)
}

/// A progress bar, hidden under `-q`.
pub fn progress_bar(len: u64) -> indicatif::ProgressBar {
    if quiet() {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(len)
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a dataset before training: decode every file, report durations and failures
    Scan {
        /// A folder (searched recursively) or a CSV with a `filename` column
        #[arg(long)]
        data: PathBuf,
    },
    /// Pretrain an encoder with JEPA on unlabeled audio (or on shards from `prepare`)
    Pretrain(pretrain::Args),
    /// Write the encoder as pretraining initialises it (seeded): the random-init baseline
    Init {
        /// Training config (TOML)
        #[arg(long)]
        config: PathBuf,
        /// Output .safetensors (its .json is written beside it)
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a dataset's log-mel features into compressed, checksummed shards that travel
    Prepare(prepare::Args),
    /// Redraw a run's curves.png (loss and effective rank against the step) from its log.jsonl
    Curves {
        /// The run's folder
        run: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    // symphonia logs every junk byte it skips as a warning; the decode error we report says what
    // matters (RUST_LOG=warn shows them). Colour codes only on a terminal: in a log file they are
    // noise (issue 15); NO_COLOR (no-color.org) turns them off too.
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cli.log_filter()));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .init();
    QUIET.store(cli.quiet, std::sync::atomic::Ordering::Relaxed);
    if let Some(n) = cli.threads {
        // candle sizes its CPU thread pools from these on first use, which is later than this.
        std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    let result = match cli.command {
        Command::Scan { data } => scan(&data),
        Command::Pretrain(args) => pretrain::run(args),
        Command::Prepare(args) => prepare::run(args),
        Command::Init { config, out } => init(&config, &out),
        Command::Curves { run } => {
            pretrain::redraw_curves(&run).map(|p| println!("wrote {}", p.display()))
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn scan(data: &std::path::Path) -> anyhow::Result<()> {
    let files = list_audio(data).with_context(|| format!("listing {}", data.display()))?;
    let rate = FrontendConfig::default().sample_rate;
    let (mut seconds, mut failures) = (0.0, 0usize);
    let mut rates = std::collections::BTreeMap::new();
    for f in &files {
        match audio_jepa::audio::decode_mono(f) {
            Ok(a) => {
                seconds += a.samples.len() as f64 / a.sample_rate as f64;
                *rates
                    .entry((a.sample_rate, a.source_channels))
                    .or_insert(0usize) += 1;
            }
            Err(e) => {
                failures += 1;
                eprintln!("skip: {e}");
            }
        }
    }
    println!(
        "{} files, {} unreadable, {:.2} h of audio (resampled to {rate} Hz for training)",
        files.len(),
        failures,
        seconds / 3600.0
    );
    for ((r, ch), n) in rates {
        println!("  {n:>6} files at {r} Hz, {ch} channel(s)");
    }
    Ok(())
}

fn init(config: &std::path::Path, out: &std::path::Path) -> anyhow::Result<()> {
    let cfg = audio_jepa_training::config::TrainConfig::load(config)?;
    let t = audio_jepa_training::train::Trainer::new(cfg, &candle_core::Device::Cpu)?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    audio_jepa::model::checkpoint::save_encoder(
        out,
        &t.jepa.target_encoder_tensors(),
        &t.jepa.enc_cfg,
    )?;
    println!(
        "wrote {} (seed {}, untrained)",
        out.display(),
        t.cfg.run.seed
    );
    Ok(())
}
