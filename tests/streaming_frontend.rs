//! The streaming front end yields the offline frames for any chunking.

mod common;

use audio_jepa::frontend::{LogMelExtractor, StreamingFbank};
use audio_jepa::FrontendConfig;
use common::{fixture, max_abs_diff, noise};
use proptest::prelude::*;

fn stream(cfg: &FrontendConfig, x: &[f32], chunks: &[usize]) -> (Vec<u64>, Vec<f32>) {
    let mut s = StreamingFbank::new(cfg).unwrap();
    let (mut idx, mut out) = (Vec::new(), Vec::new());
    let mut rest = x;
    let mut i = 0;
    while !rest.is_empty() {
        let n = chunks[i % chunks.len()].min(rest.len());
        s.push(&rest[..n], |t, f| {
            idx.push(t);
            out.extend_from_slice(f);
        });
        rest = &rest[n..];
        i += 1;
    }
    (idx, out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random chunk sizes from 1 to 5000 samples over a real clip (and noise of random length).
    #[test]
    fn any_chunking_gives_the_offline_frames(
        chunks in prop::collection::vec(1usize..=5000, 1..40),
        len in 0usize..30_000,
        seed in any::<u32>(),
        real in any::<bool>(),
    ) {
        let cfg = FrontendConfig::default();
        let x = if real {
            fixture("esc10_crying_baby_wave16k.npy").data
        } else {
            noise(len, seed)
        };
        let offline = LogMelExtractor::new(&cfg).unwrap().compute(&x);
        let (idx, frames) = stream(&cfg, &x, &chunks);
        prop_assert_eq!(idx, (0..offline.n_frames as u64).collect::<Vec<_>>());
        prop_assert!(max_abs_diff(&frames, &offline.data) <= 1e-6);
    }
}

#[test]
fn other_frame_settings_stream_identically() {
    // Non-default hop and frame (and an FFT size that is not a power of two).
    let cfg = FrontendConfig {
        frame_length_ms: 32.0,
        frame_shift_ms: 8.0,
        n_fft: Some(600),
        n_mels: 64,
        ..FrontendConfig::default()
    };
    let x = noise(20_000, 11);
    let offline = LogMelExtractor::new(&cfg).unwrap().compute(&x);
    let (_, frames) = stream(&cfg, &x, &[7, 1, 333, 4096]);
    assert_eq!(frames, offline.data);
}
