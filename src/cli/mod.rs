//! Subcommands of `ajepa`.

/// An informational message on stderr (what was read, written, chosen), silenced by `-q`.
/// Warnings and errors use `eprintln!` and are never silenced.
macro_rules! note {
    ($($arg:tt)*) => {
        if !$crate::cli::quiet() {
            eprintln!($($arg)*);
        }
    };
}

pub mod alloc_count;
mod bench;
mod devices;
mod embed;
mod enroll;
mod eval;
mod eval_head;
mod features;
mod finetune;
mod listen;
pub mod model;
mod progress;
mod quantize;
mod tag;

use std::path::{Path, PathBuf};

use anyhow::Context;
use audio_jepa::Profile;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "ajepa",
    version,
    about = "Streaming Audio-JEPA encoder: live sound-event tags, your own sounds from a few clips, benchmarks",
    after_help = "Start with `ajepa listen` (the microphone) or `ajepa listen --input CLIP`; `ajepa help COMMAND` for details."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Print only results, warnings and errors (no progress, no notes)
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// More detail in the log on stderr (-v: the libraries' information, -vv: debugging);
    /// RUST_LOG, if set, decides instead
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `-q` was given.
pub fn quiet() -> bool {
    QUIET.load(std::sync::atomic::Ordering::Relaxed)
}

impl Cli {
    /// The log filter `-q` / `-v` ask for. symphonia's own log (a warning per junk byte, an
    /// "ERROR probe reached EOF" for a file we then report as skipped) stays off unless -vv:
    /// the decode error we report says what matters.
    pub fn log_filter(&self) -> &'static str {
        match (self.quiet, self.verbose) {
            (true, _) => "error,symphonia=off",
            (false, 0) => "warn,symphonia=off",
            (false, 1) => "info,symphonia=off",
            _ => "debug",
        }
    }
}

/// Commands, in the order a user meets them: tagging, then teaching, then measuring, then tools.
#[derive(Debug, Subcommand)]
enum Command {
    /// Live sound-event tags from the microphone (or --input FILE) in the terminal or as JSON
    Listen(listen::Args),
    /// Top tags of whole clips (files or folders), one line each, as text, JSON or CSV
    Tag(tag::Args),
    /// List audio input devices with their native rates, channels and formats
    Devices(devices::Args),
    /// Train a tagging head (linear probe) or fine-tune the encoder on your labeled clips
    Finetune(finetune::Args),
    /// Add a class to a head from a few clips, so the live tagger recognises it at once
    Enroll(enroll::Args),
    /// Score a head on labeled clips (--head), or linear-probe an encoder against baselines
    Eval(eval::Args),
    /// Time one hop of live tagging on this machine (front end, encoder, head) against a profile's budget
    Bench(bench::Args),
    /// Compute the log-mel spectrogram of an audio file (.npy array and/or PNG image)
    Features(features::Args),
    /// Encode an audio file: token embeddings of every patch (.npy)
    Embed(embed::Args),
    /// A smaller encoder file: int8 or 4-bit weights (int8 kernels), or f16/bf16 storage
    Quantize(quantize::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    ///
    /// For bash: `ajepa completions bash > ~/.local/share/bash-completion/completions/ajepa`;
    /// zsh: `ajepa completions zsh > ~/.zfunc/_ajepa` (with ~/.zfunc on fpath); fish:
    /// `ajepa completions fish > ~/.config/fish/completions/ajepa.fish`.
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff)
    ///
    /// `ajepa man > ~/.local/share/man/man1/ajepa.1`, then `man ajepa`.
    Man,
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    QUIET.store(cli.quiet, std::sync::atomic::Ordering::Relaxed);
    match cli.command {
        Command::Features(a) => features::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Embed(a) => embed::run(a),
        Command::Devices(a) => devices::run(a),
        Command::Listen(a) => listen::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Finetune(a) => finetune::run(a),
        Command::Enroll(a) => enroll::run(a),
        Command::Quantize(a) => quantize::run(a),
        Command::Tag(a) => tag::run(a),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "ajepa", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd)
                .render(&mut std::io::stdout())
                .context("writing the manual page")
        }
    }
}

/// An encoder of a preset's shape with candle's default initialisation (untrained): for
/// latency checks without a model.
pub fn random_encoder(preset: &str) -> anyhow::Result<audio_jepa::model::Encoder> {
    let cfg = audio_jepa::model::EncoderConfig::preset(preset)?;
    let vm = candle_nn::VarMap::new();
    Ok(audio_jepa::model::Encoder::load(
        candle_nn::VarBuilder::from_varmap(&vm, candle_core::DType::F32, &candle_core::Device::Cpu),
        &cfg,
    )?)
}

/// Loads `--profile`: a path to a TOML file, or the name of one in `firmware-config/`
/// (e.g. `laptop`). Without it, the built-in defaults (the same as `firmware-config/laptop.toml`).
pub fn load_profile(profile: Option<&Path>) -> anyhow::Result<Profile> {
    let Some(arg) = profile else {
        return Ok(Profile::default());
    };
    if arg.exists() || arg.extension().is_some() {
        return Profile::load(arg).with_context(|| format!("loading profile {}", arg.display()));
    }
    // A bare name: look in ./firmware-config, then in the source tree's firmware-config, so
    // `--profile laptop` works from any directory for a user who built from a clone.
    let dirs = [
        PathBuf::from("firmware-config"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config"),
    ];
    for dir in &dirs {
        let path = dir.join(arg).with_extension("toml");
        if path.is_file() {
            return Profile::load(&path)
                .with_context(|| format!("loading profile {}", path.display()));
        }
    }
    let mut known: Vec<String> = dirs
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .filter_map(|e| {
            let p = e.ok()?.path();
            let stem = p.file_stem()?.to_string_lossy().into_owned();
            (p.extension()? == "toml").then_some(stem)
        })
        .collect();
    known.sort();
    known.dedup();
    anyhow::bail!(
        "no profile named `{}`; known profiles: {} (or give a path to a .toml file)",
        arg.display(),
        if known.is_empty() {
            "none found".to_string()
        } else {
            known.join(", ")
        }
    )
}

/// `--unknown-quantile Q` and `--no-unknown` of `listen` and `tag`: the quantile of the open-set
/// check (`model::open_set`), or `None` when it is turned off.
pub fn unknown_quantile(q: f32, off: bool) -> anyhow::Result<Option<f32>> {
    if !(0.0..1.0).contains(&q) {
        anyhow::bail!("--unknown-quantile {q} must be in [0, 1)");
    }
    Ok((!off).then_some(q))
}

/// `--silence-dbfs` of `listen`, `tag` and `eval --head`: the gate below which a hop (or a whole
/// clip, by its loudest 160 ms) is silence, or `None` at -120 (no gate).
/// The default for `--threads`: the cores this process may use.
pub fn machine_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(audio_jepa::engine::threads::MAX_THREADS)
}

/// `--threads`: 1 to the engine's maximum.
pub fn parse_threads(s: &str) -> Result<usize, String> {
    let max = audio_jepa::engine::threads::MAX_THREADS;
    match s.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("`{s}`: a number of threads from 1 to {max}")),
    }
}

pub fn silence_gate(dbfs: f32) -> anyhow::Result<Option<f32>> {
    audio_jepa::config::silence_gate(dbfs)
        .map_err(|_| anyhow::anyhow!("--silence-dbfs {dbfs}: give -120 (no gate) to 0"))
}

/// The open-set check `tag` and `eval --head` run on `head` (see [`unknown_quantile`]); says so
/// when the head keeps no support set to calibrate it on.
pub fn open_set(
    head: &audio_jepa::model::head::Head,
    q: f32,
    off: bool,
) -> anyhow::Result<Option<audio_jepa::model::open_set::OpenSet>> {
    let Some(q) = unknown_quantile(q, off)? else {
        return Ok(None);
    };
    let os = audio_jepa::model::open_set::OpenSet::from_head(head, q);
    if os.is_none() {
        note!("note: the head keeps no support set, so no clip can be called unknown");
    }
    Ok(os)
}

/// Whether `a` and `b` name the same existing file, however spelled.
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The longest stretch `embed` and `eval` encode at once: 64 patch columns, 10.24 s. Attention is
/// quadratic in the tokens it sees (a 10-minute clip needed one 10.8 GB allocation, issue 15), so
/// longer clips are encoded in consecutive windows and their tokens concatenated; ESC-50's 5 s
/// clips are one window.
pub const MAX_WINDOW_COLUMNS: usize = 64;

/// Refuses an output path that would destroy something the user did not ask to replace
/// (issue 15: `features X.flac --out X.flac` overwrote the input audio, `embed --out` the
/// model): the same file as one of `inputs`, or an existing file whose extension is not one
/// of `kinds` (the kinds this output is written as), unless `force`.
pub fn check_output<P: AsRef<Path>>(
    out: &Path,
    inputs: &[P],
    kinds: &[&str],
    force: bool,
) -> anyhow::Result<()> {
    if let Some(input) = inputs.iter().find(|i| same_file(out, i.as_ref())) {
        anyhow::bail!(
            "refusing to write {}: it is the input {} (choose another output path)",
            out.display(),
            input.as_ref().display()
        );
    }
    if out.is_dir() {
        anyhow::bail!("{} is a directory; give a file name", out.display());
    }
    let ext = out
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    if out.exists() && !force && !kinds.contains(&ext.as_str()) {
        anyhow::bail!(
            "{} exists and is not a .{} file; pass --force to replace it",
            out.display(),
            kinds.join(" or .")
        );
    }
    Ok(())
}

#[cfg(test)]
mod output_tests {
    use super::check_output;

    #[test]
    fn outputs_never_replace_inputs_or_other_kinds_of_file() {
        let dir = tempfile::tempdir().unwrap();
        let audio = dir.path().join("clip.flac");
        let npy = dir.path().join("old.npy");
        std::fs::write(&audio, b"fLaC").unwrap();
        std::fs::write(&npy, b"x").unwrap();
        // The input itself, also through another spelling of its path.
        let again = dir.path().join(".").join("clip.flac");
        for out in [&audio, &again] {
            let e = check_output(out, &[&audio], &["npy"], true).unwrap_err();
            assert!(e.to_string().contains("it is the input"), "{e}");
        }
        // Another kind of file: only with --force.
        let other = dir.path().join("song.wav");
        std::fs::write(&other, b"RIFF").unwrap();
        let e = check_output(&other, &[&audio], &["npy"], false).unwrap_err();
        assert!(e.to_string().contains("--force"), "{e}");
        check_output(&other, &[&audio], &["npy"], true).unwrap();
        // A previous output of the same kind, or a new file, is fine.
        check_output(&npy, &[&audio], &["npy"], false).unwrap();
        check_output(&dir.path().join("new.npy"), &[&audio], &["npy"], false).unwrap();
        assert!(check_output(dir.path(), &[&audio], &["npy"], true).is_err());
    }
}
