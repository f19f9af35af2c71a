//! Feature shards: the log-mel frames of a dataset in a few compressed, checksummed files that
//! travel (to a GPU machine, to another laptop) instead of the audio.
//!
//! A shard folder holds `index.json` (format, front-end config, the shards with their sizes and
//! CRC-32) and `shard-NNNNN.ajs` files. A shard is `AJSHARD1`, a little-endian u32 header length,
//! a JSON header (clips with their frame counts and quantisation), a u32 CRC-32 and a u64 length
//! of the payload, then the payload compressed with brotli (older shards: zstd; the header says
//! which). Frames are stored per clip as
//! `round((v - lo) / step)` in 6, 7, 8 or 16 bits (the error is at most `step / 2`, reported by
//! `prepare`), or as raw f32 (exact), and 8/16-bit codes are stored as residuals of a predictor
//! from the neighbouring bins and frames, which is what makes spectrograms compress. The front end's floor maps to code 0 and back exactly, so
//! digital silence stays recognisable. A damaged or truncated shard, or a front end that differs
//! from the run's, is an error naming the file, never used.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use audio_jepa::FrontendConfig;
use serde::{Deserialize, Serialize};

use crate::features::ClipFeatures;

const MAGIC: &[u8; 8] = b"AJSHARD1";
pub const INDEX: &str = "index.json";
const FORMAT: &str = "audio-jepa-shards";

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: damaged shard: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: shards of a different front end ({reason}); prepare them again")]
    Frontend { path: PathBuf, reason: String },
    #[error("bits must be 6, 7, 8, 16 or 32, not {0}")]
    Bits(u8),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShardEntry {
    pub file: String,
    pub clips: usize,
    pub frames: usize,
    pub bytes: u64,
    pub crc32: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShardIndex {
    pub format: String,
    pub version: u32,
    pub bits: u8,
    pub frontend: FrontendConfig,
    pub shards: Vec<ShardEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClipHeader {
    name: String,
    n_frames: usize,
    lo: f32,
    step: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Header {
    n_mels: usize,
    bits: u8,
    clips: Vec<ClipHeader>,
    /// The payload's compression (absent in shards written before it was recorded: zstd).
    #[serde(default)]
    codec: Codec,
}

/// How a shard's payload is compressed. Both are decoded in pure Rust, so reading and writing
/// shards needs no C library (zstd-sys's build script needs the target's SDK: it blocked
/// checking the Metal build from Linux). On ESC-50 folds 1-3 and the digits at 7 bits the
/// payload (92.5 MB) packs to 46.6 MB with zstd level 19 (the C library, what older shards
/// hold), 45.9 MB with brotli quality 10 (what `prepare` writes now, in about twice zstd-19's
/// time), 51.6 MB with deflate and 61.9 MB with ruzstd's only encoder level (zstd's fastest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Codec {
    /// zstd frames (read with ruzstd).
    #[default]
    Zstd,
    /// Brotli (the `brotli` crate, quality 10, a 16 MiB window).
    Brotli,
}

/// Brotli's quality and window (log2 bytes) for new shards.
const BROTLI_QUALITY: i32 = 10;
const BROTLI_LGWIN: i32 = 24;

/// What [`write_shards`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub index: ShardIndex,
    pub total_bytes: u64,
    /// Largest |decoded - original| over every value.
    pub max_error: f32,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ShardError + '_ {
    move |source| ShardError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The code of bin `m` predicted from its neighbours: the median edge detector of LOCO-I /
/// JPEG-LS (Weinberger et al. 2000) with the lower bin of this frame (`a`), the same bin of the
/// previous frame (`b`) and the lower bin of the previous frame (`c`). Only residuals are stored.
fn predict(cur: &[i32], prev: &[i32], m: usize) -> i32 {
    let b = prev[m];
    if m == 0 {
        return b;
    }
    let (a, c) = (cur[m - 1], prev[m - 1]);
    if c >= a.max(b) {
        a.min(b)
    } else if c <= a.min(b) {
        a.max(b)
    } else {
        a + b - c
    }
}

fn encode_clip(c: &ClipFeatures, n_mels: usize, bits: u8, out: &mut Vec<u8>) -> (ClipHeader, f32) {
    let name = c.path.to_string_lossy().into_owned();
    if bits == 32 {
        for v in c.data.iter() {
            out.extend_from_slice(&v.to_le_bytes());
        }
        return (
            ClipHeader {
                name,
                n_frames: c.n_frames,
                lo: 0.0,
                step: 0.0,
            },
            0.0,
        );
    }
    let levels = ((1u32 << bits) - 1) as f32;
    let lo = c.data.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = c.data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let step = if hi > lo { (hi - lo) / levels } else { 1.0 };
    let mut prev = vec![0i32; n_mels];
    let mut cur = vec![0i32; n_mels];
    let mut max_err = 0f32;
    for frame in c.data.chunks_exact(n_mels) {
        for (m, &v) in frame.iter().enumerate() {
            let q = ((v - lo) / step).round().clamp(0.0, levels) as i32;
            max_err = max_err.max((lo + q as f32 * step - v).abs());
            cur[m] = q;
            let d = q.wrapping_sub(predict(&cur, &prev, m));
            if bits <= 8 {
                out.push(d as u8);
            } else {
                out.extend_from_slice(&(d as u16).to_le_bytes());
            }
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    (
        ClipHeader {
            name,
            n_frames: c.n_frames,
            lo,
            step,
        },
        max_err,
    )
}

/// Decompresses a payload, reading at most `expected + 1` bytes so that a damaged one claiming
/// more cannot grow without bound.
fn decompress(codec: Codec, packed: &[u8], expected: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(expected);
    let limit = expected as u64 + 1;
    match codec {
        Codec::Zstd => ruzstd::decoding::StreamingDecoder::new(packed)
            .map_err(|e| e.to_string())?
            .take(limit)
            .read_to_end(&mut out),
        Codec::Brotli => brotli::Decompressor::new(packed, 1 << 16)
            .take(limit)
            .read_to_end(&mut out),
    }
    .map_err(|e| e.to_string())?;
    Ok(out)
}

fn write_one(path: &Path, header: &Header, payload: &[u8]) -> Result<(u64, u32), ShardError> {
    let mut packed = Vec::new();
    let params = brotli::enc::BrotliEncoderParams {
        quality: BROTLI_QUALITY,
        lgwin: BROTLI_LGWIN,
        size_hint: payload.len(),
        ..Default::default()
    };
    brotli::BrotliCompress(&mut &payload[..], &mut packed, &params).map_err(io(path))?;
    let crc = crc32fast::hash(&packed);
    let head = serde_json::to_vec(header).map_err(|e| ShardError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    audio_jepa::arrays::write_atomically(path, |w| {
        w.write_all(MAGIC)?;
        w.write_all(&(head.len() as u32).to_le_bytes())?;
        w.write_all(&head)?;
        w.write_all(&crc.to_le_bytes())?;
        w.write_all(&(packed.len() as u64).to_le_bytes())?;
        w.write_all(&packed)
    })
    .map_err(io(path))?;
    let bytes = std::fs::metadata(path).map_err(io(path))?.len();
    Ok((bytes, crc))
}

/// Writes `clips` into `out` as shards of about `shard_bytes` of uncompressed codes each.
pub fn write_shards(
    clips: &[ClipFeatures],
    fe: &FrontendConfig,
    out: &Path,
    bits: u8,
    shard_bytes: usize,
    mut progress: impl FnMut(usize),
) -> Result<Written, ShardError> {
    if ![6, 7, 8, 16, 32].contains(&bits) {
        return Err(ShardError::Bits(bits));
    }
    std::fs::create_dir_all(out).map_err(io(out))?;
    let mut index = ShardIndex {
        format: FORMAT.into(),
        version: 1,
        bits,
        frontend: fe.clone(),
        shards: Vec::new(),
    };
    let mut header = Header {
        n_mels: fe.n_mels,
        bits,
        clips: Vec::new(),
        codec: Codec::Brotli,
    };
    let mut payload = Vec::new();
    let mut max_error = 0f32;
    let mut total_bytes = 0;
    let mut flush = |header: &mut Header, payload: &mut Vec<u8>, index: &mut ShardIndex| {
        if header.clips.is_empty() {
            return Ok::<(), ShardError>(());
        }
        let file = format!("shard-{:05}.ajs", index.shards.len());
        let (bytes, crc32) = write_one(&out.join(&file), header, payload)?;
        total_bytes += bytes;
        index.shards.push(ShardEntry {
            file,
            clips: header.clips.len(),
            frames: header.clips.iter().map(|c| c.n_frames).sum(),
            bytes,
            crc32,
        });
        header.clips.clear();
        payload.clear();
        Ok(())
    };
    for (i, c) in clips.iter().enumerate() {
        let (h, err) = encode_clip(c, fe.n_mels, bits, &mut payload);
        max_error = max_error.max(err);
        header.clips.push(h);
        if payload.len() >= shard_bytes {
            flush(&mut header, &mut payload, &mut index)?;
        }
        progress(i + 1);
    }
    flush(&mut header, &mut payload, &mut index)?;
    let index_path = out.join(INDEX);
    let text = serde_json::to_string_pretty(&index).map_err(|e| ShardError::Corrupt {
        path: index_path.clone(),
        reason: e.to_string(),
    })?;
    audio_jepa::arrays::write_atomically(&index_path, |w| w.write_all(text.as_bytes()))
        .map_err(io(&index_path))?;
    Ok(Written {
        index,
        total_bytes,
        max_error,
    })
}

/// True when `dir` is a shard folder.
pub fn is_shard_dir(dir: &Path) -> bool {
    dir.join(INDEX).is_file()
}

/// Reads every clip of the shard folder `dir`, checking each shard's checksum and that it was
/// made with the front end `fe`.
pub fn read_shards(dir: &Path, fe: &FrontendConfig) -> Result<Vec<ClipFeatures>, ShardError> {
    let index_path = dir.join(INDEX);
    let text = std::fs::read_to_string(&index_path).map_err(io(&index_path))?;
    let index: ShardIndex = serde_json::from_str(&text).map_err(|e| ShardError::Corrupt {
        path: index_path.clone(),
        reason: format!("unreadable index: {e}"),
    })?;
    if index.format != FORMAT || index.version != 1 {
        return Err(ShardError::Corrupt {
            path: index_path,
            reason: format!("format {} version {}", index.format, index.version),
        });
    }
    if &index.frontend != fe {
        return Err(ShardError::Frontend {
            path: index_path,
            reason: "the index's [frontend] differs from the training config's".into(),
        });
    }
    let mut clips = Vec::new();
    for entry in &index.shards {
        let path = dir.join(&entry.file);
        let got = read_shard(&path, fe.n_mels)?;
        let frames: usize = got.iter().map(|c| c.n_frames).sum();
        if got.len() != entry.clips || frames != entry.frames {
            return Err(ShardError::Corrupt {
                path,
                reason: format!(
                    "{} clips / {frames} frames, the index says {} / {}",
                    got.len(),
                    entry.clips,
                    entry.frames
                ),
            });
        }
        clips.extend(got);
    }
    Ok(clips)
}

fn read_shard(path: &Path, n_mels: usize) -> Result<Vec<ClipFeatures>, ShardError> {
    let corrupt = |reason: String| ShardError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io(path))?;
    let take = |at: &mut usize, n: usize| -> Result<&[u8], ShardError> {
        let s = bytes
            .get(*at..*at + n)
            .ok_or_else(|| corrupt(format!("truncated at byte {} of {}", *at, bytes.len())))?;
        *at += n;
        Ok(s)
    };
    let mut at = 0;
    if take(&mut at, 8)? != MAGIC {
        return Err(corrupt("not an audio-jepa shard (bad magic)".into()));
    }
    let u32_at = |s: &[u8]| u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    let head_len = u32_at(take(&mut at, 4)?) as usize;
    let header: Header = serde_json::from_slice(take(&mut at, head_len)?)
        .map_err(|e| corrupt(format!("unreadable header: {e}")))?;
    let crc = u32_at(take(&mut at, 4)?);
    let len_bytes = take(&mut at, 8)?;
    let len = u64::from_le_bytes(len_bytes.try_into().unwrap_or([0; 8])) as usize;
    let packed = take(&mut at, len)?;
    if at != bytes.len() {
        return Err(corrupt(format!(
            "{} bytes after the payload",
            bytes.len() - at
        )));
    }
    if crc32fast::hash(packed) != crc {
        return Err(corrupt("checksum mismatch".into()));
    }
    if header.n_mels != n_mels {
        return Err(corrupt(format!(
            "{} mel bins, expected {n_mels}",
            header.n_mels
        )));
    }
    let width = match header.bits {
        6..=8 => 1,
        16 => 2,
        32 => 4,
        b => return Err(corrupt(format!("{b}-bit codes"))),
    };
    let expected: usize = header
        .clips
        .iter()
        .map(|c| c.n_frames * n_mels * width)
        .sum();
    let payload = decompress(header.codec, packed, expected)
        .map_err(|e| corrupt(format!("cannot decompress: {e}")))?;
    if payload.len() != expected {
        return Err(corrupt(format!(
            "{} payload bytes, expected {expected}",
            payload.len()
        )));
    }
    let mut clips = Vec::with_capacity(header.clips.len());
    let mut p = 0;
    for c in &header.clips {
        let n = c.n_frames * n_mels;
        let raw = &payload[p..p + n * width];
        p += n * width;
        let data: Vec<f32> = if width == 4 {
            raw.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        } else {
            let mut prev = vec![0i32; n_mels];
            let mut cur = vec![0i32; n_mels];
            let mask = if width == 1 { 0xff } else { 0xffff };
            let mut data = Vec::with_capacity(n);
            for i in 0..n {
                let d = if width == 1 {
                    raw[i] as i32
                } else {
                    u16::from_le_bytes([raw[2 * i], raw[2 * i + 1]]) as i32
                };
                let m = i % n_mels;
                cur[m] = predict(&cur, &prev, m).wrapping_add(d) & mask;
                data.push(c.lo + cur[m] as f32 * c.step);
                if m == n_mels - 1 {
                    std::mem::swap(&mut prev, &mut cur);
                }
            }
            data
        };
        clips.push(ClipFeatures {
            path: PathBuf::from(format!("{}#{}", path.display(), c.name)),
            n_frames: c.n_frames,
            data: Arc::from(data),
        });
    }
    Ok(clips)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clips() -> Vec<ClipFeatures> {
        (0..5)
            .map(|i| {
                let n = 37 + 50 * i;
                let data: Vec<f32> = (0..n * 128)
                    .map(|j| {
                        let (t, m) = ((j / 128) as f32, (j % 128) as f32);
                        if t < 3.0 {
                            1.192_092_9e-7f32.ln()
                        } else {
                            (0.1 * t + 0.05 * m).sin() * 4.0 - 3.0 + i as f32
                        }
                    })
                    .collect();
                ClipFeatures {
                    path: format!("clip{i}.wav").into(),
                    n_frames: n,
                    data: data.into(),
                }
            })
            .collect()
    }

    #[test]
    fn round_trip_within_the_quantisation_error_and_exact_at_32_bits() {
        let fe = FrontendConfig::default();
        let src = clips();
        for bits in [7u8, 8, 16, 32] {
            let dir = tempfile::tempdir().unwrap();
            // Small shards: several files.
            let w = write_shards(&src, &fe, dir.path(), bits, 40_000, |_| {}).unwrap();
            assert!(w.index.shards.len() > 1);
            let back = read_shards(dir.path(), &fe).unwrap();
            assert_eq!(back.len(), src.len());
            let mut max = 0f32;
            for (a, b) in src.iter().zip(&back) {
                assert_eq!(a.n_frames, b.n_frames);
                // Half a quantisation step of this clip's range (plus f32 rounding).
                let lo = a.data.iter().copied().fold(f32::INFINITY, f32::min);
                let hi = a.data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let bound = match bits {
                    32 => 0.0,
                    b => (hi - lo) / ((1u32 << b) - 1) as f32 / 2.0 + 1e-5,
                };
                for (x, y) in a.data.iter().zip(b.data.iter()) {
                    assert!((x - y).abs() <= bound, "{bits}-bit: {x} -> {y}");
                    max = max.max((x - y).abs());
                }
                // The floor comes back exactly (code 0).
                assert_eq!(a.data[0], b.data[0]);
            }
            // The reported error is the real one.
            assert!(
                (max - w.max_error).abs() < 1e-5,
                "{bits}: {max} vs {}",
                w.max_error
            );
        }
    }

    #[test]
    fn damage_truncation_and_another_front_end_are_errors() {
        let fe = FrontendConfig::default();
        let dir = tempfile::tempdir().unwrap();
        write_shards(&clips(), &fe, dir.path(), 8, 1 << 20, |_| {}).unwrap();
        let shard = dir.path().join("shard-00000.ajs");
        let good = std::fs::read(&shard).unwrap();

        let mut flipped = good.clone();
        let last = flipped.len() - 10;
        flipped[last] ^= 0x40;
        std::fs::write(&shard, &flipped).unwrap();
        let e = read_shards(dir.path(), &fe).unwrap_err().to_string();
        assert!(
            e.contains("checksum") && e.contains("shard-00000.ajs"),
            "{e}"
        );

        std::fs::write(&shard, &good[..good.len() - 100]).unwrap();
        let e = read_shards(dir.path(), &fe).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");

        std::fs::write(&shard, b"not a shard at all").unwrap();
        let e = read_shards(dir.path(), &fe).unwrap_err().to_string();
        assert!(e.contains("magic"), "{e}");

        std::fs::write(&shard, &good).unwrap();
        let other = FrontendConfig {
            n_mels: 64,
            ..FrontendConfig::default()
        };
        assert!(matches!(
            read_shards(dir.path(), &other),
            Err(ShardError::Frontend { .. })
        ));
        std::fs::remove_file(&shard).unwrap();
        assert!(matches!(
            read_shards(dir.path(), &fe),
            Err(ShardError::Io { .. })
        ));
    }
}
