//! The live-tagging pipeline end to end: the UI renders, a slow encoder makes the worker skip
//! hops without losing capture samples, and `ajepa listen --json` prints parseable lines.

mod common;

use std::sync::Arc;
use std::time::Duration;

use audio_jepa::engine::{FastEncoder, Isa, Precision};
use audio_jepa::model::head::Head;
use audio_jepa::model::{Encoder, EncoderConfig};
use audio_jepa::stream::session::{Event, HopEvent, Session, Source, Stats};
use audio_jepa::stream::worker::{Pipeline, PipelineConfig};
use audio_jepa::tui::{render, App};
use audio_jepa::FrontendConfig;
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

fn tiny() -> Arc<FastEncoder> {
    let vm = VarMap::new();
    let cfg = EncoderConfig::preset("tiny").unwrap();
    let enc = Encoder::load(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu), &cfg).unwrap();
    Arc::new(FastEncoder::from_encoder(&enc, Precision::F32, Isa::detect(), 6).unwrap())
}

fn tone_wav(dir: &std::path::Path, seconds: f32) -> std::path::PathBuf {
    let path = dir.join("tone.wav");
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 44_100,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&path, spec).unwrap();
    for i in 0..(44_100.0 * seconds) as usize {
        let v = (0.3 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 44_100.0).sin() * 32767.0)
            as i16;
        w.write_sample(v).unwrap();
        w.write_sample(v).unwrap();
    }
    w.finalize().unwrap();
    path
}

/// The offline candle encoder's mean-pooled embedding of one 6-column window of patches: what
/// `listen` must reproduce hop by hop.
fn pooled(enc: &Encoder, patches: &[f32]) -> Vec<f32> {
    let x = candle_core::Tensor::from_slice(patches, (1, 48, 256), &Device::Cpu).unwrap();
    enc.forward(&x, None)
        .unwrap()
        .mean(1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn the_ui_renders_tags_stats_and_the_untrained_flag() {
    let mut app = App {
        model: "encoder.safetensors".into(),
        source: "file clip.flac".into(),
        untrained: true,
        threshold: 0.5,
        ..App::default()
    };
    app.on_hop(&HopEvent {
        hop: 3,
        t_audio_s: 1.23,
        compute_ms: 4.2,
        capture_to_tag_ms: 7.5,
        level_db: -20.0,
        labels: vec!["rain".to_string(), "dog".to_string()].into(),
        scores: vec![(1, 0.91), (0, 0.12)],
        unknown: false,
        silent: false,
        similarity: 0.5,
        tags_on: vec![1],
        tags_off: vec![],
        spectrum: vec![0.0; 128],
        pooled: vec![],
    });
    app.stats = Stats {
        hops: 4,
        hop_ms_p50: 4.2,
        hop_ms_p99: 9.9,
        skipped_hops: 2,
        ..Stats::default()
    };
    let mut term = Terminal::new(TestBackend::new(110, 32)).unwrap();
    term.draw(|f| render(f, &app)).unwrap();
    let text = common::screen(term.backend().buffer());
    for needle in [
        "UNTRAINED",
        "dog 0.91",
        "rain 0.12",
        "+ dog",
        "p50 4.20 ms",
        "p99 9.90 ms",
        "skipped hops 2",
        "-20.0 dB",
    ] {
        assert!(text.contains(needle), "`{needle}` not on screen:\n{text}");
    }
    assert!(!text.contains("UNKNOWN"), "{text}");
    // A window unlike every class's examples (the open-set check) says so.
    app.unknown = true;
    term.draw(|f| render(f, &app)).unwrap();
    let rows = common::screen(term.backend().buffer());
    assert!(rows.contains("UNKNOWN: unlike every tag"), "{rows}");
}

#[test]
fn a_slow_encoder_skips_hops_but_loses_no_samples() {
    let dir = tempfile::tempdir().unwrap();
    let wav = tone_wav(dir.path(), 3.0);
    let session = Session::start(
        Source::File {
            path: wav,
            fast: false,
        },
        2.0,
        |rate| {
            let mut p = Pipeline::new(
                PipelineConfig::default(),
                &FrontendConfig::default(),
                rate,
                tiny(),
                Head::untrained(64),
            )?;
            // Each hop takes 400 ms, 2.5 hops of audio.
            p.extra_hop_delay = Duration::from_millis(400);
            Ok(p)
        },
    )
    .unwrap();
    let mut last: Option<Stats> = None;
    while let Ok(ev) = session.events.recv_timeout(Duration::from_secs(20)) {
        match ev {
            Event::Stats(s) => last = Some(s),
            Event::Ended(_) => break,
            Event::Hop(_) => {}
        }
    }
    let s = last.expect("final stats");
    eprintln!("{s:?}");
    assert!(s.skipped_hops > 0, "no hop was skipped");
    assert_eq!(s.dropped_samples, 0, "capture samples were lost");
    assert!(
        (s.audio_s - 3.0).abs() < 0.02,
        "consumed {} s of 3 s",
        s.audio_s
    );
}

/// Space pauses a file replay itself (issue 16): the file waits and resumes where it stopped, so
/// a paused run computes every hop an unpaused one does. The level is the hop's RMS in dBFS: the
/// 0.3-amplitude sine reads 20 log10(0.3 / sqrt 2) = -13.5 dBFS.
#[test]
fn pausing_a_file_replay_waits_and_loses_nothing() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let wav = tone_wav(dir.path(), 2.0);
    let run = |pause: bool| -> (usize, Vec<f32>) {
        let session = Session::start(
            Source::File {
                path: wav.clone(),
                fast: false,
            },
            2.0,
            |rate| {
                Pipeline::new(
                    PipelineConfig::default(),
                    &FrontendConfig::default(),
                    rate,
                    tiny(),
                    Head::untrained(64),
                )
            },
        )
        .unwrap();
        let started = std::time::Instant::now();
        let mut state = 0; // 0 playing, 1 paused, 2 resumed
        let mut levels = Vec::new();
        loop {
            match session.events.recv_timeout(Duration::from_millis(50)) {
                Ok(Event::Hop(h)) => {
                    levels.push(h.level_db);
                    session.recycle(h);
                }
                Ok(Event::Ended(_)) => break,
                Ok(Event::Stats(_)) | Err(_) => {}
            }
            let t = started.elapsed().as_secs_f64();
            if pause && state == 0 && t > 0.5 {
                session.paused.store(true, Ordering::Relaxed);
                state = 1;
            } else if state == 1 && t > 1.5 {
                session.paused.store(false, Ordering::Relaxed);
                state = 2;
            }
            assert!(t < 20.0, "the session did not end");
        }
        (levels.len(), levels)
    };
    let (plain, levels) = run(false);
    let (paused, _) = run(true);
    assert!(plain > 0);
    assert_eq!(paused, plain, "hops with a pause / without");
    for l in levels {
        assert!((l + 13.5).abs() < 0.3, "level {l} dBFS");
    }
}

/// The silence gate: a head that always says "beep" (a sigmoid of a large bias) tags the tone,
/// and the digital silence after it turns the tag off instead of keeping it on (a linear head
/// names a class for silence too). Without the gate the tag stays on to the end.
#[test]
fn silence_turns_tags_off_and_is_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("beep-then-silence.wav");
    // 1.5 s of tone, then digital silence.
    common::write_wav_16k(
        &path,
        (0..16_000 * 4).map(|i| {
            let on = i < 24_000;
            (if on {
                (i as f32 * 0.2).sin() * 8000.0
            } else {
                0.0
            }) as i16
        }),
    );
    let run = |gate: Option<f32>| -> Vec<(bool, f32, Vec<usize>, Vec<usize>)> {
        let mut head = Head::untrained(64);
        head.labels = vec!["beep".into()];
        head.weight = vec![0.0; 64];
        head.bias = vec![5.0];
        head.trained = true;
        let session = Session::start(
            Source::File {
                path: path.clone(),
                fast: true,
            },
            2.0,
            |rate| {
                Pipeline::new(
                    PipelineConfig {
                        silence_dbfs: gate,
                        ..PipelineConfig::default()
                    },
                    &FrontendConfig::default(),
                    rate,
                    tiny(),
                    head.clone(),
                )
            },
        )
        .unwrap();
        let mut hops = Vec::new();
        while let Ok(ev) = session.events.recv_timeout(Duration::from_secs(20)) {
            match ev {
                Event::Hop(h) => {
                    hops.push((h.silent, h.level_db, h.tags_on.clone(), h.tags_off.clone()));
                    session.recycle(h);
                }
                Event::Ended(_) => break,
                Event::Stats(_) => {}
            }
        }
        hops
    };
    let gated = run(Some(-60.0));
    assert!(
        gated[0].2 == vec![0],
        "the tone turns the tag on: {:?}",
        gated[0]
    );
    let first_silent = gated.iter().position(|h| h.0).expect("a silent hop");
    // Silence is the window's: the loudest of the hops its audio spans (6 one-column hops of
    // the default 6-column window) below the gate.
    let per_window = PipelineConfig::default().window_columns;
    for (i, (silent, level, _, _)) in gated.iter().enumerate() {
        let loudest = gated[i.saturating_sub(per_window - 1)..=i]
            .iter()
            .map(|h| h.1)
            .fold(f32::MIN, f32::max);
        assert_eq!(
            *silent,
            loudest < -60.0,
            "hop {i}: level {level}, window {loudest} dBFS"
        );
    }
    assert!(
        gated[first_silent..first_silent + 3]
            .iter()
            .any(|h| h.3 == vec![0]),
        "the tag turns off within three silent hops: {gated:?}"
    );
    let open = run(None);
    assert!(open.iter().all(|h| !h.0));
    assert!(
        open.iter().all(|h| h.3.is_empty()),
        "without the gate the tag stays on"
    );
}

#[test]
fn listen_json_prints_lines_a_program_can_parse() {
    let dir = tempfile::tempdir().unwrap();
    let wav = tone_wav(dir.path(), 2.0);
    let text = common::ajepa([
        "listen".as_ref(),
        "--random".as_ref(),
        "--input".as_ref(),
        wav.as_os_str(),
        "--fast".as_ref(),
        "--json".as_ref(),
    ]);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["type"], "session");
    assert_eq!(lines[0]["info"]["untrained"], true);
    let hops = lines.iter().filter(|l| l["type"] == "hop").count();
    // 2 s: 198 frames; first hop at frame 96, then one per 16.
    assert_eq!(hops, 7);
    let stats = lines.iter().rev().find(|l| l["type"] == "stats").unwrap();
    assert_eq!(stats["stats"]["hops"], 7);
    assert_eq!(stats["stats"]["dropped_samples"], 0);
    assert!(stats["stats"]["real_time_factor"].as_f64().unwrap() > 0.0);
}

#[test]
fn listen_fast_embeddings_equal_the_offline_encoder_on_the_same_windows() {
    use audio_jepa::frontend::patches::{normalize, patchify};
    use audio_jepa::frontend::{LogMel, LogMelExtractor};
    use audio_jepa::model::checkpoint::{load_encoder, save_encoder};

    let dir = tempfile::tempdir().unwrap();
    // A real clip when ../shared is there, else a generated 44.1 kHz stereo tone.
    let clip = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/esc50/audio/1-100038-A-14.flac");
    let clip = if clip.is_file() {
        clip
    } else {
        tone_wav(dir.path(), 3.0)
    };

    // A tiny encoder with non-trivial weights, saved the way users get them.
    let cfg = EncoderConfig::preset("tiny").unwrap();
    let tensors = common::random_tensors(&cfg, 0.05);
    let model = dir.path().join("enc.safetensors");
    save_encoder(&model, &tensors, &cfg).unwrap();

    let emb = dir.path().join("emb.npy");
    let args: [&std::ffi::OsStr; 9] = [
        "listen".as_ref(),
        "--fast".as_ref(),
        "--json".as_ref(),
        "--input".as_ref(),
        clip.as_os_str(),
        "--model".as_ref(),
        model.as_os_str(),
        "--embeddings-out".as_ref(),
        emb.as_os_str(),
    ];
    common::ajepa(args);
    let got = audio_jepa::arrays::read_npy(&emb).unwrap();

    // Offline: whole-clip log-mel, then each 96-frame window every 16 frames.
    let fe = FrontendConfig::default();
    let enc = load_encoder(&model, &Device::Cpu).unwrap();
    let samples = audio_jepa::audio::load(&clip, 16_000).unwrap().samples;
    let spec = LogMelExtractor::new(&fe).unwrap().compute(&samples);
    let mut expected = Vec::new();
    let mut start = 0;
    while start + 96 <= spec.n_frames {
        let mut w = LogMel {
            n_frames: 96,
            n_mels: 128,
            data: spec.data[start * 128..(start + 96) * 128].to_vec(),
        };
        normalize(&mut w.data, &fe);
        let p = patchify(&w, 16, 16).unwrap();
        expected.extend(pooled(&enc, &p.data));
        start += 16;
    }
    assert_eq!(got.shape, vec![expected.len() / 64, 64]);
    let worst = common::max_abs_diff(&got.data, &expected);
    eprintln!(
        "{} hops from `listen --fast`, max |diff| vs offline = {worst:e}",
        got.shape[0]
    );
    assert!(worst <= 1e-5, "{worst}");
}

/// Issue 16, item 2: a sound shorter than the window (a knock, a spoken digit: 0.3 s against
/// a 0.96 s window) used to give no hop at all. It gets one, padded as `finetune` pads such
/// clips for training (its own quietest frame after it), so the embedding equals the offline
/// encoder on `clip_windows`' padded window; and the built-in model tags it.
#[test]
fn a_clip_shorter_than_the_window_is_padded_and_tagged() {
    use audio_jepa::finetune::windows::{clip_windows, WindowSpec};
    use audio_jepa::frontend::LogMelExtractor;
    use audio_jepa::model::checkpoint::{load_encoder, save_encoder};

    let dir = tempfile::tempdir().unwrap();
    let wav = tone_wav(dir.path(), 0.3);
    let cfg = EncoderConfig::preset("tiny").unwrap();
    let model = dir.path().join("enc.safetensors");
    save_encoder(&model, &common::random_tensors(&cfg, 0.05), &cfg).unwrap();
    let emb = dir.path().join("emb.npy");
    let text = common::ajepa([
        "listen".as_ref(),
        "--fast".as_ref(),
        "--json".as_ref(),
        "--input".as_ref(),
        wav.as_os_str(),
        "--model".as_ref(),
        model.as_os_str(),
        "--embeddings-out".as_ref(),
        emb.as_os_str(),
    ]);
    let hops = text.lines().filter(|l| l.contains("\"hop\"")).count();
    assert_eq!(hops, 1, "{text}");
    let got = audio_jepa::arrays::read_npy(&emb).unwrap();

    let fe = FrontendConfig::default();
    let samples = audio_jepa::audio::load(&wav, 16_000).unwrap().samples;
    let spec = LogMelExtractor::new(&fe).unwrap().compute(&samples);
    assert!(spec.n_frames < 96, "{} frames", spec.n_frames);
    let w = clip_windows(&spec, &fe, &WindowSpec::default()).unwrap();
    assert_eq!(w.n, 1);
    let enc = load_encoder(&model, &Device::Cpu).unwrap();
    let expected = pooled(&enc, w.window(0));
    assert_eq!(got.shape, vec![1, 64]);
    let worst = common::max_abs_diff(&got.data, &expected);
    assert!(worst <= 1e-5, "{worst}");

    // The built-in model gives the short clip a tag.
    let text = common::ajepa([
        "listen".as_ref(),
        "--fast".as_ref(),
        "--json".as_ref(),
        "--input".as_ref(),
        wav.as_os_str(),
    ]);
    let hop: serde_json::Value = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| l["type"] == "hop")
        .unwrap_or_else(|| panic!("no hop: {text}"));
    assert!(!hop["top"].as_array().unwrap().is_empty(), "{hop}");
}

/// Issue 16, item 2, in a stream: a short sound (the loudest 0.4 s of a held-out ESC-50 bark,
/// fold 4) in the middle of 4 s of quiet room noise (-61 dBFS). In a live stream the window is
/// always full, so no padding is needed; what matters is that the hops whose window still holds
/// the sound see it: the silence gate looks at the window's loudest hop, not the newest hop
/// alone (which turned the tag off one hop after the sound's last one, before it had left the
/// window). Which class the built-in model names for an isolated bark in a quiet room is its
/// own business (sneezing, dog second); the test holds the pipeline to turning a tag on while
/// the sound is in the window, keeping it until the sound has left it, and nothing before.
#[test]
fn a_short_sound_in_a_stream_is_tagged() {
    let Some(data) = common::shared_data("a_short_sound_in_a_stream_is_tagged") else {
        return;
    };
    let bark = audio_jepa::audio::load(data.join("esc50/audio/4-182395-A-0.flac"), 16_000)
        .unwrap()
        .samples;
    let len = 16_000 * 4 / 10;
    let energy = |s: usize| bark[s..s + len].iter().map(|v| v * v).sum::<f32>();
    let loudest = (0..bark.len() - len)
        .step_by(160)
        .max_by(|&a, &b| energy(a).total_cmp(&energy(b)))
        .unwrap();
    let mut state = 5u32;
    let mut samples: Vec<f32> = (0..16_000 * 4)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            0.003 * ((state >> 8) as f32 / (1u32 << 24) as f32 - 0.5)
        })
        .collect();
    let at = 16_000 * 2;
    for (o, v) in samples[at..at + len].iter_mut().zip(&bark[loudest..]) {
        *o += v;
    }
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("bark-in-a-room.wav");
    common::write_wav_16k(
        &wav,
        samples
            .iter()
            .map(|v| (v.clamp(-1.0, 1.0) * 32767.0) as i16),
    );
    let text = common::ajepa([
        "listen".as_ref(),
        "--fast".as_ref(),
        "--json".as_ref(),
        "--input".as_ref(),
        wav.as_os_str(),
    ]);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let hops: Vec<&serde_json::Value> = lines.iter().filter(|l| l["type"] == "hop").collect();
    let t = |h: &serde_json::Value| h["t_audio_s"].as_f64().unwrap();
    let names = |h: &serde_json::Value, key: &str| -> Vec<String> {
        h[key]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    // The bark fills 2.0-2.4 s; windows are 0.96 s, so it leaves them after about 3.36 s.
    let (on_at, tag) = hops
        .iter()
        .find_map(|h| names(h, "tags_on").first().map(|n| (t(h), n.clone())))
        .unwrap_or_else(|| panic!("no tag turned on: {text}"));
    assert!((2.0..2.9).contains(&on_at), "{tag} on at {on_at}: {text}");
    let off_at = hops
        .iter()
        .find(|h| t(h) > on_at && names(h, "tags_off").contains(&tag))
        .map_or(f64::INFINITY, |h| t(h));
    assert!(
        off_at >= 3.2,
        "{tag} on at {on_at} went off at {off_at}, while the bark was still in the window: {text}"
    );
}
