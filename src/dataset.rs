//! Labeled sets: an ESC-50 style CSV (`filename, fold, target, category`) or a folder per class.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LabeledError {
    #[error("{path}: cannot read")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    Row {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{path}: {reason}")]
    Set { path: PathBuf, reason: String },
}

#[derive(Debug, Clone)]
pub struct Example {
    pub path: PathBuf,
    pub class: usize,
    pub fold: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct LabeledSet {
    pub classes: Vec<String>,
    pub examples: Vec<Example>,
}

/// A file named in a CSV: beside the CSV (`base`) or in its `audio/` folder (the ESC-50 layout).
pub fn resolve_listed_file(base: &Path, name: &str) -> Option<PathBuf> {
    [base.join(name), base.join("audio").join(name)]
        .into_iter()
        .find(|p| p.is_file())
}

/// `COLUMN=VALUE` (a command-line row filter such as `esc10=True`).
pub fn parse_where(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(c, v)| (c.trim().to_string(), v.trim().to_string()))
        .filter(|(c, _)| !c.is_empty())
        .ok_or_else(|| format!("`{s}`: expected COLUMN=VALUE, e.g. esc10=True"))
}

/// A `COLUMN=VALUE` row filter resolved against a CSV header: the column by name (trimmed,
/// case-insensitive), a row kept when its field there equals the value (likewise).
#[derive(Debug, Clone, Copy)]
pub struct RowFilter<'a> {
    col: usize,
    value: &'a str,
}

impl<'a> RowFilter<'a> {
    /// `Ok(None)` without a filter; `Err(reason)` when the header has no such column.
    pub fn new(header: &str, where_: Option<(&str, &'a str)>) -> Result<Option<Self>, String> {
        let Some((name, value)) = where_ else {
            return Ok(None);
        };
        header
            .split(',')
            .position(|h| h.trim().eq_ignore_ascii_case(name))
            .map(|col| Some(Self { col, value }))
            .ok_or_else(|| format!("no column `{name}` to select rows by"))
    }

    pub fn keeps(&self, line: &str) -> bool {
        line.split(',')
            .nth(self.col)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case(self.value))
    }
}

/// Reads an ESC-50 style CSV: columns `filename`, `category` (or `target`), optional `fold`;
/// files beside the CSV or in its `audio/` folder. Classes are sorted by name.
pub fn read_csv(path: &Path) -> Result<LabeledSet, LabeledError> {
    read_csv_where(path, None)
}

/// As [`read_csv`], keeping only the rows whose column `where_.0` equals `where_.1`
/// (case-insensitive), e.g. `("esc10", "True")` for ESC-50's ESC-10 subset.
pub fn read_csv_where(
    path: &Path,
    where_: Option<(&str, &str)>,
) -> Result<LabeledSet, LabeledError> {
    let text = std::fs::read_to_string(path).map_err(|source| LabeledError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    // Spreadsheet programs save CSVs with a UTF-8 byte-order mark; it is not part of the first
    // column's name (issue 15: "no `filename` column").
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().ok_or_else(|| LabeledError::Set {
        path: path.to_path_buf(),
        reason: "empty CSV".into(),
    })?;
    let cols: Vec<String> = header
        .split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    let find = |name: &str| cols.iter().position(|c| c == name);
    let file_col = find("filename").ok_or_else(|| LabeledError::Set {
        path: path.to_path_buf(),
        reason: "no `filename` column".into(),
    })?;
    let label_col =
        find("category")
            .or_else(|| find("target"))
            .ok_or_else(|| LabeledError::Set {
                path: path.to_path_buf(),
                reason: "no `category` or `target` column".into(),
            })?;
    let fold_col = find("fold");
    let filter = RowFilter::new(header, where_).map_err(|reason| LabeledError::Set {
        path: path.to_path_buf(),
        reason,
    })?;
    let mut rows = Vec::new();
    for (i, line) in lines {
        if filter.is_some_and(|f| !f.keeps(line)) {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let row_err = |reason: String| LabeledError::Row {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
        };
        let name = f
            .get(file_col)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| row_err("no file name".into()))?;
        let label = f
            .get(label_col)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| row_err("no label".into()))?;
        let fold = match fold_col {
            Some(c) => Some(
                f.get(c)
                    .and_then(|v| v.parse::<u32>().ok())
                    .ok_or_else(|| row_err("fold is not a number".into()))?,
            ),
            None => None,
        };
        let file = resolve_listed_file(base, name)
            .ok_or_else(|| row_err(format!("{name}: no such file beside the CSV or in audio/")))?;
        rows.push((file, label.to_string(), fold));
    }
    Ok(finish(rows))
}

/// A folder per class (`ROOT/CLASS/*.wav|flac|...`).
pub fn read_folders(root: &Path) -> Result<LabeledSet, LabeledError> {
    let io = |source| LabeledError::Io {
        path: root.to_path_buf(),
        source,
    };
    let mut rows = Vec::new();
    for entry in std::fs::read_dir(root).map_err(io)? {
        let dir = entry.map_err(io)?.path();
        if !dir.is_dir() {
            continue;
        }
        let label = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for f in std::fs::read_dir(&dir).map_err(io)? {
            let p = f.map_err(io)?.path();
            if crate::audio::is_audio_file(&p) {
                rows.push((p, label.clone(), None));
            }
        }
    }
    if rows.is_empty() {
        return Err(LabeledError::Set {
            path: root.to_path_buf(),
            reason: "no class folders with audio files".into(),
        });
    }
    rows.sort();
    Ok(finish(rows))
}

fn finish(rows: Vec<(PathBuf, String, Option<u32>)>) -> LabeledSet {
    let mut index = BTreeMap::new();
    for (_, l, _) in &rows {
        let n = index.len();
        index.entry(l.clone()).or_insert(n);
    }
    let classes: Vec<String> = index.keys().cloned().collect();
    let pos: BTreeMap<&String, usize> = classes.iter().enumerate().map(|(i, c)| (c, i)).collect();
    let examples = rows
        .into_iter()
        .map(|(path, l, fold)| Example {
            class: pos[&l],
            path,
            fold,
        })
        .collect();
    LabeledSet { classes, examples }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_folders_with_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("audio")).unwrap();
        for f in ["a.wav", "b.wav", "c.wav"] {
            std::fs::write(root.join("audio").join(f), b"x").unwrap();
        }
        std::fs::write(
            root.join("ok.csv"),
            "filename,fold,target,category\na.wav,1,0,dog\nb.wav,2,1,rain\nc.wav,1,0,dog\n",
        )
        .unwrap();
        let set = read_csv(&root.join("ok.csv")).unwrap();
        assert_eq!(set.classes, ["dog", "rain"]);
        // The same with a byte-order mark, as Excel writes it.
        std::fs::write(
            root.join("bom.csv"),
            "\u{feff}filename,fold,target,category\na.wav,1,0,dog\n",
        )
        .unwrap();
        assert_eq!(read_csv(&root.join("bom.csv")).unwrap().examples.len(), 1);
        assert_eq!(set.examples.len(), 3);
        assert_eq!(set.examples[1].class, 1);
        assert_eq!(set.examples[1].fold, Some(2));
        std::fs::write(
            root.join("sub.csv"),
            "filename,fold,category,esc10\na.wav,1,dog,True\nb.wav,2,rain,False\n",
        )
        .unwrap();
        let sub = read_csv_where(&root.join("sub.csv"), Some(("ESC10", "true"))).unwrap();
        assert_eq!(sub.classes, ["dog"]);
        assert!(read_csv_where(&root.join("sub.csv"), Some(("nope", "1")))
            .unwrap_err()
            .to_string()
            .contains("nope"));
        assert_eq!(
            parse_where("esc10=True").unwrap(),
            ("esc10".into(), "True".into())
        );
        assert!(parse_where("esc10").is_err());

        std::fs::write(
            root.join("bad.csv"),
            "filename,fold,category\na.wav,x,dog\n",
        )
        .unwrap();
        let e = read_csv(&root.join("bad.csv")).unwrap_err().to_string();
        assert!(e.contains("bad.csv:2") && e.contains("fold"), "{e}");
        std::fs::write(
            root.join("missing.csv"),
            "filename,category\nnope.wav,dog\n",
        )
        .unwrap();
        let e = read_csv(&root.join("missing.csv")).unwrap_err().to_string();
        assert!(e.contains("nope.wav"), "{e}");
        std::fs::write(root.join("nolabel.csv"), "filename\na.wav\n").unwrap();
        assert!(read_csv(&root.join("nolabel.csv"))
            .unwrap_err()
            .to_string()
            .contains("category"));

        let classes = tempfile::tempdir().unwrap();
        for (c, f) in [("bell", "1.wav"), ("bell", "2.flac"), ("knock", "3.wav")] {
            std::fs::create_dir_all(classes.path().join(c)).unwrap();
            std::fs::write(classes.path().join(c).join(f), b"x").unwrap();
        }
        let set = read_folders(classes.path()).unwrap();
        assert_eq!(set.classes, ["bell", "knock"]);
        assert_eq!(set.examples.len(), 3);
    }
}
