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

/// Filters are computed [`LANES`] at a time.
pub const LANES: usize = 8;
/// Independent accumulators per group (bins consumed per step), to hide the add latency.
const UNROLL: usize = 4;

/// One group of [`LANES`] neighbouring filters: a dense band of the filterbank matrix.
#[derive(Debug, Clone)]
struct Group {
    /// First FFT bin any filter of the group touches.
    start: usize,
    /// Bins in the band, a multiple of [`UNROLL`].
    len: usize,
    /// Where the band's `len x LANES` weights (bin-major) begin in `dense`.
    offset: usize,
}

#[derive(Debug, Clone)]
pub struct MelFilterbank {
    /// First FFT bin of each filter's non-zero run.
    starts: Vec<usize>,
    /// `offsets[m] .. offsets[m + 1]` indexes `weights` for filter `m`.
    offsets: Vec<usize>,
    weights: Vec<f32>,
    /// The same weights as dense bands of [`LANES`] filters: for each bin of a band, the
    /// weights of its filters side by side. Each step is then one vector multiply-add of a
    /// broadcast power bin with [`LANES`] weights, and no horizontal sum is needed; a sparse
    /// dot product per filter spent most of its time reducing lanes of one- to three-bin filters.
    groups: Vec<Group>,
    dense: Vec<f32>,
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
                    weights.extend((s..end).map(|k| w(bin_mels[k]) as f32));
                }
                None => starts.push(0),
            }
            offsets.push(weights.len());
        }
        let mut fb = Self {
            starts,
            offsets,
            weights,
            groups: Vec::new(),
            dense: Vec::new(),
            span: num_fft_bins,
        };
        fb.build_bands();
        fb
    }

    fn build_bands(&mut self) {
        let n = self.n_mels();
        for g0 in (0..n).step_by(LANES) {
            let members = g0..(g0 + LANES).min(n);
            let nonempty = members.clone().filter(|&m| !self.filter(m).1.is_empty());
            let start = nonempty.clone().map(|m| self.starts[m]).min().unwrap_or(0);
            let end = nonempty
                .map(|m| self.starts[m] + self.filter(m).1.len())
                .max()
                .unwrap_or(0);
            let len = end.saturating_sub(start).div_ceil(UNROLL) * UNROLL;
            let offset = self.dense.len();
            self.dense.resize(offset + len * LANES, 0.0);
            for m in members {
                let s = self.starts[m];
                let w = &self.weights[self.offsets[m]..self.offsets[m + 1]];
                for (i, &wi) in w.iter().enumerate() {
                    self.dense[offset + (s + i - start) * LANES + (m - g0)] = wi;
                }
            }
            self.span = self.span.max(start + len);
            self.groups.push(Group { start, len, offset });
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
        self.weights.len()
    }

    /// Non-zero weights of filter `m` and the FFT bin they start at.
    pub fn filter(&self, m: usize) -> (usize, &[f32]) {
        (
            self.starts[m],
            &self.weights[self.offsets[m]..self.offsets[m + 1]],
        )
    }

    /// `out[m] = sum_k power[k] * W[m, k]`; `power` holds at least [`MelFilterbank::span`]
    /// bins, the ones past the spectrum set to zero (they meet only zero weights).
    #[inline(always)]
    pub fn apply(&self, power: &[f32], out: &mut [f32]) {
        let n = self.n_mels().min(out.len());
        for (g, grp) in self.groups.iter().enumerate() {
            let p = &power[grp.start..grp.start + grp.len];
            let w = &self.dense[grp.offset..grp.offset + grp.len * LANES];
            let mut acc = [[0.0f32; LANES]; UNROLL];
            for (pk, wk) in p.chunks_exact(UNROLL).zip(w.chunks_exact(UNROLL * LANES)) {
                for (j, a) in acc.iter_mut().enumerate() {
                    for i in 0..LANES {
                        a[i] += pk[j] * wk[j * LANES + i];
                    }
                }
            }
            let base = g * LANES;
            for i in 0..LANES.min(n - base) {
                out[base + i] = (acc[0][i] + acc[1][i]) + (acc[2][i] + acc[3][i]);
            }
        }
    }
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
    fn apply_matches_a_dense_product() {
        for n_mels in [128usize, 80, 23, 1] {
            let fb = MelFilterbank::new(n_mels, 512, 16_000.0, 20.0, 8_000.0);
            let mut power = vec![0.0f32; fb.span()];
            for (k, p) in power.iter_mut().take(257).enumerate() {
                *p = 1.0 + (k as f32 * 0.37).sin().abs() * 100.0;
            }
            let mut out = vec![0.0; n_mels];
            fb.apply(&power, &mut out);
            for (m, &o) in out.iter().enumerate() {
                let (s, w) = fb.filter(m);
                let dense: f64 = w
                    .iter()
                    .enumerate()
                    .map(|(i, &wi)| wi as f64 * power[s + i] as f64)
                    .sum();
                let tol = 1e-6 * dense.max(1.0);
                assert!((o as f64 - dense).abs() <= tol, "{n_mels} mels, filter {m}");
            }
        }
    }
}
