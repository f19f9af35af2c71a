//! `ajepa finetune`: a tagging head (linear probe on frozen embeddings) or a fine-tuned encoder
//! and head, from a labeled set; `listen --model --head` loads what it writes.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use audio_jepa::dataset::{parse_where, read_csv_where, read_folders, LabeledSet};
use audio_jepa::finetune::enroll::SUPPORT_PER_CLASS;
use audio_jepa::finetune::full::{clip_probabilities, finetune, FinetuneConfig, LabeledClips};
use audio_jepa::finetune::probe::{scores, support_subset, Probe, ProbeConfig};
use audio_jepa::finetune::windows::{embed_windows, load_clip_windows, WindowSpec};
use audio_jepa::frontend::LogMelExtractor;
use audio_jepa::model::checkpoint::{load_encoder, save_encoder};
use audio_jepa::model::head::Head;
use audio_jepa::model::pooling::Pooling;
use audio_jepa::model::Encoder;
use audio_jepa::FrontendConfig;
use candle_core::Device;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Encoder weights (.safetensors with its .json), or `default` (the built-in model)
    #[arg(long, default_value = "default", env = "AJEPA_MODEL")]
    pub model: PathBuf,
    /// Labeled set: an ESC-50 style CSV (filename, fold, category)
    #[arg(long, conflicts_with = "folders", required_unless_present = "folders")]
    pub csv: Option<PathBuf>,
    /// Labeled set: a folder with one subfolder of clips per class
    #[arg(long)]
    pub folders: Option<PathBuf>,
    /// With --csv: only rows where COLUMN equals VALUE, e.g. esc10=True
    #[arg(long = "where", value_name = "COLUMN=VALUE", value_parser = parse_where)]
    pub where_: Option<(String, String)>,
    /// With --csv: folds to train on (default: every fold not used for testing)
    #[arg(long, value_delimiter = ',')]
    pub train_folds: Option<Vec<u32>>,
    /// With --csv: held-out folds, reported at the end and never used for choices
    #[arg(long, value_delimiter = ',')]
    pub test_folds: Vec<u32>,
    /// Fraction of the training clips of each class held out for validation (model choice,
    /// early stopping)
    #[arg(long, default_value_t = 0.15)]
    pub val_fraction: f64,
    /// Fine-tune the encoder too (slower; writes an encoder beside the head)
    #[arg(long)]
    pub full: bool,
    /// Full fine-tuning: most epochs
    #[arg(long, default_value_t = 30)]
    pub epochs: usize,
    /// Full fine-tuning: epochs without improvement before stopping
    #[arg(long, default_value_t = 6)]
    pub patience: usize,
    /// Full fine-tuning: peak learning rate of the encoder
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    /// Full fine-tuning: `bf16` multiplies in bf16 with f32 sums on a CPU with AVX-512 BF16
    /// (AMD Zen 4+, Intel Sapphire Rapids+; about 1.5x faster epochs), f32 elsewhere
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: FinetunePrecision,
    /// Window in 160 ms patch columns; must match `listen` (its profile's `window_columns`)
    #[arg(long, default_value_t = 6)]
    pub window_columns: usize,
    /// How a window's tokens are pooled for the head: `freqcat` (per time column the 8
    /// frequency tokens side by side, then the mean over columns; the default, better on few
    /// clips) or `mean` (every token averaged: 8 times smaller, the pooling of heads before it)
    #[arg(long, default_value = "freqcat")]
    pub pool: Pooling,
    /// Columns between the starts of a clip's windows
    #[arg(long, default_value_t = 3)]
    pub window_hop: usize,
    /// The head: `logistic` (a linear probe, L2 chosen on validation clips or by
    /// cross-validation), `prototype` (nearest class mean on cosine, no fitting), or `auto`
    /// (whichever of them scores best on the validation clips, or by cross-validation)
    #[arg(long, value_enum, default_value = "auto")]
    pub classifier: ClassifierKind,
    /// Output folder: head.safetensors (and encoder.safetensors/.json with --full),
    /// finetune.json, confusion.png
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Which clips go where.
pub struct Splits {
    pub train: Vec<usize>,
    pub val: Vec<usize>,
    pub test: Vec<usize>,
}

/// Deterministic split: test = `test_folds`; of the rest (or of `train_folds`), every k-th clip
/// of each class (k from `val_fraction`) is validation.
pub fn split(
    set: &LabeledSet,
    train_folds: Option<&[u32]>,
    test_folds: &[u32],
    val_fraction: f64,
) -> anyhow::Result<Splits> {
    let mut s = Splits {
        train: Vec::new(),
        val: Vec::new(),
        test: Vec::new(),
    };
    let every = if val_fraction > 0.0 {
        (1.0 / val_fraction.min(0.5)).round() as usize
    } else {
        usize::MAX
    };
    let mut seen = vec![0usize; set.classes.len()];
    for (i, ex) in set.examples.iter().enumerate() {
        let fold = ex.fold;
        if fold.is_some_and(|f| test_folds.contains(&f)) {
            s.test.push(i);
            continue;
        }
        if let (Some(tf), Some(f)) = (train_folds, fold) {
            if !tf.contains(&f) {
                continue;
            }
        }
        seen[ex.class] += 1;
        if seen[ex.class].is_multiple_of(every) {
            s.val.push(i);
        } else {
            s.train.push(i);
        }
    }
    for (c, name) in set.classes.iter().enumerate() {
        let n = s
            .train
            .iter()
            .filter(|&&i| set.examples[i].class == c)
            .count();
        if n == 0 && seen[c] > 0 {
            bail!("class `{name}` has no training clips left after the validation split");
        }
        if n > 0 && n < 3 {
            eprintln!("warning: class `{name}` has only {n} training clip(s); expect a weak head");
        }
    }
    if s.train.is_empty() {
        bail!("no training clips (check --train-folds / --test-folds)");
    }
    Ok(s)
}

pub fn load_set(
    csv: Option<&Path>,
    folders: Option<&Path>,
    where_: Option<&(String, String)>,
) -> anyhow::Result<LabeledSet> {
    let set = match (csv, folders) {
        (Some(c), _) => read_csv_where(c, where_.map(|(a, b)| (a.as_str(), b.as_str())))?,
        (None, Some(f)) => read_folders(f)?,
        (None, None) => bail!("give --csv or --folders"),
    };
    if set.classes.len() < 2 {
        bail!(
            "a labeled set needs at least two classes; found {:?}",
            set.classes
        );
    }
    Ok(set)
}

/// Windows of the clips `idx`; unreadable or silent clips are reported and left out.
pub fn load_clips(
    set: &LabeledSet,
    idx: &[usize],
    ws: &WindowSpec,
    what: &str,
) -> anyhow::Result<LabeledClips> {
    let fe = FrontendConfig::default();
    let mut lm = LogMelExtractor::new(&fe)?;
    let mut out = LabeledClips::default();
    let mut progress =
        super::progress::Progress::new(idx.len(), format!("{what} clips read"), false);
    for &i in idx {
        let ex = &set.examples[i];
        match load_clip_windows(&ex.path, &mut lm, &fe, ws) {
            Ok(w) if w.n > 0 => {
                out.clips.push(w);
                out.labels.push(ex.class);
            }
            Ok(_) => progress.println(format!("skipped {}: no usable window", ex.path.display())),
            Err(e) => progress.println(format!("skipped {}: {e}", ex.path.display())),
        }
        progress.inc();
    }
    Ok(out)
}

/// Window embeddings of every clip: `(rows, labels)`.
pub fn embed_all(
    enc: &Encoder,
    set: &LabeledClips,
    pool: Pooling,
) -> anyhow::Result<(Vec<f32>, Vec<usize>)> {
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for (clip, &label) in set.clips.iter().zip(&set.labels) {
        x.extend(embed_windows(enc, clip, 32, pool)?);
        y.extend(std::iter::repeat_n(label, clip.n));
    }
    Ok((x, y))
}

/// Clip accuracy, macro-F1 and confusion of `head` on `set`.
pub fn clip_scores(
    enc: &Encoder,
    head: &Head,
    set: &LabeledClips,
) -> anyhow::Result<(f64, f64, Vec<Vec<usize>>)> {
    let mut pred = Vec::new();
    for clip in &set.clips {
        let p = clip_probabilities(enc, head, clip)?;
        pred.push(
            (0..p.len())
                .max_by(|&a, &b| p[a].total_cmp(&p[b]))
                .unwrap_or(0),
        );
    }
    Ok(scores(&set.labels, &pred, head.classes()))
}

/// `finetune --full --precision`: how the fine-tuning steps multiply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FinetunePrecision {
    F32,
    Bf16,
}

/// Which heads `finetune --classifier` may choose from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClassifierKind {
    Auto,
    Logistic,
    Prototype,
}

/// One candidate head.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Classifier {
    Logistic { l2: f32 },
    Prototype,
}

impl Classifier {
    fn fit(self, x: &[f32], y: &[usize], dim: usize, classes: usize) -> Probe {
        match self {
            Classifier::Logistic { l2 } => Probe::fit(
                x,
                y,
                dim,
                classes,
                ProbeConfig {
                    l2,
                    ..ProbeConfig::default()
                },
            ),
            Classifier::Prototype => Probe::prototypes(x, y, dim, classes),
        }
    }

    pub fn describe(self) -> String {
        match self {
            Classifier::Logistic { l2 } => format!("linear probe, L2 {l2:e}"),
            Classifier::Prototype => "nearest class prototype (cosine)".into(),
        }
    }
}

impl ClassifierKind {
    /// The candidates, in the order ties go to the later one: the prototype head, then the
    /// probe from weak to strong L2.
    fn candidates(self) -> Vec<Classifier> {
        let logistic = HEAD_L2_GRID.iter().map(|&l2| Classifier::Logistic { l2 });
        match self {
            ClassifierKind::Auto => std::iter::once(Classifier::Prototype)
                .chain(logistic)
                .collect(),
            ClassifierKind::Logistic => logistic.collect(),
            ClassifierKind::Prototype => vec![Classifier::Prototype],
        }
    }

    /// What to use when nothing can be validated.
    fn fallback(self) -> Classifier {
        match self {
            ClassifierKind::Prototype => Classifier::Prototype,
            _ => Classifier::Logistic {
                l2: ProbeConfig::default().l2,
            },
        }
    }
}

/// The head for windows `x` (`windows[i]` consecutive rows per clip, clip labels
/// `clip_labels`) chosen among `kind`'s candidates by k-fold cross-validation over clips: fold j holds
/// the j-th, (j+k)-th, ... clip of every class, so a clip's windows never sit on both sides;
/// k = min(5, the smallest class's clip count). Returns (choice, held-out window accuracy, k);
/// k is `None` when a class has a single clip (nothing to hold out), and the choice is then
/// `kind`'s fallback.
fn cross_validated(
    x: &[f32],
    y: &[usize],
    windows: &[usize],
    clip_labels: &[usize],
    dim: usize,
    classes: usize,
    kind: ClassifierKind,
) -> (Classifier, f64, Option<usize>) {
    let (candidates, fallback) = (kind.candidates(), kind.fallback());
    let mut per_class = vec![0usize; classes];
    let fold_of: Vec<usize> = clip_labels
        .iter()
        .map(|&c| {
            per_class[c] += 1;
            per_class[c] - 1
        })
        .collect();
    let smallest = per_class
        .iter()
        .copied()
        .filter(|&n| n > 0)
        .min()
        .unwrap_or(0);
    if smallest < 2 || candidates.is_empty() {
        return (fallback, 0.0, None);
    }
    let k = smallest.min(5);
    // The fold of every window.
    let wfold: Vec<usize> = fold_of
        .iter()
        .zip(windows)
        .flat_map(|(&f, &n)| std::iter::repeat_n(f % k, n))
        .collect();
    let mut best = (fallback, -1.0f64);
    for &cand in &candidates {
        let (mut hits, mut total) = (0usize, 0usize);
        for j in 0..k {
            let (mut xt, mut yt) = (Vec::new(), Vec::new());
            for ((r, &t), &f) in x.chunks_exact(dim).zip(y).zip(&wfold) {
                if f != j {
                    xt.extend_from_slice(r);
                    yt.push(t);
                }
            }
            let p = cand.fit(&xt, &yt, dim, classes);
            for ((r, &t), &f) in x.chunks_exact(dim).zip(y).zip(&wfold) {
                if f == j {
                    total += 1;
                    hits += usize::from(p.predict(r) == t);
                }
            }
        }
        let acc = hits as f64 / total.max(1) as f64;
        // The later candidate on ties (the stronger L2).
        if acc >= best.1 {
            best = (cand, acc);
        }
    }
    (best.0, best.1, Some(k))
}

/// The L2 strengths a head's probe chooses from (on validation clips, or by cross-validation).
/// Adding 1.0 for few clips of wide (freqcat) embeddings, where the cross-validation picks 0.1,
/// lost 1-2.5 points on the five-shot job (scripts/fewshot_esc50.py), so the grid stops at 0.1.
pub const HEAD_L2_GRID: [f32; 4] = [1e-4, 1e-3, 1e-2, 1e-1];

/// A head on frozen window embeddings, chosen among `kind`'s candidates on the validation clips
/// (or by cross-validation over the training clips when there are none). Returns the head and
/// the choice.
pub fn fit_probe(
    enc: &Encoder,
    labels: &[String],
    train: &LabeledClips,
    val: &LabeledClips,
    pool: Pooling,
    kind: ClassifierKind,
) -> anyhow::Result<(Head, Classifier)> {
    let dim = pool.dim(enc.config().embed_dim, enc.config().n_freq());
    let (x, y) = embed_all(enc, train, pool)?;
    if val.clips.is_empty() {
        // Too few clips for a validation split (5 per class leaves none, issue 15): choose L2 by
        // cross-validation over the training clips instead of "on 0 clips".
        let windows: Vec<usize> = train.clips.iter().map(|c| c.n).collect();
        let (choice, acc, k) =
            cross_validated(&x, &y, &windows, &train.labels, dim, labels.len(), kind);
        let mut head = choice
            .fit(&x, &y, dim, labels.len())
            .to_head(labels.to_vec(), pool);
        match k {
            Some(k) => note!(
                "head: no validation clips; {} chosen by {k}-fold cross-validation over the {} training clips ({:.1} % of held-out windows)",
                choice.describe(),
                train.clips.len(),
                100.0 * acc
            ),
            None => note!(
                "head: no validation clips and a class with a single clip: {} (the default), not validated",
                choice.describe()
            ),
        }
        let (sx, sy) = support_subset(&x, &y, dim, SUPPORT_PER_CLASS);
        head.support = sx;
        head.support_labels = sy;
        return Ok((head, choice));
    }
    let mut best: Option<(f64, Head, Classifier)> = None;
    // The first best wins: the probe from weak to strong L2 (as before the prototype head
    // existed), then the prototype head, which must do strictly better to be chosen.
    let (protos, probes): (Vec<Classifier>, Vec<Classifier>) = kind
        .candidates()
        .into_iter()
        .partition(|c| *c == Classifier::Prototype);
    for cand in probes.into_iter().chain(protos) {
        let head = cand
            .fit(&x, &y, dim, labels.len())
            .to_head(labels.to_vec(), pool);
        let acc = clip_scores(enc, &head, val)?.0;
        if best.as_ref().is_none_or(|(a, _, _)| acc > *a) {
            best = Some((acc, head, cand));
        }
    }
    let (acc, mut head, choice) = best.context("no head fitted")?;
    note!(
        "head: {} chosen on {} validation clips ({:.1} %)",
        choice.describe(),
        val.clips.len(),
        100.0 * acc
    );
    let (sx, sy) = support_subset(&x, &y, dim, SUPPORT_PER_CLASS);
    head.support = sx;
    head.support_labels = sy;
    Ok((head, choice))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let set = load_set(
        args.csv.as_deref(),
        args.folders.as_deref(),
        args.where_.as_ref(),
    )?;
    let splits = split(
        &set,
        args.train_folds.as_deref(),
        &args.test_folds,
        args.val_fraction,
    )?;
    let ws = WindowSpec {
        columns: args.window_columns,
        hop: args.window_hop,
        ..WindowSpec::default()
    };
    if ws.columns == 0 || ws.hop == 0 {
        bail!("--window-columns and --window-hop must be at least 1");
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    note!(
        "{} classes; {} train / {} validation / {} test clips",
        set.classes.len(),
        splits.train.len(),
        splits.val.len(),
        splits.test.len()
    );
    if args.full && splits.val.is_empty() {
        // --full keeps the epoch with the best validation accuracy; with no validation clips it
        // would keep epoch 0 and silently discard the fine-tuning (issue 15).
        bail!(
            "--full needs validation clips to choose its epoch, and {} training clips leave none at --val-fraction {}: add clips (8 or more per class), raise --val-fraction, or drop --full for a linear probe (cross-validated)",
            splits.train.len(),
            args.val_fraction
        );
    }
    let train = load_clips(&set, &splits.train, &ws, "train")?;
    let val = load_clips(&set, &splits.val, &ws, "validation")?;
    let test = load_clips(&set, &splits.test, &ws, "test")?;
    let started = std::time::Instant::now();
    let (enc, _) = super::model::load(&args.model)?;
    let (probe, choice) = fit_probe(&enc, &set.classes, &train, &val, args.pool, args.classifier)?;
    let mut summary = serde_json::json!({
        "model": args.model, "classes": set.classes, "window_columns": ws.columns, "pool": args.pool.as_str(),
        "head": choice.describe(),
        "train_clips": train.clips.len(), "val_clips": val.clips.len(), "test_clips": test.clips.len(),
        "train_windows": train.windows(),
    });
    let (final_enc, mut head) = if args.full {
        let tensors = super::model::tensors(&args.model)?;
        let ft = FinetuneConfig {
            max_epochs: args.epochs,
            patience: args.patience,
            lr: args.lr,
            seed: args.seed,
            bf16_products: args.precision == FinetunePrecision::Bf16
                && audio_jepa::model::fused::bf16_available(),
            ..FinetuneConfig::default()
        };
        if args.precision == FinetunePrecision::Bf16 && !ft.bf16_products {
            note!("--precision bf16: this CPU lacks AVX-512 BF16, so fine-tuning runs in f32");
        }
        summary["finetune"] = serde_json::json!({"max_epochs": ft.max_epochs, "patience": ft.patience,
            "lr": ft.lr, "batch_size": ft.batch_size, "weight_decay": ft.weight_decay, "key_drop": ft.key_drop, "seed": ft.seed,
            "products": if ft.bf16_products { "bf16" } else { "f32" }});
        let out = finetune(&tensors, enc.config(), &probe, &train, &val, &ft, |e| {
            // Epoch 0 is the probe before any fine-tuning: it has no training loss.
            let train_loss = if e.epoch == 0 {
                "-".to_string()
            } else {
                format!("{:.3}", e.train_loss)
            };
            note!(
                "epoch {:>2}: train loss {train_loss}, validation loss {:.3}, accuracy {:5.1} % ({:.0} s)",
                e.epoch,
                e.val_loss,
                100.0 * e.val_accuracy,
                e.seconds
            )
        })?;
        note!("best epoch {}", out.best_epoch);
        summary["history"] = serde_json::json!(out
            .history
            .iter()
            .map(|e| serde_json::json!({"epoch": e.epoch, "train_loss": e.train_loss, "val_loss": e.val_loss, "val_accuracy": e.val_accuracy, "seconds": e.seconds}))
            .collect::<Vec<_>>());
        summary["best_epoch"] = out.best_epoch.into();
        let enc_path = args.out.join("encoder.safetensors");
        save_encoder(&enc_path, &out.encoder, enc.config())?;
        let fine = load_encoder(&enc_path, &Device::Cpu)?;
        let mut head = out.head;
        let (x, y) = embed_all(&fine, &train, args.pool)?;
        let (sx, sy) = support_subset(&x, &y, head.dim, SUPPORT_PER_CLASS);
        head.support = sx;
        head.support_labels = sy;
        (fine, head)
    } else {
        (enc, probe)
    };
    let head_path = args.out.join("head.safetensors");
    head.window_columns = Some(ws.columns);
    head.encoder = Some(final_enc.fingerprint()?);
    head.save(&head_path)?;
    for (name, part) in [("validation", &val), ("test", &test)] {
        if part.clips.is_empty() {
            continue;
        }
        let (acc, f1, cm) = clip_scores(&final_enc, &head, part)?;
        println!(
            "{name}: accuracy {:.1} %, macro-F1 {:.1} % on {} clips",
            100.0 * acc,
            100.0 * f1,
            part.clips.len()
        );
        summary[name] = serde_json::json!({"accuracy": acc, "macro_f1": f1, "confusion": cm});
        if name == "test" {
            let png = args.out.join("confusion.png");
            audio_jepa::render::write_confusion_png(&png, &cm, &set.classes, &set.classes)?;
            println!(
                "confusion matrix (rows true, columns predicted, order {}): {}",
                set.classes.join(", "),
                png.display()
            );
        }
    }
    summary["seconds"] = started.elapsed().as_secs_f64().into();
    let json_path = args.out.join("finetune.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&summary)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    println!(
        "wrote {}{}; try: ajepa listen --model {} --head {} --input CLIP",
        head_path.display(),
        if args.full {
            " and encoder.safetensors"
        } else {
            ""
        },
        if args.full {
            args.out.join("encoder.safetensors").display().to_string()
        } else {
            args.model.display().to_string()
        },
        head_path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{cross_validated, Classifier, ClassifierKind};

    fn cross_validated_l2(
        x: &[f32],
        y: &[usize],
        w: &[usize],
        l: &[usize],
        dim: usize,
        classes: usize,
    ) -> (f32, f64, Option<usize>) {
        let kind = ClassifierKind::Logistic;
        let (c, acc, k) = cross_validated(x, y, w, l, dim, classes, kind);
        match c {
            Classifier::Logistic { l2 } => (l2, acc, k),
            Classifier::Prototype => panic!("a prototype head among logistic candidates"),
        }
    }

    /// Windows of clip `i` of class `c`: the class's direction plus a little clip-specific noise.
    fn data(clips_per_class: &[usize]) -> (Vec<f32>, Vec<usize>, Vec<usize>, Vec<usize>) {
        let (mut x, mut y, mut windows, mut labels) = (vec![], vec![], vec![], vec![]);
        for (c, &n) in clips_per_class.iter().enumerate() {
            for i in 0..n {
                for w in 0..3 {
                    let mut row = vec![0.1 * ((i * 7 + w * 3) % 5) as f32; 4];
                    row[c] += 3.0;
                    x.extend(row);
                    y.push(c);
                }
                windows.push(3);
                labels.push(c);
            }
        }
        (x, y, windows, labels)
    }

    #[test]
    fn few_clips_choose_l2_by_cross_validation_over_clips() {
        let (x, y, w, l) = data(&[5, 5, 4]);
        let (l2, acc, k) = cross_validated_l2(&x, &y, &w, &l, 4, 3);
        assert_eq!(k, Some(4), "the smallest class has 4 clips");
        assert_eq!(acc, 1.0, "separable classes");
        assert!(super::HEAD_L2_GRID.contains(&l2));
        // A class with one clip: nothing to hold out, the default L2, said so.
        let (x, y, w, l) = data(&[5, 1]);
        let (_, _, k) = cross_validated_l2(&x, &y, &w, &l, 4, 2);
        assert_eq!(k, None);
    }

    #[test]
    fn auto_weighs_the_prototype_head_against_the_probes() {
        // Separable classes: every candidate scores 100 %, and the tie goes to the last one
        // (the strongest L2); the prototype head alone is what `prototype` gets.
        let (x, y, w, l) = data(&[5, 5, 4]);
        let auto = ClassifierKind::Auto;
        let (c, acc, _) = cross_validated(&x, &y, &w, &l, 4, 3, auto);
        assert_eq!(acc, 1.0);
        assert_eq!(c, Classifier::Logistic { l2: 0.1 });
        assert_eq!(auto.candidates()[0], Classifier::Prototype);
        let proto = ClassifierKind::Prototype;
        let (c, acc, _) = cross_validated(&x, &y, &w, &l, 4, 3, proto);
        assert_eq!((c, acc), (Classifier::Prototype, 1.0));
    }
}
