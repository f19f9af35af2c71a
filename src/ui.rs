//! The live-tagging terminal UI: an [`App`] holding what is shown and a pure [`render`]
//! (ratatui's examples' shape); the event loop lives in the command line.

use std::collections::VecDeque;

use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Gauge, List, ListItem, Paragraph, Widget};
use ratatui::Frame;

use crate::stream::session::{HopEvent, Stats};

/// Columns of spectrogram history kept (bounded).
const HISTORY: usize = 256;

#[derive(Debug, Default)]
pub struct App {
    pub model: String,
    pub source: String,
    pub untrained: bool,
    pub threshold: f32,
    pub paused: bool,
    pub scores: Vec<(String, f32)>,
    /// RMS level of the newest hop's audio, dBFS.
    pub level_db: f32,
    pub spectrogram: VecDeque<Vec<f32>>,
    pub history: VecDeque<String>,
    pub stats: Stats,
    pub last_hop: Option<(u64, f64, f64)>,
    pub ended: bool,
    /// The newest window is unlike the top class's examples (the open-set check).
    pub unknown: bool,
    /// The newest hop is below the silence gate.
    pub silent: bool,
    /// The `?` overlay is shown.
    pub help: bool,
    /// The terminal shows 24-bit colour (`COLORTERM=truecolor`); otherwise the spectrogram
    /// uses the 256-colour palette.
    pub truecolor: bool,
    /// The mel bands' range, Hz (the frequency axis); `None` draws no axis.
    pub freq_range_hz: Option<(f64, f64)>,
    /// Seconds per spectrogram column (one column per hop); 0 draws no time scale.
    pub hop_s: f64,
    /// Seconds of audio before the first hop (the window).
    pub window_s: f64,
}

impl App {
    pub fn on_hop(&mut self, h: &HopEvent) {
        for t in h.tags_on_names() {
            self.push_history(format!("{:7.2}s  + {t}", h.t_audio_s));
        }
        for t in h.tags_off_names() {
            self.push_history(format!("{:7.2}s  - {t}", h.t_audio_s));
        }
        self.scores = h
            .top(h.scores.len())
            .map(|(l, s)| (l.to_string(), s))
            .collect();
        self.level_db = h.level_db;
        self.unknown = h.unknown;
        self.silent = h.silent;
        self.last_hop = Some((h.hop, h.compute_ms, h.capture_to_tag_ms));
        if self.spectrogram.len() == HISTORY {
            self.spectrogram.pop_front();
        }
        self.spectrogram.push_back(h.spectrum.clone());
    }

    fn push_history(&mut self, line: String) {
        if self.history.len() == 100 {
            self.history.pop_back();
        }
        self.history.push_front(line);
    }

    /// No hop yet: nothing measured to show.
    pub fn warming_up(&self) -> bool {
        self.last_hop.is_none() && !self.ended
    }
}

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
fn spectrogram_panel(f: &mut Frame, area: Rect, app: &App) {
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

/// The screen's areas from top to bottom; legible down to 80 x 24 (ten tags fit).
fn layout(area: Rect) -> [Rect; 5] {
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(1),
            Constraint::Min(12),
            Constraint::Length(7),
            Constraint::Length(3),
            Constraint::Length(1),
        ])
        .split(area);
    [rows[0], rows[1], rows[2], rows[3], rows[4]]
}

const KEYS: [(&str, &str); 4] = [
    ("q", "quit"),
    ("space", "pause"),
    ("+/-", "threshold"),
    ("?", "help"),
];

/// Draws the whole screen from `app` (no side effects).
pub fn render(f: &mut Frame, app: &App) {
    let [top, mid, low, level, keys] = layout(f.area());

    // Status first, so that a long model path cannot push it off screen.
    let flag = |text: &str, bg: Color| {
        Span::styled(
            format!(" {text} "),
            Style::default()
                .fg(Color::Black)
                .bg(bg)
                .add_modifier(Modifier::BOLD),
        )
    };
    let mut title = Vec::new();
    if app.paused {
        title.push(flag("PAUSED", Color::Yellow));
    }
    if app.ended {
        title.push(flag("ENDED", Color::Cyan));
    }
    if app.untrained {
        title.push(flag("UNTRAINED: tags are meaningless", Color::Yellow));
    }
    if app.warming_up() {
        title.push(flag("WARMING UP", Color::Gray));
    }
    title.push(Span::styled(
        " ajepa listen ",
        Style::default().add_modifier(Modifier::BOLD),
    ));
    title.push(Span::raw(format!("{}  |  {}", app.source, app.model)));
    f.render_widget(Paragraph::new(Line::from(title)), top);

    let cols = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(40), Constraint::Percentage(60)])
        .split(mid);
    tags_panel(f, cols[0], app);
    spectrogram_panel(f, cols[1], app);

    let cols = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(40), Constraint::Percentage(60)])
        .split(low);
    let items: Vec<ListItem> = app
        .history
        .iter()
        .map(|l| ListItem::new(l.as_str()))
        .collect();
    f.render_widget(
        List::new(items).block(Block::default().borders(Borders::ALL).title(" events ")),
        cols[0],
    );
    f.render_widget(
        Paragraph::new(performance_lines(app)).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" performance "),
        ),
        cols[1],
    );

    let block = Block::default()
        .borders(Borders::ALL)
        .title(" input level (RMS of the newest hop) ");
    if app.warming_up() {
        f.render_widget(
            Paragraph::new(format!(
                "warming up: the first hop comes after {:.2} s of audio",
                app.window_s
            ))
            .block(block),
            level,
        );
    } else {
        // -80 dBFS (a quiet room through a laptop microphone is about -60) to 0 dBFS.
        let ratio = ((app.level_db as f64 + 80.0) / 80.0).clamp(0.0, 1.0);
        f.render_widget(
            Gauge::default()
                .block(block)
                .gauge_style(Style::default().fg(Color::Cyan))
                .ratio(ratio)
                .label(format!("{:.1} dBFS", app.level_db)),
            level,
        );
    }

    let mut bar = Vec::new();
    for (key, what) in KEYS {
        bar.push(Span::styled(
            format!(" {key} "),
            Style::default().fg(Color::Black).bg(Color::Gray),
        ));
        bar.push(Span::raw(format!(" {what}  ")));
    }
    f.render_widget(Paragraph::new(Line::from(bar)), keys);

    if app.help {
        help_overlay(f, app);
    }
}

fn tags_panel(f: &mut Frame, area: Rect, app: &App) {
    let block = Block::default().borders(Borders::ALL).title(if app.silent {
        " SILENCE: too quiet to tag ".to_string()
    } else if app.unknown {
        " UNKNOWN: unlike every tag's examples ".to_string()
    } else {
        format!(" tags (smoothed; on >= {:.2}) ", app.threshold)
    });
    let inner = block.inner(area);
    f.render_widget(block, area);
    if app.scores.is_empty() {
        let text = if app.warming_up() {
            format!("warming up: tags after {:.2} s of audio", app.window_s)
        } else {
            "no tagging head loaded (--head): embeddings only".to_string()
        };
        f.render_widget(Paragraph::new(text), inner);
        return;
    }
    let rows = inner.height as usize;
    // Every tag when they fit; otherwise the best ones and a line saying how many are not shown.
    let shown = if app.scores.len() <= rows {
        app.scores.len()
    } else {
        rows.saturating_sub(1)
    };
    for (i, (label, score)) in app.scores.iter().take(shown).enumerate() {
        let r = Rect {
            y: inner.y + i as u16,
            height: 1,
            ..inner
        };
        let color = if *score >= app.threshold {
            Color::Green
        } else {
            Color::DarkGray
        };
        let g = Gauge::default()
            .gauge_style(Style::default().fg(color))
            .ratio((*score as f64).clamp(0.0, 1.0))
            .label(format!("{label} {score:.2}"));
        f.render_widget(g, r);
    }
    if shown < app.scores.len() && rows > 0 {
        f.render_widget(
            Paragraph::new(format!(
                "... {} more, below {:.2}",
                app.scores.len() - shown,
                app.scores[shown].1
            )),
            Rect {
                y: inner.y + shown as u16,
                height: 1,
                ..inner
            },
        );
    }
}

fn performance_lines(app: &App) -> Vec<Line<'static>> {
    let s = &app.stats;
    if app.warming_up() {
        return vec![Line::from("warming up: no hop yet, nothing measured")];
    }
    let cpu = s
        .cpu_percent
        .map(|c| format!("{c:.0} %"))
        .unwrap_or_else(|| "n/a".into());
    vec![
        Line::from(format!(
            "per-hop latency  p50 {:.2} ms   p99 {:.2} ms",
            s.hop_ms_p50, s.hop_ms_p99
        )),
        Line::from(format!(
            "capture-to-tag   p50 {:.1} ms   p99 {:.1} ms",
            s.capture_to_tag_ms_p50, s.capture_to_tag_ms_p99
        )),
        Line::from(format!(
            "real-time factor {:.4}   CPU {cpu}",
            s.real_time_factor
        )),
        Line::from(format!(
            "hops {}   skipped hops {}   dropped samples {}",
            s.hops, s.skipped_hops, s.dropped_samples
        )),
        Line::from(format!("audio {:.1} s   wall {:.1} s", s.audio_s, s.wall_s)),
    ]
}

/// The `?` overlay: the keys and what the screen shows; any key closes it.
fn help_overlay(f: &mut Frame, app: &App) {
    let text = vec![
        Line::styled("keys", Style::default().add_modifier(Modifier::BOLD)),
        Line::from("  q, Esc, Ctrl-C   quit (the terminal is restored)"),
        Line::from("  space            pause: a file waits, live audio is skipped"),
        Line::from("  + / -            tag threshold up / down by 0.05"),
        Line::from("  ?                this help; any key closes it"),
        Line::styled("the screen", Style::default().add_modifier(Modifier::BOLD)),
        Line::from(format!(
            "  tags     each class's score smoothed over hops; on at {:.2}",
            app.threshold
        )),
        Line::from("  UNKNOWN  the window is unlike the top tag's examples"),
        Line::from("  SILENCE  the hop is below --silence-dbfs: no tag turns on"),
        Line::from("  log-mel  the mel bands, one column per hop, newest right"),
        Line::from("  level    RMS of the newest hop's audio, dBFS"),
    ];
    let area = f.area();
    let (w, h) = (66.min(area.width), (text.len() as u16 + 2).min(area.height));
    let r = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(text).block(Block::default().borders(Borders::ALL).title(" help ")),
        r,
    );
}
