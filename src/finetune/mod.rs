//! On-device adaptation: labeled sets, features of clips, and the linear probe.

pub mod labeled;
pub mod probe;
