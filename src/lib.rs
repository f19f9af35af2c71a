//! audio-jepa: a streaming Audio-JEPA encoder.
//!
//! The crate is what runs on the edge device. Layers, bottom up:
//! - [`config`]: typed, validated TOML profiles (`firmware-config/`).
//! - [`audio`]: any common audio file to mono f32 at the front end's rate.
//! - [`frontend`]: the Kaldi-compatible log-mel front end, offline and streaming, and patches.
//! - [`model`]: the ViT encoder over log-mel patches, and its safetensors checkpoints.
//! - [`engine`]: the same encoder on the CPU with its own f32 and int8 kernels, allocation-free.
//! - [`arrays`], [`render`]: `.npy` output and spectrogram images.
//!
//! The front end knows nothing of audio devices, threads or terminals; training (the
//! `audio-jepa-training` crate) and the streaming pipeline both build on it.

pub mod arrays;
pub mod audio;
pub mod config;
pub mod dataset;
pub mod default_model;
pub mod engine;
pub mod frontend;
pub mod render;
pub mod tagging;

pub use config::{FrontendConfig, Profile};
pub mod finetune;
pub mod model;
pub mod stream;
pub mod tui;
