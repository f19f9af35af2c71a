//! Full fine-tuning of the encoder and a linear head on labeled windows, on the CPU.
//!
//! The head starts from the linear probe on frozen embeddings (linear probing then fine-tuning:
//! the pretrained features are not wrecked by gradients from a random head in the first steps).
//! Regularisation is A-JEPA's regularized masking (section 3.4; DESIGN.md): in every layer a
//! random 10 % of tokens may not serve as keys or values for the others. Early stopping keeps the
//! weights of the epoch with the best clip accuracy on the validation split (lower validation
//! loss breaks ties); epoch 0, the starting point, is a candidate too, so fine-tuning never
//! returns something worse on validation than the probe it started from. Pure computation: progress goes to a callback, nothing is printed.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::windows::ClipWindows;
use crate::model::head::{Activation, Head};
use crate::model::pooling::Pooling;
use crate::model::vit::{key_dropout_bias, Mode};
use crate::model::{Encoder, EncoderConfig};

#[derive(Debug, Clone, PartialEq)]
pub struct FinetuneConfig {
    pub max_epochs: usize,
    /// Stop after this many epochs without a better validation result.
    pub patience: usize,
    pub batch_size: usize,
    /// Peak learning rate of the encoder (the head uses ten times this).
    pub lr: f64,
    pub weight_decay: f64,
    /// Fraction of tokens per layer that may not be attended to (regularized masking).
    pub key_drop: f64,
    pub seed: u64,
    /// The encoder's and head's products in bf16 with f32 sums (`model::fused`'s
    /// `with_bf16_products`) on a CPU with AVX-512 BF16, about 1.5x faster steps; f32 where
    /// the CPU lacks it. Validation stays f32.
    pub bf16_products: bool,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        Self {
            max_epochs: 30,
            patience: 6,
            batch_size: 32,
            lr: 1e-4,
            weight_decay: 0.05,
            key_drop: 0.1,
            seed: 0,
            bf16_products: false,
        }
    }
}

/// Clips cut into windows, with one label per clip.
#[derive(Debug, Clone, Default)]
pub struct LabeledClips {
    pub clips: Vec<ClipWindows>,
    pub labels: Vec<usize>,
}

impl LabeledClips {
    pub fn windows(&self) -> usize {
        self.clips.iter().map(|c| c.n).sum()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EpochStats {
    pub epoch: usize,
    pub train_loss: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    pub seconds: f64,
}

pub struct Finetuned {
    pub encoder: HashMap<String, Tensor>,
    pub head: Head,
    pub best_epoch: usize,
    pub history: Vec<EpochStats>,
}

/// Clip-level prediction: the mean over a clip's windows of the head's class probabilities.
pub fn clip_probabilities(
    enc: &Encoder,
    head: &Head,
    clip: &ClipWindows,
) -> candle_core::Result<Vec<f32>> {
    let pooled = super::windows::embed_windows(enc, clip, 32, head.pool)?;
    let mut mean = vec![0f32; head.classes()];
    let mut p = Vec::with_capacity(head.classes());
    for v in pooled.chunks(head.dim) {
        head.scores_into(v, &mut p);
        for (m, x) in mean.iter_mut().zip(&p) {
            *m += x / clip.n.max(1) as f32;
        }
    }
    Ok(mean)
}

fn set_vars(vm: &VarMap, tensors: &HashMap<String, Tensor>) -> candle_core::Result<()> {
    let data = vm
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("poisoned".into()))?;
    for (name, var) in data.iter() {
        let t = tensors
            .get(name)
            .ok_or_else(|| candle_core::Error::Msg(format!("missing tensor `{name}`")))?;
        var.set(&t.to_dtype(DType::F32)?)?;
    }
    Ok(())
}

fn snapshot(vm: &VarMap) -> candle_core::Result<HashMap<String, Tensor>> {
    let data = vm
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("poisoned".into()))?;
    data.iter()
        .map(|(n, v)| Ok((n.clone(), v.as_tensor().copy()?)))
        .collect()
}

fn head_from(w: &Var, b: &Var, labels: &[String], pool: Pooling) -> candle_core::Result<Head> {
    let (c, d) = w.dims2()?;
    Ok(Head {
        labels: labels.to_vec(),
        weight: w.as_tensor().flatten_all()?.to_vec1()?,
        bias: b.as_tensor().to_vec1()?,
        dim: d,
        trained: c > 0,
        activation: Activation::Softmax,
        support: Vec::new(),
        support_labels: Vec::new(),
        window_columns: None,
        encoder: None,
        pool,
    })
}

/// Fine-tunes `encoder` (weights by name, as saved) and `init` (a softmax head, e.g. the probe)
/// on `train`, choosing the epoch by `val`. `on_epoch` sees each epoch's figures.
pub fn finetune(
    encoder: &HashMap<String, Tensor>,
    cfg: &EncoderConfig,
    init: &Head,
    train: &LabeledClips,
    val: &LabeledClips,
    ft: &FinetuneConfig,
    mut on_epoch: impl FnMut(&EpochStats),
) -> candle_core::Result<Finetuned> {
    let dev = Device::Cpu;
    let (c, d, pool) = (init.classes(), init.dim, init.pool);
    if let Err(e) = init.check_width(cfg.embed_dim, cfg.n_freq()) {
        candle_core::bail!("{e}");
    }
    if c == 0 {
        candle_core::bail!("a head with no classes cannot be fine-tuned");
    }
    let vm = VarMap::new();
    let mut enc = Encoder::load(VarBuilder::from_varmap(&vm, DType::F32, &dev), cfg)?;
    set_vars(&vm, encoder)?;
    let hw = Var::from_slice(&init.weight, (c, d), &dev)?;
    let hb = Var::from_slice(&init.bias, c, &dev)?;

    // (clip, window) pairs of the training set.
    let pairs: Vec<(usize, usize)> = train
        .clips
        .iter()
        .enumerate()
        .flat_map(|(i, w)| (0..w.n).map(move |k| (i, k)))
        .collect();
    if pairs.is_empty() {
        candle_core::bail!("no training windows");
    }
    let b = ft.batch_size.max(1);
    let steps_per_epoch = pairs.len().div_ceil(b);
    let total = steps_per_epoch * ft.max_epochs.max(1);
    let warmup = steps_per_epoch.min(total / 10).max(1);
    let params = |lr| ParamsAdamW {
        lr,
        weight_decay: ft.weight_decay,
        ..Default::default()
    };
    let mut opt_enc = AdamW::new(vm.all_vars(), params(ft.lr))?;
    let mut opt_head = AdamW::new(vec![hw.clone(), hb.clone()], params(10.0 * ft.lr))?;
    let mut rng = ChaCha8Rng::seed_from_u64(ft.seed);
    let (ppw, pl) = (
        train.clips[pairs[0].0].patches_per_window,
        train.clips[pairs[0].0].patch_len,
    );
    let labels_t: Vec<String> = init.labels.clone();

    let evaluate = |enc: &mut Encoder| -> candle_core::Result<(f64, f64)> {
        enc.set_mode(Mode::Inference);
        let head = head_from(&hw, &hb, &labels_t, pool)?;
        let (mut loss, mut right) = (0.0, 0usize);
        for (clip, &y) in val.clips.iter().zip(&val.labels) {
            let p = clip_probabilities(enc, &head, clip)?;
            loss -= (p[y].max(1e-7) as f64).ln();
            let arg = (0..p.len())
                .max_by(|&a, &b| p[a].total_cmp(&p[b]))
                .unwrap_or(0);
            right += usize::from(arg == y);
        }
        let n = val.clips.len().max(1) as f64;
        Ok((right as f64 / n, loss / n))
    };

    // Epoch 0 is the starting point (the probe on the pretrained encoder): fine-tuning must beat
    // it on the validation clips to replace it.
    let started = std::time::Instant::now();
    let (acc0, loss0) = evaluate(&mut enc)?;
    let zero = EpochStats {
        epoch: 0,
        train_loss: f64::NAN,
        val_loss: loss0,
        val_accuracy: acc0,
        seconds: started.elapsed().as_secs_f64(),
    };
    on_epoch(&zero);
    let mut history = vec![zero];
    let mut best = (acc0, loss0);
    let mut best_state = (
        snapshot(&vm)?,
        hw.as_tensor().copy()?,
        hb.as_tensor().copy()?,
        0usize,
    );
    let mut since_best = 0;
    let mut step = 0usize;
    let mut order = pairs.clone();
    for epoch in 1..=ft.max_epochs {
        let started = std::time::Instant::now();
        order.shuffle(&mut rng);
        enc.set_mode(Mode::Train);
        let mut loss_sum = 0.0;
        for chunk in order.chunks(b) {
            let lr_scale = if step < warmup {
                (step + 1) as f64 / warmup as f64
            } else {
                let t = (step - warmup) as f64 / (total - warmup).max(1) as f64;
                0.5 * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos())
            };
            opt_enc.set_learning_rate(ft.lr * lr_scale);
            opt_head.set_learning_rate(10.0 * ft.lr * lr_scale);
            let n = chunk.len();
            let mut data = Vec::with_capacity(n * ppw * pl);
            let mut y = Vec::with_capacity(n);
            for &(i, k) in chunk {
                data.extend_from_slice(train.clips[i].window(k));
                y.push(train.labels[i] as u32);
            }
            let x = Tensor::from_vec(data, (n, ppw, pl), &dev)?;
            let biases = if ft.key_drop > 0.0 {
                let mut v = Vec::with_capacity(cfg.depth);
                for _ in 0..cfg.depth {
                    let dropped: Vec<bool> =
                        (0..n * ppw).map(|_| rng.random_bool(ft.key_drop)).collect();
                    v.push(key_dropout_bias(&dropped, n, ppw, &dev)?);
                }
                Some(v)
            } else {
                None
            };
            let (loss, grads) = crate::model::fused::with_bf16_products(ft.bf16_products, || {
                let pooled = pool.pool_tensor(
                    &enc.forward_with_bias(&x, None, biases.as_deref())?,
                    cfg.n_freq(),
                )?;
                let logits = pooled
                    .matmul(&hw.as_tensor().t()?)?
                    .broadcast_add(hb.as_tensor())?;
                let target = Tensor::from_vec(y, n, &dev)?;
                let loss = candle_nn::loss::cross_entropy(&logits, &target)?;
                let grads = loss.backward()?;
                candle_core::Result::Ok((loss, grads))
            })?;
            opt_enc.step(&grads)?;
            opt_head.step(&grads)?;
            loss_sum += loss.to_scalar::<f32>()? as f64 * n as f64;
            step += 1;
        }
        let (acc, vloss) = evaluate(&mut enc)?;
        let stats = EpochStats {
            epoch,
            train_loss: loss_sum / pairs.len() as f64,
            val_loss: vloss,
            val_accuracy: acc,
            seconds: started.elapsed().as_secs_f64(),
        };
        on_epoch(&stats);
        history.push(stats);
        if acc > best.0 || (acc == best.0 && vloss < best.1) {
            best = (acc, vloss);
            best_state = (
                snapshot(&vm)?,
                hw.as_tensor().copy()?,
                hb.as_tensor().copy()?,
                epoch,
            );
            since_best = 0;
        } else {
            since_best += 1;
            if since_best >= ft.patience {
                break;
            }
        }
    }
    let (enc_best, w, bias, best_epoch) = best_state;
    hw.set(&w)?;
    hb.set(&bias)?;
    Ok(Finetuned {
        encoder: enc_best,
        head: head_from(&hw, &hb, &init.labels, pool)?,
        best_epoch,
        history,
    })
}
