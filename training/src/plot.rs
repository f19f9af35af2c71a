//! A PNG of the training curves: loss on top, effective rank (RankMe of tokens, and of clips)
//! below, step on the horizontal axis. Lines on a light grid; the numbers themselves are in
//! the JSONL log next to it.

use std::path::Path;

const W: usize = 800;
const H: usize = 300;

struct Canvas {
    px: Vec<[u8; 3]>,
    w: usize,
    h: usize,
}

impl Canvas {
    fn new(w: usize, h: usize) -> Self {
        Self {
            px: vec![[255, 255, 255]; w * h],
            w,
            h,
        }
    }
    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.w && (y as usize) < self.h {
            self.px[y as usize * self.w + x as usize] = c;
        }
    }
    fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), c: [u8; 3]) {
        let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
        for i in 0..=n {
            let t = i as f64 / n as f64;
            let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
            self.set(x.round() as i64, y.round() as i64, c);
            self.set(x.round() as i64, y.round() as i64 + 1, c);
        }
    }
}

/// Draws `series` (each `(points, colour)`) into a panel at vertical offset `top`; the y range
/// covers every series, with a grid line per tenth of it.
type Series<'a> = (&'a [(f64, f64)], [u8; 3]);

fn panel(cv: &mut Canvas, top: usize, series: &[Series], x_max: f64) {
    let (m, pw, ph) = (20.0, (cv.w - 40) as f64, (H - 40) as f64);
    let ys = series
        .iter()
        .flat_map(|(p, _)| p.iter().map(|q| q.1))
        .filter(|v| v.is_finite());
    let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    if !lo.is_finite() {
        return;
    }
    let span = (hi - lo).max(1e-9);
    let to = |(x, y): (f64, f64)| {
        (
            m + pw * x / x_max.max(1.0),
            top as f64 + m + ph * (1.0 - (y - lo) / span),
        )
    };
    for g in 0..=10 {
        let y = top as f64 + m + ph * g as f64 / 10.0;
        cv.line((m, y), (m + pw, y), [230, 230, 230]);
        let x = m + pw * g as f64 / 10.0;
        cv.line(
            (x, top as f64 + m),
            (x, top as f64 + m + ph),
            [230, 230, 230],
        );
    }
    for (pts, c) in series {
        for pair in pts.windows(2) {
            cv.line(to(pair[0]), to(pair[1]), *c);
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
    let mut cv = Canvas::new(W, 2 * H);
    panel(&mut cv, 0, &[(loss, [31, 119, 180])], total_steps);
    panel(
        &mut cv,
        H,
        &[(rank_tokens, [214, 39, 40]), (rank_pooled, [44, 160, 44])],
        total_steps,
    );
    let data: Vec<u8> = cv.px.iter().flatten().copied().collect();
    audio_jepa::arrays::write_atomically(path, |w| {
        let mut enc = png::Encoder::new(w, W as u32, (2 * H) as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(std::io::Error::other)?;
        writer
            .write_image_data(&data)
            .map_err(std::io::Error::other)
    })
}
