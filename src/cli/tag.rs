//! `ajepa tag FILE|DIR...`: one line per clip with its top tags over the whole clip, as text,
//! JSON lines or CSV, for scripts and for checking a head on your own recordings.
//!
//! A clip's verdict is `audio_jepa::tagging`'s (the one `eval --head` scores): the mean of the
//! head's scores over the clip's windows, short clips padded, silence left out, and "unknown"
//! for a clip unlike the top class's training examples. A file that cannot be read is reported
//! and skipped; the others are still tagged.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use audio_jepa::model::head::Head;
use audio_jepa::tagging::ClipTagger;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Audio files, or folders searched recursively for them
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Encoder: a file, or `default` (the built-in model)
    #[arg(long, default_value = "default", env = "AJEPA_MODEL")]
    pub model: PathBuf,
    /// Tagging head (from `ajepa finetune` or `enroll`); default: the built-in model's head,
    /// which only fits the built-in encoder
    #[arg(long, env = "AJEPA_HEAD")]
    pub head: Option<PathBuf>,
    /// Tags per clip
    #[arg(long, default_value_t = 3)]
    pub top: usize,
    /// Window in 160 ms patch columns (the profile's `window_columns`; 6 for the built-in model)
    #[arg(long, default_value_t = 6)]
    pub window_columns: usize,
    /// Open-set check: a clip is "unknown" when its embedding is less like the chosen class's
    /// examples than this fraction of the class's own training examples are (0.2 lets 80 %
    /// of them through); needs a head with a support set (every head `finetune` and `enroll`
    /// write keeps one)
    #[arg(long, default_value_t = 0.2)]
    pub unknown_quantile: f32,
    /// Always answer with one of the head's classes (no "unknown")
    #[arg(long)]
    pub no_unknown: bool,
    /// A clip whose loudest 160 ms are quieter than this (RMS, dBFS) is silence and gets no
    /// tag, as `listen` gates its hops (-120 turns the gate off)
    #[arg(long, default_value_t = -60.0, allow_hyphen_values = true)]
    pub silence_dbfs: f32,
    /// Threads for the encoder (default: every core of this machine; the tags do not depend on it)
    #[arg(long, default_value_t = super::machine_threads(), value_parser = super::parse_threads)]
    pub threads: usize,
    /// One JSON object per clip
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// CSV with a header: file, seconds, windows, then label and score per tag
    #[arg(long)]
    pub csv: bool,
}

/// A clip's summary.
struct Tagged {
    file: PathBuf,
    seconds: f64,
    windows: usize,
    top: Vec<(String, f32)>,
    /// The open-set check on the top class: (passed, similarity, threshold).
    known: Option<(bool, f32, f32)>,
    peak_dbfs: f32,
    silent: bool,
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.top == 0 {
        bail!("--top must be at least 1");
    }
    if !(1..=super::MAX_WINDOW_COLUMNS).contains(&args.window_columns) {
        bail!(
            "--window-columns {} (1 to {})",
            args.window_columns,
            super::MAX_WINDOW_COLUMNS
        );
    }
    let (enc, quant) = super::model::load(&args.model)?;
    let head = match &args.head {
        Some(p) => Head::load(p)?,
        None if super::model::is_built_in(&args.model) => {
            audio_jepa::default_model::head().context("the built-in head")?
        }
        None => bail!(
            "{} has no built-in head: give --head (from `ajepa finetune` or `enroll`)",
            args.model.display()
        ),
    };
    if let Err(e) = head.check_width(enc.config().embed_dim, enc.config().n_freq()) {
        bail!("{e} (encoder {})", super::model::name(&args.model));
    }
    if !head.trained {
        eprintln!("warning: the head is untrained; its tags mean nothing");
    }
    if let Some(p) = &args.head {
        super::model::warn_if_other_encoder(&head, &p.display().to_string(), &enc, &args.model)?;
    }
    let open_set = super::open_set(&head, args.unknown_quantile, args.no_unknown)?;
    let silence_gate = super::silence_gate(args.silence_dbfs)?;
    let mut files = Vec::new();
    for input in &args.inputs {
        if input.is_dir() {
            let found = audio_jepa::audio::audio_files_below(input)
                .map_err(|(p, e)| anyhow::anyhow!("cannot read the folder {}: {e}", p.display()))?;
            if found.is_empty() {
                eprintln!(
                    "{}: no audio files ({})",
                    input.display(),
                    audio_jepa::audio::AUDIO_EXTENSIONS.join(", ")
                );
            }
            files.extend(found);
        } else {
            files.push(input.clone());
        }
    }
    let labels = head.labels.clone();
    let mut tagger = ClipTagger::new(
        &enc,
        super::model::precision(quant),
        head,
        open_set,
        args.window_columns,
    )
    .context("building the tagger")?
    .with_threads(args.threads)?
    .with_silence_gate(silence_gate);
    let out = std::io::stdout();
    let mut out = out.lock();
    let k = args.top.min(labels.len());
    if args.csv {
        let mut line = String::from("file,seconds,windows,peak_dbfs,silent,known,similarity");
        for i in 1..=k {
            line += &format!(",tag{i},score{i}");
        }
        if writeln!(out, "{line}").is_err() {
            return Ok(()); // a closed pipe (`| head`): nothing more to say
        }
    }
    let mut failed = 0usize;
    for file in &files {
        let v = match tagger.tag_file(file) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("skipped {}: {e}", file.display());
                failed += 1;
                continue;
            }
        };
        let t = Tagged {
            file: file.clone(),
            seconds: v.seconds,
            windows: v.windows,
            // A silent clip has no tags (its scores are not the head's).
            top: if v.silent {
                Vec::new()
            } else {
                v.order[..k]
                    .iter()
                    .map(|&c| (labels[c].clone(), v.scores[c]))
                    .collect()
            },
            known: v.known,
            peak_dbfs: v.peak_dbfs,
            silent: v.silent,
        };
        let unknown = matches!(t.known, Some((false, _, _)));
        let line = if args.json {
            serde_json::json!({"file": t.file, "seconds": t.seconds, "windows": t.windows,
                "peak_dbfs": t.peak_dbfs, "silent": t.silent,
                "unknown": unknown, "similarity": t.known.map(|k| k.1), "threshold": t.known.map(|k| k.2),
                "top": t.top})
            .to_string()
        } else if args.csv {
            let mut l = format!(
                "{},{:.2},{},{:.1},{},{},{}",
                csv_field(&t.file.to_string_lossy()),
                t.seconds,
                t.windows,
                t.peak_dbfs,
                t.silent,
                !unknown && !t.silent,
                t.known.map_or(String::new(), |k| format!("{:.4}", k.1))
            );
            for (label, s) in &t.top {
                l += &format!(",{},{s:.4}", csv_field(label));
            }
            l
        } else if t.silent {
            format!(
                "{}  ({:.1} s)  silence (loudest 160 ms at {:.1} dBFS, below the {} dBFS gate)",
                t.file.display(),
                t.seconds,
                t.peak_dbfs,
                args.silence_dbfs
            )
        } else {
            let tags: Vec<String> = t.top.iter().map(|(l, s)| format!("{l} {s:.2}")).collect();
            format!(
                "{}  ({:.1} s)  {}{}",
                t.file.display(),
                t.seconds,
                if unknown { "unknown; nearest: " } else { "" },
                tags.join(", ")
            )
        };
        if writeln!(out, "{line}").is_err() {
            return Ok(());
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} files could not be tagged (see above)",
            files.len()
        );
    }
    if files.is_empty() {
        bail!("no audio files to tag");
    }
    Ok(())
}
