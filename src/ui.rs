//! The live-tagging terminal UI: an [`App`] holding what is shown and a pure [`render`]
//! (ratatui's examples' shape); the event loop lives in the command line.

use std::collections::VecDeque;

use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Gauge, List, ListItem, Paragraph, Widget};
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
    pub level_db: f32,
    pub spectrogram: VecDeque<Vec<f32>>,
    pub history: VecDeque<String>,
    pub stats: Stats,
    pub last_hop: Option<(u64, f64, f64)>,
    pub ended: bool,
    /// The newest window is unlike the top class's examples (the open-set check).
    pub unknown: bool,
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
}

/// Magma-like colour of `v` in [0, 1].
fn heat(v: f32) -> Color {
    let c = colorous::MAGMA.eval_continuous(v.clamp(0.0, 1.0) as f64);
    Color::Rgb(c.r, c.g, c.b)
}

/// The scrolling spectrogram: time right (newest at the right edge), frequency up.
struct Spectrogram<'a>(&'a VecDeque<Vec<f32>>);

impl Widget for Spectrogram<'_> {
    fn render(self, area: Rect, buf: &mut ratatui::buffer::Buffer) {
        let cols = self.0.len().min(area.width as usize);
        let skip = self.0.len() - cols;
        // Log-mel values: map a fixed range (floor -15.9 to about +8) to the colour scale.
        let (lo, hi) = (-12.0f32, 6.0f32);
        for (x, col) in self.0.iter().skip(skip).enumerate() {
            let n = col.len().max(1);
            for y in 0..area.height as usize {
                // Each cell is two pixels (upper and lower half block).
                let mut px = [Color::Black; 2];
                for (k, p) in px.iter_mut().enumerate() {
                    let row_from_bottom = (area.height as usize - 1 - y) * 2 + (1 - k);
                    let bin = row_from_bottom * n / (area.height as usize * 2);
                    if let Some(v) = col.get(bin) {
                        *p = heat((v - lo) / (hi - lo));
                    }
                }
                let cell = &mut buf[(area.x + x as u16, area.y + y as u16)];
                cell.set_symbol("▀").set_fg(px[0]).set_bg(px[1]);
            }
        }
    }
}

/// Draws the whole screen from `app` (no side effects).
pub fn render(f: &mut Frame, app: &App) {
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(3),
            Constraint::Min(8),
            Constraint::Length(10),
            Constraint::Length(4),
        ])
        .split(f.area());

    let mut title = vec![Span::styled(
        " ajepa listen ",
        Style::default().add_modifier(Modifier::BOLD),
    )];
    // The flag goes first so that a long path cannot push it off screen.
    if app.untrained {
        title.push(Span::styled(
            " UNTRAINED MODEL: tags are meaningless ",
            Style::default()
                .fg(Color::Black)
                .bg(Color::Yellow)
                .add_modifier(Modifier::BOLD),
        ));
    }
    title.push(Span::raw(format!(" {}  |  {}", app.source, app.model)));
    if app.paused {
        title.push(Span::styled("  PAUSED", Style::default().fg(Color::Yellow)));
    }
    if app.ended {
        title.push(Span::styled(
            "  ENDED (q quits)",
            Style::default().fg(Color::Cyan),
        ));
    }
    f.render_widget(
        Paragraph::new(Line::from(title)).block(Block::default().borders(Borders::ALL)),
        rows[0],
    );

    let mid = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(40), Constraint::Percentage(60)])
        .split(rows[1]);
    // Top tags with confidence bars.
    let tag_block = Block::default()
        .borders(Borders::ALL)
        .title(if app.unknown {
            format!(
                " UNKNOWN sound: unlike the examples of every tag (threshold {:.2}) ",
                app.threshold
            )
        } else {
            format!(" tags (threshold {:.2}, +/-) ", app.threshold)
        });
    let inner = tag_block.inner(mid[0]);
    f.render_widget(tag_block, mid[0]);
    if app.scores.is_empty() {
        f.render_widget(
            Paragraph::new("no tagging head loaded (--head): embeddings only"),
            inner,
        );
    } else {
        for (i, (label, score)) in app.scores.iter().take(inner.height as usize).enumerate() {
            let area = Rect {
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
                .label(format!("{label} {:.2}", score));
            f.render_widget(g, area);
        }
    }
    let spec_block = Block::default()
        .borders(Borders::ALL)
        .title(" log-mel (frequency up, time right) ");
    let spec_area = spec_block.inner(mid[1]);
    f.render_widget(spec_block, mid[1]);
    f.render_widget(Spectrogram(&app.spectrogram), spec_area);

    let low = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(40), Constraint::Percentage(60)])
        .split(rows[2]);
    let items: Vec<ListItem> = app
        .history
        .iter()
        .map(|l| ListItem::new(l.as_str()))
        .collect();
    f.render_widget(
        List::new(items).block(Block::default().borders(Borders::ALL).title(" events ")),
        low[0],
    );
    let s = &app.stats;
    let cpu = s
        .cpu_percent
        .map(|c| format!("{c:.0} %"))
        .unwrap_or_else(|| "n/a".into());
    let text = vec![
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
    ];
    f.render_widget(
        Paragraph::new(text).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" performance "),
        ),
        low[1],
    );

    // Input level: log-mel mean of the newest column, about -70 dB (silence) to 0 dB.
    let ratio = ((app.level_db as f64 + 70.0) / 70.0).clamp(0.0, 1.0);
    f.render_widget(
        Gauge::default()
            .block(
                Block::default()
                    .borders(Borders::ALL)
                    .title(" input level  (q quit, space pause) "),
            )
            .gauge_style(Style::default().fg(Color::Cyan))
            .ratio(ratio)
            .label(format!("{:.1} dB", app.level_db)),
        rows[3],
    );
}
