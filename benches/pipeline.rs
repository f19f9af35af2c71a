//! The whole streaming pipeline on a file, one thread: samples in 10 ms pushes -> streaming
//! log-mel -> sliding window -> engine (f32 or int8) every 160 ms hop -> head -> smoothing.
//! Throughput is reported per millisecond of audio, so criterion's "elem/s" divided by 1000
//! is the real-time speed-up.
//!
//! `cargo bench --bench pipeline`. Uses a real ESC-50 clip from ../shared/data when present,
//! otherwise a synthetic 5 s signal.

use std::path::Path;
use std::sync::Arc;

use audio_jepa::engine::{FastEncoder, Isa, Precision};
use audio_jepa::stream::worker::{Pipeline, PipelineConfig};
use audio_jepa::FrontendConfig;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn signal() -> Vec<f32> {
    let clip =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/esc50/audio/1-17367-A-10.flac");
    if let Ok(a) = audio_jepa::audio::load(&clip, 16_000) {
        return a.samples;
    }
    eprintln!("{} not found: a synthetic 5 s signal", clip.display());
    let mut s = 1u32;
    (0..80_000)
        .map(|i| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (i as f32 * 0.05).sin() * 0.3 + ((s >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.1
        })
        .collect()
}

fn pipeline(c: &mut Criterion) {
    let x = signal();
    let enc = audio_jepa::default_model::encoder().expect("built-in model");
    let head = audio_jepa::default_model::head().expect("built-in head");
    let mut g = c.benchmark_group("pipeline_on_a_file");
    g.throughput(Throughput::Elements((x.len() / 16) as u64)); // milliseconds of audio
    g.sample_size(20);
    for (name, precision) in [("f32", Precision::F32), ("q8", Precision::Q8)] {
        let fast =
            Arc::new(FastEncoder::from_encoder(&enc, precision, Isa::detect(), 6).expect("engine"));
        g.bench_function(BenchmarkId::new("default_model", name), |b| {
            b.iter(|| {
                let mut p = Pipeline::new(
                    PipelineConfig::default(),
                    &FrontendConfig::default(),
                    16_000,
                    fast.clone(),
                    head.clone(),
                )
                .expect("pipeline");
                let mut hops = 0usize;
                for chunk in x.chunks(160) {
                    p.push(chunk, &mut |_| hops += 1);
                }
                hops
            })
        });
    }
    g.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
