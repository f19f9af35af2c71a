//! The context encoder's forward pass on the engine's kernels: the same function as
//! [`crate::model::Encoder`] (I-JEPA's pre-norm ViT: patch embedding + 2D sine-cosine positions,
//! blocks of LayerNorm -> attention -> residual, LayerNorm -> GELU MLP -> residual, final
//! LayerNorm), with every intermediate in a [`Scratch`] sized once for the longest window.
//!
//! In [`Precision::Q8`] the four matrix products of each block run in int8 (per-channel weights,
//! per-token dynamic activations) where the CPU has an 8-bit dot product ([`int8_compute`]),
//! else in f32 from the int8 weights; the patch embedding, norms, attention scores and GELU stay
//! f32: they are a few percent of the work and the most sensitive to rounding.

use std::collections::HashMap;

use candle_core::Tensor;

use super::gemm::{gemm, gemm_cols, PackedF32};
use super::math;
use super::qgemm::{qgemm_cols, quantize_activations, quantize_weights, PackedQ8};
use super::threads::{column_part, column_parts, row_part, OutMatrix, Pool, RawSlice};
use super::{EngineError, Isa};
use crate::model::pos_embed::sincos_2d;
use crate::model::{Encoder, EncoderConfig};

/// Arithmetic of the blocks' matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    F32,
    /// int8 weights and activations, i32 sums.
    Q8,
}

#[derive(Debug, Clone)]
enum Lin {
    F32(PackedF32),
    Q8(PackedQ8),
}

impl Lin {
    fn n(&self) -> usize {
        match self {
            Lin::F32(w) => w.n(),
            Lin::Q8(w) => w.n(),
        }
    }
}

#[derive(Debug, Clone)]
struct Block {
    norm1: (Vec<f32>, Vec<f32>),
    qkv: Lin,
    proj: Lin,
    norm2: (Vec<f32>, Vec<f32>),
    fc1: Lin,
    fc2: Lin,
}

/// The encoder with packed weights. Immutable and `Sync`: threads share one, each with its own
/// [`Scratch`].
#[derive(Debug, Clone)]
pub struct FastEncoder {
    cfg: EncoderConfig,
    isa: Isa,
    precision: Precision,
    patch_embed: PackedF32,
    blocks: Vec<Block>,
    norm: (Vec<f32>, Vec<f32>),
    /// Position embeddings of the widest window, `[max_tokens, D]` (narrower windows use a
    /// prefix: patches are numbered time-major).
    pos: Vec<f32>,
    max_tokens: usize,
}

/// Every intermediate of one forward pass, allocated once by [`FastEncoder::scratch`].
#[derive(Debug)]
pub struct Scratch {
    x: Vec<f32>,
    h: Vec<f32>,
    qkv: Vec<f32>,
    y: Vec<f32>,
    mlp: Vec<f32>,
    scores: Vec<f32>,
    /// One head's keys, transposed: `[head_dim, n]`.
    kt: Vec<f32>,
    qa: Vec<i8>,
    sa: Vec<f32>,
    /// The last call's output tokens `[n_tokens, D]` (after the final norm).
    pub tokens: Vec<f32>,
    /// Their mean over tokens `[D]`.
    pub pooled: Vec<f32>,
    n_tokens: usize,
    /// The helper threads and each one's own attention buffers (scores, keys), when built with
    /// more than one thread.
    pool: Option<(Pool, Vec<AttentionBuffers>)>,
}

/// One thread's attention buffers: scores and transposed keys.
type AttentionBuffers = (Vec<f32>, Vec<f32>);

impl Scratch {
    /// Tokens of the last call.
    pub fn n_tokens(&self) -> usize {
        self.n_tokens
    }

    /// Threads this scratch computes with (the caller's included).
    pub fn threads(&self) -> usize {
        self.pool.as_ref().map_or(1, |(p, _)| p.threads())
    }

    /// The last call's output tokens, `[n_tokens, D]`.
    pub fn output(&self) -> &[f32] {
        let d = self.pooled.len();
        &self.tokens[..self.n_tokens * d]
    }
}

fn f32s(t: &Tensor, name: &str) -> Result<Vec<f32>, EngineError> {
    t.to_dtype(candle_core::DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(|e| EngineError::Weight {
            name: name.to_string(),
            reason: e.to_string(),
        })
}

impl FastEncoder {
    /// Packs the weights of `enc` for windows of up to `max_columns` patch columns.
    pub fn from_encoder(
        enc: &Encoder,
        precision: Precision,
        isa: Isa,
        max_columns: usize,
    ) -> Result<Self, EngineError> {
        let cfg = enc.config().clone();
        let named: HashMap<String, Tensor> = enc.named_tensors().into_iter().collect();
        let get = |name: &str| -> Result<Vec<f32>, EngineError> {
            let t = named.get(name).ok_or_else(|| EngineError::Weight {
                name: name.to_string(),
                reason: "missing".into(),
            })?;
            f32s(t, name)
        };
        let d = cfg.embed_dim;
        let hidden = d * cfg.mlp_ratio;
        let lin = |name: &str, n: usize, k: usize, prec: Precision| -> Result<Lin, EngineError> {
            let w = get(&format!("{name}.weight"))?;
            let b = get(&format!("{name}.bias"))?;
            if w.len() != n * k || b.len() != n {
                return Err(EngineError::Weight {
                    name: name.to_string(),
                    reason: format!("expected [{n}, {k}] and [{n}]"),
                });
            }
            Ok(match prec {
                Precision::F32 => Lin::F32(PackedF32::new(&w, Some(&b), n, k)),
                Precision::Q8 if int8_compute(isa) => {
                    Lin::Q8(PackedQ8::quantize(&w, Some(&b), n, k, isa))
                }
                Precision::Q8 => {
                    // The int8 weights, widened back to f32 for the f32 kernels.
                    let (q, scale) = quantize_weights(&w, n, k);
                    let wide: Vec<f32> = q
                        .iter()
                        .enumerate()
                        .map(|(i, &v)| v as f32 * scale[i / k])
                        .collect();
                    Lin::F32(PackedF32::new(&wide, Some(&b), n, k))
                }
            })
        };
        let norm = |name: &str| -> Result<(Vec<f32>, Vec<f32>), EngineError> {
            Ok((
                get(&format!("{name}.weight"))?,
                get(&format!("{name}.bias"))?,
            ))
        };
        let patch_embed = match lin("patch_embed.proj", d, cfg.patch_len(), Precision::F32)? {
            Lin::F32(w) => w,
            Lin::Q8(_) => unreachable!("built as f32"),
        };
        let blocks = (0..cfg.depth)
            .map(|i| {
                let p = format!("blocks.{i}");
                Ok(Block {
                    norm1: norm(&format!("{p}.norm1"))?,
                    qkv: lin(&format!("{p}.attn.qkv"), 3 * d, d, precision)?,
                    proj: lin(&format!("{p}.attn.proj"), d, d, precision)?,
                    norm2: norm(&format!("{p}.norm2"))?,
                    fc1: lin(&format!("{p}.mlp.fc1"), hidden, d, precision)?,
                    fc2: lin(&format!("{p}.mlp.fc2"), d, hidden, precision)?,
                })
            })
            .collect::<Result<Vec<_>, EngineError>>()?;
        let max_columns = max_columns.max(1);
        let max_tokens = max_columns * cfg.n_freq();
        Ok(Self {
            pos: sincos_2d(cfg.n_freq(), max_columns, d),
            norm: norm("norm")?,
            patch_embed,
            blocks,
            isa,
            precision,
            max_tokens,
            cfg,
        })
    }

    pub fn config(&self) -> &EncoderConfig {
        &self.cfg
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Whether [`Precision::Q8`] runs int8 products here (see [`int8_compute`]).
    pub fn int8_compute(&self) -> bool {
        self.precision == Precision::Q8 && int8_compute(self.isa)
    }

    /// The longest window, in tokens.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Buffers for one forward pass of up to [`FastEncoder::max_tokens`] tokens, on the
    /// calling thread.
    pub fn scratch(&self) -> Scratch {
        self.scratch_threads(1)
            .expect("one thread needs no helper to start")
    }

    /// As [`FastEncoder::scratch`], splitting the matrix products (by output columns), the
    /// attention heads and the GELU rows over `threads` threads in all: the caller and
    /// `threads - 1` persistent helpers (at most [`super::threads::MAX_THREADS`]). The results
    /// are bit-identical for every thread count: no split divides a sum.
    pub fn scratch_threads(&self, threads: usize) -> std::io::Result<Scratch> {
        let t = self.max_tokens;
        let scores_len = QUERIES * t.div_ceil(LANES) * LANES;
        let kt_len = t.div_ceil(LANES) * LANES * self.cfg.head_dim();
        let pool = if threads >= 2 {
            let pool = Pool::new(threads)?;
            let buffers = (1..pool.threads())
                .map(|_| (vec![0.0; scores_len], vec![0.0; kt_len]))
                .collect();
            Some((pool, buffers))
        } else {
            None
        };
        Ok(self.scratch_with(pool))
    }

    fn scratch_with(&self, pool: Option<(Pool, Vec<AttentionBuffers>)>) -> Scratch {
        let (t, d) = (self.max_tokens, self.cfg.embed_dim);
        let hidden = d * self.cfg.mlp_ratio;
        let widest = hidden.max(self.cfg.patch_len()).div_ceil(4) * 4;
        Scratch {
            x: vec![0.0; t * d],
            h: vec![0.0; t * d],
            qkv: vec![0.0; t * 3 * d],
            y: vec![0.0; t * d],
            mlp: vec![0.0; t * hidden],
            scores: vec![0.0; QUERIES * t.div_ceil(LANES) * LANES],
            kt: vec![0.0; t.div_ceil(LANES) * LANES * self.cfg.head_dim()],
            qa: vec![0; t * widest],
            sa: vec![0.0; t],
            tokens: vec![0.0; t * d],
            pooled: vec![0.0; d],
            n_tokens: 0,
            pool,
        }
    }

    /// Encodes one window: `patches` is `[n_tokens, patch_len]` (time-major, normalised, as
    /// [`Encoder::forward`] takes them). The output tokens and their mean land in `s`.
    pub fn forward(&self, patches: &[f32], s: &mut Scratch) -> Result<(), EngineError> {
        self.forward_with(patches, s, true)
    }

    /// As [`FastEncoder::forward`]; `parallel = false` leaves the scratch's helper threads (if
    /// any) out of this call, with the same result.
    pub fn forward_with(
        &self,
        patches: &[f32],
        s: &mut Scratch,
        parallel: bool,
    ) -> Result<(), EngineError> {
        let (d, p) = (self.cfg.embed_dim, self.cfg.patch_len());
        let n = patches.len() / p.max(1);
        if patches.len() != n * p || n == 0 || !n.is_multiple_of(self.cfg.n_freq()) {
            return Err(EngineError::Shape(format!(
                "{} values are not whole columns of {} patches of {p}",
                patches.len(),
                self.cfg.n_freq()
            )));
        }
        if n > self.max_tokens || s.x.len() < n * d {
            return Err(EngineError::Shape(format!(
                "{n} tokens, but the engine was built for at most {}",
                self.max_tokens.min(s.x.len() / d)
            )));
        }
        let isa = self.isa;
        let eps = self.cfg.layer_norm_eps as f32;
        let Scratch {
            x,
            h,
            qkv,
            y,
            mlp,
            scores,
            kt,
            qa,
            sa,
            tokens,
            pooled,
            n_tokens,
            pool,
        } = s;
        let (x, h, y) = (&mut x[..n * d], &mut h[..n * d], &mut y[..n * d]);
        let qkv = &mut qkv[..n * 3 * d];
        let hidden = d * self.cfg.mlp_ratio;
        let mlp = &mut mlp[..n * hidden];
        gemm(isa, patches, n, &self.patch_embed, x, false);
        for (v, &q) in x.iter_mut().zip(&self.pos[..n * d]) {
            *v += q;
        }
        let heads = self.cfg.num_heads;
        let (pool, buffers) = match pool.as_mut().filter(|_| parallel) {
            Some((p, b)) => (Some(&*p), RawSlice::new(b)),
            None => (None, RawSlice::new(&mut [])),
        };
        let threads = pool.map_or(1, Pool::threads);
        // Runs `f` on column ranges: all of them here, or split over the pool.
        let split = |width: usize, f: &(dyn Fn(std::ops::Range<usize>) + Sync)| {
            let parts = column_parts(width, threads);
            match pool {
                Some(p) if parts > 1 => p.run(parts, &|i| f(column_part(width, parts, i))),
                _ => f(0..width),
            }
        };
        let mut linear = |lin: &Lin, a: &[f32], out: &mut [f32], accumulate: bool| {
            let om = OutMatrix::new(out, n, lin.n());
            match lin {
                // SAFETY: `om` covers `out`, borrowed for this call; the parts write
                // disjoint columns.
                Lin::F32(w) => split(w.n(), &|c| unsafe {
                    gemm_cols(isa, a, n, w, om, accumulate, c)
                }),
                Lin::Q8(w) => {
                    quantize_activations(w, a, n, qa, sa);
                    let (qa, sa) = (&*qa, &*sa);
                    split(w.n(), &|c| unsafe {
                        qgemm_cols(w, qa, sa, n, om, accumulate, c)
                    });
                }
            }
        };
        for b in &self.blocks {
            math::layer_norm(isa, x, &b.norm1.0, &b.norm1.1, eps, h);
            linear(&b.qkv, h, qkv, false);
            {
                let ym = OutMatrix::new(y, n, d);
                let qkv = &*qkv;
                let parts = threads.min(heads);
                match pool {
                    Some(p) if parts > 1 => {
                        let (s0, k0) = (RawSlice::new(scores), RawSlice::new(kt));
                        // SAFETY: each part has its own scores/keys buffers (part 0 the
                        // scratch's, part i the i-th helper's) and writes the columns of its
                        // own heads.
                        p.run(parts, &|i| {
                            let (sc, k) = if i == 0 {
                                unsafe { (s0.get(), k0.get()) }
                            } else {
                                let (sc, k) = unsafe { buffers.element(i - 1) };
                                (&mut sc[..], &mut k[..])
                            };
                            attention(isa, qkv, n, d, heads, row_part(heads, parts, i), sc, k, ym)
                        });
                    }
                    _ => attention(isa, qkv, n, d, heads, 0..heads, scores, kt, ym),
                }
            }
            linear(&b.proj, y, x, true);
            math::layer_norm(isa, x, &b.norm2.0, &b.norm2.1, eps, h);
            debug_assert_eq!(b.fc1.n(), hidden);
            linear(&b.fc1, h, mlp, false);
            let parts = threads.min(n);
            match pool {
                Some(p) if parts > 1 => {
                    let m = RawSlice::new(mlp);
                    // SAFETY: part i alone touches its rows.
                    p.run(parts, &|i| {
                        let rows = row_part(n, parts, i);
                        let all = unsafe { m.get_range(rows.start * hidden, rows.len() * hidden) };
                        math::gelu(isa, all)
                    });
                }
                _ => math::gelu(isa, mlp),
            }
            linear(&b.fc2, mlp, x, true);
        }
        let out = &mut tokens[..n * d];
        math::layer_norm(isa, x, &self.norm.0, &self.norm.1, eps, out);
        pooled.fill(0.0);
        for row in out.chunks_exact(d) {
            for (m, &v) in pooled.iter_mut().zip(row) {
                *m += v;
            }
        }
        let inv = 1.0 / n as f32;
        pooled.iter_mut().for_each(|m| *m *= inv);
        *n_tokens = n;
        Ok(())
    }
}

/// Whether int8 products pay on `isa`: only with an 8-bit dot product (AVX-512 VNNI, or NEON
/// `sdot`: four times the multiply-adds of an f32 `fmla` per instruction). Without one, int8 is
/// slower than f32 (edge preset, one window: AVX2 int8 10.9 ms against AVX2 f32
/// 6.0 ms; portable 29 ms against 10 ms), so a `q8` model computes in f32 from its int8
/// weights there: the same weights, exact activations, the f32 speed.
pub fn int8_compute(isa: Isa) -> bool {
    matches!(isa, Isa::Avx512Vnni | Isa::NeonDot)
}

/// Lanes of the blocks the attention keeps in registers.
const LANES: usize = 16;
/// Queries computed together: four independent accumulators hide the add latency, and each
/// key or value block loaded serves all four.
const QUERIES: usize = 4;

math::simd_fn! {
    /// Multi-head self-attention of `qkv` (`[n, 3, heads, head_dim]` per token, PyTorch's
    /// `qkv.reshape(B, N, 3, H, C // H)`) into `y` (`[n, D]`, heads concatenated).
    ///
    /// Each head's keys are transposed into `kt` (`[head_dim, np]`, rows zero-padded to a
    /// multiple of 16), so scores are full-width multiply-adds over 16 keys at a time, and the
    /// weighted sum of values runs over 16 output dimensions at a time, for four queries at
    /// once, in fixed-size local blocks the compiler keeps in registers.
    fn attention(
        qkv: &[f32],
        n: usize,
        d: usize,
        heads: usize,
        which: std::ops::Range<usize>,
        scores: &mut [f32],
        kt: &mut [f32],
        y: OutMatrix,
    ) {
        let dh = d / heads;
        let np = n.div_ceil(LANES) * LANES;
        let scale = (dh as f32).powf(-0.5);
        for hd in which {
            let kt = &mut kt[..dh * np];
            kt.fill(0.0);
            for j in 0..n {
                let k = &qkv[j * 3 * d + d + hd * dh..j * 3 * d + d + (hd + 1) * dh];
                for (t, &kv) in k.iter().enumerate() {
                    kt[t * np + j] = kv * scale;
                }
            }
            let head = Head { qkv, kt, n, np, d, dh, off: hd * dh };
            let mut i = 0;
            while i + QUERIES <= n {
                head_queries::<QUERIES>(&head, i, scores, y);
                i += QUERIES;
            }
            while i < n {
                head_queries::<1>(&head, i, scores, y);
                i += 1;
            }
        }
    }
}

/// One head's operands.
struct Head<'a> {
    qkv: &'a [f32],
    kt: &'a [f32],
    n: usize,
    np: usize,
    d: usize,
    dh: usize,
    /// This head's offset within q, k and v.
    off: usize,
}

/// Queries `i0..i0 + Q` of one head: scores, softmax, weighted values into `y` (this head's
/// columns only).
#[inline(always)]
fn head_queries<const Q: usize>(h: &Head, i0: usize, scores: &mut [f32], y: OutMatrix) {
    let (n, np, d, dh) = (h.n, h.np, h.d, h.dh);
    let q = |r: usize| &h.qkv[(i0 + r) * 3 * d + h.off..(i0 + r) * 3 * d + h.off + dh];
    for j0 in (0..np).step_by(LANES) {
        let mut acc = [[0f32; LANES]; Q];
        for t in 0..dh {
            let row: &[f32; LANES] = h.kt[t * np + j0..t * np + j0 + LANES]
                .try_into()
                .expect("a block of LANES");
            for (r, a) in acc.iter_mut().enumerate() {
                let qv = q(r)[t];
                for l in 0..LANES {
                    a[l] += qv * row[l];
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            scores[r * np + j0..r * np + j0 + LANES].copy_from_slice(a);
        }
    }
    for r in 0..Q {
        math::softmax(&mut scores[r * np..r * np + n]);
    }
    let mut t0 = 0;
    while t0 + LANES <= dh {
        let mut acc = [[0f32; LANES]; Q];
        for j in 0..n {
            let base = j * 3 * d + 2 * d + h.off + t0;
            let v: &[f32; LANES] = h.qkv[base..base + LANES]
                .try_into()
                .expect("a block of LANES");
            for (r, a) in acc.iter_mut().enumerate() {
                let p = scores[r * np + j];
                for l in 0..LANES {
                    a[l] += p * v[l];
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            // SAFETY: this head's columns of row i0 + r: no other thread writes them.
            unsafe { y.segment(i0 + r, h.off + t0, LANES) }.copy_from_slice(a);
        }
        t0 += LANES;
    }
    if t0 < dh {
        // A head width that is not a multiple of 16 (tests, odd configs).
        for r in 0..Q {
            // SAFETY: as above.
            let out = unsafe { y.segment(i0 + r, h.off + t0, dh - t0) };
            out.fill(0.0);
            for j in 0..n {
                let p = scores[r * np + j];
                let base = j * 3 * d + 2 * d + h.off + t0;
                for (o, &v) in out.iter_mut().zip(&h.qkv[base..base + dh - t0]) {
                    *o += p * v;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::{VarBuilder, VarMap};

    /// Seeded normal values (the tests must not depend on a thread's random state).
    fn randn(n: usize, std: f32, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut uniform = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        (0..n)
            .map(|_| {
                let (u1, u2) = (uniform(), uniform());
                ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32 * std
            })
            .collect()
    }

    /// A random encoder with weights large enough to make every layer matter.
    fn random_encoder(embed_dim: usize, depth: usize, heads: usize) -> Encoder {
        let mut cfg = EncoderConfig::preset("tiny").unwrap();
        cfg.embed_dim = embed_dim;
        cfg.depth = depth;
        cfg.num_heads = heads;
        let vm = VarMap::new();
        let enc =
            Encoder::load(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu), &cfg).unwrap();
        for (i, (_, v)) in vm.data().lock().unwrap().iter().enumerate() {
            let t = v.as_tensor();
            let r = Tensor::randn(0f32, 0.08, t.shape(), &Device::Cpu).unwrap();
            let base = if t.rank() == 1 && i % 2 == 0 {
                1.0
            } else {
                0.0
            };
            v.set(&(r + base).unwrap()).unwrap();
        }
        enc
    }

    fn max_abs(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    }

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        dot / (a.iter().map(|x| x * x).sum::<f32>().sqrt()
            * b.iter().map(|x| x * x).sum::<f32>().sqrt())
    }

    /// The engine computes the candle encoder's function, on every kernel this CPU has, for
    /// several window lengths (partial micro-tiles) with one scratch reused.
    #[test]
    fn f32_engine_equals_the_candle_encoder() {
        let enc = random_encoder(96, 3, 3);
        let cfg = enc.config().clone();
        for isa in Isa::all_supported() {
            let fast = FastEncoder::from_encoder(&enc, Precision::F32, isa, 10).unwrap();
            let mut s = fast.scratch();
            for cols in [6, 1, 10, 3] {
                let n = cols * cfg.n_freq();
                let x = Tensor::from_vec(
                    randn(n * cfg.patch_len(), 0.5, cols as u64 + 100),
                    (1, n, cfg.patch_len()),
                    &Device::Cpu,
                )
                .unwrap();
                let want: Vec<f32> = enc
                    .forward(&x, None)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let patches: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
                fast.forward(&patches, &mut s).unwrap();
                let err = max_abs(s.output(), &want);
                // Float noise only: candle's CPU matmul splits its sums over threads as the
                // machine's load allows, so the reference itself moves in its last bits from
                // run to run (2.3e-5 seen once with the other tests running beside it).
                assert!(err < 5e-5, "{isa:?} {cols} columns: max |diff| {err}");
                let pooled: Vec<f32> = (0..cfg.embed_dim)
                    .map(|j| (0..n).map(|i| want[i * cfg.embed_dim + j]).sum::<f32>() / n as f32)
                    .collect();
                assert!(max_abs(&s.pooled, &pooled) < 1e-5);
            }
            let too_long = vec![0f32; 11 * cfg.n_freq() * cfg.patch_len()];
            assert!(fast.forward(&too_long, &mut s).is_err());
            assert!(fast.forward(&[0.0; 5], &mut s).is_err());
        }
    }

    /// Any number of threads computes exactly what one does (no split changes a sum's order),
    /// with more threads than heads, than 32-column tiles and than tokens among them, and a
    /// parallel scratch used on one thread too.
    #[test]
    fn every_thread_count_equals_one() {
        let enc = random_encoder(128, 2, 4);
        let cfg = enc.config().clone();
        for precision in [Precision::F32, Precision::Q8] {
            let f = FastEncoder::from_encoder(&enc, precision, Isa::detect(), 10).unwrap();
            let mut one = f.scratch();
            for threads in [2, 3, 4, 7] {
                let mut many = f.scratch_threads(threads).unwrap();
                assert_eq!(many.threads(), threads);
                for cols in [6, 1, 10] {
                    let x = randn(cols * cfg.n_freq() * cfg.patch_len(), 0.5, cols as u64);
                    f.forward(&x, &mut one).unwrap();
                    f.forward(&x, &mut many).unwrap();
                    assert_eq!(
                        one.output(),
                        many.output(),
                        "{precision:?} {threads} threads {cols} columns"
                    );
                    f.forward_with(&x, &mut many, false).unwrap();
                    assert_eq!(one.output(), many.output());
                }
            }
        }
    }

    /// int8 blocks stay close to f32 (the real-clip check is in tests/engine.rs), and every
    /// kernel of one kind gives the same result (up to the f32 parts: an ulp there can move one
    /// int8 rounding step). Kernels that run int8 products ([`int8_compute`]) are compared with
    /// each other, those that compute in f32 from the int8 weights with each other: the two
    /// groups differ by the activation quantization itself.
    #[test]
    fn q8_engine_is_close_to_f32_and_the_same_on_every_kernel() {
        let enc = random_encoder(128, 2, 4);
        let cfg = enc.config().clone();
        let n = 6 * cfg.n_freq();
        let x = randn(n * cfg.patch_len(), 0.5, 7);
        let f = FastEncoder::from_encoder(&enc, Precision::F32, Isa::Scalar, 6).unwrap();
        let mut s = f.scratch();
        f.forward(&x, &mut s).unwrap();
        let reference = s.pooled.clone();
        // First output of each group: [f32 compute, int8 compute].
        let mut first: [Option<(Isa, Vec<f32>)>; 2] = [None, None];
        for isa in Isa::all_supported() {
            let q = FastEncoder::from_encoder(&enc, Precision::Q8, isa, 6).unwrap();
            let mut sq = q.scratch();
            q.forward(&x, &mut sq).unwrap();
            let c = cosine(&sq.pooled, &reference);
            assert!(c > 0.995, "{isa:?}: cosine {c}");
            match &first[q.int8_compute() as usize] {
                None => first[q.int8_compute() as usize] = Some((isa, sq.output().to_vec())),
                Some((base, f)) => {
                    let c = cosine(f, sq.output());
                    assert!(c > 0.99999, "{isa:?} differs from {base:?}: cosine {c}");
                }
            }
        }
    }
}
