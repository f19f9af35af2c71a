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
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
    let mut noise = move || {
        s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
    };
    let detune = 1.0 + 0.03 * (seed % 7) as f32;
    let samples = (0..24_000).map(|i| {
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
        (v * 32767.0) as i16
    });
    common::write_wav_16k(path, samples);
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
    // Heads pool each window's frequency rows side by side by default (`--pool freqcat`): the
    // enrollment and `listen` below run on such a head.
    assert_eq!(summary["pool"], "freqcat");

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

    // (c) The same in bf16 products (AVX-512 BF16 CPUs; f32, with a note, elsewhere).
    let mut c = b.clone();
    c.extend([os("--precision"), os("bf16")]);
    for arg in c.iter_mut() {
        if *arg == root.join("full").into_os_string() {
            *arg = root.join("full-bf16").into();
        }
    }
    let out = ajepa(&c);
    let acc = accuracy(&out, "test");
    assert!(acc >= 75.0, "bf16 fine-tuned test accuracy {acc} %\n{out}");
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("full-bf16/finetune.json")).unwrap(),
    )
    .unwrap();
    let bf16 = audio_jepa::model::fused::bf16_available();
    assert_eq!(
        summary["finetune"]["products"],
        if bf16 { "bf16" } else { "f32" },
        "{out}"
    );

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

/// `ajepa eval --head` on folders (issue 16, item 4): its counts agree with what `ajepa tag`
/// says about each clip, clips of classes the head lacks (and an `unknown/` folder) count as
/// sounds it should not know, and without the open-set check every such clip is a false tag.
#[test]
fn eval_head_scores_a_trained_head_as_tag_tags() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let os = |s: &str| std::ffi::OsString::from(s);
    for kind in ["low", "high", "clicks"] {
        std::fs::create_dir_all(root.join("train").join(kind)).unwrap();
        std::fs::create_dir_all(root.join("test").join(kind)).unwrap();
        for k in 0..6u32 {
            clip(&root.join(format!("train/{kind}/{k}.wav")), kind, k);
        }
        for k in 0..3u32 {
            clip(&root.join(format!("test/{kind}/{k}.wav")), kind, 50 + k);
        }
    }
    // A misfiled clip, two sounds in `unknown/` and a class the head never saw.
    clip(&root.join("test/low/misfiled.wav"), "high", 60);
    for (folder, k) in [("unknown", 70u32), ("unknown", 71), ("whistle", 72)] {
        std::fs::create_dir_all(root.join("test").join(folder)).unwrap();
        clip(&root.join(format!("test/{folder}/{k}.wav")), "whistle", k);
    }
    let model = encoder(root);
    ajepa(&[
        os("finetune"),
        os("--model"),
        model.clone().into(),
        os("--folders"),
        root.join("train").into(),
        os("--out"),
        root.join("head").into(),
    ]);
    let head = root.join("head/head.safetensors");
    let png = root.join("cm.png");
    let out = ajepa(&[
        os("eval"),
        os("--head"),
        head.clone().into(),
        os("--model"),
        model.clone().into(),
        os("--folders"),
        root.join("test").into(),
        os("--no-unknown"),
        os("--json"),
        os("--confusion-png"),
        png.clone().into(),
    ]);
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["clips"], 10, "{r}");
    assert_eq!(r["unknown_clips"], 3, "{r}");
    assert_eq!(
        r["false_tags"], 3,
        "no open-set check: every stranger gets a class"
    );
    assert_eq!(r["false_tag_rate"], 1.0);
    assert_eq!(r["right"], r["top_right"], "no check, no difference");
    let cm: Vec<Vec<u64>> = serde_json::from_value(r["confusion"].clone()).unwrap();
    let labels: Vec<String> = serde_json::from_value(r["labels"].clone()).unwrap();
    assert_eq!(labels, ["clicks", "high", "low", "unknown"]);
    let row_sums: Vec<u64> = cm.iter().map(|row| row.iter().sum()).collect();
    assert_eq!(row_sums, [3, 3, 4, 3]);
    assert!(cm.iter().all(|row| row[3] == 0), "no unknown answers");
    assert!(std::fs::metadata(&png).unwrap().len() > 100);

    // The same clips through `tag`: its top tags give eval's confusion, cell for cell.
    let tagged = ajepa(&[
        os("tag"),
        os("--json"),
        os("--no-unknown"),
        os("--model"),
        model.clone().into(),
        os("--head"),
        head.clone().into(),
        root.join("test").into(),
    ]);
    let mut from_tag = vec![vec![0u64; 4]; 4];
    for line in tagged.lines() {
        let t: serde_json::Value = serde_json::from_str(line).unwrap();
        let file = std::path::PathBuf::from(t["file"].as_str().unwrap());
        let folder = file
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap();
        let row = labels.iter().position(|l| l == folder).unwrap_or(3);
        let col = labels.iter().position(|l| *l == t["top"][0][0]).unwrap();
        from_tag[row][col] += 1;
    }
    assert_eq!(from_tag, cm);

    // With the check on, the text report; a head on an encoder of another width is refused.
    let out = ajepa(&[
        os("eval"),
        os("--head"),
        head.clone().into(),
        os("--model"),
        model.clone().into(),
        os("--folders"),
        root.join("test").into(),
    ]);
    assert!(
        out.contains("accuracy") && out.contains("false tags") && out.contains("recall"),
        "{out}"
    );
    // The head records its encoder: an f16 copy of it passes silently, another encoder of the
    // same shape draws a warning from eval and a refusal from enroll.
    let quantized = |kind: &str| {
        let out = root.join(format!("enc-{kind}.safetensors"));
        ajepa(&[
            os("quantize"),
            os("--model"),
            model.clone().into(),
            os("--out"),
            out.clone().into(),
            os("--type"),
            os(kind),
        ]);
        out
    };
    let f16 = quantized("f16");
    let other = root.join("other.safetensors");
    let cfg = EncoderConfig::preset("tiny").unwrap();
    save_encoder(&other, &common::random_tensors(&cfg, 0.11), &cfg).unwrap();
    let eval_on = |m: &Path| {
        common::ajepa_cmd()
            .args([os("eval"), os("--head"), head.clone().into(), os("--model")])
            .arg(m)
            .arg("--folders")
            .arg(root.join("test"))
            .output()
            .unwrap()
    };
    let same = eval_on(&f16);
    assert!(same.status.success());
    assert!(!String::from_utf8_lossy(&same.stderr).contains("fingerprint"));
    // An int8 copy records the encoder it was made from, so it passes too.
    let q8 = quantized("q8");
    let same = eval_on(&q8);
    let err = String::from_utf8_lossy(&same.stderr);
    assert!(
        same.status.success() && !err.contains("fingerprint"),
        "{err}"
    );
    let differs = eval_on(&other);
    let err = String::from_utf8_lossy(&differs.stderr);
    assert!(
        differs.status.success() && err.contains("warning") && err.contains("fingerprint"),
        "{err}"
    );
    let refused = common::ajepa_cmd()
        .args([os("enroll"), os("whistle")])
        .arg(root.join("test/whistle/72.wav"))
        .arg("--model")
        .arg(&other)
        .arg("--head")
        .arg(&head)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("refuses to mix"),
        "{err}"
    );

    let wrong = common::ajepa_cmd()
        .args([os("eval"), os("--head"), head.into(), os("--folders")])
        .arg(root.join("test"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        !wrong.status.success() && err.contains("-wide embeddings"),
        "{err}"
    );
}
