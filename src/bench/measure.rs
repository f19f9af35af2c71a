//! The timings: the front end offline and streaming, the encoder per hop through each
//! runtime, a head. Heap allocations are counted by the caller's counter (a binary's global
//! allocator; a library cannot install one).

use std::time::Instant;

use super::{BenchError, EncoderReport, Percentiles, RuntimeReport, Stat};
use crate::frontend::{LogMelExtractor, StreamingFbank};
use crate::model::Encoder;

/// Allocations so far, from the caller's counting allocator (or always 0 without one).
pub type AllocCounter<'a> = &'a dyn Fn() -> u64;

/// Times `hop` (which leaves the pooled embedding in its return value): 10 warm-up calls, then
/// `runs` timed ones, counting heap allocations.
pub fn time_hops(
    runs: usize,
    allocations: AllocCounter,
    mut hop: impl FnMut() -> Result<(), BenchError>,
) -> Result<(Percentiles, f64, f64), BenchError> {
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
            p50: super::percentile(&ms, 0.5),
            p95: super::percentile(&ms, 0.95),
            p99: super::percentile(&ms, 0.99),
        },
        ms[0],
        allocs as f64 / runs as f64,
    ))
}

/// One window of `columns` patch columns (random, or the `.npy` at `patches`) through candle
/// and the engine's f32 and int8 kernels with `threads` threads (the engine uses at most two),
/// `repeat` (at least 50) timed hops each, then a 10-class freqcat head. `model` names the
/// encoder in the report.
pub fn bench_encoder(
    enc: &Encoder,
    model: &str,
    columns: usize,
    threads: usize,
    repeat: usize,
    patches: Option<&std::path::Path>,
    allocations: AllocCounter,
) -> Result<EncoderReport, BenchError> {
    use crate::engine::{FastEncoder, Isa, Precision};
    use candle_core::{Device, Tensor};
    let cfg = enc.config().clone();
    let (x, columns) = match patches {
        Some(path) => {
            let a = crate::arrays::read_npy(path)?;
            let n = a.data.len() / cfg.patch_len();
            if !(n > 0 && a.data.len() == n * cfg.patch_len() && n.is_multiple_of(cfg.n_freq())) {
                return Err(BenchError::Input(format!(
                    "{}: shape {:?} is not whole columns of {} patches of {}",
                    path.display(),
                    a.shape,
                    cfg.n_freq(),
                    cfg.patch_len()
                )));
            }
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
    let (p, best, allocs) = time_hops(runs, allocations, || {
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
        let fast = FastEncoder::from_encoder(enc, precision, isa, columns)?;
        let mut scratch = fast.scratch_threads(threads)?;
        let (p, best, allocs) = time_hops(runs, allocations, || {
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
            threads: scratch.threads(),
            per_hop_ms: p,
            best_ms: best,
            allocations_per_hop: allocs,
            pooled: scratch.pooled.clone(),
        });
        tokens = scratch.output().to_vec();
    }
    let cos = crate::engine::math::cosine(&runtimes[1].pooled, &runtimes[2].pooled);
    use crate::model::head::{Activation, Head};
    use crate::model::pooling::Pooling;
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
        p50: super::percentile(&us, 0.5),
        p95: super::percentile(&us, 0.95),
        p99: super::percentile(&us, 0.99),
    };
    Ok(EncoderReport {
        head_us,
        real_time_factor_q8: 0.0, // filled in by `Report::judge`, which knows the front end's cost

        model: model.to_string(),
        width: cfg.embed_dim,
        depth: cfg.depth,
        patches: n,
        threads,
        runtimes,
        q8_cosine_to_f32: cos,
    })
}

/// Deterministic test signal: a chirp plus white noise, so every mel bin sees energy.
pub fn synthetic(seconds: f64, rate: u32) -> Vec<f32> {
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

/// The front end's timings: the offline extractor over the whole signal and the streaming
/// front end fed `chunk` samples per push, `repeat` times each (one thread).
pub struct FrontendTimes {
    /// Milliseconds per second of audio.
    pub offline_ms_per_audio_s: Stat,
    pub streaming_ms_per_audio_s: Stat,
    /// One push of `chunk` samples, microseconds.
    pub push_latency_us: Percentiles,
    /// Heap allocations per push after warm-up.
    pub allocations_per_push: f64,
}

/// Times the front end of `cfg` on `samples` (see [`FrontendTimes`]).
pub fn time_frontend(
    cfg: &crate::FrontendConfig,
    samples: &[f32],
    repeat: usize,
    chunk: usize,
    allocations: AllocCounter,
) -> Result<FrontendTimes, BenchError> {
    if repeat == 0 || chunk == 0 || cfg.num_frames(samples.len()) == 0 {
        return Err(BenchError::Input(
            "the front end needs a repeat and a chunk of at least 1 and a signal of a frame or more"
                .into(),
        ));
    }
    let audio_s = samples.len() as f64 / cfg.sample_rate as f64;
    let mut offline = LogMelExtractor::new(cfg)?;
    let mut out = vec![0.0f32; cfg.num_frames(samples.len()) * cfg.n_mels];
    offline.compute_into(samples, &mut out); // warm-up
    let offline_runs: Vec<f64> = (0..repeat)
        .map(|_| {
            let t = Instant::now();
            offline.compute_into(samples, &mut out);
            std::hint::black_box(&out);
            t.elapsed().as_secs_f64() * 1e3 / audio_s
        })
        .collect();

    let mut stream = StreamingFbank::new(cfg)?;
    let mut sink = 0.0f32;
    stream.push(samples, |_, f| sink += f[0]); // warm-up
    let mut stream_runs = Vec::with_capacity(repeat);
    let mut latencies = Vec::with_capacity(repeat.min(5) * samples.len().div_ceil(chunk));
    let allocs_before = allocations();
    let mut pushes = 0u64;
    for _ in 0..repeat {
        stream.reset();
        let t = Instant::now();
        for c in samples.chunks(chunk) {
            stream.push(c, |_, f| sink += f[0]);
        }
        stream_runs.push(t.elapsed().as_secs_f64() * 1e3 / audio_s);
    }
    for _ in 0..repeat.min(5) {
        stream.reset();
        for c in samples.chunks(chunk) {
            let t = Instant::now();
            stream.push(c, |_, f| sink += f[0]);
            latencies.push(t.elapsed().as_secs_f64() * 1e6);
            pushes += 1;
        }
    }
    // `latencies` was reserved up front, so the timed loops themselves allocate nothing.
    let allocs = allocations() - allocs_before;
    std::hint::black_box(sink);
    latencies.sort_by(f64::total_cmp);
    Ok(FrontendTimes {
        offline_ms_per_audio_s: super::stat(offline_runs),
        streaming_ms_per_audio_s: super::stat(stream_runs),
        push_latency_us: Percentiles {
            p50: super::percentile(&latencies, 0.5),
            p95: super::percentile(&latencies, 0.95),
            p99: super::percentile(&latencies, 0.99),
        },
        allocations_per_push: allocs as f64 / pushes.max(1) as f64,
    })
}
