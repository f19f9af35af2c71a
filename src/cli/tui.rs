//! The terminal UI's event loop: keys and session events in, `audio_jepa::ui::render` out.
//! `ratatui::init` installs a panic hook that restores the terminal, and `restore` runs on
//! every way out of the loop.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use audio_jepa::engine::Precision;
use audio_jepa::stream::session::{Event, Session};
use audio_jepa::ui::{render, App};
use crossterm::event::{self, Event as TermEvent, KeyCode, KeyEventKind, KeyModifiers};

/// What the UI (and the first JSON line of `listen --json`) shows about the session; `listen`
/// builds it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionInfo {
    pub model: String,
    pub untrained: bool,
    pub labels: Vec<String>,
    pub source: String,
    pub window_s: f64,
    pub hop_s: f64,
    /// The mel bands' range (the spectrogram's frequency axis).
    pub freq_range_hz: (f64, f64),
    /// The encoder's arithmetic (f32 or int8) and the CPU kernels it runs on.
    pub precision: Precision,
    pub kernels: String,
}

pub fn run(
    session: Session,
    info: SessionInfo,
    threshold: f32,
    seconds: Option<f64>,
) -> anyhow::Result<()> {
    let mut terminal = ratatui::init();
    let result = event_loop(&mut terminal, &session, info, threshold, seconds);
    ratatui::restore();
    result
}

fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    session: &Session,
    info: SessionInfo,
    threshold: f32,
    seconds: Option<f64>,
) -> anyhow::Result<()> {
    let mut app = App {
        model: info.model,
        source: info.source,
        untrained: info.untrained,
        threshold,
        truecolor: std::env::var("COLORTERM")
            .is_ok_and(|v| v.eq_ignore_ascii_case("truecolor") || v.eq_ignore_ascii_case("24bit")),
        freq_range_hz: Some(info.freq_range_hz),
        hop_s: info.hop_s,
        window_s: info.window_s,
        ..App::default()
    };
    let deadline = seconds.map(|s| Instant::now() + Duration::from_secs_f64(s));
    loop {
        while let Ok(ev) = session.events.try_recv() {
            match ev {
                Event::Hop(h) => {
                    app.on_hop(&h);
                    session.recycle(h);
                }
                Event::Stats(s) => app.stats = s,
                Event::Ended(_) => app.ended = true,
            }
        }
        terminal.draw(|f| render(f, &app))?;
        if event::poll(Duration::from_millis(50))? {
            if let TermEvent::Key(k) = event::read()? {
                if k.kind == KeyEventKind::Press {
                    // Raw mode turns Ctrl-C into a key, not a signal: it quits like q.
                    if k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL) {
                        break;
                    }
                    if app.help {
                        app.help = false;
                        continue;
                    }
                    match k.code {
                        KeyCode::Char('q') | KeyCode::Esc => break,
                        KeyCode::Char('?') | KeyCode::Char('h') => app.help = true,
                        KeyCode::Char(' ') => {
                            app.paused = !app.paused;
                            session.paused.store(app.paused, Ordering::Relaxed);
                        }
                        KeyCode::Char('+') | KeyCode::Char('=') => {
                            app.threshold = (app.threshold + 0.05).min(0.95);
                            let _ = session.threshold_tx.try_send(app.threshold);
                        }
                        KeyCode::Char('-') => {
                            app.threshold = (app.threshold - 0.05).max(0.05);
                            let _ = session.threshold_tx.try_send(app.threshold);
                        }
                        _ => {}
                    }
                }
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    session.stop();
    Ok(())
}
