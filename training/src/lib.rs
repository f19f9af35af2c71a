//! audio-jepa-training: JEPA pretraining of the audio-jepa encoder.
//!
//! One concern per module, as in I-JEPA's src/: [`masks`] (multiblock, time-frequency,
//! curriculum), [`predictor`], [`jepa`] (model bundle, EMA), [`objective`] (targets and loss),
//! [`optim`] (AdamW), [`schedules`], [`data`] (file lists), [`features`] (cached log-mel),
//! [`loader`] (batches, student mixtures), [`monitor`] (collapse watch), [`train`] (step and
//! checkpoints), [`shards`] (compressed feature shards that travel), [`distributed`] (data-parallel
//! ranks: the collective, the launch environment) and [`rendezvous`] (NCCL id exchange), [`config`].

pub mod config;
pub mod data;
pub mod distributed;
pub mod features;
pub mod jepa;
pub mod loader;
pub mod masks;
pub mod monitor;
pub mod objective;
pub mod optim;
pub mod plot;
pub mod predictor;
pub mod rendezvous;
pub mod run_dir;
pub mod schedules;
pub mod shards;
pub mod train;
