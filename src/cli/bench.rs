//! `ajepa bench`: what one hop of live tagging costs on this machine, and whether it fits the
//! profile's latency budget.
//!
//! Runs on any machine, no microphone needed: it reads a file (or synthesises a deterministic
//! signal), times the offline extractor over the whole signal and the streaming front end fed in
//! chunks (medians, per-push latency percentiles, heap allocations per push), then the encoder
//! (the built-in one unless `--model` names another) per hop through candle and the engine's
//! f32 and int8 kernels, with the window and threads of the profile. The verdict compares the
//! profile's runtime (f32 or int8) at p99 with the profile's budget; `--markdown` and `--json`
//! write a report to share, with the version, OS, CPU, cores and time (no raw embeddings).
//! The measurements and the report are the library's (`audio_jepa::bench`); this file parses
//! the flags, calls them and prints.

use std::path::PathBuf;

use audio_jepa::bench::{machine, markdown, measure, Report};

use super::alloc_count::allocations;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Audio file to run on (default: a synthetic 10 s signal)
    #[arg(long)]
    input: Option<PathBuf>,
    /// Length of the synthetic signal in seconds (ignored with --input)
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Timed repetitions of each measurement
    #[arg(long, default_value_t = 30)]
    repeat: usize,
    /// Samples per push for the streaming front end (160 = one 10 ms hop)
    #[arg(long, default_value_t = 160)]
    chunk: usize,
    /// Print one JSON object instead of a table
    #[arg(long)]
    json: bool,
    /// Profile: a TOML file, or a name in firmware-config/
    #[arg(long, env = "AJEPA_PROFILE")]
    profile: Option<PathBuf>,
    /// The encoder to time per hop: an encoder file, `default` (the built-in model) or a
    /// preset name (`edge`, `small`, ...: random weights of that shape)
    #[arg(long, default_value = "default", env = "AJEPA_MODEL")]
    model: String,
    /// Time the front end only
    #[arg(long, conflicts_with_all = ["patches"])]
    frontend_only: bool,
    /// Encoder window in patch columns (default: the profile's; 6 = 0.96 s, 48 patches)
    #[arg(long)]
    window_columns: Option<usize>,
    /// Threads for the encoder (default: the profile's; candle's pool; the engine uses 1 or 2;
    /// the front end 1)
    #[arg(long)]
    threads: Option<usize>,
    /// Also write the report as Markdown to this file (a new file, or one this command wrote)
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Encode this window instead of a random one: a float32 .npy of `[patches, patch_len]`
    /// (e.g. from `ajepa embed --patches-out`), to compare the outputs with another runtime
    #[arg(long)]
    patches: Option<PathBuf>,
}

fn encoder_for(spec: &str) -> anyhow::Result<audio_jepa::model::Encoder> {
    use candle_core::Device;
    if spec == "default" {
        return Ok(audio_jepa::default_model::encoder()?);
    }
    let path = std::path::Path::new(spec);
    if path.extension().is_some() || path.exists() {
        return Ok(audio_jepa::model::checkpoint::load_encoder(
            path,
            &Device::Cpu,
        )?);
    }
    super::random_encoder(spec)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.repeat > 0, "--repeat must be at least 1");
    anyhow::ensure!(args.chunk > 0, "--chunk must be at least 1 sample");
    let profile = super::load_profile(args.profile.as_deref())?;
    let sc = &profile.stream;
    let threads = args.threads.unwrap_or(sc.threads);
    let window_columns = args.window_columns.unwrap_or(sc.window_columns);
    anyhow::ensure!(
        (1..=256).contains(&threads),
        "--threads {threads}: 1 to 256"
    );
    anyhow::ensure!(
        (1..=audio_jepa::tagging::MAX_COLUMNS).contains(&window_columns),
        "--window-columns {window_columns}: 1 to {}",
        audio_jepa::tagging::MAX_COLUMNS
    );
    if let (Some(md), Some(input)) = (&args.markdown, &args.input) {
        anyhow::ensure!(
            !super::same_file(md, input),
            "--markdown {} is the input audio",
            md.display()
        );
    }
    if let Some(md) = &args.markdown {
        // Never replace a file of another kind (an audio file, a model) with a report.
        if md.exists() && md.extension().is_none_or(|e| e != "md") {
            anyhow::bail!(
                "--markdown {} exists and is not a .md file: give a new file name",
                md.display()
            );
        }
    }
    // candle sizes its thread pool at its first operation.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    let cfg = &profile.frontend;
    let (samples, input) = match &args.input {
        Some(path) => {
            let audio = audio_jepa::audio::load(path, cfg.sample_rate)?;
            (audio.samples, path.display().to_string())
        }
        None => {
            anyhow::ensure!(
                args.seconds.is_finite() && args.seconds > 0.0,
                "--seconds must be positive"
            );
            (
                measure::synthetic(args.seconds, cfg.sample_rate),
                format!("synthetic {} s", args.seconds),
            )
        }
    };
    let audio_s = samples.len() as f64 / cfg.sample_rate as f64;
    anyhow::ensure!(
        cfg.num_frames(samples.len()) > 0,
        "the input is shorter than one frame"
    );
    let fe = measure::time_frontend(cfg, &samples, args.repeat, args.chunk, &allocations)?;
    let encoder = if args.frontend_only {
        None
    } else {
        let enc = encoder_for(&args.model)?;
        Some(measure::bench_encoder(
            &enc,
            &args.model,
            window_columns,
            threads,
            args.repeat,
            args.patches.as_deref(),
            &allocations,
        )?)
    };
    let (cpu, cpu_features) = machine::cpu_info();
    let mut report = Report {
        version: env!("CARGO_PKG_VERSION"),
        os: machine::os_info(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        timestamp_utc: machine::utc_now(),
        profile: profile.name.clone().unwrap_or_else(|| {
            args.profile
                .as_ref()
                .map_or("default".into(), |p| p.display().to_string())
        }),
        verdict: None,
        warnings: Vec::new(),
        cpu,
        cpu_features,
        threads: 1,
        input,
        audio_seconds: audio_s,
        repeat: args.repeat,
        chunk: args.chunk,
        real_time_factor: fe.streaming_ms_per_audio_s.median / 1e3,
        offline_ms_per_audio_s: fe.offline_ms_per_audio_s,
        streaming_ms_per_audio_s: fe.streaming_ms_per_audio_s,
        push_latency_us: fe.push_latency_us,
        allocations_per_push: fe.allocations_per_push,
        peak_memory_mib: None,
        encoder,
    };
    report.judge(sc);
    report.peak_memory_mib = machine::peak_memory_mib();
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    if let Some(md) = &args.markdown {
        audio_jepa::arrays::write_atomically(md, |w| {
            std::io::Write::write_all(w, markdown(&report).as_bytes())
        })
        .map_err(|e| anyhow::anyhow!("{}: cannot write: {e}", md.display()))?;
        if !args.json {
            println!("report written to {}", md.display());
        }
    }
    Ok(())
}

fn print_table(r: &Report) {
    println!(
        "cpu: {} [{}]; front end on 1 thread",
        r.cpu,
        r.cpu_features.join(" ")
    );
    println!(
        "input: {} ({:.2} s of audio), {} repetitions",
        r.input, r.audio_seconds, r.repeat
    );
    println!("{:<44} {:>10} {:>10}", "stage", "median", "best");
    println!(
        "{:<44} {:>10.4} {:>10.4}",
        "front end, offline (ms per s of audio)",
        r.offline_ms_per_audio_s.median,
        r.offline_ms_per_audio_s.best
    );
    println!(
        "{:<44} {:>10.4} {:>10.4}",
        format!("front end, streaming by {} (ms per s)", r.chunk),
        r.streaming_ms_per_audio_s.median,
        r.streaming_ms_per_audio_s.best
    );
    println!(
        "push latency (us): p50 {:.2}  p95 {:.2}  p99 {:.2}",
        r.push_latency_us.p50, r.push_latency_us.p95, r.push_latency_us.p99
    );
    println!(
        "real-time factor {:.2e}, heap allocations per push {:.3}",
        r.real_time_factor, r.allocations_per_push
    );
    if let Some(e) = &r.encoder {
        println!(
            "encoder {} ({} x {}), {} patches, batch 1, per hop:",
            e.model, e.width, e.depth, e.patches
        );
        println!(
            "{:<24} {:<12} {:>7} {:>9} {:>9} {:>9} {:>9} {:>12} {:>12}",
            "runtime",
            "kernels",
            "threads",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "best ms",
            "allocs/hop",
            "vs candle"
        );
        let base = e.runtimes[0].per_hop_ms.p50;
        for t in &e.runtimes {
            println!(
                "{:<24} {:<12} {:>7} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>12.1} {:>11.2}x",
                t.runtime,
                t.isa,
                t.threads,
                t.per_hop_ms.p50,
                t.per_hop_ms.p95,
                t.per_hop_ms.p99,
                t.best_ms,
                t.allocations_per_hop,
                base / t.per_hop_ms.p50
            );
        }
        println!(
            "int8 engine: cosine similarity of the pooled embedding to f32 {:.5}",
            e.q8_cosine_to_f32
        );
        println!(
            "head (freqcat pooling, 10 classes): p50 {:.2} us; one hop end to end (front end + int8 encoder + head) real-time factor {:.4}",
            e.head_us.p50, e.real_time_factor_q8
        );
    }
    if let Some(m) = r.peak_memory_mib {
        println!("peak resident memory {m:.1} MiB");
    }
    if let Some(v) = &r.verdict {
        println!(
            "verdict ({} profile, {}): one hop at p99 {:.2} ms, budget {:.0} ms: {}",
            r.profile,
            v.runtime,
            v.hop_p99_ms,
            v.budget_ms,
            if v.within_budget {
                "within budget"
            } else {
                "OVER BUDGET"
            }
        );
    }
    for w in &r.warnings {
        println!("warning: {w}");
    }
}
