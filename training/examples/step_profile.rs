//! Where a training step's time goes: `cargo run --release -p audio-jepa-training --example
//! step_profile [CONFIG]` (default training/configs/edge.toml), synthetic clips, real masks.
//! `CANDLE_NUM_THREADS=N` sets the thread count; `PRECISION=bf16` runs the config with
//! `[optim] precision = "bf16"` (on a CPU with AVX-512 BF16: bf16 products, f32 elsewhere).

use std::time::Instant;

use audio_jepa::model::fused;
use audio_jepa_training::config::LossKind;
use audio_jepa_training::config::{Precision, TrainConfig};
use audio_jepa_training::features::ClipFeatures;
use audio_jepa_training::jepa::MaskTensors;
use audio_jepa_training::loader::{make_batch, Corpus};
use audio_jepa_training::train::Trainer;
use candle_core::{Device, Tensor};

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "training/configs/edge.toml".into());
    let cfg = TrainConfig::load(std::path::Path::new(&path))?;
    let clips: Vec<ClipFeatures> = (0..16)
        .map(|i| ClipFeatures {
            path: format!("c{i}").into(),
            n_frames: 300,
            data: (0..300 * 128)
                .map(|j| ((j * 7 + i) % 13) as f32 - 8.0)
                .collect::<Vec<_>>()
                .into(),
        })
        .collect();
    let clips = Corpus::new(clips, &cfg);
    let mut t = Trainer::new(cfg.clone(), &Device::Cpu)?;
    if std::env::var("PRECISION").as_deref() == Ok("bf16") {
        t.set_precision(Precision::Bf16)?;
    }
    let bf16 = t.cpu_bf16_products();
    let dev = Device::Cpu;
    let mut acc = [0.0f64; 6];
    let mut ctx_len = 0usize;
    let n = 6;
    fused::with_bf16_products(bf16, || -> anyhow::Result<()> {
        for s in 0..n + 1 {
            let b = make_batch(&clips, &cfg, s);
            let x = Tensor::from_slice(&b.patches, (b.batch, b.n_patches, 256), &dev)?;
            let m = MaskTensors::new(&b.masks, &dev)?;
            if s > 0 {
                ctx_len += m.context.dim(1)?;
            }
            let j = &t.jepa;
            let t0 = Instant::now();
            let h = j.targets(&x)?;
            let t1 = Instant::now();
            let z = j.context.forward(&x, Some(&m.context))?;
            let t2 = Instant::now();
            let preds = j
                .predictor
                .forward(&z, &m.context, &m.targets, b.n_patches)?;
            let mut loss = Tensor::zeros((), candle_core::DType::F32, &dev)?;
            for (p, idx) in preds.iter().zip(&m.targets) {
                let tg = audio_jepa::model::vit::gather_tokens(&h, idx)?;
                loss = (loss + (p - tg)?.sqr()?.mean_all()?)?;
            }
            let _ = loss.to_scalar::<f32>()?;
            let t3 = Instant::now();
            let grads = loss.backward()?;
            let t4 = Instant::now();
            let gn = (t.opt.grad_sq_norm(&grads)?.to_scalar::<f32>()? as f64).sqrt();
            t.opt.step(&grads, 1e-4, 0.04, 1.0 / gn.max(1.0))?;
            let t5 = Instant::now();
            j.ema_update(0.996)?;
            let t6 = Instant::now();
            if s > 0 {
                for (k, d) in [t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5]
                    .iter()
                    .enumerate()
                {
                    acc[k] += d.as_secs_f64() * 1e3 / n as f64;
                }
            }
            let _ = LossKind::Mse;
        }
        Ok(())
    })?;
    let names = [
        "target fwd",
        "context fwd",
        "predictor fwd+loss",
        "backward",
        "optimizer",
        "ema",
    ];
    let total: f64 = acc.iter().sum();
    for (nm, v) in names.iter().zip(acc) {
        println!("{nm:20} {v:8.1} ms  {:5.1} %", 100.0 * v / total);
    }
    println!(
        "{:20} {total:8.1} ms  ({:.1} samples/s; {} threads, {} products, mean context {:.0} patches, peak RSS {} MiB)",
        "step",
        cfg.optim.batch_size as f64 / total * 1e3,
        candle_core::utils::get_num_threads(),
        if bf16 { "bf16" } else { "f32" },
        ctx_len as f64 / n as f64,
        peak_rss_mib().map_or("?".into(), |m| m.to_string()),
    );
    Ok(())
}

/// This process's peak resident memory (Linux `VmHWM`).
fn peak_rss_mib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}
