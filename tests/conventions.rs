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
