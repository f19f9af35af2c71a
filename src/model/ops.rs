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
//! Gradients (per row, `n` elements): softmax `y`: `dx = y (g - sum(g y))`; layer norm
//! `y = xhat w + b`, `xhat = (x - mean) rstd`: `dx = rstd (gw - mean(gw) - xhat mean(gw xhat))`,
//! `dw = sum_rows(g xhat)`, `db = sum_rows(g)`.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Device, Layout, Result, Shape, Tensor, D,
};

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
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

/// Softmax over the last dimension, differentiable, fused on the CPU.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if fused_ok(x) {
        x.contiguous()?.apply_op1(Softmax)
    } else {
        candle_nn::ops::softmax(x, D::Minus1)
    }
}

/// Layer norm forward on rows: writes `xhat` and returns per-row `rstd`.
fn normalise_rows(x: &[f32], n: usize, eps: f32, xhat: &mut [f32]) -> Vec<f32> {
    let mut rstds = Vec::with_capacity(x.len() / n);
    for (xr, hr) in x.chunks_exact(n).zip(xhat.chunks_exact_mut(n)) {
        let mean = xr.iter().sum::<f32>() / n as f32;
        let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n as f32;
        let rstd = 1.0 / (var + eps).sqrt();
        for (h, &v) in hr.iter_mut().zip(xr) {
            *h = (v - mean) * rstd;
        }
        rstds.push(rstd);
    }
    rstds
}

struct LayerNorm {
    eps: f32,
}

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
        let n = w.len().max(1);
        let mut out = vec![0f32; x.len()];
        normalise_rows(x, n, self.eps, &mut out);
        for r in out.chunks_exact_mut(n) {
            for ((o, &wv), &bv) in r.iter_mut().zip(w).zip(b) {
                *o = *o * wv + bv;
            }
        }
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
        let dx = x.apply_op3_no_bwd(w, &g, &LayerNormBwd { eps: self.eps })?;
        let xhat = x.apply_op1_no_bwd(&Normalise { eps: self.eps })?;
        let g2 = g.reshape(((), n))?;
        let dw = (g2.clone() * xhat.reshape(((), n))?)?.sum(0)?;
        let db = g2.sum(0)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// `xhat` of each row (no affine), for the weight gradient.
struct Normalise {
    eps: f32,
}

impl CustomOp1 for Normalise {
    fn name(&self) -> &'static str {
        "ajepa-normalise"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, "normalise")?;
        let n = l.dims().last().copied().unwrap_or(1).max(1);
        let mut out = vec![0f32; x.len()];
        normalise_rows(x, n, self.eps, &mut out);
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

struct LayerNormBwd {
    eps: f32,
}

impl CustomOp3 for LayerNormBwd {
    fn name(&self) -> &'static str {
        "ajepa-layer-norm-bwd"
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
        let x = f32_slice(s1, l1, "layer norm bwd")?;
        let w = f32_slice(s2, l2, "layer norm bwd")?;
        let g = f32_slice(s3, l3, "layer norm bwd")?;
        let n = w.len().max(1);
        let mut xhat = vec![0f32; x.len()];
        let rstds = normalise_rows(x, n, self.eps, &mut xhat);
        let mut dx = vec![0f32; x.len()];
        let mut gw = vec![0f32; n];
        for (((hr, gr), dr), &rstd) in xhat
            .chunks_exact(n)
            .zip(g.chunks_exact(n))
            .zip(dx.chunks_exact_mut(n))
            .zip(&rstds)
        {
            let (mut m1, mut m2) = (0f32, 0f32);
            for k in 0..n {
                gw[k] = gr[k] * w[k];
                m1 += gw[k];
                m2 += gw[k] * hr[k];
            }
            m1 /= n as f32;
            m2 /= n as f32;
            for k in 0..n {
                dr[k] = rstd * (gw[k] - m1 - hr[k] * m2);
            }
        }
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// Layer norm over the last dimension with scale `w` and shift `b`, differentiable, fused on
/// the CPU.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f32) -> Result<Tensor> {
    if fused_ok(x) && fused_ok(w) && fused_ok(b) && x.dim(D::Minus1)? == w.dim(0)? {
        x.contiguous()?.apply_op3(w, b, LayerNorm { eps })
    } else {
        candle_nn::ops::layer_norm_slow(x, w, b, eps)
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
