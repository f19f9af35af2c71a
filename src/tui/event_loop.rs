//! The live UI's loop: session events and keys in, [`render`](super::render) out, until a quit
//! key, the deadline or the session's end. Keys map to actions in [`on_key`], a pure function of
//! the state (tested without a terminal). `ratatui::init` installs a panic hook that restores
//! the terminal, and `restore` runs on every way out of the loop.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossterm::event::{self, Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::{render, App};
use crate::engine::Precision;
use crate::stream::session::{Event, Session};

/// What the UI (and the first JSON line of `listen --json`) shows about the session; the
/// command line builds it.
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

/// What a key asks of the session, after [`on_key`] has updated the screen's state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    None,
    Quit,
    /// Pause (true) or resume the source.
    Pause(bool),
    /// A new threshold on the smoothed scores.
    Threshold(f32),
}

/// Threshold step of `+` / `-`, and its range.
const THRESHOLD_STEP: f32 = 0.05;
const THRESHOLD_RANGE: (f32, f32) = (0.05, 0.95);

/// Applies a key press to `app` and says what the session must do.
pub fn on_key(app: &mut App, k: KeyEvent) -> Action {
    if k.kind != KeyEventKind::Press {
        return Action::None;
    }
    // Raw mode turns Ctrl-C into a key, not a signal: it quits like q.
    if k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL) {
        return Action::Quit;
    }
    // Any key closes the help overlay (and does nothing else).
    if app.help {
        app.help = false;
        return Action::None;
    }
    match k.code {
        KeyCode::Char('q') | KeyCode::Esc => Action::Quit,
        KeyCode::Char('?') | KeyCode::Char('h') => {
            app.help = true;
            Action::None
        }
        KeyCode::Char(' ') => {
            app.paused = !app.paused;
            Action::Pause(app.paused)
        }
        KeyCode::Char('+') | KeyCode::Char('=') => {
            app.threshold = (app.threshold + THRESHOLD_STEP).min(THRESHOLD_RANGE.1);
            Action::Threshold(app.threshold)
        }
        KeyCode::Char('-') => {
            app.threshold = (app.threshold - THRESHOLD_STEP).max(THRESHOLD_RANGE.0);
            Action::Threshold(app.threshold)
        }
        _ => Action::None,
    }
}

/// Runs the UI on the terminal until a quit key, `seconds` or the end of a file replay the user
/// leaves on screen; the terminal is restored on every way out.
pub fn run(
    session: Session,
    info: SessionInfo,
    threshold: f32,
    seconds: Option<f64>,
) -> std::io::Result<()> {
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
) -> std::io::Result<()> {
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
                match on_key(&mut app, k) {
                    Action::Quit => break,
                    Action::Pause(p) => session.paused.store(p, Ordering::Relaxed),
                    Action::Threshold(t) => {
                        let _ = session.threshold_tx.try_send(t);
                    }
                    Action::None => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
    }

    #[test]
    fn keys_do_what_the_key_bar_says() {
        let mut app = App {
            threshold: 0.5,
            ..App::default()
        };
        assert_eq!(on_key(&mut app, key('?')), Action::None);
        assert!(app.help);
        // With help open, q only closes it.
        assert_eq!(on_key(&mut app, key('q')), Action::None);
        assert!(!app.help);
        assert_eq!(on_key(&mut app, key(' ')), Action::Pause(true));
        assert_eq!(on_key(&mut app, key(' ')), Action::Pause(false));
        assert_eq!(on_key(&mut app, key('+')), Action::Threshold(0.55));
        for _ in 0..20 {
            on_key(&mut app, key('+'));
        }
        assert_eq!(app.threshold, 0.95);
        for _ in 0..40 {
            on_key(&mut app, key('-'));
        }
        assert!((app.threshold - 0.05).abs() < 1e-6);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        app.help = true;
        assert_eq!(
            on_key(&mut app, ctrl_c),
            Action::Quit,
            "Ctrl-C quits even over help"
        );
        app.help = false;
        assert_eq!(
            on_key(&mut app, KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE)),
            Action::Quit
        );
        assert_eq!(on_key(&mut app, key('x')), Action::None);
    }
}
