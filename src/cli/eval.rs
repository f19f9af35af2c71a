//! `ajepa eval`: linear-probe accuracy of an encoder on a labeled set, with the baselines
//! computed by the same command on the same folds (log-mel statistics; a random encoder).
//! With `--head`, the accuracy of a trained head instead (`eval_head`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use audio_jepa::dataset::{parse_where, read_csv_where};
use audio_jepa::engine::{FastEncoder, Isa, Precision};
use audio_jepa::finetune::probe::{fit_validated, scores, Probe, ProbeConfig, L2_GRID};
use audio_jepa::frontend::patches::{normalize, patchify};
use audio_jepa::frontend::{LogMel, LogMelExtractor};
use audio_jepa::model::pooling::Pooling;
use audio_jepa::model::{Encoder, EncoderConfig};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Encoder weights (.safetensors with its .json), a pretraining run's folder, or `default`
    /// (the built-in model; the default with --head)
    #[arg(long, required_unless_present = "head")]
    pub(super) model: Option<PathBuf>,
    /// ESC-50 style CSV (filename, fold, category)
    #[arg(long, required_unless_present = "folders")]
    pub(super) csv: Option<PathBuf>,
    /// With --head: a folder with one subfolder of clips per class; a subfolder named `unknown`
    /// (and any class the head does not have) holds sounds the head should call unknown
    #[arg(long, conflicts_with = "csv", requires = "head")]
    pub(super) folders: Option<PathBuf>,
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    train_folds: Vec<u32>,
    /// Held-out folds (with --head and --csv: the folds scored; rows without a fold always are)
    #[arg(long, value_delimiter = ',', default_value = "4")]
    pub(super) test_folds: Vec<u32>,
    /// Only rows where COLUMN equals VALUE, e.g. esc10=True
    #[arg(long = "where", value_name = "COLUMN=VALUE", value_parser = parse_where)]
    pub(super) where_: Option<(String, String)>,
    /// Write the model's confusion matrix on the test folds as a PNG (rows true, columns
    /// predicted, class names on the axes)
    #[arg(long)]
    pub(super) confusion_png: Option<PathBuf>,
    /// Skip the baselines
    #[arg(long)]
    no_baselines: bool,
    /// Print the results as one JSON object
    #[arg(long)]
    pub(super) json: bool,
    /// Score this trained head (from `ajepa finetune` or `enroll`) on the labeled clips instead
    /// of fitting a probe: accuracy, per-class recall, confusion, false tags on unknown sounds
    #[arg(long, conflicts_with_all = ["no_baselines", "pool", "val_fold", "l2", "encoder", "train_folds"])]
    pub(super) head: Option<PathBuf>,
    /// With --head: the open-set check's quantile (as `listen` and `tag`)
    #[arg(long, default_value_t = 0.2, requires = "head")]
    pub(super) unknown_quantile: f32,
    /// With --head: no open-set check (every clip gets one of the head's classes)
    #[arg(long, requires = "head")]
    pub(super) no_unknown: bool,
    /// With --head: a clip whose loudest 160 ms are quieter than this (RMS, dBFS) is silence,
    /// answered with no class, as `tag` and `listen` gate it (-120 turns the gate off)
    #[arg(long, default_value_t = -60.0, allow_hyphen_values = true, requires = "head")]
    pub(super) silence_dbfs: f32,
    /// Threads for the encoder (default: every core of this machine; the results do not depend
    /// on it)
    #[arg(long, default_value_t = super::machine_threads(), value_parser = super::parse_threads)]
    pub(super) threads: usize,
    /// Arithmetic for the model's embeddings: f32, or q8 (the int8 engine a q8 file runs on;
    /// the default for a file written by `ajepa quantize --type q8|q4`)
    #[arg(long, value_parser = parse_precision)]
    precision: Option<Precision>,
    /// With --model a pretraining run's folder: which of its encoders, `context` (the trained
    /// one) or `target` (the EMA); default its `encoder.safetensors`
    #[arg(long, value_parser = ["context", "target"])]
    encoder: Option<String>,
    /// Clip embeddings from the tokens: `mean` (whole-clip mean), `meanmax` (mean and max
    /// concatenated), `freqcat` (per time step the frequency tokens concatenated, then the mean
    /// over time, as M2D / EVAR); several, comma-separated, give one row each
    #[arg(long, value_delimiter = ',', default_value = "mean", value_parser = ["mean", "meanmax", "freqcat"])]
    pool: Vec<String>,
    /// The training fold on which the probe's L2 is chosen (the probe is then refitted on every
    /// training fold); default the last of --train-folds when there are two or more
    #[arg(long)]
    val_fold: Option<u32>,
    /// A fixed L2 for the probe instead of choosing it on --val-fold
    #[arg(long)]
    l2: Option<f32>,
    /// Also probe features from inside the encoder, one row per spec and pooling: `A-B` (or
    /// `A`) is the mean of blocks A to B's outputs (1-based), each layer-normalised per token
    /// without affine parameters (data2vec section 3.3's layer average, but per token, so a
    /// window's features do not depend on its neighbours); f32 through candle, not the engine.
    /// E.g. `--blocks 3,4,5,6,4-6`
    #[arg(long, value_delimiter = ',', value_parser = parse_blocks)]
    blocks: Vec<(usize, usize)>,
}

/// `A` or `A-B`, 1-based block numbers with `A <= B`.
fn parse_blocks(s: &str) -> Result<(usize, usize), String> {
    let num = |t: &str| {
        t.trim()
            .parse::<usize>()
            .ok()
            .filter(|&v| v >= 1)
            .ok_or_else(|| format!("`{s}`: blocks are numbered from 1, as `4` or `4-6`"))
    };
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => (num(s)?, num(s)?),
    };
    if a > b {
        return Err(format!("`{s}`: the first block comes first, as `4-6`"));
    }
    Ok((a, b))
}

/// The clip's normalised 16 x 16 patches, time-major, as the encoders take them; a clip shorter
/// than one patch column is an error.
fn clip_patches(
    spec: &LogMel,
    fe: &audio_jepa::FrontendConfig,
) -> anyhow::Result<audio_jepa::frontend::patches::Patches> {
    let mut s = spec.clone();
    normalize(&mut s.data, fe);
    let p = patchify(&s, 16, 16)?;
    if p.grid.n_patches() == 0 {
        bail!("clip shorter than one patch column");
    }
    Ok(p)
}

/// The outputs of every block for a clip, `[depth][n * D]` time-major, through candle in f32,
/// in windows of at most `MAX_WINDOW_COLUMNS` columns as the engine's embeddings are.
fn block_tokens(
    enc: &Encoder,
    spec: &LogMel,
    fe: &audio_jepa::FrontendConfig,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let p = clip_patches(spec, fe)?;
    let n = p.grid.n_patches();
    let cfg = enc.config();
    let (nf, d, pl, depth) = (cfg.n_freq(), cfg.embed_dim, cfg.patch_len(), cfg.depth);
    let cols = n / nf;
    let width = cols.min(super::MAX_WINDOW_COLUMNS);
    let mut out = vec![Vec::with_capacity(n * d); depth];
    for c0 in (0..cols).step_by(width) {
        let c1 = (c0 + width).min(cols);
        let k = (c1 - c0) * nf;
        let x = Tensor::from_slice(
            &p.data[c0 * nf * pl..c1 * nf * pl],
            (1, k, pl),
            &Device::Cpu,
        )?;
        for (o, l) in out.iter_mut().zip(enc.forward_layers(&x, depth)?) {
            o.extend(l.flatten_all()?.to_vec1::<f32>()?);
        }
    }
    Ok(out)
}

/// The mean over blocks `a..=b` (1-based) of each token layer-normalised without affine
/// parameters.
fn layer_average(blocks: &[Vec<f32>], (a, b): (usize, usize), d: usize) -> Vec<f32> {
    let mut acc = vec![0f32; blocks[0].len()];
    for block in &blocks[a - 1..b] {
        for (x, y) in block.chunks_exact(d).zip(acc.chunks_exact_mut(d)) {
            let mean = x.iter().sum::<f32>() / d as f32;
            let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
            let inv = 1.0 / (var + 1e-6).sqrt();
            for (o, v) in y.iter_mut().zip(x) {
                *o += (v - mean) * inv;
            }
        }
    }
    let k = (b + 1 - a) as f32;
    acc.iter_mut().for_each(|v| *v /= k);
    acc
}

/// The encoder file named by `--model` and `--encoder`.
fn model_file(model: &Path, encoder: Option<&str>) -> anyhow::Result<PathBuf> {
    if super::model::is_built_in(model) && encoder.is_none() {
        return Ok(model.to_path_buf());
    }
    if model.is_dir() {
        let name = match encoder {
            Some("context") => "context_encoder.safetensors",
            Some(_) => "target_encoder.safetensors",
            None => "encoder.safetensors",
        };
        let f = model.join(name);
        if !f.is_file() {
            bail!(
                "{} holds no {name} (a run from `ajepa-train pretrain` has encoder, context_encoder and target_encoder .safetensors)",
                model.display()
            );
        }
        return Ok(f);
    }
    if encoder.is_some() {
        bail!(
            "--encoder picks an encoder of a pretraining run: pass the run's folder as --model, not the file {}",
            model.display()
        );
    }
    Ok(model.to_path_buf())
}

/// How clip embeddings are made from an encoder's tokens (time-major: `col * n_freq + row`):
/// `mean` and `freqcat` as heads pool (`model::pooling`), `meanmax` the mean then the max.
fn pool_tokens(kind: &str, tokens: &[f32], n_freq: usize, d: usize) -> Vec<f32> {
    let pool = if kind == "freqcat" {
        Pooling::FreqCat
    } else {
        Pooling::Mean
    };
    let mut out = vec![0f32; pool.dim(d, n_freq)];
    pool.pool_into(tokens, d, n_freq, &mut out);
    if kind == "meanmax" {
        let mut max = vec![f32::NEG_INFINITY; d];
        for r in tokens.chunks_exact(d) {
            for (x, v) in max.iter_mut().zip(r) {
                *x = x.max(*v);
            }
        }
        out.extend(max);
    }
    out
}

/// Refuses splits that would make the accuracy meaningless (issue 15): a fold in both the
/// training and the test folds, the same file in both, an empty side, one class only. Repeated
/// rows within one side are reported, with counts, and kept.
fn check_splits(
    used: &[&audio_jepa::dataset::Example],
    train_folds: &[u32],
    test_folds: &[u32],
) -> anyhow::Result<()> {
    use std::collections::{HashMap, HashSet};
    if let Some(f) = train_folds.iter().find(|f| test_folds.contains(f)) {
        bail!("fold {f} is in both --train-folds and --test-folds: the test would score clips the probe was fitted on");
    }
    let is_train =
        |e: &&audio_jepa::dataset::Example| e.fold.is_some_and(|f| train_folds.contains(&f));
    let train: Vec<_> = used.iter().copied().filter(is_train).collect();
    let test: Vec<_> = used
        .iter()
        .copied()
        .filter(|e| e.fold.is_some_and(|f| test_folds.contains(&f)))
        .collect();
    if test.is_empty() {
        bail!(
            "no clips in the test folds {test_folds:?} ({} training clips): nothing to score",
            train.len()
        );
    }
    if train.is_empty() {
        bail!("no clips in the training folds {train_folds:?}: nothing to fit the probe on");
    }
    let classes: HashSet<usize> = train.iter().map(|e| e.class).collect();
    if classes.len() < 2 {
        bail!(
            "the training folds hold {} class(es); a probe needs at least two",
            classes.len()
        );
    }
    let key =
        |e: &audio_jepa::dataset::Example| e.path.canonicalize().unwrap_or_else(|_| e.path.clone());
    let train_files: HashSet<_> = train.iter().map(|e| key(e)).collect();
    let leaked: Vec<_> = test
        .iter()
        .filter(|e| train_files.contains(&key(e)))
        .collect();
    if let Some(first) = leaked.first() {
        bail!(
            "{} test clip(s) are also training clips (e.g. {}): remove the duplicates from the CSV",
            leaked.len(),
            first.path.display()
        );
    }
    let mut seen: HashMap<_, usize> = HashMap::new();
    for e in used {
        *seen.entry(key(e)).or_default() += 1;
    }
    let repeated = seen.values().filter(|&&c| c > 1).count();
    if repeated > 0 {
        eprintln!(
            "warning: {repeated} file(s) appear more than once in the CSV ({} extra rows); each row counts",
            seen.values().map(|c| c - 1).sum::<usize>()
        );
    }
    Ok(())
}

fn parse_precision(s: &str) -> Result<Precision, String> {
    match s {
        "f32" => Ok(Precision::F32),
        "q8" => Ok(Precision::Q8),
        other => Err(format!("`{other}`: use f32 or q8")),
    }
}

/// The model's whole-clip embeddings through the engine, rebuilt when a longer clip comes.
struct EngineEmbedder<'a> {
    enc: &'a Encoder,
    precision: Precision,
    threads: usize,
    fast: Option<(FastEncoder, audio_jepa::engine::Scratch)>,
}

impl EngineEmbedder<'_> {
    /// The clip's output tokens `[n, D]`, time-major.
    fn tokens(
        &mut self,
        spec: &LogMel,
        fe: &audio_jepa::FrontendConfig,
    ) -> anyhow::Result<Vec<f32>> {
        let p = clip_patches(spec, fe)?;
        let n = p.grid.n_patches();
        let nf = self.enc.config().n_freq();
        let (d, pl) = (self.enc.config().embed_dim, self.enc.config().patch_len());
        let cols = n / nf;
        // Long clips in windows; memory is bounded by a window (see MAX_WINDOW_COLUMNS).
        let width = cols.min(super::MAX_WINDOW_COLUMNS);
        if self
            .fast
            .as_ref()
            .is_none_or(|(f, _)| f.max_tokens() < width * nf)
        {
            let f = FastEncoder::from_encoder(self.enc, self.precision, Isa::detect(), width)?;
            let scratch = f
                .scratch_threads(self.threads)
                .context("starting the encoder's threads")?;
            self.fast = Some((f, scratch));
        }
        let (f, scratch) = self.fast.as_mut().expect("built above");
        let mut out = Vec::with_capacity(n * d);
        for c0 in (0..cols).step_by(width) {
            let c1 = (c0 + width).min(cols);
            f.forward(&p.data[c0 * nf * pl..c1 * nf * pl], scratch)?;
            out.extend_from_slice(&scratch.tokens[..(c1 - c0) * nf * d]);
        }
        Ok(out)
    }
}

/// A randomly initialised encoder of the same shape, seeded, initialised as pretraining does
/// with the shipped configs: N(0, 0.02) linear weights, a Xavier-uniform patch embedding
/// (`[model] patch_embed_init = "xavier"`), unit norms, zero biases.
fn random_like(cfg: &EncoderConfig) -> anyhow::Result<Encoder> {
    let vm = VarMap::new();
    let enc = Encoder::load(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu), cfg)?;
    let mut state = 0x1234_5678u64;
    // Uniform in (0, 1) from a 64-bit LCG.
    let mut uniform = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let data = vm.data().lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let v = &data[name];
        let n = v.elem_count();
        let values: Vec<f32> = if name.ends_with(".bias") {
            vec![0.0; n]
        } else if name.contains("norm") {
            vec![1.0; n]
        } else if name == "patch_embed.proj.weight" {
            let (fan_out, fan_in) = v.as_tensor().dims2()?;
            let bound = (6.0 / (fan_in + fan_out) as f64).sqrt();
            (0..n)
                .map(|_| (bound * (2.0 * uniform() - 1.0)) as f32)
                .collect()
        } else {
            (0..n)
                .map(|_| {
                    // Box-Muller.
                    let (a, b) = (uniform(), uniform());
                    (0.02 * (-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()) as f32
                })
                .collect()
        };
        v.set(&Tensor::from_vec(values, v.shape(), &Device::Cpu)?)?;
    }
    drop(data);
    Ok(enc)
}

fn logmel_stats(spec: &LogMel) -> Vec<f32> {
    let m = spec.n_mels;
    let n = spec.n_frames.max(1) as f32;
    let mut mean = vec![0f32; m];
    for f in spec.frames() {
        for (a, v) in mean.iter_mut().zip(f) {
            *a += v / n;
        }
    }
    let mut std = vec![0f32; m];
    for f in spec.frames() {
        for ((a, v), mu) in std.iter_mut().zip(f).zip(&mean) {
            *a += (v - mu) * (v - mu) / n;
        }
    }
    mean.extend(std.iter().map(|v| v.sqrt()));
    mean
}

/// One row of the table: a feature kind, and its vectors.
struct Features {
    name: String,
    dim: usize,
    train: Vec<f32>,
    test: Vec<f32>,
}

impl Features {
    fn new(name: String) -> Self {
        Self {
            name,
            dim: 0,
            train: Vec::new(),
            test: Vec::new(),
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(head) = &args.head {
        return super::eval_head::run(&args, head);
    }
    let (Some(csv), Some(model)) = (&args.csv, &args.model) else {
        bail!("a probe needs --model and --csv (or --head H to score a trained head)");
    };
    let set = read_csv_where(
        csv,
        args.where_.as_ref().map(|(c, v)| (c.as_str(), v.as_str())),
    )?;
    let fe = audio_jepa::FrontendConfig::default();
    let model_path = model_file(model, args.encoder.as_deref())?;
    let (model, quant) = super::model::load(&model_path)?;
    let precision = args
        .precision
        .unwrap_or_else(|| super::model::precision(quant));
    if let Some(&(_, b)) = args.blocks.iter().find(|&&(_, b)| b > model.config().depth) {
        bail!(
            "--blocks {b}: the encoder has {} blocks",
            model.config().depth
        );
    }
    let random = random_like(model.config())?;
    let (n_freq, d) = (model.config().n_freq(), model.config().embed_dim);
    let mut embedder = EngineEmbedder {
        enc: &model,
        precision,
        threads: args.threads,
        fast: None,
    };
    let mut random_embedder = EngineEmbedder {
        enc: &random,
        precision: Precision::F32,
        threads: args.threads,
        fast: None,
    };
    if !args.json {
        note!(
            "model {} embedded by the engine in {precision:?}",
            model_path.display()
        );
    }
    let val_fold = args.val_fold.or_else(|| {
        (args.train_folds.len() >= 2)
            .then(|| args.train_folds.last().copied())
            .flatten()
    });
    if let Some(v) = val_fold {
        if !args.train_folds.contains(&v) {
            bail!(
                "--val-fold {v} is not one of --train-folds {:?}",
                args.train_folds
            );
        }
    }
    let mut lm = LogMelExtractor::new(&fe)?;
    // Rows: log-mel statistics, then per pooling the random encoder and the model.
    let mut rows = vec![Features::new("log-mel mean+std".into())];
    for pool in &args.pool {
        if !args.no_baselines {
            rows.push(Features::new(format!("random-init encoder, {pool}")));
        }
        rows.push(Features::new(format!("pretrained encoder, {pool}")));
    }
    for &(a, b) in &args.blocks {
        for pool in &args.pool {
            let which = if a == b {
                format!("block {a}")
            } else {
                format!("blocks {a}-{b}")
            };
            rows.push(Features::new(format!(
                "pretrained encoder, {which}, {pool}"
            )));
        }
    }
    let (mut ytr, mut ftr, mut yte) = (Vec::new(), Vec::new(), Vec::new());
    let used: Vec<_> = set
        .examples
        .iter()
        .filter(|e| {
            e.fold
                .is_some_and(|f| args.train_folds.contains(&f) || args.test_folds.contains(&f))
        })
        .collect();
    if used.is_empty() {
        bail!(
            "no clips in folds {:?} / {:?}",
            args.train_folds,
            args.test_folds
        );
    }
    check_splits(&used, &args.train_folds, &args.test_folds)?;
    let mut progress = super::progress::Progress::new(used.len(), "clips embedded", args.json);
    for (i, ex) in used.iter().enumerate() {
        let audio = audio_jepa::audio::load(&ex.path, fe.sample_rate)
            .with_context(|| format!("clip {}", i + 1))?;
        let spec = lm.compute(&audio.samples);
        let train = ex.fold.is_some_and(|f| args.train_folds.contains(&f));
        let mut vecs = vec![logmel_stats(&spec)];
        let model_tokens = embedder.tokens(&spec, &fe)?;
        let random_tokens = if args.no_baselines {
            Vec::new()
        } else {
            random_embedder.tokens(&spec, &fe)?
        };
        for pool in &args.pool {
            if !args.no_baselines {
                vecs.push(pool_tokens(pool, &random_tokens, n_freq, d));
            }
            vecs.push(pool_tokens(pool, &model_tokens, n_freq, d));
        }
        if !args.blocks.is_empty() {
            let blocks = block_tokens(&model, &spec, &fe)?;
            for &range in &args.blocks {
                let tokens = layer_average(&blocks, range, d);
                for pool in &args.pool {
                    vecs.push(pool_tokens(pool, &tokens, n_freq, d));
                }
            }
        }
        for (row, v) in rows.iter_mut().zip(vecs) {
            row.dim = v.len();
            if train {
                row.train.extend(v);
            } else {
                row.test.extend(v);
            }
        }
        if train {
            ytr.push(ex.class);
            ftr.push(ex.fold);
        } else {
            yte.push(ex.class);
        }
        progress.inc();
    }
    drop(progress);
    let c = set.classes.len();
    let mut results = Vec::new();
    if !args.json {
        match (args.l2, val_fold) {
            (Some(l2), _) => println!("probe L2 fixed at {l2}"),
            (None, Some(v)) => println!(
                "probe L2 chosen on fold {v} (trained on the other training folds), then refitted on folds {:?}",
                args.train_folds
            ),
            (None, None) => println!(
                "probe L2 {} (one training fold: no validation fold to choose it on)",
                ProbeConfig::default().l2
            ),
        }
    }
    for (k, row) in rows.iter().enumerate() {
        if k == 0 && args.no_baselines {
            continue;
        }
        let (probe, l2, val) = match (args.l2, val_fold) {
            (Some(l2), _) => (
                Probe::fit(
                    &row.train,
                    &ytr,
                    row.dim,
                    c,
                    ProbeConfig {
                        l2,
                        ..Default::default()
                    },
                ),
                l2,
                Vec::new(),
            ),
            (None, Some(v)) => fit_validated(&row.train, &ytr, &ftr, v, row.dim, c, &L2_GRID),
            (None, None) => {
                let cfg = ProbeConfig::default();
                (
                    Probe::fit(&row.train, &ytr, row.dim, c, cfg),
                    cfg.l2,
                    Vec::new(),
                )
            }
        };
        let val_acc = val.iter().find(|(g, _)| *g == l2).map(|v| v.1);
        let pred: Vec<usize> = row.test.chunks(row.dim).map(|v| probe.predict(v)).collect();
        let (acc, f1, cm) = scores(&yte, &pred, c);
        let is_model = row.name.starts_with("pretrained");
        if let (true, Some(png)) = (
            is_model && row.name == format!("pretrained encoder, {}", args.pool[0]),
            &args.confusion_png,
        ) {
            audio_jepa::render::write_confusion_png(png, &cm, &set.classes, &set.classes)?;
            if !args.json {
                println!(
                    "confusion matrix of the encoder (rows true, columns predicted; {}): {}",
                    set.classes.join(", "),
                    png.display()
                );
            }
        }
        results.push(serde_json::json!({"features": row.name, "dim": row.dim, "accuracy": acc, "macro_f1": f1,
            "l2": l2, "val_accuracy": val_acc, "train": ytr.len(), "test": yte.len()}));
        if !args.json {
            println!(
                "{:34} {:>5}-d  accuracy {:5.1} %  macro-F1 {:5.1} %  L2 {:<6}{}  ({} train / {} test clips)",
                row.name,
                row.dim,
                100.0 * acc,
                100.0 * f1,
                l2,
                val_acc.map_or(String::new(), |a| format!(" (val {:.1} %)", 100.0 * a)),
                ytr.len(),
                yte.len()
            );
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({"model": model_path, "precision": precision, "classes": c,
                "val_fold": if args.l2.is_some() { None } else { val_fold }, "results": results})
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::pool_tokens;

    #[test]
    fn block_specs_parse_and_bad_ones_are_refused() {
        use super::parse_blocks;
        assert_eq!(parse_blocks("4"), Ok((4, 4)));
        assert_eq!(parse_blocks("4-6"), Ok((4, 6)));
        for bad in ["0", "6-4", "x", "2-", "-3", ""] {
            assert!(parse_blocks(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn layer_average_exact_values() {
        // One 3-d token in two blocks: [0, 0, 3] normalises to [-1, -1, 2] / sqrt(2),
        // [2, 2, 2] to zeros (no variance), [3, 0, 0] to [2, -1, -1] / sqrt(2).
        let blocks = vec![
            vec![0.0, 0.0, 3.0],
            vec![2.0, 2.0, 2.0],
            vec![3.0, 0.0, 0.0],
        ];
        let r = std::f32::consts::FRAC_1_SQRT_2;
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5);
        let one = super::layer_average(&blocks, (1, 1), 3);
        assert!(close(&one, &[-r, -r, 2.0 * r]), "{one:?}");
        let two = super::layer_average(&blocks, (1, 2), 3);
        assert!(close(&two, &[-r / 2.0, -r / 2.0, r]), "{two:?}");
        let all = super::layer_average(&blocks, (1, 3), 3);
        assert!(close(&all, &[r / 3.0, -2.0 * r / 3.0, r / 3.0]), "{all:?}");
    }

    #[test]
    fn the_last_block_normalised_is_the_encoder_output_when_its_norm_is_plain() {
        // random_like's final norm has unit weights and zero biases, so the last block's output
        // layer-normalised must be what the encoder returns, on both windows of a long clip.
        let cfg = audio_jepa::model::EncoderConfig::preset("tiny").unwrap();
        let enc = super::random_like(&cfg).unwrap();
        let fe = audio_jepa::FrontendConfig::default();
        let cols = super::super::MAX_WINDOW_COLUMNS + 3;
        let (n_frames, n_mels) = (cols * cfg.patch_size, cfg.n_mels);
        let data = (0..n_frames * n_mels)
            .map(|i| ((i * 7919) % 113) as f32 * 0.1 - 8.0)
            .collect();
        let spec = audio_jepa::frontend::LogMel {
            n_frames,
            n_mels,
            data,
        };
        let blocks = super::block_tokens(&enc, &spec, &fe).unwrap();
        let d = cfg.embed_dim;
        let got = super::layer_average(&blocks, (cfg.depth, cfg.depth), d);
        let p = super::clip_patches(&spec, &fe).unwrap();
        let nf = cfg.n_freq();
        let w = super::super::MAX_WINDOW_COLUMNS;
        let mut want = Vec::new();
        for (c0, c1) in [(0, w), (w, cols)] {
            let x = candle_core::Tensor::from_slice(
                &p.data[c0 * nf * cfg.patch_len()..c1 * nf * cfg.patch_len()],
                (1, (c1 - c0) * nf, cfg.patch_len()),
                &candle_core::Device::Cpu,
            )
            .unwrap();
            let y = enc.forward(&x, None).unwrap();
            want.extend(y.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        }
        assert_eq!(got.len(), cols * nf * d);
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-3, "largest difference {worst}");
    }

    #[test]
    fn pooling_exact_values() {
        // 2 frequency rows x 2 time columns of 2-d tokens, time-major: (c0 r0), (c0 r1), (c1 r0), (c1 r1).
        let t = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 0.0];
        assert_eq!(pool_tokens("mean", &t, 2, 2), vec![4.0, 3.0]);
        assert_eq!(pool_tokens("meanmax", &t, 2, 2), vec![4.0, 3.0, 7.0, 6.0]);
        // Per column [r0 | r1] = [1 2 3 4] and [5 6 7 0], then the mean over columns.
        assert_eq!(pool_tokens("freqcat", &t, 2, 2), vec![3.0, 4.0, 5.0, 2.0]);
    }

    #[test]
    fn splits_that_would_make_the_accuracy_meaningless_are_refused() {
        use super::check_splits;
        use audio_jepa::dataset::Example;
        let ex = |p: &str, class, fold| Example {
            path: p.into(),
            class,
            fold: Some(fold),
        };
        let good = [ex("a", 0, 1), ex("b", 1, 1), ex("c", 0, 4)];
        fn refs(v: &[Example]) -> Vec<&Example> {
            v.iter().collect()
        }
        check_splits(&refs(&good), &[1], &[4]).unwrap();
        // (clips, training folds, test folds, what the error must say)
        type Case<'a> = (&'a [Example], &'a [u32], &'a [u32], &'a str);
        let cases: [Case; 5] = [
            (&good, &[1, 4], &[4], "in both"),
            (&good, &[1], &[3], "no clips in the test folds"),
            (&good, &[2], &[4], "no clips in the training folds"),
            (
                &[ex("a", 0, 1), ex("b", 0, 1), ex("c", 0, 4)],
                &[1],
                &[4],
                "at least two",
            ),
            (
                &[ex("a", 0, 1), ex("b", 1, 1), ex("a", 0, 4)],
                &[1],
                &[4],
                "also training clips",
            ),
        ];
        for (set, train, test, why) in cases {
            let e = check_splits(&refs(set), train, test)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{why}: {e}");
        }
    }
}
