//! The JEPA predictor: a narrow ViT that predicts target-encoder latents at masked positions.
//!
//! I-JEPA's `VisionTransformerPredictor` (src/models/vision_transformer.py): context tokens are
//! projected to the predictor width (`predictor_embed`) and given their position embeddings;
//! for each target block one shared learnable `mask_token` plus the target's position
//! embeddings is appended; after the blocks and `predictor_norm`, the target positions are
//! projected back to the encoder width (`predictor_proj`). Each target block is predicted in
//! its own pass, as I-JEPA does by repeating the context once per mask.

use audio_jepa::model::fused;
use audio_jepa::model::vit::{gather_tokens, Block, Mode, Norm, PosCache};
use audio_jepa::model::EncoderConfig;
use candle_core::{Result, Tensor};
use candle_nn::{linear, Init, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

/// `[predictor]` section of a training config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PredictorConfig {
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    pub mlp_ratio: usize,
}

impl Default for PredictorConfig {
    fn default() -> Self {
        // DESIGN.md's calibration run: width 128, depth 4 for a 192-wide encoder.
        Self {
            embed_dim: 128,
            depth: 4,
            num_heads: 4,
            mlp_ratio: 4,
        }
    }
}

impl PredictorConfig {
    /// The block config (the predictor's blocks are the encoder's, narrower).
    pub fn block_config(&self, enc: &EncoderConfig) -> EncoderConfig {
        EncoderConfig {
            embed_dim: self.embed_dim,
            depth: self.depth,
            num_heads: self.num_heads,
            mlp_ratio: self.mlp_ratio,
            ..enc.clone()
        }
    }
}

#[derive(Debug)]
pub struct Predictor {
    embed: Linear,
    mask_token: Tensor,
    blocks: Vec<Block>,
    norm: Norm,
    proj: Linear,
    dim: usize,
    n_freq: usize,
    pos: PosCache,
}

impl Predictor {
    pub fn load(vb: VarBuilder, cfg: &PredictorConfig, enc: &EncoderConfig) -> Result<Self> {
        let bc = cfg.block_config(enc);
        bc.validate()
            .map_err(|e| candle_core::Error::Msg(format!("predictor: {e}")))?;
        let blocks = (0..cfg.depth)
            .map(|i| Block::load(&bc, vb.pp(format!("predictor_blocks.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embed: linear(enc.embed_dim, cfg.embed_dim, vb.pp("predictor_embed"))?,
            mask_token: vb.get_with_hints(
                (1, 1, cfg.embed_dim),
                "mask_token",
                Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
            )?,
            blocks,
            norm: Norm::load(cfg.embed_dim, enc.layer_norm_eps, vb.pp("predictor_norm"))?,
            proj: linear(cfg.embed_dim, enc.embed_dim, vb.pp("predictor_proj"))?,
            dim: cfg.embed_dim,
            n_freq: enc.n_freq(),
            pos: PosCache::default(),
        })
    }

    /// `ctx`: context-encoder output `[B, K, D]` at patch indices `ctx_idx` (`[B, K]`, u32);
    /// `targets`: one `[B, N_m]` index tensor per target block; `n_patches`: size of the grid.
    /// Returns one `[B, N_m, D]` prediction per target block.
    pub fn forward(
        &self,
        ctx: &Tensor,
        ctx_idx: &Tensor,
        targets: &[Tensor],
        n_patches: usize,
    ) -> Result<Vec<Tensor>> {
        let (b, k, _) = ctx.dims3()?;
        let n_time = n_patches / self.n_freq;
        // The same cached table the encoder uses (built once, not every step).
        let pos = self
            .pos
            .get(self.n_freq, n_time, self.dim, ctx)?
            .unsqueeze(0)?
            .broadcast_as((b, n_patches, self.dim))?;
        let x = (fused::linear(ctx, &self.embed)? + gather_tokens(&pos, ctx_idx)?)?;
        let mut out = Vec::with_capacity(targets.len());
        for tgt in targets {
            let (_, n_m) = tgt.dims2()?;
            let queries = gather_tokens(&pos, tgt)?.broadcast_add(&self.mask_token)?;
            let mut h = Tensor::cat(&[&x, &queries], 1)?;
            for block in &self.blocks {
                h = block.forward(&h, Mode::Train, None)?;
            }
            let h = self.norm.forward(&h, Mode::Train)?.narrow(1, k, n_m)?;
            out.push(fused::linear(&h, &self.proj)?);
        }
        Ok(out)
    }
}
