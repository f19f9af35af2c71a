//! The streaming path: capture (cpal) -> lock-free ring -> worker (resample, streaming log-mel,
//! encoder per hop) -> events. The model and the front end know nothing of this module.

pub mod capture;
pub mod ring;
pub mod session;
pub mod worker;
