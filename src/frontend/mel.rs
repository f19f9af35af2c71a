//! Kaldi's triangular mel filterbank, stored sparsely.
//!
//! Follows `get_mel_banks` in torchaudio/compliance/kaldi.py (itself Kaldi's `MelBanks`): mel scale
//! `1127 ln(1 + f / 700)`, `n_mels` triangles equally spaced in mel between `f_min` and `f_max`,
//! evaluated at the centre frequency of FFT bins `0 .. n_fft / 2` (the Nyquist bin gets weight 0),
//! no area normalisation. Each triangle is non-zero on one contiguous run of FFT bins, so a frame
//! costs about two multiply-adds per FFT bin instead of a dense `n_mels x (n_fft/2 + 1)` product.

/// Kaldi's mel scale.
pub fn hz_to_mel(hz: f64) -> f64 {
    1127.0 * (1.0 + hz / 700.0).ln()
}

/// Filters are padded with zero weights to a multiple of this many bins, so that [`apply`]
/// runs whole 8-lane blocks with no scalar tail (most low filters span only one to three bins,
/// and a branchy tail per filter cost more than the padded multiply-adds).
///
/// [`apply`]: MelFilterbank::apply
pub const LANES: usize = 8;

#[derive(Debug, Clone)]
pub struct MelFilterbank {
    /// First FFT bin of each filter's non-zero run.
    starts: Vec<usize>,
    /// `offsets[m] .. offsets[m + 1]` indexes `weights` for filter `m`, padded to [`LANES`].
    offsets: Vec<usize>,
    /// Number of non-zero weights of filter `m` (before padding).
    lens: Vec<usize>,
    weights: Vec<f32>,
    /// Bins the power spectrum must hold for [`MelFilterbank::apply`] (padding included).
    span: usize,
}

impl MelFilterbank {
    /// Builds the filterbank for an `n_fft`-point FFT at `sample_rate`.
    /// The caller validates `0 <= f_min < f_max <= sample_rate / 2` and `n_mels >= 1`.
    pub fn new(n_mels: usize, n_fft: usize, sample_rate: f64, f_min: f64, f_max: f64) -> Self {
        let num_fft_bins = n_fft / 2;
        let fft_bin_width = sample_rate / n_fft as f64;
        let mel_low = hz_to_mel(f_min);
        let mel_high = hz_to_mel(f_max);
        let delta = (mel_high - mel_low) / (n_mels as f64 + 1.0);
        let bin_mels: Vec<f64> = (0..num_fft_bins)
            .map(|k| hz_to_mel(fft_bin_width * k as f64))
            .collect();
        let mut starts = Vec::with_capacity(n_mels);
        let mut lens = Vec::with_capacity(n_mels);
        let mut span = 0;
        let mut offsets = Vec::with_capacity(n_mels + 1);
        let mut weights = Vec::new();
        offsets.push(0);
        for m in 0..n_mels {
            let left = mel_low + m as f64 * delta;
            let center = mel_low + (m as f64 + 1.0) * delta;
            let right = mel_low + (m as f64 + 2.0) * delta;
            let w = |mel: f64| {
                let up = (mel - left) / (center - left);
                let down = (right - mel) / (right - center);
                up.min(down).max(0.0)
            };
            // The run of non-zero weights; an empty filter (narrower than one FFT bin, as mel
            // bin 3 is at the default settings) keeps an empty run and always yields the floor.
            let first = bin_mels.iter().position(|&mel| w(mel) > 0.0);
            match first {
                Some(s) => {
                    let end = (s..num_fft_bins)
                        .find(|&k| w(bin_mels[k]) <= 0.0)
                        .unwrap_or(num_fft_bins);
                    starts.push(s);
                    lens.push(end - s);
                    weights.extend((s..end).map(|k| w(bin_mels[k]) as f32));
                    let padded = (end - s).div_ceil(LANES) * LANES;
                    weights.resize(weights.len() + padded - (end - s), 0.0);
                    span = span.max(s + padded);
                }
                None => {
                    starts.push(0);
                    lens.push(0);
                }
            }
            offsets.push(weights.len());
        }
        Self {
            starts,
            offsets,
            lens,
            weights,
            span,
        }
    }

    /// How many power-spectrum bins [`MelFilterbank::apply`] reads (at least `n_fft / 2`;
    /// bins past the spectrum only meet zero weights, so the caller keeps them at zero).
    pub fn span(&self) -> usize {
        self.span
    }

    pub fn n_mels(&self) -> usize {
        self.starts.len()
    }

    /// Number of non-zero weights.
    pub fn nnz(&self) -> usize {
        self.lens.iter().sum()
    }

    /// Non-zero weights of filter `m` and the FFT bin they start at.
    pub fn filter(&self, m: usize) -> (usize, &[f32]) {
        let o = self.offsets[m];
        (self.starts[m], &self.weights[o..o + self.lens[m]])
    }

    /// `out[m] = sum_k power[k] * W[m, k]`; `power` holds at least [`MelFilterbank::span`]
    /// bins, the ones past the spectrum set to zero.
    #[inline(always)]
    pub fn apply(&self, power: &[f32], out: &mut [f32]) {
        for (m, o) in out.iter_mut().enumerate().take(self.n_mels()) {
            let s = self.starts[m];
            let w = &self.weights[self.offsets[m]..self.offsets[m + 1]];
            *o = dot(&power[s..s + w.len()], w);
        }
    }
}

/// Dot product with eight independent accumulators so the compiler can vectorise it.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut tail = 0.0;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += x * y;
    }
    (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]) + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_filterbank_shape() {
        let fb = MelFilterbank::new(128, 512, 16_000.0, 20.0, 8_000.0);
        assert_eq!(fb.n_mels(), 128);
        // Bin 3 is empty at these settings (see the fixtures' README).
        assert!(fb.filter(3).1.is_empty());
        // Every triangle peaks below 1 and covers contiguous bins; neighbours overlap by design,
        // so each FFT bin feeds at most two filters.
        assert!(fb.nnz() <= 2 * 256);
        for m in 0..128 {
            let (s, w) = fb.filter(m);
            assert!(w.iter().all(|&x| x > 0.0 && x <= 1.0), "filter {m}");
            assert!(s + w.len() <= 256);
        }
        // The last filter's right edge is 8 kHz: it never reaches the Nyquist bin.
        let (s, w) = fb.filter(127);
        assert!(s + w.len() <= 256);
    }

    #[test]
    fn filter_weights_match_the_triangle_formula() {
        // Filter 40 evaluated by hand at each FFT bin.
        let fb = MelFilterbank::new(128, 512, 16_000.0, 20.0, 8_000.0);
        let (lo, hi) = (hz_to_mel(20.0), hz_to_mel(8_000.0));
        let d = (hi - lo) / 129.0;
        let (l, c, r) = (lo + 40.0 * d, lo + 41.0 * d, lo + 42.0 * d);
        let (s, w) = fb.filter(40);
        for k in 0..256 {
            let mel = hz_to_mel(31.25 * k as f64);
            let expect = ((mel - l) / (c - l)).min((r - mel) / (r - c)).max(0.0) as f32;
            let got = if k >= s && k < s + w.len() {
                w[k - s]
            } else {
                0.0
            };
            assert_eq!(got, expect, "bin {k}");
        }
    }

    #[test]
    fn dot_matches_naive_sum_for_odd_lengths() {
        for n in [0usize, 1, 7, 8, 9, 23] {
            let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
            let b: Vec<f32> = (0..n).map(|i| 1.0 - i as f32 * 0.25).collect();
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - naive).abs() <= 1e-4 * naive.abs().max(1.0));
        }
    }
}
