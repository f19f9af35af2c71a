//! On-device adaptation: labeled sets, window embeddings of clips, the linear probe, full
//! fine-tuning and few-shot enrollment.

pub mod enroll;
pub mod full;
pub mod probe;
pub mod windows;
