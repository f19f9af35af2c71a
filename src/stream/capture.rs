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
    /// The host's human-readable name (cpal's device description).
    pub name: String,
    /// The host's stable identifier (ALSA: the PCM name, e.g. `hw:CARD=PCH,DEV=0`), which
    /// `--device` also accepts and which stays the same across reboots and replugging.
    pub id: String,
    pub is_default: bool,
    /// `(min rate, max rate, channels, sample format)` of each supported configuration.
    pub configs: Vec<(u32, u32, u16, String)>,
    /// The configuration capture would use.
    pub default_config: Option<(u32, u16, String)>,
}

impl DeviceInfo {
    /// `[index] name (id)`, as `ajepa devices` and the errors list a device.
    pub fn label(&self) -> String {
        device_label(self.index, &self.name, &self.id)
    }
}

/// `[index] name (id)`, the id left out where it says nothing more than the name.
pub fn device_label(index: usize, name: &str, id: &str) -> String {
    if id.is_empty() || id == name {
        format!("[{index}] {name}")
    } else {
        format!("[{index}] {name} ({id})")
    }
}

/// Which of `devices` (`(name, id)` in listing order) `wanted` means: an index, else an exact
/// id or name, else the first name or id that contains it. One rule for opening a device and
/// for everything that looks one up before opening it.
pub fn pick_device(devices: &[(String, String)], wanted: &str) -> Option<usize> {
    if let Ok(i) = wanted.parse::<usize>() {
        if i < devices.len() {
            return Some(i);
        }
    }
    devices
        .iter()
        .position(|(n, id)| id == wanted || n == wanted)
        .or_else(|| {
            devices
                .iter()
                .position(|(n, id)| n.contains(wanted) || id.contains(wanted))
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_is_picked_by_index_then_exact_id_or_name_then_part_of_one() {
        let d = |n: &str, id: &str| (n.to_string(), id.to_string());
        let devices = [
            d("Default ALSA Output", "default"),
            d("HDA Intel PCH, ALC257 Analog", "hw:CARD=PCH,DEV=0"),
            d("USB Microphone 2", "hw:CARD=Mic,DEV=0"),
        ];
        assert_eq!(pick_device(&devices, "1"), Some(1));
        // An index past the list is read as a name (none has it).
        assert_eq!(pick_device(&devices, "9"), None);
        assert_eq!(pick_device(&devices, "hw:CARD=Mic,DEV=0"), Some(2));
        assert_eq!(pick_device(&devices, "Default ALSA Output"), Some(0));
        assert_eq!(pick_device(&devices, "default"), Some(0));
        // An exact match wins over an earlier partial one.
        let twins = [d("Mic 2 loopback", "lb"), d("Mic 2", "hw:2")];
        assert_eq!(pick_device(&twins, "Mic 2"), Some(1));
        assert_eq!(pick_device(&twins, "loop"), Some(0));
        assert_eq!(pick_device(&devices, "Microphone"), Some(2));
        assert_eq!(pick_device(&devices, "CARD=PCH"), Some(1));
        assert_eq!(pick_device(&devices, "bluetooth"), None);
        assert_eq!(
            device_label(2, "USB Microphone 2", "hw:CARD=Mic,DEV=0"),
            "[2] USB Microphone 2 (hw:CARD=Mic,DEV=0)"
        );
        assert_eq!(device_label(0, "filecap", "filecap"), "[0] filecap");
    }
}
