//! Fixed 2D sine-cosine position embeddings on a rectangular frequency x time grid.
//!
//! I-JEPA's `get_2d_sincos_pos_embed` (src/models/vision_transformer.py, after MAE): half of the
//! width encodes one grid coordinate, half the other; each half is `[sin(p w_i), cos(p w_i)]`
//! with `w_i = 1 / 10000^(i / (D/4))`. I-JEPA's square grid becomes A-JEPA's rectangle, so any
//! number of time columns works without retraining. The first half encodes the frequency row
//! (I-JEPA's `grid[0]`, the height), the second the time column. Patches are numbered
//! time-major (`index = col * n_freq + row`), as in [`crate::frontend::patches`].

/// `[n_freq * n_time][dim]` embeddings, row-major, in patch-index order. `dim % 4 == 0`.
pub fn sincos_2d(n_freq: usize, n_time: usize, dim: usize) -> Vec<f32> {
    let quarter = dim / 4;
    let omega: Vec<f64> = (0..quarter)
        .map(|i| 1.0 / 10_000f64.powf(i as f64 / quarter as f64))
        .collect();
    let mut out = vec![0.0f32; n_freq * n_time * dim];
    for col in 0..n_time {
        for row in 0..n_freq {
            let e = &mut out[(col * n_freq + row) * dim..][..dim];
            for (axis, pos) in [(0, row as f64), (1, col as f64)] {
                let half = &mut e[axis * 2 * quarter..(axis + 1) * 2 * quarter];
                for (i, w) in omega.iter().enumerate() {
                    half[i] = (pos * w).sin() as f32;
                    half[quarter + i] = (pos * w).cos() as f32;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_values() {
        let e = sincos_2d(2, 3, 8);
        // Patch 0 = (row 0, col 0): sin 0 = 0, cos 0 = 1 in both halves.
        assert_eq!(&e[..8], &[0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]);
        // Patch 5 = (row 1, col 2); quarter = 2, omegas 1 and 1/100.
        let p = &e[5 * 8..6 * 8];
        let expect = [
            1f64.sin(),
            0.01f64.sin(),
            1f64.cos(),
            0.01f64.cos(),
            2f64.sin(),
            0.02f64.sin(),
            2f64.cos(),
            0.02f64.cos(),
        ];
        for (a, b) in p.iter().zip(expect) {
            assert_eq!(*a, b as f32);
        }
    }

    #[test]
    fn a_longer_grid_extends_a_shorter_one() {
        // Streaming appends time columns: the embeddings of the first columns do not change.
        let short = sincos_2d(8, 4, 64);
        let long = sincos_2d(8, 10, 64);
        assert_eq!(&long[..short.len()], &short[..]);
    }
}
