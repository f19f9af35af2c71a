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

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Device, Layout, Result};
use candle_core::{Shape, Tensor};
use candle_nn::{Linear, Module};

use crate::engine::gemm::{gemm, PackedF32, MR};
use crate::engine::gemm_bf16::{self, PackedBf16};
use crate::engine::math::{erf, exp, simd_fn};
use crate::engine::Isa;
use crate::model::ops::f32_slice;

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

thread_local! {
    /// Whether the linear layers' products built on this thread take bf16 operands (f32 sums):
    /// off unless a training step asks for it ([`with_bf16_products`]).
    static BF16_PRODUCTS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with bf16 products (`engine::gemm_bf16`: operands rounded to bf16, sums in f32, as
/// under PyTorch's bf16 autocast) for every fused linear layer it builds, forward and both
/// backward products (an op keeps the choice it was built with, so a `backward()` inside or
/// after `f` matches its forward); attention, layer norm, GELU and every sum stay f32.
///
/// Per thread and scoped, not process-wide: the choice belongs to one training step (the op is
/// built deep inside the model's forward pass), and two runs or tests on other threads keep
/// theirs. Returns `f`'s result; `on` is ignored (f32 products) where [`bf16_available`] is
/// false, since the f32 kernels would outrun any emulation.
pub fn with_bf16_products<R>(on: bool, f: impl FnOnce() -> R) -> R {
    let on = on && bf16_available();
    let before = BF16_PRODUCTS.with(|c| c.replace(on));
    // Restored on unwinding too, so a panicking step does not leave the thread in bf16.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            BF16_PRODUCTS.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(before);
    f()
}

/// Whether this CPU runs bf16 products natively (AVX-512 BF16).
pub fn bf16_available() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(gemm_bf16::available)
}

/// Whether fused linear layers built on this thread now use bf16 products.
pub fn bf16_products() -> bool {
    BF16_PRODUCTS.with(|c| c.get())
}

/// How a linear layer's products run: the f32 kernels of one instruction set, or bf16.
#[derive(Debug, Clone, Copy)]
enum Products {
    F32(Isa),
    Bf16,
}

impl Products {
    fn current(isa: Isa) -> Self {
        if bf16_products() {
            Products::Bf16
        } else {
            Products::F32(isa)
        }
    }
}

/// Weights packed for one product, in the precision it runs in.
enum Packed {
    F32(Isa, PackedF32),
    Bf16(PackedBf16),
}

impl Packed {
    /// `w` (`[n, k]`) and its bias.
    fn new(p: Products, w: &[f32], bias: Option<&[f32]>, n: usize, k: usize) -> Self {
        match p {
            Products::F32(isa) => Packed::F32(isa, PackedF32::new(w, bias, n, k)),
            Products::Bf16 => Packed::Bf16(PackedBf16::new(w, bias, n, k)),
        }
    }

    /// `W = a^T` for `a` `[rows, cols]`, no bias.
    fn from_transposed(p: Products, a: &[f32], rows: usize, cols: usize) -> Self {
        match p {
            Products::F32(isa) => Packed::F32(isa, PackedF32::from_transposed(a, rows, cols)),
            Products::Bf16 => {
                Packed::Bf16(PackedBf16::from_transposed_with(a, rows, cols, |n, f| {
                    par_for(n, f)
                }))
            }
        }
    }

    /// `c[m, n] = a[m, k] w^T + bias`, rows split over the threads.
    fn gemm_rows(&self, a: &[f32], m: usize, c: &mut [f32]) {
        let (n, k) = match self {
            Packed::F32(_, w) => (w.n(), w.k()),
            Packed::Bf16(w) => (w.n(), w.k()),
        };
        debug_assert!(a.len() == m * k && c.len() == m * n);
        // At least ~8 chunks so the threads even out, each a whole number of micro-tile rows.
        let rows = (m.div_ceil(8).div_ceil(MR) * MR).clamp(MR, 16 * MR);
        let out = Out::new(c);
        par_for(m.div_ceil(rows), |i| {
            let r0 = i * rows;
            let r = rows.min(m - r0);
            // SAFETY: chunk `i` owns rows r0..r0 + r.
            let c = unsafe { out.slice(r0 * n, r * n) };
            let a = &a[r0 * k..(r0 + r) * k];
            match self {
                Packed::F32(isa, w) => gemm(*isa, a, r, w, c, false),
                Packed::Bf16(w) => {
                    // This chunk's rows as bf16 pairs: a fraction of the product's work (k
                    // values per row against k * n multiply-adds).
                    let mut pairs = Vec::new();
                    gemm_bf16::rows_to_bf16(a, r, k, &mut pairs);
                    gemm_bf16::gemm(&pairs, r, w, c, false);
                }
            }
        });
    }
}

impl Packed {
    /// [`Packed::gemm_rows`] for bf16 weights, from rows already converted to bf16 pairs
    /// (`m` rows of `ceil(k / 2)`: [`gemm_bf16::rows_to_bf16`]'s layout).
    fn gemm_pairs(w: &PackedBf16, pairs: &[u32], m: usize, c: &mut [f32]) {
        let (n, kp) = (w.n(), w.k().div_ceil(2));
        debug_assert!(pairs.len() == m * kp && c.len() == m * n);
        let rows = (m.div_ceil(8).div_ceil(MR) * MR).clamp(MR, 16 * MR);
        let out = Out::new(c);
        par_for(m.div_ceil(rows), |i| {
            let r0 = i * rows;
            let r = rows.min(m - r0);
            // SAFETY: chunk `i` owns rows r0..r0 + r.
            let c = unsafe { out.slice(r0 * n, r * n) };
            gemm_bf16::gemm(&pairs[r0 * kp..(r0 + r) * kp], r, w, c, false);
        });
    }
}

/// `y = x W^T + b` over the last dimension of `x`.
struct LinearOp(Products);

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "ajepa-linear"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(sx, lx, "linear input")?;
        let w = f32_slice(sw, lw, "linear weight")?;
        let b = f32_slice(sb, lb, "linear bias")?;
        let (n, k) = lw.shape().dims2()?;
        let dims = lx.dims();
        if dims.last() != Some(&k) || b.len() != n {
            candle_core::bail!(
                "linear: input {:?}, weight [{n}, {k}], bias {}",
                dims,
                b.len()
            );
        }
        let m = x.len() / k.max(1);
        let packed = Packed::new(self.0, w, Some(b), n, k);
        let mut y = zeroed(m * n);
        packed.gemm_rows(x, m, &mut y);
        let mut out = dims.to_vec();
        *out.last_mut().expect("checked above") = n;
        Ok((CpuStorage::F32(y), Shape::from(out)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let x = x.contiguous()?;
        let (n, k) = w.dims2()?;
        let dx = g.apply_op2_no_bwd(w, &LinearDx(self.0))?;
        // dW and db in one pass over g: [n * k + n] values.
        let dwb = g.apply_op2_no_bwd(&x, &LinearDw(self.0))?;
        let dw = dwb.narrow(0, 0, n * k)?.reshape((n, k))?;
        let db = dwb.narrow(0, n * k, n)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// `dx = g W` (shaped like the layer's input).
struct LinearDx(Products);

impl CustomOp2 for LinearDx {
    fn name(&self) -> &'static str {
        "ajepa-linear-dx"
    }

    fn cpu_fwd(
        &self,
        sg: &CpuStorage,
        lg: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = f32_slice(sg, lg, "linear grad")?;
        let w = f32_slice(sw, lw, "linear weight")?;
        let (n, k) = lw.shape().dims2()?;
        let m = g.len() / n.max(1);
        let packed = Packed::from_transposed(self.0, w, n, k);
        let mut dx = zeroed(m * k);
        packed.gemm_rows(g, m, &mut dx);
        let mut out = lg.dims().to_vec();
        *out.last_mut().expect("grad has a last dim") = k;
        Ok((CpuStorage::F32(dx), Shape::from(out)))
    }
}

/// `[dW = g^T x (n x k), db = sum_rows(g) (n)]`, flat.
struct LinearDw(Products);

impl CustomOp2 for LinearDw {
    fn name(&self) -> &'static str {
        "ajepa-linear-dw"
    }

    fn cpu_fwd(
        &self,
        sg: &CpuStorage,
        lg: &Layout,
        sx: &CpuStorage,
        lx: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = f32_slice(sg, lg, "linear grad")?;
        let x = f32_slice(sx, lx, "linear input")?;
        let n = *lg.dims().last().unwrap_or(&1);
        let k = *lx.dims().last().unwrap_or(&1);
        let m = g.len() / n.max(1);
        let mut out = zeroed(n * k + n);
        let (dw, db) = out.split_at_mut(n * k);
        let packed = Packed::from_transposed(self.0, x, m, k);
        if let Packed::Bf16(w) = &packed {
            // g^T straight into bf16 pairs (what the bf16 product reads), with db on the way.
            let pairs = transpose_to_bf16_pairs(g, m, n, db);
            Packed::gemm_pairs(w, &pairs, n, dw);
            return Ok((CpuStorage::F32(out), Shape::from(n * k + n)));
        }
        // g^T and the bias gradient, 16 columns of g per chunk: each read is a 64-byte run of a
        // row of g, each write a run of a row of g^T; db sums in row order (as one thread would).
        let mut gt = zeroed(m * n);
        let (tview, bview) = (Out::new(&mut gt), Out::new(db));
        par_for(n.div_ceil(COLS), |c| {
            let cols = c * COLS..((c + 1) * COLS).min(n);
            let w = cols.len();
            // SAFETY: chunk `c` owns rows `cols` of g^T and entries `cols` of db.
            let (t, b) = unsafe {
                (
                    tview.slice(cols.start * m, w * m),
                    bview.slice(cols.start, w),
                )
            };
            // 16 x 16 tiles: the 16 source rows stay in L1 while each output row gets a
            // 64-byte run.
            for r0 in (0..m).step_by(16) {
                let rs = r0..(r0 + 16).min(m);
                for j in 0..w {
                    let col = cols.start + j;
                    let mut acc = 0f32;
                    for (o, r) in t[j * m + rs.start..j * m + rs.end]
                        .iter_mut()
                        .zip(rs.clone())
                    {
                        *o = g[r * n + col];
                        acc += *o;
                    }
                    b[j] += acc;
                }
            }
        });
        packed.gemm_rows(&gt, n, dw);
        Ok((CpuStorage::F32(out), Shape::from(n * k + n)))
    }
}

/// Columns of `dw` grads per chunk of the transposition.
const COLS: usize = 16;

/// `g` (`[m, n]`) transposed into bf16 pairs (`n` rows of `ceil(m / 2)`, the layout
/// [`gemm_bf16::rows_to_bf16`] gives), and `db += sum_rows(g)` in the f32 path's order (16-row
/// blocks, each summed in row order), so the bias gradient is the same in both precisions.
fn transpose_to_bf16_pairs(g: &[f32], m: usize, n: usize, db: &mut [f32]) -> Vec<u32> {
    let kp = m.div_ceil(2);
    let mut pairs = vec![0u32; n * kp];
    let (pview, bview) = (OutU32(pairs.as_mut_ptr(), pairs.len()), Out::new(db));
    par_for(n.div_ceil(COLS), |c| {
        let cols = c * COLS..((c + 1) * COLS).min(n);
        let w = cols.len();
        // SAFETY: chunk `c` alone owns rows `cols` of the pairs and entries `cols` of db.
        let (t, b) = unsafe {
            (
                pview.slice(cols.start * kp, w * kp),
                bview.slice(cols.start, w),
            )
        };
        let mut scratch = Vec::new();
        gemm_bf16::columns_to_bf16_pairs(g, m, n, cols.start, w, &mut scratch, t);
        // Each column summed in row order within 16-row blocks, as the f32 path does.
        for r0 in (0..m).step_by(16) {
            let mut acc = [0f32; COLS];
            for r in r0..(r0 + 16).min(m) {
                for (a, &v) in acc.iter_mut().zip(&g[r * n + cols.start..r * n + cols.end]) {
                    *a += v;
                }
            }
            for (bj, a) in b.iter_mut().zip(acc) {
                *bj += a;
            }
        }
    });
    pairs
}

/// A raw view of a `u32` buffer whose disjoint parts several threads fill.
#[derive(Clone, Copy)]
struct OutU32(*mut u32, usize);
// SAFETY: every user writes disjoint ranges (stated at each use) while the buffer is alive.
unsafe impl Send for OutU32 {}
unsafe impl Sync for OutU32 {}

impl OutU32 {
    /// # Safety
    /// `start..start + len` in bounds and touched by no one else meanwhile.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self, start: usize, len: usize) -> &mut [u32] {
        assert!(start + len <= self.1, "output range");
        std::slice::from_raw_parts_mut(self.0.add(start), len)
    }
}

/// `lin.forward(x)`, through the fused op where it applies.
pub fn linear(x: &Tensor, lin: &Linear) -> Result<Tensor> {
    linear_with(x, lin, Products::current(Isa::detect()))
}

fn linear_with(x: &Tensor, lin: &Linear, products: Products) -> Result<Tensor> {
    match lin.bias() {
        Some(b) if usable(x) => x
            .contiguous()?
            .apply_op3(lin.weight(), b, LinearOp(products)),
        _ => lin.forward(x),
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
        par_chunks(&mut y, CHUNK, |r, y| gelu_fwd(self.0, &x[r], y));
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
        par_chunks(&mut dx, CHUNK, |r, d| {
            gelu_bwd(self.0, &x[r.clone()], &g[r], d)
        });
        Ok((CpuStorage::F32(dx), lx.shape().clone()))
    }
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
        if heads == 0 || c3 % (3 * heads) != 0 {
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
        let out = Out::new(&mut y);
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
        let out = Out::new(&mut dqkv);
        let (n, c, dh, scale) = (g.n, g.c, g.dh, self.0.scale);
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
                probs(g, q, k, scale, self.0.bias_of(bi, n), &mut p);
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
    let op = AttentionOp {
        heads,
        scale: scale as f32,
        bias,
    };
    Ok(Some(qkv.contiguous()?.apply_op1(op)?))
}

#[cfg(test)]
#[path = "fused_tests.rs"]
mod tests;
