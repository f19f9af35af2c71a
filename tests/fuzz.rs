//! Property fuzzing of everything a user's file reaches first (issue 15): the audio decoder
//! (random bytes, and real WAV/FLAC files with random header fields and random cuts), the
//! profile parser (the shipped profile with random values in its settings) and the labelled-set
//! CSV reader. Each case must end in `Ok` or a typed error: never a panic (a decoder panic is
//! contained by `decode_mono`, and reported here as a failure), never an unbounded allocation.
//!
//! `cargo test` runs 256 cases per property; a longer run: `PROPTEST_CASES=20000 cargo test
//! --release --test fuzz` (the count in the closing note of issue 15).

use std::path::{Path, PathBuf};

use audio_jepa::audio::{decode_mono, AudioError};
use audio_jepa::dataset::read_csv;
use audio_jepa::frontend::StreamingFbank;
use audio_jepa::Profile;
use proptest::prelude::*;

/// What `decode_mono` says when the decoder itself panicked (contained, but a bug).
const CONTAINED_PANIC: &str = "the decoder failed";

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Decodes `bytes` saved as `name`; fails the property on a contained decoder panic and on
/// samples that are not finite.
fn decode_ok_or_error(name: &str, bytes: &[u8]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), name, bytes);
    match decode_mono(&path) {
        Ok(audio) => {
            prop_assert!(audio.samples.iter().all(|s| s.is_finite()));
            prop_assert!(audio.sample_rate > 0);
        }
        Err(e) => {
            let msg = e.to_string();
            prop_assert!(!msg.contains(CONTAINED_PANIC), "{name}: {msg}");
            prop_assert!(
                msg.contains(name),
                "the error does not name the file: {msg}"
            );
            if let AudioError::Io { .. } = e {
                prop_assert!(false, "a readable file reported as unreadable: {msg}");
            }
        }
    }
    Ok(())
}

/// A valid 16-bit WAV: `channels`, `rate`, `frames` of a ramp.
fn wav_bytes(channels: u16, rate: u32, frames: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..frames * channels as usize)
        .flat_map(|i| ((i * 131) as i16).to_le_bytes())
        .collect();
    let mut b = b"RIFF".to_vec();
    b.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&channels.to_le_bytes());
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * 2 * channels as u32).to_le_bytes());
    b.extend_from_slice(&(2 * channels).to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&(data.len() as u32).to_le_bytes());
    b.extend_from_slice(&data);
    b
}

/// Values that break parsers and allocators, beside plain random ones.
fn hostile_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(1),
        Just(2),
        Just(u32::MAX),
        Just(u32::MAX - 1),
        Just(0x8000_0000),
        Just(44_100),
        any::<u32>(),
    ]
}

/// A valid WAV's header fields are its first 44 bytes (RIFF size at 4, fmt fields 20-35, data
/// size at 40); the values are written as little-endian u32 or u16 at those offsets.
const WAV_FIELDS: [(usize, usize); 9] = [
    (4, 4),
    (16, 4),
    (20, 2),
    (22, 2),
    (24, 4),
    (28, 4),
    (32, 2),
    (34, 2),
    (40, 4),
];

/// The shipped laptop profile: the starting point for random settings.
const LAPTOP: &str = include_str!("../firmware-config/laptop.toml");

/// Numbers that every numeric setting is tried with.
fn hostile_number() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("0.0".to_string()),
        Just("-0.0".to_string()),
        Just("1e9".to_string()),
        Just("1e308".to_string()),
        Just("1e-30".to_string()),
        Just("nan".to_string()),
        Just("inf".to_string()),
        Just("-inf".to_string()),
        Just("9223372036854775807".to_string()),
        Just("100000".to_string()),
        Just("\"text\"".to_string()),
        (-1e6f64..1e6).prop_map(|v| format!("{v}")),
        (0u64..100_000).prop_map(|v| v.to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::default())]

    /// Random bytes under every extension the decoder knows, with and without a real magic.
    #[test]
    fn random_bytes_decode_or_fail_cleanly(
        bytes in prop::collection::vec(any::<u8>(), 0..4096),
        ext in prop::sample::select(vec!["wav", "flac", "mp3", "ogg", "bin"]),
        magic in prop::sample::select(vec![&b""[..], b"RIFF", b"fLaC", b"OggS", b"ID3", b"\xff\xfb"]),
    ) {
        let mut b = magic.to_vec();
        b.extend_from_slice(&bytes);
        decode_ok_or_error(&format!("clip.{ext}"), &b)?;
    }

    /// A valid WAV with one to three header fields set to hostile values, optionally cut short
    /// or with junk appended.
    #[test]
    fn wavs_with_hostile_headers_decode_or_fail_cleanly(
        fields in prop::collection::vec((0usize..WAV_FIELDS.len(), hostile_u32()), 1..4),
        channels in 1u16..40,
        frames in 0usize..3000,
        cut in prop::option::of(0usize..6000),
        junk in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut b = wav_bytes(channels, 16_000, frames);
        for (f, v) in fields {
            let (at, len) = WAV_FIELDS[f];
            b[at..at + len].copy_from_slice(&v.to_le_bytes()[..len]);
        }
        if let Some(c) = cut {
            b.truncate(c);
        }
        b.extend_from_slice(&junk);
        decode_ok_or_error("hostile.wav", &b)?;
    }

    /// The laptop profile with random values in up to three of its numeric settings: parsed
    /// and validated, or refused naming the setting; a profile that passes builds its front end.
    #[test]
    fn profiles_with_hostile_settings_load_or_fail_cleanly(
        picks in prop::collection::vec((any::<prop::sample::Index>(), hostile_number()), 1..4),
    ) {
        // Settings whose value is a number (`key = 12.5`, comments after it kept apart).
        let mut lines: Vec<String> = LAPTOP.lines().map(str::to_string).collect();
        let numeric: Vec<usize> = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| {
                let Some((k, v)) = l.split_once('=') else { return false };
                let v = v.split('#').next().unwrap_or("").trim();
                !k.trim_start().starts_with('#') && v.parse::<f64>().is_ok()
            })
            .map(|(i, _)| i)
            .collect();
        prop_assume!(!numeric.is_empty());
        let mut changed = Vec::new();
        for (idx, value) in picks {
            let i = numeric[idx.index(numeric.len())];
            let key = lines[i].split_once('=').unwrap().0.trim().to_string();
            lines[i] = format!("{key} = {value}");
            changed.push(key);
        }
        let text = lines.join("\n");
        match Profile::from_toml_str(&text, Path::new("hostile.toml")) {
            Ok(p) => {
                // What `listen` builds first from a profile must not panic or abort either.
                prop_assert!(StreamingFbank::new(&p.frontend).is_ok(), "{changed:?}");
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.contains("hostile.toml"), "the error does not name the file: {msg}");
            }
        }
    }

    /// Random text, and ESC-50 style CSVs with random cells, BOMs, quotes and short rows.
    #[test]
    fn csvs_read_or_fail_cleanly(
        header in prop::sample::select(vec![
            "filename,fold,target,category",
            "\u{feff}filename,category",
            "filename",
            "category,filename,fold",
            "",
            "\"filename\",\"category\"",
        ]),
        rows in prop::collection::vec(
            prop::collection::vec("[a-z0-9._/ \"-]{0,12}", 0..6), 0..20),
        raw in prop::option::of("\\PC{0,200}"),
    ) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.wav"), wav_bytes(1, 16_000, 100)).unwrap();
        let text = match raw {
            Some(r) => r,
            None => {
                let mut t = header.to_string();
                for r in rows {
                    t.push('\n');
                    t.push_str(&r.join(","));
                }
                t
            }
        };
        let path = write(dir.path(), "set.csv", text.as_bytes());
        if let Err(e) = read_csv(&path) {
            let msg = e.to_string();
            prop_assert!(msg.contains("set.csv"), "the error does not name the file: {msg}");
        }
    }
}
