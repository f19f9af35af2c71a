//! The cpal side of capture (the `capture` feature): device listing, device choice, and a
//! callback that only converts, downmixes and pushes into the sample ring.

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{SampleFormat, SizedSample};

use super::{device_label, pick_device, CaptureError, CaptureInfo, DeviceInfo};
use crate::stream::ring::{push_interleaved, SampleProducer};

/// A device's human-readable name and stable id (cpal 0.17+ deprecated `name()` for these two).
fn name_and_id(d: &cpal::Device, index: usize) -> (String, String) {
    let name = d
        .description()
        .map(|desc| desc.name().to_string())
        .unwrap_or_else(|_| format!("device {index}"));
    let id = d.id().map(|id| id.id().to_string()).unwrap_or_default();
    (name, id)
}

/// Every input device of the default host.
pub fn list_devices() -> Result<Vec<DeviceInfo>, CaptureError> {
    let host = cpal::default_host();
    let default = host.default_input_device();
    let devices = host
        .input_devices()
        .map_err(|e| CaptureError::Devices(e.to_string()))?;
    let mut out = Vec::new();
    for (index, d) in devices.enumerate() {
        let (name, id) = name_and_id(&d, index);
        let configs = d
            .supported_input_configs()
            .map(|cs| {
                cs.map(|c| {
                    (
                        c.min_sample_rate(),
                        c.max_sample_rate(),
                        c.channels(),
                        c.sample_format().to_string(),
                    )
                })
                .collect()
            })
            .unwrap_or_default();
        let default_config = d
            .default_input_config()
            .ok()
            .map(|c| (c.sample_rate(), c.channels(), c.sample_format().to_string()));
        out.push(DeviceInfo {
            index,
            is_default: default.as_ref() == Some(&d),
            name,
            id,
            configs,
            default_config,
        });
    }
    Ok(out)
}

/// A running capture; dropping it stops the stream.
pub struct Capture {
    _stream: cpal::Stream,
    pub info: CaptureInfo,
}

fn find_device(wanted: Option<&str>) -> Result<cpal::Device, CaptureError> {
    let host = cpal::default_host();
    let Some(wanted) = wanted else {
        return host
            .default_input_device()
            .ok_or(CaptureError::NoDefaultDevice);
    };
    let devices: Vec<cpal::Device> = host
        .input_devices()
        .map_err(|e| CaptureError::Devices(e.to_string()))?
        .collect();
    let named: Vec<(String, String)> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| name_and_id(d, i))
        .collect();
    match pick_device(&named, wanted) {
        Some(i) => Ok(devices.into_iter().nth(i).expect("index in range")),
        None => Err(CaptureError::UnknownDevice {
            wanted: wanted.to_string(),
            available: if named.is_empty() {
                "none".into()
            } else {
                named
                    .iter()
                    .enumerate()
                    .map(|(i, (n, id))| device_label(i, n, id))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        }),
    }
}

fn build<T: SizedSample + Send + 'static>(
    device: &cpal::Device,
    config: cpal::StreamConfig,
    mut producer: SampleProducer,
    name: &str,
    on_error: impl FnMut(cpal::Error) + Send + 'static,
) -> Result<cpal::Stream, CaptureError>
where
    f32: cpal::FromSample<T>,
{
    let channels = config.channels as usize;
    // Fixed scratch owned by the callback: the callback itself never allocates.
    let mut scratch = vec![0.0f32; 1024];
    device
        .build_input_stream(
            config,
            move |data: &[T], _: &cpal::InputCallbackInfo| {
                push_interleaved(
                    &mut producer,
                    data,
                    channels,
                    |s| s.to_sample::<f32>(),
                    &mut scratch,
                );
            },
            on_error,
            None,
        )
        .map_err(|e| CaptureError::Build {
            device: name.to_string(),
            reason: e.to_string(),
        })
}

/// Opens `wanted` (an index, an id, a name or part of one, as [`pick_device`] reads it; the default device when `None`) in its
/// default configuration, or at `prefer` (rate, channels, format) when the device offers it,
/// and starts pushing mono samples into `producer`. `on_error` receives stream errors (from
/// cpal's thread; it must not block).
pub fn open(
    wanted: Option<&str>,
    prefer: Option<(u32, u16, SampleFormat)>,
    producer: SampleProducer,
    on_error: impl FnMut(cpal::Error) + Send + 'static,
) -> Result<Capture, CaptureError> {
    let device = find_device(wanted)?;
    let name = name_and_id(&device, 0).0;
    // On a machine without a sound card ALSA still offers a `default` device, which then
    // cannot be configured ("no longer available ... unplugged"): say what that means.
    let cfg_err = |reason: String| match wanted {
        None => CaptureError::DefaultUnusable { reason },
        Some(_) => CaptureError::Config {
            device: name.clone(),
            reason,
        },
    };
    let supported = match prefer {
        Some((rate, ch, fmt)) => device
            .supported_input_configs()
            .map_err(|e| cfg_err(e.to_string()))?
            .find(|c| c.channels() == ch && c.sample_format() == fmt && c.contains_rate(rate))
            .map(|c| c.with_sample_rate(rate))
            .ok_or_else(|| cfg_err(format!("{rate} Hz, {ch} channel(s), {fmt} not offered")))?,
        None => device
            .default_input_config()
            .map_err(|e| cfg_err(e.to_string()))?,
    };
    let format = supported.sample_format();
    let config: cpal::StreamConfig = supported.into();
    // cpal 0.18 passes the config by value (it is Copy); streams start paused (play below).
    let stream = match format {
        SampleFormat::I16 => build::<i16>(&device, config, producer, &name, on_error)?,
        SampleFormat::I32 => build::<i32>(&device, config, producer, &name, on_error)?,
        SampleFormat::U16 => build::<u16>(&device, config, producer, &name, on_error)?,
        SampleFormat::U8 => build::<u8>(&device, config, producer, &name, on_error)?,
        SampleFormat::F32 => build::<f32>(&device, config, producer, &name, on_error)?,
        SampleFormat::F64 => build::<f64>(&device, config, producer, &name, on_error)?,
        other => {
            return Err(CaptureError::Format {
                device: name,
                format: other.to_string(),
            })
        }
    };
    stream.play().map_err(|e| CaptureError::Build {
        device: name.clone(),
        reason: e.to_string(),
    })?;
    Ok(Capture {
        _stream: stream,
        info: CaptureInfo {
            device: name,
            sample_rate: config.sample_rate,
            channels: config.channels,
            format: format.to_string(),
        },
    })
}
