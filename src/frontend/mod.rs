//! The log-mel front end shared by training and streaming.
//!
//! - [`LogMelExtractor`]: whole signals at once (files, training data).
//! - [`StreamingFbank`]: chunks of any size, frames out as soon as they are complete, identical to
//!   the offline frames bit for bit, no heap allocation after construction.
//! - [`patches`]: normalisation and the 16 x 16 patch grid the encoder consumes.

mod fbank;
pub mod mel;
pub mod patches;
mod streaming;

pub use fbank::{ln as fast_ln, window, FbankKernel};
pub use patches::{normalize, patchify, PatchGrid, Patches};
pub use streaming::StreamingFbank;

use crate::config::{ConfigError, FrontendConfig};

/// A log-mel spectrogram: `n_frames x n_mels`, row-major (one row per 10 ms frame), natural log,
/// not normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct LogMel {
    pub n_frames: usize,
    pub n_mels: usize,
    pub data: Vec<f32>,
}

impl LogMel {
    pub fn frame(&self, t: usize) -> &[f32] {
        &self.data[t * self.n_mels..(t + 1) * self.n_mels]
    }

    pub fn frames(&self) -> impl Iterator<Item = &[f32]> {
        self.data.chunks_exact(self.n_mels.max(1))
    }
}

/// Offline Kaldi-compatible log-mel front end.
#[derive(Debug)]
pub struct LogMelExtractor {
    cfg: FrontendConfig,
    kernel: FbankKernel,
}

impl LogMelExtractor {
    /// Validates `cfg` and plans the FFT.
    pub fn new(cfg: &FrontendConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        Ok(Self {
            cfg: cfg.clone(),
            kernel: FbankKernel::new(cfg),
        })
    }

    pub fn config(&self) -> &FrontendConfig {
        &self.cfg
    }

    /// Log-mel frames of `samples` (mono, at the configured rate). Kaldi's `snip_edges`: frame `t`
    /// covers samples `[t hop, t hop + frame_len)`, and a tail shorter than a frame is dropped.
    pub fn compute(&mut self, samples: &[f32]) -> LogMel {
        let n_frames = self.cfg.num_frames(samples.len());
        let n_mels = self.cfg.n_mels;
        let mut data = vec![0.0; n_frames * n_mels];
        self.compute_into(samples, &mut data);
        LogMel {
            n_frames,
            n_mels,
            data,
        }
    }

    /// As [`compute`](Self::compute), writing into `out`, which must hold
    /// `num_frames(samples.len()) * n_mels` values. Allocates nothing.
    pub fn compute_into(&mut self, samples: &[f32], out: &mut [f32]) {
        let (len, hop, n_mels) = (
            self.cfg.frame_length(),
            self.cfg.hop_length(),
            self.cfg.n_mels,
        );
        for (t, row) in out
            .chunks_exact_mut(n_mels)
            .take(self.cfg.num_frames(samples.len()))
            .enumerate()
        {
            self.kernel.compute(&samples[t * hop..t * hop + len], row);
        }
    }
}
