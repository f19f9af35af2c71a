//! One pre-norm transformer block (`vit::Block`: LayerNorm, qkv, attention, proj, residual,
//! LayerNorm, fc1, GELU, fc2, residual) as a single op in candle's graph, with its backward
//! written out.
//!
//! Why: with every layer already a fused op, a bf16 step still spent about a fifth of its time
//! around them rather than in them (`perf`, BENCHMARKS.md "bf16 products on the CPU"): candle
//! keeps a gradient for every intermediate tensor and starts each one as a fresh zero tensor it
//! then adds into (memset 7 %, adds 4 %), and the residual adds and the hand-offs between ops
//! run one at a time while the other threads wait (7 %). As one op, a block's ten intermediate
//! tensors are buffers of this op, kept from the forward pass for the backward one, and every
//! pass over them runs on all the threads. Measured (BENCHMARKS.md, "A transformer block as one
//! op"): 2-6 % off a one-thread bf16 step, 7 % off its backward, 36 MiB less peak memory.
//! Recycling the buffers from step to step instead of zero-filling fresh ones gained nothing
//! measurable and kept 400 MiB more, so they are fresh.
//!
//! The arithmetic is the per-op path's, kernel for kernel and in the same order (the same layer
//! norm, products, attention and GELU functions; residual gradients are sums of two terms, which
//! do not depend on the order), so the two paths agree to the bit (a test says so), in f32 and
//! in bf16 products alike.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::linear::{weight_grads, Packed, Products};
use super::{attention_op, gelu_bwd_into, gelu_into, par_chunks, usable, zeroed, AttentionOp};
use super::{Geom, CHUNK};
use crate::engine::Isa;
use crate::model::ops::{f32_slice, layer_norm_bwd_rows, layer_norm_rows};

/// How many parameters a block has, in the order [`block`] flattens them: norm1 (weight, bias),
/// qkv (weight `[3d, d]`, bias), proj (`[d, d]`, bias), norm2, fc1 (`[hidden, d]`, bias), fc2
/// (`[d, hidden]`, bias).
fn param_lens(d: usize, hidden: usize) -> [usize; 12] {
    [
        d,
        d,
        3 * d * d,
        3 * d,
        d * d,
        d,
        d,
        d,
        hidden * d,
        hidden,
        d * hidden,
        d,
    ]
}

/// `v` cut into consecutive pieces of `lens`.
fn split<'a>(mut v: &'a [f32], lens: &[usize; 12]) -> [&'a [f32]; 12] {
    lens.map(|l| {
        let (a, b) = v.split_at(l);
        v = b;
        a
    })
}

/// `v` cut into consecutive mutable pieces of `lens`.
fn split_mut<'a>(mut v: &'a mut [f32], lens: &[usize; 12]) -> [&'a mut [f32]; 12] {
    lens.map(|l| {
        let (a, b) = std::mem::take(&mut v).split_at_mut(l);
        v = b;
        a
    })
}

/// `out[i] += x[i]` on the threads: a residual connection (candle's `x + f(x)`: the same sum,
/// float addition being commutative), or a second gradient reaching the same tensor.
fn add_into(x: &[f32], out: &mut [f32]) {
    par_chunks(out, CHUNK, |r, o| {
        for (o, &v) in o.iter_mut().zip(&x[r]) {
            *o += v;
        }
    });
}

/// What the forward pass keeps for the backward one (`m` rows): the two norms' outputs, `qkv`,
/// the attention's output, the first residual sum, fc1's output before and after GELU.
struct Saved {
    h1: Vec<f32>,
    qkv: Vec<f32>,
    a: Vec<f32>,
    x1: Vec<f32>,
    h2: Vec<f32>,
    u: Vec<f32>,
    gl: Vec<f32>,
}

#[derive(Clone)]
struct BlockOp {
    d: usize,
    hidden: usize,
    eps: f32,
    attn: AttentionOp,
    products: Products,
    isa: Isa,
    /// Filled by the forward pass, read by the backward one (the graph holds this op until the
    /// step's gradients are taken).
    saved: Arc<Mutex<Option<Arc<Saved>>>>,
}

impl BlockOp {
    fn lens(&self) -> [usize; 12] {
        param_lens(self.d, self.hidden)
    }

    fn geom(&self, l: &Layout) -> Result<(usize, Geom)> {
        let (b, n, d) = l.shape().dims3()?;
        if d != self.d {
            candle_core::bail!("block: input width {d}, parameters for {}", self.d);
        }
        Ok((b * n, Geom::from_dims(b, n, 3 * d, self.attn.heads)?))
    }

    fn forward(&self, x: &[f32], p: &[f32], m: usize, geom: Geom) -> (Vec<f32>, Saved) {
        let (d, hd, eps, pr) = (self.d, self.hidden, self.eps, self.products);
        let [n1w, n1b, qkv_w, qkv_b, proj_w, proj_b, n2w, n2b, fc1_w, fc1_b, fc2_w, fc2_b] =
            split(p, &self.lens());
        let mut h1 = zeroed(m * d);
        layer_norm_rows(self.isa, x, n1w, n1b, eps, &mut h1);
        let mut qkv = zeroed(m * 3 * d);
        Packed::new(pr, qkv_w, Some(qkv_b), 3 * d, d).gemm_rows(&h1, m, &mut qkv);
        let mut a = zeroed(m * d);
        self.attn.forward_into(&qkv, geom, &mut a);
        let mut x1 = zeroed(m * d);
        Packed::new(pr, proj_w, Some(proj_b), d, d).gemm_rows(&a, m, &mut x1);
        add_into(x, &mut x1);
        let mut h2 = zeroed(m * d);
        layer_norm_rows(self.isa, &x1, n2w, n2b, eps, &mut h2);
        let mut u = zeroed(m * hd);
        Packed::new(pr, fc1_w, Some(fc1_b), hd, d).gemm_rows(&h2, m, &mut u);
        let mut gl = zeroed(m * hd);
        gelu_into(self.isa, &u, &mut gl);
        let mut y = zeroed(m * d);
        Packed::new(pr, fc2_w, Some(fc2_b), d, hd).gemm_rows(&gl, m, &mut y);
        add_into(&x1, &mut y);
        let saved = Saved {
            h1,
            qkv,
            a,
            x1,
            h2,
            u,
            gl,
        };
        (y, saved)
    }

    /// `out` = `[dx (m d), d params (the flattened layout)]`, zeroed by the caller.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        x: &[f32],
        p: &[f32],
        s: &Saved,
        dy: &[f32],
        m: usize,
        geom: Geom,
        out: &mut [f32],
    ) {
        let (d, hd, eps, pr) = (self.d, self.hidden, self.eps, self.products);
        let lens = self.lens();
        let [n1w, _, qkv_w, _, proj_w, _, n2w, _, fc1_w, _, fc2_w, _] = split(p, &lens);
        let (dx, dp) = out.split_at_mut(m * d);
        let [dn1w, dn1b, dqkv_w, dqkv_b, dproj_w, dproj_b, dn2w, dn2b, dfc1_w, dfc1_b, dfc2_w, dfc2_b] =
            split_mut(dp, &lens);
        // y = x1 + gelu(u) W2^T + b2
        weight_grads(pr, dy, &s.gl, m, dfc2_w, dfc2_b);
        let mut dgl = zeroed(m * hd);
        Packed::from_transposed(pr, fc2_w, d, hd).gemm_rows(dy, m, &mut dgl);
        let mut du = zeroed(m * hd);
        gelu_bwd_into(self.isa, &s.u, &dgl, &mut du);
        drop(dgl);
        // u = h2 W1^T + b1, h2 = norm2(x1)
        weight_grads(pr, &du, &s.h2, m, dfc1_w, dfc1_b);
        let mut dh2 = zeroed(m * d);
        Packed::from_transposed(pr, fc1_w, hd, d).gemm_rows(&du, m, &mut dh2);
        drop(du);
        let mut dx1 = zeroed(m * d);
        layer_norm_bwd_rows(self.isa, &s.x1, n2w, &dh2, eps, &mut dx1, dn2w, dn2b);
        add_into(dy, &mut dx1);
        // x1 = x + a Wp^T + bp
        weight_grads(pr, &dx1, &s.a, m, dproj_w, dproj_b);
        let mut da = dh2;
        Packed::from_transposed(pr, proj_w, d, d).gemm_rows(&dx1, m, &mut da);
        let mut dqkv = zeroed(m * 3 * d);
        self.attn.backward_into(&s.qkv, &da, geom, &mut dqkv);
        // qkv = h1 Wqkv^T + bqkv, h1 = norm1(x)
        weight_grads(pr, &dqkv, &s.h1, m, dqkv_w, dqkv_b);
        let mut dh1 = da;
        Packed::from_transposed(pr, qkv_w, 3 * d, d).gemm_rows(&dqkv, m, &mut dh1);
        layer_norm_bwd_rows(self.isa, x, n1w, &dh1, eps, dx, dn1w, dn1b);
        add_into(&dx1, dx);
    }
}

impl CustomOp2 for BlockOp {
    fn name(&self) -> &'static str {
        "ajepa-block"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sp: &CpuStorage,
        lp: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(sx, lx, "block input")?;
        let p = f32_slice(sp, lp, "block parameters")?;
        let (m, geom) = self.geom(lx)?;
        self.attn.check_bias(geom)?;
        if p.len() != self.lens().iter().sum::<usize>() {
            candle_core::bail!("block: {} parameter values for width {}", p.len(), self.d);
        }
        let (y, saved) = self.forward(x, p, m, geom);
        *self.saved.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(saved));
        Ok((CpuStorage::F32(y), lx.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        p: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // Always filled: candle runs an op's backward only after its forward.
        let Some(saved) = self.saved.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            candle_core::bail!("block backward before its forward pass");
        };
        let x = x.contiguous()?;
        let op = BlockBwd {
            op: self.clone(),
            saved,
        };
        let all = x.apply_op3_no_bwd(p, &grad.contiguous()?, &op)?;
        let len = x.elem_count();
        let dx = all.narrow(0, 0, len)?.reshape(x.shape())?;
        let dp = all.narrow(0, len, p.elem_count())?;
        Ok((Some(dx), Some(dp)))
    }
}

/// `[dx, d params]` of a block, flat.
struct BlockBwd {
    op: BlockOp,
    saved: Arc<Saved>,
}

impl CustomOp3 for BlockBwd {
    fn name(&self) -> &'static str {
        "ajepa-block-bwd"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sp: &CpuStorage,
        lp: &Layout,
        sg: &CpuStorage,
        lg: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(sx, lx, "block input")?;
        let p = f32_slice(sp, lp, "block parameters")?;
        let dy = f32_slice(sg, lg, "block grad")?;
        let (m, geom) = self.op.geom(lx)?;
        if dy.len() != x.len() {
            candle_core::bail!("block backward: {} values, {} grads", x.len(), dy.len());
        }
        let mut out = zeroed(x.len() + p.len());
        self.op.backward(x, p, &self.saved, dy, m, geom, &mut out);
        Ok((CpuStorage::F32(out), Shape::from(x.len() + p.len())))
    }
}

/// The tensors of one block, in [`param_lens`]'s order.
pub struct BlockParams<'a> {
    pub tensors: [&'a Tensor; 12],
    pub heads: usize,
    pub scale: f64,
    pub eps: f64,
}

/// `vit::Block::forward` as one fused op where it applies: `None` where it does not (another
/// device or dtype, an attention bias of another shape, `AJEPA_FUSED_BLOCK=0`), and the caller
/// runs the block layer by layer.
pub fn block(x: &Tensor, p: &BlockParams, bias: Option<&Tensor>) -> Result<Option<Tensor>> {
    block_with(x, p, bias, Products::current(Isa::detect()))
}

pub(super) fn block_with(
    x: &Tensor,
    p: &BlockParams,
    bias: Option<&Tensor>,
    products: Products,
) -> Result<Option<Tensor>> {
    if !usable(x) || !block_enabled() || !p.tensors.iter().all(|t| usable(t)) {
        return Ok(None);
    }
    let d = p.tensors[0].elem_count();
    let (hidden, fd) = p.tensors[8].dims2()?;
    let lens = param_lens(d, hidden);
    if fd != d || p.tensors.iter().zip(lens).any(|(t, l)| t.elem_count() != l) {
        return Ok(None);
    }
    let Some(attn) = attention_op(p.heads, p.scale, bias)? else {
        return Ok(None);
    };
    let flat = p
        .tensors
        .iter()
        .map(|t| t.flatten_all())
        .collect::<Result<Vec<_>>>()?;
    let flat = Tensor::cat(&flat, 0)?;
    let op = BlockOp {
        d,
        hidden,
        eps: p.eps as f32,
        attn,
        products,
        isa: Isa::detect(),
        saved: Arc::new(Mutex::new(None)),
    };
    Ok(Some(x.contiguous()?.apply_op2(&flat, op)?))
}

/// Whether whole blocks run as one op (`AJEPA_FUSED_BLOCK=0` keeps the per-layer fused ops: to
/// measure what it gains, or to rule it out).
pub fn block_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("AJEPA_FUSED_BLOCK").map_or(true, |v| v.trim() != "0"))
}
