//! `ajepa-train pretrain`: the pretraining command (progress bar, JSONL log, curves, checkpoints).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use audio_jepa::dataset::parse_where;
use audio_jepa::FrontendConfig;
use audio_jepa_training::config::{Precision, SourceSpec, TrainConfig};
use audio_jepa_training::data::{list_audio_selected, Subfolders};
use audio_jepa_training::distributed::{Collective, LaunchEnv};
use audio_jepa_training::features::{load_features, ClipFeatures};
use audio_jepa_training::loader::{fixed_batch, Corpus, Loader};
use audio_jepa_training::plot::write_curves;
use audio_jepa_training::run_dir;
use audio_jepa_training::shards::{is_shard_dir, read_shards};
use audio_jepa_training::train::{TrainError, Trainer, CHECKPOINT, ENCODER};
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
    /// Where to compute: cpu, cuda or metal (the last two need the build features of the same
    /// name). (`ajepa listen --input-device` picks a microphone; `--device` is an old name.)
    #[arg(
        long = "compute",
        alias = "device",
        default_value = "cpu",
        value_name = "DEVICE"
    )]
    device: String,
    /// Continue the run in --out from its checkpoint
    #[arg(long)]
    resume: bool,
    /// Start a new run from trained weights, with a fresh optimiser and schedules from their
    /// start (continued pretraining on more audio, or on your own): another run's folder
    /// (encoders and predictor), or an encoder file or `default` (the built-in encoder; context
    /// and target start from it, the predictor fresh). The model shapes must match the config's
    #[arg(long, value_name = "RUN|ENCODER|default", conflicts_with = "resume")]
    init: Option<PathBuf>,
    /// Override [optim] steps
    #[arg(long)]
    steps: Option<u64>,
    /// Override [optim] precision: f32, or bf16 (mixed precision: bf16 products, f32 sums; on
    /// GPUs, and on CPUs with AVX-512 BF16, where a step is about 1.5x faster; f32 on other
    /// CPUs); also on --resume
    #[arg(long, value_parser = parse_precision)]
    precision: Option<Precision>,
    /// A wall-clock horizon: the schedules (learning rate, weight decay, EMA, masks) follow the
    /// elapsed training time, and the run ends at their end after this many minutes, however
    /// fast the machine (`[optim] steps` is then only an upper bound). Saved with the run
    #[arg(long)]
    minutes: Option<f64>,
    /// Multi-GPU runs (WORLD_SIZE > 1): hand out the NCCL id through this file on a path every
    /// rank sees, instead of over TCP at MASTER_ADDR:MASTER_PORT; it must not exist yet (use a
    /// path per job, e.g. with $SLURM_JOB_ID)
    #[arg(long, value_name = "FILE")]
    rendezvous_file: Option<PathBuf>,
}

/// Where training features come from (`pretrain` and `prepare`).
#[derive(Debug, clap::Args)]
pub struct Sources {
    /// Audio: a folder (recursive), a CSV with a `filename` column, or a shard folder from
    /// `prepare`; repeat for several. Replaces the config's `[[data.sources]]`
    #[arg(long)]
    pub data: Vec<PathBuf>,
    /// Share of the crops from each --data source, in order, e.g. 0.8,0.2 (default: all clips
    /// in one pool)
    #[arg(long, value_delimiter = ',')]
    pub weights: Option<Vec<f64>>,
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

/// The clips of every source, the source of each clip and the sources' weights.
pub struct Loaded {
    pub clips: Vec<ClipFeatures>,
    pub source_of: Vec<usize>,
    pub weights: Vec<f64>,
    pub skipped: usize,
}

impl Sources {
    /// The sources to read: `--data` (one pool, or one source each with `--weights`), else the
    /// config's `[[data.sources]]`.
    pub fn specs(&self, config: &[SourceSpec]) -> anyhow::Result<Vec<SourceSpec>> {
        if self.data.is_empty() {
            if config.is_empty() {
                bail!("no audio: pass --data PATH (or list [[data.sources]] in the config)");
            }
            if self.weights.is_some() {
                bail!("--weights applies to --data sources; the config's sources carry their own weights");
            }
            return Ok(config.to_vec());
        }
        let where_ = self.where_.as_ref().map(|(c, v)| format!("{c}={v}"));
        let weights = match &self.weights {
            None => vec![1.0; self.data.len()],
            Some(w) if w.len() == self.data.len() => w.clone(),
            Some(w) => bail!(
                "--weights has {} values for {} --data sources",
                w.len(),
                self.data.len()
            ),
        };
        if weights.iter().any(|w| !(w.is_finite() && *w >= 0.0))
            || weights.iter().all(|w| *w == 0.0)
        {
            bail!("--weights {weights:?}: each must be >= 0 and one positive");
        }
        Ok(self
            .data
            .iter()
            .zip(weights)
            .map(|(path, weight)| SourceSpec {
                path: path.clone(),
                weight,
                folds: self.folds.clone(),
                where_: where_.clone(),
                include: Vec::new(),
                exclude: Vec::new(),
            })
            .collect())
    }

    /// Features of every source: shard folders read as they are (checksums and front end
    /// checked), audio listed, decoded once and cached (with a progress bar; unreadable files are
    /// reported and skipped).
    pub fn load(&self, fe: &FrontendConfig, config: &[SourceSpec]) -> anyhow::Result<Loaded> {
        let specs = self.specs(config)?;
        // Without --weights, --data sources form one pool (as before per-source weights).
        let pooled = !self.data.is_empty() && self.weights.is_none();
        let mut clips = Vec::new();
        let mut source_of = Vec::new();
        let mut skipped_total = 0;
        let cache = self.cache.clone().unwrap_or_else(default_cache);
        for (k, spec) in specs.iter().enumerate() {
            let id = if pooled { 0 } else { k };
            let d = &spec.path;
            if is_shard_dir(d) {
                if !(spec.include.is_empty() && spec.exclude.is_empty()) {
                    bail!(
                        "{}: a shard folder is read whole; `include` / `exclude` choose subfolders of an audio folder",
                        d.display()
                    );
                }
                let got = read_shards(d, fe)
                    .with_context(|| format!("reading shards {}", d.display()))?;
                source_of.extend(std::iter::repeat_n(id, got.len()));
                clips.extend(got);
                continue;
            }
            let where_ = match &spec.where_ {
                Some(w) => Some(parse_where(w).map_err(anyhow::Error::msg)?),
                None => None,
            };
            let files = list_audio_selected(
                d,
                spec.folds.as_deref(),
                where_.as_ref().map(|(c, v)| (c.as_str(), v.as_str())),
                Subfolders {
                    include: &spec.include,
                    exclude: &spec.exclude,
                },
            )
            .with_context(|| format!("listing {}", d.display()))?;
            let bar = crate::progress_bar(files.len() as u64).with_style(
                ProgressStyle::with_template("features {bar:30} {pos}/{len} files {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            let (got, skipped) =
                load_features(&files, fe, Some(&cache), |i| bar.set_position(i as u64))?;
            bar.finish_and_clear();
            for (p, why) in &skipped.0 {
                eprintln!("skipped {}: {why}", p.display());
            }
            skipped_total += skipped.0.len();
            source_of.extend(std::iter::repeat_n(id, got.len()));
            clips.extend(got);
        }
        if clips.is_empty() {
            bail!(
                "no usable audio in {:?}",
                specs.iter().map(|s| &s.path).collect::<Vec<_>>()
            );
        }
        if !crate::quiet() {
            eprintln!("features cached in {}", cache.display());
        }
        let weights = if pooled {
            vec![1.0]
        } else {
            specs.iter().map(|s| s.weight).collect()
        };
        Ok(Loaded {
            clips,
            source_of,
            weights,
            skipped: skipped_total,
        })
    }
}

fn parse_precision(s: &str) -> Result<Precision, String> {
    match s {
        "f32" => Ok(Precision::F32),
        "bf16" => Ok(Precision::Bf16),
        other => Err(format!("`{other}`: use f32 or bf16")),
    }
}

/// The device `name`; for CUDA, GPU `ordinal` (a rank's `LOCAL_RANK`).
fn device(name: &str, ordinal: usize) -> anyhow::Result<Device> {
    Ok(match name {
        "cpu" => Device::Cpu,
        "cuda" => Device::new_cuda(ordinal).with_context(|| {
            format!("opening CUDA device {ordinal} (built with --features cuda?)")
        })?,
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

/// `[optim] steps` of a run bounded by `--minutes` alone.
const UNBOUNDED_STEPS: u64 = 1_000_000_000;

/// The process group of a multi-GPU launch (`WORLD_SIZE` > 1).
#[cfg(feature = "nccl")]
fn join_group(
    launch: &LaunchEnv,
    dev: &Device,
    args: &Args,
) -> anyhow::Result<Box<dyn Collective>> {
    use audio_jepa_training::distributed::nccl::{NcclGroup, Rendezvous};
    if !matches!(dev, Device::Cuda(_)) {
        bail!(
            "WORLD_SIZE={}: data-parallel ranks run on CUDA (--compute cuda)",
            launch.world_size
        );
    }
    let how = match &args.rendezvous_file {
        Some(p) => Rendezvous::File(p),
        None => Rendezvous::Tcp,
    };
    let group = NcclGroup::join(launch, dev, how).with_context(|| {
        format!(
            "rank {} of {}: joining the NCCL group",
            launch.rank, launch.world_size
        )
    })?;
    Ok(Box::new(group))
}

#[cfg(not(feature = "nccl"))]
fn join_group(launch: &LaunchEnv, _: &Device, _: &Args) -> anyhow::Result<Box<dyn Collective>> {
    bail!(
        "WORLD_SIZE={} (rank {}): this ajepa-train was built without NCCL; multi-GPU pretraining needs a build with `scripts/build-cuda.sh` (features cuda,nccl), one process per GPU (scripts/launch.sh)",
        launch.world_size,
        launch.rank
    )
}

/// `--init`: a run's folder (its checkpoint), `default` (the built-in encoder) or an encoder
/// file. Says what it loaded when `loud` (rank 0, without -q).
fn init_weights(t: &mut Trainer, init: &Path, loud: bool) -> anyhow::Result<()> {
    let say = |what: String| {
        if loud {
            eprintln!("{what}");
        }
    };
    if init.is_dir() {
        t.init_from(init)?;
        say(format!(
            "starting from the weights of the run {}",
            init.display()
        ));
        return Ok(());
    }
    let encoder = if init.as_os_str() == "default" {
        audio_jepa::default_model::encoder().context("the built-in encoder")?
    } else if init.is_file() {
        audio_jepa::model::checkpoint::load_encoder(init, &Device::Cpu)?
    } else {
        bail!("no such run folder or encoder file (or `default` for the built-in encoder)");
    };
    t.init_from_encoder(&encoder, init)?;
    say(format!(
        "starting from the encoder {} (context and EMA target; the predictor starts fresh: keep a learning-rate warm-up)",
        init.display()
    ));
    Ok(())
}

/// The folders `create_dir_all(out)` is about to make, deepest first: `out` and each parent that
/// does not exist yet.
fn missing_dirs(out: &Path) -> Vec<PathBuf> {
    out.ancestors()
        .filter(|p| !p.as_os_str().is_empty())
        .take_while(|p| !p.exists())
        .map(Path::to_path_buf)
        .collect()
}

/// Removes the folders it holds when dropped (deepest first), each only if still empty
/// (`remove_dir` refuses a folder with anything in it, so nothing a run wrote is ever deleted,
/// and a parent stays once anything else was put in it).
struct EmptyDirGuard(Vec<PathBuf>);

impl Drop for EmptyDirGuard {
    fn drop(&mut self) {
        for dir in self.0.drain(..) {
            if std::fs::remove_dir(&dir).is_err() {
                break;
            }
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let launch = LaunchEnv::from_env()?;
    let is_main = launch.rank == 0;
    let dev = device(&args.device, launch.local_rank)?;
    // Rank 0 alone tells the user what happens; the others would say the same.
    macro_rules! say {
        ($($t:tt)*) => { if is_main && !crate::quiet() { eprintln!($($t)*) } };
    }
    let group = if launch.world_size > 1 {
        Some(join_group(&launch, &dev, &args)?)
    } else {
        None
    };
    // A run that fails before it writes anything (a bad config, data that is not there) must not
    // leave an empty --out folder behind: removed again on the way out while still empty.
    let mut new_out = EmptyDirGuard(Vec::new());
    if is_main {
        new_out.0 = missing_dirs(&args.out);
        std::fs::create_dir_all(&args.out)
            .with_context(|| format!("creating {}", args.out.display()))?;
        for (path, bytes) in run_dir::remove_stale_temporaries(&args.out)
            .with_context(|| format!("cleaning {}", args.out.display()))?
        {
            eprintln!(
                "removed {} ({:.1} MB), left by a write that was killed",
                path.display(),
                bytes as f64 / 1e6
            );
        }
    }
    let has_ckpt = args.out.join(CHECKPOINT).is_file();
    let mut trainer = if args.resume {
        if !has_ckpt {
            bail!("--resume: {} holds no {CHECKPOINT}", args.out.display());
        }
        let t = Trainer::resume(&args.out, &dev)?;
        say!("resuming {} at step {}", args.out.display(), t.step);
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
        if let Some(m) = args.minutes {
            cfg.optim.minutes = Some(m);
            // The clock ends the run; steps only bound it.
            cfg.optim.steps = UNBOUNDED_STEPS;
        }
        if let Some(s) = args.steps {
            cfg.optim.steps = s;
        }
        if let Some(init) = &args.init {
            cfg.run.init = Some(init.display().to_string());
        }
        cfg.validate()?;
        let mut t = Trainer::new(cfg, &dev)?;
        if let Some(init) = &args.init {
            init_weights(&mut t, init, is_main && !crate::quiet())
                .with_context(|| format!("--init {}", init.display()))?;
        }
        t
    };
    if args.resume {
        if let Some(m) = args.minutes {
            trainer.cfg.optim.minutes = Some(m);
        }
        if let Some(s) = args.steps {
            trainer.cfg.optim.steps = s;
        }
        trainer.cfg.validate()?;
    }
    if let Some(p) = args.precision {
        trainer.set_precision(p)?;
    }
    if trainer.cpu_bf16_products() {
        say!("bf16 products on this CPU's AVX-512 BF16 (sums, norms, softmax, optimiser in f32)");
    } else if trainer.cfg.optim.precision == Precision::Bf16 && matches!(dev, Device::Cpu) {
        let why = if audio_jepa::model::fused::bf16_available() {
            "AJEPA_FUSED=0 turned the fused ops off"
        } else {
            "this CPU lacks AVX-512 BF16"
        };
        say!("note: precision bf16: {why}, so the steps run in f32");
    }
    if let Some(group) = group {
        // Every rank now holds rank 0's weights, and averages its gradients with the others.
        trainer.join(group)?;
        say!(
            "{} data-parallel ranks over NCCL: {} crops per step in all",
            launch.world_size,
            launch.world_size * trainer.cfg.optim.batch_size
        );
    }
    let world = launch.world_size;
    let cfg = Arc::new(trainer.cfg.clone());

    // Rank 0 decodes and caches the features first; the other ranks then read its cache
    // instead of decoding the same files at once (the barrier pairs with the one below).
    if world > 1 && !is_main {
        trainer.collective().barrier()?;
    }
    let loaded = args.sources.load(&cfg.frontend, &cfg.data.sources)?;
    if world > 1 && is_main {
        trainer.collective().barrier()?;
    }
    let (clips, skipped) = (loaded.clips, loaded.skipped);
    let frames: usize = clips.iter().map(|c| c.n_frames).sum();
    say!(
        "{} clips ({:.2} h of audio), {skipped} skipped",
        clips.len(),
        frames as f64 * cfg.frontend.frame_shift_ms / 3.6e6,
    );
    let enc = &trainer.jepa.enc_cfg;
    say!(
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

    let corpus = Corpus::with_sources(clips, loaded.source_of, &loaded.weights, &cfg);
    say!(
        "{:.2} h of sound{}; crops drawn by {:?}",
        corpus.active_frames() as f64 * cfg.frontend.frame_shift_ms / 3.6e6,
        if cfg.data.trim_silence {
            " after trimming digital silence"
        } else {
            " (digital silence kept: [data] trim_silence = false)"
        },
        cfg.data.sampling
    );
    let (fixed, n_fixed) = fixed_batch(&corpus, &cfg, cfg.run.rank_clips);
    let n_patches = fixed.len() / n_fixed / enc.patch_len();
    let fixed = Tensor::from_vec(fixed, (n_fixed, n_patches, enc.patch_len()), &dev)?;

    let loader = Loader::start_rank(
        Arc::new(corpus),
        cfg.clone(),
        trainer.step,
        cfg.progress(trainer.step, trainer.elapsed_s),
        launch.rank,
        world,
    );
    let log_path = args.out.join("log.jsonl");
    if args.resume && is_main {
        // The steps after the checkpoint are done again; keep each step once in the log.
        let dropped = run_dir::truncate_log(&log_path, trainer.step)
            .with_context(|| format!("trimming {}", log_path.display()))?;
        if dropped > 0 {
            eprintln!(
                "log.jsonl: dropped {dropped} records after step {} (redone from the checkpoint)",
                trainer.step
            );
        }
    }
    // Rank 0 alone logs, plots and saves; the other ranks' log goes nowhere.
    let mut log: Box<dyn Write> = if is_main {
        Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .with_context(|| format!("opening {}", log_path.display()))?,
        )
    } else {
        Box::new(std::io::sink())
    };
    // The log now exists: the folder is the run's, whatever happens next.
    new_out.0.clear();
    let (mut loss_pts, mut rank_t, mut rank_p) = read_curves(&log_path);

    let total = cfg.optim.steps;
    let by_time = cfg.optim.minutes.is_some();
    // By time, the bar counts per mille of the horizon.
    let bar_len = if by_time { 1000 } else { total };
    let bar = if is_main {
        crate::progress_bar(bar_len)
    } else {
        ProgressBar::hidden()
    }
    .with_position(if by_time {
        (cfg.progress(trainer.step, trainer.elapsed_s) * 1000.0) as u64
    } else {
        trainer.step
    })
    .with_style(
        ProgressStyle::with_template(if by_time {
            "{bar:30} {percent}% of the horizon, step {msg} [{elapsed}]"
        } else {
            "{bar:30} {pos}/{len} {msg} [{elapsed} < {eta}]"
        })
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let elapsed_before = trainer.elapsed_s;
    let mut window = (Instant::now(), 0usize);
    let mut loss_acc = (0.0, 0usize);
    let (mut ranked_at, mut saved_at) = (None, None);
    while trainer.step < total {
        let step = trainer.step;
        trainer.elapsed_s = elapsed_before + started.elapsed().as_secs_f64();
        let mut progress = cfg.progress(step, trainer.elapsed_s);
        if by_time && world > 1 {
            // Each rank's clock differs a little: all follow rank 0's, so that their schedules
            // (and their decision to stop) agree.
            let mine = Tensor::new(&[progress as f32], &dev)?;
            progress = trainer.collective().broadcast(&mine, 0)?.to_vec1::<f32>()?[0] as f64;
        }
        if by_time && progress >= 1.0 {
            break;
        }
        loader.set_progress(progress);
        let batch = loader.get(step).context("the data loader stopped")?;
        let stats = match trainer.train_step_at(&batch, progress) {
            Ok(s) => s,
            Err(e) => {
                bar.abandon();
                let _ = writeln!(
                    log,
                    "{}",
                    serde_json::json!({"step": step, "event": "stopped", "reason": e.to_string()})
                );
                let advice = stop_advice(
                    &args.out,
                    args.out.join(CHECKPOINT).is_file(),
                    cfg.run.checkpoint_every,
                    matches!(
                        e,
                        TrainError::NonFinite { .. } | TrainError::Exploding { .. }
                    ),
                );
                return Err(e).context(advice);
            }
        };
        window.1 += batch.batch * world;
        loss_acc.0 += stats.loss;
        loss_acc.1 += 1;
        let done = trainer.step;
        if done % cfg.run.log_every == 0 || done == total {
            let secs = window.0.elapsed().as_secs_f64();
            let sps = window.1 as f64 / secs.max(1e-9);
            let mean_loss = loss_acc.0 / loss_acc.1.max(1) as f64;
            let prefix = if by_time {
                format!("{done} ")
            } else {
                String::new()
            };
            bar.set_message(format!(
                "{prefix}loss {mean_loss:.4} lr {:.2e} ema {:.4} p_tf {:.2} {sps:.1} samples/s",
                stats.lr, stats.momentum, stats.tf_prob
            ));
            writeln!(
                log,
                "{}",
                serde_json::json!({
                    "step": done, "loss": mean_loss, "lr": stats.lr, "wd": stats.wd,
                    "momentum": stats.momentum, "tf_prob": stats.tf_prob, "mask": stats.mask,
                    "grad_norm": stats.grad_norm, "context_len": stats.context_len,
                    "progress": stats.progress,
                    "crops": done * (world * cfg.optim.batch_size) as u64,
                    "samples_per_s": sps, "elapsed_s": started.elapsed().as_secs_f64(),
                })
            )?;
            if is_main {
                // -v: the same record as a plain line, for logs of unattended runs (the bar
                // draws only on a terminal).
                bar.suspend(|| {
                    tracing::info!(
                        "step {done}: loss {mean_loss:.4} lr {:.2e} ema {:.4} p_tf {:.2} grad norm {:.3} {sps:.1} samples/s, {:.1}% of the schedule",
                        stats.lr,
                        stats.momentum,
                        stats.tf_prob,
                        stats.grad_norm,
                        stats.progress * 100.0
                    )
                });
            }
            loss_pts.push((done as f64, mean_loss));
            window = (Instant::now(), 0);
            loss_acc = (0.0, 0);
        }
        bar.set_position(if by_time {
            (stats.progress * 1000.0) as u64
        } else {
            done
        });
        if is_main && cfg.run.rank_every > 0 && done % cfg.run.rank_every == 0 {
            record_rank(
                &trainer,
                &fixed,
                &cfg,
                &mut log,
                &mut rank_t,
                &mut rank_p,
                &bar,
            )?;
            ranked_at = Some(done);
        }
        if done % cfg.run.checkpoint_every == 0 {
            trainer.elapsed_s = elapsed_before + started.elapsed().as_secs_f64();
            trainer.save(&args.out)?;
            saved_at = Some(done);
            if is_main {
                bar.suspend(|| {
                    tracing::info!("step {done}: checkpoint saved in {}", args.out.display())
                });
            }
            let x_max = if by_time { done } else { total };
            if is_main {
                let _ = write_curves(
                    &args.out.join("curves.png"),
                    &loss_pts,
                    &rank_t,
                    &rank_p,
                    x_max as f64,
                );
            }
        }
    }
    // The end of the schedule (or of the clock): the final state, unless the periodic rank
    // and checkpoint above already recorded this very step.
    let done = trainer.step;
    if is_main && cfg.run.rank_every > 0 && ranked_at != Some(done) {
        record_rank(
            &trainer,
            &fixed,
            &cfg,
            &mut log,
            &mut rank_t,
            &mut rank_p,
            &bar,
        )?;
    }
    if saved_at != Some(done) {
        trainer.elapsed_s = elapsed_before + started.elapsed().as_secs_f64();
        trainer.save(&args.out)?;
        if is_main {
            tracing::info!("step {done}: checkpoint saved in {}", args.out.display());
        }
    }
    if is_main {
        let _ = write_curves(
            &args.out.join("curves.png"),
            &loss_pts,
            &rank_t,
            &rank_p,
            done as f64,
        );
    }
    bar.finish();
    say!(
        "done: {} steps ({} crops) in {:.1} min of training; encoder {} (the {:?} encoder; both are saved beside it)",
        trainer.step,
        trainer.step * (world * cfg.optim.batch_size) as u64,
        trainer.elapsed_s / 60.0,
        args.out.join(ENCODER).display(),
        cfg.run.export,
    );
    Ok(())
}

/// The target encoder's collapse statistics on the fixed batch: logged, kept for the curves,
/// and a warning when the embeddings collapse.
#[allow(clippy::too_many_arguments)]
fn record_rank(
    trainer: &Trainer,
    fixed: &Tensor,
    cfg: &TrainConfig,
    log: &mut dyn Write,
    rank_t: &mut Vec<(f64, f64)>,
    rank_p: &mut Vec<(f64, f64)>,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let done = trainer.step;
    let c = trainer.collapse(fixed)?;
    writeln!(
        log,
        "{}",
        serde_json::json!({"step": done, "rank_tokens": c.rank_tokens, "rank_pooled": c.rank_pooled, "spread": c.spread})
    )?;
    rank_t.push((done as f64, c.rank_tokens));
    rank_p.push((done as f64, c.rank_pooled));
    bar.suspend(|| {
        tracing::info!(
            "step {done}: effective rank of the target's tokens {:.1}, of its pooled clips {:.1}",
            c.rank_tokens,
            c.rank_pooled
        )
    });
    if c.rank_tokens < cfg.run.rank_warn || c.spread < 1e-3 {
        bar.println(format!(
            "warning: step {done}: the target embeddings are collapsing (effective rank {:.2}, spread {:.2e})",
            c.rank_tokens, c.spread
        ));
    }
    Ok(())
}

/// What to do after a run stopped on an error: `--resume` only where a checkpoint exists (a
/// run that diverged before its first checkpoint has nothing to resume, issue 15), and for a
/// diverged loss, a lower learning rate, since resuming replays the same steps.
fn stop_advice(out: &Path, has_checkpoint: bool, checkpoint_every: u64, diverged: bool) -> String {
    let run = out.display();
    let lower_lr = if diverged {
        "; if it diverges again at the same step, lower [optim] lr in its config.toml"
    } else {
        ""
    };
    if has_checkpoint {
        format!("run {run} stopped; continue it from its last checkpoint with --resume{lower_lr}")
    } else if diverged {
        format!(
            "run {run} stopped before its first checkpoint (every {checkpoint_every} steps), so there is nothing to resume; start it again in a new --out with a lower [optim] lr"
        )
    } else {
        format!(
            "run {run} stopped before its first checkpoint (every {checkpoint_every} steps), so there is nothing to resume; start it again in a new --out"
        )
    }
}

/// Redraws `RUN/curves.png` from `RUN/log.jsonl` (`ajepa-train curves`): for runs drawn by an
/// older version, or while another process trains (the log is only read).
pub fn redraw_curves(run: &Path) -> anyhow::Result<PathBuf> {
    let log = run.join("log.jsonl");
    if !log.is_file() {
        bail!(
            "{} has no log.jsonl (is it a pretraining run's folder?)",
            run.display()
        );
    }
    let (loss, tokens, pooled) = read_curves(&log);
    let last = loss.iter().map(|p| p.0).fold(0f64, f64::max);
    let out = run.join("curves.png");
    write_curves(&out, &loss, &tokens, &pooled, last)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(out)
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

#[cfg(test)]
mod tests {
    use super::stop_advice;
    use std::path::Path;

    #[test]
    fn a_stop_suggests_resume_only_when_there_is_a_checkpoint() {
        let out = Path::new("runs/x");
        let with = stop_advice(out, true, 100, true);
        assert!(
            with.contains("--resume") && with.contains("lower [optim] lr"),
            "{with}"
        );
        let without = stop_advice(out, false, 100, true);
        assert!(!without.contains("with --resume"), "{without}");
        assert!(without.contains("nothing to resume") && without.contains("every 100 steps"));
        let killed = stop_advice(out, false, 100, false);
        assert!(!killed.contains("lr"), "{killed}");
    }
}
