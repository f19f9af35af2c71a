//! int8 `C = A W^T + b`: weights quantized once per output channel (symmetric, `w ~= s_n q`),
//! activations quantized per row (token) on every call (dynamic, symmetric,
//! `a ~= s_r q`), products summed exactly in i32, then `c = s_r s_n sum + b`.
//!
//! Per-token activation scales (finer than ONNX Runtime's one dynamic scale per tensor) keep a
//! loud token from crushing the quiet ones. All paths compute the same integer sums, so they
//! agree to the bit (tests compare each with the scalar reference):
//! - AVX-512 VNNI: `vpdpbusd` multiplies unsigned by signed bytes, four per 32-bit lane, so the
//!   activations are offset to `q + 128` and the offset taken back with the weights' column
//!   sums: `sum (q_a + 128) q_w - 128 sum q_w = sum q_a q_w` (what oneDNN and ONNX Runtime do).
//!   Weights packed `[k / 4][16 columns][4]` per panel.
//! - AVX2: bytes widened to i16 and `vpmaddwd` (pairs of i16 products into i32): exact, no
//!   `vpmaddubsw` saturation. Weights packed `[k / 2][8 columns][2]` as i16 per panel.
//! - Portable: plain loops over the row-major weights.

use super::threads::OutMatrix;
use super::Isa;

/// Activation rows per micro-tile.
const MR: usize = 6;

/// How the weights are laid out for the kernel chosen at packing time.
#[derive(Debug, Clone)]
enum Layout {
    Portable,
    /// Panels of 16 columns, `[kp / 4][16][4]` i8 (AVX-512 VNNI).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Vnni(Vec<i8>),
    /// The same panels for NEON `sdot` (signed activations: no offset).
    #[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
    Dot(Vec<i8>),
    /// Panels of 8 columns, `[kp / 2][8][2]` i16.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Avx2(Vec<i16>),
}

/// int8 weights with their scales and bias, packed for one [`Isa`].
#[derive(Debug, Clone)]
pub struct PackedQ8 {
    n: usize,
    k: usize,
    /// `k` rounded up to a multiple of 4 (zero padding).
    kp: usize,
    /// Row-major `[n, k]` quantized weights (what a file stores).
    q: Vec<i8>,
    scales: Vec<f32>,
    colsum: Vec<i32>,
    bias: Vec<f32>,
    layout: Layout,
    isa: Isa,
}

/// Weights are quantized in [`crate::quant`], below both the checkpoint format and this engine.
pub use crate::quant::quantize_weights;

/// One row to int8 (-127..=127, round half to even); returns its scale (1 for an all-zero row).
#[inline(always)]
pub fn quantize_row(x: &[f32], q: &mut [i8]) -> f32 {
    quantize_row_offset(x, q, 0)
}

/// As [`quantize_row`], storing `q + offset` as a byte (offset 128: the unsigned form VNNI
/// takes). One pass for the maximum, one to scale, round and store.
#[inline(always)]
fn quantize_row_offset(x: &[f32], q: &mut [i8], offset: i32) -> f32 {
    let amax = super::math::max_abs(x);
    let scale = if amax > 0.0 && amax.is_finite() {
        amax / 127.0
    } else {
        1.0
    };
    let inv = 1.0 / scale;
    for (o, &v) in q.iter_mut().zip(x) {
        let y = v * inv;
        let y = if y > 127.0 { 127.0 } else { y };
        let y = if y < -127.0 { -127.0 } else { y };
        let r = super::math::round(y);
        *o = ((r as i32) + offset) as u8 as i8;
    }
    scale
}

impl PackedQ8 {
    /// Quantizes `w` (`[n, k]` f32) and packs it for `isa`.
    pub fn quantize(w: &[f32], bias: Option<&[f32]>, n: usize, k: usize, isa: Isa) -> Self {
        let (q, scales) = quantize_weights(w, n, k);
        Self::from_quantized(q, scales, bias.map(<[f32]>::to_vec), n, k, isa)
    }

    /// Packs already quantized weights (`q` `[n, k]`, `scales` `[n]`) for `isa`.
    pub fn from_quantized(
        q: Vec<i8>,
        scales: Vec<f32>,
        bias: Option<Vec<f32>>,
        n: usize,
        k: usize,
        isa: Isa,
    ) -> Self {
        assert_eq!(q.len(), n * k, "quantized weight size");
        assert_eq!(scales.len(), n, "scale count");
        let kp = k.div_ceil(4) * 4;
        let colsum = (0..n)
            .map(|r| q[r * k..(r + 1) * k].iter().map(|&v| v as i32).sum())
            .collect();
        let at = |col: usize, kk: usize| -> i8 {
            if col < n && kk < k {
                q[col * k + kk]
            } else {
                0
            }
        };
        // `[kp / 4][16][4]` panels: four consecutive `k` of one column are the four bytes one
        // `vpdpbusd` / `sdot` lane multiplies with four bytes of an activation row.
        let quads = || {
            let np = n.div_ceil(16);
            let mut v = vec![0i8; np * kp * 16];
            for p in 0..np {
                for k4 in 0..kp / 4 {
                    for j in 0..16 {
                        for t in 0..4 {
                            v[((p * (kp / 4) + k4) * 16 + j) * 4 + t] = at(p * 16 + j, k4 * 4 + t);
                        }
                    }
                }
            }
            v
        };
        let layout = match isa {
            Isa::Avx512Vnni => Layout::Vnni(quads()),
            Isa::NeonDot => Layout::Dot(quads()),
            Isa::Avx2 | Isa::Avx512 => {
                let np = n.div_ceil(8);
                let mut v = vec![0i16; np * kp * 8];
                for p in 0..np {
                    for k2 in 0..kp / 2 {
                        for j in 0..8 {
                            for t in 0..2 {
                                v[((p * (kp / 2) + k2) * 8 + j) * 2 + t] =
                                    at(p * 8 + j, k2 * 2 + t) as i16;
                            }
                        }
                    }
                }
                Layout::Avx2(v)
            }
            // Plain NEON has no 8-bit dot product; int8 does not pay there (`int8_compute`).
            Isa::Scalar | Isa::Neon => Layout::Portable,
        };
        Self {
            n,
            k,
            kp,
            q,
            scales,
            colsum,
            bias: bias.unwrap_or_else(|| vec![0.0; n]),
            layout,
            isa,
        }
    }

    pub fn n(&self) -> usize {
        self.n
    }

    pub fn k(&self) -> usize {
        self.k
    }

    /// Row length of the quantized activations this layer takes ([`quantize_activations`]).
    pub fn k_padded(&self) -> usize {
        self.kp
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The row-major int8 weights and their per-row scales.
    pub fn weights(&self) -> (&[i8], &[f32]) {
        (&self.q, &self.scales)
    }

    pub fn bias(&self) -> &[f32] {
        &self.bias
    }
}

/// Quantizes `m` rows of `a` (`[m, k]`) into `q` (`[m, kp]`, zero padded; offset by +128 as
/// unsigned bytes for the VNNI kernel) and `scales` (`[m]`).
pub fn quantize_activations(w: &PackedQ8, a: &[f32], m: usize, q: &mut [i8], scales: &mut [f32]) {
    let offset = if matches!(w.layout, Layout::Vnni(_)) {
        128
    } else {
        0
    };
    #[cfg(target_arch = "x86_64")]
    if w.isa.has_avx512() {
        let (k, kp) = (w.k, w.kp);
        for r in 0..m {
            let row = &mut q[r * kp..(r + 1) * kp];
            // SAFETY: AVX-512 F and BW were detected at run time; both slices hold k values.
            scales[r] =
                unsafe { x86::quantize_row_avx512(&a[r * k..(r + 1) * k], &mut row[..k], offset) };
            row[k..].fill(offset as u8 as i8);
        }
        return;
    }
    quantize_rows(w.isa, w.k, w.kp, offset, a, m, q, scales)
}

super::math::simd_fn! {
    fn quantize_rows(
        k: usize,
        kp: usize,
        offset: i32,
        a: &[f32],
        m: usize,
        q: &mut [i8],
        scales: &mut [f32],
    ) {
        for r in 0..m {
            let row = &mut q[r * kp..(r + 1) * kp];
            scales[r] = quantize_row_offset(&a[r * k..(r + 1) * k], &mut row[..k], offset);
            // Padding must contribute nothing: 0 signed, or 128 offset (its weights are 0).
            row[k..].fill(offset as u8 as i8);
        }
    }
}

/// `c[m, n] (+)= dequant(q_a W_q^T) + bias` for activations from [`quantize_activations`].
pub fn qgemm(w: &PackedQ8, qa: &[i8], sa: &[f32], m: usize, c: &mut [f32], accumulate: bool) {
    let n = w.n;
    let out = OutMatrix::new(c, m, n);
    // SAFETY: `out` covers `c`, which nothing else touches during the call.
    unsafe { qgemm_cols(w, qa, sa, m, out, accumulate, 0..n) }
}

/// [`qgemm`] for output columns `cols` only (`cols.start` a multiple of 32).
///
/// # Safety
/// `out` must be a live `[m, w.n()]` matrix whose columns `cols` no one else touches meanwhile.
pub unsafe fn qgemm_cols(
    w: &PackedQ8,
    qa: &[i8],
    sa: &[f32],
    m: usize,
    out: OutMatrix,
    accumulate: bool,
    cols: std::ops::Range<usize>,
) {
    let (n, kp) = (w.n, w.kp);
    assert!(
        qa.len() >= m * kp && sa.len() >= m && out.n() == n,
        "qgemm sizes"
    );
    assert!(
        cols.start.is_multiple_of(32) && cols.end <= n,
        "qgemm column range"
    );
    let mut tile = [0i32; MR * 32];
    match &w.layout {
        #[cfg(target_arch = "x86_64")]
        Layout::Vnni(packed) => {
            let np = cols.end.div_ceil(16);
            let mut p = cols.start / 16;
            while p < np {
                let pw = if p + 1 < np { 2 } else { 1 };
                let first = &packed[p * kp * 16..(p + 1) * kp * 16];
                let second = &packed[(p + pw - 1) * kp * 16..(p + pw) * kp * 16];
                for r0 in (0..m).step_by(MR) {
                    let mr = MR.min(m - r0);
                    // SAFETY: packed with Isa::Avx512Vnni, which was detected at run time; each
                    // panel holds kp * 16 bytes and the rows mr * kp.
                    unsafe { x86::tile_vnni(&qa[r0 * kp..], kp, mr, first, second, pw, &mut tile) };
                    // The +128 offset times each column's weight sum comes back out.
                    let width = (pw * 16).min(cols.end - p * 16);
                    epilogue(w, &tile, sa, r0, mr, p * 16, width, out, accumulate, 128);
                }
                p += pw;
            }
        }
        #[cfg(target_arch = "x86_64")]
        Layout::Avx2(packed) => {
            for p in cols.start / 8..cols.end.div_ceil(8) {
                let panel = &packed[p * kp * 8..(p + 1) * kp * 8];
                for r0 in (0..m).step_by(MR) {
                    let mr = MR.min(m - r0);
                    // SAFETY: packed for AVX2 on a CPU where it was detected; sizes as above.
                    unsafe { x86::tile_avx2(&qa[r0 * kp..], kp, mr, panel, &mut tile) };
                    let width = 8.min(cols.end - p * 8);
                    epilogue(w, &tile, sa, r0, mr, p * 8, width, out, accumulate, 0);
                }
            }
        }
        #[cfg(target_arch = "aarch64")]
        Layout::Dot(packed) => {
            for p in cols.start / 16..cols.end.div_ceil(16) {
                let panel = &packed[p * kp * 16..(p + 1) * kp * 16];
                for r0 in (0..m).step_by(MR) {
                    let mr = MR.min(m - r0);
                    // SAFETY: packed with Isa::NeonDot, detected at run time; the panel holds
                    // kp * 16 bytes and the rows mr * kp.
                    unsafe { neon::tile_dot(&qa[r0 * kp..], kp, mr, panel, &mut tile) };
                    let width = 16.min(cols.end - p * 16);
                    epilogue(w, &tile, sa, r0, mr, p * 16, width, out, accumulate, 0);
                }
            }
        }
        _ => {
            for r in 0..m {
                let row = &qa[r * kp..r * kp + w.k];
                let seg = out.segment(r, cols.start, cols.len());
                for (o, j) in seg.iter_mut().zip(cols.clone()) {
                    let wr = &w.q[j * w.k..(j + 1) * w.k];
                    let s: i32 = row.iter().zip(wr).map(|(&x, &y)| x as i32 * y as i32).sum();
                    let v = s as f32 * sa[r] * w.scales[j] + w.bias[j];
                    *o = if accumulate { *o + v } else { v };
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn epilogue(
    w: &PackedQ8,
    tile: &[i32; MR * 32],
    sa: &[f32],
    r0: usize,
    mr: usize,
    col0: usize,
    cols: usize,
    out: OutMatrix,
    accumulate: bool,
    offset: i32,
) {
    let args = Cols {
        colsum: &w.colsum[col0..col0 + cols],
        scales: &w.scales[col0..col0 + cols],
        bias: &w.bias[col0..col0 + cols],
    };
    for r in 0..mr {
        let row = out.segment(r0 + r, col0, cols);
        dequantize_row(
            w.isa,
            &tile[r * 32..r * 32 + cols],
            sa[r0 + r],
            &args,
            row,
            accumulate,
            offset,
        );
    }
}

/// The per-column constants of an output tile.
struct Cols<'a> {
    colsum: &'a [i32],
    scales: &'a [f32],
    bias: &'a [f32],
}

super::math::simd_fn! {
    /// `row (+)= (t - offset colsum) s scale + bias`, column by column.
    fn dequantize_row(
        t: &[i32],
        s: f32,
        cols: &Cols,
        row: &mut [f32],
        accumulate: bool,
        offset: i32,
    ) {
        let it = t.iter().zip(cols.colsum).zip(cols.scales).zip(cols.bias);
        if accumulate {
            for (o, (((&t, &cs), &sc), &b)) in row.iter_mut().zip(it) {
                *o += (t - offset * cs) as f32 * (s * sc) + b;
            }
        } else {
            for (o, (((&t, &cs), &sc), &b)) in row.iter_mut().zip(it) {
                *o = (t - offset * cs) as f32 * (s * sc) + b;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::MR;
    use std::arch::x86_64::*;

    /// [`super::quantize_row_offset`] with AVX-512: `vcvtps2dq` rounds to nearest even (the
    /// default rounding mode), `vpmovdb` keeps the low byte.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn quantize_row_avx512(x: &[f32], q: &mut [i8], offset: i32) -> f32 {
        let k = x.len().min(q.len());
        let full = k / 16;
        let (xp, qp) = (x.as_ptr(), q.as_mut_ptr());
        let mut m = _mm512_setzero_ps();
        for c in 0..full {
            m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(xp.add(c * 16))));
        }
        let mut amax = _mm512_reduce_max_ps(m);
        for &v in &x[full * 16..k] {
            amax = amax.max(v.abs());
        }
        let scale = if amax > 0.0 && amax.is_finite() {
            amax / 127.0
        } else {
            1.0
        };
        let inv = 1.0 / scale;
        let (vinv, off) = (_mm512_set1_ps(inv), _mm512_set1_epi32(offset));
        let (lo, hi) = (_mm512_set1_ps(-127.0), _mm512_set1_ps(127.0));
        for c in 0..full {
            let v = _mm512_mul_ps(_mm512_loadu_ps(xp.add(c * 16)), vinv);
            let v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
            let r = _mm512_add_epi32(_mm512_cvtps_epi32(v), off);
            _mm_storeu_si128(qp.add(c * 16) as *mut __m128i, _mm512_cvtepi32_epi8(r));
        }
        for t in full * 16..k {
            let y = (x[t] * inv).clamp(-127.0, 127.0);
            q[t] = ((super::super::math::round(y) as i32) + offset) as u8 as i8;
        }
        scale
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn tile_vnni(
        qa: &[i8],
        kp: usize,
        mr: usize,
        first: &[i8],
        second: &[i8],
        pw: usize,
        tile: &mut [i32; MR * 32],
    ) {
        let (a, b0, b1) = (qa.as_ptr(), first.as_ptr(), second.as_ptr());
        crate::engine::with_rows!(mr, R => if pw == 2 {
            vnni::<R, 2>(a, kp, b0, b1, tile)
        } else {
            vnni::<R, 1>(a, kp, b0, b1, tile)
        })
    }

    /// `R` rows x `P` panels of 16 columns: per quad of `k`, one broadcast of each row's four
    /// bytes and one load per panel feed `R x P` independent `vpdpbusd`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn vnni<const R: usize, const P: usize>(
        a: *const i8,
        kp: usize,
        b0: *const i8,
        b1: *const i8,
        tile: &mut [i32; MR * 32],
    ) {
        let mut acc = [[_mm512_setzero_si512(); P]; R];
        for k4 in 0..kp / 4 {
            let bv = [
                _mm512_loadu_si512(b0.add(k4 * 64) as *const _),
                _mm512_loadu_si512(b1.add(k4 * 64) as *const _),
            ];
            for (r, row) in acc.iter_mut().enumerate() {
                let p = a.add(r * kp + k4 * 4) as *const i32;
                let av = _mm512_set1_epi32(p.read_unaligned());
                for (q, c) in row.iter_mut().enumerate() {
                    *c = _mm512_dpbusd_epi32(*c, av, bv[q]);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (q, c) in row.iter().enumerate() {
                _mm512_storeu_si512(tile.as_mut_ptr().add(r * 32 + q * 16) as *mut _, *c);
            }
        }
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn tile_avx2(
        qa: &[i8],
        kp: usize,
        mr: usize,
        panel: &[i16],
        tile: &mut [i32; MR * 32],
    ) {
        let (a, b) = (qa.as_ptr(), panel.as_ptr());
        crate::engine::with_rows!(mr, R => avx2::<R>(a, kp, b, tile))
    }

    /// `R` rows x 8 columns: each row's pair of bytes widened to i16 and broadcast, times the
    /// panel's `[8][2]` i16 weights with `vpmaddwd`.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn avx2<const R: usize>(
        a: *const i8,
        kp: usize,
        b: *const i16,
        tile: &mut [i32; MR * 32],
    ) {
        let mut acc = [_mm256_setzero_si256(); R];
        for k2 in 0..kp / 2 {
            let bv = _mm256_loadu_si256(b.add(k2 * 16) as *const _);
            for (r, acc) in acc.iter_mut().enumerate() {
                let lo = *a.add(r * kp + 2 * k2) as i16 as u16 as u32;
                let hi = *a.add(r * kp + 2 * k2 + 1) as i16 as u16 as u32;
                let av = _mm256_set1_epi32((lo | (hi << 16)) as i32);
                *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(av, bv));
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            _mm256_storeu_si256(tile.as_mut_ptr().add(r * 32) as *mut _, *acc);
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use super::MR;
    use std::arch::aarch64::*;

    #[target_feature(enable = "dotprod")]
    pub(super) unsafe fn tile_dot(
        qa: &[i8],
        kp: usize,
        mr: usize,
        panel: &[i8],
        tile: &mut [i32; MR * 32],
    ) {
        let (a, b) = (qa.as_ptr(), panel.as_ptr());
        crate::engine::with_rows!(mr, R => dot::<R>(a, kp, b, tile))
    }

    /// `R` rows x 16 columns in 4 x `R` accumulators: per quad of `k`, four loads of the panel
    /// (4 columns x 4 bytes each) and each row's four bytes broadcast feed `4 R` `sdot`s.
    /// `sdot` is written in assembly: its intrinsic (`vdotq_s32`) is not stable Rust yet.
    #[inline]
    #[target_feature(enable = "dotprod")]
    unsafe fn dot<const R: usize>(
        a: *const i8,
        kp: usize,
        b: *const i8,
        tile: &mut [i32; MR * 32],
    ) {
        let mut acc = [[vdupq_n_s32(0); 4]; R];
        for k4 in 0..kp / 4 {
            let bp = b.add(k4 * 64);
            let bv = [
                vld1q_s8(bp),
                vld1q_s8(bp.add(16)),
                vld1q_s8(bp.add(32)),
                vld1q_s8(bp.add(48)),
            ];
            for (r, row) in acc.iter_mut().enumerate() {
                let quad = (a.add(r * kp + k4 * 4) as *const i32).read_unaligned();
                let av = vreinterpretq_s8_s32(vdupq_n_s32(quad));
                for (c, &bq) in row.iter_mut().zip(&bv) {
                    std::arch::asm!(
                        "sdot {acc:v}.4s, {w:v}.16b, {x:v}.16b",
                        acc = inout(vreg) *c,
                        w = in(vreg) bq,
                        x = in(vreg) av,
                        options(pure, nomem, nostack, preserves_flags)
                    );
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (q, c) in row.iter().enumerate() {
                vst1q_s32(tile.as_mut_ptr().add(r * 32 + q * 4), *c);
            }
        }
    }
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

    /// The scalar reference of the quantized product, from the row-major int8 weights.
    fn reference(w: &PackedQ8, a: &[f32], m: usize) -> Vec<f32> {
        let (n, k) = (w.n(), w.k());
        let (q, s) = w.weights();
        let mut out = vec![0f32; m * n];
        let mut qa = vec![0i8; k];
        for r in 0..m {
            let sa = quantize_row(&a[r * k..(r + 1) * k], &mut qa);
            for j in 0..n {
                let sum: i64 = (0..k).map(|t| qa[t] as i64 * q[j * k + t] as i64).sum();
                out[r * n + j] = sum as f32 * (sa * s[j]) + w.bias()[j];
            }
        }
        out
    }

    /// Every kernel this CPU has gives exactly the reference's result on odd shapes (partial
    /// tiles, panels and `k` quads) and the model's shapes; and the quantized product is close
    /// to the f32 one.
    #[test]
    fn every_kernel_matches_the_scalar_reference_exactly() {
        let mut seed = 3;
        let shapes = [
            (1, 1, 1),
            (5, 3, 7),
            (7, 17, 33),
            (13, 40, 19),
            (48, 64, 256),
            (49, 256, 1024),
        ];
        for isa in Isa::all_supported() {
            for &(m, n, k) in &shapes {
                let a = rand_vec(m * k, &mut seed);
                let w = rand_vec(n * k, &mut seed);
                let b = rand_vec(n, &mut seed);
                let packed = PackedQ8::quantize(&w, Some(&b), n, k, isa);
                let kp = packed.k_padded();
                let mut qa = vec![0i8; m * kp];
                let mut sa = vec![0f32; m];
                quantize_activations(&packed, &a, m, &mut qa, &mut sa);
                let mut got = vec![f32::NAN; m * n];
                qgemm(&packed, &qa, &sa, m, &mut got, false);
                let want = reference(&packed, &a, m);
                for (i, (g, r)) in got.iter().zip(&want).enumerate() {
                    // The same integer sum; only the f32 scaling may round differently.
                    assert!(
                        (g - r).abs() <= 1e-6 * r.abs().max(1.0),
                        "{isa:?} {m}x{n}x{k} [{i}]: {g} vs {r}"
                    );
                }
                let mut acc = vec![2.0f32; m * n];
                qgemm(&packed, &qa, &sa, m, &mut acc, true);
                for (g, r) in acc.iter().zip(&want) {
                    assert!(
                        (g - 2.0 - r).abs() <= 1e-5 * r.abs().max(1.0),
                        "{isa:?} accumulate"
                    );
                }
                // Against f32: int8 rounding, about 1 % of the output's spread.
                let exact = super::super::gemm::gemm_reference(&a, m, &w, &b, n, k);
                let err = got
                    .iter()
                    .zip(&exact)
                    .map(|(g, e)| (g - e).abs())
                    .fold(0f32, f32::max);
                let spread = (k as f32 / 9.0).sqrt(); // std of a sum of k products of U(-1,1)
                assert!(
                    err < 0.03 * spread + 1e-3,
                    "{isa:?} {m}x{n}x{k}: int8 error {err}"
                );
            }
        }
    }

    #[test]
    fn an_all_zero_row_quantizes_to_zero_with_a_finite_scale() {
        let mut q = [5i8; 4];
        let s = quantize_row(&[0.0; 4], &mut q);
        assert_eq!(q, [0; 4]);
        assert_eq!(s, 1.0);
    }
}
