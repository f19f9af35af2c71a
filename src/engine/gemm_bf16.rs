//! `C = A W^T + b` with bf16 operands and f32 sums (mixed precision), for the training ops on
//! CPUs with AVX-512 BF16 (AMD Zen 4 and later, Intel Cooper Lake / Sapphire Rapids and later).
//!
//! Why: a pretraining step spends about half its cycles in f32 products already at the FMA
//! peak (BENCHMARKS.md, "Pretraining step side by side"). `vdpbf16ps` multiplies pairs of bf16
//! values and adds both products to an f32 lane, twice the multiply-adds of an f32 FMA per
//! instruction (measured on this repository's Zen 4 VM: 232 against 113 GFLOP/s for the same
//! 6 x 32 register tile). I-JEPA itself trains under bf16 autocast (its `train.py`,
//! `torch.cuda.amp.autocast(dtype=torch.bfloat16)`): operands rounded to bf16, sums kept in f32,
//! which is what this kernel does; the numbers it gives differ from the f32 kernel's by the
//! operands' rounding (a relative 2^-9 each), so it is opt-in and never used for inference.
//!
//! Layout: `W` is packed into panels of [`NR`] = 16 output columns as in [`super::gemm`], but
//! with consecutive pairs of `k` interleaved (`panel[(kk / 2 * 16 + j) * 2 + kk % 2] =
//! W[p * 16 + j, kk]`, zero-padded to an even `k`), so one 64-byte load holds two `k` steps of
//! 16 columns; `A` is converted once per product to rows of bf16 pairs ([`rows_to_bf16`]), each
//! pair one 32-bit broadcast.

use super::gemm::{store_tile, MR, NR, TILE};
use super::threads::{OutMatrix, RawSlice};

/// Whether this CPU has the bf16 dot-product instruction (and AVX-512 F/BW around it).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `x` rounded to the nearest bf16 (ties to even), as `vcvtneps2bf16` does: NaN stays a
/// (quiet) NaN, and subnormal inputs become zeros of their sign (the instruction treats them as
/// zero; PyTorch's software rounding would keep them, a difference below 1.2e-38).
#[inline]
pub fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) as u16) | 0x40;
    }
    if x.is_subnormal() {
        return ((b >> 16) & 0x8000) as u16;
    }
    let round = 0x7fff + ((b >> 16) & 1);
    (b.wrapping_add(round) >> 16) as u16
}

/// The f32 a bf16 value stands for (exact).
#[inline]
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// `dst[i] = to_bf16(src[i])`, 16 at a time on AVX-512 BF16 (`vcvtneps2bf16`, the same
/// rounding).
pub fn convert(src: &[f32], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len(), "bf16 convert: lengths");
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: detected above; equal lengths checked.
        unsafe { x86::convert(src, dst) };
        return;
    }
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = to_bf16(v);
    }
}

/// Rows of `a` (`[m, k]` row-major) as bf16 pairs: `out[r * kp + i]` holds `a[r, 2 i]` in its low
/// half and `a[r, 2 i + 1]` (or zero past `k`) in its high half, `kp = ceil(k / 2)`.
pub fn rows_to_bf16(a: &[f32], m: usize, k: usize, out: &mut Vec<u32>) {
    assert!(a.len() >= m * k, "bf16 rows: buffer size");
    let kp = k.div_ceil(2);
    out.clear();
    out.resize(m * kp, 0);
    #[cfg(target_endian = "little")]
    {
        // A pair's low half is its first value, so the pairs of a row are the row's bf16 values
        // in order (and a zero after an odd `k`, left by `resize`).
        // SAFETY: `m * kp` u32s are `2 m kp` initialised u16s, aligned for u16.
        let words =
            unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr() as *mut u16, 2 * m * kp) };
        for (row, dst) in a[..m * k]
            .chunks_exact(k.max(1))
            .zip(words.chunks_exact_mut(2 * kp))
        {
            convert(row, &mut dst[..k]);
        }
    }
    #[cfg(target_endian = "big")]
    for (row, dst) in a[..m * k]
        .chunks_exact(k.max(1))
        .zip(out.chunks_exact_mut(kp))
    {
        for (i, p) in dst.iter_mut().enumerate() {
            let hi = row.get(2 * i + 1).map_or(0, |&v| to_bf16(v));
            *p = to_bf16(row[2 * i]) as u32 | (hi as u32) << 16;
        }
    }
}

/// Columns `c0..c0 + width` (`width <= 16`) of `a` (`[rows, cols]` row-major) as rows of bf16
/// pairs, [`rows_to_bf16`]'s layout for `a^T`: `out[j * kp + i]` holds `a[2 i, c0 + j]` and
/// `a[2 i + 1, c0 + j]`, `kp = ceil(rows / 2)` (a linear layer's `dW = g^T x` reads `g^T` so).
/// Converts 16 columns of two rows per instruction into a panel (`scratch`), then transposes
/// the 32-bit pairs.
pub fn columns_to_bf16_pairs(
    a: &[f32],
    rows: usize,
    cols: usize,
    c0: usize,
    width: usize,
    scratch: &mut Vec<u16>,
    out: &mut [u32],
) {
    assert!(
        a.len() >= rows * cols && width <= NR && c0 + width <= cols,
        "bf16 columns"
    );
    let kp = rows.div_ceil(2);
    assert!(out.len() >= width * kp, "bf16 columns: output size");
    scratch.clear();
    scratch.resize(kp * NR * 2, 0);
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: detected; sizes asserted above.
        unsafe { x86::pack_transposed_panel(a, rows, cols, c0, width, scratch) };
    } else {
        pack_panel_portable(a, rows, cols, c0, width, scratch);
    }
    #[cfg(not(target_arch = "x86_64"))]
    pack_panel_portable(a, rows, cols, c0, width, scratch);
    for (i, pair) in scratch.chunks_exact(NR * 2).enumerate() {
        for j in 0..width {
            out[j * kp + i] = pair[2 * j] as u32 | (pair[2 * j + 1] as u32) << 16;
        }
    }
}

/// [`x86::pack_transposed_panel`] in plain Rust.
fn pack_panel_portable(
    a: &[f32],
    k: usize,
    cols: usize,
    c0: usize,
    width: usize,
    panel: &mut [u16],
) {
    for kk in 0..k {
        let src = &a[kk * cols + c0..kk * cols + c0 + width];
        let base = kk / 2 * NR * 2 + kk % 2;
        for (j, &v) in src.iter().enumerate() {
            panel[base + 2 * j] = to_bf16(v);
        }
    }
}

/// Weights packed for [`gemm`] as bf16, with their f32 bias.
#[derive(Debug, Clone)]
pub struct PackedBf16 {
    n: usize,
    k: usize,
    panels: Vec<u16>,
    bias: Vec<f32>,
}

impl PackedBf16 {
    /// `k` pairs per panel row.
    fn kp(&self) -> usize {
        self.k.div_ceil(2)
    }

    /// Packs `w` (`[n, k]` row-major) and `bias` (`n` values, or zeros).
    pub fn new(w: &[f32], bias: Option<&[f32]>, n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "weight size");
        let kp = k.div_ceil(2);
        let np = n.div_ceil(NR);
        let mut panels = vec![0u16; np * kp * NR * 2];
        let mut row = vec![0u16; k];
        for col in 0..n {
            let (p, j) = (col / NR, col % NR);
            let panel = &mut panels[p * kp * NR * 2..(p + 1) * kp * NR * 2];
            convert(&w[col * k..(col + 1) * k], &mut row);
            for (kk, &h) in row.iter().enumerate() {
                panel[(kk / 2 * NR + j) * 2 + kk % 2] = h;
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

    /// Packs `W = A^T` from `a` (`[rows, cols]` row-major), without bias (the backward
    /// products, as [`super::gemm::PackedF32::from_transposed`]).
    pub fn from_transposed(a: &[f32], rows: usize, cols: usize) -> Self {
        Self::from_transposed_with(a, rows, cols, |n, f| (0..n).for_each(f))
    }

    /// [`PackedBf16::from_transposed`] with the panels spread by `run(count, f)`, which must
    /// call `f(i)` once for each `i` in `0..count`, on any threads (the training ops pass their
    /// thread pool: `dW`'s packed input is as large as the layer's activations).
    pub fn from_transposed_with(
        a: &[f32],
        rows: usize,
        cols: usize,
        run: impl FnOnce(usize, &(dyn Fn(usize) + Sync)),
    ) -> Self {
        assert_eq!(a.len(), rows * cols, "matrix size");
        let (n, k) = (cols, rows);
        let kp = k.div_ceil(2);
        let np = n.div_ceil(NR);
        let len = kp * NR * 2;
        let mut panels = vec![0u16; np * len];
        let view = RawSlice::new(&mut panels);
        let fast = available();
        run(np, &|p| {
            // SAFETY: panel `p` alone writes `p * len..(p + 1) * len` of `panels`, alive here.
            let panel = unsafe { view.get_range(p * len, len) };
            let width = NR.min(n - p * NR);
            #[cfg(target_arch = "x86_64")]
            if fast {
                // SAFETY: detected (`available`); `a` is `[k, cols]` (asserted), the panel
                // `kp * 32` values.
                unsafe { x86::pack_transposed_panel(a, k, cols, p * NR, width, panel) };
                return;
            }
            let _ = fast;
            pack_panel_portable(a, k, cols, p * NR, width, panel);
        });
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

    fn panel(&self, p: usize) -> &[u16] {
        let len = self.kp() * NR * 2;
        &self.panels[p * len..(p + 1) * len]
    }
}

/// `c[m, n] (+)= a w^T + bias`, `a` from [`rows_to_bf16`] (`m` rows of `ceil(k / 2)` pairs).
/// Runs the AVX-512 BF16 kernel where [`available`], a portable one (same products, exact in
/// f32, summed in another order) elsewhere.
pub fn gemm(a: &[u32], m: usize, w: &PackedBf16, c: &mut [f32], accumulate: bool) {
    let (n, kp) = (w.n, w.kp());
    assert!(
        a.len() >= m * kp && c.len() >= m * n,
        "bf16 gemm buffer sizes"
    );
    let out = OutMatrix::new(c, m, n);
    let fast = available();
    let np = n.div_ceil(NR);
    let mut tile = [0f32; TILE];
    let mut p = 0;
    while p < np {
        let pw = if p + 1 < np { 2 } else { 1 };
        for r0 in (0..m).step_by(MR) {
            let mr = MR.min(m - r0);
            let a0 = &a[r0 * kp..];
            #[cfg(target_arch = "x86_64")]
            if fast {
                // SAFETY: the instructions were detected (`available`), `a0` holds `mr` rows of
                // `kp` pairs, and each panel `kp * 32` values (asserted above and by `panel`).
                unsafe { x86::micro(a0, kp, mr, w, p, pw, &mut tile) };
            } else {
                micro_portable(a0, kp, mr, w, p, pw, &mut tile);
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                let _ = fast;
                micro_portable(a0, kp, mr, w, p, pw, &mut tile);
            }
            let width = (pw * NR).min(n - p * NR);
            let bias = &w.bias[p * NR..p * NR + width];
            // SAFETY: `out` covers `c`, which nothing else touches during the call.
            unsafe { store_tile(&out, &tile, r0, mr, p * NR, bias, accumulate) };
        }
        p += pw;
    }
}

/// Any CPU: the same tile from the bf16 values widened to f32 (every product is exact in f32).
fn micro_portable(
    a: &[u32],
    kp: usize,
    mr: usize,
    w: &PackedBf16,
    p: usize,
    pw: usize,
    tile: &mut [f32; TILE],
) {
    for q in 0..pw {
        let panel = w.panel(p + q);
        for r in 0..mr {
            let mut acc = [0f32; NR];
            for (i, &pair) in a[r * kp..(r + 1) * kp].iter().enumerate() {
                let (lo, hi) = (from_bf16(pair as u16), from_bf16((pair >> 16) as u16));
                let b = &panel[i * NR * 2..(i + 1) * NR * 2];
                for j in 0..NR {
                    acc[j] += lo * from_bf16(b[2 * j]) + hi * from_bf16(b[2 * j + 1]);
                }
            }
            tile[r * 2 * NR + q * NR..r * 2 * NR + (q + 1) * NR].copy_from_slice(&acc);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{PackedBf16, NR, TILE};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn convert(src: &[f32], dst: &mut [u16]) {
        let n = src.len();
        let mut i = 0;
        while i + 16 <= n {
            let h = _mm512_cvtneps_pbh(_mm512_loadu_ps(src.as_ptr().add(i)));
            _mm256_storeu_si256(
                dst.as_mut_ptr().add(i) as *mut __m256i,
                std::mem::transmute::<__m256bh, __m256i>(h),
            );
            i += 16;
        }
        if i < n {
            let mask: __mmask16 = (1u32 << (n - i)) as u16 - 1;
            let h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, src.as_ptr().add(i)));
            _mm256_mask_storeu_epi16(
                dst.as_mut_ptr().add(i) as *mut i16,
                mask,
                std::mem::transmute::<__m256bh, __m256i>(h),
            );
        }
    }

    /// One panel of `W = a^T` (`a` `[k, cols]`): columns `c0..c0 + width` of rows `2 i` and
    /// `2 i + 1` converted together (`vcvtne2ps2bf16`) and interleaved into pairs (`vpermw`).
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn pack_transposed_panel(
        a: &[f32],
        k: usize,
        cols: usize,
        c0: usize,
        width: usize,
        panel: &mut [u16],
    ) {
        debug_assert!(a.len() >= k * cols && c0 + width <= cols && width <= NR);
        let mask: __mmask16 = ((1u32 << width) - 1) as u16;
        // Output word 2 j takes row 2 i's column j (word j of the conversion), 2 j + 1 row
        // 2 i + 1's (word 16 + j).
        let mut idx = [0i16; 32];
        for j in 0..16 {
            idx[2 * j] = j as i16;
            idx[2 * j + 1] = 16 + j as i16;
        }
        let idx = _mm512_loadu_si512(idx.as_ptr() as *const _);
        for i in 0..k.div_ceil(2) {
            let r0 = _mm512_maskz_loadu_ps(mask, a.as_ptr().add(2 * i * cols + c0));
            let r1 = if 2 * i + 1 < k {
                _mm512_maskz_loadu_ps(mask, a.as_ptr().add((2 * i + 1) * cols + c0))
            } else {
                _mm512_setzero_ps()
            };
            // Low 16 words from the second operand (row 2 i), high 16 from the first.
            let both = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(r1, r0));
            let pairs = _mm512_permutexvar_epi16(idx, both);
            _mm512_storeu_si512(panel.as_mut_ptr().add(i * NR * 2) as *mut _, pairs);
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn micro(
        a: &[u32],
        kp: usize,
        mr: usize,
        w: &PackedBf16,
        p: usize,
        pw: usize,
        tile: &mut [f32; TILE],
    ) {
        let b0 = w.panel(p).as_ptr();
        let b1 = if pw == 2 { w.panel(p + 1).as_ptr() } else { b0 };
        let a = a.as_ptr();
        crate::engine::with_rows!(mr, R => if pw == 2 {
            tile_bf16::<R, 2>(a, kp, b0, b1, tile)
        } else {
            tile_bf16::<R, 1>(a, kp, b0, b1, tile)
        })
    }

    /// `R` rows by `P` panels of 16 columns in `R * P` accumulators: per pair of `k` steps, one
    /// 64-byte load per panel and one 32-bit broadcast per row feed `R * P` `vdpbf16ps`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn tile_bf16<const R: usize, const P: usize>(
        a: *const u32,
        kp: usize,
        b0: *const u16,
        b1: *const u16,
        tile: &mut [f32; TILE],
    ) {
        let mut acc = [[_mm512_setzero_ps(); P]; R];
        for i in 0..kp {
            let bv: [__m512bh; 2] = [
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                    b0.add(i * NR * 2) as *const _
                )),
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                    b1.add(i * NR * 2) as *const _
                )),
            ];
            for (r, row) in acc.iter_mut().enumerate() {
                let av = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(
                    *a.add(r * kp + i) as i32,
                ));
                for (q, c) in row.iter_mut().enumerate() {
                    *c = _mm512_dpbf16_ps(*c, av, bv[q]);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (q, c) in row.iter().enumerate() {
                _mm512_storeu_ps(tile.as_mut_ptr().add(r * 2 * NR + q * NR), *c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::gemm::gemm_reference;

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

    fn rounded(v: &[f32]) -> Vec<f32> {
        v.iter().map(|&x| from_bf16(to_bf16(x))).collect()
    }

    /// The vector conversion (where this CPU has it) rounds as the scalar one, bit for bit,
    /// at every length (the masked tail).
    #[test]
    fn convert_matches_the_scalar_rounding() {
        let mut seed = 3;
        for n in [0, 1, 15, 16, 17, 100] {
            let mut src = rand_vec(n, &mut seed);
            if n > 3 {
                src[1] = 1.0 + 3.0 / 256.0;
                src[2] = f32::NAN;
                src[3] = -1e-40;
            }
            let mut got = vec![0u16; n];
            convert(&src, &mut got);
            for (i, (&g, &v)) in got.iter().zip(&src).enumerate() {
                if v.is_nan() {
                    assert!(from_bf16(g).is_nan(), "NaN at {i}");
                } else {
                    assert_eq!(g, to_bf16(v), "[{i}] of {n}: {v}");
                }
            }
        }
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3 * 2^-8 lies halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even).
        assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(to_bf16(1.0 + 1.5 / 256.0), 0x3f81);
        assert_eq!(to_bf16(-2.5), 0xc020);
        assert_eq!(to_bf16(f32::INFINITY), 0x7f80);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        // The largest finite floats round up to infinity, as the instruction does.
        assert_eq!(to_bf16(f32::MAX), 0x7f80);
        assert_eq!(to_bf16(-1e-40), 0x8000, "subnormals flush to signed zero");
        for x in [0.0f32, -0.0, 3.140625, 1e-40, -7.5e30] {
            assert_eq!(from_bf16(to_bf16(x)).to_bits() >> 16, to_bf16(x) as u32);
        }
    }

    /// Both kernels on odd shapes (odd `k`, partial tiles and panels) against an f64 product of
    /// the same bf16-rounded operands (tight), and against the f32 product (loose: the rounding).
    #[test]
    fn matches_the_reference_on_odd_shapes() {
        let mut seed = 11;
        let shapes = [
            (1, 1, 1),
            (5, 3, 7),
            (7, 17, 33),
            (13, 40, 19),
            (48, 64, 256),
            (49, 256, 1023),
        ];
        let mut pairs = Vec::new();
        for &(m, n, k) in &shapes {
            let a = rand_vec(m * k, &mut seed);
            let w = rand_vec(n * k, &mut seed);
            let b = rand_vec(n, &mut seed);
            let exact = gemm_reference(&rounded(&a), m, &rounded(&w), &b, n, k);
            let f32_product = gemm_reference(&a, m, &w, &b, n, k);
            rows_to_bf16(&a, m, k, &mut pairs);
            for packed in [
                PackedBf16::new(&w, Some(&b), n, k),
                // The same weights, packed from their transpose (bias added by hand below).
                PackedBf16::from_transposed(&transpose(&w, n, k), k, n),
            ] {
                let with_bias = packed.bias.iter().any(|&v| v != 0.0);
                let mut got = vec![f32::NAN; m * n];
                gemm(&pairs, m, &packed, &mut got, false);
                let mut fallback = vec![f32::NAN; m * n];
                portable_gemm(&pairs, m, &packed, &mut fallback);
                let tol = 1e-5 * (k as f32).sqrt();
                for i in 0..m * n {
                    let bias = if with_bias { 0.0 } else { b[i % n] };
                    let (g, f) = (got[i] + bias, fallback[i] + bias);
                    assert!(
                        (g - exact[i]).abs() <= tol,
                        "{m}x{n}x{k} [{i}]: {g} vs {}",
                        exact[i]
                    );
                    assert!((f - exact[i]).abs() <= tol, "portable {m}x{n}x{k} [{i}]");
                    // Each operand is off by at most 2^-9 relative: products by ~2^-8.
                    let loose = 2f32.powi(-7) * (k as f32).sqrt() + 1e-5;
                    assert!(
                        (g - f32_product[i]).abs() <= loose,
                        "vs f32 {m}x{n}x{k} [{i}]"
                    );
                }
                let mut acc = vec![1.0f32; m * n];
                gemm(&pairs, m, &packed, &mut acc, true);
                for i in 0..m * n {
                    assert!((acc[i] - 1.0 - got[i]).abs() <= 1e-5, "accumulate");
                }
            }
        }
    }

    /// Column blocks as pair rows equal `rows_to_bf16` of the transpose, at odd sizes.
    #[test]
    fn column_pairs_are_the_transposes_rows() {
        let mut seed = 5;
        for (rows, cols) in [(1, 1), (7, 19), (33, 40)] {
            let a = rand_vec(rows * cols, &mut seed);
            let mut want = Vec::new();
            rows_to_bf16(&transpose(&a, rows, cols), cols, rows, &mut want);
            let kp = rows.div_ceil(2);
            let mut got = vec![0u32; cols * kp];
            let mut scratch = Vec::new();
            for c0 in (0..cols).step_by(16) {
                let width = 16.min(cols - c0);
                columns_to_bf16_pairs(&a, rows, cols, c0, width, &mut scratch, &mut got[c0 * kp..]);
            }
            assert_eq!(got, want, "{rows} x {cols}");
        }
    }

    fn transpose(w: &[f32], n: usize, k: usize) -> Vec<f32> {
        let mut t = vec![0.0; n * k];
        for r in 0..n {
            for c in 0..k {
                t[c * n + r] = w[r * k + c];
            }
        }
        t
    }

    fn portable_gemm(a: &[u32], m: usize, w: &PackedBf16, c: &mut [f32]) {
        let (n, kp) = (w.n, w.kp());
        let np = n.div_ceil(NR);
        let mut tile = [0f32; TILE];
        for p in 0..np {
            for r0 in (0..m).step_by(MR) {
                let mr = MR.min(m - r0);
                micro_portable(&a[r0 * kp..], kp, mr, w, p, 1, &mut tile);
                let width = NR.min(n - p * NR);
                for r in 0..mr {
                    for j in 0..width {
                        c[(r0 + r) * n + p * NR + j] = tile[r * 2 * NR + j] + w.bias[p * NR + j];
                    }
                }
            }
        }
    }
}
