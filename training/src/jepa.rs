//! The JEPA: context encoder, EMA target encoder and predictor, their initialisation, the loss
//! and the EMA update (I-JEPA's src/train.py `train_step`, A-JEPA's squared-L2 loss); the
//! objective itself is in [`crate::objective`].

use std::collections::HashMap;

use audio_jepa::model::vit::Mode;
use audio_jepa::model::{Encoder, EncoderConfig};
use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::{LossKind, PatchInit};
use crate::masks::BatchMasks;
use crate::objective::{jepa_loss, target_latents, Objective};
use crate::predictor::{Predictor, PredictorConfig};

pub struct Jepa {
    pub enc_cfg: EncoderConfig,
    pub pred_cfg: PredictorConfig,
    pub context: Encoder,
    pub target: Encoder,
    pub predictor: Predictor,
    context_vars: VarMap,
    target_vars: VarMap,
    predictor_vars: VarMap,
    pub device: Device,
    /// The dtype of the forward and backward passes: F32, or BF16 for mixed precision (the
    /// parameters, optimiser state, EMA and loss stay f32; see [`Jepa::loss`]).
    compute: DType,
}

/// The indices of one batch's masks as tensors.
pub struct MaskTensors {
    pub context: Tensor,
    pub targets: Vec<Tensor>,
}

impl MaskTensors {
    pub fn new(m: &BatchMasks, device: &Device) -> Result<Self> {
        let stack = |rows: &[Vec<u32>]| -> Result<Tensor> {
            let b = rows.len();
            let k = rows.first().map_or(0, Vec::len);
            let flat: Vec<u32> = rows.iter().flatten().copied().collect();
            Tensor::from_vec(flat, (b, k), device)
        };
        Ok(Self {
            context: stack(&m.context)?,
            targets: m.targets.iter().map(|t| stack(t)).collect::<Result<_>>()?,
        })
    }
}

fn sorted_vars(vm: &VarMap) -> Vec<(String, Var)> {
    let data = vm.data().lock().unwrap_or_else(|p| p.into_inner());
    let mut v: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// I-JEPA's initialisation (src/models/vision_transformer.py `_init_weights`, `fix_init_weight`):
/// linear weights ~ N(0, 0.02) (its truncation at +-2 is 100 standard deviations out), biases 0,
/// LayerNorm 1 and 0, the mask token N(0, 0.02); the output projections of block `i` are scaled
/// by `1 / sqrt(2 (i + 1))`. Seeded, in name order, so a run is reproducible.
fn init_vars(vm: &VarMap, rng: &mut ChaCha8Rng, patch_init: PatchInit) -> Result<()> {
    for (name, var) in sorted_vars(vm) {
        let t = var.as_tensor();
        let is_norm = name.contains("norm");
        let value = if name.ends_with(".bias") {
            t.zeros_like()?
        } else if is_norm {
            t.ones_like()?
        } else if patch_init == PatchInit::Xavier && name == "patch_embed.proj.weight" {
            let (fan_out, fan_in) = t.dims2()?;
            let bound = (6.0 / (fan_in + fan_out) as f64).sqrt();
            let data: Vec<f32> = (0..fan_out * fan_in)
                .map(|_| rng.random_range(-bound..bound) as f32)
                .collect();
            Tensor::from_vec(data, t.shape(), t.device())?
        } else {
            let n = t.elem_count();
            let mut data = Vec::with_capacity(n);
            while data.len() < n {
                // Box-Muller.
                let u1: f64 = rng.random_range(f64::EPSILON..1.0);
                let u2: f64 = rng.random();
                let r = (-2.0 * u1.ln()).sqrt();
                data.push((r * (2.0 * std::f64::consts::PI * u2).cos() * 0.02) as f32);
                data.push((r * (2.0 * std::f64::consts::PI * u2).sin() * 0.02) as f32);
            }
            data.truncate(n);
            let mut w = Tensor::from_vec(data, t.shape(), t.device())?;
            if name.ends_with("attn.proj.weight") || name.ends_with("mlp.fc2.weight") {
                if let Some(layer) = block_index(&name) {
                    w = (w / (2.0 * (layer as f64 + 1.0)).sqrt())?;
                }
            }
            w
        };
        var.set(&value)?;
    }
    Ok(())
}

fn block_index(name: &str) -> Option<usize> {
    let rest = name.split("blocks.").nth(1)?;
    rest.split('.').next()?.parse().ok()
}

impl Jepa {
    /// A freshly initialised JEPA (seeded); the target encoder starts as a copy of the context one.
    pub fn new(
        enc_cfg: &EncoderConfig,
        pred_cfg: &PredictorConfig,
        device: &Device,
        seed: u64,
        patch_init: PatchInit,
    ) -> Result<Self> {
        let context_vars = VarMap::new();
        let target_vars = VarMap::new();
        let predictor_vars = VarMap::new();
        let mut context = Encoder::load(
            VarBuilder::from_varmap(&context_vars, DType::F32, device),
            enc_cfg,
        )?;
        context.set_mode(Mode::Train);
        let mut target = Encoder::load(
            VarBuilder::from_varmap(&target_vars, DType::F32, device),
            enc_cfg,
        )?;
        // The training kernels (on the CPU the fused ops of `model::fused`) are also candle's
        // fastest forward pass; the target's output is detached, so no gradient flows into it.
        target.set_mode(Mode::Train);
        let predictor = Predictor::load(
            VarBuilder::from_varmap(&predictor_vars, DType::F32, device),
            pred_cfg,
            enc_cfg,
        )?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        init_vars(&context_vars, &mut rng, patch_init)?;
        init_vars(&predictor_vars, &mut rng, patch_init)?;
        let jepa = Self {
            enc_cfg: enc_cfg.clone(),
            pred_cfg: pred_cfg.clone(),
            context,
            target,
            predictor,
            context_vars,
            target_vars,
            predictor_vars,
            device: device.clone(),
            compute: DType::F32,
        };
        jepa.ema_update(0.0)?;
        Ok(jepa)
    }

    /// Runs the forward and backward passes in `dtype` (F32 or BF16); the parameters stay f32.
    pub fn set_compute_dtype(&mut self, dtype: DType) -> Result<()> {
        if !matches!(dtype, DType::F32 | DType::BF16) {
            candle_core::bail!("compute dtype {dtype:?}: only f32 and bf16 are supported");
        }
        self.compute = dtype;
        Ok(())
    }

    pub fn compute_dtype(&self) -> DType {
        self.compute
    }

    /// Mixed precision (I-JEPA's `use_bfloat16`, which runs `torch.cuda.amp.autocast`): the
    /// three networks rebuilt for this step from bf16 casts of the f32 master parameters. The
    /// casts are differentiable, so the backward pass runs through bf16 matmuls and arrives at
    /// the masters as f32 gradients; layer norms, softmaxes (see `model::ops`), the target
    /// normalisation and the loss are computed in f32. Rebuilding is cheap: one cast kernel per
    /// parameter, no copy of the graph.
    fn cast_networks(&self, dtype: DType) -> Result<(Encoder, Encoder, Predictor)> {
        let vb = |vm: &VarMap| -> Result<VarBuilder<'static>> {
            let cast = sorted_vars(vm)
                .into_iter()
                .map(|(k, v)| Ok((k, v.as_tensor().to_dtype(dtype)?)))
                .collect::<Result<HashMap<String, Tensor>>>()?;
            Ok(VarBuilder::from_tensors(cast, dtype, &self.device))
        };
        let mut context = Encoder::load(vb(&self.context_vars)?, &self.enc_cfg)?;
        context.set_mode(Mode::Train);
        let mut target = Encoder::load(vb(&self.target_vars)?, &self.enc_cfg)?;
        target.set_mode(Mode::Train);
        let predictor = Predictor::load(vb(&self.predictor_vars)?, &self.pred_cfg, &self.enc_cfg)?;
        Ok((context, target, predictor))
    }

    /// Parameters the optimiser updates: `context.*` and `predictor.*`.
    pub fn trainable_vars(&self) -> Vec<(String, Var)> {
        let mut v: Vec<(String, Var)> = sorted_vars(&self.context_vars)
            .into_iter()
            .map(|(k, var)| (format!("context.{k}"), var))
            .collect();
        v.extend(
            sorted_vars(&self.predictor_vars)
                .into_iter()
                .map(|(k, var)| (format!("predictor.{k}"), var)),
        );
        v
    }

    /// The context encoder's parameters.
    pub fn context_vars(&self) -> Vec<(String, Var)> {
        sorted_vars(&self.context_vars)
    }

    /// The target encoder's parameters (never given to the optimiser).
    pub fn target_vars(&self) -> Vec<(String, Var)> {
        sorted_vars(&self.target_vars)
    }

    /// `target = m * target + (1 - m) * context`, parameter by parameter.
    pub fn ema_update(&self, momentum: f64) -> Result<()> {
        let ctx: HashMap<String, Var> = sorted_vars(&self.context_vars).into_iter().collect();
        for (name, t) in sorted_vars(&self.target_vars) {
            let c = ctx
                .get(&name)
                .ok_or_else(|| candle_core::Error::Msg(format!("no context parameter {name}")))?;
            let next = if momentum == 0.0 {
                c.as_tensor().copy()?
            } else {
                ((t.as_tensor() * momentum)? + (c.as_tensor() * (1.0 - momentum))?)?
            };
            t.set(&next)?;
        }
        Ok(())
    }

    /// Target latents: the target encoder on every patch, layer-normalised without affine
    /// parameters (I-JEPA: `F.layer_norm(h, (h.size(-1),))`), in f32, detached from the graph.
    pub fn targets(&self, patches: &Tensor) -> Result<Tensor> {
        target_latents(&self.target, patches, 1)
    }

    /// The JEPA loss of one batch: `patches` `[B, N, patch_len]` (f32), masks as index tensors,
    /// I-JEPA's objective. A scalar f32 tensor whatever the compute dtype.
    pub fn loss(&self, patches: &Tensor, masks: &MaskTensors, kind: LossKind) -> Result<Tensor> {
        self.objective_loss(
            patches,
            None,
            std::slice::from_ref(masks),
            &Objective::plain(kind),
        )
    }

    /// The loss of [`objective::jepa_loss`]: the target encoder sees `teacher`, the context
    /// encoder `student` (or `teacher` when `None`), once per masked view.
    pub fn objective_loss(
        &self,
        teacher: &Tensor,
        student: Option<&Tensor>,
        views: &[MaskTensors],
        obj: &Objective,
    ) -> Result<Tensor> {
        let student = student.unwrap_or(teacher);
        if self.compute == DType::F32 {
            return jepa_loss(
                (&self.context, &self.target, &self.predictor),
                teacher,
                student,
                views,
                obj,
            );
        }
        let (context, target, predictor) = self.cast_networks(self.compute)?;
        jepa_loss(
            (&context, &target, &predictor),
            &teacher.to_dtype(self.compute)?,
            &student.to_dtype(self.compute)?,
            views,
            obj,
        )
    }

    /// Sets the context encoder and its EMA target to `encoder`'s weights (named as an encoder
    /// file names them), leaving the predictor as it is: continued pretraining from an encoder
    /// alone (`pretrain --init ENCODER`). Every tensor of the run's encoder must be given,
    /// with its shape.
    pub fn load_encoder_tensors(&self, encoder: &HashMap<String, Tensor>) -> Result<()> {
        for vm in [&self.context_vars, &self.target_vars] {
            for (k, v) in sorted_vars(vm) {
                self.set_var(&v, encoder.get(&k), &k, "the encoder")?;
            }
        }
        Ok(())
    }

    /// Sets `v` to `t` (named `key` in `source`), which must exist and have `v`'s shape.
    fn set_var(&self, v: &Var, t: Option<&Tensor>, key: &str, source: &str) -> Result<()> {
        let t = t.ok_or_else(|| candle_core::Error::Msg(format!("{source} lacks {key}")))?;
        if t.shape() != v.shape() {
            candle_core::bail!(
                "{source}: {key} has shape {:?}, the run's model needs {:?}",
                t.shape(),
                v.shape()
            );
        }
        v.set(&t.to_dtype(v.dtype())?.to_device(&self.device)?)
    }

    /// Every tensor, prefixed `context.`, `target.`, `predictor.`.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (prefix, vm) in [
            ("context", &self.context_vars),
            ("target", &self.target_vars),
            ("predictor", &self.predictor_vars),
        ] {
            for (k, v) in sorted_vars(vm) {
                out.insert(format!("{prefix}.{k}"), v.as_tensor().clone());
            }
        }
        out
    }

    /// The context (online) encoder's tensors without prefix.
    pub fn context_encoder_tensors(&self) -> HashMap<String, Tensor> {
        sorted_vars(&self.context_vars)
            .into_iter()
            .map(|(k, v)| (k, v.as_tensor().clone()))
            .collect()
    }

    /// The target (EMA) encoder's tensors without prefix.
    pub fn target_encoder_tensors(&self) -> HashMap<String, Tensor> {
        sorted_vars(&self.target_vars)
            .into_iter()
            .map(|(k, v)| (k, v.as_tensor().clone()))
            .collect()
    }

    /// Restores every tensor saved by [`Jepa::tensors`]; names and shapes must match.
    pub fn load_tensors(&self, saved: &HashMap<String, Tensor>) -> Result<()> {
        for (prefix, vm) in [
            ("context", &self.context_vars),
            ("target", &self.target_vars),
            ("predictor", &self.predictor_vars),
        ] {
            for (k, v) in sorted_vars(vm) {
                let key = format!("{prefix}.{k}");
                self.set_var(&v, saved.get(&key), &key, "the checkpoint")?;
            }
        }
        Ok(())
    }
}
