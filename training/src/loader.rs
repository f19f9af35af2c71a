//! Training batches: random crops of cached features, gain jitter, normalisation, patches and
//! masks, made by loader threads ahead of the training step.
//!
//! Batch `s` is a pure function of `(seed, s)`: its random numbers come from ChaCha8 stream `s`
//! of the run's seed. Thread `w` of `W` makes the batches `s` with `s % W == w` into its own
//! bounded channel, and the step reads the channels in turn, so the order (and a resumed run)
//! is exactly reproducible whatever the threads' timing, and memory is bounded by the prefetch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use audio_jepa::frontend::patches::normalize;
use crossbeam_channel::{bounded, Receiver};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::{Sampling, TrainConfig};
use crate::features::ClipFeatures;
use crate::masks::{sample_for_step, BatchMasks};

pub struct Batch {
    pub step: u64,
    pub batch: usize,
    pub n_patches: usize,
    /// `[batch][n_patches][patch_len]`, normalised log-mel patches.
    pub patches: Vec<f32>,
    pub masks: BatchMasks,
}

/// The clips with what sampling needs: the span of each clip that is not digital silence, and
/// the cumulative span lengths for drawing in proportion to duration.
pub struct Corpus {
    pub clips: Vec<ClipFeatures>,
    /// `[first, end)` frames of each clip above the log floor (empty for an all-silent clip).
    pub spans: Vec<(usize, usize)>,
    cum: Vec<u64>,
}

impl Corpus {
    pub fn new(clips: Vec<ClipFeatures>, cfg: &TrainConfig) -> Self {
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
        let mut total = 0u64;
        let cum = spans
            .iter()
            .map(|(a, b)| {
                total += (b - a) as u64;
                total
            })
            .collect();
        Self { clips, spans, cum }
    }

    pub fn len(&self) -> usize {
        self.clips.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clips.is_empty()
    }

    /// Frames of sound over all clips.
    pub fn active_frames(&self) -> u64 {
        self.cum.last().copied().unwrap_or(0)
    }

    /// A clip index drawn in proportion to its span.
    fn draw(&self, rng: &mut impl Rng) -> usize {
        let total = self.active_frames();
        if total == 0 {
            return rng.gen_range(0..self.clips.len());
        }
        let x = rng.gen_range(0..total);
        self.cum.partition_point(|&c| c <= x)
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

/// Makes batch `step` (pure in `(cfg.run.seed, step)`).
pub fn make_batch(corpus: &Corpus, cfg: &TrainConfig, step: u64) -> Batch {
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
            Sampling::Clip => {
                let clip = &clips[rng.gen_range(0..clips.len())];
                let start = if clip.n_frames > crop {
                    rng.gen_range(0..=clip.n_frames - crop)
                } else {
                    0
                };
                let gain = if j > 0.0 { rng.gen_range(-j..=j) } else { 0.0 };
                crop_frames(clip, cfg, start, gain, &mut frames);
            }
            Sampling::Duration => {
                let first = corpus.draw(&mut rng);
                let (a, e) = corpus.spans[first];
                let start = if e - a > crop {
                    rng.gen_range(a..=e - crop)
                } else {
                    a
                };
                let gain = if j > 0.0 { rng.gen_range(-j..=j) } else { 0.0 };
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
    let masks = sample_for_step(
        &cfg.masks,
        step,
        cfg.optim.steps,
        n_freq,
        n_time,
        b,
        &mut rng,
    );
    Batch {
        step,
        batch: b,
        n_patches: n_freq * n_time,
        patches,
        masks,
    }
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
}

impl Loader {
    /// Starts loading batches `first..total`.
    pub fn start(clips: Arc<Corpus>, cfg: Arc<TrainConfig>, first: u64) -> Self {
        let w = cfg.data.loader_threads.max(1) as u64;
        let stop = Arc::new(AtomicBool::new(false));
        let mut receivers = Vec::new();
        let mut threads = Vec::new();
        for k in 0..w {
            let (tx, rx) = bounded(cfg.data.prefetch.max(1));
            receivers.push(rx);
            let (clips, cfg, stop) = (clips.clone(), cfg.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                // The first step this thread owns at or after `first`.
                let mut s = first + (k + w - first % w) % w;
                while s < cfg.optim.steps && !stop.load(Ordering::Relaxed) {
                    if tx.send(make_batch(&clips, &cfg, s)).is_err() {
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
        }
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
