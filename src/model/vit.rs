//! ViT encoder blocks (pre-norm: LayerNorm, multi-head self-attention, LayerNorm, GELU MLP).
//!
//! Mirrors `VisionTransformer` in I-JEPA's src/models/vision_transformer.py: the same parameter
//! names, exact-erf GELU (PyTorch's `nn.GELU()` default), LayerNorm with learned scale and bias
//! and a final LayerNorm. The forward pass takes every patch or only the patches named by
//! `keep` (I-JEPA's `apply_masks`), which is how the context encoder sees the visible patches.

use std::sync::Mutex;

use candle_core::{IndexOp, Module, Result, Tensor};
use candle_nn::{linear, Init, Linear, VarBuilder};

use super::fused;
use super::pos_embed::sincos_2d;
use super::EncoderConfig;

/// Which kernels to use. candle's fused layer-norm and last-dimension softmax are fast but
/// have no backward pass; training composes them from differentiable operations instead. Both
/// compute the same function (a test compares them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Inference,
    Train,
}

/// LayerNorm with learned scale (`weight`) and shift (`bias`).
#[derive(Debug, Clone)]
pub struct Norm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl Norm {
    pub fn load(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(dim, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(dim, "bias", Init::Const(0.0))?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        if mode == Mode::Inference && x.is_contiguous() {
            candle_nn::ops::layer_norm(x, &self.weight, &self.bias, self.eps as f32)
        } else {
            super::ops::layer_norm(x, &self.weight, &self.bias, self.eps as f32)
        }
    }
}

#[derive(Debug, Clone)]
struct Attention {
    qkv: Linear,
    proj: Linear,
    num_heads: usize,
    scale: f64,
}

impl Attention {
    fn load(cfg: &EncoderConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.embed_dim;
        Ok(Self {
            qkv: linear(d, 3 * d, vb.pp("qkv"))?,
            proj: linear(d, d, vb.pp("proj"))?,
            num_heads: cfg.num_heads,
            scale: (cfg.head_dim() as f64).powf(-0.5),
        })
    }

    fn forward(&self, x: &Tensor, mode: Mode, bias: Option<&Tensor>) -> Result<Tensor> {
        let (b, n, c) = x.dims3()?;
        let h = self.num_heads;
        if mode == Mode::Train && fused::usable(x) {
            let qkv = fused::linear(x, &self.qkv)?;
            if let Some(y) = fused::attention(&qkv, h, self.scale, bias)? {
                return fused::linear(&y, &self.proj);
            }
        }
        let qkv = self
            .qkv
            .forward(x)?
            .reshape((b, n, 3, h, c / h))?
            .permute((2, 0, 3, 1, 4))?;
        let q = (qkv.i(0)?.contiguous()? * self.scale)?;
        let k = qkv.i(1)?.contiguous()?;
        let v = qkv.i(2)?.contiguous()?;
        let mut att = q.matmul(&k.t()?)?;
        if let Some(bias) = bias {
            att = att.broadcast_add(bias)?;
        }
        let att = match mode {
            Mode::Inference => candle_nn::ops::softmax_last_dim(&att)?,
            Mode::Train => super::ops::softmax_last_dim(&att)?,
        };
        let y = att.matmul(&v)?.transpose(1, 2)?.reshape((b, n, c))?;
        self.proj.forward(&y)
    }
}

#[derive(Debug, Clone)]
struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    fn load(cfg: &EncoderConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.embed_dim;
        let hidden = d * cfg.mlp_ratio;
        Ok(Self {
            fc1: linear(d, hidden, vb.pp("fc1"))?,
            fc2: linear(hidden, d, vb.pp("fc2"))?,
        })
    }

    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        if mode == Mode::Train {
            // The fused ops where they apply (CPU f32), candle's composed ones elsewhere.
            return fused::linear(&fused::gelu(&fused::linear(x, &self.fc1)?)?, &self.fc2);
        }
        self.fc2.forward(&self.fc1.forward(x)?.gelu_erf()?)
    }
}

/// One pre-norm transformer block.
#[derive(Debug, Clone)]
pub struct Block {
    norm1: Norm,
    attn: Attention,
    norm2: Norm,
    mlp: Mlp,
}

impl Block {
    pub fn load(cfg: &EncoderConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm1: Norm::load(cfg.embed_dim, cfg.layer_norm_eps, vb.pp("norm1"))?,
            attn: Attention::load(cfg, vb.pp("attn"))?,
            norm2: Norm::load(cfg.embed_dim, cfg.layer_norm_eps, vb.pp("norm2"))?,
            mlp: Mlp::load(cfg, vb.pp("mlp"))?,
        })
    }

    /// `bias`: an additive attention bias broadcastable to `[B, heads, N, N]` (see
    /// [`key_dropout_bias`]).
    pub fn forward(&self, x: &Tensor, mode: Mode, bias: Option<&Tensor>) -> Result<Tensor> {
        // `fused::block` declines (None) where its op does not apply: off the CPU, not f32.
        if mode == Mode::Train {
            if let Some(p) = self.fused_params() {
                if let Some(y) = fused::block(x, &p, bias)? {
                    return Ok(y);
                }
            }
        }
        self.forward_layers(x, mode, bias)
    }

    /// The block's parameters for [`fused::block`] (every linear layer here has a bias).
    pub(crate) fn fused_params(&self) -> Option<fused::BlockParams<'_>> {
        let (a, m) = (&self.attn, &self.mlp);
        Some(fused::BlockParams {
            tensors: [
                &self.norm1.weight,
                &self.norm1.bias,
                a.qkv.weight(),
                a.qkv.bias()?,
                a.proj.weight(),
                a.proj.bias()?,
                &self.norm2.weight,
                &self.norm2.bias,
                m.fc1.weight(),
                m.fc1.bias()?,
                m.fc2.weight(),
                m.fc2.bias()?,
            ],
            heads: a.num_heads,
            scale: a.scale,
            eps: self.norm1.eps,
        })
    }

    /// The block layer by layer (the per-layer fused ops in training on the CPU, candle's ops
    /// elsewhere): what [`Block::forward`] runs where the whole-block op does not apply.
    pub fn forward_layers(&self, x: &Tensor, mode: Mode, bias: Option<&Tensor>) -> Result<Tensor> {
        let x = (x + self
            .attn
            .forward(&self.norm1.forward(x, mode)?, mode, bias)?)?;
        &x + self.mlp.forward(&self.norm2.forward(&x, mode)?, mode)?
    }
}

/// Position embeddings of the widest grid seen so far; a narrower grid is a prefix of it
/// (patches are numbered time-major), so one table serves every window length.
#[derive(Debug, Default)]
pub struct PosCache(Mutex<Option<Tensor>>);

impl PosCache {
    /// `[n_freq * n_time, dim]` on `like`'s device and dtype.
    pub fn get(&self, n_freq: usize, n_time: usize, dim: usize, like: &Tensor) -> Result<Tensor> {
        let n = n_freq * n_time;
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = slot.as_ref() {
            if t.dim(0)? >= n && t.device().same_device(like.device()) && t.dtype() == like.dtype()
            {
                return t.narrow(0, 0, n);
            }
        }
        // Grow in steps so that a slowly lengthening stream does not rebuild every call.
        let cols = n_time.next_power_of_two().max(16);
        let table = Tensor::from_vec(
            sincos_2d(n_freq, cols, dim),
            (n_freq * cols, dim),
            like.device(),
        )?
        .to_dtype(like.dtype())?;
        let out = table.narrow(0, 0, n)?;
        *slot = Some(table);
        Ok(out)
    }
}

/// The encoder: patch embedding, position embedding, blocks, final norm.
#[derive(Debug)]
pub struct Encoder {
    patch_embed: Linear,
    blocks: Vec<Block>,
    norm: Norm,
    cfg: EncoderConfig,
    mode: Mode,
    pos: PosCache,
}

impl Encoder {
    /// Builds the encoder from `vb` (weights under `patch_embed.proj`, `blocks.N`, `norm`).
    pub fn load(vb: VarBuilder, cfg: &EncoderConfig) -> Result<Self> {
        cfg.validate()
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let d = cfg.embed_dim;
        let blocks = (0..cfg.depth)
            .map(|i| Block::load(cfg, vb.pp(format!("blocks.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            patch_embed: linear(cfg.patch_len(), d, vb.pp("patch_embed.proj"))?,
            blocks,
            norm: Norm::load(d, cfg.layer_norm_eps, vb.pp("norm"))?,
            cfg: cfg.clone(),
            mode: Mode::Inference,
            pos: PosCache::default(),
        })
    }

    pub fn config(&self) -> &EncoderConfig {
        &self.cfg
    }

    /// Every parameter under its I-JEPA name (`blocks.0.attn.qkv.weight`, ...): what other
    /// runtimes (the CPU engine, exporters) build from.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        let mut lin = |name: &str, l: &Linear| {
            out.push((format!("{name}.weight"), l.weight().clone()));
            if let Some(b) = l.bias() {
                out.push((format!("{name}.bias"), b.clone()));
            }
        };
        lin("patch_embed.proj", &self.patch_embed);
        for (i, b) in self.blocks.iter().enumerate() {
            lin(&format!("blocks.{i}.attn.qkv"), &b.attn.qkv);
            lin(&format!("blocks.{i}.attn.proj"), &b.attn.proj);
            lin(&format!("blocks.{i}.mlp.fc1"), &b.mlp.fc1);
            lin(&format!("blocks.{i}.mlp.fc2"), &b.mlp.fc2);
        }
        let mut norm = |name: String, n: &Norm| {
            out.push((format!("{name}.weight"), n.weight.clone()));
            out.push((format!("{name}.bias"), n.bias.clone()));
        };
        for (i, b) in self.blocks.iter().enumerate() {
            norm(format!("blocks.{i}.norm1"), &b.norm1);
            norm(format!("blocks.{i}.norm2"), &b.norm2);
        }
        norm("norm".into(), &self.norm);
        out
    }

    /// A short fingerprint of the weights (16 hex digits), which heads record so that a head is
    /// never silently used on an encoder it was not fitted on (issue 16): FNV-1a over each
    /// tensor's name, shape and values rounded to f16, so an encoder and its f16 copy (how the
    /// built-in model ships) agree and any other encoder almost surely differs. An int8 copy
    /// differs too (its weights are not the same numbers).
    pub fn fingerprint(&self) -> Result<String> {
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                h = (h ^ u64::from(b)).wrapping_mul(PRIME);
            }
        };
        for (name, t) in self.named_tensors() {
            eat(name.as_bytes());
            for d in t.dims() {
                eat(&(*d as u64).to_le_bytes());
            }
            let v = t
                .to_dtype(candle_core::DType::F16)?
                .to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            for x in v {
                eat(&x.to_bits().to_le_bytes());
            }
        }
        Ok(format!("{h:016x}"))
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
    }

    /// Patch tokens plus position embeddings: `[B, N, patch_len] -> [B, N, D]`, where
    /// `N = n_freq * n_time` patches in time-major order.
    pub fn embed(&self, patches: &Tensor) -> Result<Tensor> {
        let (_, n, p) = patches.dims3()?;
        let n_freq = self.cfg.n_freq();
        if p != self.cfg.patch_len() || n % n_freq != 0 || n == 0 {
            candle_core::bail!(
                "expected [batch, k * {n_freq} patches, {}], got {:?}",
                self.cfg.patch_len(),
                patches.shape()
            );
        }
        let x = match self.mode {
            Mode::Train => fused::linear(patches, &self.patch_embed)?,
            Mode::Inference => self.patch_embed.forward(patches)?,
        };
        let pos = self.pos.get(n_freq, n / n_freq, self.cfg.embed_dim, &x)?;
        x.broadcast_add(&pos)
    }

    /// Encodes `patches` (`[B, N, patch_len]`, a whole grid). With `keep` (`[B, K]`, u32 patch
    /// indices) only those tokens enter the transformer, as in I-JEPA's context encoder; their
    /// position embeddings are those of their place in the full grid. Returns `[B, K or N, D]`.
    pub fn forward(&self, patches: &Tensor, keep: Option<&Tensor>) -> Result<Tensor> {
        self.forward_with_bias(patches, keep, None)
    }

    /// As [`Encoder::forward`], with one additive attention bias per block (`biases.len()` must
    /// equal the depth): how fine-tuning applies A-JEPA's regularized masking.
    pub fn forward_with_bias(
        &self,
        patches: &Tensor,
        keep: Option<&Tensor>,
        biases: Option<&[Tensor]>,
    ) -> Result<Tensor> {
        if let Some(b) = biases {
            if b.len() != self.blocks.len() {
                candle_core::bail!(
                    "{} attention biases for {} blocks",
                    b.len(),
                    self.blocks.len()
                );
            }
        }
        let mut x = self.embed(patches)?;
        if let Some(idx) = keep {
            x = gather_tokens(&x, idx)?;
        }
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(&x, self.mode, biases.map(|b| &b[i]))?;
        }
        self.norm.forward(&x, self.mode)
    }

    /// The outputs of the last `last` blocks (before the final norm), oldest first, on the
    /// whole grid: what data2vec's and EAT's multi-layer targets average (data2vec section 3.3).
    pub fn forward_layers(&self, patches: &Tensor, last: usize) -> Result<Vec<Tensor>> {
        let depth = self.blocks.len();
        if last == 0 || last > depth {
            candle_core::bail!("the last {last} layers of a {depth}-block encoder");
        }
        let mut x = self.embed(patches)?;
        let mut out = Vec::with_capacity(last);
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(&x, self.mode, None)?;
            if i + last >= depth {
                out.push(x.clone());
            }
        }
        Ok(out)
    }
}

/// A-JEPA's regularized masking for fine-tuning (A-JEPA section 3.4; DESIGN.md): tokens with
/// `dropped[b * n + k]` set may not serve as attention keys or values for other tokens, but still
/// attend to themselves. Returns the additive bias `[B, 1, N, N]` (0 or a large negative value).
pub fn key_dropout_bias(
    dropped: &[bool],
    b: usize,
    n: usize,
    device: &candle_core::Device,
) -> Result<Tensor> {
    if dropped.len() != b * n {
        candle_core::bail!("{} dropout flags for {b} x {n} tokens", dropped.len());
    }
    let mut bias = vec![0f32; b * n * n];
    for bi in 0..b {
        for k in (0..n).filter(|&k| dropped[bi * n + k]) {
            for q in (0..n).filter(|&q| q != k) {
                bias[(bi * n + q) * n + k] = -1e9;
            }
        }
    }
    Tensor::from_vec(bias, (b, 1, n, n), device)
}

/// `x[b, idx[b, k], :]` for `x: [B, N, D]`, `idx: [B, K]` (u32).
pub fn gather_tokens(x: &Tensor, idx: &Tensor) -> Result<Tensor> {
    let (b, _, d) = x.dims3()?;
    let (bi, k) = idx.dims2()?;
    if bi != b {
        candle_core::bail!("index batch {bi} does not match token batch {b}");
    }
    let idx = idx.unsqueeze(2)?.broadcast_as((b, k, d))?.contiguous()?;
    x.contiguous()?.gather(&idx, 1)
}
