//! `ajepa-train` as a user runs it: a tiny pretraining run on a folder of WAV files, quiet and
//! not; the flag names; a multi-GPU launch refused clearly by a build without NCCL.

use std::path::Path;
use std::process::Command;

mod common;

fn train_cmd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ajepa-train"))
}

/// Four 2 s clips of gliding tones over noise, 16 kHz.
fn wav_folder(dir: &Path) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut s = 7u32;
    for c in 0..4 {
        let mut w = hound::WavWriter::create(dir.join(format!("clip{c}.wav")), spec).unwrap();
        let mut phase = 0f32;
        for i in 0..32_000 {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            phase += 2.0 * std::f32::consts::PI * (300.0 + 200.0 * c as f32 + i as f32 * 0.01)
                / 16_000.0;
            let v = 0.4 * phase.sin() + 0.05 * ((s >> 16) as f32 / 65536.0 - 0.5);
            w.write_sample((v * 32767.0) as i16).unwrap();
        }
        w.finalize().unwrap();
    }
}

/// A folder of clips and the tests' tiny config, in a temporary folder.
struct TinyRun {
    dir: tempfile::TempDir,
    audio: std::path::PathBuf,
    cfg: std::path::PathBuf,
}

impl TinyRun {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let audio = dir.path().join("audio");
        std::fs::create_dir(&audio).unwrap();
        wav_folder(&audio);
        let cfg = dir.path().join("tiny.toml");
        std::fs::write(&cfg, common::TINY_TOML).unwrap();
        Self { dir, audio, cfg }
    }

    /// `ajepa-train FLAGS pretrain` for 2 steps on the CPU into `out` (under the folder).
    fn pretrain(&self, flags: &[&str], out: &str) -> Command {
        self.pretrain_on(&self.audio, flags, out)
    }

    /// As `pretrain`, on the audio in `data`.
    fn pretrain_on(&self, data: &Path, flags: &[&str], out: &str) -> Command {
        let mut c = train_cmd();
        c.env_remove("RUST_LOG")
            .args(flags)
            .args(["pretrain", "--compute", "cpu", "--steps", "2", "--config"])
            .arg(&self.cfg)
            .arg("--data")
            .arg(data)
            .arg("--cache")
            .arg(self.dir.path().join("cache"))
            .arg("--out")
            .arg(self.dir.path().join(out));
        c
    }
}

#[test]
fn a_tiny_run_trains_and_quiet_keeps_stderr_for_problems() {
    let tiny = TinyRun::new();
    let run = |flag: Option<&str>, out: &str| tiny.pretrain(flag.as_slice(), out).output().unwrap();
    let loud = run(None, "run-loud");
    let stderr = String::from_utf8_lossy(&loud.stderr);
    assert!(loud.status.success(), "{stderr}");
    assert!(stderr.contains("done: 2 steps"), "{stderr}");
    assert!(!stderr.contains("step 2: loss"), "{stderr}");
    let quiet = run(Some("-q"), "run-quiet");
    assert!(quiet.status.success());
    assert_eq!(String::from_utf8_lossy(&quiet.stderr), "");
    // -v: every logged step, the rank measurement and the checkpoint as plain lines.
    let verbose = run(Some("-v"), "run-verbose");
    let stderr = String::from_utf8_lossy(&verbose.stderr);
    assert!(verbose.status.success(), "{stderr}");
    for line in [
        "step 2: loss ",
        "samples/s",
        "step 2: effective rank of the target's tokens",
        "step 2: checkpoint saved in",
    ] {
        assert!(
            stderr.contains(line),
            "{line:?} missing from -v output:\n{stderr}"
        );
    }
    let both = train_cmd()
        .args(["-q", "-v", "curves", "x"])
        .output()
        .unwrap();
    assert!(!both.status.success());
    assert!(String::from_utf8_lossy(&both.stderr).contains("cannot be used with"));
    for out in ["run-loud", "run-quiet", "run-verbose"] {
        let dir = &tiny.dir;
        assert!(dir
            .path()
            .join(out)
            .join("checkpoint.safetensors")
            .is_file());
        assert!(dir.path().join(out).join("encoder.safetensors").is_file());
    }
}

#[test]
fn the_compute_device_and_the_rendezvous_are_named_in_help() {
    let out = train_cmd().args(["pretrain", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--compute <DEVICE>"), "{help}");
    assert!(help.contains("--rendezvous-file <FILE>"), "{help}");
    assert!(!help.contains("  --device"), "{help}");
}

#[cfg(not(feature = "nccl"))]
#[test]
fn several_ranks_without_nccl_are_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = train_cmd()
        .args(["pretrain", "--config", "none.toml", "--out"])
        .arg(dir.path().join("run"))
        .env("WORLD_SIZE", "2")
        .env("RANK", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("without NCCL") && err.contains("build-cuda.sh"),
        "{err}"
    );
    // Nothing was written by a rank that could not join.
    assert!(!dir.path().join("run").exists());
}

/// `--init` takes a run's folder, an encoder file, or the built-in encoder, and refuses an
/// encoder whose shape is not the config's with both shapes named.
#[test]
fn init_takes_an_encoder_file_or_the_built_in_one() {
    let tiny = TinyRun::new();
    let dir = &tiny.dir;
    let run = |init: &Path, out: &str| {
        tiny.pretrain(&[], out)
            .arg("--init")
            .arg(init)
            .output()
            .unwrap()
    };
    let first = tiny.pretrain(&["-q"], "first").output().unwrap();
    assert!(first.status.success());
    for (init, says) in [
        (
            dir.path().join("first"),
            "starting from the weights of the run",
        ),
        (
            dir.path().join("first").join("encoder.safetensors"),
            "starting from the encoder",
        ),
    ] {
        let out = run(&init, &format!("from-{}", says.len()));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
    }
    // The built-in encoder is 192 wide x 6 deep; the tiny config's model is not.
    let out = run(Path::new("default"), "from-default");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--init default")
            && stderr.contains("192-wide x 6 deep")
            && stderr.contains("must match"),
        "{stderr}"
    );
    let out = run(&dir.path().join("nothing-here"), "from-nothing");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such run folder or encoder file"));
}

#[test]
fn a_run_that_fails_to_start_leaves_no_empty_out_folder() {
    let tiny = TinyRun::new();
    // Data that is not there: the start fails after --out was made.
    let missing = tiny.dir.path().join("no-such-audio");
    let fail = |out: &str| tiny.pretrain_on(&missing, &[], out).output().unwrap();
    let out = fail("run-new");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no-such-audio"), "{stderr}");
    assert!(
        !tiny.dir.path().join("run-new").exists(),
        "a failed start left its --out folder: {stderr}"
    );
    // A nested --out: the parents the run made go with it.
    let out = fail("new-parent/runs/run-new");
    assert!(!out.status.success());
    assert!(
        !tiny.dir.path().join("new-parent").exists(),
        "a failed start left --out's parents: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A folder the user made beforehand is theirs: kept, even empty.
    std::fs::create_dir(tiny.dir.path().join("run-mine")).unwrap();
    assert!(!fail("run-mine").status.success());
    assert!(tiny.dir.path().join("run-mine").is_dir());
}
