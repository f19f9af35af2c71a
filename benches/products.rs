//! The training step's linear-layer products, one thread: the engine's f32 kernel against its
//! bf16 one (`engine::gemm_bf16`, AVX-512 BF16; the portable fallback elsewhere, which is not
//! meant to be fast), at the reference config's shapes (44 context tokens x batch 32 = 1408 rows;
//! encoder width 192, MLP 768). The bf16 case includes converting the input rows, as the
//! training ops do on every call; packing the weights (once per call in training) is timed
//! apart.
//!
//! `cargo bench --bench products`. Results: BENCHMARKS.md, "bf16 products on the CPU".

use audio_jepa::engine::gemm::{gemm, PackedF32};
use audio_jepa::engine::gemm_bf16::{self, PackedBf16};
use audio_jepa::engine::Isa;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 + seed * 104729) % 2000) as f32 / 1000.0 - 1.0)
        .collect()
}

fn products(c: &mut Criterion) {
    let isa = Isa::detect();
    let mut g = c.benchmark_group("train_products");
    let m = 1408;
    // (name, n, k): qkv, fc1, fc2 of the encoder.
    for (name, n, k) in [("qkv", 576, 192), ("fc1", 768, 192), ("fc2", 192, 768)] {
        let a = values(m * k, 1);
        let w = values(n * k, 2);
        let b = values(n, 3);
        let mut out = vec![0f32; m * n];
        g.throughput(Throughput::Elements((m * n * k) as u64));
        let packed = PackedF32::new(&w, Some(&b), n, k);
        g.bench_function(BenchmarkId::new("f32", name), |bch| {
            bch.iter(|| gemm(isa, &a, m, &packed, &mut out, false))
        });
        let packed = PackedBf16::new(&w, Some(&b), n, k);
        let mut pairs = Vec::new();
        g.bench_function(BenchmarkId::new("bf16", name), |bch| {
            bch.iter(|| {
                gemm_bf16::rows_to_bf16(&a, m, k, &mut pairs);
                gemm_bf16::gemm(&pairs, m, &packed, &mut out, false)
            })
        });
        g.bench_function(BenchmarkId::new("pack_f32", name), |bch| {
            bch.iter(|| PackedF32::new(&w, Some(&b), n, k))
        });
        g.bench_function(BenchmarkId::new("pack_bf16", name), |bch| {
            bch.iter(|| PackedBf16::new(&w, Some(&b), n, k))
        });
    }
    g.finish();
}

criterion_group!(benches, products);
criterion_main!(benches);
