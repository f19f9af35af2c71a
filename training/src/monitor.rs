//! Collapse watch: effective rank (RankMe) and spread of embeddings, no labels needed.
//!
//! RankMe (Garrido et al., 2023): with singular values `s_k` of the embedding matrix,
//! `p_k = s_k / sum(s) + eps`, rank = `exp(-sum p_k ln p_k)`. A collapsing JEPA drives it (and
//! the spread of the embeddings) down.

use nalgebra::DMatrix;
use serde::Serialize;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct CollapseStats {
    /// RankMe of the token embeddings of the fixed batch (`[clips * patches, D]`).
    pub rank_tokens: f64,
    /// RankMe of the clip embeddings (tokens averaged per clip, `[clips, D]`).
    pub rank_pooled: f64,
    /// Mean over dimensions of the standard deviation over tokens.
    pub spread: f64,
}

/// RankMe of the rows of `x` (`n x d`, row-major).
pub fn rankme(x: &[f32], n: usize, d: usize) -> f64 {
    if n == 0 || d == 0 {
        return 0.0;
    }
    // Singular values from the eigenvalues of the smaller Gram matrix (f64).
    let m = DMatrix::from_row_slice(n, d, &x.iter().map(|&v| v as f64).collect::<Vec<_>>());
    let gram = if n <= d {
        &m * m.transpose()
    } else {
        m.transpose() * &m
    };
    let eig = gram.symmetric_eigenvalues();
    let s: Vec<f64> = eig.iter().map(|&l| l.max(0.0).sqrt()).collect();
    let total: f64 = s.iter().sum();
    if total <= 0.0 {
        return 0.0;
    }
    let eps = 1e-7;
    let h: f64 = s
        .iter()
        .map(|&v| {
            let p = v / total + eps;
            -p * p.ln()
        })
        .sum();
    h.exp()
}

/// Statistics of embeddings `[clips][tokens][d]`.
pub fn collapse_stats(x: &[f32], clips: usize, tokens: usize, d: usize) -> CollapseStats {
    let n = clips * tokens;
    let mut pooled = vec![0.0f32; clips * d];
    for c in 0..clips {
        for t in 0..tokens {
            for k in 0..d {
                pooled[c * d + k] += x[(c * tokens + t) * d + k] / tokens as f32;
            }
        }
    }
    let mut spread = 0.0;
    for k in 0..d {
        let mean: f64 = (0..n).map(|i| x[i * d + k] as f64).sum::<f64>() / n as f64;
        let var: f64 = (0..n)
            .map(|i| (x[i * d + k] as f64 - mean).powi(2))
            .sum::<f64>()
            / n as f64;
        spread += var.sqrt();
    }
    CollapseStats {
        rank_tokens: rankme(x, n, d),
        rank_pooled: rankme(&pooled, clips, d),
        spread: spread / d as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_of_known_matrices() {
        // Identity 4x4: four equal singular values, rank 4 (up to eps).
        let mut eye = vec![0.0f32; 16];
        for i in 0..4 {
            eye[i * 5] = 1.0;
        }
        assert!((rankme(&eye, 4, 4) - 4.0).abs() < 1e-4);
        // Rank one: every row the same.
        let ones = vec![1.0f32; 6 * 3];
        assert!((rankme(&ones, 6, 3) - 1.0).abs() < 1e-4);
        // Collapsed embeddings have zero spread.
        let s = collapse_stats(&ones, 2, 3, 3);
        assert_eq!(s.spread, 0.0);
    }
}
