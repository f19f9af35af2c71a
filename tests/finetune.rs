//! On-device adaptation end to end through the `ajepa` binary, on generated sounds (no shared
//! data needed): a linear probe and a short full fine-tune beat chance clearly on held-out clips,
//! and `enroll` adds a class that `listen` then tags on a held-out clip of it.

mod common;

use std::f32::consts::PI;
use std::path::{Path, PathBuf};

use audio_jepa::model::checkpoint::save_encoder;
use audio_jepa::model::EncoderConfig;

/// A 1.5 s, 16 kHz clip of sound `kind`, varied by `seed` (pitch, phase, noise).
fn clip(path: &Path, kind: &str, seed: u32) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
    let mut noise = move || {
        s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
    };
    let detune = 1.0 + 0.03 * (seed % 7) as f32;
    for i in 0..24_000 {
        let t = i as f32 / 16_000.0;
        let v = match kind {
            "low" => (2.0 * PI * 220.0 * detune * t).sin(),
            "high" => (2.0 * PI * 1800.0 * detune * t).sin(),
            // Broadband noise bursts, 4 per second.
            "clicks" => {
                if (t * 4.0).fract() < 0.1 {
                    2.0 * noise()
                } else {
                    0.0
                }
            }
            "whistle" => {
                (2.0 * PI * (3000.0 + 800.0 * (2.0 * PI * 3.0 * t).sin()) * detune * t).sin()
            }
            _ => unreachable!(),
        };
        let v = 0.3 * v + 0.01 * noise();
        w.write_sample((v * 32767.0) as i16).unwrap();
    }
    w.finalize().unwrap();
}

/// A tiny encoder with non-trivial random weights, saved as users get them.
fn encoder(dir: &Path) -> PathBuf {
    let cfg = EncoderConfig::preset("tiny").unwrap();
    let path = dir.join("enc.safetensors");
    save_encoder(&path, &common::random_tensors(&cfg, 0.1), &cfg).unwrap();
    path
}

fn ajepa(args: &[std::ffi::OsString]) -> String {
    common::ajepa(args)
}

fn accuracy(stdout: &str, split: &str) -> f64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(split))
        .unwrap_or_else(|| panic!("no `{split}` line in {stdout}"));
    line.split("accuracy ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn probe_finetune_and_enroll_on_a_tiny_labeled_set() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // Three classes, 8 clips each in folds 1-2 (train) and 4 each in fold 3 (test), as a CSV.
    let mut csv = String::from("filename,fold,category\n");
    for kind in ["low", "high", "clicks"] {
        for k in 0..12u32 {
            let name = format!("{kind}-{k}.wav");
            clip(&root.join(&name), kind, k);
            csv.push_str(&format!(
                "{name},{},{kind}\n",
                if k < 8 { 1 + k % 2 } else { 3 }
            ));
        }
    }
    std::fs::write(root.join("set.csv"), csv).unwrap();
    let model = encoder(root);
    let os = |s: &str| std::ffi::OsString::from(s);
    let common = [
        os("finetune"),
        os("--model"),
        model.clone().into(),
        os("--csv"),
        root.join("set.csv").into(),
        os("--train-folds"),
        os("1,2"),
        os("--test-folds"),
        os("3"),
        os("--val-fraction"),
        os("0.25"),
    ];

    // (a) Linear probe: chance is 33 %.
    let mut a = common.to_vec();
    a.extend([os("--out"), root.join("probe").into()]);
    let out = ajepa(&a);
    let acc = accuracy(&out, "test");
    assert!(acc >= 75.0, "probe test accuracy {acc} %\n{out}");
    assert!(root.join("probe/confusion.png").is_file());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("probe/finetune.json")).unwrap())
            .unwrap();
    assert_eq!(summary["test_clips"], 12);

    // (b) Full fine-tuning, two epochs.
    let mut b = common.to_vec();
    b.extend([
        os("--out"),
        root.join("full").into(),
        os("--full"),
        os("--epochs"),
        os("2"),
    ]);
    let out = ajepa(&b);
    let acc = accuracy(&out, "test");
    assert!(acc >= 75.0, "fine-tuned test accuracy {acc} %\n{out}");
    assert!(root.join("full/encoder.safetensors").is_file());

    // Enroll a whistle from three clips; a held-out whistle is then tagged as such by `listen`.
    let mut shots = Vec::new();
    for k in 0..4u32 {
        let p = root.join(format!("whistle-{k}.wav"));
        clip(&p, "whistle", 100 + k);
        shots.push(p);
    }
    let head = root.join("probe/head.safetensors");
    let mut e = vec![os("enroll"), os("whistle")];
    e.extend(shots[..3].iter().map(|p| p.clone().into_os_string()));
    e.extend([
        os("--model"),
        model.clone().into(),
        os("--head"),
        head.clone().into(),
    ]);
    let original = std::fs::read(&head).unwrap();
    let out = ajepa(&e);
    assert!(out.contains("4 classes"), "{out}");
    // Every enrollment keeps the head it replaced, in numbered generations.
    let bak1 = root.join("probe/head.safetensors.bak1");
    assert_eq!(std::fs::read(&bak1).unwrap(), original);
    let after_first = std::fs::read(&head).unwrap();
    let out = ajepa(&e);
    assert!(
        out.contains("4 classes"),
        "more examples of a known class: {out}"
    );
    assert_eq!(std::fs::read(&bak1).unwrap(), original, "bak1 untouched");
    assert_eq!(
        std::fs::read(root.join("probe/head.safetensors.bak2")).unwrap(),
        after_first
    );
    let out = ajepa(&[
        os("listen"),
        os("--fast"),
        os("--json"),
        os("--input"),
        shots[3].clone().into(),
        os("--model"),
        model.into(),
        os("--head"),
        head.into(),
    ]);
    let hops: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["type"] == "hop")
        .collect();
    assert!(!hops.is_empty());
    let top_whistle = hops.iter().filter(|h| h["top"][0][0] == "whistle").count();
    assert!(
        top_whistle * 10 >= hops.len() * 8,
        "whistle on top in {top_whistle} of {} hops",
        hops.len()
    );
}
