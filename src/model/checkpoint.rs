//! Weights in safetensors, with the config saved beside them.
//!
//! An encoder file `NAME.safetensors` holds the tensors under I-JEPA's names and, in its
//! metadata, the [`EncoderConfig`] as JSON; the same JSON is written to `NAME.json` so a person
//! can read it. Files are written to a temporary name and renamed, so a killed process never
//! leaves a half-written file under the final name.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::{Encoder, EncoderConfig, ModelError};
use crate::arrays::write_atomically;

/// Named tensors, as in a safetensors file.
pub type Tensors = HashMap<String, Tensor>;
/// A safetensors file's string metadata.
pub type Metadata = HashMap<String, String>;

/// Metadata key holding the encoder config.
pub const CONFIG_KEY: &str = "audio_jepa.encoder_config";

/// Writes `tensors` (and `metadata`) to `path` atomically.
pub fn save_tensors(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
    metadata: HashMap<String, String>,
) -> Result<(), ModelError> {
    let mut sorted: Vec<(&String, Tensor)> = Vec::with_capacity(tensors.len());
    for (k, t) in tensors {
        // safetensors wants contiguous host data.
        sorted.push((k, t.to_device(&Device::Cpu)?.contiguous()?));
    }
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let bytes = safetensors::tensor::serialize(sorted, Some(metadata)).map_err(|e| {
        ModelError::Weights {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    })?;
    write_atomically(path, |w| std::io::Write::write_all(w, &bytes)).map_err(|source| {
        ModelError::Io {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Reads every tensor of a safetensors file and its metadata.
pub fn load_tensors(path: &Path, device: &Device) -> Result<(Tensors, Metadata), ModelError> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    load_tensors_bytes(&bytes, device, path)
}

/// As [`load_tensors`], from the bytes of a safetensors file (`origin` names it in errors).
pub fn load_tensors_bytes(
    bytes: &[u8],
    device: &Device,
    origin: &Path,
) -> Result<(Tensors, Metadata), ModelError> {
    let path = origin;
    let bad = |reason: String| ModelError::Weights {
        path: path.to_path_buf(),
        reason,
    };
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let tensors = candle_core::safetensors::load_buffer(bytes, device)
        .map_err(|e| bad(format!("unreadable tensors: {e}")))?;
    Ok((tensors, metadata))
}

/// The JSON file beside a weights file.
pub fn config_path(weights: &Path) -> PathBuf {
    weights.with_extension("json")
}

/// Saves an encoder's tensors (names without prefix) with `cfg` in the metadata and beside.
pub fn save_encoder(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
    cfg: &EncoderConfig,
) -> Result<(), ModelError> {
    let json = serde_json::to_string_pretty(cfg).map_err(|e| ModelError::Config(e.to_string()))?;
    let metadata = HashMap::from([
        (CONFIG_KEY.to_string(), json.clone()),
        ("format".to_string(), "audio-jepa-encoder".to_string()),
    ]);
    save_tensors(path, tensors, metadata)?;
    let cfg_path = config_path(path);
    write_atomically(&cfg_path, |w| std::io::Write::write_all(w, json.as_bytes())).map_err(
        |source| ModelError::Io {
            path: cfg_path.clone(),
            source,
        },
    )
}

/// Reads the encoder config of `weights`: the JSON beside it, else the file's metadata. When
/// both exist they must agree.
pub fn load_encoder_config(
    weights: &Path,
    metadata: &HashMap<String, String>,
) -> Result<EncoderConfig, ModelError> {
    let parse = |text: &str, origin: &Path| {
        serde_json::from_str::<EncoderConfig>(text).map_err(|source| ModelError::ConfigJson {
            path: origin.to_path_buf(),
            source,
        })
    };
    let beside = config_path(weights);
    let from_file = match std::fs::read_to_string(&beside) {
        Ok(text) => Some(parse(&text, &beside)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(ModelError::Io {
                path: beside,
                source,
            })
        }
    };
    let from_meta = metadata
        .get(CONFIG_KEY)
        .map(|t| parse(t, weights))
        .transpose()?;
    let cfg = match (from_file, from_meta) {
        (Some(a), Some(b)) if a != b => {
            return Err(ModelError::Weights {
                path: weights.to_path_buf(),
                reason: format!(
                    "the config beside it ({}) differs from the one inside it",
                    beside.display()
                ),
            })
        }
        (Some(a), _) => a,
        (None, Some(b)) => b,
        (None, None) => {
            return Err(ModelError::Weights {
                path: weights.to_path_buf(),
                reason: format!("no config: neither {} nor metadata", beside.display()),
            })
        }
    };
    cfg.validate()?;
    Ok(cfg)
}

/// Every tensor name an encoder with `cfg` has.
pub fn encoder_tensor_names(cfg: &EncoderConfig) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut wb = |p: &str| {
        names.insert(format!("{p}.weight"));
        names.insert(format!("{p}.bias"));
    };
    wb("patch_embed.proj");
    wb("norm");
    for i in 0..cfg.depth {
        for part in [
            "norm1",
            "norm2",
            "attn.qkv",
            "attn.proj",
            "mlp.fc1",
            "mlp.fc2",
        ] {
            wb(&format!("blocks.{i}.{part}"));
        }
    }
    names
}

/// Builds an encoder from `tensors`, checking that names and shapes fit `cfg` exactly.
pub fn encoder_from_tensors(
    tensors: HashMap<String, Tensor>,
    cfg: &EncoderConfig,
    device: &Device,
    origin: &Path,
) -> Result<Encoder, ModelError> {
    let bad = |reason: String| ModelError::Weights {
        path: origin.to_path_buf(),
        reason,
    };
    let expected = encoder_tensor_names(cfg);
    let present: BTreeSet<String> = tensors.keys().cloned().collect();
    if let Some(extra) = present.difference(&expected).next() {
        return Err(bad(format!(
            "unexpected tensor `{extra}` for a {}-wide, {}-deep encoder",
            cfg.embed_dim, cfg.depth
        )));
    }
    if let Some(missing) = expected.difference(&present).next() {
        return Err(bad(format!("missing tensor `{missing}`")));
    }
    let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
    Encoder::load(vb, cfg).map_err(|e| bad(e.to_string()))
}

/// Loads an encoder written by [`save_encoder`].
pub fn load_encoder(path: &Path, device: &Device) -> Result<Encoder, ModelError> {
    let (tensors, metadata) = load_tensors(path, device)?;
    let cfg = load_encoder_config(path, &metadata)?;
    encoder_from_tensors(tensors, &cfg, device, path)
}

/// An encoder from the bytes of a file written by [`save_encoder`] (its config from the
/// metadata), e.g. a model compiled into the binary.
pub fn load_encoder_bytes(
    bytes: &[u8],
    device: &Device,
    origin: &Path,
) -> Result<Encoder, ModelError> {
    let (tensors, metadata) = load_tensors_bytes(bytes, device, origin)?;
    let text = metadata
        .get(CONFIG_KEY)
        .ok_or_else(|| ModelError::Weights {
            path: origin.to_path_buf(),
            reason: "no encoder config in the metadata".into(),
        })?;
    let cfg: EncoderConfig =
        serde_json::from_str(text).map_err(|source| ModelError::ConfigJson {
            path: origin.to_path_buf(),
            source,
        })?;
    cfg.validate()?;
    encoder_from_tensors(tensors, &cfg, device, origin)
}
