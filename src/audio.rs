//! Audio files in, 16 kHz mono f32 out.
//!
//! Decoding is symphonia's (WAV, FLAC, Ogg/Vorbis, MP3; 8 to 32-bit integer and float PCM), the
//! downmix is the mean of the channels, and resampling is rubato's synchronous FFT resampler with
//! its delay removed, so sample `i` of the output is time `i / rate` of the input. Every failure
//! is an [`AudioError`] that names the file and the cause.

use std::fs::File;
use std::path::{Path, PathBuf};

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler, WindowFunction};
use symphonia::core::codecs::audio::well_known::{CODEC_ID_MP3, CODEC_ID_VORBIS};
use symphonia::core::codecs::audio::{AudioDecoderOptions, CODEC_ID_NULL_AUDIO};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

/// Why a file could not be turned into samples.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("{path}: no such file")]
    NotFound { path: PathBuf },
    #[error("{path}: is a directory, not an audio file")]
    NotAFile { path: PathBuf },
    #[error("{path}: cannot read")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: file is empty")]
    EmptyFile { path: PathBuf },
    #[error("{path}: contains no audio samples")]
    NoSamples { path: PathBuf },
    #[error("{path}: unsupported or unrecognised format: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    #[error("{path}: corrupt audio: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: truncated: header promises {expected} frames, file holds {found}")]
    Truncated {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("cannot resample {from} Hz to {to} Hz: {reason}")]
    Resample { from: u32, to: u32, reason: String },
}

/// Mono audio at a known rate, with what the source file was.
#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    pub samples: Vec<f32>,
    pub sample_rate: u32,
    pub source_rate: u32,
    pub source_channels: usize,
}

impl Audio {
    pub fn duration_secs(&self) -> f64 {
        self.samples.len() as f64 / self.sample_rate as f64
    }
}

/// File extensions the decoder reads (lower case).
pub const AUDIO_EXTENSIONS: &[&str] = &["wav", "flac", "ogg", "oga", "mp3"];

/// Whether `path` has one of [`AUDIO_EXTENSIONS`] (any case).
pub fn is_audio_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| AUDIO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Every audio file below `dir`, recursively, sorted (so runs are reproducible); the error
/// names the folder that could not be read.
pub fn audio_files_below(dir: &Path) -> Result<Vec<PathBuf>, (PathBuf, std::io::Error)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| (d.clone(), e))?;
        for entry in entries {
            let path = entry.map_err(|e| (d.clone(), e))?.path();
            if path.is_dir() {
                stack.push(path);
            } else if is_audio_file(&path) {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Decodes `path`, downmixes it to mono and resamples it to `rate` Hz.
pub fn load(path: impl AsRef<Path>, rate: u32) -> Result<Audio, AudioError> {
    let decoded = decode_mono(path.as_ref())?;
    let samples = resample(&decoded.samples, decoded.sample_rate, rate)?;
    Ok(Audio {
        samples,
        sample_rate: rate,
        source_rate: decoded.sample_rate,
        source_channels: decoded.source_channels,
    })
}

/// The largest sample magnitude accepted (full scale is 1).
pub const MAX_SAMPLE: f32 = 1e3;

/// The sample rates accepted (Hz): every real recording lies inside; a header outside is corrupt
/// or hostile (0 Hz made symphonia's WAV reader panic, 1 Hz or 4.29 GHz made resampling to 16 kHz
/// allocate tens of gigabytes).
pub const RATE_RANGE: std::ops::RangeInclusive<u32> = 1_000..=768_000;

fn check_rate(path: &Path, rate: u32) -> Result<(), AudioError> {
    if RATE_RANGE.contains(&rate) {
        return Ok(());
    }
    Err(AudioError::Corrupt {
        path: path.to_path_buf(),
        reason: format!(
            "the header declares a sample rate of {rate} Hz (supported: {} Hz to {} Hz)",
            RATE_RANGE.start(),
            RATE_RANGE.end()
        ),
    })
}

/// What a WAV file's header says, read before symphonia sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WavHeader {
    rate: u32,
    /// Channels and bits per sample as the `fmt ` chunk states them.
    channels: u16,
    bits: u16,
    /// The RIFF or data size is 0xFFFFFFFF or 0: a stream written before its length was known
    /// (`arecord` to a pipe, ffmpeg to stdout). Its real length is whatever the file holds.
    open_ended: bool,
}

/// The first 4 KiB of an open regular file (enough for [`wav_header`]), leaving it at its start
/// for the decoder.
fn file_head(path: &Path, file: &mut File) -> Result<Vec<u8>, AudioError> {
    use std::io::{Read, Seek};
    let mut head = Vec::with_capacity(4096);
    let io = |source| AudioError::Io {
        path: path.to_path_buf(),
        source,
    };
    file.by_ref()
        .take(4096)
        .read_to_end(&mut head)
        .map_err(io)?;
    file.rewind().map_err(io)?;
    Ok(head)
}

/// The sample rate and length convention of a RIFF/WAVE file from its first bytes (`None` for
/// other files): symphonia asserts on a rate of 0 and allocates by the stated rate, so the rate
/// is checked before it decodes.
fn wav_header(head: &[u8]) -> Option<WavHeader> {
    let head = &head[..head.len().min(4096)];
    if head.len() < 12 || &head[0..4] != b"RIFF" || &head[8..12] != b"WAVE" {
        return None;
    }
    let riff_size = u32::from_le_bytes(head[4..8].try_into().ok()?);
    let mut open_ended = riff_size == u32::MAX || riff_size == 0;
    let mut fmt = None;
    let mut at = 12;
    while at + 8 <= head.len() {
        let id = &head[at..at + 4];
        let size32 = u32::from_le_bytes(head[at + 4..at + 8].try_into().ok()?);
        if id == b"fmt " {
            let f = head.get(at + 8..at + 24)?;
            let u16_at = |i: usize| u16::from_le_bytes([f[i], f[i + 1]]);
            fmt = Some((
                u32::from_le_bytes([f[4], f[5], f[6], f[7]]),
                u16_at(2),
                u16_at(14),
            ));
        } else if id == b"data" {
            open_ended |= size32 == u32::MAX || size32 == 0;
            break;
        }
        // Chunks are padded to an even size.
        let size = size32 as usize;
        at = at
            .checked_add(8)?
            .checked_add(size)?
            .checked_add(size & 1)?;
    }
    let (rate, channels, bits) = fmt?;
    Some(WavHeader {
        rate,
        channels,
        bits,
        open_ended,
    })
}

/// The most channels a WAV file may declare. symphonia 0.6 reads up to 26 (its speaker
/// positions) and multiplies counts as 16-bit numbers before checking them; wider PCM files are
/// read by [`decode_wide_pcm`], so the bound is only there to refuse nonsense.
const MAX_WAV_CHANNELS: u16 = 1024;

/// The most bytes read from a pipe or other stream without a length (a regular file of any
/// size is decoded from disk): 30 minutes of 48 kHz stereo 32-bit audio.
pub const MAX_STREAM_BYTES: u64 = 1 << 30;

/// Reads a stream without a length whole, refusing one longer than [`MAX_STREAM_BYTES`]
/// instead of growing without bound.
fn read_stream(path: &Path, file: File) -> Result<Vec<u8>, AudioError> {
    use std::io::Read;
    let mut bytes = Vec::new();
    file.take(MAX_STREAM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| AudioError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > MAX_STREAM_BYTES {
        return Err(AudioError::Unsupported {
            path: path.to_path_buf(),
            reason: format!(
                "a pipe or stream longer than {} MiB; save it to a file first",
                MAX_STREAM_BYTES >> 20
            ),
        });
    }
    Ok(bytes)
}

/// Decodes `path` and downmixes it to mono at the file's own rate.
pub fn decode_mono(path: &Path) -> Result<Audio, AudioError> {
    // A decoder panic on a malformed file is that file's error, never the caller's crash (a batch
    // job reports it and goes on).
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode_checked(path))).unwrap_or_else(
        |_| {
            Err(AudioError::Corrupt {
                path: path.to_path_buf(),
                reason: "the decoder failed on a malformed header or stream".into(),
            })
        },
    )
}

fn decode_checked(path: &Path) -> Result<Audio, AudioError> {
    let p = || path.to_path_buf();
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => AudioError::NotFound { path: p() },
        _ => AudioError::Io {
            path: p(),
            source: e,
        },
    })?;
    if meta.is_dir() {
        return Err(AudioError::NotAFile { path: p() });
    }
    let mut file = File::open(path).map_err(|source| AudioError::Io { path: p(), source })?;
    // A named pipe, `/dev/stdin` or a process substitution (`<(sox ...)`) has no length and can
    // be read once: read it whole, up to a bound, and decode from memory. A regular file is
    // decoded from disk.
    let (source, len, head): (Box<dyn symphonia::core::io::MediaSource>, u64, Vec<u8>) =
        if meta.is_file() {
            let head = file_head(path, &mut file)?;
            (Box::new(file), meta.len(), head)
        } else {
            let bytes = read_stream(path, file)?;
            let head = bytes[..bytes.len().min(4096)].to_vec();
            let n = bytes.len() as u64;
            (Box::new(std::io::Cursor::new(bytes)), n, head)
        };
    let mut source = Some(source);
    if len == 0 {
        return Err(AudioError::EmptyFile { path: p() });
    }
    let wav = wav_header(&head);
    if let Some(h) = wav {
        check_rate(path, h.rate)?;
        // symphonia's WAV reader multiplies these as 16-bit numbers before it checks them (an
        // overflow panic in 0.6 on a header claiming 40000 channels): hold them to what a
        // recording can have first.
        if !(1..=MAX_WAV_CHANNELS).contains(&h.channels) {
            return Err(AudioError::Corrupt {
                path: p(),
                reason: format!(
                    "the WAV header declares {} channels (1 to {MAX_WAV_CHANNELS} are read)",
                    h.channels
                ),
            });
        }
        if h.bits > 64 {
            return Err(AudioError::Corrupt {
                path: p(),
                reason: format!("the WAV header declares {} bits per sample", h.bits),
            });
        }
        if usize::from(h.channels) > SYMPHONIA_MAX_CHANNELS {
            // More channels than symphonia names speaker positions for: plain PCM is read here.
            let mut bytes = Vec::new();
            if let Some(mut src) = source.take() {
                use std::io::Read;
                src.by_ref()
                    .take(MAX_STREAM_BYTES + 1)
                    .read_to_end(&mut bytes)
                    .map_err(|source| AudioError::Io { path: p(), source })?;
            }
            if bytes.len() as u64 > MAX_STREAM_BYTES {
                return Err(AudioError::Unsupported {
                    path: p(),
                    reason: format!(
                        "a WAV of more than {SYMPHONIA_MAX_CHANNELS} channels over {} MiB",
                        MAX_STREAM_BYTES >> 20
                    ),
                });
            }
            let (samples, frames, expected) = decode_wide_pcm(&bytes, &h)
                .map_err(|reason| AudioError::Unsupported { path: p(), reason })?;
            if !h.open_ended && frames < expected {
                return Err(AudioError::Truncated {
                    path: p(),
                    expected,
                    found: frames,
                });
            }
            if frames == 0 {
                return Err(AudioError::NoSamples { path: p() });
            }
            check_samples(path, &samples)?;
            return Ok(Audio {
                samples,
                sample_rate: h.rate,
                source_rate: h.rate,
                source_channels: usize::from(h.channels),
            });
        }
    }
    let Some(source) = source else {
        return Err(AudioError::NoSamples { path: p() });
    };
    let mss = MediaSourceStream::new(source, Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    let mut format = symphonia::default::get_probe()
        .probe(
            &hint,
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|e| classify(path, e))?;
    let (track_id, params, n_frames) = format
        .tracks()
        .iter()
        .find_map(|t| {
            let a = t.codec_params.as_ref()?.audio()?;
            (a.codec != CODEC_ID_NULL_AUDIO).then(|| (t.id, a.clone(), t.num_frames))
        })
        .ok_or_else(|| AudioError::Unsupported {
            path: p(),
            reason: "no audio track".into(),
        })?;
    if let Some(rate) = params.sample_rate {
        check_rate(path, rate)?;
    }
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(|e| classify(path, e))?;

    // The header's frame count is a hint only: a tiny file may claim billions of frames. No
    // codec here yields more than ~16 frames per byte (4-bit ADPCM, compressed FLAC is less).
    let plausible = len.saturating_mul(16);
    let mut samples: Vec<f32> =
        Vec::with_capacity(n_frames.unwrap_or(0).min(plausible).min(1 << 26) as usize);
    let mut sample_rate = params.sample_rate.unwrap_or(0);
    let mut channels = params.channels.map(|c| c.count()).unwrap_or(0);
    let mut frames: u64 = 0;
    // One interleaved buffer for every packet (its capacity grows to the largest packet).
    let mut interleaved: Vec<f32> = Vec::new();
    loop {
        let packet = match format.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) => break,
            // symphonia reports the end of a stream as an unexpected EOF.
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                break
            }
            Err(e) => return Err(classify(path, e)),
        };
        if packet.track_id != track_id {
            continue;
        }
        let buf = match decoder.decode(&packet) {
            Ok(buf) => buf,
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                break
            }
            Err(e) => return Err(classify(path, e)),
        };
        let n = buf.frames();
        if n == 0 {
            continue;
        }
        sample_rate = buf.spec().rate();
        check_rate(path, sample_rate)?;
        channels = buf.spec().channels().count();
        if channels == 0 {
            return Err(AudioError::Corrupt {
                path: p(),
                reason: "a packet with no channels".into(),
            });
        }
        buf.copy_to_vec_interleaved(&mut interleaved);
        let scale = 1.0 / channels as f32;
        samples.extend(
            interleaved[..(n * channels).min(interleaved.len())]
                .chunks_exact(channels)
                .map(|frame| frame.iter().sum::<f32>() * scale),
        );
        frames += n as u64;
    }
    if frames == 0 {
        return Err(AudioError::NoSamples { path: p() });
    }
    if sample_rate == 0 {
        return Err(AudioError::Corrupt {
            path: p(),
            reason: "the stream declares a sample rate of 0 Hz".into(),
        });
    }
    // Lossless containers state their exact length; fewer frames means the file was cut short.
    // (MP3 and Vorbis lengths are estimates from headers, so they are not held to it.)
    // A streamed WAV (size fields 0xFFFFFFFF or 0) promises nothing: it holds what it holds.
    let open_ended = wav.is_some_and(|h| h.open_ended);
    if let Some(expected) = n_frames {
        let lossy = params.codec == CODEC_ID_MP3 || params.codec == CODEC_ID_VORBIS;
        if !lossy && !open_ended && frames < expected {
            return Err(AudioError::Truncated {
                path: p(),
                expected,
                found: frames,
            });
        }
    }
    check_samples(path, &samples)?;
    Ok(Audio {
        samples,
        sample_rate,
        source_rate: sample_rate,
        source_channels: channels,
    })
}

/// Decoded samples must be finite and within reach of full scale.
fn check_samples(path: &Path, samples: &[f32]) -> Result<(), AudioError> {
    if samples.iter().any(|s| !s.is_finite()) {
        return Err(AudioError::Corrupt {
            path: path.to_path_buf(),
            reason: "samples are not finite numbers (NaN or infinity)".into(),
        });
    }
    // Float audio lies within +-1 (a little over when clipped); 1e30 turned into silence after
    // the log (issue 15). Anything this far out is not a recording.
    let peak = samples.iter().fold(0f32, |m, s| m.max(s.abs()));
    if peak > MAX_SAMPLE {
        return Err(AudioError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("samples reach {peak:e}; audio lies within +-1 (full scale)"),
        });
    }
    Ok(())
}

/// symphonia 0.6 names 26 speaker positions and refuses a WAV with more channels.
const SYMPHONIA_MAX_CHANNELS: usize = 26;

/// A PCM WAV (integer 8/16/24/32-bit, float 32/64-bit, plain or `WAVE_FORMAT_EXTENSIBLE`) of
/// any channel count, downmixed to mono: for the channel counts symphonia refuses (microphone
/// arrays, ambisonics; issue 15 asks for any count). Returns the samples, the frames read and
/// the frames the header promises.
fn decode_wide_pcm(b: &[u8], h: &WavHeader) -> Result<(Vec<f32>, u64, u64), String> {
    let u16_at = |i: usize| b.get(i..i + 2).map(|x| u16::from_le_bytes([x[0], x[1]]));
    let u32_at = |i: usize| {
        b.get(i..i + 4)
            .map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
    };
    let (mut tag, mut data) = (None, None);
    let mut at = 12usize;
    while let (Some(id), Some(size)) = (b.get(at..at + 4), u32_at(at + 4)) {
        let body = at + 8;
        if id == b"fmt " {
            let mut t = u16_at(body).ok_or("a short fmt chunk")?;
            if t == 0xFFFE {
                // WAVE_FORMAT_EXTENSIBLE: the sub-format GUID starts with the real tag.
                t = u16_at(body + 24).ok_or("a short extensible fmt chunk")?;
            }
            tag = Some(t);
        } else if id == b"data" {
            let end = if h.open_ended {
                b.len()
            } else {
                body.saturating_add(size as usize)
            };
            data = Some((body, end, size as u64));
            break;
        }
        at = body
            .checked_add(size as usize)
            .and_then(|x| x.checked_add(size as usize & 1))
            .ok_or("a chunk size past the end")?;
    }
    let tag = tag.ok_or("no fmt chunk")?;
    let (start, end, size) = data.ok_or("no data chunk")?;
    let bytes = usize::from(h.bits / 8);
    let channels = usize::from(h.channels);
    let read: fn(&[u8]) -> f32 = match (tag, h.bits) {
        (1, 8) => |x| (f32::from(x[0]) - 128.0) / 128.0,
        (1, 16) => |x| f32::from(i16::from_le_bytes([x[0], x[1]])) / 32_768.0,
        (1, 24) => |x| (i32::from_le_bytes([0, x[0], x[1], x[2]]) >> 8) as f32 / 8_388_608.0,
        (1, 32) => |x| i32::from_le_bytes([x[0], x[1], x[2], x[3]]) as f32 / 2_147_483_648.0,
        (3, 32) => |x| f32::from_le_bytes([x[0], x[1], x[2], x[3]]),
        (3, 64) => |x| {
            f64::from_le_bytes([x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]]) as f32
        },
        (t, bits) => {
            return Err(format!(
                "{channels} channels of format {t:#x} at {bits} bits (PCM 8/16/24/32-bit and float 32/64-bit are read at this many channels)"
            ))
        }
    };
    let frame = bytes * channels;
    let body = &b[start.min(b.len())..end.min(b.len())];
    let scale = 1.0 / channels as f32;
    let samples: Vec<f32> = body
        .chunks_exact(frame)
        .map(|f| f.chunks_exact(bytes).map(read).sum::<f32>() * scale)
        .collect();
    let frames = samples.len() as u64;
    Ok((samples, frames, size / frame as u64))
}

fn classify(path: &Path, e: SymphoniaError) -> AudioError {
    let path = path.to_path_buf();
    match e {
        SymphoniaError::IoError(source) if source.kind() == std::io::ErrorKind::UnexpectedEof => {
            AudioError::Corrupt {
                path,
                reason: "unexpected end of file".into(),
            }
        }
        SymphoniaError::IoError(source) => AudioError::Io { path, source },
        SymphoniaError::Unsupported(what) => AudioError::Unsupported {
            path,
            reason: what.to_string(),
        },
        SymphoniaError::DecodeError(what) => AudioError::Corrupt {
            path,
            reason: what.to_string(),
        },
        other => AudioError::Corrupt {
            path,
            reason: other.to_string(),
        },
    }
}

/// Roughly how many input frames each resampler call takes.
const RESAMPLE_CHUNK: usize = 1024;

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Resamples mono `samples` from `from` Hz to `to` Hz.
///
/// Returns `ceil(len * to / from)` samples aligned with the input (the resampler's delay is
/// trimmed), so a clip keeps its duration and its timing.
pub fn resample(samples: &[f32], from: u32, to: u32) -> Result<Vec<f32>, AudioError> {
    let err = |reason: String| AudioError::Resample { from, to, reason };
    if from == 0 || to == 0 {
        return Err(err("sample rates must be positive".into()));
    }
    if from == to || samples.is_empty() {
        return Ok(samples.to_vec());
    }
    let expected = (samples.len() as u64 * to as u64).div_ceil(from as u64) as usize;
    // rubato's FFT resampler reports its delay as `fft_size_out / 2` output frames, rounded
    // down: with an odd FFT size the output would lag by half a sample. One sub-chunk of an even
    // number of `from / gcd` steps keeps the FFT size even and the delay exact.
    let step = (from as u64 / gcd(from as u64, to as u64)) as usize;
    let steps = RESAMPLE_CHUNK.div_ceil(step).max(2);
    let chunk = step * (steps + steps % 2);
    // One sub-chunk (the whole chunk in one FFT) and rubato's Blackman-Harris window: the
    // resampler rubato 0.16's `FftFixedIn::new(from, to, chunk, 1, 1)` built, so outputs match.
    let mut r = Fft::<f32>::new_custom(
        from as usize,
        to as usize,
        chunk,
        1,
        1,
        WindowFunction::BlackmanHarris2,
        FixedSync::Input,
    )
    .map_err(|e| err(e.to_string()))?;
    let input = InterleavedSlice::new(samples, 1, samples.len()).map_err(|e| err(e.to_string()))?;
    let mut out = vec![0.0f32; r.process_all_needed_output_len(samples.len())];
    let frames = out.len();
    let mut output =
        InterleavedSlice::new_mut(&mut out, 1, frames).map_err(|e| err(e.to_string()))?;
    // process_all_into_buffer trims the resampler's delay and flushes its tail.
    let (_, produced) = r
        .process_all_into_buffer(&input, &mut output, samples.len(), None)
        .map_err(|e| err(e.to_string()))?;
    out.truncate(produced);
    out.resize(expected, 0.0);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f64, rate: u32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64).sin() as f32)
            .collect()
    }

    #[test]
    fn resampling_keeps_length_timing_and_shape() {
        for from in [8_000u32, 22_050, 44_100, 48_000] {
            let n = from as usize * 3 / 2 + 17;
            let x = sine(440.0, from, n);
            let y = resample(&x, from, 16_000).unwrap();
            let expected = (n as u64 * 16_000).div_ceil(from as u64) as usize;
            assert_eq!(y.len(), expected, "{from} Hz");
            let reference = sine(440.0, 16_000, expected);
            // Away from the edges (where the filter sees zero padding) the waveform is the same
            // sine at the same phase: no delay, no gain change.
            let mid = 400..expected - 400;
            let err = mid
                .clone()
                .map(|i| (y[i] - reference[i]).abs())
                .fold(0.0f32, f32::max);
            assert!(err < 2e-3, "{from} Hz: max error {err}");
        }
    }

    /// A 16-bit mono PCM WAV with any declared rate and `n` samples of a ramp.
    fn wav_with_rate(dir: &Path, rate: u32, n: usize) -> PathBuf {
        let data: Vec<u8> = (0..n)
            .flat_map(|i| ((i * 37) as i16).to_le_bytes())
            .collect();
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
        b.extend_from_slice(b"WAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes()); // PCM
        b.extend_from_slice(&1u16.to_le_bytes()); // mono
        b.extend_from_slice(&rate.to_le_bytes());
        b.extend_from_slice(&rate.wrapping_mul(2).to_le_bytes());
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(&16u16.to_le_bytes());
        b.extend_from_slice(b"data");
        b.extend_from_slice(&(data.len() as u32).to_le_bytes());
        b.extend_from_slice(&data);
        let path = dir.join(format!("rate-{rate}.wav"));
        std::fs::write(&path, b).unwrap();
        path
    }

    #[test]
    fn absurd_sample_rates_are_refused_before_decoding() {
        let dir = tempfile::tempdir().unwrap();
        // 0 Hz used to panic inside symphonia; 1 Hz and 4.29 GHz to allocate 20-32 GB when
        // resampled to 16 kHz (issue 15). A 32 KB file of each.
        for rate in [0u32, 1, 999, 768_001, u32::MAX] {
            let path = wav_with_rate(dir.path(), rate, 16_000);
            let err = load(&path, 16_000).unwrap_err().to_string();
            assert!(
                err.contains(&format!("sample rate of {rate} Hz")) && err.contains("rate-"),
                "{rate} Hz: {err}"
            );
        }
        // The bounds themselves are real rates.
        for rate in [1_000u32, 768_000] {
            let path = wav_with_rate(dir.path(), rate, 4_000);
            let a = decode_mono(&path).unwrap();
            assert_eq!((a.sample_rate, a.samples.len()), (rate, 4_000));
        }
    }

    #[test]
    fn absurd_channel_counts_and_sample_widths_are_clear_errors() {
        // 40000 channels made symphonia 0.6's WAV reader overflow a 16-bit product and panic.
        let dir = tempfile::tempdir().unwrap();
        let good = std::fs::read(wav_with_rate(dir.path(), 16_000, 100)).unwrap();
        for (offset, value, says) in [
            (22, 40_000u16, "40000 channels"),
            (22, 0, "0 channels"),
            (22, 2000, "2000 channels"),
            (34, 4096, "4096 bits per sample"),
        ] {
            let mut b = good.clone();
            b[offset..offset + 2].copy_from_slice(&value.to_le_bytes());
            let path = dir.path().join(format!("bad-{offset}-{value}.wav"));
            std::fs::write(&path, b).unwrap();
            let err = load(&path, 16_000).unwrap_err().to_string();
            assert!(err.contains(says) && err.contains("bad-"), "{err}");
        }
    }

    /// A 16-bit or float WAV of `channels` channels, frame `i` channel `c` = f(i, c).
    fn wide_wav(channels: u16, float: bool, frames: usize) -> Vec<u8> {
        let bits: u16 = if float { 32 } else { 16 };
        let mut data = Vec::new();
        for i in 0..frames {
            for c in 0..channels as usize {
                let v = ((i * 7 + c * 13) % 200) as f32 / 200.0 - 0.5;
                if float {
                    data.extend(v.to_le_bytes());
                } else {
                    data.extend(((v * 32_767.0) as i16).to_le_bytes());
                }
            }
        }
        let block = channels * bits / 8;
        let mut b = b"RIFF".to_vec();
        b.extend((36 + data.len() as u32).to_le_bytes());
        b.extend(b"WAVEfmt ");
        b.extend(16u32.to_le_bytes());
        b.extend((if float { 3u16 } else { 1 }).to_le_bytes());
        b.extend(channels.to_le_bytes());
        b.extend(16_000u32.to_le_bytes());
        b.extend((16_000 * block as u32).to_le_bytes());
        b.extend(block.to_le_bytes());
        b.extend(bits.to_le_bytes());
        b.extend(b"data");
        b.extend((data.len() as u32).to_le_bytes());
        b.extend(data);
        b
    }

    #[test]
    fn wide_wavs_are_read_here_as_symphonia_reads_narrower_ones() {
        let dir = tempfile::tempdir().unwrap();
        for float in [false, true] {
            // At 24 channels both readers can: the same samples.
            let b = wide_wav(24, float, 500);
            let path = dir.path().join(format!("w24-{float}.wav"));
            std::fs::write(&path, &b).unwrap();
            let by_symphonia = decode_mono(&path).unwrap().samples;
            let h = wav_header(&b).unwrap();
            let (ours, frames, expected) = decode_wide_pcm(&b, &h).unwrap();
            assert_eq!((frames, expected), (500, 500));
            let diff = by_symphonia
                .iter()
                .zip(&ours)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(diff < 1e-6, "float {float}: {diff}");
            // 64 channels (symphonia refuses more than 26): read, downmixed, at its rate.
            let path = dir.path().join(format!("w64-{float}.wav"));
            std::fs::write(&path, wide_wav(64, float, 300)).unwrap();
            let a = decode_mono(&path).unwrap();
            assert_eq!(
                (a.samples.len(), a.source_channels, a.sample_rate),
                (300, 64, 16_000)
            );
            // Cut short: truncated, as symphonia's files are.
            let mut cut = wide_wav(64, float, 300);
            cut.truncate(cut.len() - 1000);
            std::fs::write(&path, cut).unwrap();
            let err = decode_mono(&path).unwrap_err().to_string();
            assert!(err.contains("truncated"), "{err}");
        }
    }

    #[test]
    fn resampling_rejects_zero_rates() {
        assert!(matches!(
            resample(&[0.0; 10], 0, 16_000),
            Err(AudioError::Resample { .. })
        ));
        assert_eq!(
            resample(&[1.0, 2.0], 16_000, 16_000).unwrap(),
            vec![1.0, 2.0]
        );
        assert!(resample(&[], 8_000, 16_000).unwrap().is_empty());
    }
}
