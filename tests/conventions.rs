//! The command line's conventions (issue 16, item 7): commands in the order users meet them,
//! shell completions and a manual page from the same definitions as `--help`, settings out of
//! range refused with the range.

mod common;

use common::{ajepa, ajepa_cmd};

#[test]
fn help_lists_listen_first() {
    let help = ajepa(["--help"]);
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .map_while(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(&commands[..3], ["listen", "tag", "devices"], "{help}");
    assert!(commands.contains(&"completions") && commands.contains(&"man"));
}

#[test]
fn completions_and_the_manual_page_cover_every_command() {
    let bash = ajepa(["completions", "bash"]);
    let man = ajepa(["man"]);
    assert!(
        man.contains(".TH ajepa 1"),
        "{}",
        &man[..man.len().min(300)]
    );
    for cmd in ["listen", "tag", "finetune", "enroll", "eval", "bench"] {
        assert!(bash.contains(cmd), "bash completion lacks {cmd}");
        assert!(man.contains(cmd), "man page lacks {cmd}");
    }
    for shell in ["zsh", "fish"] {
        assert!(ajepa(["completions", shell]).contains("listen"));
    }
    let out = ajepa_cmd().args(["completions", "tcsh"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("possible values"));
}

#[test]
fn a_device_flag_says_which_kind_of_device() {
    // `ajepa` picks microphones (`--input-device`); `ajepa-train` picks where to compute
    // (`--compute`): one word never means both. `--device`, the old name of each, still parses.
    let listen = ajepa(["listen", "--help"]);
    assert!(listen.contains("--input-device <DEVICE>"), "{listen}");
    assert!(!listen.contains("  --device"), "{listen}");
    let out = ajepa_cmd()
        .args([
            "listen",
            "--device",
            "no-such-mic",
            "--input",
            "missing.wav",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("unexpected argument"), "{err}");
}

#[test]
fn a_threshold_outside_zero_to_one_is_refused() {
    for t in ["1.5", "0", "2"] {
        let out = ajepa_cmd()
            .args(["listen", "--input", "missing.wav", "--threshold", t])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.contains(&format!("--threshold {t}")) && err.contains("(0, 1)"),
            "{err}"
        );
    }
}

/// `AJEPA_MODEL`, `AJEPA_HEAD` and `AJEPA_PROFILE` stand in for `--model`, `--head` and
/// `--profile` when those are not given (and `--random` still wins over `AJEPA_MODEL`).
#[test]
fn environment_defaults_stand_in_for_flags() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("tone.wav");
    common::write_wav_16k(
        &clip,
        (0..16_000).map(|i| ((i as f32 * 0.07).sin() * 8000.0) as i16),
    );
    let fails_naming = |env: (&str, &str), args: &[&std::ffi::OsStr], name: &str| {
        let out = ajepa_cmd().env(env.0, env.1).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(name),
            "{env:?}: {err}"
        );
    };
    let npy = dir.path().join("f.npy");
    fails_naming(
        ("AJEPA_MODEL", "no-such-encoder.safetensors"),
        &["tag".as_ref(), clip.as_os_str()],
        "no-such-encoder",
    );
    fails_naming(
        ("AJEPA_HEAD", "no-such-head.safetensors"),
        &["tag".as_ref(), clip.as_os_str()],
        "no-such-head",
    );
    fails_naming(
        ("AJEPA_PROFILE", "no-such-profile"),
        &[
            "features".as_ref(),
            clip.as_os_str(),
            "--out".as_ref(),
            npy.as_os_str(),
        ],
        "no-such-profile",
    );
    // --random is not a conflict with an environment default.
    let out = ajepa_cmd()
        .env("AJEPA_MODEL", "no-such-encoder.safetensors")
        .args([
            "listen".as_ref(),
            "--random".as_ref(),
            "--input".as_ref(),
            clip.as_os_str(),
        ])
        .args(["--fast", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `-q` leaves stderr to warnings and errors; `-q` with `-v` is a contradiction.
#[test]
fn quiet_silences_notes_but_not_errors() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("tone.wav");
    common::write_wav_16k(
        &clip,
        (0..8_000).map(|i| ((i as f32 * 0.05).sin() * 8000.0) as i16),
    );
    let npy = dir.path().join("f.npy");
    let run = |flags: &[&str]| {
        ajepa_cmd()
            .args(flags)
            .args([
                "features".as_ref(),
                clip.as_os_str(),
                "--out".as_ref(),
                npy.as_os_str(),
            ])
            .output()
            .unwrap()
    };
    let loud = run(&[]);
    assert!(String::from_utf8_lossy(&loud.stderr).contains("wrote"));
    let quiet = run(&["-q"]);
    assert!(quiet.status.success());
    assert_eq!(String::from_utf8_lossy(&quiet.stderr), "");
    let both = run(&["-q", "-v"]);
    assert!(!both.status.success());
    let missing = ajepa_cmd()
        .args(["-q", "features", "missing.wav", "--out"])
        .arg(&npy)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&missing.stderr).contains("missing.wav"));
}
