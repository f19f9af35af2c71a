//! Spectrogram images a person can read: frequency up, time right, a perceptual colour map.

use std::path::{Path, PathBuf};

use crate::arrays::write_atomically;
use crate::frontend::LogMel;

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

/// 3 x 5 bitmaps of the digits 0-9 (bit 2 is the left column of a row).
const DIGITS: [[u8; 5]; 10] = [
    [7, 5, 5, 5, 7],
    [2, 6, 2, 2, 7],
    [7, 1, 7, 4, 7],
    [7, 1, 7, 1, 7],
    [5, 5, 7, 1, 1],
    [7, 4, 7, 1, 7],
    [7, 4, 7, 5, 7],
    [7, 1, 1, 1, 1],
    [7, 5, 7, 5, 7],
    [7, 5, 7, 1, 7],
];

/// A confusion matrix (`cm[true][pred]`) as an RGB image: rows are true classes, columns
/// predictions (in the order of the labels the command prints), each cell shaded by its share
/// of the row and labelled with its count.
pub fn confusion_rgb(cm: &[Vec<usize>]) -> (usize, usize, Vec<u8>) {
    const CELL: usize = 28;
    let n = cm.len();
    let (w, h) = (n * CELL + 1, n * CELL + 1);
    let mut px = vec![255u8; w * h * 3];
    for (r, row) in cm.iter().enumerate() {
        let total: usize = row.iter().sum();
        for (c, &count) in row.iter().enumerate() {
            let share = count as f64 / total.max(1) as f64;
            let col = colorous::BLUES.eval_continuous(share);
            let dark = share > 0.55;
            for y in r * CELL + 1..(r + 1) * CELL {
                for x in c * CELL + 1..(c + 1) * CELL {
                    px[(y * w + x) * 3..(y * w + x) * 3 + 3]
                        .copy_from_slice(&[col.r, col.g, col.b]);
                }
            }
            if count == 0 {
                continue;
            }
            // The count, digits at twice size, centred.
            let text = count.to_string();
            let tw = text.len() * 8 - 2;
            let (x0, y0) = (c * CELL + (CELL - tw) / 2, r * CELL + (CELL - 10) / 2);
            let ink = if dark { 255 } else { 0 };
            for (k, ch) in text.bytes().enumerate() {
                let glyph = DIGITS[(ch - b'0') as usize];
                for (gy, bits) in glyph.iter().enumerate() {
                    for gx in 0..3 {
                        if bits & (4 >> gx) != 0 {
                            for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                                let (x, y) = (x0 + k * 8 + gx * 2 + dx, y0 + gy * 2 + dy);
                                if x < w && y < h {
                                    px[(y * w + x) * 3..(y * w + x) * 3 + 3].fill(ink);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    (w, h, px)
}

/// Writes [`confusion_rgb`] as a PNG.
pub fn write_confusion_png(path: &Path, cm: &[Vec<usize>]) -> Result<(), RenderError> {
    if cm.is_empty() {
        return Err(RenderError::Empty {
            n_frames: 0,
            n_mels: 0,
        });
    }
    let (w, h, px) = confusion_rgb(cm);
    write_rgb(path, w, h, &px)
}

fn write_rgb(path: &Path, w: usize, h: usize, px: &[u8]) -> Result<(), RenderError> {
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
    fn confusion_cells_are_shaded_by_row_share() {
        let (w, h, px) = confusion_rgb(&[vec![9, 1], vec![0, 0]]);
        assert_eq!((w, h), (57, 57));
        let at = |x: usize, y: usize| &px[(y * w + x) * 3..(y * w + x) * 3 + 3];
        // Corner pixels of cells (no digits there): 90 % is darker than 10 %; an empty row is
        // the palette's lightest.
        assert!(at(2, 2)[0] < at(30, 2)[0]);
        assert_eq!(at(2, 30), at(30, 30));
        assert_eq!(at(0, 0), [255, 255, 255]);
    }

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
