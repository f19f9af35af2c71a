//! The worker: samples from the ring -> 16 kHz -> streaming log-mel -> sliding window of
//! frames -> on every hop: normalise, patchify, encode, mean-pool, tagging head, smoothing.
//!
//! Everything works in buffers sized at construction (the window, the patches, the engine's
//! scratch, the scores, the [`Hop`] handed to the caller): the steady state allocates nothing
//! (tests/alloc_free.rs counts).

use std::sync::Arc;
use std::time::Instant;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler, WindowFunction};

use crate::config::FrontendConfig;
use crate::engine::{FastEncoder, Scratch};
use crate::frontend::patches::normalize;
use crate::frontend::StreamingFbank;
use crate::model::head::Head;
use crate::model::open_set::OpenSet;

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
    /// Threads for the encoder (the engine splits its work over this many; the pipeline times
    /// one thread against all of them and keeps the faster).
    pub threads: usize,
    /// The open-set check (`model::open_set`) at this quantile: a hop whose window is unlike
    /// the top class's training examples is flagged unknown. `None`: no check.
    pub unknown_quantile: Option<f32>,
    /// A hop whose window is quieter than this (RMS, dBFS, of its loudest hop-long stretch, as
    /// `tag` gates a clip by its loudest 160 ms) is silence: its scores count as zero, so no tag
    /// turns on and tags that were on decay and turn off, and it is not checked against the
    /// classes (a linear head names a class for digital silence too: the built-in one said "dog
    /// 0.98"). The window, not the newest hop alone: a short sound (a bark, a knock) stays in
    /// the window for several hops after its own, and those hops must still see it. `None`: no
    /// gate.
    pub silence_dbfs: Option<f32>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            window_columns: 6,
            hop_columns: 1,
            threshold: 0.5,
            hysteresis: 0.1,
            smoothing: 0.5,
            threads: 1,
            unknown_quantile: None,
            silence_dbfs: Some(-60.0),
        }
    }
}

/// What one hop produced: owned by the pipeline and overwritten at every hop (the callback
/// copies what it keeps).
#[derive(Debug, Clone, Default)]
pub struct Hop {
    pub index: u64,
    /// Audio time of the window's end, seconds from the start of the stream.
    pub t_end: f64,
    /// The window's pooled embedding, as the head scores it (`[D]`, or `[n_freq * D]` for a
    /// `freqcat` head).
    pub pooled: Vec<f32>,
    /// Smoothed per-class scores.
    pub scores: Vec<f32>,
    /// The window is unlike the top class's training examples (the open-set check).
    pub unknown: bool,
    /// The window's loudest hop-long stretch is below the silence gate
    /// (`PipelineConfig::silence_dbfs`).
    pub silent: bool,
    /// Its similarity to the top class's prototype (NaN without the check).
    pub similarity: f32,
    /// Classes that switched on / off at this hop.
    pub on: Vec<usize>,
    pub off: Vec<usize>,
    /// Encoder + head time for this hop.
    pub compute_ms: f64,
    /// RMS level of the audio since the previous hop, dBFS (a full-scale square wave is 0, a
    /// full-scale sine -3; digital silence -100).
    pub level_db: f32,
    /// The newest hop's frames averaged per mel bin (`n_mels` values), for a spectrogram view.
    pub column: Vec<f32>,
}

/// Rate conversion to the front end's rate for a stream (rubato's FFT resampler fed in fixed
/// chunks; its delay is not trimmed, which only shifts the stream by a few milliseconds).
struct StreamResampler {
    inner: Fft<f32>,
    pending: Vec<f32>,
    out: Vec<f32>,
}

impl StreamResampler {
    fn new(from: u32, to: u32) -> Option<Self> {
        let chunk = (from as usize / 100).max(64);
        // Two sub-chunks and rubato's Blackman-Harris window (what rubato 0.16's
        // `FftFixedIn::new(from, to, chunk, 2, 1)` built): a 10 ms chunk, half of it of delay.
        let inner = Fft::<f32>::new_custom(
            from as usize,
            to as usize,
            chunk,
            2,
            1,
            WindowFunction::BlackmanHarris2,
            FixedSync::Input,
        )
        .ok()?;
        let out = vec![0.0; inner.output_frames_max()];
        Some(Self {
            pending: Vec::with_capacity(inner.input_frames_max()),
            inner,
            out,
        })
    }

    /// Feeds `x`; every full chunk is resampled into the preallocated output and passed to
    /// `emit`. Allocates nothing (the adapters are views over the two buffers).
    fn push(&mut self, mut x: &[f32], mut emit: impl FnMut(&[f32])) {
        while !x.is_empty() {
            let next = self.inner.input_frames_next();
            let take = (next - self.pending.len()).min(x.len());
            self.pending.extend_from_slice(&x[..take]);
            x = &x[take..];
            if self.pending.len() == next {
                let frames_out = self.out.len();
                let resampled = match (
                    InterleavedSlice::new(&self.pending[..], 1, next),
                    InterleavedSlice::new_mut(&mut self.out[..], 1, frames_out),
                ) {
                    (Ok(input), Ok(mut output)) => self
                        .inner
                        .process_into_buffer(&input, &mut output, None)
                        .ok(),
                    _ => None,
                };
                if let Some((_, n)) = resampled {
                    emit(&self.out[..n]);
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
    encoder: Arc<FastEncoder>,
    scratch: Scratch,
    head: Head,
    open_set: Option<OpenSet>,
    open_set_scratch: Vec<f32>,
    /// The hop handed to the callback, reused.
    out: Hop,
    raw: Vec<f32>,
    patch: usize,
    n_mels: usize,
    window_frames: usize,
    hop_frames: usize,
    /// The newest `window_frames` frames, oldest first (shifted by one hop per hop).
    window: Vec<f32>,
    frames: u64,
    /// Frames since the last hop.
    since_hop: usize,
    /// Sum of squares and count of the 16 kHz samples since the last hop (the level).
    sq_sum: f64,
    sq_n: u64,
    /// Levels (dBFS) of the hops whose audio the window holds, newest at `level_slot - 1`.
    levels: Vec<f32>,
    level_slot: usize,
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
    /// Running mean hop time (ms) with one thread and with all of them: the pipeline uses whichever
    /// is faster on this machine, re-checking the other every [`RECHECK`] hops. (A second
    /// thread halves a back-to-back forward pass, but between live hops it parks, and on some
    /// machines, virtual ones especially, waking it costs more than it saves: measured 4-12 ms
    /// per hop against 2 ms on one thread on this repository's 2-vCPU VM.)
    thread_ms: [Option<f64>; 2],
}

/// The level of digital silence, dBFS (the floor of [`Hop::level_db`]).
const SILENCE_DB: f32 = -100.0;

/// Hops between re-checks of the thread count not in use.
const RECHECK: u64 = 32;

impl Pipeline {
    pub fn new(
        cfg: PipelineConfig,
        fe_cfg: &FrontendConfig,
        input_rate: u32,
        encoder: Arc<FastEncoder>,
        head: Head,
    ) -> Result<Self, String> {
        let ecfg = encoder.config().clone();
        if cfg.window_columns * ecfg.n_freq() > encoder.max_tokens() {
            return Err(format!(
                "the encoder engine was built for {} tokens, a window of {} columns needs {}",
                encoder.max_tokens(),
                cfg.window_columns,
                cfg.window_columns * ecfg.n_freq()
            ));
        }
        head.check_width(ecfg.embed_dim, ecfg.n_freq())?;
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
            scratch: encoder
                .scratch_threads(cfg.threads)
                .map_err(|e| format!("starting the encoder's threads: {e}"))?,
            out: Hop {
                pooled: vec![0.0; head.dim],
                scores: vec![0.0; n_classes],
                on: Vec::with_capacity(n_classes),
                off: Vec::with_capacity(n_classes),
                column: vec![0.0; n_mels],
                ..Hop::default()
            },
            raw: Vec::with_capacity(n_classes),
            open_set: cfg
                .unknown_quantile
                .and_then(|q| OpenSet::from_head(&head, q)),
            open_set_scratch: Vec::with_capacity(head.dim),
            encoder,
            head,
            patch,
            n_mels,
            window_frames,
            hop_frames: cfg.hop_columns * patch,
            window: vec![0.0; window_frames * n_mels],
            frames: 0,
            since_hop: 0,
            sq_sum: 0.0,
            sq_n: 0,
            levels: vec![SILENCE_DB; window_frames.div_ceil(cfg.hop_columns * patch)],
            level_slot: 0,
            patches: Vec::with_capacity(window_frames * n_mels),
            smoothed: vec![0.0; n_classes],
            active: vec![false; n_classes],
            hops: 0,
            skipped_hops: 0,
            skip_next: false,
            extra_hop_delay: std::time::Duration::ZERO,
            thread_ms: [None, None],
            cfg,
        })
    }

    pub fn head(&self) -> &Head {
        &self.head
    }

    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// The width of a hop's pooled embedding: the head's (`[D]`, or `[n_freq * D]` for a
    /// freqcat head), which is what the event buffers are sized for.
    pub fn pooled_dim(&self) -> usize {
        self.head.dim
    }

    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Feeds samples at the input rate; `on_hop` receives each computed hop.
    pub fn push(&mut self, samples: &[f32], on_hop: &mut impl FnMut(&Hop)) {
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

    fn push_16k(&mut self, samples: &[f32], on_hop: &mut impl FnMut(&Hop)) {
        // Pieces of at most one frame shift, so each yields at most one frame and a due hop
        // sees exactly the frames up to its end.
        for piece in samples.chunks(self.fe_cfg.hop_length().max(1)) {
            self.sq_sum += piece.iter().map(|&s| s as f64 * s as f64).sum::<f64>();
            self.sq_n += piece.len() as u64;
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
                    } else if self.hop() {
                        on_hop(&self.out);
                    }
                }
            }
        }
    }

    /// Ends the stream. A stream that ended before its first window was full (a door knock, a
    /// spoken digit, a camera shutter: 0.3-0.9 s against a 1 s window) has had no hop; it gets
    /// one now, on its frames followed by copies of its own quietest frame, the padding
    /// `finetune` gives such clips (`finetune::windows::clip_windows`), so that the head sees
    /// what it was trained on. Returns whether it computed a hop.
    pub fn finish(&mut self, on_hop: &mut impl FnMut(&Hop)) -> bool {
        let (wf, n) = (self.window_frames as u64, self.n_mels);
        if self.hops > 0 || self.frames == 0 || self.frames >= wf {
            return false;
        }
        let have = self.frames as usize;
        // The quietest frame pads the window (as `clip_windows` picks it, by mean log-mel
        // energy); the hop's level is the sound's (every sample so far), not the padding's.
        let energy = |i: usize| self.window[i * n..(i + 1) * n].iter().sum::<f32>() / n as f32;
        let mut quiet = 0;
        for i in 0..have {
            if energy(i) < energy(quiet) {
                quiet = i;
            }
        }
        for slot in have..self.window_frames {
            self.window
                .copy_within(quiet * n..(quiet + 1) * n, slot * n);
        }
        // Slots 0..have hold the sound in time order; with the window full from slot 0 on,
        // the padding follows it, as in `clip_windows`.
        self.frames = wf;
        let ok = self.hop();
        if ok {
            on_hop(&self.out);
        }
        ok
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

    /// Computes the due hop into `self.out`; false if the encoder failed (not expected: the
    /// window's shape is fixed at construction).
    fn hop(&mut self) -> bool {
        let started = Instant::now();
        if !self.extra_hop_delay.is_zero() {
            std::thread::sleep(self.extra_hop_delay);
        }
        self.build_patches();
        let two = self.next_uses_two_threads();
        let (wf, n) = (self.window_frames as u64, self.n_mels);
        let out = &mut self.out;
        out.column.fill(0.0);
        for k in 0..self.hop_frames as u64 {
            let slot = ((self.frames - 1 - k) % wf) as usize;
            for (c, v) in out
                .column
                .iter_mut()
                .zip(&self.window[slot * n..(slot + 1) * n])
            {
                *c += v / self.hop_frames as f32;
            }
        }
        // RMS of the samples since the last hop (a skipped hop's included), in dBFS.
        let ms = self.sq_sum / self.sq_n.max(1) as f64;
        out.level_db = (10.0 * ms.max(1e-10).log10()) as f32;
        (self.sq_sum, self.sq_n) = (0.0, 0);
        self.levels[self.level_slot] = out.level_db;
        self.level_slot = (self.level_slot + 1) % self.levels.len();
        let loudest = self.levels.iter().copied().fold(SILENCE_DB, f32::max);
        out.silent = self.cfg.silence_dbfs.is_some_and(|g| loudest < g);
        let t0 = Instant::now();
        if self
            .encoder
            .forward_with(&self.patches, &mut self.scratch, two)
            .is_err()
        {
            return false;
        }
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        let slot = &mut self.thread_ms[two as usize];
        *slot = Some(slot.map_or(ms, |m| 0.8 * m + 0.2 * ms));
        let (d, n_freq) = (
            self.encoder.config().embed_dim,
            self.encoder.config().n_freq(),
        );
        self.head
            .pool
            .pool_into(self.scratch.output(), d, n_freq, &mut out.pooled);
        self.head.scores_into(&out.pooled, &mut self.raw);
        if out.silent {
            self.raw.fill(0.0);
        }
        let a = self.cfg.smoothing;
        out.on.clear();
        out.off.clear();
        for (c, (s, r)) in self.smoothed.iter_mut().zip(&self.raw).enumerate() {
            *s = if self.hops == 0 {
                *r
            } else {
                a * r + (1.0 - a) * *s
            };
            if !self.active[c] && *s >= self.cfg.threshold {
                self.active[c] = true;
                out.on.push(c);
            } else if self.active[c] && *s < self.cfg.threshold - self.cfg.hysteresis {
                self.active[c] = false;
                out.off.push(c);
            }
        }
        out.scores.copy_from_slice(&self.smoothed);
        (out.unknown, out.similarity) = match &self.open_set {
            Some(_) if out.silent => (false, f32::NAN),
            Some(os) => {
                let top = (0..self.smoothed.len())
                    .max_by(|&a, &b| self.smoothed[a].total_cmp(&self.smoothed[b]))
                    .unwrap_or(0);
                let (known, s) = os.check(&out.pooled, top, &mut self.open_set_scratch);
                (!known, s)
            }
            None => (false, f32::NAN),
        };
        out.index = self.hops;
        self.hops += 1;
        out.t_end = self.frames as f64 * self.fe_cfg.frame_shift_ms / 1000.0
            + (self.fe_cfg.frame_length_ms - self.fe_cfg.frame_shift_ms) / 1000.0;
        out.compute_ms = started.elapsed().as_secs_f64() * 1e3;
        true
    }

    /// Whether the next hop runs the encoder on all its threads: never with one; else the
    /// faster on average so far, trying each early on and the other every [`RECHECK`] hops.
    fn next_uses_two_threads(&self) -> bool {
        if self.scratch.threads() == 1 {
            return false;
        }
        match self.thread_ms {
            [None, _] => false,
            [_, None] => true,
            [Some(one), Some(two)] => (two < one) != (self.hops % RECHECK == RECHECK - 1),
        }
    }

    /// Changes the on-threshold (the UI's +/- keys).
    pub fn set_threshold(&mut self, t: f32) {
        self.cfg.threshold = t.clamp(0.05, 0.99);
    }

    pub fn threshold(&self) -> f32 {
        self.cfg.threshold
    }
}
