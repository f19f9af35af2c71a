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
        let diff = max_abs_diff(&ours.data, &reference.data);
        eprintln!("{name}: max |ours - torchaudio| = {diff:.2e}");
        assert!(diff <= 1e-3, "{name}: max |diff| {diff} > 1e-3");
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
