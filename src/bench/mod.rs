//! `ajepa bench`'s measurements and report, as a library (the command only parses its flags,
//! calls these and prints): what one hop of live tagging costs on this machine, and whether it
//! fits a profile's latency budget.
//!
//! [`measure`] times the front end and the encoder (candle, the engine's f32 and int8 kernels)
//! into a [`Report`]; [`Report::judge`] sets the verdict against the profile's budget and the
//! warnings about noisy runs; [`markdown`] writes it to share; [`machine`] says what it ran on.

pub mod machine;
pub mod measure;

use serde::Serialize;

use crate::config::{Quantization, StreamConfig};

/// Why a measurement could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Model(#[from] candle_core::Error),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error(transparent)]
    Array(#[from] crate::arrays::ArrayError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("engine threads: {0}")]
    Threads(#[from] std::io::Error),
}

#[derive(Debug, Serialize)]
pub struct Report {
    /// `ajepa` version.
    pub version: &'static str,
    /// OS and architecture (and the distribution and kernel where known).
    pub os: String,
    /// Logical cores the OS reports.
    pub cores: usize,
    /// When the report was made, UTC (ISO 8601).
    pub timestamp_utc: String,
    /// The profile whose window, threads, arithmetic and budget were used.
    pub profile: String,
    pub cpu: String,
    pub cpu_features: Vec<&'static str>,
    pub threads: usize,
    pub input: String,
    pub audio_seconds: f64,
    pub repeat: usize,
    pub chunk: usize,
    /// Offline extractor, milliseconds per second of audio: median and best of `repeat` runs.
    pub offline_ms_per_audio_s: Stat,
    /// Streaming front end fed `chunk` samples per push, milliseconds per second of audio.
    pub streaming_ms_per_audio_s: Stat,
    /// Latency of one streaming push of `chunk` samples, in microseconds.
    pub push_latency_us: Percentiles,
    /// Real-time factor of the streaming front end (compute time / audio time), median.
    pub real_time_factor: f64,
    /// Heap allocations per push after warm-up, over all timed pushes.
    pub allocations_per_push: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoder: Option<EncoderReport>,
    /// Peak resident memory of this process (Linux `VmHWM`), MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_memory_mib: Option<f64>,
    /// The profile's runtime against its latency budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// Why the figures may not hold (noisy timings).
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Verdict {
    /// The runtime the profile uses (`engine f32` or `engine q8`).
    pub runtime: String,
    /// One hop at p99: the front end for a hop of audio + the encoder + the head, ms.
    pub hop_p99_ms: f64,
    pub budget_ms: f64,
    pub within_budget: bool,
    /// Compute per hop (p50) over the hop's audio.
    pub real_time_factor: f64,
}

#[derive(Debug, Serialize)]
pub struct EncoderReport {
    pub model: String,
    pub width: usize,
    pub depth: usize,
    pub patches: usize,
    pub threads: usize,
    /// The same window through each runtime, in one run.
    pub runtimes: Vec<RuntimeReport>,
    /// Cosine similarity of the int8 engine's pooled embedding to the f32 engine's.
    pub q8_cosine_to_f32: f32,
    /// A tagging head (10 classes, softmax) with its freqcat pooling of the tokens, microseconds
    /// per hop.
    pub head_us: Percentiles,
    /// Real-time factor of one hop's work (front end for one hop of audio + int8 encoder +
    /// head) at one hop per 160 ms: compute time / audio time.
    pub real_time_factor_q8: f64,
}

#[derive(Debug, Serialize)]
pub struct RuntimeReport {
    /// `candle f32`, `engine f32` or `engine q8`.
    pub runtime: String,
    /// Kernels used (the engine's; candle picks its own).
    pub isa: String,
    pub threads: usize,
    /// One forward pass over a window (batch 1) plus mean pooling, milliseconds.
    pub per_hop_ms: Percentiles,
    pub best_ms: f64,
    /// Heap allocations per hop after warm-up.
    pub allocations_per_hop: f64,
    /// The pooled embedding of the window (for the int8-against-f32 check; not reported).
    #[serde(skip)]
    pub pooled: Vec<f32>,
}

#[derive(Debug, Serialize)]
pub struct Stat {
    pub median: f64,
    pub best: f64,
}

#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

pub fn stat(mut v: Vec<f64>) -> Stat {
    v.sort_by(f64::total_cmp);
    Stat {
        median: percentile(&v, 0.5),
        best: v.first().copied().unwrap_or(f64::NAN),
    }
}

impl Report {
    /// Fills in what needs the whole report and the profile: the int8 hop's real-time factor,
    /// the verdict of the profile's runtime at p99 against its latency budget, and a warning
    /// for each engine runtime whose p95 is more than twice its p50 (a busy or throttling
    /// machine).
    pub fn judge(&mut self, sc: &StreamConfig) {
        let fe_ms_per_hop = self.streaming_ms_per_audio_s.median * 0.16;
        if let Some(e) = self.encoder.as_mut() {
            let q8 = e
                .runtimes
                .iter()
                .find(|r| r.runtime.starts_with("engine q8"));
            e.real_time_factor_q8 =
                (fe_ms_per_hop + q8.map_or(0.0, |r| r.per_hop_ms.p50) + e.head_us.p50 / 1e3)
                    / 160.0;
        }
        let Some(e) = &self.encoder else {
            return;
        };
        let want = if sc.quantization == Quantization::F32 {
            "engine f32"
        } else {
            "engine q8"
        };
        if let Some(r) = e.runtimes.iter().find(|r| r.runtime.starts_with(want)) {
            let hop_ms = sc.hop_columns as f64 * 160.0;
            let fe_hop = self.streaming_ms_per_audio_s.median * hop_ms / 1e3;
            let p99 = fe_hop + r.per_hop_ms.p99 + e.head_us.p99 / 1e3;
            self.verdict = Some(Verdict {
                runtime: r.runtime.clone(),
                hop_p99_ms: p99,
                budget_ms: sc.latency_budget_ms,
                within_budget: p99 <= sc.latency_budget_ms,
                real_time_factor: (fe_hop + r.per_hop_ms.p50 + e.head_us.p50 / 1e3) / hop_ms,
            });
        }
        for r in e
            .runtimes
            .iter()
            .filter(|r| r.runtime.starts_with("engine"))
        {
            let spread = r.per_hop_ms.p95 / r.per_hop_ms.p50;
            if spread > 2.0 {
                self.warnings.push(format!(
                    "{}: p95 is {spread:.1}x p50 ({:.2} against {:.2} ms): the machine was busy or changed speed during the run; close other programs or raise --repeat, and compare ratios rather than times",
                    r.runtime, r.per_hop_ms.p95, r.per_hop_ms.p50
                ));
            }
        }
    }
}

/// The report as Markdown, for an issue or a wiki page.
pub fn markdown(r: &Report) -> String {
    let mut s = format!(
        "# ajepa bench\n\n| | |\n|---|---|\n| ajepa | {} |\n| when (UTC) | {} |\n| OS | {} |\n| CPU | {} ({}) |\n| cores | {} |\n| profile | {} |\n| input | {} ({:.2} s of audio), {} repetitions |\n",
        r.version,
        r.timestamp_utc,
        r.os,
        r.cpu,
        r.cpu_features.join(" "),
        r.cores,
        r.profile,
        r.input,
        r.audio_seconds,
        r.repeat
    );
    s += &format!(
        "\n## Front end (one thread)\n\n| stage | median | best |\n|---|---:|---:|\n| offline, ms per s of audio | {:.4} | {:.4} |\n| streaming by {}, ms per s of audio | {:.4} | {:.4} |\n\nPush latency p50 / p95 / p99: {:.2} / {:.2} / {:.2} us; heap allocations per push {:.3}.\n",
        r.offline_ms_per_audio_s.median,
        r.offline_ms_per_audio_s.best,
        r.chunk,
        r.streaming_ms_per_audio_s.median,
        r.streaming_ms_per_audio_s.best,
        r.push_latency_us.p50,
        r.push_latency_us.p95,
        r.push_latency_us.p99,
        r.allocations_per_push
    );
    if let Some(e) = &r.encoder {
        s += &format!(
            "\n## Encoder per hop ({}, {} x {}, {} patches, batch 1)\n\n| runtime | kernels | threads | p50 ms | p95 ms | p99 ms | best ms | allocations per hop |\n|---|---|---:|---:|---:|---:|---:|---:|\n",
            e.model, e.width, e.depth, e.patches
        );
        for t in &e.runtimes {
            s += &format!(
                "| {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.1} |\n",
                t.runtime,
                t.isa,
                t.threads,
                t.per_hop_ms.p50,
                t.per_hop_ms.p95,
                t.per_hop_ms.p99,
                t.best_ms,
                t.allocations_per_hop
            );
        }
        s += &format!(
            "\nint8 against f32: cosine {:.5}. Head (freqcat pooling, 10 classes): p50 {:.2} us.\n",
            e.q8_cosine_to_f32, e.head_us.p50
        );
    }
    if let Some(v) = &r.verdict {
        s += &format!(
            "\n## Verdict\n\n{}: one hop at p99 takes {:.2} ms against the profile's budget of {:.0} ms: **{}**; real-time factor {:.4}.\n",
            v.runtime,
            v.hop_p99_ms,
            v.budget_ms,
            if v.within_budget { "within budget" } else { "over budget" },
            v.real_time_factor
        );
    }
    for w in &r.warnings {
        s += &format!("\n> warning: {w}\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::measure::{synthetic, time_frontend};
    use super::*;

    fn pct(p50: f64, p95: f64, p99: f64) -> Percentiles {
        Percentiles { p50, p95, p99 }
    }

    fn runtime(name: &str, p: Percentiles) -> RuntimeReport {
        RuntimeReport {
            runtime: name.into(),
            isa: "test".into(),
            threads: 1,
            per_hop_ms: p,
            best_ms: 0.0,
            allocations_per_hop: 0.0,
            pooled: Vec::new(),
        }
    }

    fn report(q8: Percentiles) -> Report {
        Report {
            version: "0",
            os: String::new(),
            cores: 1,
            timestamp_utc: String::new(),
            profile: "test".into(),
            cpu: String::new(),
            cpu_features: Vec::new(),
            threads: 1,
            input: String::new(),
            audio_seconds: 1.0,
            repeat: 1,
            chunk: 160,
            // 10 ms of front end per second of audio: 1.6 ms per 160 ms hop.
            offline_ms_per_audio_s: Stat {
                median: 5.0,
                best: 5.0,
            },
            streaming_ms_per_audio_s: Stat {
                median: 10.0,
                best: 10.0,
            },
            push_latency_us: pct(1.0, 1.0, 1.0),
            real_time_factor: 0.01,
            allocations_per_push: 0.0,
            encoder: Some(EncoderReport {
                model: "m".into(),
                width: 8,
                depth: 1,
                patches: 48,
                threads: 1,
                runtimes: vec![
                    runtime("engine f32", pct(4.0, 4.5, 5.0)),
                    runtime("engine q8", q8),
                ],
                q8_cosine_to_f32: 1.0,
                head_us: pct(400.0, 400.0, 400.0),
                real_time_factor_q8: 0.0,
            }),
            peak_memory_mib: None,
            verdict: None,
            warnings: Vec::new(),
        }
    }

    #[test]
    fn the_verdict_adds_front_end_encoder_and_head_against_the_budget() {
        let sc = StreamConfig {
            hop_columns: 1,
            latency_budget_ms: 10.0,
            quantization: Quantization::Q8,
            ..StreamConfig::default()
        };
        let mut r = report(pct(2.0, 3.0, 8.0));
        r.judge(&sc);
        let v = r.verdict.as_ref().unwrap();
        // p99: 1.6 (front end) + 8 (encoder) + 0.4 (head) = 10.0 ms, just within 10 ms.
        assert_eq!(v.runtime, "engine q8");
        assert!((v.hop_p99_ms - 10.0).abs() < 1e-9, "{}", v.hop_p99_ms);
        assert!(v.within_budget);
        // p50 over the hop's 160 ms: (1.6 + 2 + 0.4) / 160.
        assert!((v.real_time_factor - 4.0 / 160.0).abs() < 1e-12);
        assert!(r.warnings.is_empty());
        // A noisy run (p95 > 2 x p50) is said, and a slower p99 is over budget.
        let mut r = report(pct(2.0, 5.0, 9.0));
        r.judge(&sc);
        assert!(!r.verdict.as_ref().unwrap().within_budget);
        assert_eq!(r.warnings.len(), 1);
        assert!(
            r.warnings[0].starts_with("engine q8: p95 is 2.5x p50"),
            "{:?}",
            r.warnings
        );
        assert!(markdown(&r).contains("**over budget**"));
    }

    #[test]
    fn the_front_end_is_timed_and_bad_settings_are_errors() {
        let cfg = crate::FrontendConfig::default();
        let x = synthetic(1.0, cfg.sample_rate);
        let t = time_frontend(&cfg, &x, 2, 160, &|| 0).unwrap();
        assert!(t.streaming_ms_per_audio_s.median > 0.0);
        assert!(t.push_latency_us.p50 <= t.push_latency_us.p99);
        assert_eq!(t.allocations_per_push, 0.0);
        assert!(time_frontend(&cfg, &x, 0, 160, &|| 0).is_err());
        assert!(time_frontend(&cfg, &x[..10], 2, 160, &|| 0).is_err());
    }
}
