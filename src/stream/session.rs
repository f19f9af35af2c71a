//! A listening session: a source (microphone or file) feeding the ring, the worker thread
//! running the pipeline, and events out on a bounded crossbeam channel for the UI or JSON.

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

/// One hop as the UI and JSON see it.
#[derive(Debug, Clone, Serialize)]
pub struct HopEvent {
    pub hop: u64,
    pub t_audio_s: f64,
    pub compute_ms: f64,
    /// From the window's newest sample entering the ring to the tags being ready.
    pub capture_to_tag_ms: f64,
    pub level_db: f32,
    /// `(label, smoothed score)` of every class, best first.
    pub scores: Vec<(String, f32)>,
    pub tags_on: Vec<String>,
    pub tags_off: Vec<String>,
    /// The newest hop's log-mel column (mean per mel bin), for the scrolling spectrogram.
    #[serde(skip)]
    pub spectrum: Vec<f32>,
    /// The window's mean-pooled embedding.
    #[serde(skip)]
    pub pooled: Vec<f32>,
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
    pub paused: Arc<AtomicBool>,
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

fn cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = s.rsplit(')').next()?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Feeds a 16 kHz file into the ring, paced or as fast as the ring takes it.
fn feed_file(
    samples: Vec<f32>,
    mut prod: SampleProducer,
    fast: bool,
    rate: u32,
    stop: Arc<AtomicBool>,
    counters: Arc<RingCounters>,
) {
    let chunk = (rate / 100) as usize; // 10 ms
    let start = Instant::now();
    for (i, c) in samples.chunks(chunk).enumerate() {
        if stop.load(Ordering::Relaxed) {
            return;
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
                let rate_guess = probe
                    .iter()
                    .find(|d| {
                        device.as_deref().is_none_or(|w| {
                            d.name.contains(w) || w.parse::<usize>().ok() == Some(d.index)
                        })
                    })
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
                threads.push(std::thread::spawn(move || {
                    feed_file(audio.samples, prod, fast, 16_000, st, c);
                    d.store(true, Ordering::Release);
                }));
                (None, None, 16_000, cons, counters, done, fast)
            }
        };
        let mut pipeline = make_pipeline(input_rate)?;
        let (tx, rx) = bounded::<Event>(256);
        let (th_tx, th_rx) = bounded::<f32>(16);
        let (st, pz) = (stop.clone(), paused.clone());
        threads.push(std::thread::spawn(move || {
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
        })
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
) {
    let mut buf = vec![0.0f32; (rate / 100) as usize]; // 10 ms at a time
    let labels: Vec<String> = pipe.head().labels.clone();
    let mut hop_ms: Vec<f64> = Vec::with_capacity(4096);
    let mut c2t_ms: Vec<f64> = Vec::with_capacity(4096);
    let (mut dropped_events, mut audio_samples) = (0u64, 0u64);
    let (start, cpu0) = (Instant::now(), cpu_seconds());
    let mut last_stats = Instant::now();
    let hop_samples = (rate as f64 * 0.16) as usize;
    let stats =
        |hop_ms: &[f64], c2t: &[f64], pipe: &Pipeline, dropped_events, audio_samples: u64| {
            let mut h = hop_ms.to_vec();
            h.sort_by(f64::total_cmp);
            let mut c = c2t.to_vec();
            c.sort_by(f64::total_cmp);
            let wall = start.elapsed().as_secs_f64();
            let audio = audio_samples as f64 / rate as f64;
            Stats {
                hops: h.len() as u64,
                skipped_hops: pipe.skipped_hops,
                dropped_samples: counters.dropped.load(Ordering::Relaxed),
                dropped_events,
                audio_s: audio,
                wall_s: wall,
                real_time_factor: h.iter().sum::<f64>() / 1e3 / audio.max(1e-9),
                hop_ms_p50: percentile(&h, 0.5),
                hop_ms_p99: percentile(&h, 0.99),
                capture_to_tag_ms_p50: percentile(&c, 0.5),
                capture_to_tag_ms_p99: percentile(&c, 0.99),
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
        let mut on_hop = |h: Hop| {
            let c2t = popped_at.elapsed().as_secs_f64() * 1e3 + backlog as f64 * 1e3 / rate as f64;
            // Percentiles over the most recent hops: bounded memory however long the session.
            if hop_ms.len() >= 4096 {
                hop_ms.drain(..2048);
                c2t_ms.drain(..2048);
            }
            hop_ms.push(h.compute_ms);
            c2t_ms.push(c2t);
            let mut order: Vec<usize> = (0..h.scores.len()).collect();
            order.sort_by(|&a, &b| h.scores[b].total_cmp(&h.scores[a]));
            let ev = HopEvent {
                hop: h.index,
                t_audio_s: h.t_end,
                compute_ms: h.compute_ms,
                capture_to_tag_ms: c2t,
                level_db: h.level_db,
                scores: order
                    .iter()
                    .map(|&i| (labels[i].clone(), h.scores[i]))
                    .collect(),
                tags_on: h.on.iter().map(|&i| labels[i].clone()).collect(),
                tags_off: h.off.iter().map(|&i| labels[i].clone()).collect(),
                spectrum: h.column,
                pooled: h.pooled,
            };
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
