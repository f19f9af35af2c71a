//! The training config: one TOML section per concern (I-JEPA's configs/*.yaml layout). The
//! effective config is saved next to every checkpoint.

use std::path::Path;

use audio_jepa::model::{EncoderConfig, ModelError};
use audio_jepa::FrontendConfig;
use serde::{Deserialize, Serialize};

use crate::masks::MaskConfig;
use crate::objective::ObjectiveConfig;
use crate::predictor::PredictorConfig;

#[derive(Debug, thiserror::Error)]
pub enum TrainConfigError {
    #[error("cannot read training config {path}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed training config {path}")]
    Parse {
        path: std::path::PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("invalid setting `{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Masks(#[from] crate::masks::MaskError),
    /// A config file refused: the file, then what is wrong (issue 15: messages name the file).
    #[error("{path}: {inner}")]
    InFile {
        path: std::path::PathBuf,
        inner: Box<TrainConfigError>,
    },
}

/// `[model]`: a preset, optionally overridden field by field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSection {
    pub preset: String,
    pub embed_dim: Option<usize>,
    pub depth: Option<usize>,
    pub num_heads: Option<usize>,
    /// Initialisation of the patch embedding; see [`PatchInit`].
    pub patch_embed_init: PatchInit,
}

/// `[optim] loss`: the regression loss between predicted and target latents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// Mean squared error (A-JEPA).
    Mse,
    /// Smooth L1 with beta 1 (I-JEPA).
    SmoothL1,
}

/// How the patch embedding starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatchInit {
    /// N(0, 0.02), as every other linear layer (I-JEPA's `_init_weights`).
    Normal,
    /// Xavier-uniform over the flattened patch (MAE / AudioMAE's `initialize_weights`). With
    /// 256-value patches of std 0.5 (the (x - mean) / (2 std) input), N(0, 0.02) gives a content
    /// signal of about 0.16 per dimension against 0.71 for the sine-cosine positions, so the
    /// targets are mostly position and predictable without looking at the sound; Xavier gives
    /// about 0.5.
    Xavier,
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            preset: "edge".into(),
            embed_dim: None,
            depth: None,
            num_heads: None,
            patch_embed_init: PatchInit::Normal,
        }
    }
}

impl ModelSection {
    pub fn encoder_config(&self) -> Result<EncoderConfig, ModelError> {
        let mut c = EncoderConfig::preset(&self.preset)?;
        if let Some(v) = self.embed_dim {
            c.embed_dim = v;
        }
        if let Some(v) = self.depth {
            c.depth = v;
        }
        if let Some(v) = self.num_heads {
            c.num_heads = v;
        }
        c.validate()?;
        Ok(c)
    }
}

/// `[optim]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimSection {
    pub steps: u64,
    pub batch_size: usize,
    pub warmup_frac: f64,
    pub start_lr: f64,
    pub lr: f64,
    pub final_lr: f64,
    pub weight_decay: (f64, f64),
    pub betas: (f64, f64),
    pub eps: f64,
    pub ema: (f64, f64),
    pub clip_grad: f64,
    pub loss: LossKind,
    /// Stop when the loss exceeds this many times its running mean (an exploding run).
    pub explode_factor: f64,
    /// Arithmetic of the forward and backward passes; see [`Precision`].
    pub precision: Precision,
    /// A wall-clock horizon in minutes (`--minutes`): the learning-rate, weight-decay, EMA and
    /// mask schedules follow the elapsed training time instead of the step count, and the run
    /// ends when they end, however fast the machine is (as the PyTorch reference run does).
    /// `steps` is then only an upper bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minutes: Option<f64>,
    /// The first this fraction of the run updates the predictor only: the context encoder (and
    /// so its EMA target) stays as it is. For `pretrain --init ENCODER`, where a fresh predictor
    /// would otherwise send its first, random gradients into a trained encoder.
    #[serde(default)]
    pub encoder_frozen_frac: f64,
}

/// `[optim] precision`: how the step computes. Parameters, optimiser moments, the EMA target
/// and the loss are f32 either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Everything in f32 (the default).
    #[default]
    F32,
    /// Mixed precision: bf16 matmul operands, f32 sums, f32 master weights (I-JEPA's
    /// `use_bfloat16`). On a GPU, bf16 casts of the weights each step (tensor cores). On a CPU
    /// with AVX-512 BF16 (AMD Zen 4 and later, Intel Sapphire Rapids and later), f32 tensors
    /// with the fused linear layers' products in bf16 (`engine::gemm_bf16`, about 1.5x the
    /// f32 step); on other CPUs, f32 (candle's CPU bf16 ops would be slower than f32).
    Bf16,
}

impl Precision {
    pub fn dtype(self) -> candle_core::DType {
        match self {
            Precision::F32 => candle_core::DType::F32,
            Precision::Bf16 => candle_core::DType::BF16,
        }
    }
}

impl Default for OptimSection {
    fn default() -> Self {
        Self {
            steps: 5_000,
            batch_size: 32,
            warmup_frac: 0.06,
            start_lr: 1e-5,
            lr: 5e-4,
            final_lr: 1e-6,
            weight_decay: (0.04, 0.4),
            betas: (0.9, 0.999),
            eps: 1e-8,
            ema: (0.996, 1.0),
            clip_grad: 1.0,
            loss: LossKind::Mse,
            explode_factor: 50.0,
            precision: Precision::F32,
            minutes: None,
            encoder_frozen_frac: 0.0,
        }
    }
}

/// `[data]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataSection {
    /// Frames per training crop (a multiple of the patch size): 256 frames = 2.56 s = 16 columns.
    pub crop_frames: usize,
    /// Uniform gain jitter, +- this many dB.
    pub gain_jitter_db: f64,
    pub loader_threads: usize,
    /// Batches each loader thread may hold ready.
    pub prefetch: usize,
    /// How crops are drawn; see [`Sampling`].
    pub sampling: Sampling,
    /// Tile sampling crops from a clip's sound only, digital silence at either end trimmed
    /// (`true`), or from the whole clip (`false`, as the PyTorch reference crops ESC-50, whose
    /// clips are often a short event padded with digital silence to 5 s: the encoder then also
    /// learns what such silence looks like, which every whole-clip embedding contains).
    pub trim_silence: bool,
    /// Share of crops whose student (context-encoder) input has a second crop of the batch mixed
    /// in, in the power domain, at a gain drawn from `mix_gain_db`; the target encoder still
    /// sees the clean crop, so the student learns to predict through interference (M2D-X,
    /// BYOL-A's mixup). 0 turns it off.
    pub mix_prob: f64,
    /// Range of the mixed-in crop's gain in dB relative to its own level.
    pub mix_gain_db: (f64, f64),
    /// Where the audio comes from, each with its share of the crops (`[[data.sources]]`);
    /// `--data` on the command line replaces them.
    pub sources: Vec<SourceSpec>,
}

/// `[[data.sources]]`: one source of pretraining audio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// A folder (recursive), a CSV with a `filename` column, or a shard folder; a relative path
    /// is taken from the working directory.
    pub path: std::path::PathBuf,
    /// Share of the crops drawn from this source, relative to the other sources' weights.
    #[serde(default = "one")]
    pub weight: f64,
    /// For a CSV with a `fold` column: only these folds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folds: Option<Vec<u32>>,
    /// For a CSV: only rows where this column equals the value, `"esc10=True"`.
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub where_: Option<String>,
    /// For a folder: only these immediate subfolders (a name, or a prefix and `*`), e.g. the
    /// packages of the free-audio corpus. Each must exist, so a config pins what it trains on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// For a folder: never these immediate subfolders (a name, or a prefix and `*`); each must
    /// exist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

fn one() -> f64 {
    1.0
}

/// How training crops are drawn from the clips.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sampling {
    /// Every clip equally likely; a clip shorter than a crop is padded with silence (the log
    /// floor). With many short clips (the spoken digits: 0.4 s in a 2.56 s crop) most patches
    /// are then identical padding, trivially predictable, and the run collapses (see
    /// docs/runs/README.md).
    Clip,
    /// Clips drawn in proportion to their sound (digital silence at either end trimmed), and a
    /// crop longer than the clip filled with further clips, end to end, as a stream would hear
    /// them one after another. No padding is ever a target, but a target across the seam between
    /// two strangers cannot be predicted (most crops are such mosaics when the corpus has many
    /// short clips, as the spoken digits).
    Duration,
    /// Every clip of a source equally likely (as the PyTorch reference run draws), a random crop
    /// of its sound (digital silence at either end trimmed); a clip with less sound than a crop
    /// is tiled with itself from a random offset, never glued to another clip.
    Tile,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            crop_frames: 256,
            gain_jitter_db: 6.0,
            loader_threads: 1,
            prefetch: 4,
            sampling: Sampling::Tile,
            trim_silence: true,
            mix_prob: 0.0,
            mix_gain_db: (-15.0, -5.0),
            sources: Vec::new(),
        }
    }
}

/// `[run]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunSection {
    pub seed: u64,
    pub log_every: u64,
    pub checkpoint_every: u64,
    /// Effective rank and spread of the target embeddings every this many steps (0: never).
    pub rank_every: u64,
    /// Clips in the fixed batch the collapse watch uses.
    pub rank_clips: usize,
    /// Effective rank (RankMe) of token embeddings below which a collapse warning is raised.
    pub rank_warn: f64,
    /// Which encoder `encoder.safetensors` is (both are always saved beside it).
    pub export: ExportEncoder,
    /// The run whose checkpoint weights this run started from (`pretrain --init`), with fresh
    /// schedules; `None` for a run from random initialisation. Written by `pretrain`, so a
    /// run's saved config says where its weights came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<String>,
}

/// `[run] export`: the encoder a run hands to users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportEncoder {
    /// The context encoder, which the optimiser trains (what the PyTorch reference probes; in
    /// short runs the EMA target, whose momentum starts at 0.996, still holds much of its
    /// random initialisation: see docs/runs).
    #[default]
    Context,
    /// The EMA target encoder (I-JEPA's choice for long runs).
    Target,
}

impl Default for RunSection {
    fn default() -> Self {
        Self {
            seed: 0,
            log_every: 10,
            checkpoint_every: 200,
            rank_every: 100,
            rank_clips: 64,
            rank_warn: 2.0,
            export: ExportEncoder::Context,
            init: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub frontend: FrontendConfig,
    pub model: ModelSection,
    pub predictor: PredictorConfig,
    pub masks: MaskConfig,
    pub objective: ObjectiveConfig,
    pub optim: OptimSection,
    pub data: DataSection,
    pub run: RunSection,
}

impl TrainConfig {
    pub fn load(path: &Path) -> Result<Self, TrainConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| TrainConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text, path)
    }

    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Self, TrainConfigError> {
        let cfg: Self = toml::from_str(text).map_err(|e| TrainConfigError::Parse {
            path: origin.to_path_buf(),
            source: Box::new(e),
        })?;
        cfg.validate().map_err(|e| TrainConfigError::InFile {
            path: origin.to_path_buf(),
            inner: Box::new(e),
        })?;
        Ok(cfg)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot serialise: {e}\n"))
    }

    pub fn validate(&self) -> Result<(), TrainConfigError> {
        let invalid =
            |field: &'static str, reason: String| Err(TrainConfigError::Invalid { field, reason });
        self.frontend
            .validate()
            .map_err(|e| TrainConfigError::Invalid {
                field: "frontend",
                reason: e.to_string(),
            })?;
        let enc = self.model.encoder_config()?;
        if enc.n_mels != self.frontend.n_mels {
            return invalid(
                "model",
                format!(
                    "encoder expects {} mel bins, the front end makes {}",
                    enc.n_mels, self.frontend.n_mels
                ),
            );
        }
        self.predictor.block_config(&enc).validate()?;
        self.masks.validate()?;
        if let Err((field, reason)) = self.objective.check(enc.depth) {
            return invalid(field, reason);
        }
        let o = &self.optim;
        if o.steps == 0 {
            return invalid("optim.steps", "must be positive".into());
        }
        // Upper bounds keep a typo from becoming an allocation abort (issue 15): a batch of
        // 4096 crops of the base preset is already tens of GB.
        if !(1..=4096).contains(&o.batch_size) {
            return invalid(
                "optim.batch_size",
                format!("{} (1 to 4096 crops)", o.batch_size),
            );
        }
        if let Some(m) = o.minutes {
            if !(m.is_finite() && m > 0.0 && m <= 60.0 * 24.0 * 365.0) {
                return invalid(
                    "optim.minutes",
                    format!("{m} must be a positive number of minutes (at most a year)"),
                );
            }
        }
        if !(o.lr > 0.0 && o.start_lr >= 0.0 && o.final_lr >= 0.0) {
            return invalid("optim.lr", "learning rates must be positive".into());
        }
        if !(0.0..1.0).contains(&o.encoder_frozen_frac) {
            return invalid(
                "optim.encoder_frozen_frac",
                format!("{} not in [0, 1)", o.encoder_frozen_frac),
            );
        }
        if !(0.0..1.0).contains(&o.warmup_frac) {
            return invalid(
                "optim.warmup_frac",
                format!("{} not in [0, 1)", o.warmup_frac),
            );
        }
        if !(o.ema.0 > 0.0 && o.ema.0 <= o.ema.1 && o.ema.1 <= 1.0) {
            return invalid(
                "optim.ema",
                format!("{:?} must satisfy 0 < start <= end <= 1", o.ema),
            );
        }
        if !(o.betas.0 >= 0.0 && o.betas.0 < 1.0 && o.betas.1 >= 0.0 && o.betas.1 < 1.0) {
            return invalid("optim.betas", format!("{:?} not in [0, 1)", o.betas));
        }
        let d = &self.data;
        if d.crop_frames == 0
            || !d.crop_frames.is_multiple_of(enc.patch_size)
            || d.crop_frames > 4096
        {
            return invalid(
                "data.crop_frames",
                format!(
                    "{} must be a positive multiple of the patch size {}, at most 4096 frames (41 s)",
                    d.crop_frames, enc.patch_size
                ),
            );
        }
        if !(1..=64).contains(&d.loader_threads) {
            return invalid(
                "data.loader_threads",
                format!("{} (1 to 64 threads)", d.loader_threads),
            );
        }
        if !(d.mix_prob.is_finite() && (0.0..=1.0).contains(&d.mix_prob)) {
            return invalid("data.mix_prob", format!("{} not in [0, 1]", d.mix_prob));
        }
        let (g0, g1) = d.mix_gain_db;
        if !(g0.is_finite()
            && g1.is_finite()
            && g0 <= g1
            && (-60.0..=20.0).contains(&g0)
            && g1 <= 20.0)
        {
            return invalid(
                "data.mix_gain_db",
                format!(
                    "{:?} must be [low, high] dB with -60 <= low <= high <= 20",
                    d.mix_gain_db
                ),
            );
        }
        if !(1..=64).contains(&d.prefetch) {
            return invalid("data.prefetch", format!("{} (1 to 64 batches)", d.prefetch));
        }
        for (i, src) in d.sources.iter().enumerate() {
            if !(src.weight.is_finite() && src.weight >= 0.0) {
                return invalid(
                    "data.sources.weight",
                    format!(
                        "source {} ({}): weight {} must be >= 0",
                        i + 1,
                        src.path.display(),
                        src.weight
                    ),
                );
            }
            if let Some(p) = src.include.iter().chain(&src.exclude).find(|p| {
                p.is_empty()
                    || p.contains(['/', '\\'])
                    || p.find('*').is_some_and(|i| i + 1 != p.len())
            }) {
                return invalid(
                    "data.sources.include/exclude",
                    format!(
                        "source {} ({}): `{p}` must be a subfolder's name, or a prefix then `*`",
                        i + 1,
                        src.path.display()
                    ),
                );
            }
            if let Some(w) = &src.where_ {
                if audio_jepa::dataset::parse_where(w).is_err() {
                    return invalid(
                        "data.sources.where",
                        format!(
                            "source {} ({}): `{w}` is not COLUMN=VALUE",
                            i + 1,
                            src.path.display()
                        ),
                    );
                }
            }
        }
        if !d.sources.is_empty() && d.sources.iter().all(|s| s.weight == 0.0) {
            return invalid("data.sources.weight", "every source has weight 0".into());
        }
        if self.run.log_every == 0 {
            return invalid("run.log_every", "must be positive".into());
        }
        if self.run.checkpoint_every == 0 {
            return invalid("run.checkpoint_every", "must be positive".into());
        }
        Ok(())
    }

    /// How far through its schedules a run is, in `[0, 1]`: step over steps, or, with a
    /// wall-clock horizon, elapsed training seconds over the horizon.
    pub fn progress(&self, step: u64, elapsed_s: f64) -> f64 {
        match self.optim.minutes {
            Some(m) => (elapsed_s / (m * 60.0)).clamp(0.0, 1.0),
            None => (step as f64 / self.optim.steps.max(1) as f64).clamp(0.0, 1.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shipped config parses and validates, and survives the round trip through the
    /// effective config saved next to a checkpoint.
    #[test]
    fn shipped_configs_are_valid_and_round_trip() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let mut seen = 0;
        // The shipped configs, the ablation's arms, and the effective config of the run the
        // default model came from (the model card's command uses it).
        let mut paths: Vec<std::path::PathBuf> = Vec::new();
        for d in [dir.clone(), dir.join("ablation")] {
            paths.extend(std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().path()));
        }
        paths.push(dir.join("../../docs/runs/default-v2/config.toml"));
        for path in paths {
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            let cfg =
                TrainConfig::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let again = TrainConfig::from_toml_str(&cfg.to_toml(), &path).unwrap();
            assert_eq!(cfg, again, "{}", path.display());
            seen += 1;
        }
        assert!(seen >= 10, "configs found: {seen}");
        let gpu = TrainConfig::load(&dir.join("gpu-edge.toml")).unwrap();
        assert_eq!(gpu.optim.precision, Precision::Bf16);
    }

    #[test]
    fn an_unknown_precision_is_a_clear_error() {
        let err = TrainConfig::from_toml_str("[optim]\nprecision = \"fp8\"\n", Path::new("x.toml"))
            .unwrap_err();
        let text = format!("{err}: {:?}", std::error::Error::source(&err));
        assert!(text.contains("x.toml") && text.contains("fp8"), "{text}");
    }

    /// Absurd sizes are refused with the setting's name before anything is allocated
    /// (issue 15: `crop_frames = 1e8` and `frame_length_ms = 1e9` aborted on allocation).
    #[test]
    fn absurd_settings_name_their_field() {
        for (toml, field) in [
            ("[data]\ncrop_frames = 100000000\n", "data.crop_frames"),
            ("[optim]\nbatch_size = 0\n", "optim.batch_size"),
            ("[optim]\nbatch_size = 1000000\n", "optim.batch_size"),
            ("[run]\ncheckpoint_every = 0\n", "run.checkpoint_every"),
            ("[data]\nprefetch = 100000\n", "data.prefetch"),
            ("[data]\nmix_prob = 2\n", "data.mix_prob"),
            ("[data]\nmix_gain_db = [0, -10]\n", "data.mix_gain_db"),
            ("[objective]\nviews = 0\n", "objective.views"),
            (
                "[objective]\ntarget_layers = 7\n",
                "objective.target_layers",
            ),
            (
                "[objective]\nutterance_weight = -1\n",
                "objective.utterance_weight",
            ),
            (
                "[frontend]\nframe_length_ms = 1e9\n",
                "frontend.frame_length_ms",
            ),
            ("[frontend]\nsample_rate = 1\n", "frontend.sample_rate"),
            (
                "[[data.sources]]\npath = \"a\"\nexclude = [\"x/y\"]\n",
                "data.sources.include/exclude",
            ),
            (
                "[[data.sources]]\npath = \"a\"\ninclude = [\"*-music\"]\n",
                "data.sources.include/exclude",
            ),
            (
                "[[data.sources]]\npath = \"a\"\ninclude = [\"\"]\n",
                "data.sources.include/exclude",
            ),
        ] {
            let err = TrainConfig::from_toml_str(toml, Path::new("x.toml"))
                .and_then(|c| c.validate().map(|_| c));
            let text = format!("{:?}", err.as_ref().err());
            assert!(text.contains(field), "{toml}: {text}");
        }
    }
}
