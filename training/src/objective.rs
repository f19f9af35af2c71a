//! The training objective: what the target encoder's latents are, and how the predictions are
//! scored against them.
//!
//! * I-JEPA (src/train.py `forward_target`, `loss_fn`): the target encoder's last output,
//!   layer-normalised without affine parameters; each masked view's predictions regressed on it.
//! * Multi-layer targets (data2vec section 3.3, EAT section 3.2): the outputs of the last
//!   `target_layers` blocks, each instance-normalised over the tokens, averaged, then
//!   layer-normalised as above.
//! * Several masked views per target pass (EAT's "multi-mask", section 3.3): the teacher's forward
//!   pass is paid once and `views` independent context/target masks each get a student pass.
//! * An utterance-level loss (EAT section 3.2): the mean of the student's context tokens regresses
//!   the mean of the target latents over the whole crop, weighted by `utterance_weight`.

use audio_jepa::model::vit::gather_tokens;
use audio_jepa::model::Encoder;
use candle_core::{DType, Result, Tensor, D};
use serde::{Deserialize, Serialize};

use crate::config::LossKind;
use crate::jepa::MaskTensors;
use crate::predictor::Predictor;

/// `[objective]` of a training config. The defaults are I-JEPA's objective.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObjectiveConfig {
    /// Independent masked views of each crop per target-encoder pass (EAT uses 16).
    pub views: usize,
    /// How many of the target encoder's last blocks the targets average (1: its final output).
    pub target_layers: usize,
    /// Weight of the utterance-level loss (0: off; EAT uses 1).
    pub utterance_weight: f64,
}

impl Default for ObjectiveConfig {
    fn default() -> Self {
        Self {
            views: 1,
            target_layers: 1,
            utterance_weight: 0.0,
        }
    }
}

impl ObjectiveConfig {
    /// The reason a setting is unusable with an encoder of `depth` blocks, naming the setting.
    pub fn check(&self, depth: usize) -> std::result::Result<(), (&'static str, String)> {
        if !(1..=64).contains(&self.views) {
            return Err(("objective.views", format!("{} (1 to 64 views)", self.views)));
        }
        if !(1..=depth).contains(&self.target_layers) {
            return Err((
                "objective.target_layers",
                format!("{} (1 to the encoder's {depth} blocks)", self.target_layers),
            ));
        }
        let w = self.utterance_weight;
        if !(w.is_finite() && (0.0..=100.0).contains(&w)) {
            return Err(("objective.utterance_weight", format!("{w} (0 to 100)")));
        }
        Ok(())
    }
}

/// What one loss evaluation needs besides the networks.
#[derive(Debug, Clone, Copy)]
pub struct Objective {
    pub kind: LossKind,
    pub target_layers: usize,
    pub utterance_weight: f64,
}

impl Objective {
    /// I-JEPA's objective with `kind`.
    pub fn plain(kind: LossKind) -> Self {
        Self {
            kind,
            target_layers: 1,
            utterance_weight: 0.0,
        }
    }

    pub fn from_config(cfg: &ObjectiveConfig, kind: LossKind) -> Self {
        Self {
            kind,
            target_layers: cfg.target_layers,
            utterance_weight: cfg.utterance_weight,
        }
    }
}

/// Normalises `x: [B, N, D]` to zero mean and unit variance over `dim`, without affine
/// parameters: over the channels (`D::Minus1`, I-JEPA's layer norm of the targets) or over the
/// tokens (`1`, data2vec's instance norm, channel by channel).
fn normalise(x: &Tensor, dim: impl candle_core::shape::Dim + Copy) -> Result<Tensor> {
    let mean = x.mean_keepdim(dim)?;
    let c = x.broadcast_sub(&mean)?;
    let var = c.sqr()?.mean_keepdim(dim)?;
    c.broadcast_div(&(var + 1e-5)?.sqrt()?)
}

/// `acc + t`, or `t` when nothing is accumulated yet.
fn add(acc: Option<Tensor>, t: Tensor) -> Result<Tensor> {
    match acc {
        None => Ok(t),
        Some(a) => a + t,
    }
}

/// Target latents `[B, N, D]` of every patch, in f32, detached from the graph.
pub fn target_latents(target: &Encoder, patches: &Tensor, layers: usize) -> Result<Tensor> {
    if layers <= 1 {
        let h = target
            .forward(patches, None)?
            .detach()
            .to_dtype(DType::F32)?;
        return normalise(&h, D::Minus1);
    }
    let outs = target.forward_layers(patches, layers)?;
    let mut sum: Option<Tensor> = None;
    for o in &outs {
        let o = normalise(&o.detach().to_dtype(DType::F32)?, 1)?;
        sum = Some(add(sum, o)?);
    }
    let sum = sum.ok_or_else(|| candle_core::Error::Msg("no target layers".into()))?;
    normalise(&(sum / outs.len() as f64)?, D::Minus1)
}

/// `kind`'s per-element loss, summed, and the element count.
fn regression(pred: &Tensor, target: &Tensor, kind: LossKind) -> Result<(Tensor, usize)> {
    let diff = (pred.to_dtype(DType::F32)? - target)?;
    let per = match kind {
        LossKind::Mse => diff.sqr()?,
        LossKind::SmoothL1 => {
            let d = diff.abs()?;
            let c = d.clamp(0f32, 1f32)?;
            ((c.sqr()? * 0.5)? + (d - c)?)?
        }
    };
    Ok((per.sum_all()?, per.elem_count()))
}

/// The JEPA loss of one batch on the given networks: the target encoder sees `teacher`
/// (`[B, N, patch_len]`), the context encoder `student` (the same crops, or a mixture, see
/// `loader`), once per view in `views`; the mean over views. A scalar f32 tensor.
pub fn jepa_loss(
    (context, target, predictor): (&Encoder, &Encoder, &Predictor),
    teacher: &Tensor,
    student: &Tensor,
    views: &[MaskTensors],
    obj: &Objective,
) -> Result<Tensor> {
    if views.is_empty() {
        candle_core::bail!("no masked views");
    }
    let n = teacher.dim(1)?;
    let h = target_latents(target, teacher, obj.target_layers)?;
    let utterance = if obj.utterance_weight > 0.0 {
        Some(h.mean(1)?)
    } else {
        None
    };
    let mut total: Option<Tensor> = None;
    for masks in views {
        let z = context.forward(student, Some(&masks.context))?;
        let preds = predictor.forward(&z, &masks.context, &masks.targets, n)?;
        // The mean over every target element of every block, as I-JEPA's `loss_fn` averages
        // the concatenated blocks.
        let mut sum: Option<Tensor> = None;
        let mut count = 0usize;
        for (pred, idx) in preds.iter().zip(&masks.targets) {
            let (s, c) = regression(pred, &gather_tokens(&h, idx)?, obj.kind)?;
            count += c;
            sum = Some(add(sum, s)?);
        }
        let sum = sum.ok_or_else(|| candle_core::Error::Msg("no target blocks".into()))?;
        let mut view = (sum / count.max(1) as f64)?;
        if let Some(u) = &utterance {
            let pooled = z.to_dtype(DType::F32)?.mean(1)?;
            let (s, c) = regression(&pooled, u, obj.kind)?;
            view = (view + ((s / c.max(1) as f64)? * obj.utterance_weight)?)?;
        }
        total = Some(add(total, view)?);
    }
    let total = total.ok_or_else(|| candle_core::Error::Msg("no masked views".into()))?;
    if views.len() == 1 {
        Ok(total)
    } else {
        total / views.len() as f64
    }
}
