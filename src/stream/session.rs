//! A listening session: a source (microphone or file) feeding the ring, the worker thread
//! running the pipeline, and events out on a bounded crossbeam channel for the UI or JSON.
//!
//! The worker allocates nothing in steady state: hop events come from a pool the consumer
//! refills with [`Session::recycle`] (preallocated at start for the channel's capacity), class
//! names are shared (`Arc`), percentiles sort preallocated buffers, and CPU time is read into
//! a stack buffer. tests/alloc_free.rs counts the worker thread's allocations.

use std::cell::Cell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use serde::Serialize;

use super::capture::{self, CaptureInfo};
use super::ring::{sample_ring, RingCounters, SampleConsumer, SampleProducer};
use super::worker::{Hop, Pipeline};

/// Where samples come from.
#[derive(Debug, Clone)]
pub enum Source {
    Microphone {
        device: Option<String>,
    },
    /// A file, paced in real time or as fast as possible.
    File {
        path: PathBuf,
        fast: bool,
    },
}

/// Hop events in flight at most: the channel's capacity (and the pool's size).
pub const EVENT_CAPACITY: usize = 256;

thread_local! {
    static IN_WORKER: Cell<bool> = const { Cell::new(false) };
}

/// True on a session's worker thread (for allocation-counting tests; reading it allocates
/// nothing).
pub fn on_worker_thread() -> bool {
    IN_WORKER.with(Cell::get)
}

/// One hop as the UI and JSON see it. Pass it back with [`Session::recycle`] when done, so the
/// worker can reuse its buffers.
#[derive(Debug, Clone)]
pub struct HopEvent {
    pub hop: u64,
    pub t_audio_s: f64,
    pub compute_ms: f64,
    /// From the window's newest sample entering the ring to the tags being ready.
    pub capture_to_tag_ms: f64,
    /// RMS level of the audio since the previous hop, dBFS.
    pub level_db: f32,
    /// The head's class names (shared, not copied per hop).
    pub labels: Arc<[String]>,
    /// `(class index, smoothed score)` of every class, best first.
    pub scores: Vec<(usize, f32)>,
    /// The window is unlike the top class's training examples (the open-set check).
    pub unknown: bool,
    /// The hop's audio is below the silence gate: no tag turns on.
    pub silent: bool,
    /// Its similarity to the top class's prototype (NaN without the check).
    pub similarity: f32,
    /// Classes that switched on / off at this hop.
    pub tags_on: Vec<usize>,
    pub tags_off: Vec<usize>,
    /// The newest hop's log-mel column (mean per mel bin), for the scrolling spectrogram.
    pub spectrum: Vec<f32>,
    /// The window's embedding, pooled as the head pools (`model::pooling`).
    pub pooled: Vec<f32>,
}

impl HopEvent {
    /// An empty event with room for `classes`, `n_mels` and `dim` values.
    pub fn with_capacity(labels: Arc<[String]>, n_mels: usize, dim: usize) -> Self {
        let c = labels.len();
        Self {
            hop: 0,
            t_audio_s: 0.0,
            compute_ms: 0.0,
            capture_to_tag_ms: 0.0,
            level_db: 0.0,
            scores: Vec::with_capacity(c),
            unknown: false,
            silent: false,
            similarity: f32::NAN,
            tags_on: Vec::with_capacity(c),
            tags_off: Vec::with_capacity(c),
            spectrum: Vec::with_capacity(n_mels),
            pooled: Vec::with_capacity(dim),
            labels,
        }
    }

    pub fn label(&self, class: usize) -> &str {
        self.labels.get(class).map_or("?", String::as_str)
    }

    /// The `k` best `(label, score)`.
    pub fn top(&self, k: usize) -> impl Iterator<Item = (&str, f32)> {
        self.scores.iter().take(k).map(|&(c, s)| (self.label(c), s))
    }

    pub fn tags_on_names(&self) -> impl Iterator<Item = &str> {
        self.tags_on.iter().map(|&c| self.label(c))
    }

    pub fn tags_off_names(&self) -> impl Iterator<Item = &str> {
        self.tags_off.iter().map(|&c| self.label(c))
    }

    /// Overwrites this event with `h`, reusing its buffers.
    fn fill(&mut self, h: &Hop, capture_to_tag_ms: f64) {
        self.hop = h.index;
        self.t_audio_s = h.t_end;
        self.compute_ms = h.compute_ms;
        self.capture_to_tag_ms = capture_to_tag_ms;
        self.level_db = h.level_db;
        self.scores.clear();
        self.scores.extend(h.scores.iter().copied().enumerate());
        // Unstable sort: the stable one allocates a buffer; ties broken by class index.
        self.scores
            .sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        self.unknown = h.unknown;
        self.silent = h.silent;
        self.similarity = h.similarity;
        self.tags_on.clear();
        self.tags_on.extend_from_slice(&h.on);
        self.tags_off.clear();
        self.tags_off.extend_from_slice(&h.off);
        self.spectrum.clear();
        self.spectrum.extend_from_slice(&h.column);
        self.pooled.clear();
        self.pooled.extend_from_slice(&h.pooled);
    }
}

/// Running figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub hops: u64,
    pub skipped_hops: u64,
    pub dropped_samples: u64,
    pub dropped_events: u64,
    pub audio_s: f64,
    pub wall_s: f64,
    pub real_time_factor: f64,
    pub hop_ms_p50: f64,
    pub hop_ms_p99: f64,
    pub capture_to_tag_ms_p50: f64,
    pub capture_to_tag_ms_p99: f64,
    pub cpu_percent: Option<f64>,
}

pub enum Event {
    Hop(HopEvent),
    Stats(Stats),
    /// The source ended (file done) or failed; the worker has stopped.
    Ended(Option<String>),
}

pub struct Session {
    pub events: Receiver<Event>,
    pub capture: Option<CaptureInfo>,
    pub input_rate: u32,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    _mic: Option<capture::Capture>,
    /// Threshold changes from the UI.
    pub threshold_tx: Sender<f32>,
    /// Pauses the session: a file replay waits where it is; live capture is discarded while
    /// paused (the microphone cannot wait).
    pub paused: Arc<AtomicBool>,
    recycle: Sender<HopEvent>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// CPU time of this process (Linux), read into a stack buffer: no allocation.
fn cpu_seconds() -> Option<f64> {
    use std::io::Read;
    let mut buf = [0u8; 1024];
    let mut f = std::fs::File::open("/proc/self/stat").ok()?;
    let n = f.read(&mut buf).ok()?;
    let s = std::str::from_utf8(&buf[..n]).ok()?;
    let rest = s.rsplit(')').next()?;
    let mut f = rest.split_whitespace().skip(11);
    let ticks: f64 = f.next()?.parse::<f64>().ok()? + f.next()?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Feeds a 16 kHz file into the ring, paced or as fast as the ring takes it.
fn feed_file(
    samples: Vec<f32>,
    mut prod: SampleProducer,
    fast: bool,
    rate: u32,
    (stop, paused): (Arc<AtomicBool>, Arc<AtomicBool>),
    counters: Arc<RingCounters>,
) {
    let chunk = (rate / 100) as usize; // 10 ms
    let mut start = Instant::now();
    for (i, c) in samples.chunks(chunk).enumerate() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        // A paused replay waits here and resumes where it stopped (a microphone cannot wait:
        // there the worker discards what it hears while paused).
        if paused.load(Ordering::Relaxed) {
            let t = Instant::now();
            while paused.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
            }
            start += t.elapsed();
        }
        if fast {
            // Not a real-time thread: wait for room rather than drop.
            let mut rest = c;
            loop {
                let before = counters.pushed.load(Ordering::Relaxed);
                let dropped_before = counters.dropped.load(Ordering::Relaxed);
                prod.push(rest);
                let took = (counters.pushed.load(Ordering::Relaxed) - before) as usize;
                // Undo the drop count: in fast mode nothing is lost, we retry.
                counters.dropped.store(dropped_before, Ordering::Relaxed);
                rest = &rest[took..];
                if rest.is_empty() || stop.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        } else {
            let due = start + Duration::from_secs_f64((i * chunk) as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            prod.push(c);
        }
    }
}

impl Session {
    /// Starts `source` through `pipeline` (built for the source's rate by `make_pipeline`).
    pub fn start(
        source: Source,
        ring_seconds: f64,
        make_pipeline: impl FnOnce(u32) -> Result<Pipeline, String>,
    ) -> Result<Self, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let (mic, capture_info, input_rate, cons, counters, source_done, fast) = match source {
            Source::Microphone { device } => {
                // Open once to learn the rate, then size the ring for it.
                let probe = capture::list_devices().map_err(|e| e.to_string())?;
                let pairs: Vec<(String, String)> = probe
                    .iter()
                    .map(|d| (d.name.clone(), d.id.clone()))
                    .collect();
                let rate_guess = match device.as_deref() {
                    Some(w) => capture::pick_device(&pairs, w).map(|i| &probe[i]),
                    None => probe.iter().find(|d| d.is_default).or(probe.first()),
                }
                .and_then(|d| d.default_config.as_ref().map(|c| c.0))
                .unwrap_or(48_000);
                let (prod, cons, counters) =
                    sample_ring((rate_guess as f64 * ring_seconds) as usize);
                let cap = capture::open(device.as_deref(), None, prod, |e| {
                    // cpal's error thread: report without blocking.
                    eprintln!("audio stream error: {e}");
                })
                .map_err(|e| e.to_string())?;
                let info = cap.info.clone();
                let rate = info.sample_rate;
                (
                    Some(cap),
                    Some(info),
                    rate,
                    cons,
                    counters,
                    Arc::new(AtomicBool::new(false)),
                    false,
                )
            }
            Source::File { path, fast } => {
                let audio = crate::audio::load(&path, 16_000).map_err(|e| e.to_string())?;
                let (prod, cons, counters) = sample_ring((16_000.0 * ring_seconds) as usize);
                let done = Arc::new(AtomicBool::new(false));
                let (st, d, c) = (stop.clone(), done.clone(), counters.clone());
                let pz = paused.clone();
                threads.push(std::thread::spawn(move || {
                    feed_file(audio.samples, prod, fast, 16_000, (st, pz), c);
                    d.store(true, Ordering::Release);
                }));
                (None, None, 16_000, cons, counters, done, fast)
            }
        };
        let mut pipeline = make_pipeline(input_rate)?;
        let (tx, rx) = bounded::<Event>(EVENT_CAPACITY);
        let (recycle_tx, recycle_rx) = bounded::<HopEvent>(EVENT_CAPACITY + 2);
        let (th_tx, th_rx) = bounded::<f32>(16);
        // The worker discards audio while paused only when it is live: a file's feeder waits.
        let (st, pz) = match mic {
            Some(_) => (stop.clone(), paused.clone()),
            None => (stop.clone(), Arc::new(AtomicBool::new(false))),
        };
        let spare = recycle_tx.clone();
        threads.push(std::thread::spawn(move || {
            IN_WORKER.with(|w| w.set(true));
            worker_loop(
                &mut pipeline,
                cons,
                counters,
                input_rate,
                fast,
                source_done,
                st,
                pz,
                tx,
                th_rx,
                (spare, recycle_rx),
            );
        }));
        Ok(Self {
            events: rx,
            capture: capture_info,
            input_rate,
            stop,
            threads,
            _mic: mic,
            threshold_tx: th_tx,
            paused,
            recycle: recycle_tx,
        })
    }

    /// Gives a hop event's buffers back to the worker (it allocates new ones only when none
    /// come back).
    pub fn recycle(&self, ev: HopEvent) {
        let _ = self.recycle.try_send(ev);
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[allow(clippy::too_many_arguments)]
fn worker_loop(
    pipe: &mut Pipeline,
    mut cons: SampleConsumer,
    counters: Arc<RingCounters>,
    rate: u32,
    fast: bool,
    source_done: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    tx: Sender<Event>,
    thresholds: Receiver<f32>,
    (pool_tx, pool): (Sender<HopEvent>, Receiver<HopEvent>),
) {
    // Everything the loop needs, allocated before it starts.
    let mut buf = vec![0.0f32; (rate / 100) as usize]; // 10 ms at a time
    let labels: Arc<[String]> = pipe.head().labels.clone().into();
    let (n_mels, dim) = (pipe.n_mels(), pipe.pooled_dim());
    for _ in 0..EVENT_CAPACITY + 2 {
        let _ = pool_tx.try_send(HopEvent::with_capacity(labels.clone(), n_mels, dim));
    }
    drop(pool_tx);
    const KEEP: usize = 4096;
    let mut hop_ms: Vec<f64> = Vec::with_capacity(KEEP);
    let mut c2t_ms: Vec<f64> = Vec::with_capacity(KEEP);
    let mut sorted: Vec<f64> = Vec::with_capacity(KEEP);
    let (mut dropped_events, mut audio_samples) = (0u64, 0u64);
    let (start, cpu0) = (Instant::now(), cpu_seconds());
    let mut last_stats = Instant::now();
    let hop_samples = (rate as f64 * 0.16) as usize;
    let mut stats =
        |hop_ms: &[f64], c2t: &[f64], pipe: &Pipeline, dropped_events, audio_samples: u64| {
            let wall = start.elapsed().as_secs_f64();
            let audio = audio_samples as f64 / rate as f64;
            let mut pct = |v: &[f64]| {
                sorted.clear();
                sorted.extend_from_slice(v);
                sorted.sort_unstable_by(f64::total_cmp);
                (percentile(&sorted, 0.5), percentile(&sorted, 0.99))
            };
            let (h50, h99) = pct(hop_ms);
            let (c50, c99) = pct(c2t);
            Stats {
                hops: hop_ms.len() as u64,
                skipped_hops: pipe.skipped_hops,
                dropped_samples: counters.dropped.load(Ordering::Relaxed),
                dropped_events,
                audio_s: audio,
                wall_s: wall,
                real_time_factor: hop_ms.iter().sum::<f64>() / 1e3 / audio.max(1e-9),
                hop_ms_p50: h50,
                hop_ms_p99: h99,
                capture_to_tag_ms_p50: c50,
                capture_to_tag_ms_p99: c99,
                cpu_percent: match (cpu0, cpu_seconds()) {
                    (Some(a), Some(b)) => Some(100.0 * (b - a) / wall.max(1e-9)),
                    _ => None,
                },
            }
        };
    while !stop.load(Ordering::Relaxed) {
        while let Ok(t) = thresholds.try_recv() {
            pipe.set_threshold(t);
        }
        let n = cons.pop(&mut buf);
        if n == 0 {
            if source_done.load(Ordering::Acquire) && cons.is_empty() {
                // A file shorter than the window: one padded hop instead of none.
                pipe.finish(&mut |h: &Hop| {
                    hop_ms.push(h.compute_ms);
                    c2t_ms.push(h.compute_ms);
                    let mut ev = pool
                        .try_recv()
                        .unwrap_or_else(|_| HopEvent::with_capacity(labels.clone(), n_mels, dim));
                    ev.fill(h, h.compute_ms);
                    if tx.try_send(Event::Hop(ev)).is_err() {
                        dropped_events += 1;
                    }
                });
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        audio_samples += n as u64;
        if paused.load(Ordering::Relaxed) {
            continue;
        }
        let popped_at = Instant::now();
        let backlog = cons.len();
        // Behind by more than a hop of audio: skip the next due hop (counted), never queue up.
        if !fast && backlog > hop_samples {
            pipe.skip_next = true;
        }
        let mut on_hop = |h: &Hop| {
            let c2t = popped_at.elapsed().as_secs_f64() * 1e3 + backlog as f64 * 1e3 / rate as f64;
            // Percentiles over the most recent hops: bounded memory however long the session.
            if hop_ms.len() >= KEEP {
                hop_ms.drain(..KEEP / 2);
                c2t_ms.drain(..KEEP / 2);
            }
            hop_ms.push(h.compute_ms);
            c2t_ms.push(c2t);
            let mut ev = pool
                .try_recv()
                .unwrap_or_else(|_| HopEvent::with_capacity(labels.clone(), n_mels, dim));
            ev.fill(h, c2t);
            if tx.try_send(Event::Hop(ev)).is_err() {
                dropped_events += 1;
            }
        };
        pipe.push(&buf[..n], &mut on_hop);
        if last_stats.elapsed() >= Duration::from_millis(500) {
            last_stats = Instant::now();
            let s = stats(&hop_ms, &c2t_ms, pipe, dropped_events, audio_samples);
            let _ = tx.try_send(Event::Stats(s));
        }
    }
    let s = stats(&hop_ms, &c2t_ms, pipe, dropped_events, audio_samples);
    let _ = tx.send_timeout(Event::Stats(s), Duration::from_secs(1));
    let _ = tx.send_timeout(Event::Ended(None), Duration::from_secs(1));
}
