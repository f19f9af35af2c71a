//! The linear layer `y = x W^T + b` as a fused op with its backward products (`dX = g W`,
//! `dW = g^T x`, `db = sum_rows(g)`), on the engine's packed f32 GEMM or, when a training step
//! asks for it on a CPU with AVX-512 BF16, on its bf16 GEMM (`engine::gemm_bf16`: bf16
//! operands, f32 sums; the arithmetic of I-JEPA's bf16 autocast).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use candle_nn::{Linear, Module};

use super::{par_for, usable, zeroed, Out};
use crate::engine::gemm::{gemm, PackedF32, MR};
use crate::engine::gemm_bf16::{self, PackedBf16};
use crate::engine::threads::RawSlice;
use crate::engine::Isa;
use crate::model::ops::f32_slice;

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
    gemm_bf16::available()
}

/// Whether fused linear layers built on this thread now use bf16 products.
pub fn bf16_products() -> bool {
    BF16_PRODUCTS.with(|c| c.get())
}

/// How a linear layer's products run: the f32 kernels of one instruction set, or bf16.
#[derive(Debug, Clone, Copy)]
pub(super) enum Products {
    F32(Isa),
    Bf16,
}

impl Products {
    pub(super) fn current(isa: Isa) -> Self {
        if bf16_products() {
            Products::Bf16
        } else {
            Products::F32(isa)
        }
    }
}

/// Weights packed for one product, in the precision it runs in.
pub(super) enum Packed {
    F32(Isa, PackedF32),
    Bf16(PackedBf16),
}

impl Packed {
    /// `w` (`[n, k]`) and its bias.
    pub(super) fn new(p: Products, w: &[f32], bias: Option<&[f32]>, n: usize, k: usize) -> Self {
        match p {
            Products::F32(isa) => Packed::F32(isa, PackedF32::new(w, bias, n, k)),
            Products::Bf16 => Packed::Bf16(PackedBf16::new(w, bias, n, k)),
        }
    }

    /// `W = a^T` for `a` `[rows, cols]`, no bias.
    pub(super) fn from_transposed(p: Products, a: &[f32], rows: usize, cols: usize) -> Self {
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
    pub(super) fn gemm_rows(&self, a: &[f32], m: usize, c: &mut [f32]) {
        let (n, k) = match self {
            Packed::F32(_, w) => (w.n(), w.k()),
            Packed::Bf16(w) => (w.n(), w.k()),
        };
        debug_assert!(a.len() == m * k && c.len() == m * n);
        row_chunks(m, n, c, |r0, r, c| {
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

/// `f(r0, r, rows r0..r0 + r of c)` over chunks of the `m` rows of `c` (`[m, n]`) on the
/// threads: at least ~8 chunks so the threads even out, each a whole number of micro-tile rows.
fn row_chunks(m: usize, n: usize, c: &mut [f32], f: impl Fn(usize, usize, &mut [f32]) + Sync) {
    let rows = (m.div_ceil(8).div_ceil(MR) * MR).clamp(MR, 16 * MR);
    let out = Out::new(c);
    par_for(m.div_ceil(rows), |i| {
        let r0 = i * rows;
        let r = rows.min(m - r0);
        // SAFETY: chunk `i` owns rows r0..r0 + r.
        f(r0, r, unsafe { out.slice(r0 * n, r * n) });
    });
}

impl Packed {
    /// [`Packed::gemm_rows`] for bf16 weights, from rows already converted to bf16 pairs
    /// (`m` rows of `ceil(k / 2)`: [`gemm_bf16::rows_to_bf16`]'s layout).
    fn gemm_pairs(w: &PackedBf16, pairs: &[u32], m: usize, c: &mut [f32]) {
        let (n, kp) = (w.n(), w.k().div_ceil(2));
        debug_assert!(pairs.len() == m * kp && c.len() == m * n);
        row_chunks(m, n, c, |r0, r, c| {
            gemm_bf16::gemm(&pairs[r0 * kp..(r0 + r) * kp], r, w, c, false)
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
        weight_grads(self.0, g, x, m, dw, db);
        Ok((CpuStorage::F32(out), Shape::from(n * k + n)))
    }
}

/// `dw = g^T x` (`[n, k]`) and `db += sum_rows(g)` (zeroed by the caller) for `g` `[m, n]`, `x`
/// `[m, k]`, in the products' precision.
pub(super) fn weight_grads(
    p: Products,
    g: &[f32],
    x: &[f32],
    m: usize,
    dw: &mut [f32],
    db: &mut [f32],
) {
    let n = db.len();
    let k = dw.len() / n.max(1);
    let packed = Packed::from_transposed(p, x, m, k);
    if let Packed::Bf16(w) = &packed {
        // g^T straight into bf16 pairs (what the bf16 product reads), with db on the way.
        let pairs = transpose_to_bf16_pairs(g, m, n, db);
        Packed::gemm_pairs(w, &pairs, n, dw);
        return;
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
}

/// Columns of `dw` grads per chunk of the transposition.
const COLS: usize = 16;

/// `g` (`[m, n]`) transposed into bf16 pairs (`n` rows of `ceil(m / 2)`, the layout
/// [`gemm_bf16::rows_to_bf16`] gives), and `db += sum_rows(g)` in the f32 path's order (16-row
/// blocks, each summed in row order), so the bias gradient is the same in both precisions.
fn transpose_to_bf16_pairs(g: &[f32], m: usize, n: usize, db: &mut [f32]) -> Vec<u32> {
    let kp = m.div_ceil(2);
    let mut pairs = vec![0u32; n * kp];
    let (pview, bview) = (RawSlice::new(&mut pairs), Out::new(db));
    par_for(n.div_ceil(COLS), |c| {
        let cols = c * COLS..((c + 1) * COLS).min(n);
        let w = cols.len();
        // SAFETY: chunk `c` alone owns rows `cols` of the pairs and entries `cols` of db.
        let (t, b) = unsafe {
            (
                pview.get_range(cols.start * kp, w * kp),
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

/// `lin.forward(x)`, through the fused op where it applies.
pub fn linear(x: &Tensor, lin: &Linear) -> Result<Tensor> {
    linear_with(x, lin, Products::current(Isa::detect()))
}

pub(super) fn linear_with(x: &Tensor, lin: &Linear, products: Products) -> Result<Tensor> {
    match lin.bias() {
        Some(b) if usable(x) => x
            .contiguous()?
            .apply_op3(lin.weight(), b, LinearOp(products)),
        _ => lin.forward(x),
    }
}
