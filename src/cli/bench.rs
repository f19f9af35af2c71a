//! `ajepa bench`: the front end's cost per second of audio, offline and streaming, one thread.
//!
//! Runs on any machine, no microphone needed: it reads a file (or synthesises a deterministic
//! signal), then times the offline extractor over the whole signal and the streaming front end
//! fed in chunks, reporting medians, per-hop latency percentiles and heap allocations per push.

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
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Also time the encoder per hop: an encoder file, `default` (the built-in model) or a
    /// preset name (`edge`, `small`, ...: random weights of that shape)
    #[arg(long)]
    model: Option<String>,
    /// Encoder window in patch columns (6 = 0.96 s, 48 patches)
    #[arg(long, default_value_t = 6)]
    window_columns: usize,
    /// Threads for the encoder (candle's pool; the engine uses 1 or 2; the front end 1)
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Encode this window instead of a random one: a float32 .npy of `[patches, patch_len]`
    /// (e.g. from `ajepa embed --patches-out`), to compare the outputs with another runtime
    #[arg(long)]
    patches: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Report {
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
    /// The pooled embedding of the window (for checks against a reference).
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
    anyhow::ensure!(args.threads > 0, "--threads must be at least 1");
    anyhow::ensure!(
        args.window_columns > 0,
        "--window-columns must be at least 1"
    );
    // candle sizes its thread pool at its first operation.
    std::env::set_var("RAYON_NUM_THREADS", args.threads.to_string());
    let profile = super::load_profile(args.profile.as_deref())?;
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
        encoder: match &args.model {
            Some(m) => Some(bench_encoder(
                m,
                args.window_columns,
                args.threads,
                args.repeat,
                args.patches.as_deref(),
            )?),
            None => None,
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
    report.peak_memory_mib = peak_memory_mib();
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
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
            "encoder {} ({} x {}), {} patches, batch 1, per hop incl. mean pooling:",
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
}
