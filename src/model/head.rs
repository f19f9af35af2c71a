//! The tagging head: a linear map from a pooled clip embedding to per-class scores, with the
//! class names. Stored in safetensors (`weight` `[C, D]`, `bias` `[C]`) with the labels, the
//! activation and whether the head was trained in the metadata. A head may also carry a small
//! support set of the embeddings it was fitted on (`support` `[M, D]`, `support_labels` `[M]`),
//! which is what lets `ajepa enroll` add a class later by refitting on the device. The pooling
//! that makes a window's tokens into the vector the head scores (`pool`) is in the metadata too.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use super::checkpoint::{load_tensors, save_tensors};
use super::pooling::Pooling;
use super::ModelError;

/// How scores become confidences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Independent per-class probabilities (tags are not exclusive).
    Sigmoid,
    /// One distribution over the classes (a single-label classifier, e.g. the linear probe).
    Softmax,
}

impl Activation {
    fn as_str(self) -> &'static str {
        match self {
            Self::Sigmoid => "sigmoid",
            Self::Softmax => "softmax",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    pub labels: Vec<String>,
    /// `[C][D]` row-major.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub dim: usize,
    /// False for a placeholder head: the UI flags its output as meaningless.
    pub trained: bool,
    pub activation: Activation,
    /// Embeddings the head was fitted on, `[M][D]` row-major (may be empty).
    pub support: Vec<f32>,
    /// Class of each support row.
    pub support_labels: Vec<u32>,
    /// The window (patch columns) the head was fitted on, when known: a head only fits
    /// embeddings of windows that long (`listen` and `enroll` check it).
    pub window_columns: Option<usize>,
    /// The fingerprint of the encoder the head was fitted on (`Encoder::fingerprint`), when
    /// known: its weights only mean something on that encoder's embeddings.
    pub encoder: Option<String>,
    /// How a window's tokens are pooled into the `dim`-wide vector this head scores.
    pub pool: Pooling,
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
            activation: Activation::Sigmoid,
            support: Vec::new(),
            support_labels: Vec::new(),
            window_columns: None,
            encoder: None,
            pool: Pooling::Mean,
        }
    }

    pub fn classes(&self) -> usize {
        self.labels.len()
    }

    /// Whether the head fits an encoder of `d`-wide tokens on `n_freq` frequency rows: its width
    /// must be what its pooling makes of them. `Err` says both widths.
    pub fn check_width(&self, d: usize, n_freq: usize) -> Result<(), String> {
        let gives = self.pool.dim(d, n_freq);
        if self.dim == gives {
            Ok(())
        } else {
            Err(format!(
                "the head expects {}-wide embeddings; the encoder's {}-pooled windows are {gives} wide",
                self.dim,
                self.pool.as_str()
            ))
        }
    }

    /// Per-class confidences into `out` (no allocation once `out` has the capacity).
    pub fn scores_into(&self, pooled: &[f32], out: &mut Vec<f32>) {
        out.clear();
        for (c, b) in self.bias.iter().enumerate() {
            let w = &self.weight[c * self.dim..(c + 1) * self.dim];
            out.push(w.iter().zip(pooled).map(|(a, b)| a * b).sum::<f32>() + b);
        }
        match self.activation {
            Activation::Sigmoid => out.iter_mut().for_each(|s| *s = 1.0 / (1.0 + (-*s).exp())),
            Activation::Softmax => {
                let m = out.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0;
                for s in out.iter_mut() {
                    *s = (*s - m).exp();
                    sum += *s;
                }
                out.iter_mut().for_each(|s| *s /= sum);
            }
        }
    }

    /// Whether the head may be used on an encoder with fingerprint `encoder`: `Err` with the
    /// head's own fingerprint when it records another one. A head that records none (written
    /// before heads kept it) passes.
    pub fn fits_encoder(&self, encoder: &str) -> Result<(), String> {
        match &self.encoder {
            Some(e) if e != encoder => Err(e.clone()),
            _ => Ok(()),
        }
    }

    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        let c = self.labels.len();
        let m = self.support_labels.len();
        if self.weight.len() != c * self.dim
            || self.bias.len() != c
            || self.support.len() != m * self.dim
        {
            return Err(ModelError::Config(format!(
                "inconsistent head: {c} labels, {} weights, {} biases, {} support values for {m} rows of {}",
                self.weight.len(),
                self.bias.len(),
                self.support.len(),
                self.dim
            )));
        }
        let mut tensors = HashMap::from([
            (
                "weight".to_string(),
                Tensor::from_slice(&self.weight, (c, self.dim), &Device::Cpu)?,
            ),
            (
                "bias".to_string(),
                Tensor::from_slice(&self.bias, c, &Device::Cpu)?,
            ),
        ]);
        if m > 0 {
            tensors.insert(
                "support".to_string(),
                Tensor::from_slice(&self.support, (m, self.dim), &Device::Cpu)?,
            );
            tensors.insert(
                "support_labels".to_string(),
                Tensor::from_slice(&self.support_labels, m, &Device::Cpu)?,
            );
        }
        let mut meta = HashMap::from([
            ("format".to_string(), "audio-jepa-head".to_string()),
            (
                "labels".to_string(),
                serde_json::to_string(&self.labels)
                    .map_err(|e| ModelError::Config(e.to_string()))?,
            ),
            ("trained".to_string(), self.trained.to_string()),
            (
                "activation".to_string(),
                self.activation.as_str().to_string(),
            ),
        ]);
        if let Some(w) = self.window_columns {
            meta.insert("window_columns".to_string(), w.to_string());
        }
        if let Some(e) = &self.encoder {
            meta.insert("encoder".to_string(), e.clone());
        }
        meta.insert("pool".to_string(), self.pool.as_str().to_string());
        save_tensors(path, &tensors, meta)
    }

    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let (t, meta) = load_tensors(path, &Device::Cpu)?;
        Self::from_parts(t, meta, path)
    }

    /// A head from the bytes of a head file (`origin` names it in errors).
    pub fn from_bytes(bytes: &[u8], origin: &Path) -> Result<Self, ModelError> {
        let (t, meta) = super::checkpoint::load_tensors_bytes(bytes, &Device::Cpu, origin)?;
        Self::from_parts(t, meta, origin)
    }

    fn from_parts(
        t: super::checkpoint::Tensors,
        meta: super::checkpoint::Metadata,
        path: &Path,
    ) -> Result<Self, ModelError> {
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
        let activation = match meta.get("activation").map(String::as_str) {
            None | Some("sigmoid") => Activation::Sigmoid,
            Some("softmax") => Activation::Softmax,
            Some(other) => return Err(bad(format!("unknown activation `{other}`"))),
        };
        let (support, support_labels) = match (t.get("support"), t.get("support_labels")) {
            (Some(s), Some(l)) => {
                let (m, d) = s.dims2().map_err(|e| bad(e.to_string()))?;
                let labels: Vec<u32> = l
                    .to_dtype(candle_core::DType::U32)?
                    .to_vec1()
                    .map_err(|e| bad(format!("support_labels: {e}")))?;
                if d != dim || labels.len() != m || labels.iter().any(|&l| l as usize >= c) {
                    return Err(bad(format!(
                        "support {:?} with {} labels does not fit {} classes of dimension {dim}",
                        s.shape(),
                        labels.len(),
                        c
                    )));
                }
                (s.flatten_all()?.to_vec1()?, labels)
            }
            (None, None) => (Vec::new(), Vec::new()),
            _ => return Err(bad("`support` and `support_labels` come together".into())),
        };
        Ok(Self {
            labels,
            weight: w.flatten_all()?.to_vec1()?,
            bias: b.to_vec1()?,
            dim,
            trained: meta.get("trained").map(String::as_str) == Some("true"),
            activation,
            support,
            support_labels,
            encoder: meta.get("encoder").cloned(),
            pool: match meta.get("pool") {
                None => Pooling::Mean,
                Some(p) => p.parse().map_err(bad)?,
            },
            window_columns: match meta.get("window_columns") {
                None => None,
                Some(w) => Some(w.parse().ok().filter(|&w| w > 0).ok_or_else(|| {
                    bad(format!("window_columns `{w}` is not a positive number"))
                })?),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_round_trips_and_old_heads_read_as_mean() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("head.safetensors");
        let mut head = Head::untrained(2 * 3);
        head.labels = vec!["a".into()];
        head.weight = vec![0.5; 6];
        head.bias = vec![0.1];
        head.trained = true;
        head.pool = Pooling::FreqCat;
        head.save(&path).unwrap();
        let back = Head::load(&path).unwrap();
        assert_eq!(back, head);
        // Its width is what freqcat makes of 3-wide tokens on 2 rows, not of 6-wide ones.
        assert!(back.check_width(3, 2).is_ok());
        let e = back.check_width(6, 2).unwrap_err();
        assert!(e.contains("12 wide"), "{e}");

        // A head file written before heads recorded their pooling: mean-pooled.
        let (t, mut meta) = load_tensors(&path, &Device::Cpu).unwrap();
        meta.remove("pool");
        save_tensors(&path, &t, meta.clone()).unwrap();
        assert_eq!(Head::load(&path).unwrap().pool, Pooling::Mean);
        meta.insert("pool".into(), "max".into());
        save_tensors(&path, &t, meta).unwrap();
        let e = Head::load(&path).unwrap_err().to_string();
        assert!(e.contains("unknown pooling `max`"), "{e}");
    }
}
