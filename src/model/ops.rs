//! Fused CPU kernels with hand-written backward passes for training: softmax over the last
//! dimension and layer normalisation.
//!
//! candle's fused `softmax_last_dim` and `layer_norm` have no backward pass, and their
//! differentiable compositions (max, subtract, exp, sum, divide; mean, subtract, square, mean,
//! sqrt, divide, scale, shift) cost a chain of full-size temporaries forward and twice as many
//! backward; measured on the edge preset that made the backward pass more than four times the
//! forward. These ops keep one pass per row both ways. They run on contiguous f32 CPU tensors;
//! anything else (GPU, other dtypes) takes the composed path, which computes the same function.
//!
//! On other devices (CUDA, Metal) and for other dtypes (bf16 mixed precision), the forward pass
//! runs candle's fused kernels (`candle_nn::ops::softmax_last_dim`, `layer_norm`), which have no
//! backward pass either, and [`Attach`] gives their output the backward pass below, computed in
//! f32 from a few device operations: one kernel forward instead of five to eight.
//!
//! Gradients (per row, `n` elements): softmax `y`: `dx = y (g - sum(g y))`; layer norm
//! `y = xhat w + b`, `xhat = (x - mean) rstd`: `dx = rstd (gw - mean(gw) - xhat mean(gw xhat))`,
//! `dw = sum_rows(g xhat)`, `db = sum_rows(g)`.

use crate::engine::math::simd_fn;
use crate::engine::Isa;
use crate::model::fused::{par_chunks, par_for, zeroed, Out};
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Device, Layout, Result, Shape, Tensor, D,
};

/// The f32 values of a contiguous CPU tensor (custom ops' inputs).
pub(crate) fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("{what}: f32 only");
    };
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("{what}: contiguous input only");
    };
    Ok(&v[a..b])
}

fn fused_ok(x: &Tensor) -> bool {
    matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32
}

struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "ajepa-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, "softmax")?;
        let n = l.dims().last().copied().unwrap_or(1).max(1);
        let mut out = vec![0f32; x.len()];
        for (xr, yr) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
            let max = xr.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for (y, &v) in yr.iter_mut().zip(xr) {
                *y = (v - max).exp();
                sum += *y;
            }
            let inv = 1.0 / sum;
            yr.iter_mut().for_each(|y| *y *= inv);
        }
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            res.contiguous()?
                .apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxBwd)?,
        ))
    }
}

struct SoftmaxBwd;

impl CustomOp2 for SoftmaxBwd {
    fn name(&self) -> &'static str {
        "ajepa-softmax-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = f32_slice(s1, l1, "softmax bwd")?;
        let g = f32_slice(s2, l2, "softmax bwd")?;
        let n = l1.dims().last().copied().unwrap_or(1).max(1);
        let mut out = vec![0f32; y.len()];
        for ((yr, gr), dr) in y
            .chunks_exact(n)
            .zip(g.chunks_exact(n))
            .zip(out.chunks_exact_mut(n))
        {
            let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
            for ((d, &yv), &gv) in dr.iter_mut().zip(yr).zip(gr) {
                *d = yv * (gv - dot);
            }
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Softmax over the last dimension, differentiable, fused on the CPU (f32) and through
/// candle's forward kernel elsewhere.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if fused_ok(x) {
        x.contiguous()?.apply_op1(Softmax)
    } else {
        softmax_attached(x)
    }
}

/// candle's fused softmax forward with [`Attach`]'s backward: the path for GPUs and bf16.
fn softmax_attached(x: &Tensor) -> Result<Tensor> {
    let x = x.contiguous()?;
    let y = candle_nn::ops::softmax_last_dim(&x)?;
    x.apply_op2(&y, Attach(Backward::Softmax))
}

/// candle's fused layer norm forward (unit scale, no shift) with [`Attach`]'s backward, then
/// the affine part as ordinary differentiable operations: the path for GPUs and bf16.
fn layer_norm_attached(x: &Tensor, w: &Tensor, b: &Tensor, eps: f32) -> Result<Tensor> {
    let x = x.contiguous()?;
    let n = w.dim(0)?;
    let ones = Tensor::ones(n, x.dtype(), x.device())?;
    let zeros = Tensor::zeros(n, x.dtype(), x.device())?;
    let xhat = candle_nn::ops::layer_norm(&x, &ones, &zeros, eps)?;
    x.apply_op2(&xhat, Attach(Backward::Normalise { eps }))?
        .broadcast_mul(&w.to_dtype(x.dtype())?)?
        .broadcast_add(&b.to_dtype(x.dtype())?)
}

/// Which function [`Attach`] differentiates.
#[derive(Debug, Clone, Copy)]
enum Backward {
    /// `y = softmax(x)` over the last dimension.
    Softmax,
    /// `y = (x - mean) / sqrt(var + eps)` over the last dimension.
    Normalise { eps: f32 },
}

/// `Attach(f)` applied to `(x, y)` returns `y`, which must already be `f(x)` computed by a
/// kernel without a backward pass, and differentiates it as `f` with respect to `x` (`y` gets no
/// gradient). The forward is one copy on any device; the backward is composed from device
/// operations in f32, whatever the dtype of `x` (as autocast keeps reductions in f32).
struct Attach(Backward);

impl CustomOp2 for Attach {
    fn name(&self) -> &'static str {
        "ajepa-attach-backward"
    }

    fn cpu_fwd(
        &self,
        _s1: &CpuStorage,
        _l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        Ok((s2.try_clone(l2)?, l2.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _s1: &candle_core::CudaStorage,
        _l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        Ok((s2.try_clone(l2)?, l2.shape().clone()))
    }

    #[cfg(feature = "metal")]
    fn metal_fwd(
        &self,
        _s1: &candle_core::MetalStorage,
        _l1: &Layout,
        s2: &candle_core::MetalStorage,
        l2: &Layout,
    ) -> Result<(candle_core::MetalStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        Ok((s2.try_clone(l2)?, l2.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        _y: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad.to_dtype(DType::F32)?;
        let dx = match self.0 {
            Backward::Softmax => {
                let y = res.to_dtype(DType::F32)?;
                let dot = (&g * &y)?.sum_keepdim(D::Minus1)?;
                (y * g.broadcast_sub(&dot)?)?
            }
            Backward::Normalise { eps } => {
                let x = x.to_dtype(DType::F32)?;
                let c = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
                let rstd = (c.sqr()?.mean_keepdim(D::Minus1)? + eps as f64)?
                    .sqrt()?
                    .recip()?;
                let xhat = c.broadcast_mul(&rstd)?;
                let m1 = g.mean_keepdim(D::Minus1)?;
                let m2 = (&g * &xhat)?.mean_keepdim(D::Minus1)?;
                (g.broadcast_sub(&m1)? - xhat.broadcast_mul(&m2)?)?.broadcast_mul(&rstd)?
            }
        };
        Ok((Some(dx.to_dtype(x.dtype())?), None))
    }
}

/// Layer norm forward on rows: writes `xhat` and returns per-row `rstd`.
fn normalise_rows(isa: Isa, x: &[f32], n: usize, eps: f32, xhat: &mut [f32]) -> Vec<f32> {
    let mut rstds = vec![0f32; x.len() / n.max(1)];
    normalise_into(isa, x, n, eps, xhat, &mut rstds);
    rstds
}

simd_fn! {
    /// Means and variances with 16 partial sums (one AVX-512 register; the compiler does not
    /// reassociate a plain sum, which left this loop scalar: 6 % of a training step).
    fn normalise_into(x: &[f32], n: usize, eps: f32, xhat: &mut [f32], rstd: &mut [f32]) {
        #[inline(always)]
        fn lanes_sum(row: &[f32], f: impl Fn(f32) -> f32) -> f32 {
            let mut acc = [0f32; 16];
            let mut chunks = row.chunks_exact(16);
            for c in &mut chunks {
                for (a, &v) in acc.iter_mut().zip(c) {
                    *a += f(v);
                }
            }
            acc.iter().sum::<f32>() + chunks.remainder().iter().map(|&v| f(v)).sum::<f32>()
        }
        for ((xr, hr), r) in x.chunks_exact(n).zip(xhat.chunks_exact_mut(n)).zip(rstd.iter_mut()) {
            let mean = lanes_sum(xr, |v| v) / n as f32;
            let var = lanes_sum(xr, |v| (v - mean) * (v - mean)) / n as f32;
            let s = 1.0 / (var + eps).sqrt();
            for (h, &v) in hr.iter_mut().zip(xr) {
                *h = (v - mean) * s;
            }
            *r = s;
        }
    }
}

struct LayerNorm {
    eps: f32,
}

/// Rows per parallel chunk of the layer-norm kernels (fixed, so the weight-gradient partial sums
/// and their order do not depend on the thread count).
const LN_ROWS: usize = 64;

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "ajepa-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, "layer norm")?;
        let w = f32_slice(s2, l2, "layer norm")?;
        let b = f32_slice(s3, l3, "layer norm")?;
        let mut out = zeroed(x.len());
        layer_norm_rows(Isa::detect(), x, w, b, self.eps, &mut out);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let n = w.dim(0)?;
        let x = x.contiguous()?;
        let g = grad.contiguous()?;
        // [dx, dw, db] in one pass over the rows.
        let all = x.apply_op3_no_bwd(w, &g, &LayerNormBwd { eps: self.eps })?;
        let len = x.elem_count();
        let dx = all.narrow(0, 0, len)?.reshape(x.shape())?;
        let dw = all.narrow(0, len, n)?;
        let db = all.narrow(0, len + n, n)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

struct LayerNormBwd {
    eps: f32,
}

impl CustomOp3 for LayerNormBwd {
    fn name(&self) -> &'static str {
        "ajepa-layer-norm-bwd"
    }

    /// `[dx (x's size), dw (n), db (n)]`, flat.
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, "layer norm bwd")?;
        let w = f32_slice(s2, l2, "layer norm bwd")?;
        let g = f32_slice(s3, l3, "layer norm bwd")?;
        let n = w.len().max(1);
        if g.len() != x.len() {
            candle_core::bail!("layer norm bwd: {} values, {} grads", x.len(), g.len());
        }
        let mut out = zeroed(x.len() + 2 * n);
        let (dx, sums) = out.split_at_mut(x.len());
        let (dw, db) = sums.split_at_mut(n);
        layer_norm_bwd_rows(Isa::detect(), x, w, g, self.eps, dx, dw, db);
        Ok((CpuStorage::F32(out), Shape::from(x.len() + 2 * n)))
    }
}

/// `out = layer_norm(x) * w + b` over rows of `w.len()`, on the threads, with `isa`'s kernels.
pub(crate) fn layer_norm_rows(
    isa: Isa,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    eps: f32,
    out: &mut [f32],
) {
    let n = w.len().max(1);
    par_chunks(out, LN_ROWS * n, |r, o| {
        normalise_rows(isa, &x[r], n, eps, o);
        for row in o.chunks_exact_mut(n) {
            for ((v, &wv), &bv) in row.iter_mut().zip(w).zip(b) {
                *v = *v * wv + bv;
            }
        }
    });
}

/// Layer norm's backward over rows of `w.len()`: writes `dx` (the size of `x`) and adds the
/// scale and shift gradients into `dw`, `db` (per-chunk partial sums added in chunk order, so
/// the result does not depend on the thread count).
#[allow(clippy::too_many_arguments)]
pub(crate) fn layer_norm_bwd_rows(
    isa: Isa,
    x: &[f32],
    w: &[f32],
    g: &[f32],
    eps: f32,
    dx: &mut [f32],
    dw: &mut [f32],
    db: &mut [f32],
) {
    let n = w.len().max(1);
    let rows = x.len() / n;
    let chunks = rows.div_ceil(LN_ROWS);
    let mut partial = vec![0f32; chunks * 2 * n];
    let (view, pview) = (Out::new(dx), Out::new(&mut partial));
    par_for(chunks, |c| {
        let r = c * LN_ROWS..((c + 1) * LN_ROWS).min(rows);
        let (xs, gs) = (&x[r.start * n..r.end * n], &g[r.start * n..r.end * n]);
        // SAFETY: chunk `c` owns rows `r` of dx and its own partial sums.
        let (dx, acc) = unsafe {
            (
                view.slice(r.start * n, r.len() * n),
                pview.slice(c * 2 * n, 2 * n),
            )
        };
        let rstds = normalise_rows(isa, xs, n, eps, dx);
        let (dw, db) = acc.split_at_mut(n);
        let mut gw = vec![0f32; n];
        for ((dr, gr), &rstd) in dx.chunks_exact_mut(n).zip(gs.chunks_exact(n)).zip(&rstds) {
            // `dr` holds xhat here; it becomes dx.
            let (mut m1, mut m2) = (0f32, 0f32);
            for k in 0..n {
                gw[k] = gr[k] * w[k];
                m1 += gw[k];
                m2 += gw[k] * dr[k];
                dw[k] += gr[k] * dr[k];
                db[k] += gr[k];
            }
            m1 /= n as f32;
            m2 /= n as f32;
            for k in 0..n {
                dr[k] = rstd * (gw[k] - m1 - dr[k] * m2);
            }
        }
    });
    for acc in partial.chunks_exact(2 * n) {
        let (pw, pb) = acc.split_at(n);
        dw.iter_mut().zip(pw).for_each(|(s, a)| *s += a);
        db.iter_mut().zip(pb).for_each(|(s, a)| *s += a);
    }
}

/// Layer norm over the last dimension with scale `w` and shift `b`, differentiable, fused on
/// the CPU (f32) and through candle's forward kernel elsewhere.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f32) -> Result<Tensor> {
    if x.dim(D::Minus1)? != w.dim(0)? || w.dims() != b.dims() {
        candle_core::bail!(
            "layer norm: input {:?}, scale {:?}, shift {:?}",
            x.shape(),
            w.shape(),
            b.shape()
        );
    }
    if fused_ok(x) && fused_ok(w) && fused_ok(b) {
        x.contiguous()?.apply_op3(w, b, LayerNorm { eps })
    } else {
        layer_norm_attached(x, w, b, eps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    fn close(a: &Tensor, b: &Tensor, tol: f32) {
        let d: f32 = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(d <= tol, "max diff {d}");
    }

    #[test]
    fn softmax_matches_the_composed_op_forward_and_backward() {
        let x =
            Var::from_tensor(&Tensor::randn(0f32, 2.0, (3, 5, 7), &Device::Cpu).unwrap()).unwrap();
        let g = Tensor::randn(0f32, 1.0, (3, 5, 7), &Device::Cpu).unwrap();
        let a = softmax_last_dim(x.as_tensor()).unwrap();
        let b = candle_nn::ops::softmax(x.as_tensor(), D::Minus1).unwrap();
        close(&a, &b, 1e-6);
        let ga = (a * &g).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (b * &g).unwrap().sum_all().unwrap().backward().unwrap();
        close(
            ga.get(x.as_tensor()).unwrap(),
            gb.get(x.as_tensor()).unwrap(),
            1e-5,
        );
    }

    /// The GPU / bf16 path (candle's forward kernels with [`Attach`]'s backward), run here on
    /// the CPU, against the composed operations, in f32 and in bf16.
    #[test]
    fn attached_kernels_match_the_composed_ops_in_f32_and_bf16() {
        let dev = Device::Cpu;
        for (dtype, tol_fwd, tol_bwd) in [(DType::F32, 1e-5, 1e-4), (DType::BF16, 2e-2, 6e-2)] {
            let x0 = Tensor::randn(0f32, 2.0, (3, 5, 16), &dev).unwrap();
            let x = Var::from_tensor(&x0.to_dtype(dtype).unwrap()).unwrap();
            let w = Var::from_tensor(&Tensor::randn(1f32, 0.2, 16, &dev).unwrap()).unwrap();
            let b = Var::from_tensor(&Tensor::randn(0f32, 0.2, 16, &dev).unwrap()).unwrap();
            let g = Tensor::randn(0f32, 1.0, (3, 5, 16), &dev).unwrap();
            // References in f32 on the same (rounded) input.
            let xr = Var::from_tensor(&x.as_tensor().to_dtype(DType::F32).unwrap()).unwrap();
            let f32_of = |t: &Tensor| t.to_dtype(DType::F32).unwrap();

            let a = softmax_attached(x.as_tensor()).unwrap();
            let r = candle_nn::ops::softmax(xr.as_tensor(), D::Minus1).unwrap();
            close(&f32_of(&a), &r, tol_fwd);
            let ga = (f32_of(&a) * &g)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let gr = (r * &g).unwrap().sum_all().unwrap().backward().unwrap();
            let dx = f32_of(ga.get(x.as_tensor()).unwrap());
            close(&dx, gr.get(xr.as_tensor()).unwrap(), tol_bwd);

            let wc = w.as_tensor().to_dtype(dtype).unwrap();
            let bc = b.as_tensor().to_dtype(dtype).unwrap();
            let a = layer_norm(x.as_tensor(), &wc, &bc, 1e-6).unwrap();
            assert_eq!(a.dtype(), dtype);
            let r =
                candle_nn::ops::layer_norm_slow(xr.as_tensor(), &f32_of(&wc), &f32_of(&bc), 1e-6)
                    .unwrap();
            close(&f32_of(&a), &r, tol_fwd * 4.0);
            let ga = (f32_of(&a) * &g)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let gr = (r * &g).unwrap().sum_all().unwrap().backward().unwrap();
            let dx = f32_of(ga.get(x.as_tensor()).unwrap());
            close(&dx, gr.get(xr.as_tensor()).unwrap(), tol_bwd * 4.0);
            // Scale and shift get gradients through the cast, in f32.
            let dw = ga.get(w.as_tensor()).unwrap();
            assert_eq!(dw.dtype(), DType::F32);
            assert!(ga.get(b.as_tensor()).is_some());
        }
        // f32 forced through the attached path equals the CPU-fused one.
        let x = Var::from_tensor(&Tensor::randn(0f32, 2.0, (2, 4, 8), &dev).unwrap()).unwrap();
        let w = Tensor::randn(1f32, 0.2, 8, &dev).unwrap();
        let b = Tensor::randn(0f32, 0.2, 8, &dev).unwrap();
        let a = layer_norm_attached(x.as_tensor(), &w, &b, 1e-6).unwrap();
        let f = layer_norm(x.as_tensor(), &w, &b, 1e-6).unwrap();
        close(&a, &f, 1e-5);
    }

    #[test]
    fn layer_norm_matches_the_composed_op_forward_and_backward() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 3.0, (2, 6, 16), &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&Tensor::randn(1f32, 0.2, 16, &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::randn(0f32, 0.2, 16, &dev).unwrap()).unwrap();
        let g = Tensor::randn(0f32, 1.0, (2, 6, 16), &dev).unwrap();
        let a = layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-6).unwrap();
        let c = candle_nn::ops::layer_norm_slow(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-6)
            .unwrap();
        close(&a, &c, 1e-5);
        let ga = (a * &g).unwrap().sum_all().unwrap().backward().unwrap();
        let gc = (c * &g).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&x, &w, &b] {
            close(
                ga.get(v.as_tensor()).unwrap(),
                gc.get(v.as_tensor()).unwrap(),
                1e-4,
            );
        }
    }
}
