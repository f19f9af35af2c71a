//! Pictures a person can read: spectrograms (frequency up, time right, a perceptual colour map)
//! and confusion matrices with the class names on their axes (`confusion`).

use std::path::{Path, PathBuf};

use crate::arrays::write_atomically;
use crate::frontend::LogMel;

mod confusion;
pub mod glyphs;

pub use confusion::{confusion_rgb, write_confusion_png};

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("nothing to draw: the spectrogram has {n_frames} frames and {n_mels} bins")]
    Empty { n_frames: usize, n_mels: usize },
    #[error("{path}: cannot write PNG: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How values map to colours.
#[derive(Debug, Clone, Copy)]
pub struct RenderOptions {
    /// Range shown below the loudest value, in natural-log units (ln energy); 10.4 is 45 dB.
    pub dynamic_range: f32,
    /// Pixels per frame (horizontal) and per mel bin (vertical).
    pub x_scale: usize,
    pub y_scale: usize,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            dynamic_range: 10.4,
            x_scale: 1,
            y_scale: 2,
        }
    }
}

/// RGB pixels of `spec` (width = frames x x_scale, height = bins x y_scale), colour map magma.
pub fn spectrogram_rgb(spec: &LogMel, opts: &RenderOptions) -> (usize, usize, Vec<u8>) {
    let max = spec.data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let min = spec.data.iter().copied().fold(f32::INFINITY, f32::min);
    let lo = min.max(max - opts.dynamic_range.max(f32::EPSILON));
    let span = (max - lo).max(f32::EPSILON);
    let (xs, ys) = (opts.x_scale.max(1), opts.y_scale.max(1));
    let (w, h) = (spec.n_frames * xs, spec.n_mels * ys);
    let mut px = vec![0u8; w * h * 3];
    for y in 0..h {
        // Row 0 of the image is the highest mel bin.
        let bin = spec.n_mels - 1 - y / ys;
        for x in 0..w {
            let v = spec.data[(x / xs) * spec.n_mels + bin];
            let c = colorous::MAGMA.eval_continuous(((v - lo) / span).clamp(0.0, 1.0) as f64);
            px[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&[c.r, c.g, c.b]);
        }
    }
    (w, h, px)
}

/// Writes `spec` as a PNG image.
pub fn write_png(path: &Path, spec: &LogMel, opts: &RenderOptions) -> Result<(), RenderError> {
    if spec.n_frames == 0 || spec.n_mels == 0 {
        return Err(RenderError::Empty {
            n_frames: spec.n_frames,
            n_mels: spec.n_mels,
        });
    }
    let (w, h, px) = spectrogram_rgb(spec, opts);
    write_rgb(path, w, h, &px)
}

pub(crate) fn write_rgb(path: &Path, w: usize, h: usize, px: &[u8]) -> Result<(), RenderError> {
    write_atomically(path, |file| {
        let mut enc = png::Encoder::new(file, w as u32, h as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(std::io::Error::other)?;
        writer.write_image_data(px).map_err(std::io::Error::other)?;
        writer.finish().map_err(std::io::Error::other)
    })
    .map_err(|source| RenderError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_bins_are_drawn_at_the_top_and_loud_is_bright() {
        // Two frames, four bins; only the highest bin of frame 1 is loud.
        let spec = LogMel {
            n_frames: 2,
            n_mels: 4,
            data: vec![-10.0, -10.0, -10.0, -10.0, -10.0, -10.0, -10.0, 0.0],
        };
        let opts = RenderOptions {
            dynamic_range: 10.0,
            x_scale: 1,
            y_scale: 1,
        };
        let (w, h, px) = spectrogram_rgb(&spec, &opts);
        assert_eq!((w, h), (2, 4));
        let at = |x: usize, y: usize| &px[(y * w + x) * 3..(y * w + x) * 3 + 3];
        let bright = colorous::MAGMA.eval_continuous(1.0);
        let dark = colorous::MAGMA.eval_continuous(0.0);
        assert_eq!(at(1, 0), [bright.r, bright.g, bright.b]);
        assert_eq!(at(0, 0), [dark.r, dark.g, dark.b]);
        assert_eq!(at(1, 3), [dark.r, dark.g, dark.b]);
    }

    #[test]
    fn empty_spectrogram_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let spec = LogMel {
            n_frames: 0,
            n_mels: 128,
            data: vec![],
        };
        assert!(matches!(
            write_png(&dir.path().join("x.png"), &spec, &RenderOptions::default()),
            Err(RenderError::Empty { .. })
        ));
    }
}
