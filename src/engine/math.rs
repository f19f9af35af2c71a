//! Element-wise and row-wise functions of the encoder, written branch-free over slices so the
//! compiler vectorises them (no libm call per element: `f32::exp`, `floor` and `round` are
//! scalar calls on the x86-64 baseline and would cost more than the matrix products at this
//! size). Each public function takes the [`Isa`] and runs its body compiled for AVX2+FMA when
//! the CPU has it (the baseline build only assumes SSE2).

/// `x + MAGIC - MAGIC` rounds to the nearest integer (ties to even) for `|x| < 2^22`, in any
/// vector width, with no rounding instruction: 1.5 x 2^23 leaves no fraction bits.
const MAGIC: f32 = 12_582_912.0;

/// Defines `fn NAME(isa: Isa, ARGS)` whose body is compiled three times, for AVX-512, for
/// AVX2+FMA and for the baseline, and run in the best form `isa` allows: the same Rust, so
/// the compiler's vectorisation does the work and every form computes the same function.
macro_rules! simd_fn {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name(isa: $crate::engine::Isa, $($arg: $ty),*) {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn v512($($arg: $ty),*) { body($($arg),*) }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn v256($($arg: $ty),*) { body($($arg),*) }
            #[cfg(target_arch = "x86_64")]
            {
                // SAFETY: the level was detected at run time (`Isa::detect`).
                if isa.has_avx512() {
                    return unsafe { v512($($arg),*) };
                }
                if isa.has_avx2() {
                    return unsafe { v256($($arg),*) };
                }
            }
            let _ = isa;
            body($($arg),*)
        }
    };
}
pub(crate) use simd_fn;

/// `e^x` to about 2 ulp for `x` in [-87, 88] (Cephes `expf`: `2^n e^r`, `|r| <= ln2 / 2`, a
/// degree-6 polynomial for `e^r`); saturates outside.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = if x < -87.0 { -87.0 } else { x };
    let x = if x > 88.0 { 88.0 } else { x };
    let t = x * LOG2E + MAGIC;
    let n = t - MAGIC;
    // The rounded value's integer sits in the low mantissa bits of `t`.
    let ni = t.to_bits() as i32 - MAGIC.to_bits() as i32;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5e-1;
    let er = p * r * r + r + 1.0;
    er * f32::from_bits(((ni + 127) as u32) << 23)
}

/// `erf(x)` to 1.5e-7 absolute (Abramowitz & Stegun 7.1.26).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp(-a * a);
    y.copysign(x)
}

/// Round to nearest, ties to even, for `|x| < 2^22` (see [`MAGIC`]).
#[inline(always)]
pub fn round(x: f32) -> f32 {
    (x + MAGIC) - MAGIC
}

simd_fn! {
    /// GELU with the exact erf (PyTorch's `nn.GELU()` default), in place.
    pub fn gelu(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

simd_fn! {
    /// Layer norm of each `w.len()`-long row of `x` into `out`, with scale `w` and shift `b`.
    pub fn layer_norm(x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let mean = sum(xr) / d as f32;
        let mut var = [0f32; 8];
        for c in xr.chunks(8) {
            for (v, &e) in var.iter_mut().zip(c) {
                *v += (e - mean) * (e - mean);
            }
        }
        let rstd = 1.0 / (var.iter().sum::<f32>() / d as f32 + eps).sqrt();
        for (((o, &e), &wv), &bv) in or.iter_mut().zip(xr).zip(w).zip(b) {
            *o = (e - mean) * rstd * wv + bv;
        }
    }
}
}

/// Sum with eight partial sums (vectorisable; floating-point addition is not reassociated by
/// the compiler on its own).
#[inline(always)]
pub fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// Dot product with sixteen partial sums.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let mut ca = a.chunks_exact(16);
    let mut cb = b.chunks_exact(16);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for j in 0..16 {
            acc[j] += x[j] * y[j];
        }
    }
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

/// Largest value (comparisons, not `f32::max`, so the compiler can vectorise; NaN-free input).
#[inline(always)]
pub fn max(x: &[f32]) -> f32 {
    let mut m8 = [f32::NEG_INFINITY; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (m, &v) in m8.iter_mut().zip(c) {
            *m = if v > *m { v } else { *m };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &v in m8.iter().chain(chunks.remainder()) {
        m = if v > m { v } else { m };
    }
    m
}

/// Largest absolute value (as [`max`]).
#[inline(always)]
pub fn max_abs(x: &[f32]) -> f32 {
    let mut m8 = [0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (m, &v) in m8.iter_mut().zip(c) {
            let a = v.abs();
            *m = if a > *m { a } else { *m };
        }
    }
    let mut m = 0f32;
    for &v in m8.iter().chain(chunks.remainder()) {
        let a = v.abs();
        m = if a > m { a } else { m };
    }
    m
}

/// Cosine similarity of two vectors (0 when either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb).max(f32::MIN_POSITIVE)
}

/// Softmax of one row, in place (inlined into its caller's instruction set).
#[inline(always)]
pub fn softmax(x: &mut [f32]) {
    let max = max(x);
    for v in x.iter_mut() {
        *v = exp(*v - max);
    }
    let inv = 1.0 / sum(x);
    x.iter_mut().for_each(|v| *v *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Isa;

    /// erf in f64 by its Taylor series (exact to ~1e-12 for |x| <= 4 in f64).
    fn erf64(x: f64) -> f64 {
        let mut term = x;
        let mut s = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            s += term / (2 * n + 1) as f64;
        }
        s * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn exp_and_erf_are_accurate() {
        let mut worst_exp = 0f64;
        let mut worst_erf = 0f64;
        for i in -8000..=8000 {
            let x = i as f32 * 0.01;
            let e = exp(x) as f64;
            let r = (x as f64).exp();
            worst_exp = worst_exp.max(((e - r) / r).abs());
            if x.abs() <= 4.0 {
                worst_erf = worst_erf.max((erf(x) as f64 - erf64(x as f64)).abs());
            }
        }
        assert!(worst_exp < 5e-7, "exp relative error {worst_exp}");
        assert!(worst_erf < 3e-7, "erf absolute error {worst_erf}");
        assert_eq!(erf(10.0), 1.0);
        assert_eq!(erf(-10.0), -1.0);
        assert_eq!(exp(-200.0), exp(-87.0));
        for (x, r) in [
            (2.5f32, 2.0f32),
            (3.5, 4.0),
            (-2.5, -2.0),
            (-0.4, 0.0),
            (126.6, 127.0),
        ] {
            assert_eq!(round(x), r, "round({x})");
        }
    }

    #[test]
    fn gelu_matches_candle() {
        let xs: Vec<f32> = (-600..600).map(|i| i as f32 * 0.01).collect();
        let t = candle_core::Tensor::new(xs.as_slice(), &candle_core::Device::Cpu).unwrap();
        let want: Vec<f32> = t.gelu_erf().unwrap().to_vec1().unwrap();
        let mut got = xs.clone();
        for isa in Isa::all_supported() {
            let mut g = xs.clone();
            gelu(isa, &mut g);
            got = g;
            for ((g, w), x) in got.iter().zip(&want).zip(&xs) {
                assert!(
                    (g - w).abs() <= 1e-6 * x.abs().max(1.0),
                    "{isa:?} gelu({x}): {g} vs {w}"
                );
            }
        }
        for ((g, w), x) in got.iter().zip(&want).zip(&xs) {
            assert!(
                (g - w).abs() <= 1e-6 * x.abs().max(1.0),
                "gelu({x}): {g} vs {w}"
            );
        }
    }

    #[test]
    fn softmax_and_layer_norm_are_right() {
        let mut x = [1.0f32, 2.0, 3.0, -1.0];
        softmax(&mut x);
        let z: f64 = [1f64, 2.0, 3.0, -1.0].iter().map(|v| v.exp()).sum();
        for (g, v) in x.iter().zip([1f64, 2.0, 3.0, -1.0]) {
            assert!((*g as f64 - v.exp() / z).abs() < 1e-7);
        }
        let x: Vec<f32> = (0..20).map(|i| (i * i) as f32 * 0.1).collect();
        let w = vec![2.0f32; 10];
        let b = vec![0.5f32; 10];
        let mut out = vec![0f32; 20];
        layer_norm(Isa::detect(), &x, &w, &b, 1e-6, &mut out);
        for row in out.chunks(10) {
            let m = row.iter().sum::<f32>() / 10.0;
            let v = row.iter().map(|y| (y - m) * (y - m)).sum::<f32>() / 10.0;
            assert!((m - 0.5).abs() < 1e-5 && (v - 4.0).abs() < 1e-3, "{m} {v}");
        }
    }
}
