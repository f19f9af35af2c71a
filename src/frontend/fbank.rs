//! One frame of Kaldi-compatible log-mel filterbank energies.
//!
//! The order of operations is Kaldi's (`FeatureWindowFunction` / `ProcessWindow` in
//! kaldi/src/feat/feature-window.cc, mirrored by `_get_window` in torchaudio/compliance/kaldi.py):
//! remove the frame's DC offset, pre-emphasise inside the frame with the first sample repeated
//! (`x[j] -= p * x[max(0, j - 1)]`), multiply by the window, zero-pad to the FFT size, take the
//! power spectrum, apply the mel filterbank and take `ln(max(energy, floor))`.
//!
//! Both the offline and the streaming front end call [`FbankKernel::compute`] on the same samples,
//! which is why they agree bit for bit however the stream is chunked.

use std::sync::Arc;

use realfft::{num_complex::Complex, RealFftPlanner, RealToComplex};

use super::mel::MelFilterbank;
use crate::config::{FrontendConfig, WindowKind};

/// Owns the window, the FFT plan, the filterbank and every scratch buffer, so that computing a
/// frame allocates nothing.
pub struct FbankKernel {
    frame_len: usize,
    preemphasis: f32,
    remove_dc: bool,
    log_floor: f32,
    window: Vec<f32>,
    fft: Arc<dyn RealToComplex<f32>>,
    fft_in: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
    fft_scratch: Vec<Complex<f32>>,
    power: Vec<f32>,
    mel: MelFilterbank,
    /// The CPU runs AVX2 + FMA: [`FbankKernel::compute`] takes the 256-bit build of the same code.
    #[cfg(target_arch = "x86_64")]
    avx2: bool,
}

impl std::fmt::Debug for FbankKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FbankKernel")
            .field("frame_len", &self.frame_len)
            .field("n_fft", &self.fft_in.len())
            .field("n_mels", &self.mel.n_mels())
            .finish()
    }
}

/// The analysis window, computed in f64 as Kaldi does (symmetric: denominator `N - 1`).
pub fn window(kind: WindowKind, len: usize) -> Vec<f32> {
    let denom = (len - 1) as f64;
    (0..len)
        .map(|n| {
            let c = (2.0 * std::f64::consts::PI * n as f64 / denom).cos();
            let w = match kind {
                WindowKind::Hanning => 0.5 - 0.5 * c,
                WindowKind::Hamming => 0.54 - 0.46 * c,
                WindowKind::Povey => (0.5 - 0.5 * c).powf(0.85),
                WindowKind::Rectangular => 1.0,
            };
            w as f32
        })
        .collect()
}

impl FbankKernel {
    /// Builds the kernel; `cfg` must have passed [`FrontendConfig::validate`].
    pub fn new(cfg: &FrontendConfig) -> Self {
        let frame_len = cfg.frame_length();
        let n_fft = cfg.fft_size();
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(n_fft);
        let spectrum = fft.make_output_vec();
        let fft_scratch = fft.make_scratch_vec();
        let mel = MelFilterbank::new(
            cfg.n_mels,
            n_fft,
            cfg.sample_rate as f64,
            cfg.f_min,
            cfg.f_max,
        );
        Self {
            frame_len,
            preemphasis: cfg.preemphasis,
            remove_dc: cfg.remove_dc_offset,
            log_floor: cfg.log_floor,
            window: window(cfg.window, frame_len),
            fft,
            fft_in: vec![0.0; n_fft],
            // Zero past the spectrum: the padded filter blocks read those bins with weight 0.
            power: vec![0.0; spectrum.len().max(mel.span())],
            spectrum,
            fft_scratch,
            mel,
            #[cfg(target_arch = "x86_64")]
            avx2: std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma"),
        }
    }

    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    pub fn n_mels(&self) -> usize {
        self.mel.n_mels()
    }

    /// Computes one frame: `samples` holds exactly `frame_len` samples, `out` receives `n_mels`
    /// natural-log energies.
    ///
    /// On x86-64 with AVX2 the same source is compiled for 256-bit vectors. Every accumulation
    /// is written with explicit lanes and without fused multiply-adds, so both builds give
    /// bit-identical frames (a test checks it).
    pub fn compute(&mut self, samples: &[f32], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: `avx2` is set only when the CPU reports AVX2 and FMA.
            unsafe { self.compute_avx2(samples, out) };
            return;
        }
        self.compute_portable(samples, out);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn compute_avx2(&mut self, samples: &[f32], out: &mut [f32]) {
        self.compute_portable(samples, out);
    }

    /// Forces the portable build (tests compare it with the AVX2 one).
    #[doc(hidden)]
    pub fn set_portable(&mut self) {
        #[cfg(target_arch = "x86_64")]
        {
            self.avx2 = false;
        }
    }

    #[inline(always)]
    fn compute_portable(&mut self, samples: &[f32], out: &mut [f32]) {
        let len = self.frame_len;
        let x = &samples[..len];
        let out = &mut out[..self.mel.n_mels()];
        let mean = if self.remove_dc {
            sum(x) / len as f32
        } else {
            0.0
        };
        let p = self.preemphasis;
        let (w, buf) = (&self.window, &mut self.fft_in);
        // Pre-emphasis with the first sample repeated: y[0] = x[0] - p x[0].
        buf[0] = ((x[0] - mean) - p * (x[0] - mean)) * w[0];
        for (((o, &cur), &prev), &wj) in buf[1..len]
            .iter_mut()
            .zip(&x[1..])
            .zip(&x[..len - 1])
            .zip(&w[1..])
        {
            *o = ((cur - mean) - p * (prev - mean)) * wj;
        }
        buf[len..].fill(0.0);
        // The planner sized every buffer for this plan, so the FFT cannot fail.
        let _ = self
            .fft
            .process_with_scratch(buf, &mut self.spectrum, &mut self.fft_scratch);
        for (pw, c) in self.power.iter_mut().zip(self.spectrum.iter()) {
            *pw = c.re * c.re + c.im * c.im;
        }
        self.mel.apply(&self.power, out);
        let floor = self.log_floor;
        for o in out.iter_mut() {
            *o = ln(o.max(floor));
        }
    }
}

/// Sum with eight independent accumulators (vectorisable, and closer to a pairwise sum).
#[inline(always)]
fn sum(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            acc[i] += c[i];
        }
    }
    let tail: f32 = chunks.remainder().iter().sum();
    (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]) + tail
}

/// Natural log of a positive, finite, normal f32, branch-free so that a loop over a frame
/// vectorises. Cephes' `logf` reduction and polynomial (cephes/single/logf.c): write
/// `x = m 2^e` with `m` in `[sqrt(1/2), sqrt(2))`, evaluate `ln(1 + (m - 1))` by a degree-9
/// polynomial and add `e ln 2` in two parts. Absolute error below 2e-7 on the range we use
/// (energies floored at f32 epsilon; see the test).
#[inline(always)]
pub fn ln(x: f32) -> f32 {
    const SQRT_HALF: f32 = std::f32::consts::FRAC_1_SQRT_2;
    let bits = x.to_bits();
    let exp = ((bits >> 23) & 0xff) as i32 - 126;
    // Mantissa in [0.5, 1).
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f00_0000);
    let small = m < SQRT_HALF;
    let e = (exp - small as i32) as f32;
    let m = if small { m + m - 1.0 } else { m - 1.0 };
    let z = m * m;
    let mut y = 7.037_683_6e-2;
    y = y * m - 1.151_461e-1;
    y = y * m + 1.167_699_9e-1;
    y = y * m - 1.242_014_1e-1;
    y = y * m + 1.424_932_3e-1;
    y = y * m - 1.666_805_8e-1;
    y = y * m + 2.000_071_4e-1;
    y = y * m - 2.499_999_4e-1;
    y = y * m + 3.333_333e-1;
    y *= m * z;
    y += -2.121_944_4e-4 * e;
    y += -0.5 * z;
    m + y + 0.693_359_4 * e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_ln_matches_std() {
        let mut worst = 0.0f64;
        let mut x = f32::EPSILON;
        while x < 1e12 {
            let err = (ln(x) as f64 - (x as f64).ln()).abs();
            worst = worst.max(err);
            x *= 1.000_37;
        }
        assert!(worst < 2e-7 * 30.0, "worst abs error {worst}");
        assert_eq!(ln(1.0), 0.0);
    }

    #[test]
    fn vector_and_portable_builds_agree_bit_for_bit() {
        let cfg = FrontendConfig::default();
        let mut fast = FbankKernel::new(&cfg);
        let mut portable = FbankKernel::new(&cfg);
        portable.set_portable();
        let mut state = 12_345u32;
        let (mut a, mut b) = (vec![0.0; 128], vec![0.0; 128]);
        for _ in 0..20 {
            let x: Vec<f32> = (0..400)
                .map(|_| {
                    state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
                })
                .collect();
            fast.compute(&x, &mut a);
            portable.compute(&x, &mut b);
            assert_eq!(a, b);
        }
    }

    #[test]
    fn window_is_symmetric_hann() {
        let w = window(WindowKind::Hanning, 400);
        assert_eq!(w[0], 0.0);
        assert_eq!(w[399], 0.0);
        assert!((w[200] - 0.999_984_4).abs() < 1e-6);
        for n in 0..200 {
            assert!((w[n] - w[399 - n]).abs() < 1e-7);
        }
    }

    #[test]
    fn silence_gives_the_log_floor() {
        let cfg = FrontendConfig::default();
        let mut k = FbankKernel::new(&cfg);
        let mut out = vec![0.0; 128];
        // A constant is pure DC, removed before the FFT.
        k.compute(&[0.25; 400], &mut out);
        let floor = f32::EPSILON.ln();
        assert!(out.iter().all(|&v| (v - floor).abs() < 1e-5), "{out:?}");
    }

    #[test]
    fn a_tone_peaks_in_its_mel_bin() {
        let cfg = FrontendConfig::default();
        let mut k = FbankKernel::new(&cfg);
        let tone: Vec<f32> = (0..400)
            .map(|n| (2.0 * std::f32::consts::PI * 1_000.0 * n as f32 / 16_000.0).sin())
            .collect();
        let mut out = vec![0.0; 128];
        k.compute(&tone, &mut out);
        let peak = (0..128).max_by(|&a, &b| out[a].total_cmp(&out[b])).unwrap();
        // Centre of mel bin m: mel_low + (m + 1) delta; 1 kHz lies between bins 40 and 41.
        let mel = |hz: f64| 1127.0 * (1.0 + hz / 700.0f64).ln();
        let d = (mel(8_000.0) - mel(20.0)) / 129.0;
        let expect = ((mel(1_000.0) - mel(20.0)) / d - 1.0).round() as usize;
        assert!(
            peak.abs_diff(expect) <= 1,
            "peak {peak}, expected near {expect}"
        );
    }
}
