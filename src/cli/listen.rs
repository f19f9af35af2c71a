//! `ajepa listen`: live tags from the microphone or a file, in a terminal UI or as JSON lines.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use audio_jepa::engine::{FastEncoder, Isa, Precision};

use audio_jepa::model::head::Head;
use audio_jepa::stream::session::{Event, Session, Source};
use audio_jepa::stream::worker::{Pipeline, PipelineConfig};
use audio_jepa::tui::SessionInfo;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Encoder weights (.safetensors with its .json); without it, $AJEPA_MODEL if set (and not
    /// --random), else the built-in default model (ESC-10 tagger) with its head
    #[arg(long, conflicts_with = "random")]
    pub model: Option<PathBuf>,
    /// Tagging head (.safetensors from `ajepa finetune`/`enroll`); with --model and no head,
    /// embeddings only (no tags)
    #[arg(long, env = "AJEPA_HEAD")]
    pub head: Option<PathBuf>,
    /// A random, untrained edge encoder (flagged on screen): for latency checks only
    #[arg(long)]
    pub random: bool,
    /// Microphone: an index, an id or a name (or part of one) from `ajepa devices`. (The
    /// trainer's compute device is `ajepa-train pretrain --compute`; `--device` is an old name.)
    #[arg(long = "input-device", alias = "device", value_name = "DEVICE")]
    pub device: Option<String>,
    /// Replay a file instead of the microphone, paced in real time
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// With --input: as fast as possible
    #[arg(long, requires = "input")]
    pub fast: bool,
    /// Print tag events and stats as JSON lines instead of the terminal UI
    #[arg(long)]
    pub json: bool,
    /// Window, in 160 ms patch columns (default: the profile's)
    #[arg(long)]
    pub window_columns: Option<usize>,
    /// Hop, in patch columns
    #[arg(long)]
    pub hop_columns: Option<usize>,
    /// Tag threshold on the smoothed score
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Open-set check: a hop is "unknown" when its window is less like the top class's
    /// examples than this fraction of the class's own training examples (needs a head with a
    /// support set: every head `finetune` and `enroll` write, and the built-in one, keep one)
    #[arg(long, default_value_t = 0.2)]
    pub unknown_quantile: f32,
    /// Always answer with one of the head's classes (no "unknown")
    #[arg(long)]
    pub no_unknown: bool,
    /// Hops quieter than this (RMS, dBFS) are silence: no tag turns on, tags that were on turn
    /// off (default: the profile's, -60; -120 turns the gate off)
    #[arg(long, allow_hyphen_values = true)]
    pub silence_dbfs: Option<f32>,
    /// Ring capacity in seconds of audio
    #[arg(long)]
    pub ring_seconds: Option<f64>,
    /// Stop after this many seconds
    #[arg(long)]
    pub seconds: Option<f64>,
    /// With --json: also write every hop's embedding, pooled as the head pools, to this .npy
    /// ([hops, 1536] for a freqcat head like the built-in one, [hops, 192] for a mean-pooled one)
    #[arg(long, requires = "json")]
    pub embeddings_out: Option<PathBuf>,
    /// Front-end profile (name in firmware-config/ or a path)
    #[arg(long, env = "AJEPA_PROFILE")]
    pub profile: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let profile = super::load_profile(args.profile.as_deref())?;
    let fe = profile.frontend.clone();
    let sc = &profile.stream;
    let window_columns = args.window_columns.unwrap_or(sc.window_columns);
    let hop_columns = args.hop_columns.unwrap_or(sc.hop_columns);
    let threshold = args.threshold.unwrap_or(sc.threshold);
    if !(threshold > 0.0 && threshold < 1.0) {
        bail!("--threshold {threshold}: the smoothed scores lie in (0, 1); give a value between them, e.g. 0.5");
    }
    let silence_dbfs = args.silence_dbfs.unwrap_or(sc.silence_dbfs);
    let silence_gate = super::silence_gate(silence_dbfs)?;
    let ring_seconds = args.ring_seconds.unwrap_or(sc.ring_seconds);
    let unknown_quantile = super::unknown_quantile(args.unknown_quantile, args.no_unknown)?;
    // candle reads its thread count once, at its first operation.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", sc.threads.to_string());
    }
    // `--model default` is the built-in model, as no --model is.
    // $AJEPA_MODEL is read here rather than by clap, which would count it as a conflict with
    // an explicit --random.
    let model = args
        .model
        .clone()
        .or_else(|| {
            (!args.random)
                .then(|| std::env::var_os("AJEPA_MODEL").filter(|v| !v.is_empty()))
                .flatten()
                .map(PathBuf::from)
        })
        .filter(|p| !super::model::is_built_in(p));
    let (encoder, model_name, file_quant) = match (&model, args.random) {
        (Some(p), _) => {
            let (e, q) = super::model::load(p)?;
            (e, p.display().to_string(), q)
        }
        (None, true) => (
            super::random_encoder("edge")?,
            "random edge encoder (UNTRAINED)".to_string(),
            None,
        ),
        (None, false) => (
            audio_jepa::default_model::encoder().context("the built-in default model")?,
            audio_jepa::default_model::NAME.to_string(),
            None,
        ),
    };
    // int8 when the model file holds int8 (or 4-bit) weights or the profile asks for it.
    let precision = if sc.quantization != audio_jepa::config::Quantization::F32 {
        Precision::Q8
    } else {
        super::model::precision(file_quant)
    };
    let dim = encoder.config().embed_dim;
    let builtin_head = model.is_none() && !args.random && args.head.is_none();
    let head = match &args.head {
        Some(p) => {
            let h = Head::load(p)?;
            if let Err(e) = h.check_width(dim, encoder.config().n_freq()) {
                bail!("head {}: {e}", p.display());
            }
            if !args.random {
                let m = model.as_deref().unwrap_or(std::path::Path::new("default"));
                super::model::warn_if_other_encoder(&h, &p.display().to_string(), &encoder, m)?;
            }
            h
        }
        None if builtin_head => {
            audio_jepa::default_model::head().context("the built-in default head")?
        }
        None => Head::untrained(dim),
    };
    let untrained = args.random || !head.trained;
    // A head only fits embeddings of the window it was fitted on (a Jetson profile's 8-column
    // window turned the built-in head's "helicopter" into "chainsaw").
    let window_columns = match head.window_columns {
        Some(w) if w != window_columns => {
            if args.window_columns.is_some() {
                bail!(
                    "the head was fitted on {w}-column windows ({:.2} s); --window-columns {window_columns} would feed it embeddings it never saw",
                    w as f64 * 0.16
                );
            }
            note!(
                "note: the head was fitted on {w}-column windows; using {w} instead of the profile's {window_columns}"
            );
            w
        }
        _ => window_columns,
    };
    let engine = FastEncoder::from_encoder(&encoder, precision, Isa::detect(), window_columns)
        .context("building the encoder engine")?;
    let kernels = if precision == Precision::Q8 && !engine.int8_compute() {
        format!(
            "{} (int8 weights, f32 products: no 8-bit dot product here)",
            engine.isa().name()
        )
    } else {
        engine.isa().name().to_string()
    };
    let encoder = Arc::new(engine);
    let pcfg = PipelineConfig {
        window_columns,
        hop_columns,
        threshold,
        threads: sc.threads,
        unknown_quantile,
        silence_dbfs: silence_gate,
        ..PipelineConfig::default()
    };
    let source = match &args.input {
        Some(p) => Source::File {
            path: p.clone(),
            fast: args.fast,
        },
        None => Source::Microphone {
            device: args.device.clone(),
        },
    };
    let session = Session::start(source, ring_seconds, |rate| {
        Pipeline::new(pcfg, &fe, rate, encoder.clone(), head.clone())
    })
    .map_err(anyhow::Error::msg)
    .context("starting the audio session")?;
    let info = SessionInfo {
        model: model_name,
        untrained,
        labels: head.labels.clone(),
        source: match (&args.input, &session.capture) {
            (Some(p), _) => format!(
                "file {}{}",
                p.display(),
                if args.fast { " (fast)" } else { "" }
            ),
            (None, Some(c)) => format!(
                "{} ({} Hz, {} ch, {})",
                c.device, c.sample_rate, c.channels, c.format
            ),
            (None, None) => "microphone".into(),
        },
        window_s: window_columns as f64 * 0.16,
        hop_s: hop_columns as f64 * 0.16,
        freq_range_hz: (fe.f_min, fe.f_max),
        precision,
        kernels,
    };
    use std::io::IsTerminal;
    if args.json {
        run_lines(
            session,
            &info,
            args.seconds,
            args.embeddings_out.as_deref(),
            false,
        )
    } else if !(std::io::stdout().is_terminal() && std::io::stdin().is_terminal()) {
        // cron, systemd, `ssh` without -t, stdin from /dev/null or stdout into a file: the live
        // UI would panic or write escape codes into the file (issue 15).
        note!(
            "no terminal for the live UI (stdin or stdout is not a terminal): printing one line per hop; --json gives JSON lines"
        );
        run_lines(session, &info, args.seconds, None, true)
    } else {
        audio_jepa::tui::run(session, info, threshold, args.seconds).context("the terminal UI")
    }
}

/// The session as lines on stdout: JSON objects, or with `text` plain lines for people and
/// scripts without a terminal.
fn run_lines(
    session: Session,
    info: &SessionInfo,
    seconds: Option<f64>,
    embeddings_out: Option<&std::path::Path>,
    text: bool,
) -> anyhow::Result<()> {
    let mut pooled: Vec<f32> = Vec::new();
    let mut n_hops = 0usize;
    let mut width = 0usize;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if text {
        writeln!(
            out,
            "# {} on {} (window {:.2} s, hop {:.2} s); columns: time s, level dBFS, top tags, [tags switching on]",
            info.model, info.source, info.window_s, info.hop_s
        )?;
    } else {
        writeln!(
            out,
            "{}",
            serde_json::json!({"type": "session", "info": info})
        )?;
    }
    let deadline =
        seconds.map(|s| std::time::Instant::now() + std::time::Duration::from_secs_f64(s));
    loop {
        let timeout = std::time::Duration::from_millis(200);
        match session.events.recv_timeout(timeout) {
            Ok(Event::Hop(h)) => {
                if embeddings_out.is_some() {
                    width = h.pooled.len();
                    pooled.extend_from_slice(&h.pooled);
                    n_hops += 1;
                }
                let top: Vec<_> = h.top(5).collect();
                let on: Vec<_> = h.tags_on_names().collect();
                let off: Vec<_> = h.tags_off_names().collect();
                if text {
                    let tags: Vec<String> = top
                        .iter()
                        .take(3)
                        .map(|(l, p)| format!("{l} {p:.2}"))
                        .collect();
                    writeln!(
                        out,
                        "{:8.2} {:6.1}  {}{}  [{}]",
                        h.t_audio_s,
                        h.level_db,
                        if h.silent {
                            "silence; "
                        } else if h.unknown {
                            "unknown; nearest: "
                        } else {
                            ""
                        },
                        tags.join(", "),
                        on.join(", ")
                    )?;
                } else {
                    writeln!(
                        out,
                        "{}",
                        serde_json::json!({"type": "hop", "hop": h.hop, "t_audio_s": h.t_audio_s,
                            "compute_ms": h.compute_ms, "capture_to_tag_ms": h.capture_to_tag_ms,
                            "level_db": h.level_db, "top": top, "unknown": h.unknown, "silent": h.silent,
                            "similarity": (!h.similarity.is_nan()).then_some(h.similarity),
                            "tags_on": on, "tags_off": off})
                    )?;
                }
                session.recycle(h);
            }
            Ok(Event::Stats(s)) if !text => {
                writeln!(out, "{}", serde_json::json!({"type": "stats", "stats": s}))?
            }
            Ok(Event::Stats(_)) => {}
            Ok(Event::Ended(err)) => {
                if let Some(e) = err {
                    bail!("the session ended: {e}");
                }
                break;
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            session.stop();
            // Drain the final stats.
            while let Ok(ev) = session
                .events
                .recv_timeout(std::time::Duration::from_secs(2))
            {
                if let Event::Stats(s) = ev {
                    if !text {
                        writeln!(out, "{}", serde_json::json!({"type": "stats", "stats": s}))?;
                    }
                }
            }
            break;
        }
    }
    if let Some(path) = embeddings_out {
        audio_jepa::arrays::write_npy(path, &[n_hops, width], &pooled)?;
    }
    Ok(())
}
