//! The Audio-JEPA encoder: a ViT over 16 x 16 log-mel patches.
//!
//! Model code is pure construction from a [`EncoderConfig`] and weights (candle-transformers
//! style: `Encoder::load(vb, &cfg)`); it does no I/O, picks no device and prints nothing.
//! [`checkpoint`] reads and writes weights (safetensors) with their config beside them.
//!
//! Reference: I-JEPA's `src/models/vision_transformer.py` (facebookresearch/ijepa), whose
//! parameter names are kept (`patch_embed.proj`, `blocks.N.attn.qkv`, `norm`, ...), with the
//! patch embedding as a linear map of the flattened patch (the same as its stride-16 conv) and
//! A-JEPA's rectangular frequency x time grid of 2D sine-cosine position embeddings.

pub mod checkpoint;
pub mod fused;
pub mod head;
pub mod open_set;
pub mod ops;
pub mod pooling;
pub mod pos_embed;
pub mod vit;

use serde::{Deserialize, Serialize};

pub use vit::{Encoder, Mode};

/// Errors from building or loading a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("invalid model config: {0}")]
    Config(String),
    #[error("unknown model preset `{name}`; known presets: {known}")]
    UnknownPreset { name: String, known: String },
    #[error("{path}: cannot read")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: cannot write")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: malformed model config")]
    ConfigJson {
        path: std::path::PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: weights do not fit the config ({reason})")]
    Weights {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Encoder hyper-parameters. Saved as JSON next to every weights file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderConfig {
    /// Mel bins of the input spectrogram (patch rows = `n_mels / patch_size`).
    pub n_mels: usize,
    /// Patch side, in mel bins and frames.
    pub patch_size: usize,
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    /// MLP hidden width = `mlp_ratio * embed_dim`.
    pub mlp_ratio: usize,
    pub layer_norm_eps: f64,
}

impl EncoderConfig {
    /// Named presets. Widths are multiples of 256 where it matters for quantized CPU kernels
    /// (candle's k-quants want the inner dimension a multiple of 256; see DESIGN.md), except
    /// `tiny`, which exists for tests.
    pub fn preset(name: &str) -> Result<Self, ModelError> {
        let (embed_dim, depth, num_heads) = match name {
            "tiny" => (64, 2, 2),
            "edge" => (256, 6, 4),
            "small" => (384, 12, 6),
            "base" => (768, 12, 12),
            _ => {
                return Err(ModelError::UnknownPreset {
                    name: name.to_string(),
                    known: Self::PRESETS.join(", "),
                })
            }
        };
        Ok(Self {
            n_mels: 128,
            patch_size: 16,
            embed_dim,
            depth,
            num_heads,
            mlp_ratio: 4,
            layer_norm_eps: 1e-6,
        })
    }

    pub const PRESETS: [&'static str; 4] = ["tiny", "edge", "small", "base"];

    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |why: String| Err(ModelError::Config(why));
        if self.patch_size == 0 || self.n_mels == 0 || !self.n_mels.is_multiple_of(self.patch_size)
        {
            return bad(format!(
                "n_mels {} must be a positive multiple of patch_size {}",
                self.n_mels, self.patch_size
            ));
        }
        if self.embed_dim == 0 || self.depth == 0 || self.num_heads == 0 || self.mlp_ratio == 0 {
            return bad("embed_dim, depth, num_heads and mlp_ratio must be positive".into());
        }
        if !self.embed_dim.is_multiple_of(self.num_heads) {
            return bad(format!(
                "embed_dim {} is not divisible by num_heads {}",
                self.embed_dim, self.num_heads
            ));
        }
        // The 2D sine-cosine embedding splits the width in four (sin/cos x row/column).
        if !self.embed_dim.is_multiple_of(4) {
            return bad(format!(
                "embed_dim {} must be a multiple of 4",
                self.embed_dim
            ));
        }
        if !(self.layer_norm_eps > 0.0 && self.layer_norm_eps < 1.0) {
            return bad(format!(
                "layer_norm_eps {} out of range",
                self.layer_norm_eps
            ));
        }
        Ok(())
    }

    /// Patch rows on the frequency axis.
    pub fn n_freq(&self) -> usize {
        self.n_mels / self.patch_size
    }

    /// Values in one flattened patch.
    pub fn patch_len(&self) -> usize {
        self.patch_size * self.patch_size
    }

    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads
    }

    /// Parameter count.
    pub fn num_params(&self) -> usize {
        let d = self.embed_dim;
        let h = d * self.mlp_ratio;
        let block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * h + h) + (h * d + d);
        (self.patch_len() * d + d) + self.depth * block + 2 * d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_count() {
        for name in EncoderConfig::PRESETS {
            EncoderConfig::preset(name).unwrap().validate().unwrap();
        }
        let edge = EncoderConfig::preset("edge").unwrap();
        // 256-wide, 6 blocks: 6 * 789,760 (blocks) + 65,792 (patch embedding) + 512 (norm).
        assert_eq!(edge.num_params(), 4_804_864);
        assert!(matches!(
            EncoderConfig::preset("huge"),
            Err(ModelError::UnknownPreset { .. })
        ));
    }

    #[test]
    fn invalid_configs_are_rejected() {
        let ok = EncoderConfig::preset("tiny").unwrap();
        for bad in [
            EncoderConfig {
                num_heads: 3,
                ..ok.clone()
            },
            EncoderConfig {
                n_mels: 100,
                ..ok.clone()
            },
            EncoderConfig {
                depth: 0,
                ..ok.clone()
            },
            EncoderConfig {
                embed_dim: 66,
                num_heads: 2,
                ..ok.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
