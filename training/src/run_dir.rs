//! A run directory's housekeeping: temporaries left by a write that a kill interrupted, and the
//! log of a resumed run (issue 15: a kill during a checkpoint write left a
//! `.checkpoint.safetensors.<pid>.tmp` of up to 53 MB that nothing removed, and after `--resume`
//! log.jsonl repeated the steps after the last checkpoint).

use std::path::{Path, PathBuf};

/// The pid in a temporary's name, `.NAME.PID.tmp` (`audio_jepa::arrays::write_atomically`).
fn temporary_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (_, pid) = rest.rsplit_once('.')?;
    pid.parse().ok()
}

/// Whether process `pid` may still be writing. Where that cannot be known (no /proc), it may.
fn may_be_running(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let proc = Path::new("/proc");
    !proc.is_dir() || proc.join(pid.to_string()).exists()
}

/// Removes the temporaries in `dir` whose writer is gone; returns each with its size.
pub fn remove_stale_temporaries(dir: &Path) -> std::io::Result<Vec<(PathBuf, u64)>> {
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(temporary_pid) else {
            continue;
        };
        let meta = entry.metadata()?;
        if !meta.is_file() || may_be_running(pid) {
            continue;
        }
        std::fs::remove_file(entry.path())?;
        removed.push((entry.path(), meta.len()));
    }
    Ok(removed)
}

/// Drops the records of `log` (JSON lines) after `step`, and any line a kill cut short, so a
/// resumed run's log holds each step once. Returns how many lines were dropped.
pub fn truncate_log(log: &Path, step: u64) -> std::io::Result<usize> {
    let text = match std::fs::read_to_string(log) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut kept = String::with_capacity(text.len());
    let mut dropped = 0;
    for line in text.lines() {
        let at = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("step").and_then(|s| s.as_u64()));
        match at {
            Some(s) if s <= step => {
                kept.push_str(line);
                kept.push('\n');
            }
            _ => dropped += 1,
        }
    }
    if dropped > 0 {
        audio_jepa::arrays::write_atomically(log, |w| {
            use std::io::Write;
            w.write_all(kept.as_bytes())
        })?;
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_temporaries_go_live_ones_and_other_files_stay() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // pid 0 is never a user process; our own pid is alive.
        let stale = d.join(".checkpoint.safetensors.0.tmp");
        let mine = d.join(format!(".encoder.safetensors.{}.tmp", std::process::id()));
        let other = d.join("notes.0.tmp");
        for p in [&stale, &mine, &other] {
            std::fs::write(p, b"x").unwrap();
        }
        let removed = remove_stale_temporaries(d).unwrap();
        if Path::new("/proc").is_dir() {
            assert_eq!(removed, vec![(stale.clone(), 1)]);
            assert!(!stale.exists());
        }
        assert!(mine.exists() && other.exists());
    }

    #[test]
    fn a_resumed_log_holds_each_step_once() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log.jsonl");
        let lines = [
            r#"{"step":100,"loss":0.5}"#,
            r#"{"step":200,"loss":0.4}"#,
            r#"{"rank_tokens":30.0,"step":200}"#,
            r#"{"step":210,"loss":0.39}"#,
            r#"{"step":220,"lo"#,
        ];
        std::fs::write(&log, lines.join("\n")).unwrap();
        assert_eq!(truncate_log(&log, 200).unwrap(), 2);
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(text, lines[..3].join("\n") + "\n");
        assert_eq!(truncate_log(&log, 200).unwrap(), 0, "nothing more to drop");
        assert_eq!(truncate_log(&dir.path().join("absent"), 5).unwrap(), 0);
    }
}
