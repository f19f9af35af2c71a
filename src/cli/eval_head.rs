//! `ajepa eval --head H`: how well a trained head tags labeled clips, as `tag` and `listen` would
//! tag them (`audio_jepa::tagging`, the same verdict): accuracy, per-class recall and precision,
//! the confusion matrix (text, JSON, PNG with class names), and false tags on sounds the head
//! should not know: a class folder named `unknown`, and any class the head does not have.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use audio_jepa::dataset::{read_csv_where, read_folders, Example};
use audio_jepa::model::head::Head;
use audio_jepa::tagging::{ClipTagger, Verdict};

use super::eval::Args;

/// The built-in model's window, for heads that do not record theirs.
const DEFAULT_WINDOW: usize = 6;

/// The counts behind the report. Rows are the head's classes then "unknown" (clips of no class
/// of the head); columns the head's classes then "unknown" (the open-set check's answer).
#[derive(Debug, Clone, PartialEq)]
pub struct HeadScores {
    /// `cm[truth][answer]`, `C + 1` square.
    pub confusion: Vec<Vec<usize>>,
    /// Clips of the head's classes whose top class is right, whatever the open-set check said.
    pub top_right: usize,
}

impl HeadScores {
    pub fn new(classes: usize) -> Self {
        Self {
            confusion: vec![vec![0; classes + 1]; classes + 1],
            top_right: 0,
        }
    }

    /// Adds one clip: `truth` its class in the head (`None`: a sound the head should not know).
    pub fn add(&mut self, truth: Option<usize>, v: &Verdict) {
        let unknown = self.confusion.len() - 1;
        let row = truth.unwrap_or(unknown);
        let answer = v.accepted().unwrap_or(unknown);
        self.confusion[row][answer] += 1;
        // A silent clip has no top class (its scores are not the head's).
        if truth.is_some() && !v.silent && truth == v.order.first().copied() {
            self.top_right += 1;
        }
    }

    fn unknown(&self) -> usize {
        self.confusion.len() - 1
    }

    /// Clips of the head's classes.
    pub fn known_clips(&self) -> usize {
        self.confusion[..self.unknown()]
            .iter()
            .map(|r| r.iter().sum::<usize>())
            .sum()
    }

    /// Clips of the head's classes answered with their class (not "unknown").
    pub fn right(&self) -> usize {
        (0..self.unknown()).map(|c| self.confusion[c][c]).sum()
    }

    /// Clips the head should not know, and how many of them got one of its classes.
    pub fn false_tags(&self) -> (usize, usize) {
        let row = &self.confusion[self.unknown()];
        let total = row.iter().sum();
        (row[..self.unknown()].iter().sum(), total)
    }

    /// Per class: (clips, right, called unknown, answered with this class).
    pub fn per_class(&self, c: usize) -> (usize, usize, usize, usize) {
        let u = self.unknown();
        let row = &self.confusion[c];
        let answered = self.confusion.iter().map(|r| r[c]).sum();
        (row.iter().sum(), row[c], row[u], answered)
    }
}

/// `a / b` as a percentage, right-aligned in 7 characters; "-" when there is nothing to divide.
fn pct(a: usize, b: usize) -> String {
    if b == 0 {
        format!("{:>7}", "-")
    } else {
        format!("{:5.1} %", 100.0 * a as f64 / b as f64)
    }
}

pub fn run(args: &Args, head_path: &Path) -> anyhow::Result<()> {
    let set = match (&args.csv, &args.folders) {
        (Some(csv), _) => read_csv_where(
            csv,
            args.where_.as_ref().map(|(c, v)| (c.as_str(), v.as_str())),
        )?,
        (None, Some(dir)) => read_folders(dir)?,
        (None, None) => bail!("give the labeled clips: --folders DIR or --csv FILE"),
    };
    let model = args
        .model
        .clone()
        .unwrap_or_else(|| PathBuf::from("default"));
    let (enc, quant) = super::model::load(&model)?;
    let head = Head::load(head_path)?;
    if !head.trained || head.labels.is_empty() {
        bail!(
            "{} is an untrained head: nothing to score",
            head_path.display()
        );
    }
    if let Err(e) = head.check_width(enc.config().embed_dim, enc.config().n_freq()) {
        bail!(
            "{}: {e} (encoder {}; give the --model it was trained on)",
            head_path.display(),
            super::model::name(&model)
        );
    }
    super::model::warn_if_other_encoder(&head, &head_path.display().to_string(), &enc, &model)?;
    let window = head.window_columns.unwrap_or(DEFAULT_WINDOW);
    let open_set = super::open_set(&head, args.unknown_quantile, args.no_unknown)?;
    // The set's classes in the head; the others are sounds it should call unknown.
    let to_head: Vec<Option<usize>> = set
        .classes
        .iter()
        .map(|c| head.labels.iter().position(|l| l == c))
        .collect();
    let strangers: Vec<&str> = set
        .classes
        .iter()
        .zip(&to_head)
        .filter(|(c, h)| h.is_none() && !c.eq_ignore_ascii_case("unknown"))
        .map(|(c, _)| c.as_str())
        .collect();
    if !strangers.is_empty() {
        note!(
            "classes the head does not have, scored as sounds it should call unknown: {}",
            strangers.join(", ")
        );
    }
    let clips: Vec<&Example> = set
        .examples
        .iter()
        .filter(|e| e.fold.is_none_or(|f| args.test_folds.contains(&f)))
        .collect();
    if clips.is_empty() {
        bail!(
            "no clips to score (with --csv, the rows of --test-folds {:?} and rows without a fold)",
            args.test_folds
        );
    }
    if to_head.iter().all(Option::is_none) {
        bail!(
            "none of the labeled classes ({}) is a class of the head ({})",
            set.classes.join(", "),
            head.labels.join(", ")
        );
    }
    let labels = head.labels.clone();
    let checked = open_set.is_some();
    let silence_gate = super::silence_gate(args.silence_dbfs)?;
    let mut tagger = ClipTagger::new(&enc, super::model::precision(quant), head, open_set, window)
        .context("building the tagger")?
        .with_threads(args.threads)?
        .with_silence_gate(silence_gate);
    let mut scores = HeadScores::new(labels.len());
    let mut skipped = Vec::new();
    let mut progress = super::progress::Progress::new(clips.len(), "clips tagged", args.json);
    for ex in &clips {
        match tagger.tag_file(&ex.path) {
            Ok(v) => scores.add(to_head[ex.class], &v),
            Err(e) => {
                progress.println(format!("skipped {}: {e}", ex.path.display()));
                skipped.push(ex.path.clone());
            }
        }
        progress.inc();
    }
    drop(progress);
    let mut names = labels.clone();
    names.push("unknown".into());
    let (n, right) = (scores.known_clips(), scores.right());
    let (false_tags, strangers_n) = scores.false_tags();
    if args.json {
        let per_class: serde_json::Map<String, serde_json::Value> = labels
            .iter()
            .enumerate()
            .map(|(c, l)| {
                let (clips, r, u, answered) = scores.per_class(c);
                (
                    l.clone(),
                    serde_json::json!({"clips": clips, "right": r, "called_unknown": u,
                        "answered": answered,
                        "recall": (clips > 0).then(|| r as f64 / clips as f64),
                        "precision": (answered > 0).then(|| r as f64 / answered as f64)}),
                )
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "head": head_path, "model": model, "window_columns": window,
                "open_set": checked, "unknown_quantile": checked.then_some(args.unknown_quantile),
                "clips": n, "right": right, "top_right": scores.top_right,
                "accuracy": (n > 0).then(|| right as f64 / n as f64),
                "top1_accuracy": (n > 0).then(|| scores.top_right as f64 / n as f64),
                "unknown_clips": strangers_n, "false_tags": false_tags,
                "false_tag_rate": (strangers_n > 0).then(|| false_tags as f64 / strangers_n as f64),
                "per_class": per_class, "labels": names, "confusion": scores.confusion,
                "skipped": skipped,
            })
        );
    } else {
        println!(
            "head {} ({} classes, {}-column window) on the encoder {}; open-set check: {}",
            head_path.display(),
            labels.len(),
            window,
            super::model::name(&model),
            if checked {
                format!("quantile {}", args.unknown_quantile)
            } else {
                "off".into()
            }
        );
        if n > 0 {
            println!(
                "accuracy {} ({right} / {n} clips of the head's classes answered with their class); top class right {} (the open-set check aside)",
                pct(right, n).trim(),
                pct(scores.top_right, n).trim()
            );
        }
        if strangers_n > 0 {
            println!(
                "false tags {} ({false_tags} / {strangers_n} clips of sounds the head does not know got one of its classes)",
                pct(false_tags, strangers_n).trim()
            );
        }
        let width = names.iter().map(|s| s.len()).max().unwrap_or(5).max(5);
        println!(
            "{:width$}  clips  recall  precision  called unknown",
            "class"
        );
        for (c, l) in labels.iter().enumerate() {
            let (clips, r, u, answered) = scores.per_class(c);
            if clips == 0 && answered == 0 {
                continue;
            }
            println!(
                "{l:width$}  {clips:5}  {}  {:>9}  {u:5}",
                pct(r, clips),
                pct(r, answered)
            );
        }
        println!("confusion (rows true, columns answered; the last row and column are unknown):");
        for (row, name) in scores.confusion.iter().zip(&names) {
            let cells: Vec<String> = row.iter().map(|v| format!("{v:4}")).collect();
            println!("{name:width$} {}", cells.join(""));
        }
    }
    if let Some(png) = &args.confusion_png {
        // Rows and columns with nothing in them are left out of the picture.
        let keep_row: Vec<usize> = (0..names.len())
            .filter(|&r| scores.confusion[r].iter().sum::<usize>() > 0)
            .collect();
        let keep_col: Vec<usize> = (0..names.len())
            .filter(|&c| c < labels.len() || checked)
            .collect();
        let cm: Vec<Vec<usize>> = keep_row
            .iter()
            .map(|&r| keep_col.iter().map(|&c| scores.confusion[r][c]).collect())
            .collect();
        let rows: Vec<String> = keep_row.iter().map(|&r| names[r].clone()).collect();
        let cols: Vec<String> = keep_col.iter().map(|&c| names[c].clone()).collect();
        audio_jepa::render::write_confusion_png(png, &cm, &rows, &cols)?;
        if !args.json {
            println!("confusion matrix: {}", png.display());
        }
    }
    if !skipped.is_empty() {
        bail!(
            "{} of {} clips could not be read (see above); the figures leave them out",
            skipped.len(),
            clips.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(order: &[usize], known: Option<bool>) -> Verdict {
        Verdict {
            seconds: 1.0,
            windows: 1,
            scores: vec![0.0; order.len()],
            order: order.to_vec(),
            known: known.map(|k| (k, 0.5, 0.4)),
            peak_dbfs: -20.0,
            silent: false,
        }
    }

    #[test]
    fn counts_follow_the_answers_a_user_sees() {
        let mut s = HeadScores::new(2);
        s.add(Some(0), &verdict(&[0, 1], Some(true))); // right
        s.add(Some(0), &verdict(&[0, 1], Some(false))); // right class, turned down
        s.add(Some(0), &verdict(&[1, 0], None)); // wrong, no check
        s.add(Some(1), &verdict(&[1, 0], Some(true))); // right
        s.add(None, &verdict(&[1, 0], Some(true))); // a false tag
        s.add(None, &verdict(&[0, 1], Some(false))); // rightly unknown
        assert_eq!(
            s.confusion,
            vec![vec![1, 1, 1], vec![0, 1, 0], vec![0, 1, 1]]
        );
        assert_eq!((s.known_clips(), s.right(), s.top_right), (4, 2, 3));
        assert_eq!(s.false_tags(), (1, 2));
        // Class 1: one clip, right; answered three times (once wrongly for a class-0 clip,
        // once for a stranger).
        assert_eq!(s.per_class(1), (1, 1, 0, 3));
        assert_eq!(s.per_class(0), (3, 1, 1, 1));
        // A silent clip of class 0 is answered "unknown" and its top class is not counted.
        let mut silent = verdict(&[0, 1], None);
        silent.silent = true;
        s.add(Some(0), &silent);
        assert_eq!(s.per_class(0), (4, 1, 2, 1));
        assert_eq!(s.top_right, 3);
    }
}
