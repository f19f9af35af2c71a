//! Issue 16, item 1: the built-in model on every command. `--model default` works wherever
//! `--model` does, `finetune` and `enroll` start from it when `--model` is omitted, and enroll
//! without `--head` extends the built-in head into a new file. Clips are generated here, so no
//! shared data is needed.

mod common;

use std::path::{Path, PathBuf};

/// A mono 16 kHz WAV of `seconds`: a tone at `hz` (a "class") over a little noise.
fn clip(dir: &Path, name: &str, hz: f32, seconds: f32, seed: u32) -> PathBuf {
    let path = dir.join(name);
    let noise = common::noise((16_000.0 * seconds) as usize, seed);
    common::write_wav_16k(
        &path,
        noise.iter().enumerate().map(|(i, n)| {
            let t = i as f32 / 16_000.0;
            let v = 0.3 * (2.0 * std::f32::consts::PI * hz * t).sin() + 0.05 * n;
            (v * 32767.0) as i16
        }),
    );
    path
}

/// `ajepa bench` times the built-in encoder by default with the profile's settings, gives a
/// verdict against the profile's budget, and writes a shareable report (issue 16, item 6):
/// version, OS, CPU, cores and time, no raw embeddings.
#[test]
fn bench_reports_the_built_in_encoder_against_the_profile_budget() {
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("report.md");
    let out = common::ajepa([
        "bench".as_ref(),
        "--profile".as_ref(),
        "jetson-orin-nano".as_ref(),
        "--repeat".as_ref(),
        "2".as_ref(),
        "--json".as_ref(),
        "--markdown".as_ref(),
        md.as_os_str(),
    ]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    for key in ["version", "os", "cores", "timestamp_utc", "cpu"] {
        assert!(!r[key].is_null(), "{key} missing: {out}");
    }
    assert_eq!(r["profile"], "jetson-orin-nano");
    assert_eq!(r["encoder"]["model"], "default");
    // The profile's 8-column window and int8 arithmetic.
    assert_eq!(r["encoder"]["patches"], 64);
    assert_eq!(
        r["verdict"]["runtime"]
            .as_str()
            .map(|s| s.starts_with("engine q8")),
        Some(true)
    );
    assert_eq!(r["verdict"]["budget_ms"], 100.0);
    assert!(!out.contains("pooled"), "raw embeddings in the report");
    let text = std::fs::read_to_string(&md).unwrap();
    for needle in [
        "# ajepa bench",
        "| cores |",
        "## Encoder per hop",
        "## Verdict",
    ] {
        assert!(text.contains(needle), "`{needle}` missing:\n{text}");
    }
    // A report never replaces a file of another kind.
    let wav = clip(dir.path(), "x.wav", 440.0, 0.5, 1);
    let before = std::fs::read(&wav).unwrap();
    let o = common::ajepa_cmd()
        .args(["bench", "--frontend-only", "--repeat", "1", "--markdown"])
        .arg(&wav)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a .md file"));
    assert_eq!(std::fs::read(&wav).unwrap(), before);
}

#[test]
fn every_command_takes_the_built_in_model() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |x: &Path| x.as_os_str().to_owned();

    // embed
    let a = clip(d, "a.wav", 440.0, 1.5, 1);
    let a_clip = a.clone();
    let emb = d.join("a.npy");
    common::ajepa([
        "embed".as_ref(),
        "--model".as_ref(),
        "default".as_ref(),
        p(&a).as_os_str(),
        "--out".as_ref(),
        p(&emb).as_os_str(),
    ]);
    let e = audio_jepa::arrays::read_npy(&emb).unwrap();
    assert_eq!(e.shape[1], 192);

    // quantize
    let q = d.join("q8.safetensors");
    let out = common::ajepa([
        "quantize".as_ref(),
        "--model".as_ref(),
        "default".as_ref(),
        "--out".as_ref(),
        p(&q).as_os_str(),
        "--type".as_ref(),
        "q8".as_ref(),
    ]);
    assert!(out.contains("default") && q.is_file(), "{out}");

    // A labeled set: two tones, two folds, and one folder per class.
    let mut csv = String::from("filename,fold,target,category\n");
    for (k, (hz, name)) in [(300.0, "low"), (2000.0, "high")].iter().enumerate() {
        std::fs::create_dir_all(d.join("folders").join(name)).unwrap();
        for i in 0..6u32 {
            let f = format!("{name}{i}.wav");
            let c = clip(
                d,
                &f,
                *hz * (1.0 + 0.03 * i as f32),
                1.2,
                10 + i + 7 * k as u32,
            );
            std::fs::copy(&c, d.join("folders").join(name).join(&f)).unwrap();
            csv += &format!("{f},{},{k},{name}\n", 1 + i % 3);
        }
    }
    let csv_path = d.join("set.csv");
    std::fs::write(&csv_path, csv).unwrap();

    // eval
    let out = common::ajepa([
        "eval".as_ref(),
        "--model".as_ref(),
        "default".as_ref(),
        "--csv".as_ref(),
        p(&csv_path).as_os_str(),
        "--train-folds".as_ref(),
        "1,2".as_ref(),
        "--test-folds".as_ref(),
        "3".as_ref(),
        "--no-baselines".as_ref(),
    ]);
    assert!(out.contains("accuracy"), "{out}");

    // finetune without --model: the built-in encoder
    let head_dir = d.join("head");
    let out = common::ajepa([
        "finetune".as_ref(),
        "--folders".as_ref(),
        p(&d.join("folders")).as_os_str(),
        "--out".as_ref(),
        p(&head_dir).as_os_str(),
    ]);
    assert!(head_dir.join("head.safetensors").is_file(), "{out}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(head_dir.join("finetune.json")).unwrap())
            .unwrap();
    assert_eq!(summary["model"], "default");
    // The head records its window, and a different window is refused, not silently used.
    let fitted = head_dir.join("head.safetensors");
    let head = audio_jepa::model::head::Head::load(&fitted).unwrap();
    assert_eq!(head.window_columns, Some(6));
    for args in [
        vec![
            "enroll",
            "x",
            "--head",
            "H",
            "--out",
            "O",
            "--window-columns",
            "8",
        ],
        vec![
            "listen",
            "--head",
            "H",
            "--input",
            "A",
            "--window-columns",
            "8",
            "--fast",
        ],
    ] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ajepa"));
        for a in args {
            match a {
                "H" => cmd.arg(&fitted),
                "O" => cmd.arg(d.join("o.safetensors")),
                "A" => cmd.arg(&a_clip),
                "x" => cmd.arg("x").arg(&a_clip),
                other => cmd.arg(other),
            };
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("6-column windows"),
            "{err}"
        );
    }

    // enroll without --model or --head: the built-in head, extended into a new file
    let h = d.join("mine.safetensors");
    let out = common::ajepa([
        "enroll".as_ref(),
        "whistle".as_ref(),
        p(&a).as_os_str(),
        "--out".as_ref(),
        p(&h).as_os_str(),
    ]);
    assert!(
        out.contains("11 classes") && out.contains("whistle"),
        "{out}"
    );
    let head = audio_jepa::model::head::Head::load(&h).unwrap();
    assert_eq!(head.labels.len(), 11);

    // listen --model default is the built-in tagger (its head too)
    let out = common::ajepa([
        "listen".as_ref(),
        "--model".as_ref(),
        "default".as_ref(),
        "--input".as_ref(),
        p(&a).as_os_str(),
        "--fast".as_ref(),
        "--json".as_ref(),
    ]);
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["info"]["untrained"], false, "{first}");
    // Every hop carries the open-set check of the built-in head.
    let hop: serde_json::Value = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| l["type"] == "hop")
        .unwrap();
    assert!(
        hop["unknown"].is_boolean() && hop["similarity"].is_number(),
        "{hop}"
    );

    // tag: a folder (recursive) and a 0.3 s clip, as JSON lines and as CSV
    let short = clip(d, "short.wav", 800.0, 0.3, 99);
    let out = common::ajepa([
        "tag".as_ref(),
        "--json".as_ref(),
        p(&d.join("folders")).as_os_str(),
        p(&short).as_os_str(),
    ]);
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 13, "{out}");
    for r in &rows {
        let top = r["top"].as_array().unwrap();
        assert_eq!(top.len(), 3, "{r}");
        assert!(r["windows"].as_u64().unwrap() >= 1, "{r}");
        let s: f64 = top.iter().map(|t| t[1].as_f64().unwrap()).sum();
        assert!(s > 0.0 && s <= 1.0 + 1e-5, "{r}");
    }
    assert_eq!(rows[12]["windows"], 1);
    // The engine's thread count changes nothing, to the last digit printed.
    for threads in ["1", "3"] {
        let again = common::ajepa([
            "tag".as_ref(),
            "--json".as_ref(),
            "--threads".as_ref(),
            threads.as_ref(),
            p(&d.join("folders")).as_os_str(),
            p(&short).as_os_str(),
        ]);
        assert_eq!(again, out, "--threads {threads}");
    }
    // The built-in head keeps a support set, so every clip gets the open-set check.
    assert!(
        rows.iter()
            .all(|r| r["unknown"].is_boolean() && r["similarity"].is_number()),
        "{out}"
    );
    let out = common::ajepa([
        "tag".as_ref(),
        "--json".as_ref(),
        "--no-unknown".as_ref(),
        p(&short).as_os_str(),
    ]);
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["unknown"], false);
    assert!(r["similarity"].is_null());
    assert!((rows[12]["seconds"].as_f64().unwrap() - 0.3).abs() < 0.05);
    let out = common::ajepa([
        "tag".as_ref(),
        "--csv".as_ref(),
        "--top".as_ref(),
        "2".as_ref(),
        p(&short).as_os_str(),
    ]);
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("file,seconds,windows,peak_dbfs,silent,known,similarity,tag1,score1,tag2,score2")
    );
    assert_eq!(lines.next().unwrap().split(',').count(), 11);
}
