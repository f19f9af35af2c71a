//! Subcommands of `ajepa`.

pub mod alloc_count;
mod bench;
mod features;

use std::path::{Path, PathBuf};

use anyhow::Context;
use audio_jepa::Profile;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "ajepa",
    version,
    about = "Streaming Audio-JEPA encoder: log-mel features, live tagging, benchmarks"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Compute the log-mel spectrogram of an audio file (.npy array and/or PNG image)
    Features(features::Args),
    /// Time the front end per second of audio, offline and streaming, on one thread
    Bench(bench::Args),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Features(a) => features::run(a),
        Command::Bench(a) => bench::run(a),
    }
}

/// Loads `--profile`: a path to a TOML file, or the name of one in `firmware-config/`
/// (e.g. `laptop`). Without it, the built-in defaults (the same as `firmware-config/laptop.toml`).
pub fn load_profile(profile: Option<&Path>) -> anyhow::Result<Profile> {
    let Some(arg) = profile else {
        return Ok(Profile::default());
    };
    let path: PathBuf = if arg.exists() || arg.extension().is_some() {
        arg.to_path_buf()
    } else {
        Path::new("firmware-config")
            .join(arg)
            .with_extension("toml")
    };
    Profile::load(&path).with_context(|| format!("loading profile {}", arg.display()))
}
