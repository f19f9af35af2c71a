//! The cpal side of capture (the `capture` feature): device listing, device choice, and a
//! callback that only converts, downmixes and pushes into the sample ring.

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{SampleFormat, SizedSample};

use super::{CaptureError, CaptureInfo, DeviceInfo};
use crate::stream::ring::{push_interleaved, SampleProducer};

/// Every input device of the default host.
pub fn list_devices() -> Result<Vec<DeviceInfo>, CaptureError> {
    let host = cpal::default_host();
    let default_name = host.default_input_device().and_then(|d| d.name().ok());
    let devices = host
        .input_devices()
        .map_err(|e| CaptureError::Devices(e.to_string()))?;
    let mut out = Vec::new();
    for (index, d) in devices.enumerate() {
        let name = d.name().unwrap_or_else(|_| format!("device {index}"));
        let configs = d
            .supported_input_configs()
            .map(|cs| {
                cs.map(|c| {
                    (
                        c.min_sample_rate().0,
                        c.max_sample_rate().0,
                        c.channels(),
                        c.sample_format().to_string(),
                    )
                })
                .collect()
            })
            .unwrap_or_default();
        let default_config = d.default_input_config().ok().map(|c| {
            (
                c.sample_rate().0,
                c.channels(),
                c.sample_format().to_string(),
            )
        });
        out.push(DeviceInfo {
            index,
            is_default: default_name.as_deref() == Some(name.as_str()),
            name,
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
    let names: Vec<String> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| d.name().unwrap_or_else(|_| format!("device {i}")))
        .collect();
    let pick = match wanted.parse::<usize>() {
        Ok(i) if i < devices.len() => Some(i),
        _ => names
            .iter()
            .position(|n| n == wanted)
            .or_else(|| names.iter().position(|n| n.contains(wanted))),
    };
    match pick {
        Some(i) => Ok(devices.into_iter().nth(i).expect("index in range")),
        None => Err(CaptureError::UnknownDevice {
            wanted: wanted.to_string(),
            available: if names.is_empty() {
                "none".into()
            } else {
                names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| format!("[{i}] {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        }),
    }
}

fn build<T: SizedSample + Send + 'static>(
    device: &cpal::Device,
    config: &cpal::StreamConfig,
    mut producer: SampleProducer,
    name: &str,
    on_error: impl FnMut(cpal::StreamError) + Send + 'static,
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

/// Opens `wanted` (a name, part of one, or an index; the default device when `None`) in its
/// default configuration, or at `prefer` (rate, channels, format) when the device offers it,
/// and starts pushing mono samples into `producer`. `on_error` receives stream errors (from
/// cpal's thread; it must not block).
pub fn open(
    wanted: Option<&str>,
    prefer: Option<(u32, u16, SampleFormat)>,
    producer: SampleProducer,
    on_error: impl FnMut(cpal::StreamError) + Send + 'static,
) -> Result<Capture, CaptureError> {
    let device = find_device(wanted)?;
    let name = device.name().unwrap_or_else(|_| "input".into());
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
            .find(|c| {
                c.channels() == ch
                    && c.sample_format() == fmt
                    && c.min_sample_rate().0 <= rate
                    && rate <= c.max_sample_rate().0
            })
            .map(|c| c.with_sample_rate(cpal::SampleRate(rate)))
            .ok_or_else(|| cfg_err(format!("{rate} Hz, {ch} channel(s), {fmt} not offered")))?,
        None => device
            .default_input_config()
            .map_err(|e| cfg_err(e.to_string()))?,
    };
    let format = supported.sample_format();
    let config: cpal::StreamConfig = supported.into();
    let stream = match format {
        SampleFormat::I16 => build::<i16>(&device, &config, producer, &name, on_error)?,
        SampleFormat::I32 => build::<i32>(&device, &config, producer, &name, on_error)?,
        SampleFormat::U16 => build::<u16>(&device, &config, producer, &name, on_error)?,
        SampleFormat::U8 => build::<u8>(&device, &config, producer, &name, on_error)?,
        SampleFormat::F32 => build::<f32>(&device, &config, producer, &name, on_error)?,
        SampleFormat::F64 => build::<f64>(&device, &config, producer, &name, on_error)?,
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
            sample_rate: config.sample_rate.0,
            channels: config.channels,
            format: format.to_string(),
        },
    })
}
