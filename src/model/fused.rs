//! Fused CPU training ops with hand-written backward passes, inside candle's autograd graph:
//! the linear layer on the engine's packed GEMM ([`crate::engine::gemm`], AVX-512 / AVX2 / NEON
//! micro-kernels), exact-erf GELU, and multi-head self-attention over a `qkv` projection.
//!
//! Why: a pretraining step through candle's composed CPU ops spent two thirds of its time in
//! the backward pass, most of it outside matrix products (broadcast bias adds and their
//! reductions, `contiguous` copies of permuted heads, per-op thread hand-offs, page faults on
//! fresh temporaries; BENCHMARKS.md, "Pretraining step"). Each op here makes one pass over its
//! data each way. They run on contiguous f32 CPU tensors; the model falls back to candle's
//! composed ops elsewhere (CUDA, Metal, bf16), which compute the same functions (the tests
//! compare both, and finite differences).
//!
//! Gradients (PyTorch's conventions): linear `y = x W^T + b`: `dx = g W`, `dW = g^T x`,
//! `db = sum_rows(g)`. GELU `y = x Phi(x)`: `dx = g (Phi(x) + x phi(x))`. Attention per head,
//! `P = softmax(s Q K^T)`, `O = P V`: `dV = P^T dO`, `dP = dO V^T`,
//! `dS = P (dP - rowsum(dP P))`, `dQ = s dS K`, `dK = s dS^T Q`; `P` is recomputed in the
//! backward pass (as FlashAttention does) instead of being kept per layer.
//!
//! Work is spread over candle's own CPU thread pool (`candle_core::utils::barrier_pool`), so no
//! second pool competes for the cores; items are claimed from a shared counter, so results do
//! not depend on the thread count (every output element is computed by one thread, in the same
//! order).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Device, Layout, Result};
use candle_core::{Shape, Tensor};

use crate::engine::math::{erf, exp, simd_fn};
use crate::engine::Isa;
use crate::model::ops::f32_slice;

mod block;
mod linear;
pub use block::{block, block_enabled, BlockParams};
pub use linear::{bf16_available, bf16_products, linear, with_bf16_products};
#[cfg(test)]
use linear::{linear_with, Products};

/// Whether `x` can take the fused path (contiguous or not: the ops make it contiguous).
/// `AJEPA_FUSED=0` in the environment turns the path off (candle's composed ops everywhere): to
/// measure what it gains, or to rule it out when something looks wrong.
pub fn usable(x: &Tensor) -> bool {
    enabled() && matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32
}

/// Whether the fused path is on at all (`AJEPA_FUSED` is not `0`).
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("AJEPA_FUSED").map_or(true, |v| v.trim() != "0"))
}

/// Runs `f(i)` for every `i` in `0..n` on candle's CPU threads.
pub(crate) fn par_for(n: usize, f: impl Fn(usize) + Sync) {
    if n <= 1 {
        if n == 1 {
            f(0);
        }
        return;
    }
    let next = AtomicUsize::new(0);
    candle_core::utils::barrier_pool().execute(|_| loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= n {
            break;
        }
        f(i);
    });
}

/// Runs `f(range, &mut out[range])` over consecutive `chunk`-long ranges of `out` (the last one
/// shorter) on candle's CPU threads: element-wise and row-wise kernels that fill one output.
pub(crate) fn par_chunks(
    out: &mut [f32],
    chunk: usize,
    f: impl Fn(std::ops::Range<usize>, &mut [f32]) + Sync,
) {
    let (len, chunk) = (out.len(), chunk.max(1));
    let view = Out::new(out);
    par_for(len.div_ceil(chunk), |i| {
        let r = i * chunk..((i + 1) * chunk).min(len);
        // SAFETY: chunk `i` alone owns `r`.
        let o = unsafe { view.slice(r.start, r.len()) };
        f(r, o);
    });
}

/// `len` zeros, written by all the threads (a fresh output buffer: zeroing it on one thread
/// while the others wait cost 5 % of a training step).
pub(crate) fn zeroed(len: usize) -> Vec<f32> {
    const PART: usize = 1 << 16;
    if len < 2 * PART {
        return vec![0f32; len];
    }
    let mut v = Vec::<f32>::with_capacity(len);
    let base = Out(v.as_mut_ptr(), len);
    par_for(len.div_ceil(PART), |i| {
        let start = i * PART;
        let count = PART.min(len - start);
        // SAFETY: part `i` alone writes `start..start + count` of the allocation's `len`.
        unsafe { std::ptr::write_bytes(base.ptr().add(start), 0, count) };
    });
    // SAFETY: every element of `0..len` was written above.
    unsafe { v.set_len(len) };
    v
}

/// A raw view of an output buffer whose disjoint parts several threads fill.
#[derive(Clone, Copy)]
pub(crate) struct Out(*mut f32, usize);
// SAFETY: every user writes disjoint ranges (stated at each use) while the buffer is alive.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    pub(crate) fn new(v: &mut [f32]) -> Self {
        Self(v.as_mut_ptr(), v.len())
    }

    fn ptr(&self) -> *mut f32 {
        self.0
    }

    /// # Safety
    /// `start..start + len` in bounds and touched by no one else meanwhile.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, start: usize, len: usize) -> &mut [f32] {
        assert!(start + len <= self.1, "output range");
        std::slice::from_raw_parts_mut(self.0.add(start), len)
    }
}

simd_fn! {
    fn gelu_fwd(x: &[f32], y: &mut [f32]) {
        for (y, &v) in y.iter_mut().zip(x) {
            *y = 0.5 * v * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

simd_fn! {
    fn gelu_bwd(x: &[f32], g: &[f32], dx: &mut [f32]) {
        // 1 / sqrt(2 pi)
        const INV_SQRT_2PI: f32 = 0.398_942_3;
        for ((d, &v), &gv) in dx.iter_mut().zip(x).zip(g) {
            let cdf = 0.5 * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2));
            let pdf = INV_SQRT_2PI * exp(-0.5 * v * v);
            *d = gv * (cdf + v * pdf);
        }
    }
}

/// Element-wise work in chunks over the threads.
const CHUNK: usize = 1 << 14;

struct Gelu(Isa);

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "ajepa-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, "gelu")?;
        let mut y = zeroed(x.len());
        gelu_into(self.0, x, &mut y);
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            x.contiguous()?
                .apply_op2_no_bwd(&g.contiguous()?, &GeluBwd(self.0))?,
        ))
    }
}

struct GeluBwd(Isa);

impl CustomOp2 for GeluBwd {
    fn name(&self) -> &'static str {
        "ajepa-gelu-bwd"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sg: &CpuStorage,
        lg: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(sx, lx, "gelu input")?;
        let g = f32_slice(sg, lg, "gelu grad")?;
        if x.len() != g.len() {
            candle_core::bail!("gelu backward: {} values, {} grads", x.len(), g.len());
        }
        let mut dx = zeroed(x.len());
        gelu_bwd_into(self.0, x, g, &mut dx);
        Ok((CpuStorage::F32(dx), lx.shape().clone()))
    }
}

/// `y = gelu(x)` element-wise on the threads.
fn gelu_into(isa: Isa, x: &[f32], y: &mut [f32]) {
    par_chunks(y, CHUNK, |r, y| gelu_fwd(isa, &x[r], y));
}

/// `dx = g gelu'(x)` element-wise on the threads.
fn gelu_bwd_into(isa: Isa, x: &[f32], g: &[f32], dx: &mut [f32]) {
    par_chunks(dx, CHUNK, |r, d| gelu_bwd(isa, &x[r.clone()], &g[r], d));
}

/// Exact-erf GELU (`Tensor::gelu_erf`), fused where it applies.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    gelu_with(x, Isa::detect())
}

fn gelu_with(x: &Tensor, isa: Isa) -> Result<Tensor> {
    if usable(x) {
        x.contiguous()?.apply_op1(Gelu(isa))
    } else {
        x.gelu_erf()
    }
}

/// Multi-head self-attention: `qkv` `[B, N, 3 C]` (the `qkv` projection's output, laid out
/// `[3, heads, head_dim]` in its last dimension, as I-JEPA's `Attention` reshapes it) to
/// `[B, N, C]` (heads concatenated, before the output projection). `bias`: an additive score
/// bias, constant (no gradient), `[N, N]` per clip (`batch` = B) or shared (`batch` = 1).
#[derive(Clone)]
struct AttentionOp {
    heads: usize,
    scale: f32,
    bias: Option<(Arc<[f32]>, usize)>,
}

impl AttentionOp {
    /// Clip `bi`'s `[N, N]` bias, if any.
    fn bias_of(&self, bi: usize, n: usize) -> Option<&[f32]> {
        self.bias.as_ref().map(|(v, batch)| {
            let b = if *batch == 1 { 0 } else { bi };
            &v[b * n * n..(b + 1) * n * n]
        })
    }

    /// Attention of `qkv` (`[B, N, 3C]`) into `y` (`[B, N, C]`), (batch, head) items on the
    /// threads.
    fn forward_into(&self, qkv: &[f32], g: Geom, y: &mut [f32]) {
        let out = Out::new(y);
        let (n, c) = (g.n, g.c);
        par_for(g.b * g.heads, |item| {
            let (bi, h) = (item / g.heads, item % g.heads);
            let base = qkv[bi * n * 3 * c..].as_ptr();
            let mut p = vec![0f32; n * n];
            // SAFETY: the head's q, k, v lie in this batch's rows; this item alone writes the
            // head's columns h*dh.. of batch bi's output rows.
            unsafe {
                let q = base.add(h * g.dh);
                let k = base.add(c + h * g.dh);
                probs(g, q, k, self.scale, self.bias_of(bi, n), &mut p);
                let o = out.slice(bi * n * c, n * c).as_mut_ptr().add(h * g.dh);
                mm(
                    (n, g.dh, n),
                    o,
                    (1, c as isize),
                    p.as_ptr(),
                    (1, n as isize),
                    base.add(2 * c + h * g.dh),
                    (1, 3 * c as isize),
                    1.0,
                );
            }
        });
    }

    /// The gradient of `qkv` from the output's `dout` (`[B, N, C]`) into `dqkv`, the
    /// probabilities recomputed per (batch, head).
    fn backward_into(&self, qkv: &[f32], dout: &[f32], g: Geom, dqkv: &mut [f32]) {
        let out = Out::new(dqkv);
        let (n, c, dh, scale) = (g.n, g.c, g.dh, self.scale);
        let (rs3, rs) = (3 * c as isize, c as isize);
        par_for(g.b * g.heads, |item| {
            let (bi, h) = (item / g.heads, item % g.heads);
            let base = qkv[bi * n * 3 * c..].as_ptr();
            let dbase = dout[bi * n * c..].as_ptr().wrapping_add(h * dh);
            let mut p = vec![0f32; n * n];
            let mut dp = vec![0f32; n * n];
            // SAFETY: reads lie in batch bi's rows; this item alone writes the head's q, k and v
            // columns of batch bi's rows of dqkv.
            unsafe {
                let (q, k, v) = (
                    base.add(h * dh),
                    base.add(c + h * dh),
                    base.add(2 * c + h * dh),
                );
                probs(g, q, k, scale, self.bias_of(bi, n), &mut p);
                let d = out.slice(bi * n * 3 * c, n * 3 * c).as_mut_ptr();
                let (dq, dk, dv) = (d.add(h * dh), d.add(c + h * dh), d.add(2 * c + h * dh));
                let nn = n as isize;
                // dV = P^T dO
                mm(
                    (n, dh, n),
                    dv,
                    (1, rs3),
                    p.as_ptr(),
                    (nn, 1),
                    dbase,
                    (1, rs),
                    1.0,
                );
                // dP = dO V^T
                mm(
                    (n, n, dh),
                    dp.as_mut_ptr(),
                    (1, nn),
                    dbase,
                    (1, rs),
                    v,
                    (rs3, 1),
                    1.0,
                );
                // dS = P (dP - rowsum(dP P))
                for (pr, dr) in p.chunks_exact(n).zip(dp.chunks_exact_mut(n)) {
                    let dot: f32 = pr.iter().zip(dr.iter()).map(|(a, b)| a * b).sum();
                    for (d, &pv) in dr.iter_mut().zip(pr) {
                        *d = pv * (*d - dot);
                    }
                }
                // dQ = s dS K, dK = s dS^T Q
                mm(
                    (n, dh, n),
                    dq,
                    (1, rs3),
                    dp.as_ptr(),
                    (1, nn),
                    k,
                    (1, rs3),
                    scale,
                );
                mm(
                    (n, dh, n),
                    dk,
                    (1, rs3),
                    dp.as_ptr(),
                    (nn, 1),
                    q,
                    (1, rs3),
                    scale,
                );
            }
        });
    }

    fn check_bias(&self, g: Geom) -> Result<()> {
        if let Some((v, batch)) = &self.bias {
            if (*batch != 1 && *batch != g.b) || v.len() != batch * g.n * g.n {
                candle_core::bail!(
                    "attention bias of {} values for {} clips of {} tokens",
                    v.len(),
                    g.b,
                    g.n
                );
            }
        }
        Ok(())
    }
}

/// The geometry of one `[B, N, 3C]` qkv tensor.
#[derive(Clone, Copy)]
struct Geom {
    b: usize,
    n: usize,
    c: usize,
    dh: usize,
    heads: usize,
}

impl Geom {
    fn new(l: &Layout, heads: usize) -> Result<Self> {
        let (b, n, c3) = l.shape().dims3()?;
        Self::from_dims(b, n, c3, heads)
    }

    fn from_dims(b: usize, n: usize, c3: usize, heads: usize) -> Result<Self> {
        if heads == 0 || !c3.is_multiple_of(3 * heads) {
            candle_core::bail!("attention: last dim {c3} is not 3 x {heads} heads");
        }
        let c = c3 / 3;
        Ok(Self {
            b,
            n,
            c,
            dh: c / heads,
            heads,
        })
    }
}

/// `dst[m, n] (= or +=) beta * lhs[m, k] rhs[k, n]`, all f32 and strided (`cs`, `rs`: column
/// and row steps in elements), on this thread.
#[allow(clippy::too_many_arguments)]
unsafe fn mm(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    (dcs, drs): (isize, isize),
    lhs: *const f32,
    (lcs, lrs): (isize, isize),
    rhs: *const f32,
    (rcs, rrs): (isize, isize),
    beta: f32,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        dcs,
        drs,
        false,
        lhs,
        lcs,
        lrs,
        rhs,
        rcs,
        rrs,
        0.0,
        beta,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

/// `p = softmax(scale Q K^T + bias)` of one (batch, head) into `p` (`[N, N]`).
///
/// # Safety
/// `q`, `k` point into a live `[B, N, 3C]` buffer at the head's first element.
unsafe fn probs(
    g: Geom,
    q: *const f32,
    k: *const f32,
    scale: f32,
    bias: Option<&[f32]>,
    p: &mut [f32],
) {
    let (n, rs) = (g.n, 3 * g.c as isize);
    mm(
        (n, n, g.dh),
        p.as_mut_ptr(),
        (1, n as isize),
        q,
        (1, rs),
        k,
        (rs, 1),
        scale,
    );
    if let Some(bias) = bias {
        p.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
    }
    for row in p.chunks_exact_mut(n) {
        crate::engine::math::softmax(row);
    }
}

impl CustomOp1 for AttentionOp {
    fn name(&self) -> &'static str {
        "ajepa-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let qkv = f32_slice(s, l, "attention")?;
        let g = Geom::new(l, self.heads)?;
        self.check_bias(g)?;
        let mut y = zeroed(g.b * g.n * g.c);
        self.forward_into(qkv, g, &mut y);
        Ok((CpuStorage::F32(y), Shape::from((g.b, g.n, g.c))))
    }

    fn bwd(&self, qkv: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(qkv.contiguous()?.apply_op2_no_bwd(
            &grad.contiguous()?,
            &AttentionBwd(self.clone()),
        )?))
    }
}

struct AttentionBwd(AttentionOp);

impl CustomOp2 for AttentionBwd {
    fn name(&self) -> &'static str {
        "ajepa-attention-bwd"
    }

    fn cpu_fwd(
        &self,
        s: &CpuStorage,
        l: &Layout,
        sg: &CpuStorage,
        lg: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let qkv = f32_slice(s, l, "attention")?;
        let dout = f32_slice(sg, lg, "attention grad")?;
        let g = Geom::new(l, self.0.heads)?;
        self.0.check_bias(g)?;
        if dout.len() != g.b * g.n * g.c {
            candle_core::bail!("attention backward: grad of {} values", dout.len());
        }
        let mut dqkv = zeroed(qkv.len());
        self.0.backward_into(qkv, dout, g, &mut dqkv);
        Ok((CpuStorage::F32(dqkv), l.shape().clone()))
    }
}

/// Multi-head self-attention of a `qkv` projection (`[B, N, 3C]` to `[B, N, C]`), with an
/// optional additive score bias broadcastable to `[B, heads, N, N]` from `[B or 1, 1, N, N]`
/// (how fine-tuning drops keys, `vit::key_dropout_bias`); fused where it applies, `None` where
/// it does not (the caller composes it).
pub fn attention(
    qkv: &Tensor,
    heads: usize,
    scale: f64,
    bias: Option<&Tensor>,
) -> Result<Option<Tensor>> {
    if !usable(qkv) {
        return Ok(None);
    }
    let Some(op) = attention_op(heads, scale, bias)? else {
        return Ok(None);
    };
    Ok(Some(qkv.contiguous()?.apply_op1(op)?))
}

/// The attention op for `heads` and an optional score bias (`None` for a bias of a shape the
/// fused op does not take).
fn attention_op(heads: usize, scale: f64, bias: Option<&Tensor>) -> Result<Option<AttentionOp>> {
    let bias = match bias {
        None => None,
        Some(t) => match t.dims() {
            &[bb, 1, n1, n2] if n1 == n2 && t.dtype() == DType::F32 => {
                let v = t.flatten_all()?.to_vec1::<f32>()?;
                Some((Arc::from(v), bb))
            }
            _ => return Ok(None),
        },
    };
    Ok(Some(AttentionOp {
        heads,
        scale: scale as f32,
        bias,
    }))
}

#[cfg(test)]
#[path = "fused_tests.rs"]
mod tests;
