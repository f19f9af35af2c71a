//! The front end against torchaudio's Kaldi fbank on real clips (tests/fixtures/frontend).

mod common;

use audio_jepa::frontend::LogMelExtractor;
use audio_jepa::FrontendConfig;
use common::{fixture, max_abs_diff, shared_data};

const CLIPS: [&str; 4] = [
    "esc10_dog",
    "esc10_rain",
    "esc10_crying_baby",
    "fsdd_7_jackson_32",
];

#[test]
fn matches_torchaudio_kaldi_fbank_on_every_fixture() {
    let mut fe = LogMelExtractor::new(&FrontendConfig::default()).unwrap();
    for name in CLIPS {
        let wave = fixture(&format!("{name}_wave16k.npy"));
        let reference = fixture(&format!("{name}_kaldi_fbank.npy"));
        let ours = fe.compute(&wave.data);
        assert_eq!(
            vec![ours.n_frames, ours.n_mels],
            reference.shape,
            "{name}: shape"
        );
        // torchaudio computes in f32 too: its FFT, like ours, rounds at about 1e-7 of a frame's
        // loudest bin, so bins far below their frame's peak carry a larger log error on both
        // sides (measured here: 1.2e-3 at a bin 88 dB down with the AArch64 FFT, 7.7e-4 with the
        // x86-64 one). Bins within 60 dB of their frame's peak must match to 5e-4 (measured: at
        // most 2.2e-4 on either), deeper ones to 5e-3.
        let deep = 60.0 / (10.0 * std::f32::consts::LOG10_E); // 60 dB in nats of energy
        let (mut near, mut far) = (0f32, 0f32);
        for (o, r) in ours
            .data
            .chunks(ours.n_mels)
            .zip(reference.data.chunks(ours.n_mels))
        {
            let peak = r.iter().fold(f32::MIN, |a, &b| a.max(b));
            for (x, y) in o.iter().zip(r) {
                let d = (x - y).abs();
                if peak - y <= deep {
                    near = near.max(d);
                } else {
                    far = far.max(d);
                }
            }
        }
        let diff = max_abs_diff(&ours.data, &reference.data);
        eprintln!(
            "{name}: max |ours - torchaudio| = {diff:.2e}; within 60 dB of the frame's peak \
             {near:.2e}, deeper {far:.2e}"
        );
        assert!(
            near <= 5e-4,
            "{name}: max |diff| within 60 dB {near} > 5e-4"
        );
        assert!(far <= 5e-3, "{name}: max |diff| below 60 dB {far} > 5e-3");
    }
}

/// Decoding the fixtures' source files gives the waveforms torchaudio saw: exactly for the 16 kHz
/// FLAC clips, and for the 8 kHz WAV (resampled by soxr for the fixture, by rubato here) a
/// spectrogram within a small fraction of a dB on average.
#[test]
fn decoded_sources_match_the_fixture_waveforms() {
    let Some(data) = shared_data("decoded_sources_match_the_fixture_waveforms") else {
        return;
    };
    let sources = [
        ("esc10_dog", "esc50/audio/1-100032-A-0.flac"),
        ("esc10_rain", "esc50/audio/1-17367-A-10.flac"),
        ("esc10_crying_baby", "esc50/audio/1-187207-A-20.flac"),
    ];
    for (name, file) in sources {
        let audio = audio_jepa::audio::load(data.join(file), 16_000).unwrap();
        let wave = fixture(&format!("{name}_wave16k.npy"));
        assert_eq!(audio.source_rate, 16_000);
        assert_eq!(audio.source_channels, 1);
        assert_eq!(audio.samples, wave.data, "{name}");
    }

    let audio =
        audio_jepa::audio::load(data.join("fsdd/recordings/7_jackson_32.wav"), 16_000).unwrap();
    assert_eq!(audio.source_rate, 8_000);
    let wave = fixture("fsdd_7_jackson_32_wave16k.npy");
    assert_eq!(audio.samples.len(), wave.data.len());
    let mut fe = LogMelExtractor::new(&FrontendConfig::default()).unwrap();
    let ours = fe.compute(&audio.samples);
    let reference = fixture("fsdd_7_jackson_32_kaldi_fbank.npy");
    // Compare where the reference has energy (bins above the resamplers' 4 kHz cut-off hold
    // only their different stop-band leakage).
    let mut total = 0.0f64;
    let mut count = 0usize;
    for (o, r) in ours.data.iter().zip(&reference.data) {
        if *r > -5.0 {
            total += (o - r).abs() as f64;
            count += 1;
        }
    }
    let mean_db = 10.0 * std::f64::consts::LOG10_E * total / count as f64;
    eprintln!("fsdd resampled by rubato vs soxr: mean |diff| {mean_db:.3} dB over {count} cells");
    assert!(mean_db < 0.5, "mean |diff| {mean_db} dB");
}
