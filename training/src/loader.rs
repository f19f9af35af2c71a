//! Training batches: random crops of cached features, gain jitter, normalisation, patches and
//! masks, made by loader threads ahead of the training step.
//!
//! Batch `s` is a pure function of `(seed, s)`: its random numbers come from ChaCha8 stream `s`
//! of the run's seed. Thread `w` of `W` makes the batches `s` with `s % W == w` into its own
//! bounded channel, and the step reads the channels in turn, so the order (and a resumed run)
//! is exactly reproducible whatever the threads' timing, and memory is bounded by the prefetch.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use audio_jepa::frontend::patches::normalize;
use crossbeam_channel::{bounded, Receiver};
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::{Sampling, TrainConfig};
use crate::features::ClipFeatures;
use crate::masks::{sample_with_probability, BatchMasks};

pub struct Batch {
    /// The run's batch index: the step of a single process, `step * world + rank` of a rank.
    pub step: u64,
    pub batch: usize,
    pub n_patches: usize,
    /// `[batch][n_patches][patch_len]`, normalised log-mel patches.
    pub patches: Vec<f32>,
    pub masks: BatchMasks,
    /// Further masked views of the same crops (`[objective] views - 1` of them).
    pub extra_views: Vec<BatchMasks>,
    /// The context encoder's input when it differs from `patches` (`[data] mix_prob`).
    pub student: Option<Vec<f32>>,
}

/// The clips with what sampling needs: the span of each clip that is not digital silence, the
/// source each clip came from, and per source the weight and the cumulative span lengths (for
/// drawing in proportion to duration).
pub struct Corpus {
    pub clips: Vec<ClipFeatures>,
    /// `[first, end)` frames of each clip above the log floor (empty for an all-silent clip).
    pub spans: Vec<(usize, usize)>,
    sources: Vec<SourceClips>,
    /// Cumulative source weights (the last is the total).
    source_cum: Vec<f64>,
}

/// The clips of one source.
struct SourceClips {
    /// Indices into `Corpus::clips`.
    clips: Vec<usize>,
    /// Cumulative active frames of `clips`.
    cum: Vec<u64>,
}

impl Corpus {
    /// One source: every clip is drawn from the same pool.
    pub fn new(clips: Vec<ClipFeatures>, cfg: &TrainConfig) -> Self {
        let n = clips.len();
        Self::with_sources(clips, vec![0; n], &[1.0], cfg)
    }

    /// Clips of several sources: `source_of[i]` is clip `i`'s source, `weights[s]` the share of
    /// crops drawn from source `s` (normalised here; a source without clips is never drawn).
    pub fn with_sources(
        clips: Vec<ClipFeatures>,
        source_of: Vec<usize>,
        weights: &[f64],
        cfg: &TrainConfig,
    ) -> Self {
        let n_mels = cfg.frontend.n_mels;
        // A frame of digital silence has every bin at the floor (the front end clamps there).
        let floor = cfg.frontend.log_floor.ln() + 1e-3;
        let spans: Vec<(usize, usize)> = clips
            .iter()
            .map(|c| {
                let active = |t: &usize| {
                    c.data[t * n_mels..(t + 1) * n_mels]
                        .iter()
                        .any(|&v| v > floor)
                };
                match (0..c.n_frames).find(active) {
                    Some(a) => (a, (0..c.n_frames).rev().find(active).map_or(a, |b| b + 1)),
                    None => (0, 0),
                }
            })
            .collect();
        let mut sources: Vec<SourceClips> = (0..weights.len())
            .map(|_| SourceClips {
                clips: Vec::new(),
                cum: Vec::new(),
            })
            .collect();
        for (i, &s) in source_of.iter().enumerate() {
            if let Some(src) = sources.get_mut(s) {
                let total = src.cum.last().copied().unwrap_or(0);
                src.clips.push(i);
                src.cum.push(total + (spans[i].1 - spans[i].0) as u64);
            }
        }
        let mut total = 0.0;
        let source_cum = sources
            .iter()
            .zip(weights)
            .map(|(src, &w)| {
                if !src.clips.is_empty() && w.is_finite() && w > 0.0 {
                    total += w;
                }
                total
            })
            .collect();
        Self {
            clips,
            spans,
            sources,
            source_cum,
        }
    }

    pub fn len(&self) -> usize {
        self.clips.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clips.is_empty()
    }

    /// Frames of sound over all clips.
    pub fn active_frames(&self) -> u64 {
        self.sources
            .iter()
            .map(|s| s.cum.last().copied().unwrap_or(0))
            .sum()
    }

    /// A source drawn by weight (the first non-empty one if no weight is positive).
    fn draw_source(&self, rng: &mut impl Rng) -> &SourceClips {
        let total = self.source_cum.last().copied().unwrap_or(0.0);
        if total > 0.0 {
            let x = rng.random_range(0.0..total);
            let k = self.source_cum.partition_point(|&c| c <= x);
            if let Some(s) = self.sources.get(k).filter(|s| !s.clips.is_empty()) {
                return s;
            }
        }
        self.sources
            .iter()
            .find(|s| !s.clips.is_empty())
            .unwrap_or(&self.sources[0])
    }

    /// A clip index: a source by weight, then a clip of it in proportion to its span.
    fn draw(&self, rng: &mut impl Rng) -> usize {
        let src = self.draw_source(rng);
        let total = src.cum.last().copied().unwrap_or(0);
        if total == 0 {
            return src.clips[rng.random_range(0..src.clips.len())];
        }
        let x = rng.random_range(0..total);
        src.clips[src.cum.partition_point(|&c| c <= x)]
    }

    /// The frames tile sampling crops from: the sound (`spans`), or with `[data] trim_silence =
    /// false` the whole clip, digital silence included, as the PyTorch reference crops ESC-50.
    fn tile_span(&self, clip: usize, cfg: &TrainConfig) -> (usize, usize) {
        if cfg.data.trim_silence {
            self.spans[clip]
        } else {
            (0, self.clips[clip].n_frames)
        }
    }

    /// A clip index: a source by weight, then any of its clips, equally likely.
    fn draw_uniform(&self, rng: &mut impl Rng) -> usize {
        let src = self.draw_source(rng);
        src.clips[rng.random_range(0..src.clips.len())]
    }
}

/// The random stream of step `step`.
pub fn step_rng(seed: u64, step: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(step);
    rng
}

/// Copies `frames` (`[crop][n_mels]`) into patches, in `audio_jepa::frontend::patches` layout:
/// time-major patch index, `[time][frequency]` inside a patch.
pub fn patchify_into(frames: &[f32], n_mels: usize, patch: usize, out: &mut Vec<f32>) {
    let n_time = frames.len() / n_mels / patch;
    for col in 0..n_time {
        for row in 0..n_mels / patch {
            for dt in 0..patch {
                let f = &frames[(col * patch + dt) * n_mels..][..n_mels];
                out.extend_from_slice(&f[row * patch..(row + 1) * patch]);
            }
        }
    }
}

/// One crop of `clip`: `crop` frames from `start` (padded with the log floor, i.e. silence,
/// past the end of a short clip), shifted by `gain_db`, normalised.
pub fn crop_frames(
    clip: &ClipFeatures,
    cfg: &TrainConfig,
    start: usize,
    gain_db: f64,
    out: &mut Vec<f32>,
) {
    let n_mels = cfg.frontend.n_mels;
    let floor = cfg.frontend.log_floor.ln();
    out.clear();
    for t in start..start + cfg.data.crop_frames {
        if t < clip.n_frames {
            out.extend_from_slice(&clip.data[t * n_mels..(t + 1) * n_mels]);
        } else {
            out.extend(std::iter::repeat_n(floor, n_mels));
        }
    }
    finish_crop(cfg, gain_db, out);
}

/// A crop that starts in clip `first` at `start` and, where that clip's sound ends, continues
/// with the sound of the clips `next()` names, end to end, until `crop_frames` are filled.
fn concat_crop(
    corpus: &Corpus,
    cfg: &TrainConfig,
    first: usize,
    start: usize,
    mut next: impl FnMut() -> usize,
    gain_db: f64,
    out: &mut Vec<f32>,
) {
    let n_mels = cfg.frontend.n_mels;
    let crop = cfg.data.crop_frames;
    out.clear();
    let (mut clip, mut t) = (first, start);
    // Bounded: an all-silent corpus could otherwise never fill the crop.
    for _ in 0..crop + 8 {
        let (_, end) = corpus.spans[clip];
        let take = end.saturating_sub(t).min(crop - out.len() / n_mels);
        let c = &corpus.clips[clip];
        out.extend_from_slice(&c.data[t * n_mels..(t + take) * n_mels]);
        if out.len() == crop * n_mels {
            break;
        }
        clip = next();
        t = corpus.spans[clip].0;
    }
    let floor = cfg.frontend.log_floor.ln();
    out.resize(crop * n_mels, floor);
    finish_crop(cfg, gain_db, out);
}

/// A crop of clip `clip` alone: `crop` frames of its sound (digital silence at either end
/// trimmed) from `start`; a clip with less sound than a crop is repeated end to end from
/// `start`, as the PyTorch reference tiles the spoken digits. Never another clip's sound.
fn tile_crop(
    corpus: &Corpus,
    cfg: &TrainConfig,
    clip: usize,
    start: usize,
    gain_db: f64,
    out: &mut Vec<f32>,
) {
    let n_mels = cfg.frontend.n_mels;
    let crop = cfg.data.crop_frames;
    let c = &corpus.clips[clip];
    let (a, e) = corpus.tile_span(clip, cfg);
    out.clear();
    if e > a {
        let mut t = start.clamp(a, e - 1);
        while out.len() < crop * n_mels {
            let take = (e - t).min(crop - out.len() / n_mels);
            out.extend_from_slice(&c.data[t * n_mels..(t + take) * n_mels]);
            t = a;
        }
    }
    let floor = cfg.frontend.log_floor.ln();
    out.resize(crop * n_mels, floor);
    finish_crop(cfg, gain_db, out);
}

/// Gain and normalisation of a crop of raw log-mel frames.
fn finish_crop(cfg: &TrainConfig, gain_db: f64, out: &mut [f32]) {
    let floor = cfg.frontend.log_floor.ln();
    // A gain of g dB scales the power by 10^(g/10), which adds g ln(10) / 10 to every log energy
    // (the front end is linear up to the power spectrum); energies at the floor stay there.
    let shift = (gain_db * std::f64::consts::LN_10 / 10.0) as f32;
    if shift != 0.0 {
        for v in out.iter_mut().filter(|v| **v > floor) {
            *v = (*v + shift).max(floor);
        }
    }
    normalize(out, &cfg.frontend);
}

fn patch_size(cfg: &TrainConfig) -> usize {
    // The config was validated, so the model section resolves.
    cfg.model.encoder_config().map_or(16, |c| c.patch_size)
}

/// Makes batch `step` (pure in `(cfg.run.seed, step)`), its masks at the step's progress.
pub fn make_batch(corpus: &Corpus, cfg: &TrainConfig, step: u64) -> Batch {
    make_batch_at(corpus, cfg, step, cfg.progress(step, 0.0))
}

/// Makes batch `step` with the mask curriculum at `progress` (a wall-clock run's progress is
/// known only while it runs).
pub fn make_batch_at(corpus: &Corpus, cfg: &TrainConfig, step: u64, progress: f64) -> Batch {
    let clips = &corpus.clips;
    let mut rng = step_rng(cfg.run.seed, step);
    let b = cfg.optim.batch_size;
    let patch = patch_size(cfg);
    let n_freq = cfg.frontend.n_mels / patch;
    let n_time = cfg.data.crop_frames / patch;
    let mut patches = Vec::with_capacity(b * n_freq * n_time * patch * patch);
    let mut frames = Vec::with_capacity(cfg.data.crop_frames * cfg.frontend.n_mels);
    let crop = cfg.data.crop_frames;
    for _ in 0..b {
        let j = cfg.data.gain_jitter_db;
        match cfg.data.sampling {
            Sampling::Tile => {
                let k = corpus.draw_uniform(&mut rng);
                let (a, e) = corpus.tile_span(k, cfg);
                let start = if e - a > crop {
                    rng.random_range(a..=e - crop)
                } else if e > a {
                    rng.random_range(a..e)
                } else {
                    a
                };
                let gain = if j > 0.0 {
                    rng.random_range(-j..=j)
                } else {
                    0.0
                };
                tile_crop(corpus, cfg, k, start, gain, &mut frames);
            }
            Sampling::Clip => {
                let clip = &clips[corpus.draw_uniform(&mut rng)];
                let start = if clip.n_frames > crop {
                    rng.random_range(0..=clip.n_frames - crop)
                } else {
                    0
                };
                let gain = if j > 0.0 {
                    rng.random_range(-j..=j)
                } else {
                    0.0
                };
                crop_frames(clip, cfg, start, gain, &mut frames);
            }
            Sampling::Duration => {
                let first = corpus.draw(&mut rng);
                let (a, e) = corpus.spans[first];
                let start = if e - a > crop {
                    rng.random_range(a..=e - crop)
                } else {
                    a
                };
                let gain = if j > 0.0 {
                    rng.random_range(-j..=j)
                } else {
                    0.0
                };
                let mut picks = Vec::new();
                if e - a < crop {
                    // Enough further clips to fill any crop (each has at least one frame).
                    while picks.len() < crop {
                        picks.push(corpus.draw(&mut rng));
                    }
                }
                let mut it = picks.into_iter();
                concat_crop(
                    corpus,
                    cfg,
                    first,
                    start,
                    || it.next().unwrap_or(first),
                    gain,
                    &mut frames,
                );
            }
        }
        patchify_into(&frames, cfg.frontend.n_mels, patch, &mut patches);
    }
    let masks = sample_with_probability(
        &cfg.masks,
        cfg.masks.tf_probability_at(progress),
        n_freq,
        n_time,
        b,
        &mut rng,
    );
    // Drawn after the first view, so that a run with one view and no mixing sees the same
    // stream as before these options existed.
    let extra_views = (1..cfg.objective.views)
        .map(|_| {
            sample_with_probability(
                &cfg.masks,
                cfg.masks.tf_probability_at(progress),
                n_freq,
                n_time,
                b,
                &mut rng,
            )
        })
        .collect();
    let student = mix_student(&patches, b, cfg, &mut rng);
    Batch {
        step,
        batch: b,
        n_patches: n_freq * n_time,
        patches,
        masks,
        extra_views,
        student,
    }
}

/// The context encoder's input with `[data] mix_prob` of the crops mixed with another crop of
/// the batch (M2D-X's background mixing, BYOL-A's log-mixup-exp): in the power domain,
/// `x' = ln(e^x + a e^y)` on natural-log mel energies, `a` a gain drawn from `mix_gain_db`. The
/// target encoder keeps the clean crop. `None` when nothing is mixed.
pub fn mix_student(
    patches: &[f32],
    b: usize,
    cfg: &TrainConfig,
    rng: &mut impl Rng,
) -> Option<Vec<f32>> {
    let d = &cfg.data;
    if d.mix_prob <= 0.0 || b < 2 {
        return None;
    }
    let per = patches.len() / b;
    // Undo `frontend::patches::normalize`: v = (x - mean) / (2 std).
    let (mean, scale) = (cfg.frontend.norm_mean, 2.0 * cfg.frontend.norm_std);
    let mut out = patches.to_vec();
    for i in 0..b {
        if rng.random::<f64>() >= d.mix_prob {
            continue;
        }
        let j = (i + rng.random_range(1..b)) % b;
        let (g0, g1) = d.mix_gain_db;
        let gain_db = if g1 > g0 {
            rng.random_range(g0..g1)
        } else {
            g0
        };
        // ln(a) for a power gain of `gain_db`.
        let ln_a = (gain_db / 10.0 * std::f64::consts::LN_10) as f32;
        let (x, y) = (
            &patches[i * per..(i + 1) * per],
            &patches[j * per..(j + 1) * per],
        );
        for ((o, &xv), &yv) in out[i * per..(i + 1) * per].iter_mut().zip(x).zip(y) {
            let lx = xv * scale + mean;
            let ly = yv * scale + mean + ln_a;
            let m = lx.max(ly);
            let mixed = m + ((lx - m).exp() + (ly - m).exp()).ln();
            *o = (mixed - mean) / scale;
        }
    }
    Some(out)
}

/// A fixed batch for the collapse watch: `n` clips spread over the dataset, centre crops, no
/// jitter. Returns `(patches, clips)`.
pub fn fixed_batch(corpus: &Corpus, cfg: &TrainConfig, n: usize) -> (Vec<f32>, usize) {
    let clips = &corpus.clips;
    let n = n.min(clips.len()).max(1);
    let mut frames = Vec::new();
    let mut patches = Vec::new();
    for i in 0..n {
        let k = i * clips.len() / n;
        match cfg.data.sampling {
            Sampling::Tile => {
                let (a, e) = corpus.tile_span(k, cfg);
                let start = a + (e - a).saturating_sub(cfg.data.crop_frames) / 2;
                tile_crop(corpus, cfg, k, start, 0.0, &mut frames);
            }
            Sampling::Clip => {
                let clip = &clips[k];
                let start = clip.n_frames.saturating_sub(cfg.data.crop_frames) / 2;
                crop_frames(clip, cfg, start, 0.0, &mut frames);
            }
            Sampling::Duration => {
                let (a, e) = corpus.spans[k];
                let start = a + (e - a).saturating_sub(cfg.data.crop_frames) / 2;
                let mut next = k;
                concat_crop(
                    corpus,
                    cfg,
                    k,
                    start,
                    || {
                        next = (next + 1) % clips.len();
                        next
                    },
                    0.0,
                    &mut frames,
                );
            }
        }
        patchify_into(&frames, cfg.frontend.n_mels, patch_size(cfg), &mut patches);
    }
    (patches, n)
}

/// Loader threads feeding bounded channels.
pub struct Loader {
    receivers: Vec<Receiver<Batch>>,
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    /// The run's progress (f64 bits) for a wall-clock horizon, set by the training loop.
    progress: Arc<AtomicU64>,
}

impl Loader {
    /// Starts loading batches `first..total`.
    pub fn start(clips: Arc<Corpus>, cfg: Arc<TrainConfig>, first: u64) -> Self {
        Self::start_at(clips, cfg, first, 0.0)
    }

    /// As [`Loader::start`], for a run already `progress` through a wall-clock horizon (a
    /// resumed run: the first batches' mask curriculum must not restart from zero).
    pub fn start_at(clips: Arc<Corpus>, cfg: Arc<TrainConfig>, first: u64, progress: f64) -> Self {
        Self::start_rank(clips, cfg, first, progress, 0, 1)
    }

    /// As [`Loader::start_at`], for rank `rank` of `world` data-parallel ranks: its step `s` gets
    /// the run's batch `s * world + rank` (`distributed::batch_index`), so the ranks together
    /// use every batch a single process would, each once.
    pub fn start_rank(
        clips: Arc<Corpus>,
        cfg: Arc<TrainConfig>,
        first: u64,
        progress: f64,
        rank: usize,
        world: usize,
    ) -> Self {
        let w = cfg.data.loader_threads.max(1) as u64;
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(AtomicU64::new(progress.to_bits()));
        let mut receivers = Vec::new();
        let mut threads = Vec::new();
        for k in 0..w {
            let (tx, rx) = bounded(cfg.data.prefetch.max(1));
            receivers.push(rx);
            let (clips, cfg, stop) = (clips.clone(), cfg.clone(), stop.clone());
            let progress = progress.clone();
            threads.push(std::thread::spawn(move || {
                // The first step this thread owns at or after `first`.
                let mut s = first + (k + w - first % w) % w;
                while s < cfg.optim.steps && !stop.load(Ordering::Relaxed) {
                    // By steps, the batch is a pure function of its step; by wall-clock time,
                    // its mask curriculum takes the progress the loop last reported.
                    let p = match cfg.optim.minutes {
                        Some(_) => f64::from_bits(progress.load(Ordering::Relaxed)),
                        None => cfg.progress(s, 0.0),
                    };
                    let index = crate::distributed::batch_index(s, rank, world);
                    if tx.send(make_batch_at(&clips, &cfg, index, p)).is_err() {
                        break;
                    }
                    s += w;
                }
            }));
        }
        Self {
            receivers,
            threads,
            stop,
            progress,
        }
    }

    /// Reports the run's progress (used by a wall-clock horizon's mask curriculum).
    pub fn set_progress(&self, p: f64) {
        self.progress.store(p.to_bits(), Ordering::Relaxed);
    }

    /// Batch `step` (blocks until its thread has made it); `None` past the end.
    pub fn get(&self, step: u64) -> Option<Batch> {
        let rx = &self.receivers[(step % self.receivers.len() as u64) as usize];
        rx.recv().ok()
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receivers wakes any thread blocked on a full channel.
        self.receivers.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
