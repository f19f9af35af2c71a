//! Typed configuration, loaded from TOML profiles (`firmware-config/*.toml`) and validated before use.
//!
//! One section per concern, as in I-JEPA's configs: `[frontend]` today; the model, streaming and
//! quantization sections join it as those parts land. Unknown keys are rejected so that a typo in a
//! profile is an error instead of a silently ignored setting.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Errors from loading or validating a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed config {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("invalid setting `{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// A setting refused in a file: the file, then what is wrong (issue 15: every message names
    /// the file or setting).
    #[error("{path}: {inner}")]
    InFile {
        path: PathBuf,
        inner: Box<ConfigError>,
    },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Analysis window applied to each frame, as in Kaldi's `--window-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowKind {
    /// Symmetric Hann, `0.5 - 0.5 cos(2 pi n / (N - 1))` (Kaldi's "hanning"; AudioMAE / A-JEPA use it).
    Hanning,
    /// Symmetric Hamming, `0.54 - 0.46 cos(2 pi n / (N - 1))`.
    Hamming,
    /// Kaldi's default: Hann raised to the power 0.85.
    Povey,
    /// No window.
    Rectangular,
}

/// The log-mel front end shared by training and streaming.
///
/// Defaults are the AudioMAE / A-JEPA convention, which is `torchaudio.compliance.kaldi.fbank` with
/// `htk_compat=True, window_type='hanning', num_mel_bins=128, dither=0` (see
/// `tests/fixtures/frontend/README.md` for every hidden Kaldi default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FrontendConfig {
    /// Sample rate the front end works at; audio is resampled to it on load.
    pub sample_rate: u32,
    /// Frame length in milliseconds (Kaldi `--frame-length`).
    pub frame_length_ms: f64,
    /// Hop between frames in milliseconds (Kaldi `--frame-shift`).
    pub frame_shift_ms: f64,
    /// FFT size; `None` rounds the frame length up to a power of two, as Kaldi does.
    pub n_fft: Option<usize>,
    /// Number of triangular mel filters.
    pub n_mels: usize,
    /// Lowest filter edge in Hz.
    pub f_min: f64,
    /// Highest filter edge in Hz; at most half the sample rate.
    pub f_max: f64,
    /// Pre-emphasis coefficient applied inside each frame (0 disables it).
    pub preemphasis: f32,
    /// Subtract each frame's mean before pre-emphasis (Kaldi `--remove-dc-offset`).
    pub remove_dc_offset: bool,
    pub window: WindowKind,
    /// Energies are floored at this value before the log (Kaldi uses f32 machine epsilon).
    pub log_floor: f32,
    /// Normalisation `(x - mean) / (2 std)` applied to model inputs (AudioSet statistics by default).
    pub norm_mean: f32,
    pub norm_std: f32,
}

impl Default for FrontendConfig {
    fn default() -> Self {
        Self {
            sample_rate: 16_000,
            frame_length_ms: 25.0,
            frame_shift_ms: 10.0,
            n_fft: None,
            n_mels: 128,
            f_min: 20.0,
            f_max: 8_000.0,
            preemphasis: 0.97,
            remove_dc_offset: true,
            window: WindowKind::Hanning,
            log_floor: f32::EPSILON,
            norm_mean: -4.267_739_3,
            norm_std: 4.568_997_4,
        }
    }
}

impl FrontendConfig {
    /// Samples per frame; Kaldi truncates `rate * ms / 1000`.
    pub fn frame_length(&self) -> usize {
        (self.sample_rate as f64 * self.frame_length_ms * 0.001) as usize
    }

    /// Samples between frame starts.
    pub fn hop_length(&self) -> usize {
        (self.sample_rate as f64 * self.frame_shift_ms * 0.001) as usize
    }

    /// FFT size actually used.
    pub fn fft_size(&self) -> usize {
        self.n_fft
            .unwrap_or_else(|| self.frame_length().next_power_of_two())
    }

    /// Number of complete frames in `n` samples (Kaldi `snip_edges=true`).
    pub fn num_frames(&self, n: usize) -> usize {
        let len = self.frame_length();
        if n < len {
            0
        } else {
            1 + (n - len) / self.hop_length()
        }
    }

    /// Checks every setting; the front end is only ever built from a validated config.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !crate::audio::RATE_RANGE.contains(&self.sample_rate) {
            return Err(invalid(
                "frontend.sample_rate",
                format!(
                    "{} Hz (supported: {} to {} Hz)",
                    self.sample_rate,
                    crate::audio::RATE_RANGE.start(),
                    crate::audio::RATE_RANGE.end()
                ),
            ));
        }
        // Upper bounds: a typo such as 1e9 ms must be an error, not an allocation abort.
        if !(self.frame_length_ms.is_finite()
            && self.frame_length_ms > 0.0
            && self.frame_length_ms <= 1000.0)
        {
            return Err(invalid(
                "frontend.frame_length_ms",
                format!(
                    "{} (a number of ms, above 0, at most 1000)",
                    self.frame_length_ms
                ),
            ));
        }
        if !(self.frame_shift_ms.is_finite() && self.frame_shift_ms > 0.0) {
            return Err(invalid(
                "frontend.frame_shift_ms",
                "must be a positive number",
            ));
        }
        let len = self.frame_length();
        if len < 2 {
            return Err(invalid(
                "frontend.frame_length_ms",
                format!(
                    "gives {len} samples at {} Hz; need at least 2",
                    self.sample_rate
                ),
            ));
        }
        let hop = self.hop_length();
        if hop == 0 {
            return Err(invalid(
                "frontend.frame_shift_ms",
                format!("gives 0 samples at {} Hz", self.sample_rate),
            ));
        }
        if hop > len {
            return Err(invalid(
                "frontend.frame_shift_ms",
                format!(
                    "hop ({} ms, {hop} samples) is longer than the frame ({} ms, {len} samples): samples would be skipped",
                    self.frame_shift_ms, self.frame_length_ms
                ),
            ));
        }
        if let Some(n) = self.n_fft {
            if n > 1 << 16 {
                return Err(invalid("frontend.n_fft", format!("{n} (at most 65536)")));
            }
            if n < len {
                return Err(invalid(
                    "frontend.n_fft",
                    format!("{n} is shorter than the frame ({len} samples)"),
                ));
            }
        }
        if !(1..=1024).contains(&self.n_mels) {
            return Err(invalid(
                "frontend.n_mels",
                format!("{} (1 to 1024 mel bins)", self.n_mels),
            ));
        }
        let nyquist = self.sample_rate as f64 / 2.0;
        if !(self.f_min.is_finite() && self.f_min >= 0.0) {
            return Err(invalid("frontend.f_min", "must be a non-negative number"));
        }
        if !self.f_max.is_finite() || self.f_max > nyquist {
            return Err(invalid(
                "frontend.f_max",
                format!(
                    "{} Hz is above the Nyquist frequency ({nyquist} Hz)",
                    self.f_max
                ),
            ));
        }
        if self.f_max <= self.f_min {
            return Err(invalid(
                "frontend.f_max",
                format!("{} Hz must be above f_min ({} Hz)", self.f_max, self.f_min),
            ));
        }
        if !(0.0..=1.0).contains(&self.preemphasis) {
            return Err(invalid("frontend.preemphasis", "must lie in [0, 1]"));
        }
        if !(self.log_floor.is_finite() && self.log_floor > 0.0) {
            return Err(invalid("frontend.log_floor", "must be a positive number"));
        }
        if !self.norm_mean.is_finite() {
            return Err(invalid("frontend.norm_mean", "must be finite"));
        }
        if !(self.norm_std.is_finite() && self.norm_std > 0.0) {
            return Err(invalid("frontend.norm_std", "must be a positive number"));
        }
        Ok(())
    }
}

/// A device profile: one section per concern.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Profile {
    /// Free-text name shown to the user.
    pub name: Option<String>,
    pub frontend: FrontendConfig,
    pub stream: StreamConfig,
}

/// Numeric precision of the encoder on the device (the engine's kernels, `crate::engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quantization {
    /// f32 matrix products: the offline encoder's results to ~1e-6.
    F32,
    /// int8 weights (per output channel) and activations (per token): 2.7x faster on the edge
    /// preset with AVX-512 VNNI, pooled-embedding cosine >= 0.99 to f32 (BENCHMARKS.md).
    Q8,
    /// 4-bit weight files; computed as int8 like `q8`.
    Q4,
}

/// `[stream]`: the live-tagging settings of a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamConfig {
    /// Analysis window, in 160 ms patch columns.
    pub window_columns: usize,
    /// Hop between encoder runs, in patch columns.
    pub hop_columns: usize,
    /// Encoder preset the device is sized for (tiny, edge, small, base).
    pub model_preset: String,
    pub quantization: Quantization,
    /// Encoder threads (1 to 256): the engine splits each window's work over this many, with
    /// the same result for every count. The live pipeline times one thread against all of
    /// them and keeps the faster on the machine at hand; `bench --threads` measures any count.
    pub threads: usize,
    /// Capacity of the capture ring, in seconds of audio.
    pub ring_seconds: f64,
    /// Per-hop compute budget; hops are skipped when the worker falls behind it.
    pub latency_budget_ms: f64,
    /// Default tag threshold.
    pub threshold: f32,
    /// Hops quieter than this (RMS of their audio, dBFS) are silence: no tag turns on. A quiet
    /// room through a laptop microphone reads about -60 to -50; -120 turns the gate off.
    pub silence_dbfs: f32,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            window_columns: 6,
            hop_columns: 1,
            model_preset: "edge".into(),
            quantization: Quantization::F32,
            threads: 1,
            ring_seconds: 2.0,
            latency_budget_ms: 50.0,
            threshold: 0.5,
            silence_dbfs: -60.0,
        }
    }
}

/// The range of a silence gate setting, dBFS; its bottom (-120) turns the gate off.
pub const SILENCE_DBFS: std::ops::RangeInclusive<f32> = -120.0..=0.0;

/// The gate a `silence_dbfs` setting asks for (`None`: no gate, at the bottom of
/// [`SILENCE_DBFS`]); an error outside the range.
pub fn silence_gate(dbfs: f32) -> Result<Option<f32>, ConfigError> {
    if !SILENCE_DBFS.contains(&dbfs) {
        return Err(invalid(
            "stream.silence_dbfs",
            format!("{dbfs} dBFS (-120 to 0; -120 turns the gate off)"),
        ));
    }
    Ok((dbfs > *SILENCE_DBFS.start()).then_some(dbfs))
}

impl StreamConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=64).contains(&self.window_columns) {
            return Err(invalid(
                "stream.window_columns",
                format!(
                    "{} (1 to 64 patch columns: 0.16 s to 10.24 s)",
                    self.window_columns
                ),
            ));
        }
        if self.hop_columns == 0 || self.hop_columns > self.window_columns {
            return Err(invalid(
                "stream.hop_columns",
                format!(
                    "window {} and hop {} columns must be positive, the hop at most the window",
                    self.window_columns, self.hop_columns
                ),
            ));
        }
        if !["tiny", "edge", "small", "base"].contains(&self.model_preset.as_str()) {
            return Err(invalid(
                "stream.model_preset",
                format!(
                    "unknown preset `{}` (tiny, edge, small, base)",
                    self.model_preset
                ),
            ));
        }
        if self.threads == 0 || self.threads > 256 {
            return Err(invalid(
                "stream.threads",
                format!("{} threads", self.threads),
            ));
        }
        if !(self.ring_seconds >= 0.2 && self.ring_seconds <= 60.0) {
            return Err(invalid(
                "stream.ring_seconds",
                format!("{} s (0.2 to 60)", self.ring_seconds),
            ));
        }
        let hop_ms = self.hop_columns as f64 * 160.0;
        if !(self.latency_budget_ms > 0.0 && self.latency_budget_ms <= hop_ms) {
            return Err(invalid(
                "stream.latency_budget_ms",
                format!(
                    "{} ms must be positive and at most the hop ({hop_ms} ms), or the tagger falls behind",
                    self.latency_budget_ms
                ),
            ));
        }
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            return Err(invalid(
                "stream.threshold",
                format!("{} not in (0, 1)", self.threshold),
            ));
        }
        silence_gate(self.silence_dbfs)?;
        Ok(())
    }
}

impl Profile {
    /// Parses and validates a profile from TOML text; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let profile: Profile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_path_buf(),
            source: Box::new(e),
        })?;
        profile.validate().map_err(|e| ConfigError::InFile {
            path: origin.to_path_buf(),
            inner: Box::new(e),
        })?;
        Ok(profile)
    }

    /// Reads, parses and validates a profile file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text, path)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.frontend.validate()?;
        self.stream.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_audiomae_convention() {
        let c = FrontendConfig::default();
        c.validate().unwrap();
        assert_eq!(c.frame_length(), 400);
        assert_eq!(c.hop_length(), 160);
        assert_eq!(c.fft_size(), 512);
        assert_eq!(c.num_frames(80_000), 498);
        assert_eq!(c.num_frames(8_602), 52);
        assert_eq!(c.num_frames(399), 0);
        assert_eq!(c.num_frames(400), 1);
    }

    fn err_field(c: FrontendConfig) -> &'static str {
        match c.validate() {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid-setting error, got {other:?}"),
        }
    }

    #[test]
    fn rejects_absurd_sizes_by_name() {
        let base = FrontendConfig::default();
        let huge_frame = FrontendConfig {
            frame_length_ms: 1e9,
            ..base.clone()
        };
        assert_eq!(err_field(huge_frame), "frontend.frame_length_ms");
        let huge_fft = FrontendConfig {
            n_fft: Some(1 << 30),
            ..base.clone()
        };
        assert_eq!(err_field(huge_fft), "frontend.n_fft");
        let mels = FrontendConfig {
            n_mels: 100_000,
            ..base.clone()
        };
        assert_eq!(err_field(mels), "frontend.n_mels");
        let rate = FrontendConfig {
            sample_rate: 4_000_000_000,
            ..base
        };
        assert_eq!(err_field(rate), "frontend.sample_rate");
        let stream = StreamConfig {
            window_columns: 100_000,
            hop_columns: 1,
            ..StreamConfig::default()
        };
        match stream.validate() {
            Err(ConfigError::Invalid { field, .. }) => assert_eq!(field, "stream.window_columns"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_bad_settings() {
        let base = FrontendConfig::default();
        let hop_too_long = FrontendConfig {
            frame_shift_ms: 30.0,
            ..base.clone()
        };
        assert_eq!(err_field(hop_too_long), "frontend.frame_shift_ms");
        let above_nyquist = FrontendConfig {
            f_max: 9_000.0,
            ..base.clone()
        };
        assert_eq!(err_field(above_nyquist), "frontend.f_max");
        let no_mels = FrontendConfig {
            n_mels: 0,
            ..base.clone()
        };
        assert_eq!(err_field(no_mels), "frontend.n_mels");
        let short_fft = FrontendConfig {
            n_fft: Some(256),
            ..base.clone()
        };
        assert_eq!(err_field(short_fft), "frontend.n_fft");
        let zero_std = FrontendConfig {
            norm_std: 0.0,
            ..base.clone()
        };
        assert_eq!(err_field(zero_std), "frontend.norm_std");
        let inverted = FrontendConfig {
            f_min: 8_000.0,
            f_max: 4_000.0,
            ..base
        };
        assert_eq!(err_field(inverted), "frontend.f_max");
    }

    #[test]
    fn toml_errors_name_the_file_and_the_key() {
        let origin = Path::new("profile.toml");
        let typo = "[frontend]\nn_mel = 64\n";
        let err = Profile::from_toml_str(typo, origin).unwrap_err();
        // The file is in the message, the cause (with the key) in the source chain.
        let cause = std::error::Error::source(&err).map(|s| s.to_string());
        let msg = format!("{err}: {}", cause.unwrap_or_default());
        assert!(
            msg.contains("profile.toml") && msg.contains("n_mel"),
            "{msg}"
        );
        let wrong_type = "[frontend]\nn_mels = \"many\"\n";
        assert!(matches!(
            Profile::from_toml_str(wrong_type, origin),
            Err(ConfigError::Parse { .. })
        ));
        let invalid_value = "[frontend]\nf_max = 12000.0\n";
        let msg = Profile::from_toml_str(invalid_value, origin)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("Nyquist"), "{msg}");
        let partial = "[frontend]\nn_mels = 64\n";
        let p = Profile::from_toml_str(partial, origin).unwrap();
        assert_eq!(p.frontend.n_mels, 64);
        assert_eq!(p.frontend.frame_length(), 400);
    }
}
