//! JEPA pretraining for audio-jepa (see ../shared/DESIGN.md and the project's issues): data
//! loading, masks, predictor, EMA target encoder, schedules, checkpoints.
//!
//! This crate depends on the root library (front end, encoder), never the reverse.

pub mod data;
