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
/// Metadata key naming the weight quantization of a quantized encoder file (`q8`, `q4`).
pub const QUANT_KEY: &str = "audio_jepa.quantization";
/// Metadata key of a quantized encoder file holding the fingerprint of the float encoder it was
/// made from (`Encoder::fingerprint`): a head fitted on that encoder fits its int8 copy too.
pub const SOURCE_KEY: &str = "audio_jepa.source_fingerprint";

/// How a quantized encoder file stores the blocks' matrices (`qkv`, `proj`, `fc1`, `fc2`: 97 %
/// of the weights). The patch embedding, norms and biases stay f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightQuant {
    /// int8 per output channel: `NAME.weight` I8 `[n, k]`, `NAME.weight_scale` F32 `[n]`,
    /// `w = q s` (what the engine's int8 kernels compute with).
    Q8,
    /// 4 bits per output channel, -7..=7: `NAME.weight` U8 `[n, k / 2]` (even `k` in the low
    /// nibble, stored as `q + 8`), `NAME.weight_scale` F32 `[n]`. Storage only: the engine
    /// widens it to int8 on load.
    Q4,
}

impl WeightQuant {
    pub fn name(self) -> &'static str {
        match self {
            WeightQuant::Q8 => "q8",
            WeightQuant::Q4 => "q4",
        }
    }
}

/// Whether `name` is one of the matrices a quantized file stores in integers.
pub fn is_quantized_weight(name: &str) -> bool {
    name.starts_with("blocks.")
        && [
            "attn.qkv.weight",
            "attn.proj.weight",
            "mlp.fc1.weight",
            "mlp.fc2.weight",
        ]
        .iter()
        .any(|s| name.ends_with(s))
}

/// One tensor in a file written without candle (integer dtypes candle lacks).
struct RawTensor {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl safetensors::View for &RawTensor {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Symmetric per-row quantization to `-levels..=levels`; returns values and scales.
fn quantize_rows(w: &[f32], n: usize, k: usize, levels: f32) -> (Vec<i8>, Vec<f32>) {
    let mut q = vec![0i8; n * k];
    let mut scales = vec![1f32; n];
    for r in 0..n {
        let row = &w[r * k..(r + 1) * k];
        let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        if amax > 0.0 && amax.is_finite() {
            scales[r] = amax / levels;
        }
        for (o, v) in q[r * k..(r + 1) * k].iter_mut().zip(row) {
            *o = (v / scales[r]).round_ties_even().clamp(-levels, levels) as i8;
        }
    }
    (q, scales)
}

/// Saves an encoder with its blocks' matrices quantized (see [`WeightQuant`]), the config in
/// the metadata and beside, atomically.
pub fn save_encoder_quantized(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
    cfg: &EncoderConfig,
    quant: WeightQuant,
) -> Result<(), ModelError> {
    let bad = |reason: String| ModelError::Weights {
        path: path.to_path_buf(),
        reason,
    };
    let mut raw: Vec<(String, RawTensor)> = Vec::new();
    for (name, t) in tensors {
        let t = t.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
        let shape = t.dims().to_vec();
        let v: Vec<f32> = t.flatten_all()?.to_vec1()?;
        if !is_quantized_weight(name) {
            raw.push((
                name.clone(),
                RawTensor {
                    dtype: safetensors::Dtype::F32,
                    shape,
                    data: f32_bytes(&v),
                },
            ));
            continue;
        }
        let [n, k] = shape[..] else {
            return Err(bad(format!("{name}: a matrix was expected, got {shape:?}")));
        };
        let (q, scales) = match quant {
            // Exactly the engine's rounding, so the file holds the integers the engine would
            // compute from the f32 weights.
            WeightQuant::Q8 => crate::quant::quantize_weights(&v, n, k),
            WeightQuant::Q4 => quantize_rows(&v, n, k, 7.0),
        };
        let (dtype, shape, data) = match quant {
            WeightQuant::Q8 => (
                safetensors::Dtype::I8,
                vec![n, k],
                q.iter().map(|&x| x as u8).collect(),
            ),
            WeightQuant::Q4 => {
                if k % 2 != 0 {
                    return Err(bad(format!("{name}: q4 needs an even inner size, got {k}")));
                }
                let packed = q
                    .chunks_exact(2)
                    .map(|p| ((p[0] + 8) as u8) | (((p[1] + 8) as u8) << 4))
                    .collect();
                (safetensors::Dtype::U8, vec![n, k / 2], packed)
            }
        };
        raw.push((name.clone(), RawTensor { dtype, shape, data }));
        raw.push((
            format!("{name}_scale"),
            RawTensor {
                dtype: safetensors::Dtype::F32,
                shape: vec![n],
                data: f32_bytes(&scales),
            },
        ));
    }
    raw.sort_by(|a, b| a.0.cmp(&b.0));
    let json = serde_json::to_string_pretty(cfg).map_err(|e| ModelError::Config(e.to_string()))?;
    let source = encoder_from_tensors(tensors.clone(), cfg, &Device::Cpu, path)?.fingerprint()?;
    let metadata = HashMap::from([
        (CONFIG_KEY.to_string(), json.clone()),
        ("format".to_string(), "audio-jepa-encoder".to_string()),
        (QUANT_KEY.to_string(), quant.name().to_string()),
        (SOURCE_KEY.to_string(), source),
    ]);
    let bytes =
        safetensors::tensor::serialize(raw.iter().map(|(k, v)| (k.as_str(), v)), Some(metadata))
            .map_err(|e| bad(e.to_string()))?;
    write_atomically(path, |w| std::io::Write::write_all(w, &bytes)).map_err(|source| {
        ModelError::Write {
            path: path.to_path_buf(),
            source,
        }
    })?;
    let cfg_path = config_path(path);
    write_atomically(&cfg_path, |w| std::io::Write::write_all(w, json.as_bytes())).map_err(
        |source| ModelError::Write {
            path: cfg_path.clone(),
            source,
        },
    )
}

/// The tensors of a quantized file, widened to f32 (`w = q s`).
fn dequantized_tensors(
    bytes: &[u8],
    quant: WeightQuant,
    device: &Device,
    origin: &Path,
) -> Result<Tensors, ModelError> {
    let bad = |reason: String| ModelError::Weights {
        path: origin.to_path_buf(),
        reason,
    };
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| bad(format!("unreadable tensors: {e}")))?;
    let f32s = |name: &str| -> Result<Vec<f32>, ModelError> {
        let v = st.tensor(name).map_err(|e| bad(format!("{name}: {e}")))?;
        if v.dtype() != safetensors::Dtype::F32 {
            return Err(bad(format!("{name}: f32 expected, found {:?}", v.dtype())));
        }
        Ok(v.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    };
    let mut out = Tensors::new();
    for name in st.names() {
        if name.ends_with("_scale") {
            continue;
        }
        let view = st.tensor(name).map_err(|e| bad(format!("{name}: {e}")))?;
        let shape = view.shape().to_vec();
        let values: Vec<f32> = if is_quantized_weight(name) {
            let scales = f32s(&format!("{name}_scale"))?;
            let (expected, n) = match (quant, &shape[..]) {
                (WeightQuant::Q8, [n, _]) => (safetensors::Dtype::I8, *n),
                (WeightQuant::Q4, [n, _]) => (safetensors::Dtype::U8, *n),
                _ => return Err(bad(format!("{name}: shape {shape:?} is not a matrix"))),
            };
            if view.dtype() != expected || scales.len() != n {
                return Err(bad(format!(
                    "{name}: {:?} with {} scales does not fit {} weights of {n} rows",
                    view.dtype(),
                    scales.len(),
                    quant.name()
                )));
            }
            let q: Vec<i8> = match quant {
                WeightQuant::Q8 => view.data().iter().map(|&b| b as i8).collect(),
                WeightQuant::Q4 => view
                    .data()
                    .iter()
                    .flat_map(|&b| [(b & 15) as i8 - 8, (b >> 4) as i8 - 8])
                    .collect(),
            };
            let k = q.len() / n.max(1);
            let shape_out = vec![n, k];
            let values = q
                .iter()
                .enumerate()
                .map(|(i, &v)| v as f32 * scales[i / k.max(1)])
                .collect();
            out.insert(
                name.to_string(),
                Tensor::from_vec(values, shape_out, device)?,
            );
            continue;
        } else {
            f32s(name)?
        };
        out.insert(name.to_string(), Tensor::from_vec(values, shape, device)?);
    }
    Ok(out)
}

/// The weight quantization recorded in a file's metadata, if any.
pub fn file_quantization(
    metadata: &Metadata,
    origin: &Path,
) -> Result<Option<WeightQuant>, ModelError> {
    match metadata.get(QUANT_KEY).map(String::as_str) {
        None => Ok(None),
        Some("q8") => Ok(Some(WeightQuant::Q8)),
        Some("q4") => Ok(Some(WeightQuant::Q4)),
        Some(other) => Err(ModelError::Weights {
            path: origin.to_path_buf(),
            reason: format!("unknown quantization `{other}` (this build reads q8 and q4)"),
        }),
    }
}

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
        ModelError::Write {
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
    let tensors = if let Some(quant) = file_quantization(&metadata, origin)? {
        dequantized_tensors(bytes, quant, device, origin)?
    } else {
        candle_core::safetensors::load_buffer(bytes, device)
            .map_err(|e| bad(format!("unreadable tensors: {e}")))?
    };
    check_finite(&tensors, origin)?;
    Ok((tensors, metadata))
}

/// Refuses weights holding NaN or infinity (a diverged run's, or a damaged file's): they would
/// give NaN embeddings and `null` scores with exit status 0 (issue 15).
fn check_finite(tensors: &Tensors, origin: &Path) -> Result<(), ModelError> {
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for name in names {
        let t = &tensors[name];
        if !t.dtype().is_float() {
            continue;
        }
        let v = t
            .flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?;
        if let Some(bad) = v.iter().position(|x| !x.is_finite()) {
            return Err(ModelError::Weights {
                path: origin.to_path_buf(),
                reason: format!(
                    "tensor `{name}` holds a non-finite value ({} at index {bad}): a diverged run or a damaged file",
                    v[bad]
                ),
            });
        }
    }
    Ok(())
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
        |source| ModelError::Write {
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

/// Loads an encoder written by [`save_encoder`] or [`save_encoder_quantized`] (widened to f32).
pub fn load_encoder(path: &Path, device: &Device) -> Result<Encoder, ModelError> {
    Ok(load_encoder_with_quant(path, device)?.0)
}

/// As [`load_encoder`], also telling how the file stored its weights (`None`: floats), so a
/// runtime can compute in that precision.
pub fn load_encoder_with_quant(
    path: &Path,
    device: &Device,
) -> Result<(Encoder, Option<WeightQuant>), ModelError> {
    let (tensors, metadata) = load_tensors(path, device)?;
    let quant = file_quantization(&metadata, path)?;
    let cfg = load_encoder_config(path, &metadata)?;
    Ok((encoder_from_tensors(tensors, &cfg, device, path)?, quant))
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
