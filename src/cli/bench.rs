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

use std::path::PathBuf;
use std::time::Instant;

use audio_jepa::frontend::{LogMelExtractor, StreamingFbank};
use serde::Serialize;

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

#[derive(Debug, Serialize)]
struct Report {
    /// `ajepa` version.
    version: &'static str,
    /// OS and architecture (and the distribution and kernel where known).
    os: String,
    /// Logical cores the OS reports.
    cores: usize,
    /// When the report was made, UTC (ISO 8601).
    timestamp_utc: String,
    /// The profile whose window, threads, arithmetic and budget were used.
    profile: String,
    cpu: String,
    cpu_features: Vec<&'static str>,
    threads: usize,
    input: String,
    audio_seconds: f64,
    repeat: usize,
    chunk: usize,
    /// Offline extractor, milliseconds per second of audio: median and best of `repeat` runs.
    offline_ms_per_audio_s: Stat,
    /// Streaming front end fed `chunk` samples per push, milliseconds per second of audio.
    streaming_ms_per_audio_s: Stat,
    /// Latency of one streaming push of `chunk` samples, in microseconds.
    push_latency_us: Percentiles,
    /// Real-time factor of the streaming front end (compute time / audio time), median.
    real_time_factor: f64,
    /// Heap allocations per push after warm-up, over all timed pushes.
    allocations_per_push: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    encoder: Option<EncoderReport>,
    /// Peak resident memory of this process (Linux `VmHWM`), MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    peak_memory_mib: Option<f64>,
    /// The profile's runtime against its latency budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    verdict: Option<Verdict>,
    /// Why the figures may not hold (noisy timings).
    warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Verdict {
    /// The runtime the profile uses (`engine f32` or `engine q8`).
    runtime: String,
    /// One hop at p99: the front end for a hop of audio + the encoder + the head, ms.
    hop_p99_ms: f64,
    budget_ms: f64,
    within_budget: bool,
    /// Compute per hop (p50) over the hop's audio.
    real_time_factor: f64,
}

#[derive(Debug, Serialize)]
struct EncoderReport {
    model: String,
    width: usize,
    depth: usize,
    patches: usize,
    threads: usize,
    /// The same window through each runtime, in one run.
    runtimes: Vec<RuntimeReport>,
    /// Cosine similarity of the int8 engine's pooled embedding to the f32 engine's.
    q8_cosine_to_f32: f32,
    /// A tagging head (10 classes, softmax) with its freqcat pooling of the tokens, microseconds
    /// per hop.
    head_us: Percentiles,
    /// Real-time factor of one hop's work (front end for one hop of audio + int8 encoder +
    /// head) at one hop per 160 ms: compute time / audio time.
    real_time_factor_q8: f64,
}

#[derive(Debug, Serialize)]
struct RuntimeReport {
    /// `candle f32`, `engine f32` or `engine q8`.
    runtime: String,
    /// Kernels used (the engine's; candle picks its own).
    isa: String,
    threads: usize,
    /// One forward pass over a window (batch 1) plus mean pooling, milliseconds.
    per_hop_ms: Percentiles,
    best_ms: f64,
    /// Heap allocations per hop after warm-up.
    allocations_per_hop: f64,
    /// The pooled embedding of the window (for the int8-against-f32 check; not reported).
    #[serde(skip)]
    pooled: Vec<f32>,
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

/// Times `hop` (which leaves the pooled embedding in its return value): 10 warm-up calls, then
/// `runs` timed ones, counting heap allocations.
fn time_hops(
    runs: usize,
    mut hop: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<(Percentiles, f64, f64)> {
    for _ in 0..10 {
        hop()?;
    }
    let mut ms = Vec::with_capacity(runs);
    let before = allocations();
    for _ in 0..runs {
        let t = Instant::now();
        hop()?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let allocs = allocations() - before;
    ms.sort_by(f64::total_cmp);
    Ok((
        Percentiles {
            p50: percentile(&ms, 0.5),
            p95: percentile(&ms, 0.95),
            p99: percentile(&ms, 0.99),
        },
        ms[0],
        allocs as f64 / runs as f64,
    ))
}

fn bench_encoder(
    spec: &str,
    columns: usize,
    threads: usize,
    repeat: usize,
    patches: Option<&std::path::Path>,
) -> anyhow::Result<EncoderReport> {
    use audio_jepa::engine::{FastEncoder, Isa, Precision};
    use candle_core::{Device, Tensor};
    let enc = encoder_for(spec)?;
    let cfg = enc.config().clone();
    let (x, columns) = match patches {
        Some(path) => {
            let a = audio_jepa::arrays::read_npy(path)?;
            let n = a.data.len() / cfg.patch_len();
            anyhow::ensure!(
                n > 0 && a.data.len() == n * cfg.patch_len() && n % cfg.n_freq() == 0,
                "{}: shape {:?} is not whole columns of {} patches of {}",
                path.display(),
                a.shape,
                cfg.n_freq(),
                cfg.patch_len()
            );
            (a.data, n / cfg.n_freq())
        }
        None => {
            let n = columns * cfg.n_freq();
            let t = Tensor::randn(0f32, 0.5, (n * cfg.patch_len(),), &Device::Cpu)?;
            (t.to_vec1::<f32>()?, columns)
        }
    };
    let n = columns * cfg.n_freq();
    let runs = repeat.max(50);
    let mut runtimes = Vec::new();

    let xt = Tensor::from_slice(&x, (1, n, cfg.patch_len()), &Device::Cpu)?;
    let mut pooled = Vec::new();
    let (p, best, allocs) = time_hops(runs, || {
        let y = enc.forward(&xt, None)?.mean(1)?;
        pooled = std::hint::black_box(y.flatten_all()?.to_vec1::<f32>()?);
        Ok(())
    })?;
    runtimes.push(RuntimeReport {
        runtime: "candle f32".into(),
        isa: "candle".into(),
        threads,
        per_hop_ms: p,
        best_ms: best,
        allocations_per_hop: allocs,
        pooled,
    });

    let isa = Isa::detect();
    let mut tokens = Vec::new();
    for precision in [Precision::F32, Precision::Q8] {
        let fast = FastEncoder::from_encoder(&enc, precision, isa, columns)?;
        let engine_threads = threads.clamp(1, 2);
        let mut scratch = fast.scratch_threads(engine_threads)?;
        let (p, best, allocs) = time_hops(runs, || {
            fast.forward(&x, &mut scratch)?;
            std::hint::black_box(&scratch.pooled);
            Ok(())
        })?;
        runtimes.push(RuntimeReport {
            runtime: match precision {
                Precision::F32 => "engine f32".into(),
                Precision::Q8 if fast.int8_compute() => "engine q8".into(),
                // No 8-bit dot product on this CPU: int8 weights, f32 products.
                Precision::Q8 => "engine q8 (f32 compute)".into(),
            },
            isa: isa.name().into(),
            // The engine uses the calling thread and at most one helper.
            threads: engine_threads,
            per_hop_ms: p,
            best_ms: best,
            allocations_per_hop: allocs,
            pooled: scratch.pooled.clone(),
        });
        tokens = scratch.output().to_vec();
    }
    let cos = audio_jepa::engine::math::cosine(&runtimes[1].pooled, &runtimes[2].pooled);
    use audio_jepa::model::head::{Activation, Head};
    use audio_jepa::model::pooling::Pooling;
    // A 10-class softmax head on freqcat-pooled windows (the built-in head's shape); timed with
    // its pooling of the int8 engine's tokens.
    let (pool, n_freq) = (Pooling::FreqCat, cfg.n_freq());
    let dim = pool.dim(cfg.embed_dim, n_freq);
    let head = Head {
        labels: (0..10).map(|c| format!("class {c}")).collect(),
        weight: (0..10 * dim)
            .map(|i| ((i % 7) as f32 - 3.0) * 0.01)
            .collect(),
        bias: vec![0.0; 10],
        activation: Activation::Softmax,
        trained: true,
        pool,
        ..Head::untrained(dim)
    };
    let mut raw = Vec::with_capacity(16);
    let mut pooled = vec![0f32; dim];
    let mut us = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        pool.pool_into(
            std::hint::black_box(&tokens),
            cfg.embed_dim,
            n_freq,
            &mut pooled,
        );
        head.scores_into(&pooled, &mut raw);
        std::hint::black_box(&raw);
        us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    us.sort_by(f64::total_cmp);
    let head_us = Percentiles {
        p50: percentile(&us, 0.5),
        p95: percentile(&us, 0.95),
        p99: percentile(&us, 0.99),
    };
    Ok(EncoderReport {
        head_us,
        real_time_factor_q8: 0.0, // filled in by `run`, which knows the front end's cost

        model: spec.to_string(),
        width: cfg.embed_dim,
        depth: cfg.depth,
        patches: n,
        threads,
        runtimes,
        q8_cosine_to_f32: cos,
    })
}

#[derive(Debug, Serialize)]
struct Stat {
    median: f64,
    best: f64,
}

#[derive(Debug, Serialize)]
struct Percentiles {
    p50: f64,
    p95: f64,
    p99: f64,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn stat(mut v: Vec<f64>) -> Stat {
    v.sort_by(f64::total_cmp);
    Stat {
        median: percentile(&v, 0.5),
        best: v.first().copied().unwrap_or(f64::NAN),
    }
}

/// Deterministic test signal: a chirp plus white noise, so every mel bin sees energy.
fn synthetic(seconds: f64, rate: u32) -> Vec<f32> {
    let n = (seconds * rate as f64) as usize;
    let mut state = 0x2545_f491_u32;
    (0..n)
        .map(|i| {
            let t = i as f64 / rate as f64;
            let chirp = (2.0 * std::f64::consts::PI * (100.0 + 300.0 * t) * t).sin() * 0.3;
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let noise = (state as f64 / u32::MAX as f64 - 0.5) * 0.1;
            (chirp + noise) as f32
        })
        .collect()
}

/// CPU model and the SIMD features that matter for the kernels.
fn cpu_info() -> (String, Vec<&'static str>) {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    #[allow(unused_mut)]
    let mut features = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! probe {
            ($($f:tt),*) => { $( if std::is_x86_feature_detected!($f) { features.push($f); } )* };
        }
        probe!(
            "sse4.2",
            "avx",
            "avx2",
            "fma",
            "avx512f",
            "avx512vnni",
            "avxvnni"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            features.push("neon");
        }
        if std::arch::is_aarch64_feature_detected!("dotprod") {
            features.push("dotprod");
        }
    }
    (model, features)
}

/// Peak resident set (`VmHWM` in /proc/self/status), MiB.
fn peak_memory_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
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
                synthetic(args.seconds, cfg.sample_rate),
                format!("synthetic {} s", args.seconds),
            )
        }
    };
    let audio_s = samples.len() as f64 / cfg.sample_rate as f64;
    anyhow::ensure!(
        cfg.num_frames(samples.len()) > 0,
        "the input is shorter than one frame"
    );

    let mut offline = LogMelExtractor::new(cfg)?;
    let mut out = vec![0.0f32; cfg.num_frames(samples.len()) * cfg.n_mels];
    offline.compute_into(&samples, &mut out); // warm-up
    let offline_runs: Vec<f64> = (0..args.repeat)
        .map(|_| {
            let t = Instant::now();
            offline.compute_into(&samples, &mut out);
            std::hint::black_box(&out);
            t.elapsed().as_secs_f64() * 1e3 / audio_s
        })
        .collect();

    let mut stream = StreamingFbank::new(cfg)?;
    let mut sink = 0.0f32;
    stream.push(&samples, |_, f| sink += f[0]); // warm-up
    let mut stream_runs = Vec::with_capacity(args.repeat);
    let mut latencies = Vec::with_capacity(args.repeat * samples.len().div_ceil(args.chunk));
    let allocs_before = allocations();
    let mut pushes = 0u64;
    for _ in 0..args.repeat {
        stream.reset();
        let t = Instant::now();
        for chunk in samples.chunks(args.chunk) {
            stream.push(chunk, |_, f| sink += f[0]);
        }
        stream_runs.push(t.elapsed().as_secs_f64() * 1e3 / audio_s);
    }
    for _ in 0..args.repeat.min(5) {
        stream.reset();
        for chunk in samples.chunks(args.chunk) {
            let t = Instant::now();
            stream.push(chunk, |_, f| sink += f[0]);
            latencies.push(t.elapsed().as_secs_f64() * 1e6);
            pushes += 1;
        }
    }
    // `latencies` was reserved up front, so the timed loops themselves allocate nothing.
    let allocs = allocations() - allocs_before;
    std::hint::black_box(sink);
    latencies.sort_by(f64::total_cmp);

    let (cpu, cpu_features) = cpu_info();
    let streaming = stat(stream_runs);
    let mut report = Report {
        version: env!("CARGO_PKG_VERSION"),
        os: os_info(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        timestamp_utc: utc_now(),
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
        offline_ms_per_audio_s: stat(offline_runs),
        real_time_factor: streaming.median / 1e3,
        streaming_ms_per_audio_s: streaming,
        push_latency_us: Percentiles {
            p50: percentile(&latencies, 0.5),
            p95: percentile(&latencies, 0.95),
            p99: percentile(&latencies, 0.99),
        },
        allocations_per_push: allocs as f64 / pushes.max(1) as f64,
        peak_memory_mib: None,
        encoder: if args.frontend_only {
            None
        } else {
            Some(bench_encoder(
                &args.model,
                window_columns,
                threads,
                args.repeat,
                args.patches.as_deref(),
            )?)
        },
    };
    let fe_ms_per_hop = report.streaming_ms_per_audio_s.median * 0.16;
    if let Some(e) = report.encoder.as_mut() {
        let q8 = e
            .runtimes
            .iter()
            .find(|r| r.runtime.starts_with("engine q8"));
        e.real_time_factor_q8 =
            (fe_ms_per_hop + q8.map_or(0.0, |r| r.per_hop_ms.p50) + e.head_us.p50 / 1e3) / 160.0;
    }
    if let Some(e) = &report.encoder {
        let want = if sc.quantization == audio_jepa::config::Quantization::F32 {
            "engine f32"
        } else {
            "engine q8"
        };
        if let Some(r) = e.runtimes.iter().find(|r| r.runtime.starts_with(want)) {
            let hop_ms = sc.hop_columns as f64 * 160.0;
            let fe_hop = report.streaming_ms_per_audio_s.median * hop_ms / 1e3;
            let p99 = fe_hop + r.per_hop_ms.p99 + e.head_us.p99 / 1e3;
            report.verdict = Some(Verdict {
                runtime: r.runtime.clone(),
                hop_p99_ms: p99,
                budget_ms: sc.latency_budget_ms,
                within_budget: p99 <= sc.latency_budget_ms,
                real_time_factor: (fe_hop + r.per_hop_ms.p50 + e.head_us.p50 / 1e3) / hop_ms,
            });
        }
        for r in e
            .runtimes
            .iter()
            .filter(|r| r.runtime.starts_with("engine"))
        {
            let spread = r.per_hop_ms.p95 / r.per_hop_ms.p50;
            if spread > 2.0 {
                report.warnings.push(format!(
                    "{}: p95 is {spread:.1}x p50 ({:.2} against {:.2} ms): the machine was busy or changed speed during the run; close other programs or raise --repeat, and compare ratios rather than times",
                    r.runtime, r.per_hop_ms.p95, r.per_hop_ms.p50
                ));
            }
        }
    }
    report.peak_memory_mib = peak_memory_mib();
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

/// The report as Markdown, for an issue or a wiki page.
fn markdown(r: &Report) -> String {
    let mut s = format!(
        "# ajepa bench\n\n| | |\n|---|---|\n| ajepa | {} |\n| when (UTC) | {} |\n| OS | {} |\n| CPU | {} ({}) |\n| cores | {} |\n| profile | {} |\n| input | {} ({:.2} s of audio), {} repetitions |\n",
        r.version,
        r.timestamp_utc,
        r.os,
        r.cpu,
        r.cpu_features.join(" "),
        r.cores,
        r.profile,
        r.input,
        r.audio_seconds,
        r.repeat
    );
    s += &format!(
        "\n## Front end (one thread)\n\n| stage | median | best |\n|---|---:|---:|\n| offline, ms per s of audio | {:.4} | {:.4} |\n| streaming by {}, ms per s of audio | {:.4} | {:.4} |\n\nPush latency p50 / p95 / p99: {:.2} / {:.2} / {:.2} us; heap allocations per push {:.3}.\n",
        r.offline_ms_per_audio_s.median,
        r.offline_ms_per_audio_s.best,
        r.chunk,
        r.streaming_ms_per_audio_s.median,
        r.streaming_ms_per_audio_s.best,
        r.push_latency_us.p50,
        r.push_latency_us.p95,
        r.push_latency_us.p99,
        r.allocations_per_push
    );
    if let Some(e) = &r.encoder {
        s += &format!(
            "\n## Encoder per hop ({}, {} x {}, {} patches, batch 1)\n\n| runtime | kernels | threads | p50 ms | p95 ms | p99 ms | best ms | allocations per hop |\n|---|---|---:|---:|---:|---:|---:|---:|\n",
            e.model, e.width, e.depth, e.patches
        );
        for t in &e.runtimes {
            s += &format!(
                "| {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.1} |\n",
                t.runtime,
                t.isa,
                t.threads,
                t.per_hop_ms.p50,
                t.per_hop_ms.p95,
                t.per_hop_ms.p99,
                t.best_ms,
                t.allocations_per_hop
            );
        }
        s += &format!(
            "\nint8 against f32: cosine {:.5}. Head (freqcat pooling, 10 classes): p50 {:.2} us.\n",
            e.q8_cosine_to_f32, e.head_us.p50
        );
    }
    if let Some(v) = &r.verdict {
        s += &format!(
            "\n## Verdict\n\n{}: one hop at p99 takes {:.2} ms against the profile's budget of {:.0} ms: **{}**; real-time factor {:.4}.\n",
            v.runtime,
            v.hop_p99_ms,
            v.budget_ms,
            if v.within_budget { "within budget" } else { "over budget" },
            v.real_time_factor
        );
    }
    for w in &r.warnings {
        s += &format!("\n> warning: {w}\n");
    }
    s
}

/// `linux x86_64 (Debian GNU/Linux 12, kernel 6.1.0)`, as far as the OS says.
fn os_info() -> String {
    let mut s = format!("{} {}", std::env::consts::OS, std::env::consts::ARCH);
    let pretty = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|k| k.trim().to_string());
    match (pretty, kernel) {
        (Some(p), Some(k)) => s += &format!(" ({p}, kernel {k})"),
        (Some(p), None) => s += &format!(" ({p})"),
        (None, Some(k)) => s += &format!(" (kernel {k})"),
        (None, None) => {}
    }
    s
}

/// The current time, UTC, as `YYYY-MM-DDTHH:MM:SSZ`.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc_from_unix(secs)
}

/// Days since 1970-01-01 to a civil date (H. Hinnant's `civil_from_days`).
fn utc_from_unix(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
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

#[cfg(test)]
mod tests {
    use super::utc_from_unix;

    #[test]
    fn utc_dates_exact() {
        assert_eq!(utc_from_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_from_unix(951_825_600), "2000-02-29T12:00:00Z");
        assert_eq!(utc_from_unix(1_796_162_347), "2026-12-01T21:59:07Z");
    }
}
