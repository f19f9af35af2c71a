//! The whole screen drawn from an [`App`], with no side effects: status and model, tags with
//! confidence bars, the spectrogram, history, performance, level, keys, and the `?` overlay.

use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Gauge, List, ListItem, Paragraph};
use ratatui::Frame;

use super::app::App;
use super::widgets::spectrogram_panel;

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
        Line::from("  SILENCE  the window's loudest hop is below --silence-dbfs"),
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
