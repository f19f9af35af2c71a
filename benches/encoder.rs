//! Encoder per hop (one window, batch 1, mean pooling), one thread: candle's f32 encoder, the
//! engine in f32 and the engine in int8, on the built-in default model and on the edge preset
//! (random weights: the speed does not depend on their values).
//!
//! `cargo bench --bench encoder`. `AJEPA_ISA=avx2` (or `scalar`) times the slower kernels.
//! The side-by-side comparison with PyTorch and ONNX Runtime is benches/peers/encoder_peers.py.

use audio_jepa::engine::{FastEncoder, Isa, Precision};
use audio_jepa::model::{Encoder, EncoderConfig};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

fn edge() -> Encoder {
    let cfg = EncoderConfig::preset("edge").expect("edge preset");
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    Encoder::load(vb, &cfg).expect("edge encoder")
}

fn encoder(c: &mut Criterion) {
    std::env::set_var("RAYON_NUM_THREADS", "1");
    let isa = Isa::detect();
    let mut g = c.benchmark_group("encoder_per_hop");
    for (name, enc) in [
        (
            "default",
            audio_jepa::default_model::encoder().expect("built-in model"),
        ),
        ("edge", edge()),
    ] {
        let cfg = enc.config().clone();
        let columns = 6; // 0.96 s
        let n = columns * cfg.n_freq();
        let x: Vec<f32> = (0..n * cfg.patch_len())
            .map(|i| (i * 7919 % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let xt = Tensor::from_slice(&x, (1, n, cfg.patch_len()), &Device::Cpu).expect("tensor");
        g.bench_function(BenchmarkId::new("candle_f32", name), |b| {
            b.iter(|| {
                enc.forward(&xt, None)
                    .and_then(|y| y.mean(1))
                    .expect("forward")
            })
        });
        for (label, precision) in [("engine_f32", Precision::F32), ("engine_q8", Precision::Q8)] {
            let fast = FastEncoder::from_encoder(&enc, precision, isa, columns).expect("engine");
            let mut s = fast.scratch();
            g.bench_function(BenchmarkId::new(label, name), |b| {
                b.iter(|| fast.forward(&x, &mut s).expect("forward"))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, encoder);
criterion_main!(benches);
