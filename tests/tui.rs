//! The live UI's screen (issue 16, item 5), drawn by `audio_jepa::tui::render` into ratatui's
//! `TestBackend` at the sizes people use: 80 x 24 (every tag of a 10-class head, the key bar,
//! the axes), 120 x 36; "warming up" before the first hop instead of measurements of nothing;
//! the help overlay; the status ahead of a long model path; the 256-colour fallback.

mod common;

use audio_jepa::stream::session::{HopEvent, Stats};
use audio_jepa::tui::{render, App};
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::Color;
use ratatui::Terminal;

const CLASSES: [&str; 10] = [
    "chainsaw",
    "clock_tick",
    "crackling_fire",
    "crying_baby",
    "dog",
    "helicopter",
    "rain",
    "rooster",
    "sea_waves",
    "sneezing",
];

fn app() -> App {
    App {
        model: "/home/someone/a/rather/long/path/to/models/my-encoder/encoder.safetensors".into(),
        source: "file clip.flac".into(),
        threshold: 0.5,
        freq_range_hz: Some((20.0, 8000.0)),
        hop_s: 0.48,
        window_s: 0.96,
        ..App::default()
    }
}

fn hop(k: u64) -> HopEvent {
    HopEvent {
        hop: k,
        t_audio_s: 0.96 + 0.48 * k as f64,
        compute_ms: 3.0,
        capture_to_tag_ms: 6.0,
        level_db: -23.4,
        labels: CLASSES
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .into(),
        scores: (0..10).map(|c| (c, 0.9 - 0.08 * c as f32)).collect(),
        unknown: false,
        silent: false,
        similarity: 0.5,
        tags_on: if k == 0 { vec![0] } else { vec![] },
        tags_off: vec![],
        spectrum: (0..128).map(|b| -12.0 + 18.0 * b as f32 / 127.0).collect(),
        pooled: vec![],
    }
}

fn draw(app: &App, w: u16, h: u16) -> Buffer {
    let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
    term.draw(|f| render(f, app)).unwrap();
    term.backend().buffer().clone()
}

fn running() -> App {
    let mut a = app();
    for k in 0..40 {
        a.on_hop(&hop(k));
    }
    a.stats = Stats {
        hops: 40,
        hop_ms_p50: 3.1,
        hop_ms_p99: 5.2,
        real_time_factor: 0.0065,
        ..Stats::default()
    };
    a
}

#[test]
fn every_tag_the_keys_and_the_axes_fit_at_80x24_and_120x36() {
    let a = running();
    for (w, h) in [(80, 24), (120, 36)] {
        let screen = common::screen(&draw(&a, w, h));
        for (c, name) in CLASSES.iter().enumerate() {
            let needle = format!("{name} {:.2}", 0.9 - 0.08 * c as f32);
            assert!(
                screen.contains(&needle),
                "{w}x{h}: `{needle}` missing\n{screen}"
            );
        }
        for needle in [
            "q  quit",
            "space  pause",
            "?  help",
            "on >= 0.50",
            "-23.4 dBFS",
            "8k",
            "1k",
            "now",
            "-5s",
            "p50 3.10 ms",
            "+ chainsaw",
        ] {
            assert!(
                screen.contains(needle),
                "{w}x{h}: `{needle}` missing\n{screen}"
            );
        }
        assert!(!screen.contains("warming up"), "{screen}");
    }
}

#[test]
fn a_long_list_of_tags_says_how_many_are_not_shown() {
    let mut a = running();
    a.scores = (0..30)
        .map(|c| (format!("class{c}"), 0.5 - 0.01 * c as f32))
        .collect();
    let screen = common::screen(&draw(&a, 80, 24));
    // 10 rows: 9 tags and a line for the other 21.
    assert!(screen.contains("class8 0.42"), "{screen}");
    assert!(!screen.contains("class9 "), "{screen}");
    assert!(screen.contains("21 more, below 0.41"), "{screen}");
}

#[test]
fn before_the_first_hop_the_screen_says_warming_up_not_zeros() {
    let a = app();
    let screen = common::screen(&draw(&a, 80, 24));
    assert!(screen.contains("WARMING UP"), "{screen}");
    assert!(
        screen.contains("the first hop comes after 0.96 s of audio"),
        "{screen}"
    );
    for wrong in ["0.0 dB", "-0.0000", "p50 0.00"] {
        assert!(
            !screen.contains(wrong),
            "`{wrong}` before any hop:\n{screen}"
        );
    }
}

#[test]
fn the_status_comes_before_the_model_path_and_help_lists_the_keys() {
    let mut a = running();
    a.paused = true;
    a.untrained = true;
    let first_line: String = common::screen(&draw(&a, 80, 24))
        .lines()
        .next()
        .unwrap()
        .to_string();
    let paused = first_line.find("PAUSED").expect("PAUSED on the first line");
    let untrained = first_line
        .find("UNTRAINED")
        .expect("UNTRAINED on the first line");
    assert!(paused < untrained, "{first_line}");
    // The path is cut at the screen's edge, after the flags.
    assert!(
        first_line
            .find("file clip.flac")
            .is_some_and(|p| p > untrained),
        "{first_line}"
    );

    a.help = true;
    let screen = common::screen(&draw(&a, 80, 24));
    for needle in [
        "q, Esc, Ctrl-C",
        "a file waits",
        "dBFS",
        "any key closes it",
    ] {
        assert!(
            screen.contains(needle),
            "help: `{needle}` missing\n{screen}"
        );
    }
}

#[test]
fn a_silent_hop_says_so_over_the_tags() {
    let mut a = running();
    let mut h = hop(40);
    h.silent = true;
    h.level_db = -91.0;
    a.on_hop(&h);
    let screen = common::screen(&draw(&a, 80, 24));
    assert!(screen.contains("SILENCE: too quiet to tag"), "{screen}");
    assert!(screen.contains("-91.0 dBFS"), "{screen}");
}

#[test]
fn without_truecolor_the_spectrogram_uses_the_256_colour_palette() {
    let mut a = running();
    let cells =
        |buf: &Buffer| -> Vec<Color> { buf.content.iter().flat_map(|c| [c.fg, c.bg]).collect() };
    a.truecolor = true;
    let rgb = cells(&draw(&a, 80, 24));
    assert!(rgb.iter().any(|c| matches!(c, Color::Rgb(..))));
    a.truecolor = false;
    let indexed = cells(&draw(&a, 80, 24));
    assert!(!indexed.iter().any(|c| matches!(c, Color::Rgb(..))));
    // The colour cube's entries only (16-231).
    assert!(indexed
        .iter()
        .any(|c| matches!(c, Color::Indexed(i) if (16..=231).contains(i))));
}
