//! Where pretraining audio comes from: a folder (searched recursively) or a CSV of file names.

use std::path::{Path, PathBuf};

use audio_jepa::dataset::RowFilter;

pub use audio_jepa::audio::AUDIO_EXTENSIONS;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no audio files ({}) found", AUDIO_EXTENSIONS.join(", "))]
    NoAudio { path: PathBuf },
    #[error(
        "{path}: no subfolder matches `{pattern}` (from `{field}`); the subfolders are: {have}"
    )]
    NoSubfolder {
        path: PathBuf,
        field: &'static str,
        pattern: String,
        have: String,
    },
    #[error("{path}: `include` and `exclude` choose subfolders of a folder source, not rows of a CSV or shards")]
    SelectNotFolder { path: PathBuf },
    #[error("{path}:{line}: {reason}")]
    Csv {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// Audio files named by `source`: every audio file below a folder (sorted, so runs are
/// reproducible), or the files listed in a CSV whose `filename` column (or first column) names
/// them relative to the CSV's folder or to its `audio/` subfolder (the ESC-50 layout).
pub fn list_audio(source: &Path) -> Result<Vec<PathBuf>, DataError> {
    list_audio_folds(source, None)
}

/// As [`list_audio`]; for a CSV with a `fold` column (ESC-50), only the rows of `folds`.
pub fn list_audio_folds(source: &Path, folds: Option<&[u32]>) -> Result<Vec<PathBuf>, DataError> {
    list_audio_where(source, folds, None)
}

/// As [`list_audio_folds`]; for a CSV, also only the rows whose column `where_.0` equals
/// `where_.1` (case-insensitive), e.g. `("esc10", "true")` for ESC-50's ESC-10 subset.
pub fn list_audio_where(
    source: &Path,
    folds: Option<&[u32]>,
    where_: Option<(&str, &str)>,
) -> Result<Vec<PathBuf>, DataError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DataError::Io { path, source }
    };
    let meta = std::fs::metadata(source).map_err(io(source))?;
    let files = if meta.is_dir() {
        audio_jepa::audio::audio_files_below(source)
            .map_err(|(path, source)| DataError::Io { path, source })?
    } else {
        list_csv(source, folds, where_)?
    };
    if files.is_empty() {
        return Err(DataError::NoAudio {
            path: source.to_path_buf(),
        });
    }
    Ok(files)
}

/// Which immediate subfolders of a folder source to read (`[[data.sources]] include / exclude`):
/// the free-audio corpus has one subfolder per Debian package, so a config can say exactly which
/// packages it trains on and a rebuilt corpus with more packages does not silently change a run.
/// A pattern is a subfolder's name, or a prefix followed by `*` (`asterisk-*`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Subfolders<'a> {
    /// Only these subfolders (empty: all); files directly in the folder are then left out.
    pub include: &'a [String],
    /// Never these subfolders.
    pub exclude: &'a [String],
}

impl Subfolders<'_> {
    fn is_all(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }
}

fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == pattern,
    }
}

/// As [`list_audio_where`], then only the files below the subfolders `select` keeps. Every
/// pattern must match a subfolder: a typo, or a corpus built without a package the config names,
/// is an error rather than a different run.
pub fn list_audio_selected(
    source: &Path,
    folds: Option<&[u32]>,
    where_: Option<(&str, &str)>,
    select: Subfolders<'_>,
) -> Result<Vec<PathBuf>, DataError> {
    if select.is_all() {
        return list_audio_where(source, folds, where_);
    }
    let io = |source_err| DataError::Io {
        path: source.to_path_buf(),
        source: source_err,
    };
    if !std::fs::metadata(source).map_err(io)?.is_dir() {
        return Err(DataError::SelectNotFolder {
            path: source.to_path_buf(),
        });
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(source).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_dir() {
            if let Some(n) = path.file_name().and_then(|n| n.to_str()) {
                names.push(n.to_string());
            }
        }
    }
    names.sort();
    for (field, patterns) in [("include", select.include), ("exclude", select.exclude)] {
        if let Some(p) = patterns
            .iter()
            .find(|p| !names.iter().any(|n| matches(p, n)))
        {
            return Err(DataError::NoSubfolder {
                path: source.to_path_buf(),
                field,
                pattern: p.clone(),
                have: names.join(", "),
            });
        }
    }
    // One walk of the whole folder (sorted), each file kept by the subfolder it lies in; a loose
    // file beside the subfolders belongs to none and is kept unless an include list says exactly
    // what to read.
    let keep = |name: &str| {
        (select.include.is_empty() || select.include.iter().any(|p| matches(p, name)))
            && !select.exclude.iter().any(|p| matches(p, name))
    };
    let mut files = audio_jepa::audio::audio_files_below(source)
        .map_err(|(path, source)| DataError::Io { path, source })?;
    files.retain(|f| {
        let mut parts = f.strip_prefix(source).unwrap_or(f).components();
        match (parts.next(), parts.next()) {
            (Some(sub), Some(_)) => sub.as_os_str().to_str().is_some_and(keep),
            _ => select.include.is_empty(),
        }
    });
    if files.is_empty() {
        return Err(DataError::NoAudio {
            path: source.to_path_buf(),
        });
    }
    Ok(files)
}

fn list_csv(
    path: &Path,
    folds: Option<&[u32]>,
    where_: Option<(&str, &str)>,
) -> Result<Vec<PathBuf>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    // A spreadsheet's UTF-8 byte-order mark is not part of the first column's name.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Ok(Vec::new());
    };
    let col = header
        .split(',')
        .position(|h| h.trim().eq_ignore_ascii_case("filename"))
        .unwrap_or(0);
    let fold_col = header
        .split(',')
        .position(|h| h.trim().eq_ignore_ascii_case("fold"));
    if folds.is_some() && fold_col.is_none() {
        return Err(DataError::Csv {
            path: path.to_path_buf(),
            line: 1,
            reason: "folds were asked for but the CSV has no `fold` column".into(),
        });
    }
    let filter = RowFilter::new(header, where_).map_err(|reason| DataError::Csv {
        path: path.to_path_buf(),
        line: 1,
        reason,
    })?;
    let mut files = Vec::new();
    for (i, line) in lines {
        if filter.is_some_and(|f| !f.keeps(line)) {
            continue;
        }
        let csv_err = |reason: String| DataError::Csv {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
        };
        let name = line
            .split(',')
            .nth(col)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| csv_err(format!("no value in column {}", col + 1)))?;
        if let (Some(folds), Some(fc)) = (folds, fold_col) {
            let fold: u32 = line
                .split(',')
                .nth(fc)
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| csv_err("fold is not a number".into()))?;
            if !folds.contains(&fold) {
                continue;
            }
        }
        let file = audio_jepa::dataset::resolve_listed_file(base, name)
            .ok_or_else(|| csv_err(format!("{name}: no such file beside the CSV or in audio/")))?;
        files.push(file);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_searched_recursively_and_csvs_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("audio/sub")).unwrap();
        for f in ["audio/a.wav", "audio/sub/b.FLAC", "audio/notes.txt"] {
            std::fs::write(root.join(f), b"x").unwrap();
        }
        let found = list_audio(root).unwrap();
        assert_eq!(
            found,
            vec![root.join("audio/a.wav"), root.join("audio/sub/b.FLAC")]
        );

        std::fs::write(
            root.join("list.csv"),
            "fold,filename\n1,a.wav\n\n2,sub/b.FLAC\n",
        )
        .unwrap();
        assert_eq!(list_audio(&root.join("list.csv")).unwrap(), found);
        // With a byte-order mark before the first column's name, as Excel writes.
        std::fs::write(
            root.join("bom.csv"),
            "\u{feff}esc10,filename\nTrue,a.wav\nFalse,sub/b.FLAC\n",
        )
        .unwrap();
        assert_eq!(
            list_audio_where(&root.join("bom.csv"), None, Some(("esc10", "true"))).unwrap(),
            found[..1]
        );
        std::fs::write(
            root.join("subset.csv"),
            "fold,filename,esc10\n1,a.wav,True\n2,sub/b.FLAC,False\n",
        )
        .unwrap();
        assert_eq!(
            list_audio_where(&root.join("subset.csv"), None, Some(("esc10", "true"))).unwrap(),
            vec![root.join("audio/a.wav")]
        );
        assert!(
            list_audio_where(&root.join("subset.csv"), None, Some(("nope", "x")))
                .unwrap_err()
                .to_string()
                .contains("nope")
        );

        std::fs::write(root.join("bad.csv"), "filename\na.wav\nmissing.wav\n").unwrap();
        let msg = list_audio(&root.join("bad.csv")).unwrap_err().to_string();
        assert!(
            msg.contains("bad.csv:3") && msg.contains("missing.wav"),
            "{msg}"
        );

        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            list_audio(empty.path()),
            Err(DataError::NoAudio { .. })
        ));
        assert!(matches!(
            list_audio(&root.join("nope")),
            Err(DataError::Io { .. })
        ));
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn subfolders_are_chosen_by_name_or_prefix_and_unknown_names_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for f in [
            "asterisk-en/a.wav",
            "asterisk-fr/deep/b.wav",
            "game-data/c.ogg",
            "game-data/readme.txt",
            "loose.wav",
        ] {
            let p = root.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
        let sel = |include: &[String], exclude: &[String]| {
            list_audio_selected(root, None, None, Subfolders { include, exclude })
        };
        let none: Vec<String> = Vec::new();
        // No selection: every file, as list_audio.
        assert_eq!(sel(&none, &none).unwrap(), list_audio(root).unwrap());
        assert_eq!(
            sel(&none, &strings(&["asterisk-*"])).unwrap(),
            vec![root.join("game-data/c.ogg"), root.join("loose.wav")]
        );
        assert_eq!(
            sel(&strings(&["asterisk-fr", "game-data"]), &none).unwrap(),
            vec![
                root.join("asterisk-fr/deep/b.wav"),
                root.join("game-data/c.ogg")
            ]
        );
        assert_eq!(
            sel(&strings(&["asterisk-*"]), &strings(&["asterisk-en"])).unwrap(),
            vec![root.join("asterisk-fr/deep/b.wav")]
        );
        // A name the corpus lacks (a typo, or a build without that package) is an error that
        // names what is there.
        let msg = sel(&strings(&["game-dta"]), &none).unwrap_err().to_string();
        assert!(
            msg.contains("`game-dta`") && msg.contains("include") && msg.contains("game-data"),
            "{msg}"
        );
        let msg = sel(&none, &strings(&["music-*"])).unwrap_err().to_string();
        assert!(
            msg.contains("`music-*`") && msg.contains("exclude"),
            "{msg}"
        );
        // Everything excluded: no audio, not an empty run.
        assert!(matches!(
            sel(&strings(&["game-data"]), &strings(&["game-*"])),
            Err(DataError::NoAudio { .. })
        ));
        // A CSV has rows, not subfolders.
        std::fs::write(root.join("list.csv"), "filename\nloose.wav\n").unwrap();
        assert!(matches!(
            list_audio_selected(
                &root.join("list.csv"),
                None,
                None,
                Subfolders {
                    include: &strings(&["game-data"]),
                    exclude: &none
                }
            ),
            Err(DataError::SelectNotFolder { .. })
        ));
    }
}
