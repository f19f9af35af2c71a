//! The tagging head: a linear map from a pooled clip embedding to per-class scores, with the
//! class names. Stored in safetensors (`weight` `[C, D]`, `bias` `[C]`) with the labels and
//! whether the head was trained in the metadata.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use super::checkpoint::{load_tensors, save_tensors};
use super::ModelError;

#[derive(Debug, Clone)]
pub struct Head {
    pub labels: Vec<String>,
    /// `[C][D]` row-major.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub dim: usize,
    /// False for a placeholder head: the UI flags its output as meaningless.
    pub trained: bool,
}

impl Head {
    /// A placeholder with no classes (embeddings only).
    pub fn untrained(dim: usize) -> Self {
        Self {
            labels: Vec::new(),
            weight: Vec::new(),
            bias: Vec::new(),
            dim,
            trained: false,
        }
    }

    /// Per-class probabilities (sigmoid of the scores: tags are not exclusive) into `out`.
    pub fn scores_into(&self, pooled: &[f32], out: &mut Vec<f32>) {
        out.clear();
        for (c, b) in self.bias.iter().enumerate() {
            let w = &self.weight[c * self.dim..(c + 1) * self.dim];
            let s: f32 = w.iter().zip(pooled).map(|(a, b)| a * b).sum::<f32>() + b;
            out.push(1.0 / (1.0 + (-s).exp()));
        }
    }

    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        let c = self.labels.len();
        let tensors = HashMap::from([
            (
                "weight".to_string(),
                Tensor::from_slice(&self.weight, (c, self.dim), &Device::Cpu)?,
            ),
            (
                "bias".to_string(),
                Tensor::from_slice(&self.bias, c, &Device::Cpu)?,
            ),
        ]);
        let meta = HashMap::from([
            ("format".to_string(), "audio-jepa-head".to_string()),
            (
                "labels".to_string(),
                serde_json::to_string(&self.labels)
                    .map_err(|e| ModelError::Config(e.to_string()))?,
            ),
            ("trained".to_string(), self.trained.to_string()),
        ]);
        save_tensors(path, &tensors, meta)
    }

    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let (t, meta) = load_tensors(path, &Device::Cpu)?;
        let bad = |reason: String| ModelError::Weights {
            path: path.to_path_buf(),
            reason,
        };
        if meta.get("format").map(String::as_str) != Some("audio-jepa-head") {
            return Err(bad("not an audio-jepa tagging head".into()));
        }
        let labels: Vec<String> = meta
            .get("labels")
            .and_then(|l| serde_json::from_str(l).ok())
            .ok_or_else(|| bad("no labels in the metadata".into()))?;
        let w = t.get("weight").ok_or_else(|| bad("no `weight`".into()))?;
        let b = t.get("bias").ok_or_else(|| bad("no `bias`".into()))?;
        let (c, dim) = w.dims2().map_err(|e| bad(e.to_string()))?;
        if c != labels.len() || b.dims1().ok() != Some(c) {
            return Err(bad(format!(
                "{} labels, weight {:?}, bias {:?}",
                labels.len(),
                w.shape(),
                b.shape()
            )));
        }
        Ok(Self {
            labels,
            weight: w.flatten_all()?.to_vec1()?,
            bias: b.to_vec1()?,
            dim,
            trained: meta.get("trained").map(String::as_str) == Some("true"),
        })
    }
}
