//! The scrolling log-mel spectrogram: a ratatui widget (two pixels per cell, magma colours,
//! a 256-colour fallback) and its panel with a kHz axis and a time scale.

use std::collections::VecDeque;

use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::widgets::{Block, Borders, Widget};
use ratatui::Frame;

use super::app::App;

/// Magma-like colour of `v` in [0, 1]; the nearest of the xterm 256-colour cube without
/// truecolor (the 6 x 6 x 6 cube at indices 16-231).
fn heat(v: f32, truecolor: bool) -> Color {
    let c = colorous::MAGMA.eval_continuous(v.clamp(0.0, 1.0) as f64);
    if truecolor {
        Color::Rgb(c.r, c.g, c.b)
    } else {
        let q = |x: u8| ((x as u16 * 5 + 127) / 255) as u8;
        Color::Indexed(16 + 36 * q(c.r) + 6 * q(c.g) + q(c.b))
    }
}

fn hz_to_mel(f: f64) -> f64 {
    1127.0 * (1.0 + f / 700.0).ln()
}

/// The scrolling spectrogram: time right (newest at the right edge), frequency up.
struct Spectrogram<'a> {
    columns: &'a VecDeque<Vec<f32>>,
    truecolor: bool,
}

impl Widget for Spectrogram<'_> {
    fn render(self, area: Rect, buf: &mut ratatui::buffer::Buffer) {
        let cols = self.columns.len().min(area.width as usize);
        let skip = self.columns.len() - cols;
        let x0 = area.x + area.width - cols as u16;
        // Log-mel values: map a fixed range (floor -15.9 to about +8) to the colour scale.
        let (lo, hi) = (-12.0f32, 6.0f32);
        for (x, col) in self.columns.iter().skip(skip).enumerate() {
            let n = col.len().max(1);
            for y in 0..area.height as usize {
                // Each cell is two pixels (upper and lower half block).
                let mut px = [Color::Black; 2];
                for (k, p) in px.iter_mut().enumerate() {
                    let row_from_bottom = (area.height as usize - 1 - y) * 2 + (1 - k);
                    let bin = row_from_bottom * n / (area.height as usize * 2);
                    if let Some(v) = col.get(bin) {
                        *p = heat((v - lo) / (hi - lo), self.truecolor);
                    }
                }
                let cell = &mut buf[(x0 + x as u16, area.y + y as u16)];
                cell.set_symbol("▀").set_fg(px[0]).set_bg(px[1]);
            }
        }
    }
}

/// The spectrogram with a kHz axis on its left (mel-spaced, as the bands are) and a time scale
/// under it (seconds before now).
pub(super) fn spectrogram_panel(f: &mut Frame, area: Rect, app: &App) {
    let block = Block::default()
        .borders(Borders::ALL)
        .title(" log-mel: kHz up, time right ");
    let inner = block.inner(area);
    f.render_widget(block, area);
    if inner.width < 8 || inner.height < 3 {
        return;
    }
    let axis = 4u16;
    let img = Rect {
        x: inner.x + axis,
        y: inner.y,
        width: inner.width - axis,
        height: inner.height - 1,
    };
    f.render_widget(
        Spectrogram {
            columns: &app.spectrogram,
            truecolor: app.truecolor,
        },
        img,
    );
    let dim = Style::default().fg(Color::DarkGray);
    let buf = f.buffer_mut();
    if let Some((lo, hi)) = app.freq_range_hz.filter(|(lo, hi)| hi > lo) {
        let (mlo, mhi) = (hz_to_mel(lo), hz_to_mel(hi));
        let mut last_y = None;
        for (hz, label) in [
            (8000.0, "8k"),
            (4000.0, "4k"),
            (2000.0, "2k"),
            (1000.0, "1k"),
            (500.0, ".5k"),
        ] {
            if hz > hi || hz < lo {
                continue;
            }
            let frac = (hz_to_mel(hz) - mlo) / (mhi - mlo);
            let y = img.y + img.height - 1 - (frac * (img.height - 1) as f64).round() as u16;
            if last_y == Some(y) {
                continue;
            }
            last_y = Some(y);
            buf.set_string(inner.x, y, format!("{label:>3}"), dim);
        }
    }
    let y = img.y + img.height;
    if app.hop_s > 0.0 {
        // Ticks at least 8 columns apart, at round numbers of seconds.
        let step = [1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0]
            .into_iter()
            .find(|s| s / app.hop_s >= 8.0)
            .unwrap_or(60.0);
        let right = img.x + img.width;
        buf.set_string(right.saturating_sub(3), y, "now", dim);
        let mut k = 1.0;
        loop {
            let back = (k * step / app.hop_s).round() as u16;
            let label = format!("-{}s", k * step);
            let w = label.len() as u16;
            if back + w / 2 + 1 >= img.width {
                break;
            }
            buf.set_string(right - 1 - back - w / 2, y, label, dim);
            k += 1.0;
        }
    }
}
