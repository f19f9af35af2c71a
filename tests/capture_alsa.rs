//! A real capture through cpal and ALSA, without a sound card: ALSA's `file` plugin turns a raw
//! S16_LE file into a capture device (DESIGN.md, "Testing audio capture without a sound card").
//! The samples that come out of the ring must be exactly the file's.

use std::io::Write;
use std::time::{Duration, Instant};

use audio_jepa::stream::capture::{list_devices, open};
use audio_jepa::stream::ring::sample_ring;

/// The test device's samples, set up once per process before any cpal call (tests in this file
/// run on parallel threads and ALSA reads its configuration once).
fn setup() -> Option<&'static Vec<i16>> {
    static SETUP: std::sync::OnceLock<Option<(tempfile::TempDir, Vec<i16>)>> =
        std::sync::OnceLock::new();
    SETUP
        .get_or_init(|| {
            if !std::path::Path::new("/usr/share/alsa/alsa.conf").exists() {
                return None;
            }
            let dir = tempfile::tempdir().unwrap();
            let samples = make_device(dir.path());
            Some((dir, samples))
        })
        .as_ref()
        .map(|(_, s)| s)
}

fn make_device(dir: &std::path::Path) -> Vec<i16> {
    // A second of a gliding tone plus a ramp, as 16-bit PCM.
    let n = 16_000;
    let samples: Vec<i16> = (0..n)
        .map(|i| {
            let t = i as f64 / 16_000.0;
            let v = 0.5 * (2.0 * std::f64::consts::PI * (300.0 + 400.0 * t) * t).sin();
            (v * 32767.0) as i16 ^ (i as i16 & 3)
        })
        .collect();
    let raw = dir.join("input.raw");
    let mut f = std::fs::File::create(&raw).unwrap();
    for s in &samples {
        f.write_all(&s.to_le_bytes()).unwrap();
    }
    drop(f);
    let conf = dir.join("asound.conf");
    std::fs::write(
        &conf,
        format!(
            "pcm.filecap {{\n  type file\n  slave.pcm \"null\"\n  file \"/dev/null\"\n  infile \"{}\"\n  format \"raw\"\n  hint {{ show on description \"audio-jepa test capture\" }}\n}}\n",
            raw.display()
        ),
    )
    .unwrap();
    // Before the first cpal call of this process (each integration test file is its own process).
    std::env::set_var(
        "ALSA_CONFIG_PATH",
        format!("/usr/share/alsa/alsa.conf:{}", conf.display()),
    );
    samples
}

#[test]
fn alsa_file_device_delivers_the_files_samples_exactly() {
    let Some(samples) = setup() else {
        eprintln!("skipping: no ALSA configuration on this machine (/usr/share/alsa/alsa.conf)");
        return;
    };
    let n = samples.len();

    let devices = list_devices().unwrap();
    // Listed under its ALSA PCM name as the stable id and its hint's description as the name;
    // `--device` takes either.
    let listed: Vec<(&str, &str)> = devices
        .iter()
        .map(|d| (d.id.as_str(), d.name.as_str()))
        .collect();
    assert!(
        listed.contains(&("filecap", "audio-jepa test capture")),
        "filecap not listed: {listed:?}"
    );

    let (prod, mut cons, counters) = sample_ring(4 * n);
    let capture = open(
        Some("filecap"),
        Some((16_000, 1, cpal::SampleFormat::I16)),
        prod,
        |e| eprintln!("stream error: {e}"),
    )
    .unwrap();
    assert_eq!(capture.info.sample_rate, 16_000);
    assert_eq!(capture.info.channels, 1);
    let mut got = vec![0.0f32; n];
    let mut filled = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while filled < n && Instant::now() < deadline {
        filled += cons.pop(&mut got[filled..]);
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(capture);
    assert_eq!(filled, n, "only {filled} samples arrived");
    for (i, (&g, &s)) in got.iter().zip(samples).enumerate() {
        assert_eq!(g, s as f32 / 32768.0, "sample {i}");
    }
    eprintln!(
        "captured {n} samples exactly; ring pushed {}, dropped {}",
        counters.pushed.load(std::sync::atomic::Ordering::Relaxed),
        counters.dropped.load(std::sync::atomic::Ordering::Relaxed)
    );
}

#[test]
fn an_unknown_device_is_a_clear_error_listing_what_exists() {
    let _ = setup();
    let (prod, _cons, _) = sample_ring(16);
    match open(Some("no-such-microphone-xyz"), None, prod, |_| {}) {
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("no-such-microphone-xyz"), "{msg}");
        }
        Ok(_) => panic!("opened a device that does not exist"),
    }
}
