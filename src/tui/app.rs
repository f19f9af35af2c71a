//! What the screen shows: the [`App`] state, updated from session events and keys (ratatui's
//! examples' shape: state here, drawing in `render`, the loop in `event_loop`).

use std::collections::VecDeque;

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
    /// The newest hop's window is below the silence gate (its loudest hop).
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
