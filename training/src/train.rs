//! The training step and the run state: checkpoints written atomically, resumable exactly.
//!
//! A step (I-JEPA's src/train.py): schedules for this step, the JEPA loss (see `objective`: one
//! target pass, one student pass per masked view), backward, gradient
//! clipping, AdamW, then the EMA update of the target encoder. A non-finite or exploding loss
//! stops the run before the parameters are touched, so the last checkpoint stays the last good.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use audio_jepa::model::checkpoint::{load_tensors, save_encoder, save_tensors};
use audio_jepa::model::fused;
use audio_jepa::model::ModelError;
use candle_core::{DType, Device, Tensor};

use crate::config::{ExportEncoder, Precision, TrainConfig};
use crate::distributed::{average_gradients, broadcast_vars, Collective, DistError, SingleProcess};
use crate::jepa::{Jepa, MaskTensors};
use crate::loader::Batch;
use crate::masks::MaskKind;
use crate::monitor::{collapse_stats, CollapseStats};
use crate::objective::Objective;
use crate::optim::{AdamW, AdamWParams};
use crate::schedules;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("step {step}: the loss is {loss} (not finite); stopped, the last checkpoint is the last good state")]
    NonFinite { step: u64, loss: f64 },
    #[error("step {step}: the loss {loss:.4} exploded ({factor:.0}x its running mean {mean:.4}); stopped, the last checkpoint is the last good state")]
    Exploding {
        step: u64,
        loss: f64,
        mean: f64,
        factor: f64,
    },
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Distributed(#[from] DistError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// What one step did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepStats {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub wd: f64,
    pub momentum: f64,
    pub tf_prob: f64,
    pub mask: MaskKind,
    pub grad_norm: f64,
    pub context_len: usize,
    /// How far through its schedules the run was at this step, in `[0, 1]`.
    pub progress: f64,
}

pub struct Trainer {
    pub cfg: TrainConfig,
    pub jepa: Jepa,
    pub opt: AdamW,
    /// Steps completed.
    pub step: u64,
    /// Seconds of training so far (over resumes): a wall-clock horizon's clock.
    pub elapsed_s: f64,
    loss_ema: Option<f64>,
    /// The data-parallel group this rank trains in ([`SingleProcess`] by default).
    collective: Box<dyn Collective>,
}

pub const CHECKPOINT: &str = "checkpoint.safetensors";
/// The encoder a user gets: a copy of the one `[run] export` names.
pub const ENCODER: &str = "encoder.safetensors";
/// The context (online) encoder, the one the optimiser trains.
pub const CONTEXT_ENCODER: &str = "context_encoder.safetensors";
/// The EMA target encoder.
pub const TARGET_ENCODER: &str = "target_encoder.safetensors";
pub const CONFIG: &str = "config.toml";

impl Trainer {
    pub fn new(cfg: TrainConfig, device: &Device) -> Result<Self, TrainError> {
        let enc = cfg.model.encoder_config()?;
        let jepa = Jepa::new(
            &enc,
            &cfg.predictor,
            device,
            cfg.run.seed,
            cfg.model.patch_embed_init,
        )?;
        let opt = AdamW::new(
            jepa.trainable_vars(),
            AdamWParams {
                beta1: cfg.optim.betas.0,
                beta2: cfg.optim.betas.1,
                eps: cfg.optim.eps,
            },
        )?;
        let precision = cfg.optim.precision;
        let mut t = Self {
            cfg,
            jepa,
            opt,
            step: 0,
            elapsed_s: 0.0,
            loss_ema: None,
            collective: Box::new(SingleProcess),
        };
        t.set_precision(precision)?;
        Ok(t)
    }

    /// Sets `[optim] precision` and how this trainer's device runs it. f32: everything f32.
    /// bf16 on a GPU: the networks cast to bf16 each step (candle's bf16 matmuls, I-JEPA's
    /// autocast). bf16 on a CPU with AVX-512 BF16: tensors stay f32 and the fused linear layers
    /// multiply bf16 operands with f32 sums (`engine::gemm_bf16`, twice the multiply-adds per
    /// instruction), the same arithmetic as autocast's matmuls without candle's slow CPU bf16
    /// ops. bf16 on any other CPU: f32 (candle's CPU bf16 ops are slower than f32, so a config
    /// that asks for bf16 where it pays costs nothing where it does not; `pretrain` says so).
    pub fn set_precision(&mut self, p: Precision) -> Result<(), TrainError> {
        self.cfg.optim.precision = p;
        let cpu = matches!(self.jepa.device, Device::Cpu);
        let dtype = if cpu { DType::F32 } else { p.dtype() };
        self.jepa.set_compute_dtype(dtype)?;
        Ok(())
    }

    /// Whether the steps run bf16 products on the CPU's AVX-512 BF16 ([`Trainer::set_precision`]).
    pub fn cpu_bf16_products(&self) -> bool {
        self.cfg.optim.precision == Precision::Bf16
            && matches!(self.jepa.device, Device::Cpu)
            && fused::enabled()
            && fused::bf16_available()
    }

    /// Trains as one rank of `c`'s group: rank 0's weights (context, predictor, EMA target) are
    /// copied to every rank now, and each step averages the gradients over the ranks before the
    /// optimiser, so the ranks stay identical. Call on every rank, after any resume or `--init`.
    pub fn join(&mut self, c: Box<dyn Collective>) -> Result<(), TrainError> {
        let vars: Vec<_> = self
            .jepa
            .trainable_vars()
            .into_iter()
            .chain(self.jepa.target_vars())
            .map(|(_, v)| v)
            .collect();
        broadcast_vars(&*c, &vars)?;
        self.collective = c;
        Ok(())
    }

    /// The group this rank trains in.
    pub fn collective(&self) -> &dyn Collective {
        &*self.collective
    }

    /// Schedules at `progress` in `[0, 1]` of the run: (lr, wd, momentum).
    pub fn schedules_at(&self, progress: f64) -> (f64, f64, f64) {
        let o = &self.cfg.optim;
        schedules::at_progress(
            progress,
            o.warmup_frac,
            (o.start_lr, o.lr, o.final_lr),
            o.weight_decay,
            o.ema,
        )
    }

    /// Schedules at `step` of a run scheduled by steps: (lr, wd, momentum).
    pub fn schedules(&self, step: u64) -> (f64, f64, f64) {
        self.schedules_at(self.cfg.progress(step, 0.0))
    }

    /// Runs one step on `batch` (which must be batch number `self.step`), scheduled by steps.
    pub fn train_step(&mut self, batch: &Batch) -> Result<StepStats, TrainError> {
        let progress = self.cfg.progress(self.step, 0.0);
        self.train_step_at(batch, progress)
    }

    /// Runs one step on `batch` with the schedules at `progress` in `[0, 1]` of the run.
    pub fn train_step_at(&mut self, batch: &Batch, progress: f64) -> Result<StepStats, TrainError> {
        let step = self.step;
        let (lr, wd, momentum) = self.schedules_at(progress);
        let dev = self.jepa.device.clone();
        let p = self.jepa.enc_cfg.patch_len();
        let patches = Tensor::from_slice(&batch.patches, (batch.batch, batch.n_patches, p), &dev)?;
        let shape = (batch.batch, batch.n_patches, p);
        let student = match &batch.student {
            Some(s) => Some(Tensor::from_slice(s, shape, &dev)?),
            None => None,
        };
        let views = std::iter::once(&batch.masks)
            .chain(&batch.extra_views)
            .map(|m| MaskTensors::new(m, &dev))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let obj = Objective::from_config(&self.cfg.objective, self.cfg.optim.loss);
        let (loss, mut grads) = fused::with_bf16_products(self.cpu_bf16_products(), || {
            let loss = self
                .jepa
                .objective_loss(&patches, student.as_ref(), &views, &obj)?;
            let grads = loss.backward()?;
            Ok::<_, TrainError>((loss, grads))
        })?;
        // Data-parallel ranks average their gradients (and their losses, in the same
        // all-reduce) before anything reads them, so every rank takes the same decisions below.
        let loss = if self.collective.world_size() > 1 {
            let vars: Vec<_> = self
                .jepa
                .trainable_vars()
                .into_iter()
                .map(|(_, v)| v)
                .collect();
            average_gradients(&*self.collective, &vars, &mut grads, &loss)?
        } else {
            loss
        };
        if progress < self.cfg.optim.encoder_frozen_frac {
            // The predictor alone learns (`[optim] encoder_frozen_frac`): without a gradient
            // the optimiser leaves the context encoder and its moments alone, and the EMA
            // target is not updated either (below).
            for (_, v) in self.jepa.context_vars() {
                grads.remove(v.as_tensor());
            }
        }
        // One device-to-host transfer per step (the loss and the gradient norm together): the
        // checks below need both before the parameters are touched, and nothing else is read.
        let sq_norm = self.opt.grad_sq_norm(&grads)?;
        let both = Tensor::stack(&[loss.to_dtype(DType::F32)?, sq_norm], 0)?.to_vec1::<f32>()?;
        let (loss_value, grad_norm) = (both[0] as f64, (both[1] as f64).sqrt());
        if !loss_value.is_finite() {
            return Err(TrainError::NonFinite {
                step,
                loss: loss_value,
            });
        }
        if let Some(mean) = self.loss_ema {
            let f = self.cfg.optim.explode_factor;
            if step > 20 && loss_value > f * mean {
                return Err(TrainError::Exploding {
                    step,
                    loss: loss_value,
                    mean,
                    factor: loss_value / mean,
                });
            }
        }
        self.loss_ema = Some(match self.loss_ema {
            None => loss_value,
            Some(m) => 0.98 * m + 0.02 * loss_value,
        });
        if !grad_norm.is_finite() {
            return Err(TrainError::NonFinite {
                step,
                loss: grad_norm,
            });
        }
        let clip = self.cfg.optim.clip_grad;
        let scale = if clip > 0.0 && grad_norm > clip {
            clip / grad_norm
        } else {
            1.0
        };
        self.opt.step(&grads, lr, wd, scale)?;
        if progress >= self.cfg.optim.encoder_frozen_frac {
            self.jepa.ema_update(momentum)?;
        }
        self.step += 1;
        Ok(StepStats {
            step,
            loss: loss_value,
            lr,
            wd,
            momentum,
            tf_prob: self.cfg.masks.tf_probability_at(progress),
            progress,
            mask: batch.masks.kind,
            grad_norm,
            context_len: batch.masks.context.first().map_or(0, Vec::len),
        })
    }

    /// Collapse statistics of the target encoder on a fixed batch `[clips, n_patches, p]`.
    pub fn collapse(&self, fixed: &Tensor) -> Result<CollapseStats, TrainError> {
        let h = self.jepa.target.forward(fixed, None)?;
        let (clips, tokens, d) = h.dims3()?;
        let flat: Vec<f32> = h.flatten_all()?.to_vec1()?;
        Ok(collapse_stats(&flat, clips, tokens, d))
    }

    /// Writes `checkpoint.safetensors` (model, target, predictor, optimiser moments, step and
    /// config), `config.toml` and the exported target encoder, each atomically. Rank 0 alone
    /// writes (every rank holds the same state); on the other ranks this does nothing.
    pub fn save(&self, dir: &Path) -> Result<(), TrainError> {
        if !self.collective.is_main() {
            return Ok(());
        }
        let mut tensors: HashMap<String, Tensor> = self.jepa.tensors();
        for (k, v) in self.opt.state() {
            tensors.insert(format!("opt.{k}"), v);
        }
        let toml = self.cfg.to_toml();
        let meta = HashMap::from([
            ("format".to_string(), "audio-jepa-pretrain".to_string()),
            ("step".to_string(), self.step.to_string()),
            ("elapsed_s".to_string(), self.elapsed_s.to_string()),
            (
                "loss_ema".to_string(),
                self.loss_ema.unwrap_or(f64::NAN).to_string(),
            ),
            ("config".to_string(), toml.clone()),
        ]);
        save_tensors(&dir.join(CHECKPOINT), &tensors, meta)?;
        audio_jepa::arrays::write_atomically(&dir.join(CONFIG), |w| {
            std::io::Write::write_all(w, toml.as_bytes())
        })
        .map_err(|e| TrainError::Checkpoint {
            path: dir.join(CONFIG),
            reason: e.to_string(),
        })?;
        let context = self.jepa.context_encoder_tensors();
        let target = self.jepa.target_encoder_tensors();
        save_encoder(&dir.join(CONTEXT_ENCODER), &context, &self.jepa.enc_cfg)?;
        save_encoder(&dir.join(TARGET_ENCODER), &target, &self.jepa.enc_cfg)?;
        let exported = match self.cfg.run.export {
            ExportEncoder::Context => &context,
            ExportEncoder::Target => &target,
        };
        save_encoder(&dir.join(ENCODER), exported, &self.jepa.enc_cfg)?;
        Ok(())
    }

    /// Starts this (new) run from the weights of another run's checkpoint: context encoder,
    /// EMA target and predictor, but a fresh optimiser, step 0 and the schedules from their
    /// start (a warm restart, as in SGDR; `pretrain --init`). The model shapes must match.
    /// Continued pretraining on more, or on the user's own, audio starts here.
    pub fn init_from(&mut self, dir: &Path) -> Result<(), TrainError> {
        let path = dir.join(CHECKPOINT);
        let (tensors, meta) = load_tensors(&path, &self.jepa.device)?;
        let bad = |reason: String| TrainError::Checkpoint {
            path: path.clone(),
            reason,
        };
        if meta.get("format").map(String::as_str) != Some("audio-jepa-pretrain") {
            return Err(bad("not an audio-jepa pretraining checkpoint".into()));
        }
        self.jepa
            .load_tensors(&tensors)
            .map_err(|e| bad(format!("{e} (the model and predictor sections must match)")))
    }

    /// Starts this (new) run from a trained encoder alone (an encoder file, or the built-in
    /// model): context encoder and EMA target both take its weights; the predictor keeps its
    /// fresh initialisation, and the optimiser and schedules start from their beginning.
    /// `origin` names the encoder in errors. The encoder's shape must be the run's `[model]`.
    pub fn init_from_encoder(
        &mut self,
        encoder: &audio_jepa::model::Encoder,
        origin: &Path,
    ) -> Result<(), TrainError> {
        let bad = |reason: String| TrainError::Checkpoint {
            path: origin.to_path_buf(),
            reason,
        };
        let (have, want) = (encoder.config(), &self.jepa.enc_cfg);
        if have != want {
            return Err(bad(format!(
                "the encoder is {}-wide x {} deep ({} heads, {} mel bins, patch {}), the run's [model] {}-wide x {} deep ({} heads, {} mel bins, patch {}): they must match",
                have.embed_dim, have.depth, have.num_heads, have.n_mels, have.patch_size,
                want.embed_dim, want.depth, want.num_heads, want.n_mels, want.patch_size,
            )));
        }
        let tensors: HashMap<String, Tensor> = encoder.named_tensors().into_iter().collect();
        self.jepa
            .load_encoder_tensors(&tensors)
            .map_err(|e| bad(e.to_string()))
    }

    /// Restores a run from `dir/checkpoint.safetensors`, with the config saved in it.
    pub fn resume(dir: &Path, device: &Device) -> Result<Self, TrainError> {
        let path = dir.join(CHECKPOINT);
        let (tensors, meta) = load_tensors(&path, device)?;
        let bad = |reason: String| TrainError::Checkpoint {
            path: path.clone(),
            reason,
        };
        if meta.get("format").map(String::as_str) != Some("audio-jepa-pretrain") {
            return Err(bad("not an audio-jepa pretraining checkpoint".into()));
        }
        let step: u64 = meta
            .get("step")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no step in the metadata".into()))?;
        let toml = meta
            .get("config")
            .ok_or_else(|| bad("no config in the metadata".into()))?;
        let cfg = TrainConfig::from_toml_str(toml, &path).map_err(|e| bad(e.to_string()))?;
        let mut t = Self::new(cfg, device)?;
        t.jepa
            .load_tensors(&tensors)
            .map_err(|e| bad(e.to_string()))?;
        let opt: HashMap<String, Tensor> = tensors
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("opt.").map(|k| (k.to_string(), v.clone())))
            .collect();
        t.opt
            .load_state(&opt, step)
            .map_err(|e| bad(e.to_string()))?;
        t.step = step;
        t.elapsed_s = meta
            .get("elapsed_s")
            .and_then(|s| s.parse().ok())
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .unwrap_or(0.0);
        t.loss_ema = meta
            .get("loss_ema")
            .and_then(|s| s.parse().ok())
            .filter(|v: &f64| v.is_finite());
        Ok(t)
    }
}
