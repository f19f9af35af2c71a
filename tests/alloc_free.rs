//! The live worker allocates nothing in steady state: a real session (a file paced in real
//! time through the ring, the pipeline on the engine's int8 kernels, hop events out to a
//! consumer that recycles them, periodic stats) is run while a counting allocator counts the
//! allocations made on the worker thread. After warm-up (the first hops) the count must not
//! move, to the end of the session.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use audio_jepa::engine::{FastEncoder, Isa, Precision};
use audio_jepa::model::head::Head;
use audio_jepa::model::pooling::Pooling;
use audio_jepa::model::{Encoder, EncoderConfig};
use audio_jepa::stream::session::{on_worker_thread, Event, Session, Source};
use audio_jepa::stream::worker::{Pipeline, PipelineConfig};
use audio_jepa::FrontendConfig;
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};

struct Counting;

static WORKER_ALLOCS: AtomicU64 = AtomicU64::new(0);

std::thread_local! {
    /// Counts this thread's allocations too (a test driving a pipeline itself).
    static COUNT_HERE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn counted() -> bool {
    on_worker_thread() || COUNT_HERE.with(std::cell::Cell::get)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counted() {
            WORKER_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counted() {
            WORKER_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn noise_wav(dir: &std::path::Path, seconds: f32, rate: u32) -> std::path::PathBuf {
    let path = dir.join("noise.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&path, spec).unwrap();
    let mut s = 12345u32;
    for i in 0..(rate as f32 * seconds) as usize {
        s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let tone = (i as f32 * 0.07).sin() * 6000.0 * ((i / 4000) % 2) as f32;
        w.write_sample((((s >> 16) as f32 / 65536.0 - 0.5) * 4000.0 + tone) as i16)
            .unwrap();
    }
    w.finalize().unwrap();
    path
}

#[test]
fn the_worker_allocates_nothing_in_steady_state() {
    // One thread, then the engine with one helper thread and with two; mean-pooled and freqcat
    // heads.
    for (threads, pool) in [
        (1, Pooling::Mean),
        (2, Pooling::FreqCat),
        (3, Pooling::Mean),
    ] {
        run_session(threads, pool, 16_000);
    }
}

/// A two-class head with a support set, so that every hop also runs the open-set check.
fn head_with_support(width: usize, n_freq: usize, pool: Pooling) -> Head {
    let dim = pool.dim(width, n_freq);
    let mut h = Head::untrained(dim);
    h.pool = pool;
    h.labels = vec!["a".into(), "b".into()];
    h.weight = (0..2 * dim).map(|i| ((i * 7) % 13) as f32 * 0.01).collect();
    h.bias = vec![0.0; 2];
    h.trained = true;
    for i in 0..20 {
        h.support
            .extend((0..dim).map(|j| ((i * 31 + j * 17) % 23) as f32 * 0.1));
        h.support_labels.push((i % 2) as u32);
    }
    h
}

fn run_session(threads: usize, pool: Pooling, rate: u32) {
    let dir = tempfile::tempdir().unwrap();
    let wav = noise_wav(dir.path(), 3.0, rate);
    let cfg = EncoderConfig::preset("tiny").unwrap();
    let vm = VarMap::new();
    let enc = Encoder::load(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu), &cfg).unwrap();
    let engine =
        Arc::new(FastEncoder::from_encoder(&enc, Precision::Q8, Isa::detect(), 6).unwrap());
    let session = Session::start(
        Source::File {
            path: wav,
            fast: false,
        },
        2.0,
        |rate| {
            Pipeline::new(
                PipelineConfig {
                    threads,
                    unknown_quantile: Some(0.2),
                    ..PipelineConfig::default()
                },
                &FrontendConfig::default(),
                rate,
                engine.clone(),
                head_with_support(cfg.embed_dim, cfg.n_freq(), pool),
            )
        },
    )
    .unwrap();
    let mut after_warmup: Option<u64> = None;
    let (mut hops, mut stats_after) = (0u64, 0u32);
    loop {
        match session.events.recv_timeout(Duration::from_secs(20)) {
            Ok(Event::Hop(h)) => {
                assert!(!h.similarity.is_nan(), "the open-set check did not run");
                hops += 1;
                if h.hop == 5 {
                    after_warmup = Some(WORKER_ALLOCS.load(Ordering::Relaxed));
                }
                session.recycle(h);
            }
            Ok(Event::Stats(_)) => {
                if after_warmup.is_some() {
                    stats_after += 1;
                }
            }
            Ok(Event::Ended(_)) | Err(_) => break,
        }
    }
    let end = WORKER_ALLOCS.load(Ordering::Relaxed);
    let start = after_warmup.expect("a sixth hop");
    eprintln!(
        "{threads} thread(s): {hops} hops, {stats_after} stats events after warm-up; worker allocations: {start} at hop 5, {end} at the end"
    );
    assert!(hops >= 10, "{hops} hops");
    assert!(stats_after >= 2, "the stats path ran {stats_after} times");
    assert!(start > 0, "the counter sees the worker thread");
    assert_eq!(
        end,
        start,
        "the worker allocated {} times in steady state",
        end - start
    );
}

/// A microphone at 48 kHz (the rate cpal prefers) goes through the pipeline's resampler before
/// the front end: fed in 10 ms callbacks' worth, the pipeline allocates nothing after warm-up.
#[test]
fn a_48_khz_stream_is_resampled_without_allocating() {
    let cfg = EncoderConfig::preset("tiny").unwrap();
    let vm = VarMap::new();
    let enc = Encoder::load(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu), &cfg).unwrap();
    let engine =
        Arc::new(FastEncoder::from_encoder(&enc, Precision::Q8, Isa::detect(), 6).unwrap());
    let mut pipeline = Pipeline::new(
        PipelineConfig {
            threads: 1,
            ..PipelineConfig::default()
        },
        &FrontendConfig::default(),
        48_000,
        engine,
        head_with_support(cfg.embed_dim, cfg.n_freq(), Pooling::Mean),
    )
    .unwrap();
    let mut s = 777u32;
    let chunk: Vec<f32> = (0..480)
        .map(|i| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            ((s >> 16) as f32 / 65536.0 - 0.5) * 0.2 + (i as f32 * 0.05).sin() * 0.3
        })
        .collect();
    let mut hops = 0u64;
    let mut on_hop = |_: &audio_jepa::stream::worker::Hop| hops += 1;
    // Two seconds of warm-up (the window fills, buffers reach their size), then four counted.
    for _ in 0..200 {
        pipeline.push(&chunk, &mut on_hop);
    }
    COUNT_HERE.with(|c| c.set(true));
    let before = WORKER_ALLOCS.load(Ordering::Relaxed);
    for _ in 0..400 {
        pipeline.push(&chunk, &mut on_hop);
    }
    let after = WORKER_ALLOCS.load(Ordering::Relaxed);
    COUNT_HERE.with(|c| c.set(false));
    assert!(hops > 20, "only {hops} hops");
    assert_eq!(
        after - before,
        0,
        "{} allocations in steady state",
        after - before
    );
}
