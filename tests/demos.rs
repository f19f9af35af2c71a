//! The demos (demos/*/run.sh, issue 16 item 8) run as a user runs them, with this build's
//! `ajepa`, on real files: each must exit 0 and print what its README promises. The two that
//! need ESC-50 clips skip when ../shared/data is absent.

mod common;

use std::path::Path;
use std::process::Command;

fn demo(name: &str, args: &[&str]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join("demos").join(name).join("run.sh"))
        .args(args)
        .env("AJEPA", env!("CARGO_BIN_EXE_ajepa"))
        .env("ESC50", root.join("../shared/data/esc50"))
        .current_dir(root)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "demo {name} failed:\n{text}");
    text
}

#[test]
fn the_live_tagging_demo_tags_its_clips() {
    if common::shared_data("the_live_tagging_demo_tags_its_clips").is_none() {
        return;
    }
    // No terminal here: the demo replays its three ESC-10 clips.
    let out = demo("live-tagging", &[]);
    assert!(out.contains("replaying three ESC-10 clips"), "{out}");
    for tag in ["helicopter", "rain", "rooster"] {
        assert!(out.contains(tag), "`{tag}` never shown:\n{out}");
    }
}

#[test]
fn the_few_shot_demo_teaches_two_sounds_and_prints_the_accuracy() {
    if common::shared_data("the_few_shot_demo_teaches_two_sounds_and_prints_the_accuracy").is_none()
    {
        return;
    }
    let out = demo("few-shot", &[]);
    assert!(out.contains("12 classes"), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("accuracy "))
        .unwrap_or_else(|| panic!("no accuracy line:\n{out}"));
    // "accuracy 56.2 % (9 / 16 clips ...)": well above chance (1 in 12) on the 16 held-out clips.
    let acc: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(acc >= 30.0, "{line}");
    assert!(line.contains("/ 16 clips"), "{line}");
}

#[test]
fn the_latency_demo_reports_every_profile_against_its_budget() {
    let out = demo("latency", &["3"]);
    for entry in
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config")).unwrap()
    {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let name = path.file_stem().unwrap().to_string_lossy().to_string();
            let row = out
                .lines()
                .find(|l| l.starts_with(&name))
                .unwrap_or_else(|| panic!("no row for {name}:\n{out}"));
            assert!(
                row.contains("within budget") || row.contains("OVER BUDGET"),
                "{row}"
            );
        }
    }
}
