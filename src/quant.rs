//! Int8 weight quantization: symmetric, one scale per output row. What a checkpoint stores for
//! `WeightQuant::Q8` (`model::checkpoint`) and what the engine packs for its int8 GEMM
//! (`engine::qgemm`), so it sits below both: the model's file format does not depend on the
//! engine's kernels (issue 16, item 10).
//!
//! Weights are quantized once, off the hot path, so this is plain scalar code; the engine's
//! SIMD quantizer for activations (`engine::qgemm::quantize_row`) uses the same arithmetic
//! (the same maximum, the same scale and reciprocal, round half to even) and gives the same
//! bytes, which a test below checks.

/// Symmetric per-row quantization of `w` (`[n, k]`, row-major): values in -127..=127 and one
/// scale per row (`w ~ q * scale`); an all-zero (or non-finite) row gets scale 1.
pub fn quantize_weights(w: &[f32], n: usize, k: usize) -> (Vec<i8>, Vec<f32>) {
    let mut q = vec![0i8; n * k];
    let mut scales = vec![0f32; n];
    for (r, (row, out)) in w
        .chunks_exact(k.max(1))
        .zip(q.chunks_exact_mut(k.max(1)))
        .enumerate()
        .take(n)
    {
        scales[r] = quantize_row(row, out);
    }
    (q, scales)
}

/// One row to int8 (-127..=127, round half to even); returns its scale.
fn quantize_row(x: &[f32], q: &mut [i8]) -> f32 {
    // A NaN is skipped by the maximum (as the engine's `max_abs` skips it).
    let amax = x
        .iter()
        .fold(0f32, |m, v| if v.abs() > m { v.abs() } else { m });
    let scale = if amax > 0.0 && amax.is_finite() {
        amax / 127.0
    } else {
        1.0
    };
    let inv = 1.0 / scale;
    for (o, &v) in q.iter_mut().zip(x) {
        let y = (v * inv).clamp(-127.0, 127.0);
        *o = y.round_ties_even() as i8;
    }
    scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_quantize_symmetrically_with_ties_to_even() {
        // Row 0: max 127 -> scale 1, so values round as they are: 0.5 -> 0, 1.5 -> 2, -2.5 -> -2.
        let w = [127.0, 0.5, 1.5, -2.5, 0.0, 0.0, 0.0, 0.0];
        let (q, s) = quantize_weights(&w, 2, 4);
        assert_eq!(s, vec![1.0, 1.0]);
        assert_eq!(q, vec![127, 0, 2, -2, 0, 0, 0, 0]);
        let (q, s) = quantize_weights(&[-0.5, 0.25, 0.125, 0.0], 1, 4);
        assert_eq!(s, vec![0.5 / 127.0]);
        assert_eq!(q, vec![-127, 64, 32, 0]);
    }

    #[test]
    fn the_engine_quantizes_to_the_same_bytes() {
        let mut s = 99u32;
        let mut w: Vec<f32> = (0..37 * 61)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((s >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 3.0
            })
            .collect();
        // A row of zeros and a row with exact half-steps.
        w[61..122].iter_mut().for_each(|v| *v = 0.0);
        for (i, v) in w[122..183].iter_mut().enumerate() {
            *v = (i as f32 - 30.0) * 0.5;
        }
        let (q, scales) = quantize_weights(&w, 37, 61);
        for r in 0..37 {
            let mut e = vec![0i8; 61];
            let scale = crate::engine::qgemm::quantize_row(&w[r * 61..(r + 1) * 61], &mut e);
            assert_eq!(scale, scales[r], "row {r}");
            assert_eq!(&q[r * 61..(r + 1) * 61], &e[..], "row {r}");
        }
    }
}
