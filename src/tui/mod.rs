//! The live-tagging terminal UI, in ratatui's examples' shape: the [`App`] state (`app`), a
//! pure [`render`] of it (`render`, with the spectrogram widget in `widgets`), and the event
//! loop that feeds it session events and keys ([`run`], `event_loop`). `ajepa listen` builds a
//! [`SessionInfo`] and calls [`run`]; tests draw [`render`] into ratatui's `TestBackend`.

mod app;
mod event_loop;
mod render;
mod widgets;

pub use app::App;
pub use event_loop::{on_key, run, Action, SessionInfo};
pub use render::render;
