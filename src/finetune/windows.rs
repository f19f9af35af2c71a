//! Clips as the live tagger sees them: windows of `columns` patch columns every `hop` columns,
//! normalised and patchified exactly as the streaming worker does, so a head trained on these
//! embeddings sees at run time the inputs it was trained on.

use std::path::Path;

use candle_core::{Device, Tensor};

use crate::config::FrontendConfig;
use crate::frontend::patches::{normalize, patchify};
use crate::frontend::{LogMel, LogMelExtractor};
use crate::model::pooling::Pooling;
use crate::model::Encoder;

/// Patch size in mel bins and frames (AudioMAE / A-JEPA), as the streaming worker uses.
const PATCH: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    #[error(transparent)]
    Audio(#[from] crate::audio::AudioError),
    #[error(transparent)]
    Patch(#[from] crate::frontend::patches::PatchError),
    #[error("encoder: {0}")]
    Model(#[from] candle_core::Error),
    #[error("{path}: silent or empty clip, nothing to learn from")]
    Silent { path: std::path::PathBuf },
}

/// Which windows of a clip are used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowSpec {
    /// Patch columns per window (the profile's `window_columns`).
    pub columns: usize,
    /// Columns between window starts.
    pub hop: usize,
    /// Windows whose mean log-mel energy is more than this many dB below the clip's loudest
    /// window are dropped: ESC-50 clips are padded with silence, which carries no label.
    pub keep_within_db: f32,
}

impl Default for WindowSpec {
    fn default() -> Self {
        Self {
            columns: 6,
            hop: 3,
            keep_within_db: 20.0,
        }
    }
}

/// The kept windows of one clip: `n` windows of `patches_per_window x patch_len` values.
#[derive(Debug, Clone)]
pub struct ClipWindows {
    pub n: usize,
    pub patches_per_window: usize,
    pub patch_len: usize,
    pub data: Vec<f32>,
    /// The clip's length, seconds (before any padding).
    pub seconds: f64,
    /// The loudest 160 ms of the clip (one patch column, the live tagger's hop), RMS in dBFS,
    /// as `listen` measures a hop's level; `None` where the samples were not seen.
    pub peak_dbfs: Option<f32>,
}

impl ClipWindows {
    pub fn window(&self, i: usize) -> &[f32] {
        let l = self.patches_per_window * self.patch_len;
        &self.data[i * l..(i + 1) * l]
    }
}

/// Cuts a log-mel spectrogram into the windows the live tagger would encode. A clip shorter than
/// one window is padded at its end with its own quietest frame (a stand-in for the background
/// the microphone would hear around it).
pub fn clip_windows(
    spec: &LogMel,
    fe: &FrontendConfig,
    ws: &WindowSpec,
) -> Result<ClipWindows, WindowError> {
    let (pf, pt) = (PATCH, PATCH);
    let want = ws.columns * pt;
    let seconds = spec.n_frames as f64 * fe.frame_shift_ms / 1000.0;
    let mut spec = spec.clone();
    if spec.n_frames < want {
        let quiet = spec
            .frames()
            .min_by(|a, b| mean(a).total_cmp(&mean(b)))
            .map(<[f32]>::to_vec)
            .unwrap_or_else(|| vec![fe.norm_mean; spec.n_mels]);
        while spec.n_frames < want {
            spec.data.extend_from_slice(&quiet);
            spec.n_frames += 1;
        }
    }
    // Per-column energy, before normalisation.
    let cols = spec.n_frames / pt;
    let col_energy: Vec<f32> = (0..cols)
        .map(|c| (0..pt).map(|t| mean(spec.frame(c * pt + t))).sum::<f32>() / pt as f32)
        .collect();
    let starts: Vec<usize> = (0..=cols - ws.columns).step_by(ws.hop.max(1)).collect();
    let energy: Vec<f32> = starts
        .iter()
        .map(|&s| col_energy[s..s + ws.columns].iter().sum::<f32>() / ws.columns as f32)
        .collect();
    let loudest = energy.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    // Log-mel values are natural logs of power: 10 dB = ln(10).
    let floor = loudest - ws.keep_within_db * std::f32::consts::LN_10 / 10.0;
    normalize(&mut spec.data, fe);
    let p = patchify(&spec, pf, pt)?;
    let per_col = p.grid.n_freq * p.grid.patch_len();
    let mut data = Vec::new();
    let mut n = 0;
    for (&s, &e) in starts.iter().zip(&energy) {
        if e >= floor {
            data.extend_from_slice(&p.data[s * per_col..(s + ws.columns) * per_col]);
            n += 1;
        }
    }
    Ok(ClipWindows {
        n,
        patches_per_window: ws.columns * p.grid.n_freq,
        patch_len: p.grid.patch_len(),
        data,
        seconds,
        peak_dbfs: None,
    })
}

/// The RMS level in dBFS of the loudest run of `hop` samples (the last one may be shorter);
/// -100 dBFS for digital silence or no samples, the floor `listen` reports.
pub fn loudest_hop_dbfs(samples: &[f32], hop: usize) -> f32 {
    let loudest = samples
        .chunks(hop.max(1))
        .map(|c| c.iter().map(|&s| (s as f64) * (s as f64)).sum::<f64>() / c.len() as f64)
        .fold(0f64, f64::max);
    (10.0 * loudest.max(1e-10).log10()) as f32
}

fn mean(v: &[f32]) -> f32 {
    v.iter().sum::<f32>() / v.len().max(1) as f32
}

/// Pooled embeddings (`n x pool.dim(D, n_freq)`, row-major) of windows, `batch` windows per
/// forward pass.
pub fn embed_windows(
    enc: &Encoder,
    w: &ClipWindows,
    batch: usize,
    pool: Pooling,
) -> Result<Vec<f32>, candle_core::Error> {
    let cfg = enc.config();
    let mut out = Vec::with_capacity(w.n * pool.dim(cfg.embed_dim, cfg.n_freq()));
    let l = w.patches_per_window * w.patch_len;
    for start in (0..w.n).step_by(batch.max(1)) {
        let b = batch.max(1).min(w.n - start);
        let x = Tensor::from_slice(
            &w.data[start * l..(start + b) * l],
            (b, w.patches_per_window, w.patch_len),
            &Device::Cpu,
        )?;
        out.extend(
            pool.pool_tensor(&enc.forward(&x, None)?, cfg.n_freq())?
                .flatten_all()?
                .to_vec1::<f32>()?,
        );
    }
    Ok(out)
}

/// Decodes a clip and returns its windows; reuses `lm` across clips.
pub fn load_clip_windows(
    path: &Path,
    lm: &mut LogMelExtractor,
    fe: &FrontendConfig,
    ws: &WindowSpec,
) -> Result<ClipWindows, WindowError> {
    let audio = crate::audio::load(path, fe.sample_rate)?;
    let spec = lm.compute(&audio.samples);
    if spec.n_frames == 0 {
        return Err(WindowError::Silent {
            path: path.to_path_buf(),
        });
    }
    let mut w = clip_windows(&spec, fe, ws)?;
    // One patch column of frames: 16 x 10 ms.
    let hop = (fe.sample_rate as f64 * fe.frame_shift_ms * 16.0 / 1000.0).round() as usize;
    w.peak_dbfs = Some(loudest_hop_dbfs(&audio.samples, hop));
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(frames: usize, loud: impl Fn(usize) -> f32) -> LogMel {
        LogMel {
            n_frames: frames,
            n_mels: 128,
            data: (0..frames * 128).map(|i| loud(i / 128)).collect(),
        }
    }

    #[test]
    fn windows_follow_the_stream_layout_and_drop_silence() {
        let fe = FrontendConfig::default();
        let ws = WindowSpec::default();
        // 20 columns, loud (0) in columns 0..9, silent (-20 = 87 dB lower) after.
        let s = spec(20 * 16, |f| if f < 9 * 16 { 0.0 } else { -20.0 });
        let w = clip_windows(&s, &fe, &ws).unwrap();
        // Starts 0, 3, 6, 9, 12 (14 is past the last full window); only those overlapping the
        // loud part enough survive: 0 and 3 (all loud), 6 (half loud: mean -10 = 43 dB lower)
        // is dropped, as are the silent ones.
        assert_eq!(w.n, 2);
        assert_eq!(w.patches_per_window, 48);
        let mut all = s.clone();
        normalize(&mut all.data, &fe);
        let p = patchify(&all, 16, 16).unwrap();
        assert_eq!(w.window(1), &p.data[3 * 8 * 256..9 * 8 * 256]);
        // A clip shorter than a window is padded to one window.
        let short = spec(40, |f| f as f32 * 0.01);
        let w = clip_windows(&short, &fe, &ws).unwrap();
        assert_eq!(w.n, 1);
        assert_eq!(w.data.len(), 48 * 256);
    }

    #[test]
    fn the_loudest_hop_level_is_its_rms_in_dbfs() {
        // A full-scale square wave is 0 dBFS, a 0.01 one -40 dBFS; digital silence the floor.
        let mut x = vec![0.0f32; 100];
        x.extend((0..100).map(|i| if i % 2 == 0 { 0.01 } else { -0.01 }));
        assert!((loudest_hop_dbfs(&x, 100) + 40.0).abs() < 1e-4);
        x.extend((0..50).map(|i| if i % 2 == 0 { 1.0 } else { -1.0 }));
        assert!(loudest_hop_dbfs(&x, 100).abs() < 1e-4);
        assert_eq!(loudest_hop_dbfs(&[0.0; 10], 4), -100.0);
        assert_eq!(loudest_hop_dbfs(&[], 4), -100.0);
    }
}
