//! f32 `C = A W^T + b` (PyTorch's `nn.Linear` layout: `W` is `[n, k]`), `A` `[m, k]` row-major.
//!
//! `W` is packed once into panels of [`NR`] = 16 output columns, `k`-major within a panel
//! (`panel[kk * 16 + j] = W[p * 16 + j, kk]`, zero-padded), so the micro-kernel streams the
//! weights contiguously while it keeps a 6-row by 16- or 32-column tile of `C` in registers
//! (the BLIS/GotoBLAS register-blocking scheme). The shapes here are small (`m` = tokens of one
//! window, `k, n` <= 4 x width), so there is no cache blocking over `k`: a panel pair of the
//! widest layer (1024 x 32 floats) stays in L2.

use super::threads::OutMatrix;
use super::Isa;

/// Output columns per packed panel.
pub const NR: usize = 16;
/// Rows of `A` per micro-tile.
pub const MR: usize = 6;
/// Widest tile: two panels.
pub(super) const TILE: usize = MR * 2 * NR;

/// Weights packed for [`gemm`], with their bias.
#[derive(Debug, Clone)]
pub struct PackedF32 {
    n: usize,
    k: usize,
    panels: Vec<f32>,
    bias: Vec<f32>,
}

impl PackedF32 {
    /// Packs `w` (`[n, k]` row-major) and `bias` (`n` values, or zeros).
    pub fn new(w: &[f32], bias: Option<&[f32]>, n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "weight size");
        let np = n.div_ceil(NR);
        let mut panels = vec![0f32; np * k * NR];
        for col in 0..n {
            let (p, j) = (col / NR, col % NR);
            let panel = &mut panels[p * k * NR..(p + 1) * k * NR];
            for (kk, &v) in w[col * k..(col + 1) * k].iter().enumerate() {
                panel[kk * NR + j] = v;
            }
        }
        let bias = match bias {
            Some(b) => {
                assert_eq!(b.len(), n, "bias size");
                b.to_vec()
            }
            None => vec![0.0; n],
        };
        Self { n, k, panels, bias }
    }

    /// Packs `W = A^T` from `a` (`[rows, cols]` row-major), so `W` is `[cols, rows]`, without
    /// bias: the products of a linear layer's backward pass (`dX = G W` packs `W^T`, `dW = G^T X`
    /// packs `X^T`). Each panel row is a contiguous run of `a`, so this costs one copy.
    pub fn from_transposed(a: &[f32], rows: usize, cols: usize) -> Self {
        assert_eq!(a.len(), rows * cols, "matrix size");
        let (n, k) = (cols, rows);
        let np = n.div_ceil(NR);
        let mut panels = vec![0f32; np * k * NR];
        for p in 0..np {
            let width = NR.min(n - p * NR);
            let panel = &mut panels[p * k * NR..(p + 1) * k * NR];
            for kk in 0..k {
                panel[kk * NR..kk * NR + width]
                    .copy_from_slice(&a[kk * cols + p * NR..kk * cols + p * NR + width]);
            }
        }
        Self {
            n,
            k,
            panels,
            bias: vec![0.0; n],
        }
    }

    pub fn n(&self) -> usize {
        self.n
    }

    pub fn k(&self) -> usize {
        self.k
    }

    fn panel(&self, p: usize) -> &[f32] {
        &self.panels[p * self.k * NR..(p + 1) * self.k * NR]
    }
}

/// `c[m, n] (+)= a[m, k] w^T + bias`; with `accumulate` the product is added to `c` (a
/// residual connection), otherwise it replaces it.
pub fn gemm(isa: Isa, a: &[f32], m: usize, w: &PackedF32, c: &mut [f32], accumulate: bool) {
    let n = w.n;
    let out = OutMatrix::new(c, m, n);
    // SAFETY: `out` covers `c`, which nothing else touches during the call.
    unsafe { gemm_cols(isa, a, m, w, out, accumulate, 0..n) }
}

/// [`gemm`] for output columns `cols` only (`cols.start` a multiple of 32), so two threads can
/// share one product.
///
/// # Safety
/// `out` must be a live `[m, w.n()]` matrix whose columns `cols` no one else touches meanwhile.
pub unsafe fn gemm_cols(
    isa: Isa,
    a: &[f32],
    m: usize,
    w: &PackedF32,
    out: OutMatrix,
    accumulate: bool,
    cols: std::ops::Range<usize>,
) {
    let (n, k) = (w.n, w.k);
    assert!(a.len() >= m * k && out.n() == n, "gemm buffer sizes");
    assert!(
        cols.start.is_multiple_of(2 * NR) && cols.end <= n,
        "gemm column range"
    );
    let np = cols.end.div_ceil(NR);
    let mut tile = [0f32; TILE];
    // AVX-512 has 32 vector registers: 6 x 2 accumulators; AVX2 has 16: 6 x 2 half-panels;
    // NEON has 32 of 4 lanes: 6 x 4 quarter-panels.
    let pair = isa.has_avx512();
    let mut p = cols.start / NR;
    while p < np {
        let pw = if pair && p + 1 < np { 2 } else { 1 };
        for r0 in (0..m).step_by(MR) {
            let mr = MR.min(m - r0);
            let a0 = &a[r0 * k..];
            micro(isa, a0, k, mr, w, p, pw, &mut tile);
            let width = (pw * NR).min(cols.end - p * NR);
            store_tile(
                &out,
                &tile,
                r0,
                mr,
                p * NR,
                &w.bias[p * NR..p * NR + width],
                accumulate,
            );
        }
        p += pw;
    }
}

/// Rows `0..mr` of a micro-tile (`tile[r * 32 + j]`) plus `bias` into rows `r0..r0 + mr`,
/// columns `col0..col0 + bias.len()` of `out`, added to what is there with `accumulate`: the
/// epilogue of the f32 and bf16 products ([`super::gemm_bf16`]).
///
/// # Safety
/// As [`OutMatrix::segment`]: those elements are this caller's alone, and `out`'s matrix is live.
pub(super) unsafe fn store_tile(
    out: &OutMatrix,
    tile: &[f32; TILE],
    r0: usize,
    mr: usize,
    col0: usize,
    bias: &[f32],
    accumulate: bool,
) {
    let width = bias.len();
    for r in 0..mr {
        let t = &tile[r * 2 * NR..r * 2 * NR + width];
        let row = out.segment(r0 + r, col0, width);
        if accumulate {
            for ((o, &v), &b) in row.iter_mut().zip(t).zip(bias) {
                *o += v + b;
            }
        } else {
            for ((o, &v), &b) in row.iter_mut().zip(t).zip(bias) {
                *o = v + b;
            }
        }
    }
}

/// One micro-tile: rows `0..mr` of `a` (stride `k`) times panels `p..p + pw` into `tile`
/// (`tile[r * 32 + j]`).
#[allow(clippy::too_many_arguments)]
fn micro(
    isa: Isa,
    a: &[f32],
    k: usize,
    mr: usize,
    w: &PackedF32,
    p: usize,
    pw: usize,
    tile: &mut [f32; TILE],
) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: the level was detected at run time (`Isa::detect`), the row slice holds `mr`
        // rows of `k` values (checked by `gemm`), and the panels hold `k * NR` values each.
        if isa.has_avx512() {
            unsafe { x86::micro_avx512(a, k, mr, w.panel(p), pw, w, p, tile) };
            return;
        }
        if isa.has_avx2() {
            unsafe { x86::micro_avx2(a, k, mr, w.panel(p), tile) };
            return;
        }
    }
    #[cfg(target_arch = "aarch64")]
    if isa.has_neon() && pw == 1 {
        // SAFETY: NEON is part of every AArch64 CPU; sizes as above.
        unsafe { neon::micro(a, k, mr, w.panel(p), tile) };
        return;
    }
    let _ = isa;
    micro_portable(a, k, mr, w, p, pw, tile);
}

/// Any CPU: the same tile in plain Rust (16 independent sums per row, which the compiler
/// vectorises).
fn micro_portable(
    a: &[f32],
    k: usize,
    mr: usize,
    w: &PackedF32,
    p: usize,
    pw: usize,
    tile: &mut [f32; TILE],
) {
    for q in 0..pw {
        let panel = w.panel(p + q);
        for r in 0..mr {
            let mut acc = [0f32; NR];
            let row = &a[r * k..(r + 1) * k];
            for (kk, &av) in row.iter().enumerate() {
                let b = &panel[kk * NR..(kk + 1) * NR];
                for j in 0..NR {
                    acc[j] += av * b[j];
                }
            }
            tile[r * 2 * NR + q * NR..r * 2 * NR + (q + 1) * NR].copy_from_slice(&acc);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{PackedF32, MR, NR, TILE};
    use std::arch::x86_64::*;

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn micro_avx512(
        a: &[f32],
        k: usize,
        mr: usize,
        first: &[f32],
        pw: usize,
        w: &PackedF32,
        p: usize,
        tile: &mut [f32; TILE],
    ) {
        let b0 = first.as_ptr();
        let b1 = if pw == 2 { w.panel(p + 1).as_ptr() } else { b0 };
        let a = a.as_ptr();
        crate::engine::with_rows!(mr, R => if pw == 2 {
            tile_avx512::<R, 2>(a, k, b0, b1, tile)
        } else {
            tile_avx512::<R, 1>(a, k, b0, b1, tile)
        })
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile_avx512<const R: usize, const P: usize>(
        a: *const f32,
        k: usize,
        b0: *const f32,
        b1: *const f32,
        tile: &mut [f32; TILE],
    ) {
        let mut acc = [[_mm512_setzero_ps(); P]; R];
        for kk in 0..k {
            let bv = [
                _mm512_loadu_ps(b0.add(kk * NR)),
                _mm512_loadu_ps(b1.add(kk * NR)),
            ];
            for (r, row) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.add(r * k + kk));
                for (q, c) in row.iter_mut().enumerate() {
                    *c = _mm512_fmadd_ps(av, bv[q], *c);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (q, c) in row.iter().enumerate() {
                _mm512_storeu_ps(tile.as_mut_ptr().add(r * 2 * NR + q * NR), *c);
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn micro_avx2(
        a: &[f32],
        k: usize,
        mr: usize,
        panel: &[f32],
        tile: &mut [f32; TILE],
    ) {
        let (a, b) = (a.as_ptr(), panel.as_ptr());
        crate::engine::with_rows!(mr, R => tile_avx2::<R>(a, k, b, tile))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile_avx2<const R: usize>(
        a: *const f32,
        k: usize,
        b: *const f32,
        tile: &mut [f32; TILE],
    ) {
        debug_assert!(R <= MR);
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        for kk in 0..k {
            let bv = [
                _mm256_loadu_ps(b.add(kk * NR)),
                _mm256_loadu_ps(b.add(kk * NR + 8)),
            ];
            for (r, row) in acc.iter_mut().enumerate() {
                let av = _mm256_set1_ps(*a.add(r * k + kk));
                row[0] = _mm256_fmadd_ps(av, bv[0], row[0]);
                row[1] = _mm256_fmadd_ps(av, bv[1], row[1]);
            }
        }
        for (r, row) in acc.iter().enumerate() {
            _mm256_storeu_ps(tile.as_mut_ptr().add(r * 2 * NR), row[0]);
            _mm256_storeu_ps(tile.as_mut_ptr().add(r * 2 * NR + 8), row[1]);
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use super::{MR, NR, TILE};
    use std::arch::aarch64::*;

    pub(super) unsafe fn micro(
        a: &[f32],
        k: usize,
        mr: usize,
        panel: &[f32],
        tile: &mut [f32; TILE],
    ) {
        let (a, b) = (a.as_ptr(), panel.as_ptr());
        crate::engine::with_rows!(mr, R => tile_neon::<R>(a, k, b, tile))
    }

    /// `R` rows x 16 columns in 4 x `R` accumulators (24 of the 32 registers at `R` = 6): per
    /// `k`, four loads of the panel and one scalar per row feed `4 R` independent `fmla`s.
    #[inline]
    unsafe fn tile_neon<const R: usize>(
        a: *const f32,
        k: usize,
        b: *const f32,
        tile: &mut [f32; TILE],
    ) {
        debug_assert!(R <= MR);
        let mut acc = [[vdupq_n_f32(0.0); 4]; R];
        for kk in 0..k {
            let bp = b.add(kk * NR);
            let bv = [
                vld1q_f32(bp),
                vld1q_f32(bp.add(4)),
                vld1q_f32(bp.add(8)),
                vld1q_f32(bp.add(12)),
            ];
            for (r, row) in acc.iter_mut().enumerate() {
                let av = *a.add(r * k + kk);
                for (c, &bq) in row.iter_mut().zip(&bv) {
                    *c = vfmaq_n_f32(*c, bq, av);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (q, c) in row.iter().enumerate() {
                vst1q_f32(tile.as_mut_ptr().add(r * 2 * NR + q * 4), *c);
            }
        }
    }
}

/// The reference: a plain triple loop over the unpacked weights, in f64.
pub fn gemm_reference(
    a: &[f32],
    m: usize,
    w: &[f32],
    bias: &[f32],
    n: usize,
    k: usize,
) -> Vec<f32> {
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = bias[j] as f64;
            for kk in 0..k {
                s += a[i * k + kk] as f64 * w[j * k + kk] as f64;
            }
            c[i * n + j] = s as f32;
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand_vec(n: usize, seed: &mut u64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Every kernel this CPU has, against the reference, on odd shapes (partial tiles and
    /// panels) and the model's shapes, replacing and accumulating.
    #[test]
    fn every_kernel_matches_the_reference_on_odd_shapes() {
        let mut seed = 7;
        let shapes = [
            (1, 1, 1),
            (5, 3, 7),
            (7, 17, 33),
            (13, 40, 19),
            (48, 64, 256),
            (48, 768, 256),
            (49, 256, 1024),
        ];
        for isa in Isa::all_supported() {
            for &(m, n, k) in &shapes {
                let a = rand_vec(m * k, &mut seed);
                let w = rand_vec(n * k, &mut seed);
                let b = rand_vec(n, &mut seed);
                let packed = PackedF32::new(&w, Some(&b), n, k);
                let want = gemm_reference(&a, m, &w, &b, n, k);
                let mut got = vec![f32::NAN; m * n];
                gemm(isa, &a, m, &packed, &mut got, false);
                let tol = 1e-5 * (k as f32).sqrt();
                for (i, (g, r)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - r).abs() <= tol,
                        "{isa:?} {m}x{n}x{k} [{i}]: {g} vs {r}"
                    );
                }
                let mut acc = vec![1.0f32; m * n];
                gemm(isa, &a, m, &packed, &mut acc, true);
                for (g, r) in acc.iter().zip(&want) {
                    assert!((g - 1.0 - r).abs() <= tol, "{isa:?} accumulate");
                }
            }
        }
    }
}
