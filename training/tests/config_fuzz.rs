//! Property fuzzing of training configs (issue 15: `crop_frames = 1e8` and friends aborted on
//! allocation): the shipped default config with hostile values in up to three numeric settings
//! must load, or be refused naming the file and the setting; a config that loads must sample its
//! masks on its own patch grid without a panic.
//!
//! `cargo test` runs 256 cases; longer: `PROPTEST_CASES=20000 cargo test -p audio-jepa-training
//! --test config_fuzz`.

use std::path::Path;

use audio_jepa_training::config::TrainConfig;
use audio_jepa_training::masks::sample_with_probability;
use proptest::prelude::*;
use rand::SeedableRng;

const DEFAULT: &str = include_str!("../configs/default-model.toml");

fn hostile_number() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("0.0".to_string()),
        Just("1e8".to_string()),
        Just("1e308".to_string()),
        Just("1e-30".to_string()),
        Just("nan".to_string()),
        Just("inf".to_string()),
        Just("9223372036854775807".to_string()),
        Just("100000".to_string()),
        Just("[1e9, -1]".to_string()),
        Just("\"text\"".to_string()),
        (-1e4f64..1e4).prop_map(|v| format!("{v}")),
        (0u64..5000).prop_map(|v| v.to_string()),
    ]
}

/// Lines `key = value` whose value is a number or a list of numbers.
fn numeric_lines(lines: &[String]) -> Vec<usize> {
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            let Some((k, v)) = l.split_once('=') else {
                return false;
            };
            let v = v.split('#').next().unwrap_or("").trim();
            let v = v.trim_start_matches('[').trim_end_matches(']');
            !k.trim_start().starts_with('#')
                && !v.is_empty()
                && v.split(',').all(|x| x.trim().parse::<f64>().is_ok())
        })
        .map(|(i, _)| i)
        .collect()
}

proptest! {
    #[test]
    fn training_configs_with_hostile_settings_load_or_fail_cleanly(
        picks in prop::collection::vec((any::<prop::sample::Index>(), hostile_number()), 1..4),
    ) {
        let mut lines: Vec<String> = DEFAULT.lines().map(str::to_string).collect();
        let numeric = numeric_lines(&lines);
        prop_assert!(numeric.len() > 20, "the default config has its numeric settings");
        let mut changed = Vec::new();
        for (idx, value) in picks {
            let i = numeric[idx.index(numeric.len())];
            let key = lines[i].split_once('=').unwrap().0.trim().to_string();
            lines[i] = format!("{key} = {value}");
            changed.push(key);
        }
        match TrainConfig::from_toml_str(&lines.join("\n"), Path::new("hostile.toml")) {
            Ok(cfg) => {
                let patch = 16;
                let (n_freq, n_time) = (cfg.frontend.n_mels / patch, cfg.data.crop_frames / patch);
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
                for p in [0.0, 1.0] {
                    let m = sample_with_probability(&cfg.masks, p, n_freq, n_time, 2, &mut rng);
                    prop_assert_eq!(m.context.len(), 2, "{:?}", changed);
                }
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.contains("hostile.toml"), "the error does not name the file: {msg}");
            }
        }
    }
}
