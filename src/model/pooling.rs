//! How a window's tokens become the one vector a tagging head scores.
//!
//! The encoder's tokens are time-major (`col * n_freq + row`, the patch order of
//! `frontend::patches`). `Mean` averages every token (`[D]`); `FreqCat` keeps the frequency axis:
//! per time column the `n_freq` tokens side by side, then the mean over columns (`[n_freq * D]`),
//! the pooling M2D and EVAR probe with. On the default encoder it is worth +6.5 points on the
//! ESC-50 fold-4 probe and +4 to +19 points on the five-shot job of `scripts/fewshot_esc50.py`
//! (docs/runs/default-v4), because where in the spectrum a sound sits is lost in the mean.

use candle_core::Tensor;

/// A head's pooling, recorded in the head file (`pool` in its metadata; a head written before
/// heads recorded it is `Mean`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pooling {
    /// The mean of every token: `[D]`.
    #[default]
    Mean,
    /// Per time column the frequency tokens concatenated, then the mean over columns:
    /// `[n_freq * D]`.
    FreqCat,
}

impl Pooling {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mean => "mean",
            Self::FreqCat => "freqcat",
        }
    }

    /// The width of the pooled vector for `d`-wide tokens on `n_freq` frequency rows.
    pub fn dim(self, d: usize, n_freq: usize) -> usize {
        match self {
            Self::Mean => d,
            Self::FreqCat => n_freq * d,
        }
    }

    /// Pools `tokens` (`[n, d]`, time-major, `n` a multiple of `n_freq`) into `out`, which must be
    /// `self.dim(d, n_freq)` long. Allocates nothing: the live worker calls it on every hop.
    pub fn pool_into(self, tokens: &[f32], d: usize, n_freq: usize, out: &mut [f32]) {
        debug_assert_eq!(out.len(), self.dim(d, n_freq));
        out.fill(0.0);
        let (step, rows) = match self {
            Self::Mean => (d, tokens.len() / d.max(1)),
            Self::FreqCat => (n_freq * d, tokens.len() / (n_freq * d).max(1)),
        };
        if rows == 0 {
            return;
        }
        for row in tokens.chunks_exact(step) {
            for (o, v) in out.iter_mut().zip(row) {
                *o += v;
            }
        }
        let inv = 1.0 / rows as f32;
        out.iter_mut().for_each(|o| *o *= inv);
    }

    /// The same pooling on a batch of token tensors `[b, n, d]` (for training): `[b, dim]`.
    pub fn pool_tensor(self, tokens: &Tensor, n_freq: usize) -> candle_core::Result<Tensor> {
        match self {
            Self::Mean => tokens.mean(1),
            Self::FreqCat => {
                let (b, n, d) = tokens.dims3()?;
                if n % n_freq != 0 {
                    candle_core::bail!("{n} tokens are not whole columns of {n_freq}");
                }
                tokens.reshape((b, n / n_freq, n_freq * d))?.mean(1)
            }
        }
    }
}

impl std::str::FromStr for Pooling {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "mean" => Ok(Self::Mean),
            "freqcat" => Ok(Self::FreqCat),
            other => Err(format!("unknown pooling `{other}` (mean or freqcat)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    // 2 frequency rows x 2 time columns of 2-d tokens, time-major: (c0 r0), (c0 r1), (c1 r0),
    // (c1 r1).
    const T: [f32; 8] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 0.0];

    #[test]
    fn exact_values() {
        let mut m = [0f32; 2];
        Pooling::Mean.pool_into(&T, 2, 2, &mut m);
        assert_eq!(m, [4.0, 3.0]);
        // Per column [r0 | r1] = [1 2 3 4] and [5 6 7 0], then the mean over columns.
        let mut f = [9f32; 4];
        Pooling::FreqCat.pool_into(&T, 2, 2, &mut f);
        assert_eq!(f, [3.0, 4.0, 5.0, 2.0]);
        assert_eq!(Pooling::FreqCat.dim(192, 8), 1536);
        assert_eq!("freqcat".parse::<Pooling>(), Ok(Pooling::FreqCat));
        assert!("max".parse::<Pooling>().is_err());
    }

    #[test]
    fn tensor_pooling_matches_the_slice_pooling() {
        let t = Tensor::from_slice(&T, (1, 4, 2), &Device::Cpu).unwrap();
        for (p, want) in [
            (Pooling::Mean, vec![4.0, 3.0]),
            (Pooling::FreqCat, vec![3.0, 4.0, 5.0, 2.0]),
        ] {
            let got: Vec<f32> = p
                .pool_tensor(&t, 2)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(got, want);
        }
        assert!(Pooling::FreqCat.pool_tensor(&t, 3).is_err());
    }
}
