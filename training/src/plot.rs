//! A PNG of the training curves a reader can take in without the log beside it: loss on top,
//! effective rank (RankMe of the target's tokens and of whole clips) below, both against the
//! training step, each panel with a title, y tick labels, a grid, an x axis in steps and a
//! legend naming each line's colour. The numbers themselves are in the JSONL log next to it.
//! Text is drawn with the library's 3 x 5 pixel font (`audio_jepa::render::glyphs`).

use std::path::Path;

use audio_jepa::render::glyphs::{text_width, Canvas, HEIGHT};

const W: usize = 900;
/// One panel's height.
const H: usize = 320;
/// Font scale, margins (left for the y labels, bottom for the x labels), pixels.
const SCALE: usize = 2;
const LEFT: usize = 70;
const RIGHT: usize = 20;
const TOP: usize = 34;
const BOTTOM: usize = 40;

const GRID: [u8; 3] = [225, 225, 225];
const AXIS: [u8; 3] = [90, 90, 90];
const INK: [u8; 3] = [30, 30, 30];
pub const LOSS: [u8; 3] = [31, 119, 180];
pub const RANK_TOKENS: [u8; 3] = [214, 39, 40];
pub const RANK_CLIPS: [u8; 3] = [44, 160, 44];

struct Plot {
    px: Vec<u8>,
    w: usize,
    h: usize,
}

impl Plot {
    fn new(w: usize, h: usize) -> Self {
        Self {
            px: vec![255; w * h * 3],
            w,
            h,
        }
    }
    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.w && (y as usize) < self.h {
            let i = (y as usize * self.w + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }
    /// A line two pixels thick (the curves) or one (`thin`: grid and axes).
    fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), c: [u8; 3], thin: bool) {
        let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
        for i in 0..=n {
            let t = i as f64 / n as f64;
            let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
            self.set(x.round() as i64, y.round() as i64, c);
            if !thin {
                self.set(x.round() as i64, y.round() as i64 + 1, c);
            }
        }
    }
    fn text(&mut self, x: usize, y: usize, s: &str, ink: [u8; 3]) {
        let (w, h) = (self.w, self.h);
        Canvas {
            px: &mut self.px,
            w,
            h,
        }
        .text(x, y, s, SCALE, ink);
    }
}

/// Tick values: at most eight round numbers (1, 2 or 5 times a power of ten apart) over `lo..hi`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 8.0)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() * step;
    (0..)
        .map(|i| first + i as f64 * step)
        .take_while(|v| *v <= hi + step * 1e-9)
        .collect()
}

/// A tick label: as few digits as the tick spacing needs.
fn label(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    format!("{v:.decimals$}")
}

/// One curve: its points `(step, value)`, colour and legend name.
pub struct Series<'a> {
    pub points: &'a [(f64, f64)],
    pub colour: [u8; 3],
    pub name: &'a str,
}

/// Draws a panel at vertical offset `top`: its title, the y range of every series with round
/// ticks and labels, x from 0 to `x_max` steps, and a legend.
fn panel(p: &mut Plot, top: usize, title: &str, series: &[Series], x_max: f64) {
    let (x0, x1) = (LEFT as f64, (p.w - RIGHT) as f64);
    let (y0, y1) = ((top + TOP) as f64, (top + H - BOTTOM) as f64);
    p.text(LEFT, top + 8, title, INK);
    // Legend, right-aligned on the title's line.
    let mut lx = p.w - RIGHT;
    for s in series.iter().rev() {
        lx -= text_width(s.name, SCALE) + 30;
        p.line(
            (lx as f64, (top + 8 + HEIGHT) as f64),
            (lx as f64 + 18.0, (top + 8 + HEIGHT) as f64),
            s.colour,
            false,
        );
        p.text(lx + 24, top + 8, s.name, INK);
    }
    let values = series
        .iter()
        .flat_map(|s| s.points.iter().map(|q| q.1))
        .filter(|v| v.is_finite());
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    p.line((x0, y1), (x1, y1), AXIS, true);
    p.line((x0, y0), (x0, y1), AXIS, true);
    let x_max = x_max.max(1.0);
    let xt = ticks(0.0, x_max);
    let xstep = xt.get(1).map_or(1.0, |b| b - xt[0]);
    for &t in &xt {
        let x = x0 + (x1 - x0) * t / x_max;
        p.line((x, y0), (x, y1), GRID, true);
        let s = label(t, xstep);
        let tx = (x as usize).saturating_sub(text_width(&s, SCALE) / 2);
        p.text(tx, y1 as usize + 6, &s, INK);
    }
    p.text(
        (x1 as usize).saturating_sub(text_width("STEP", SCALE)),
        y1 as usize + 22,
        "STEP",
        INK,
    );
    if !lo.is_finite() {
        p.text(LEFT + 20, (y0 + y1) as usize / 2, "NO DATA YET", AXIS);
        return;
    }
    // A little room above and below the curves.
    let pad = ((hi - lo) * 0.05).max(1e-6 * hi.abs().max(1e-9));
    let (lo, hi) = (lo - pad, hi + pad);
    let yt = ticks(lo, hi);
    let ystep = yt.get(1).map_or(1.0, |b| b - yt[0]);
    let to_y = |v: f64| y1 - (y1 - y0) * (v - lo) / (hi - lo);
    for &t in &yt {
        let y = to_y(t);
        p.line((x0, y), (x1, y), GRID, true);
        let s = label(t, ystep);
        let tx = (LEFT - 6).saturating_sub(text_width(&s, SCALE));
        p.text(tx, (y as usize).saturating_sub(HEIGHT * SCALE / 2), &s, INK);
    }
    p.line((x0, y1), (x1, y1), AXIS, true);
    p.line((x0, y0), (x0, y1), AXIS, true);
    for s in series {
        for pair in s.points.windows(2) {
            let a = (x0 + (x1 - x0) * pair[0].0 / x_max, to_y(pair[0].1));
            let b = (x0 + (x1 - x0) * pair[1].0 / x_max, to_y(pair[1].1));
            if a.1.is_finite() && b.1.is_finite() {
                p.line(a, b, s.colour, false);
            }
        }
    }
}

/// Writes the curves to `path` (atomically).
pub fn write_curves(
    path: &Path,
    loss: &[(f64, f64)],
    rank_tokens: &[(f64, f64)],
    rank_pooled: &[(f64, f64)],
    total_steps: f64,
) -> std::io::Result<()> {
    let mut p = Plot::new(W, 2 * H);
    panel(
        &mut p,
        0,
        "TRAINING LOSS (PREDICTED VS TARGET LATENTS)",
        &[Series {
            points: loss,
            colour: LOSS,
            name: "LOSS",
        }],
        total_steps,
    );
    panel(
        &mut p,
        H,
        "EFFECTIVE RANK OF THE TARGET EMBEDDINGS (RANKME)",
        &[
            Series {
                points: rank_tokens,
                colour: RANK_TOKENS,
                name: "TOKENS",
            },
            Series {
                points: rank_pooled,
                colour: RANK_CLIPS,
                name: "CLIPS",
            },
        ],
        total_steps,
    );
    audio_jepa::arrays::write_atomically(path, |w| {
        let mut enc = png::Encoder::new(w, W as u32, (2 * H) as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(std::io::Error::other)?;
        writer
            .write_image_data(&p.px)
            .map_err(std::io::Error::other)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(
            ticks(0.0, 1000.0),
            vec![0.0, 200.0, 400.0, 600.0, 800.0, 1000.0]
        );
        let t = ticks(0.31, 0.47);
        let shown: Vec<String> = t.iter().map(|&v| label(v, 0.02)).collect();
        assert_eq!(
            shown,
            ["0.32", "0.34", "0.36", "0.38", "0.40", "0.42", "0.44", "0.46"]
        );
        assert_eq!(label(0.32, 0.02), "0.32");
        assert_eq!(label(4000.0, 1000.0), "4000");
    }

    /// The picture has the legend's colours and text (dark pixels) beside the curves, and an
    /// empty series draws "no data yet" instead of failing.
    #[test]
    fn the_picture_has_labels_and_each_curve_colour() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.png");
        let loss: Vec<(f64, f64)> = (0..50)
            .map(|i| (i as f64 * 10.0, 1.0 / (1.0 + i as f64)))
            .collect();
        let tok: Vec<(f64, f64)> = (0..5)
            .map(|i| (i as f64 * 100.0, 20.0 + i as f64))
            .collect();
        let clip: Vec<(f64, f64)> = (0..5).map(|i| (i as f64 * 100.0, 5.0 + i as f64)).collect();
        write_curves(&path, &loss, &tok, &clip, 500.0).unwrap();
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let mut reader = dec.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut buf).unwrap();
        let count = |c: [u8; 3]| buf.chunks_exact(3).filter(|p| *p == c).count();
        for c in [LOSS, RANK_TOKENS, RANK_CLIPS] {
            assert!(count(c) > 100, "{c:?}");
        }
        assert!(count(INK) > 500, "labels");
        write_curves(&path, &[], &[], &[], 0.0).unwrap();
    }
}
