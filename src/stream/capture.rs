//! Microphone capture through cpal: device listing, device choice, and a callback that only
//! converts, downmixes and pushes into the sample ring (cpal's examples/record_wav.rs shape,
//! with nothing in the callback that can block, allocate or panic).

#[cfg(feature = "capture")]
mod device;
#[cfg(feature = "capture")]
pub use device::{list_devices, open, Capture};

#[cfg(not(feature = "capture"))]
use super::ring::SampleProducer;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("no audio input device found (is a microphone connected? on Linux, is ALSA configured?); `ajepa devices` lists the inputs, `--input FILE` tags a file instead")]
    NoDefaultDevice,
    #[error("no usable audio input device: the default input cannot be opened ({reason}); `ajepa devices` lists the inputs, `--input FILE` tags a file instead")]
    DefaultUnusable { reason: String },
    #[error("no input device `{wanted}`; input devices: {available}")]
    UnknownDevice { wanted: String, available: String },
    #[error("cannot list audio devices: {0}")]
    Devices(String),
    #[error("device `{device}`: no usable input configuration: {reason}")]
    Config { device: String, reason: String },
    #[error("device `{device}`: cannot open the input stream: {reason}")]
    Build { device: String, reason: String },
    #[error("device `{device}`: sample format {format} is not supported")]
    Format { device: String, format: String },
    #[error("this build has no microphone capture (built without the `capture` feature); `--input FILE` tags a file instead")]
    NotBuilt,
}

/// One input device as `ajepa devices` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceInfo {
    pub index: usize,
    pub name: String,
    pub is_default: bool,
    /// `(min rate, max rate, channels, sample format)` of each supported configuration.
    pub configs: Vec<(u32, u32, u16, String)>,
    /// The configuration capture would use.
    pub default_config: Option<(u32, u16, String)>,
}

/// What an open capture delivers.
#[derive(Debug, Clone)]
pub struct CaptureInfo {
    pub device: String,
    pub sample_rate: u32,
    pub channels: u16,
    pub format: String,
}

/// Without the `capture` feature (the training crate, GPU machines, targets without an audio
/// SDK): the same API, saying that capture was left out of the build.
#[cfg(not(feature = "capture"))]
pub fn list_devices() -> Result<Vec<DeviceInfo>, CaptureError> {
    Err(CaptureError::NotBuilt)
}

/// A running capture (never made without the `capture` feature).
#[cfg(not(feature = "capture"))]
pub struct Capture {
    pub info: CaptureInfo,
}

/// See [`list_devices`]: always [`CaptureError::NotBuilt`].
#[cfg(not(feature = "capture"))]
pub fn open(
    _wanted: Option<&str>,
    _prefer: Option<std::convert::Infallible>,
    _producer: SampleProducer,
    _on_error: impl FnMut(String) + Send + 'static,
) -> Result<Capture, CaptureError> {
    Err(CaptureError::NotBuilt)
}
