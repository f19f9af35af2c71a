//! `ajepa-train pretrain`: the pretraining command (progress bar, JSONL log, curves, checkpoints).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use audio_jepa::finetune::labeled::parse_where;
use audio_jepa::FrontendConfig;
use audio_jepa_training::config::{Precision, TrainConfig};
use audio_jepa_training::data::list_audio_where;
use audio_jepa_training::features::{load_features, ClipFeatures};
use audio_jepa_training::loader::{fixed_batch, Corpus, Loader};
use audio_jepa_training::plot::write_curves;
use audio_jepa_training::shards::{is_shard_dir, read_shards};
use audio_jepa_training::train::{Trainer, CHECKPOINT, ENCODER};
use candle_core::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Training config (TOML), e.g. training/configs/edge.toml
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    sources: Sources,
    /// Run directory: checkpoint, encoder, config, log.jsonl, curves.png
    #[arg(long)]
    out: PathBuf,
    /// cpu, cuda or metal (the last two need the build features of the same name)
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Continue the run in --out from its checkpoint
    #[arg(long)]
    resume: bool,
    /// Override [optim] steps
    #[arg(long)]
    steps: Option<u64>,
    /// Override [optim] precision: f32, or bf16 (mixed precision, for GPUs); also on --resume
    #[arg(long, value_parser = parse_precision)]
    precision: Option<Precision>,
    /// Stop after this many minutes (a checkpoint is written first); the run can be resumed
    #[arg(long)]
    minutes: Option<f64>,
}

/// Where training features come from (`pretrain` and `prepare`).
#[derive(Debug, clap::Args)]
pub struct Sources {
    /// Audio: a folder (recursive), a CSV with a `filename` column, or a shard folder from
    /// `prepare`; repeat for several
    #[arg(long, required = true)]
    pub data: Vec<PathBuf>,
    /// For CSV sources with a `fold` column (ESC-50): only these folds, e.g. 1,2,3
    #[arg(long, value_delimiter = ',')]
    pub folds: Option<Vec<u32>>,
    /// For CSV sources: only rows where COLUMN equals VALUE, e.g. `esc10=True` (ESC-10 subset)
    #[arg(long = "where", value_name = "COLUMN=VALUE", value_parser = parse_where)]
    pub where_: Option<(String, String)>,
    /// Feature cache folder (default: ~/.cache/audio-jepa/features)
    #[arg(long)]
    pub cache: Option<PathBuf>,
}

impl Sources {
    /// Features of every source: shard folders read as they are (checksums and front end
    /// checked), audio listed, decoded once and cached (with a progress bar; unreadable files are
    /// reported and skipped). Returns the clips and how many files were skipped.
    pub fn load(&self, fe: &FrontendConfig) -> anyhow::Result<(Vec<ClipFeatures>, usize)> {
        let mut sharded = Vec::new();
        let mut files = Vec::new();
        for d in &self.data {
            if is_shard_dir(d) {
                sharded.extend(
                    read_shards(d, fe)
                        .with_context(|| format!("reading shards {}", d.display()))?,
                );
                continue;
            }
            files.extend(
                list_audio_where(
                    d,
                    self.folds.as_deref(),
                    self.where_.as_ref().map(|(c, v)| (c.as_str(), v.as_str())),
                )
                .with_context(|| format!("listing {}", d.display()))?,
            );
        }
        let cache = self.cache.clone().unwrap_or_else(default_cache);
        let bar = ProgressBar::new(files.len() as u64).with_style(
            ProgressStyle::with_template("features {bar:30} {pos}/{len} files {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let (mut clips, skipped) =
            load_features(&files, fe, Some(&cache), |i| bar.set_position(i as u64))?;
        bar.finish_and_clear();
        clips.extend(sharded);
        for (p, why) in &skipped.0 {
            eprintln!("skipped {}: {why}", p.display());
        }
        if clips.is_empty() {
            bail!("no usable audio in {:?}", self.data);
        }
        eprintln!("features cached in {}", cache.display());
        Ok((clips, skipped.0.len()))
    }
}

fn parse_precision(s: &str) -> Result<Precision, String> {
    match s {
        "f32" => Ok(Precision::F32),
        "bf16" => Ok(Precision::Bf16),
        other => Err(format!("`{other}`: use f32 or bf16")),
    }
}

fn device(name: &str) -> anyhow::Result<Device> {
    Ok(match name {
        "cpu" => Device::Cpu,
        "cuda" => {
            Device::new_cuda(0).context("opening CUDA device 0 (built with --features cuda?)")?
        }
        "metal" => Device::new_metal(0)
            .context("opening the Metal device (built with --features metal?)")?,
        other => bail!("unknown device `{other}`: use cpu, cuda or metal"),
    })
}

pub fn default_cache() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"))
        .join("audio-jepa/features")
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let dev = device(&args.device)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let has_ckpt = args.out.join(CHECKPOINT).is_file();
    let mut trainer = if args.resume {
        if !has_ckpt {
            bail!("--resume: {} holds no {CHECKPOINT}", args.out.display());
        }
        let t = Trainer::resume(&args.out, &dev)?;
        eprintln!("resuming {} at step {}", args.out.display(), t.step);
        t
    } else {
        if has_ckpt {
            bail!(
                "{} already holds a run; pass --resume to continue it or choose another --out",
                args.out.display()
            );
        }
        let path = args
            .config
            .as_ref()
            .context("--config is required for a new run")?;
        let mut cfg = TrainConfig::load(path)?;
        if let Some(s) = args.steps {
            cfg.optim.steps = s;
        }
        cfg.validate()?;
        Trainer::new(cfg, &dev)?
    };
    if let (true, Some(s)) = (args.resume, args.steps) {
        trainer.cfg.optim.steps = s;
    }
    if let Some(p) = args.precision {
        trainer.cfg.optim.precision = p;
        trainer.jepa.set_compute_dtype(p.dtype())?;
    }
    if trainer.cfg.optim.precision == Precision::Bf16 && matches!(dev, Device::Cpu) {
        eprintln!(
            "note: bf16 mixed precision on the CPU is slower than f32 (candle's CPU bf16 matmul); it is meant for GPUs"
        );
    }
    let cfg = Arc::new(trainer.cfg.clone());

    let (clips, skipped) = args.sources.load(&cfg.frontend)?;
    let frames: usize = clips.iter().map(|c| c.n_frames).sum();
    eprintln!(
        "{} clips ({:.2} h of audio), {skipped} skipped",
        clips.len(),
        frames as f64 * cfg.frontend.frame_shift_ms / 3.6e6,
    );
    let enc = &trainer.jepa.enc_cfg;
    eprintln!(
        "encoder {}-wide x {} deep ({:.2} M parameters), predictor {} x {}, batch {}, {} steps, device {}, {:?}",
        enc.embed_dim,
        enc.depth,
        enc.num_params() as f64 / 1e6,
        cfg.predictor.embed_dim,
        cfg.predictor.depth,
        cfg.optim.batch_size,
        cfg.optim.steps,
        args.device,
        cfg.optim.precision,
    );

    let corpus = Corpus::new(clips, &cfg);
    eprintln!(
        "{:.2} h of sound after trimming digital silence; crops drawn by {:?}",
        corpus.active_frames() as f64 * cfg.frontend.frame_shift_ms / 3.6e6,
        cfg.data.sampling
    );
    let (fixed, n_fixed) = fixed_batch(&corpus, &cfg, cfg.run.rank_clips);
    let n_patches = fixed.len() / n_fixed / enc.patch_len();
    let fixed = Tensor::from_vec(fixed, (n_fixed, n_patches, enc.patch_len()), &dev)?;

    let loader = Loader::start(Arc::new(corpus), cfg.clone(), trainer.step);
    let log_path = args.out.join("log.jsonl");
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let (mut loss_pts, mut rank_t, mut rank_p) = read_curves(&log_path);

    let total = cfg.optim.steps;
    let bar = ProgressBar::new(total)
        .with_position(trainer.step)
        .with_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed} < {eta}]")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
    let started = Instant::now();
    let mut window = (Instant::now(), 0usize);
    let mut loss_acc = (0.0, 0usize);
    let deadline = args
        .minutes
        .map(|m| started + std::time::Duration::from_secs_f64(m * 60.0));
    while trainer.step < total {
        let step = trainer.step;
        let batch = loader.get(step).context("the data loader stopped")?;
        let stats = match trainer.train_step(&batch) {
            Ok(s) => s,
            Err(e) => {
                bar.abandon();
                let _ = writeln!(
                    log,
                    "{}",
                    serde_json::json!({"step": step, "event": "stopped", "reason": e.to_string()})
                );
                return Err(e).context(format!(
                    "run {} stopped; resume it from its checkpoint with --resume",
                    args.out.display()
                ));
            }
        };
        window.1 += batch.batch;
        loss_acc.0 += stats.loss;
        loss_acc.1 += 1;
        let done = trainer.step;
        if done % cfg.run.log_every == 0 || done == total {
            let secs = window.0.elapsed().as_secs_f64();
            let sps = window.1 as f64 / secs.max(1e-9);
            let mean_loss = loss_acc.0 / loss_acc.1.max(1) as f64;
            bar.set_message(format!(
                "loss {mean_loss:.4} lr {:.2e} ema {:.4} p_tf {:.2} {sps:.1} samples/s",
                stats.lr, stats.momentum, stats.tf_prob
            ));
            writeln!(
                log,
                "{}",
                serde_json::json!({
                    "step": done, "loss": mean_loss, "lr": stats.lr, "wd": stats.wd,
                    "momentum": stats.momentum, "tf_prob": stats.tf_prob, "mask": stats.mask,
                    "grad_norm": stats.grad_norm, "context_len": stats.context_len,
                    "samples_per_s": sps, "elapsed_s": started.elapsed().as_secs_f64(),
                })
            )?;
            loss_pts.push((done as f64, mean_loss));
            window = (Instant::now(), 0);
            loss_acc = (0.0, 0);
        }
        bar.set_position(done);
        if cfg.run.rank_every > 0 && (done % cfg.run.rank_every == 0 || done == total) {
            let c = trainer.collapse(&fixed)?;
            writeln!(
                log,
                "{}",
                serde_json::json!({"step": done, "rank_tokens": c.rank_tokens, "rank_pooled": c.rank_pooled, "spread": c.spread})
            )?;
            rank_t.push((done as f64, c.rank_tokens));
            rank_p.push((done as f64, c.rank_pooled));
            if c.rank_tokens < cfg.run.rank_warn || c.spread < 1e-3 {
                bar.println(format!(
                    "warning: step {done}: the target embeddings are collapsing (effective rank {:.2}, spread {:.2e})",
                    c.rank_tokens, c.spread
                ));
            }
        }
        let out_of_time = deadline.is_some_and(|d| Instant::now() >= d);
        if done % cfg.run.checkpoint_every == 0 || done == total || out_of_time {
            trainer.save(&args.out)?;
            let _ = write_curves(
                &args.out.join("curves.png"),
                &loss_pts,
                &rank_t,
                &rank_p,
                total as f64,
            );
        }
        if out_of_time {
            bar.abandon_with_message(format!(
                "time limit reached at step {done}; resume with --resume"
            ));
            return Ok(());
        }
    }
    bar.finish();
    eprintln!(
        "done: {} steps in {:.1} min; encoder {}",
        total,
        started.elapsed().as_secs_f64() / 60.0,
        args.out.join(ENCODER).display()
    );
    Ok(())
}

/// Loss and rank points already in a run's log (for curves across resumes).
#[allow(clippy::type_complexity)]
fn read_curves(path: &Path) -> (Vec<(f64, f64)>, Vec<(f64, f64)>, Vec<(f64, f64)>) {
    let (mut l, mut t, mut p) = (Vec::new(), Vec::new(), Vec::new());
    if let Ok(text) = std::fs::read_to_string(path) {
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let Some(step) = v.get("step").and_then(|s| s.as_f64()) else {
                continue;
            };
            if let Some(x) = v.get("loss").and_then(|x| x.as_f64()) {
                l.push((step, x));
            }
            if let Some(x) = v.get("rank_tokens").and_then(|x| x.as_f64()) {
                t.push((step, x));
            }
            if let Some(x) = v.get("rank_pooled").and_then(|x| x.as_f64()) {
                p.push((step, x));
            }
        }
    }
    (l, t, p)
}
