//! Hostile but realistic input through the `ajepa` binary (issue 15): every case ends in a clear
//! error that names the file or setting, never a panic, and nothing of the user's is lost.
//! The files are written at test time (no fixtures).

mod common;

use std::path::{Path, PathBuf};

use common::ajepa_cmd;

/// Runs `ajepa`, expects failure, returns stderr.
fn ajepa_fails(args: &[&std::ffi::OsStr]) -> String {
    let out = ajepa_cmd().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "expected a failure: {args:?}\n{err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    err
}

/// A WAV file of the 16-byte `fmt ` chunk `fmt` (five little-endian words) and `data`.
fn riff(dir: &Path, name: &str, fmt: [u32; 5], data: &[u8]) -> PathBuf {
    let mut b = b"RIFF".to_vec();
    b.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    for v in fmt {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(b"data");
    b.extend_from_slice(&(data.len() as u32).to_le_bytes());
    b.extend_from_slice(data);
    let p = dir.join(name);
    std::fs::write(&p, b).unwrap();
    p
}

/// A 16-bit mono PCM WAV declaring `rate` Hz, `n` samples.
fn wav(dir: &Path, name: &str, rate: u32, n: usize) -> PathBuf {
    let data: Vec<u8> = (0..n)
        .flat_map(|i| ((i * 97) as i16).to_le_bytes())
        .collect();
    // size 16, PCM mono, rate, byte rate, align 2 / 16 bits.
    riff(
        dir,
        name,
        [16, 0x0001_0001, rate, rate.wrapping_mul(2), 0x0010_0002],
        &data,
    )
}

#[test]
fn absurd_sample_rates_are_clear_errors_not_panics_or_huge_allocations() {
    let dir = tempfile::tempdir().unwrap();
    for rate in [0u32, 1, u32::MAX] {
        let clip = wav(dir.path(), &format!("r{rate}.wav"), rate, 16_000);
        let out = dir.path().join("f.npy");
        let err = ajepa_fails(&[
            "features".as_ref(),
            clip.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
        ]);
        assert!(
            err.contains(&format!("sample rate of {rate} Hz"))
                && err.contains(&format!("r{rate}.wav")),
            "{rate} Hz: {err}"
        );
        assert!(!out.exists());
    }
}

#[test]
fn an_output_that_is_the_input_is_refused_and_the_input_kept() {
    let dir = tempfile::tempdir().unwrap();
    let clip = wav(dir.path(), "clip.wav", 16_000, 16_000);
    let before = std::fs::read(&clip).unwrap();
    let err = ajepa_fails(&[
        "features".as_ref(),
        clip.as_os_str(),
        "--out".as_ref(),
        clip.as_os_str(),
    ]);
    assert!(err.contains("it is the input"), "{err}");
    // Another audio file is not replaced by an array without --force.
    let other = wav(dir.path(), "other.wav", 16_000, 800);
    let err = ajepa_fails(&[
        "features".as_ref(),
        clip.as_os_str(),
        "--out".as_ref(),
        other.as_os_str(),
    ]);
    assert!(err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(&clip).unwrap(), before);
    assert_eq!(std::fs::read(&other).unwrap().len(), 44 + 1600);
}

/// A mono 32-bit float WAV holding `samples`.
fn float_wav(dir: &Path, name: &str, samples: &[f32]) -> PathBuf {
    let data: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    // format 3 (IEEE float), mono, 16 kHz, 64000 B/s, align 4, 32 bits.
    riff(
        dir,
        name,
        [16, 0x0001_0003, 16_000, 64_000, 0x0020_0004],
        &data,
    )
}

#[test]
fn absurd_float_samples_are_refused_not_turned_into_silence() {
    let dir = tempfile::tempdir().unwrap();
    let samples: Vec<f32> = (0..16_000)
        .map(|i| if i % 2 == 0 { 1e30 } else { -1e30 })
        .collect();
    let clip = float_wav(dir.path(), "loud.wav", &samples);
    let out = dir.path().join("f.npy");
    let err = ajepa_fails(&[
        "features".as_ref(),
        clip.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    assert!(err.contains("loud.wav") && err.contains("1e30"), "{err}");
}

#[test]
fn non_finite_weights_are_refused_on_load() {
    use candle_core::{Device, Tensor};
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("nan.safetensors");
    let cfg = audio_jepa::model::EncoderConfig::preset("tiny").unwrap();
    let mut tensors = common::random_tensors(&cfg, 0.02);
    let w = tensors.get("norm.weight").unwrap();
    let n = w.elem_count();
    let mut v = vec![1f32; n];
    v[n / 2] = f32::NAN;
    tensors.insert(
        "norm.weight".into(),
        Tensor::from_vec(v, n, &Device::Cpu).unwrap(),
    );
    audio_jepa::model::checkpoint::save_encoder(&model, &tensors, &cfg).unwrap();
    let clip = wav(dir.path(), "clip.wav", 16_000, 16_000);
    let out = dir.path().join("e.npy");
    let err = ajepa_fails(&[
        "embed".as_ref(),
        clip.as_os_str(),
        "--model".as_ref(),
        model.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    assert!(
        err.contains("norm.weight") && err.contains("non-finite"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn listen_without_a_terminal_prints_plain_lines() {
    // stdin from /dev/null and stdout into a pipe, as under cron or systemd: the live UI used to
    // panic in ratatui or write escape codes into the file.
    let dir = tempfile::tempdir().unwrap();
    let clip = wav(dir.path(), "clip.wav", 16_000, 32_000);
    let out = ajepa_cmd()
        .args([
            "listen".as_ref(),
            "--fast".as_ref(),
            "--input".as_ref(),
            clip.as_os_str(),
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("no terminal"), "{stderr}");
    assert!(!stdout.contains('\u{1b}'), "escape codes in {stdout}");
    let hops = stdout.lines().filter(|l| !l.starts_with('#')).count();
    assert!(hops >= 5, "{stdout}");
}

#[test]
fn random_bytes_give_one_plain_error_line() {
    // symphonia's per-byte WARN lines, coloured, used to bury the error (issue 15, item 12).
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.mp3");
    let mut b = vec![0xff, 0xfb, 0x90, 0x00];
    let mut s = 12345u32;
    b.extend((0..20_000).map(|_| {
        s = s.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        (s >> 16) as u8
    }));
    std::fs::write(&junk, b).unwrap();
    let out = dir.path().join("f.npy");
    let err = ajepa_fails(&[
        "features".as_ref(),
        junk.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    assert!(!err.contains('\u{1b}'), "colour codes: {err}");
    assert!(!err.contains("WARN"), "library warnings: {err}");
    assert!(err.contains("junk.mp3"), "{err}");
}

/// Issue 15, item 13: a WAV written as a stream (`ffmpeg ... -f wav -` to a pipe) has 0xFFFFFFFF
/// in its RIFF and data sizes. It is not "truncated": it holds what it holds, and all of it is
/// decoded. A plain WAV cut short is still reported as truncated.
#[test]
fn a_streamed_wav_with_open_ended_sizes_is_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let n = 12_345usize;
    let mut b = b"RIFF".to_vec();
    b.extend_from_slice(&u32::MAX.to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    for v in [16u32, 0x0001_0001, 16_000, 32_000, 0x0010_0002] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(b"data");
    b.extend_from_slice(&u32::MAX.to_le_bytes());
    b.extend((0..n).flat_map(|i| ((i * 97) as i16).to_le_bytes()));
    let p = dir.path().join("stream.wav");
    std::fs::write(&p, &b).unwrap();
    let a = audio_jepa::audio::decode_mono(&p).unwrap();
    assert_eq!(a.samples.len(), n);

    // The same samples with honest sizes, then cut: truncated.
    let full = wav(dir.path(), "cut.wav", 16_000, n);
    let bytes = std::fs::read(&full).unwrap();
    std::fs::write(&full, &bytes[..bytes.len() - 2000]).unwrap();
    let e = audio_jepa::audio::decode_mono(&full).unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");
}

/// Issue 15, item 14: without a usable microphone, `listen` says so and what to do instead,
/// rather than "device no longer available ... unplugged". (On a machine with a microphone the
/// session simply runs for half a second.)
#[test]
fn no_microphone_is_a_clear_message() {
    let out = ajepa_cmd()
        .args(["listen", "--json", "--seconds", "0.5"])
        .output()
        .unwrap();
    if out.status.success() {
        eprintln!("a capture device is present here: nothing to check");
        return;
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ajepa devices") && err.contains("--input FILE"),
        "{err}"
    );
}
