//! Normalisation and the patch grid the encoder consumes.
//!
//! Patches are 16 x 16 (frequency x time) with stride 16 (AudioMAE / A-JEPA): 128 mel bins give 8
//! frequency rows, and every 16 frames (160 ms) add one time column. Patches are numbered
//! time-major, `index = column * n_freq + row` (row 0 is the lowest frequencies), so a stream
//! appends whole columns at the end and a sliding window is a contiguous range of patches. Inside
//! a patch, values are laid out `[time][frequency]`, the order of the spectrogram's own rows.

use super::LogMel;
use crate::config::FrontendConfig;

/// `(x - mean) / (2 std)` in place, the AudioMAE / A-JEPA model-input normalisation.
pub fn normalize(values: &mut [f32], cfg: &FrontendConfig) {
    let scale = 1.0 / (2.0 * cfg.norm_std);
    for v in values {
        *v = (*v - cfg.norm_mean) * scale;
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatchError {
    #[error("{n_mels} mel bins do not divide into patches of {patch_freq} bins")]
    MelsNotDivisible { n_mels: usize, patch_freq: usize },
    #[error("patch size must be positive, got {patch_freq} x {patch_time}")]
    ZeroPatch {
        patch_freq: usize,
        patch_time: usize,
    },
}

/// Shape of a patch grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchGrid {
    /// Frequency rows.
    pub n_freq: usize,
    /// Time columns.
    pub n_time: usize,
    /// Mel bins per patch.
    pub patch_freq: usize,
    /// Frames per patch.
    pub patch_time: usize,
}

impl PatchGrid {
    pub fn n_patches(&self) -> usize {
        self.n_freq * self.n_time
    }

    pub fn patch_len(&self) -> usize {
        self.patch_freq * self.patch_time
    }

    /// Patch index of frequency row `row`, time column `col`.
    pub fn index(&self, row: usize, col: usize) -> usize {
        col * self.n_freq + row
    }

    /// `(row, col)` of patch `index`.
    pub fn position(&self, index: usize) -> (usize, usize) {
        (index % self.n_freq, index / self.n_freq)
    }
}

/// Patches of a spectrogram: `grid.n_patches() x grid.patch_len()`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Patches {
    pub grid: PatchGrid,
    pub data: Vec<f32>,
}

impl Patches {
    pub fn patch(&self, index: usize) -> &[f32] {
        let l = self.grid.patch_len();
        &self.data[index * l..(index + 1) * l]
    }
}

/// Cuts `spec` into patches. Frames after the last whole time column are left out, as a stream
/// waits for a column to complete before encoding it.
pub fn patchify(
    spec: &LogMel,
    patch_freq: usize,
    patch_time: usize,
) -> Result<Patches, PatchError> {
    if patch_freq == 0 || patch_time == 0 {
        return Err(PatchError::ZeroPatch {
            patch_freq,
            patch_time,
        });
    }
    if !spec.n_mels.is_multiple_of(patch_freq) {
        return Err(PatchError::MelsNotDivisible {
            n_mels: spec.n_mels,
            patch_freq,
        });
    }
    let grid = PatchGrid {
        n_freq: spec.n_mels / patch_freq,
        n_time: spec.n_frames / patch_time,
        patch_freq,
        patch_time,
    };
    let mut data = Vec::with_capacity(grid.n_patches() * grid.patch_len());
    for col in 0..grid.n_time {
        for row in 0..grid.n_freq {
            for dt in 0..patch_time {
                let frame = spec.frame(col * patch_time + dt);
                data.extend_from_slice(&frame[row * patch_freq..(row + 1) * patch_freq]);
            }
        }
    }
    Ok(Patches { grid, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(n_frames: usize, n_mels: usize) -> LogMel {
        // value = frame * 1000 + bin, so every element says where it came from.
        let data = (0..n_frames)
            .flat_map(|t| (0..n_mels).map(move |m| (t * 1000 + m) as f32))
            .collect();
        LogMel {
            n_frames,
            n_mels,
            data,
        }
    }

    #[test]
    fn layout_is_time_major_with_time_frequency_patches() {
        let spec = ramp(100, 128);
        let p = patchify(&spec, 16, 16).unwrap();
        assert_eq!(p.grid.n_freq, 8);
        assert_eq!(p.grid.n_time, 6); // 100 frames: 4 frames left over
        assert_eq!(p.data.len(), 48 * 256);
        // Patch at row 2 (bins 32..48), column 3 (frames 48..64).
        let idx = p.grid.index(2, 3);
        assert_eq!(idx, 26);
        assert_eq!(p.grid.position(idx), (2, 3));
        let patch = p.patch(idx);
        assert_eq!(patch[0], 48_032.0);
        assert_eq!(patch[15], 48_047.0);
        assert_eq!(patch[16], 49_032.0);
        assert_eq!(patch[255], 63_047.0);
    }

    #[test]
    fn errors_on_bad_shapes() {
        let spec = ramp(32, 100);
        assert_eq!(
            patchify(&spec, 16, 16).unwrap_err(),
            PatchError::MelsNotDivisible {
                n_mels: 100,
                patch_freq: 16
            }
        );
        assert!(matches!(
            patchify(&spec, 0, 16),
            Err(PatchError::ZeroPatch { .. })
        ));
        // Too short for one column: an empty grid, not an error.
        let p = patchify(&ramp(15, 128), 16, 16).unwrap();
        assert_eq!(p.grid.n_patches(), 0);
    }

    #[test]
    fn normalisation_uses_two_std() {
        let cfg = FrontendConfig::default();
        let mut v = [cfg.norm_mean, cfg.norm_mean + 2.0 * cfg.norm_std];
        normalize(&mut v, &cfg);
        assert_eq!(v[0], 0.0);
        assert!((v[1] - 1.0).abs() < 1e-6);
    }
}
