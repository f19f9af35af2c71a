//! Decoding: every common format, rate and channel count to 16 kHz mono; bad files get clear errors.

mod common;

use std::f64::consts::PI;
use std::path::{Path, PathBuf};

use audio_jepa::audio::{load, AudioError};
use common::shared_data;

/// Power of `x` at `freq` Hz (Goertzel), normalised by length.
fn tone_power(x: &[f32], rate: u32, freq: f64) -> f64 {
    let w = 2.0 * PI * freq / rate as f64;
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s = v as f64 + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    (s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2) / (x.len() as f64).powi(2)
}

fn expected_mono(rate: u32, n: usize) -> Vec<f32> {
    // Left 440 Hz at 0.5, right 1000 Hz at 0.25 -> mean of the two channels.
    (0..n)
        .map(|i| {
            let t = i as f64 / rate as f64;
            (0.5 * (0.5 * (2.0 * PI * 440.0 * t).sin() + 0.25 * (2.0 * PI * 1000.0 * t).sin()))
                as f32
        })
        .collect()
}

#[derive(Clone, Copy, Debug)]
enum Sample {
    I16,
    I24,
    F32,
}

fn write_wav(path: &Path, rate: u32, channels: u16, fmt: Sample, seconds: f64) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: match fmt {
            Sample::I16 => 16,
            Sample::I24 => 24,
            Sample::F32 => 32,
        },
        sample_format: match fmt {
            Sample::F32 => hound::SampleFormat::Float,
            _ => hound::SampleFormat::Int,
        },
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    let n = (seconds * rate as f64) as usize;
    for i in 0..n {
        let t = i as f64 / rate as f64;
        let left = 0.5 * (2.0 * PI * 440.0 * t).sin();
        let right = 0.25 * (2.0 * PI * 1000.0 * t).sin();
        // Mono files hold what the stereo ones downmix to.
        let frame = if channels == 1 {
            vec![0.5 * (left + right)]
        } else {
            vec![left, right]
        };
        for v in frame {
            match fmt {
                Sample::I16 => w.write_sample((v * 32_767.0).round() as i16).unwrap(),
                Sample::I24 => w.write_sample((v * 8_388_607.0).round() as i32).unwrap(),
                Sample::F32 => w.write_sample(v as f32).unwrap(),
            }
        }
    }
    w.finalize().unwrap();
}

#[test]
fn generated_wavs_at_every_rate_width_and_layout_decode_to_the_same_16k_mono() {
    let dir = tempfile::tempdir().unwrap();
    for rate in [8_000u32, 16_000, 22_050, 44_100, 48_000] {
        for channels in [1u16, 2] {
            for fmt in [Sample::I16, Sample::I24, Sample::F32] {
                let path = dir.path().join(format!("t_{rate}_{channels}_{fmt:?}.wav"));
                write_wav(&path, rate, channels, fmt, 1.25);
                let a = load(&path, 16_000).unwrap();
                assert_eq!(a.source_rate, rate);
                assert_eq!(a.source_channels, channels as usize);
                assert_eq!(a.samples.len(), 20_000, "{path:?}");
                let expect = expected_mono(16_000, 20_000);
                // Inside the clip (the resampler sees silence beyond the edges).
                let err = (500..19_500)
                    .map(|i| (a.samples[i] - expect[i]).abs())
                    .fold(0.0f32, f32::max);
                assert!(err < 2e-3, "{path:?}: max error {err}");
            }
        }
    }
}

#[test]
fn flac_vorbis_and_mp3_decode_and_resample() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/audio");
    for (file, rate, exact) in [
        ("tone_22k05_stereo_24bit.flac", 22_050, true),
        ("tone_44k1_stereo.ogg", 44_100, false),
        ("tone_48k_stereo.mp3", 48_000, false),
    ] {
        let a = load(dir.join(file), 16_000).unwrap();
        assert_eq!(a.source_rate, rate, "{file}");
        assert_eq!(a.source_channels, 2, "{file}");
        if exact {
            assert_eq!(a.samples.len(), 16_000, "{file}");
        } else {
            // Lossy codecs pad the stream with up to a couple of frames of priming samples.
            assert!(
                (a.samples.len() as i64 - 16_000).abs() < 1_500,
                "{file}: {} samples",
                a.samples.len()
            );
        }
        // Both channels' tones survive the downmix at half their amplitude (1/16 -> 1/32),
        // and nothing appears between them.
        let mid = &a.samples[2_000..14_000];
        let expect = (1.0f64 / 32.0).powi(2) / 4.0;
        for f in [440.0, 1000.0] {
            let p = tone_power(mid, 16_000, f);
            assert!(
                (p / expect - 1.0).abs() < 0.1,
                "{file}: {f} Hz power {p}, expected {expect}"
            );
        }
        assert!(tone_power(mid, 16_000, 700.0) < expect * 1e-3, "{file}");
    }
}

#[test]
fn shared_dataset_files_decode() {
    let Some(data) = shared_data("shared_dataset_files_decode") else {
        return;
    };
    let flac = load(data.join("esc50/audio/1-100038-A-14.flac"), 16_000).unwrap();
    assert_eq!((flac.source_rate, flac.source_channels), (16_000, 1));
    assert_eq!(flac.samples.len(), 80_000);
    let wav = load(data.join("fsdd/recordings/0_george_0.wav"), 16_000).unwrap();
    assert_eq!((wav.source_rate, wav.source_channels), (8_000, 1));
    let native =
        audio_jepa::audio::decode_mono(&data.join("fsdd/recordings/0_george_0.wav")).unwrap();
    assert_eq!(wav.samples.len(), native.samples.len() * 2);
    assert!(wav.samples.iter().any(|&s| s.abs() > 0.01));
}

fn err_of(path: &Path) -> AudioError {
    match load(path, 16_000) {
        Ok(a) => panic!("{path:?} decoded to {} samples", a.samples.len()),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&path.display().to_string()),
                "error does not name the file: {msg}"
            );
            e
        }
    }
}

#[test]
fn bad_files_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let at = |name: &str| -> PathBuf { dir.path().join(name) };

    assert!(matches!(
        err_of(&at("missing.wav")),
        AudioError::NotFound { .. }
    ));
    std::fs::create_dir(at("folder.wav")).unwrap();
    assert!(matches!(
        err_of(&at("folder.wav")),
        AudioError::NotAFile { .. }
    ));
    std::fs::write(at("empty.wav"), b"").unwrap();
    assert!(matches!(
        err_of(&at("empty.wav")),
        AudioError::EmptyFile { .. }
    ));

    // Random bytes, with and without a misleading extension.
    let mut s = 12_345u32;
    let junk: Vec<u8> = (0..4096)
        .map(|_| {
            s = s.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (s >> 16) as u8
        })
        .collect();
    for name in ["junk.wav", "junk.bin", "junk.mp3"] {
        std::fs::write(at(name), &junk).unwrap();
        assert!(
            matches!(
                err_of(&at(name)),
                AudioError::Unsupported { .. } | AudioError::Corrupt { .. }
            ),
            "{name}"
        );
    }
    std::fs::write(
        at("notes.txt"),
        b"these are not the samples you are looking for",
    )
    .unwrap();
    assert!(matches!(
        err_of(&at("notes.txt")),
        AudioError::Unsupported { .. }
    ));

    // A WAV whose data chunk was cut short: the header promises more frames than the file holds.
    write_wav(&at("full.wav"), 16_000, 1, Sample::I16, 1.0);
    let bytes = std::fs::read(at("full.wav")).unwrap();
    std::fs::write(at("cut.wav"), &bytes[..bytes.len() / 2]).unwrap();
    match err_of(&at("cut.wav")) {
        AudioError::Truncated {
            expected, found, ..
        } => {
            assert_eq!(expected, 16_000);
            assert!(found < expected);
        }
        other => panic!("expected Truncated, got {other}"),
    }
    // Only the header left.
    std::fs::write(at("header_only.wav"), &bytes[..44]).unwrap();
    assert!(matches!(
        err_of(&at("header_only.wav")),
        AudioError::NoSamples { .. } | AudioError::Truncated { .. }
    ));

    // A FLAC file cut in the middle of its frames.
    let flac = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/audio/tone_22k05_stereo_24bit.flac"),
    )
    .unwrap();
    std::fs::write(at("cut.flac"), &flac[..flac.len() * 2 / 3]).unwrap();
    assert!(matches!(
        err_of(&at("cut.flac")),
        AudioError::Truncated { .. } | AudioError::Corrupt { .. }
    ));
    // A WAV header followed by garbage where the format chunk should be.
    let mut mangled = bytes.clone();
    mangled[12..36].copy_from_slice(&junk[..24]);
    std::fs::write(at("mangled.wav"), &mangled).unwrap();
    assert!(matches!(
        err_of(&at("mangled.wav")),
        AudioError::Unsupported { .. } | AudioError::Corrupt { .. }
    ));
}
