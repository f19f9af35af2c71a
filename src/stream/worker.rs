//! The worker: samples from the ring -> 16 kHz -> streaming log-mel -> sliding window of
//! frames -> on every hop: normalise, patchify, encode, mean-pool, tagging head, smoothing.
//!
//! Everything but the encoder call works in buffers sized at construction (the window, the
//! patches, the scores): the steady state adds nothing to the heap outside candle's tensors.

use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor};
use rubato::{FftFixedIn, Resampler};

use crate::config::FrontendConfig;
use crate::frontend::patches::normalize;
use crate::frontend::StreamingFbank;
use crate::model::head::Head;
use crate::model::Encoder;

/// Window and hop, in patch columns (one column = `patch_size` frames = 160 ms).
#[derive(Debug, Clone, Copy)]
pub struct PipelineConfig {
    pub window_columns: usize,
    pub hop_columns: usize,
    /// Tag on at this smoothed score; off below `threshold - hysteresis`.
    pub threshold: f32,
    pub hysteresis: f32,
    /// Weight of the newest hop in the exponential smoothing of scores.
    pub smoothing: f32,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            window_columns: 6,
            hop_columns: 1,
            threshold: 0.5,
            hysteresis: 0.1,
            smoothing: 0.5,
        }
    }
}

/// What one hop produced.
#[derive(Debug, Clone)]
pub struct Hop {
    pub index: u64,
    /// Audio time of the window's end, seconds from the start of the stream.
    pub t_end: f64,
    /// Mean-pooled embedding `[D]`.
    pub pooled: Vec<f32>,
    /// Smoothed per-class scores.
    pub scores: Vec<f32>,
    /// Classes that switched on / off at this hop.
    pub on: Vec<usize>,
    pub off: Vec<usize>,
    /// Encoder + head time for this hop.
    pub compute_ms: f64,
    /// Mean log-mel energy of the window's newest column (10 log10 of the mean power), dB.
    pub level_db: f32,
    /// The newest hop's frames averaged per mel bin (`n_mels` values), for a spectrogram view.
    pub column: Vec<f32>,
}

/// Rate conversion to the front end's rate for a stream (rubato's FFT resampler fed in fixed
/// chunks; its delay is not trimmed, which only shifts the stream by a few milliseconds).
struct StreamResampler {
    inner: FftFixedIn<f32>,
    pending: Vec<f32>,
    out: Vec<Vec<f32>>,
}

impl StreamResampler {
    fn new(from: u32, to: u32) -> Option<Self> {
        let chunk = (from as usize / 100).max(64);
        let inner = FftFixedIn::<f32>::new(from as usize, to as usize, chunk, 2, 1).ok()?;
        let out = inner.output_buffer_allocate(true);
        Some(Self {
            pending: Vec::with_capacity(chunk),
            inner,
            out,
        })
    }

    fn push(&mut self, mut x: &[f32], mut emit: impl FnMut(&[f32])) {
        while !x.is_empty() {
            let need = self.inner.input_frames_next() - self.pending.len();
            let take = need.min(x.len());
            self.pending.extend_from_slice(&x[..take]);
            x = &x[take..];
            if self.pending.len() == self.inner.input_frames_next() {
                if let Ok((_, n)) =
                    self.inner
                        .process_into_buffer(&[&self.pending[..]], &mut self.out, None)
                {
                    emit(&self.out[0][..n]);
                }
                self.pending.clear();
            }
        }
    }
}

pub struct Pipeline {
    cfg: PipelineConfig,
    fe_cfg: FrontendConfig,
    fbank: StreamingFbank,
    resampler: Option<StreamResampler>,
    encoder: Arc<Encoder>,
    head: Head,
    patch: usize,
    n_mels: usize,
    window_frames: usize,
    hop_frames: usize,
    /// The newest `window_frames` frames, oldest first (shifted by one hop per hop).
    window: Vec<f32>,
    frames: u64,
    /// Frames since the last hop.
    since_hop: usize,
    patches: Vec<f32>,
    smoothed: Vec<f32>,
    active: Vec<bool>,
    hops: u64,
    /// Hops that were due but not computed because the worker was behind.
    pub skipped_hops: u64,
    /// When set, a due hop is skipped (counted) instead of computed.
    pub skip_next: bool,
    /// Added to every hop's compute time: a stand-in for a slow device, for tests of the
    /// skipping policy. Zero in normal use.
    pub extra_hop_delay: std::time::Duration,
}

impl Pipeline {
    pub fn new(
        cfg: PipelineConfig,
        fe_cfg: &FrontendConfig,
        input_rate: u32,
        encoder: Arc<Encoder>,
        head: Head,
    ) -> Result<Self, String> {
        let ecfg = encoder.config().clone();
        if ecfg.n_mels != fe_cfg.n_mels {
            return Err(format!(
                "the encoder expects {} mel bins, the front end makes {}",
                ecfg.n_mels, fe_cfg.n_mels
            ));
        }
        if cfg.window_columns == 0 || cfg.hop_columns == 0 || cfg.hop_columns > cfg.window_columns {
            return Err("window and hop must be positive, hop at most the window".into());
        }
        let resampler = if input_rate == fe_cfg.sample_rate {
            None
        } else {
            Some(
                StreamResampler::new(input_rate, fe_cfg.sample_rate)
                    .ok_or_else(|| format!("cannot resample {input_rate} Hz"))?,
            )
        };
        let patch = ecfg.patch_size;
        let window_frames = cfg.window_columns * patch;
        let n_mels = fe_cfg.n_mels;
        let n_classes = head.labels.len();
        Ok(Self {
            fbank: StreamingFbank::new(fe_cfg).map_err(|e| e.to_string())?,
            fe_cfg: fe_cfg.clone(),
            resampler,
            encoder,
            head,
            patch,
            n_mels,
            window_frames,
            hop_frames: cfg.hop_columns * patch,
            window: vec![0.0; window_frames * n_mels],
            frames: 0,
            since_hop: 0,
            patches: Vec::with_capacity(window_frames * n_mels),
            smoothed: vec![0.0; n_classes],
            active: vec![false; n_classes],
            hops: 0,
            skipped_hops: 0,
            skip_next: false,
            extra_hop_delay: std::time::Duration::ZERO,
            cfg,
        })
    }

    pub fn head(&self) -> &Head {
        &self.head
    }

    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Feeds samples at the input rate; `on_hop` receives each computed hop.
    pub fn push(&mut self, samples: &[f32], on_hop: &mut impl FnMut(Hop)) {
        // Split so that at most one hop falls due per front-end push.
        for piece in samples.chunks(self.fe_cfg.hop_length().max(1)) {
            let mut tmp = std::mem::take(&mut self.resampler);
            match tmp.as_mut() {
                Some(r) => r.push(piece, |y| self.push_16k(y, on_hop)),
                None => self.push_16k(piece, on_hop),
            }
            self.resampler = tmp;
        }
    }

    fn push_16k(&mut self, samples: &[f32], on_hop: &mut impl FnMut(Hop)) {
        // Pieces of at most one frame shift, so each yields at most one frame and a due hop
        // sees exactly the frames up to its end.
        for piece in samples.chunks(self.fe_cfg.hop_length().max(1)) {
            let (window, n_mels, wf) = (&mut self.window, self.n_mels, self.window_frames);
            let mut new_frames = 0usize;
            self.fbank.push(piece, |t, frame| {
                // The newest `wf` frames: frame t lives at slot t % wf (a circular store).
                let slot = (t % wf as u64) as usize;
                window[slot * n_mels..(slot + 1) * n_mels].copy_from_slice(frame);
                new_frames += 1;
            });
            for _ in 0..new_frames {
                self.frames += 1;
                self.since_hop += 1;
                if self.frames >= self.window_frames as u64 && self.since_hop >= self.hop_frames {
                    self.since_hop = 0;
                    if self.skip_next {
                        self.skip_next = false;
                        self.skipped_hops += 1;
                    } else if let Some(h) = self.hop() {
                        on_hop(h);
                    }
                }
            }
        }
    }

    /// The window's frames in time order, normalised, as patches (time-major patch index).
    fn build_patches(&mut self) {
        let (wf, n_mels, p) = (self.window_frames, self.n_mels, self.patch);
        let first = (self.frames % wf as u64) as usize; // oldest frame's slot
        self.patches.clear();
        for col in 0..wf / p {
            for row in 0..n_mels / p {
                for dt in 0..p {
                    let slot = (first + col * p + dt) % wf;
                    let f = &self.window[slot * n_mels..(slot + 1) * n_mels];
                    self.patches.extend_from_slice(&f[row * p..(row + 1) * p]);
                }
            }
        }
        normalize(&mut self.patches, &self.fe_cfg);
    }

    fn hop(&mut self) -> Option<Hop> {
        let started = Instant::now();
        if !self.extra_hop_delay.is_zero() {
            std::thread::sleep(self.extra_hop_delay);
        }
        self.build_patches();
        let column = {
            let (wf, n) = (self.window_frames as u64, self.n_mels);
            let mut col = vec![0.0f32; n];
            for k in 0..self.hop_frames as u64 {
                let slot = ((self.frames - 1 - k) % wf) as usize;
                for (c, v) in col.iter_mut().zip(&self.window[slot * n..(slot + 1) * n]) {
                    *c += v / self.hop_frames as f32;
                }
            }
            col
        };
        let level_db = {
            // The newest column's mean log-mel energy, as a rough level.
            let wf = self.window_frames;
            let last = ((self.frames - 1) % wf as u64) as usize;
            let f = &self.window[last * self.n_mels..(last + 1) * self.n_mels];
            let mean_ln = f.iter().sum::<f32>() / f.len() as f32;
            10.0 * mean_ln / std::f32::consts::LN_10
        };
        let n = self.patches.len() / (self.patch * self.patch);
        let x = Tensor::from_slice(&self.patches, (1, n, self.patch * self.patch), &Device::Cpu)
            .ok()?;
        let h = self.encoder.forward(&x, None).ok()?;
        let pooled: Vec<f32> = h.mean(1).ok()?.flatten_all().ok()?.to_vec1().ok()?;
        let mut raw = Vec::with_capacity(self.smoothed.len());
        self.head.scores_into(&pooled, &mut raw);
        let a = self.cfg.smoothing;
        let (mut on, mut off) = (Vec::new(), Vec::new());
        for (c, (s, r)) in self.smoothed.iter_mut().zip(&raw).enumerate() {
            *s = if self.hops == 0 {
                *r
            } else {
                a * r + (1.0 - a) * *s
            };
            if !self.active[c] && *s >= self.cfg.threshold {
                self.active[c] = true;
                on.push(c);
            } else if self.active[c] && *s < self.cfg.threshold - self.cfg.hysteresis {
                self.active[c] = false;
                off.push(c);
            }
        }
        let index = self.hops;
        self.hops += 1;
        Some(Hop {
            index,
            t_end: self.frames as f64 * self.fe_cfg.frame_shift_ms / 1000.0
                + (self.fe_cfg.frame_length_ms - self.fe_cfg.frame_shift_ms) / 1000.0,
            pooled,
            scores: self.smoothed.clone(),
            on,
            off,
            compute_ms: started.elapsed().as_secs_f64() * 1e3,
            level_db,
            column,
        })
    }

    /// Changes the on-threshold (the UI's +/- keys).
    pub fn set_threshold(&mut self, t: f32) {
        self.cfg.threshold = t.clamp(0.05, 0.99);
    }

    pub fn threshold(&self) -> f32 {
        self.cfg.threshold
    }
}
