//! audio-jepa: a streaming Audio-JEPA encoder.
//!
//! The crate is what runs on the edge device. Layers, bottom up:
//! - [`config`]: typed, validated TOML profiles (`firmware-config/`).
//! - [`audio`]: any common audio file to mono f32 at the front end's rate.
//! - [`frontend`]: the Kaldi-compatible log-mel front end, offline and streaming, and patches.
//! - [`quant`]: int8 weight quantization, what checkpoints store and the engine packs.
//! - [`model`]: the ViT encoder over log-mel patches, and its safetensors checkpoints.
//! - [`engine`]: the same encoder on the CPU with its own f32 and int8 kernels, allocation-free.
//! - [`arrays`], [`render`]: `.npy` output and spectrogram images.
//! - [`bench`]: `ajepa bench`'s timings and report (per hop cost against a profile's budget).
//!
//! The front end knows nothing of audio devices, threads or terminals; training (the
//! `audio-jepa-training` crate) and the streaming pipeline both build on it.

pub mod arrays;
pub mod audio;
pub mod bench;
pub mod config;
pub mod dataset;
pub mod default_model;
pub mod engine;
pub mod frontend;
pub mod quant;
pub mod render;
pub mod tagging;

pub use config::{FrontendConfig, Profile};
pub mod finetune;
pub mod model;
pub mod stream;
pub mod tui;
