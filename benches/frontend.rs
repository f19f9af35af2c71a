//! Front-end cost per second of audio, offline and streaming, one thread.
//!
//! `cargo bench --bench frontend`. Uses a real ESC-50 clip from ../shared/data when present,
//! otherwise a synthetic chirp plus noise of the same length (5 s).

use std::path::Path;

use audio_jepa::frontend::{LogMelExtractor, StreamingFbank};
use audio_jepa::FrontendConfig;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn signal(cfg: &FrontendConfig) -> Vec<f32> {
    let clip =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/esc50/audio/1-17367-A-10.flac");
    if let Ok(a) = audio_jepa::audio::load(&clip, cfg.sample_rate) {
        return a.samples;
    }
    eprintln!(
        "{} not found: benchmarking a synthetic 5 s signal",
        clip.display()
    );
    let mut s = 1u32;
    (0..5 * cfg.sample_rate as usize)
        .map(|i| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let t = i as f32 / cfg.sample_rate as f32;
            (2.0 * std::f32::consts::PI * (100.0 + 300.0 * t) * t).sin() * 0.3
                + ((s >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.1
        })
        .collect()
}

fn frontend(c: &mut Criterion) {
    let cfg = FrontendConfig::default();
    let x = signal(&cfg);
    let seconds = x.len() as f64 / cfg.sample_rate as f64;
    let mut g = c.benchmark_group("frontend");
    // Throughput in "elements" = milliseconds of audio, so criterion's elem/s reads as
    // real-time speed-up x 1000.
    g.throughput(Throughput::Elements((seconds * 1000.0) as u64));

    let mut offline = LogMelExtractor::new(&cfg).unwrap();
    let mut out = vec![0.0; cfg.num_frames(x.len()) * cfg.n_mels];
    g.bench_function("offline", |b| b.iter(|| offline.compute_into(&x, &mut out)));

    for chunk in [160usize, 1024, 16_000] {
        let mut s = StreamingFbank::new(&cfg).unwrap();
        g.bench_with_input(BenchmarkId::new("streaming", chunk), &chunk, |b, &chunk| {
            b.iter(|| {
                s.reset();
                let mut acc = 0.0f32;
                for c in x.chunks(chunk) {
                    s.push(c, |_, f| acc += f[0]);
                }
                acc
            })
        });
    }
    g.finish();
}

criterion_group!(benches, frontend);
criterion_main!(benches);
