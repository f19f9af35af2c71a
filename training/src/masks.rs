//! Mask sampling: I-JEPA multiblock, A-JEPA time-frequency masks, and the curriculum between them.
//!
//! Grid: `n_freq` rows (frequency) x `n_time` columns (time), patches numbered time-major
//! (`index = col * n_freq + row`, as in `audio_jepa::frontend::patches`).
//!
//! * Random block (I-JEPA, src/masks/multiblock.py `MaskCollator`): `num_targets` blocks of one
//!   size (scale of the grid, aspect ratio h/w drawn log-uniformly), drawn once per batch and
//!   shared by every block of every sample; each sample places its blocks at random. The context is one block; on
//!   this rectangular grid it spans the full frequency height and a `context_scale` fraction of
//!   the time columns (DESIGN.md: I-JEPA's square-ish block covers too little of an 8 x 16 grid),
//!   with every target patch removed from it. A placement that leaves fewer than `min_keep`
//!   context patches is redrawn, up to `max_tries` times; after that, as I-JEPA's timeout does,
//!   the constraint is relaxed (the last targets stop being removed from the context) and the
//!   batch's `relaxed` count says so.
//! * Time-frequency (A-JEPA, section 3.2): `tf_num_targets` targets of scale `tf_target_scale`,
//!   each widened along one axis to the whole spectrogram, so it removes whole time columns (all
//!   frequencies) or whole frequency rows (all times). Orientation and size are drawn once per
//!   batch per target.
//! * Curriculum: at step `s` of `S` a batch uses time-frequency masks with probability
//!   `f(s) = min(1, sqrt(s (1 - c0^2) / S + c0^2))` ("root"), or a linear, constant or inverse
//!   schedule for ablations.
//!
//! Context lengths differ between samples (targets overlap each other by chance); as in
//! I-JEPA's collator every context is cut to the batch's shortest, here by a random subset
//! rather than the first indices, so that no part of the grid is favoured.

use rand::seq::SliceRandom;
use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

/// `[masks]` section of a training config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaskConfig {
    pub num_targets: usize,
    pub target_scale: (f64, f64),
    pub target_aspect: (f64, f64),
    pub context_scale: (f64, f64),
    pub min_keep: usize,
    pub max_tries: usize,
    pub tf_num_targets: usize,
    pub tf_target_scale: (f64, f64),
    pub curriculum: Curriculum,
    /// `c0` of the root and linear schedules; the probability of the constant one.
    pub c0: f64,
}

impl Default for MaskConfig {
    fn default() -> Self {
        Self {
            num_targets: 4,
            target_scale: (0.15, 0.2),
            target_aspect: (0.75, 1.5),
            context_scale: (0.85, 1.0),
            min_keep: 10,
            max_tries: 20,
            tf_num_targets: 3,
            tf_target_scale: (0.05, 0.075),
            curriculum: Curriculum::Root,
            c0: 0.01,
        }
    }
}

/// How the probability of time-frequency masks moves over training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Curriculum {
    /// A-JEPA's root competence function, easy (random block) to hard (time-frequency).
    Root,
    /// `c0 + (1 - c0) s / S`.
    Linear,
    /// Always `c0` (a fixed random mix).
    Constant,
    /// The root schedule reversed in time (hard first), A-JEPA's "inverse" ablation.
    Inverse,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MaskError {
    #[error("invalid mask setting `{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// Most target blocks per mask (`masks.num_targets`, `masks.tf_num_targets`).
pub const MAX_TARGETS: usize = 64;
/// Most draws per block before the constraint is relaxed (`masks.max_tries`).
pub const MAX_TRIES: usize = 10_000;
/// Most context patches required (`masks.min_keep`); a 10 s crop has 8 x 64 patches.
pub const MAX_MIN_KEEP: usize = 4096;

impl MaskConfig {
    pub fn validate(&self) -> Result<(), MaskError> {
        let range = |field: &'static str, (lo, hi): (f64, f64), max: f64| {
            if !(lo > 0.0 && lo <= hi && hi <= max) {
                return Err(MaskError::Invalid {
                    field,
                    reason: format!("({lo}, {hi}) must satisfy 0 < lo <= hi <= {max}"),
                });
            }
            Ok(())
        };
        range("masks.target_scale", self.target_scale, 1.0)?;
        range("masks.target_aspect", self.target_aspect, 100.0)?;
        range("masks.context_scale", self.context_scale, 1.0)?;
        range("masks.tf_target_scale", self.tf_target_scale, 1.0)?;
        // Upper bounds (issue 15: a huge count aborted on allocation when the first batch was
        // drawn, after the data had loaded): I-JEPA draws 4 target blocks, A-JEPA 3 strips.
        for (field, n) in [
            ("masks.num_targets", self.num_targets),
            ("masks.tf_num_targets", self.tf_num_targets),
        ] {
            if !(1..=MAX_TARGETS).contains(&n) {
                return Err(MaskError::Invalid {
                    field,
                    reason: format!("{n} target blocks (1 to {MAX_TARGETS})"),
                });
            }
        }
        if self.max_tries > MAX_TRIES {
            return Err(MaskError::Invalid {
                field: "masks.max_tries",
                reason: format!("{} (at most {MAX_TRIES})", self.max_tries),
            });
        }
        if self.min_keep > MAX_MIN_KEEP {
            return Err(MaskError::Invalid {
                field: "masks.min_keep",
                reason: format!("{} patches (at most {MAX_MIN_KEEP})", self.min_keep),
            });
        }
        if !(0.0..=1.0).contains(&self.c0) {
            return Err(MaskError::Invalid {
                field: "masks.c0",
                reason: format!("{} is not a probability", self.c0),
            });
        }
        Ok(())
    }

    /// Probability of time-frequency masks at `step` of `total`.
    pub fn tf_probability(&self, step: u64, total: u64) -> f64 {
        curriculum_probability(self.curriculum, self.c0, step, total)
    }

    /// Probability of time-frequency masks at `progress` in `[0, 1]` of the run.
    pub fn tf_probability_at(&self, progress: f64) -> f64 {
        curriculum_probability_at(self.curriculum, self.c0, progress)
    }
}

/// The curriculum's probability of a time-frequency batch at `step` of `total`.
pub fn curriculum_probability(kind: Curriculum, c0: f64, step: u64, total: u64) -> f64 {
    let t = if total == 0 {
        1.0
    } else {
        step as f64 / total as f64
    };
    curriculum_probability_at(kind, c0, t)
}

/// The curriculum's probability of a time-frequency batch at `progress` in `[0, 1]` of the run.
pub fn curriculum_probability_at(kind: Curriculum, c0: f64, progress: f64) -> f64 {
    let t = progress.clamp(0.0, 1.0);
    let root = |t: f64| (t * (1.0 - c0 * c0) + c0 * c0).sqrt().min(1.0);
    match kind {
        Curriculum::Root => root(t),
        Curriculum::Linear => (c0 + (1.0 - c0) * t).min(1.0),
        Curriculum::Constant => c0,
        Curriculum::Inverse => root(1.0 - t),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskKind {
    RandomBlock,
    TimeFrequency,
}

/// The masks of one batch. Every context has the same length, and target `m` has the same
/// length in every sample, so they stack into `[B, K]` and `[B, N_m]` index tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchMasks {
    pub kind: MaskKind,
    /// `[B][K]` sorted patch indices the context encoder sees.
    pub context: Vec<Vec<u32>>,
    /// `[M][B][N_m]` sorted patch indices of each target block.
    pub targets: Vec<Vec<Vec<u32>>>,
    /// Samples whose context had to overlap a target after `max_tries` draws.
    pub relaxed: usize,
}

/// A rectangle of the grid: rows `top..top + h`, columns `left..left + w`.
#[derive(Debug, Clone, Copy)]
struct Rect {
    top: usize,
    left: usize,
    h: usize,
    w: usize,
}

impl Rect {
    fn indices(&self, n_freq: usize) -> Vec<u32> {
        let mut v = Vec::with_capacity(self.h * self.w);
        for col in self.left..self.left + self.w {
            for row in self.top..self.top + self.h {
                v.push((col * n_freq + row) as u32);
            }
        }
        v
    }
}

/// I-JEPA's `_sample_block_size`: scale of the grid, aspect `h / w` log-uniform, each side
/// strictly smaller than the grid's.
fn block_size(
    rng: &mut impl Rng,
    n_freq: usize,
    n_time: usize,
    scale: (f64, f64),
    aspect: (f64, f64),
) -> (usize, usize) {
    let s = rng.random_range(scale.0..=scale.1);
    let keep = (n_freq * n_time) as f64 * s;
    let ar = rng.random_range(aspect.0.ln()..=aspect.1.ln()).exp();
    let h = ((keep * ar).sqrt().round() as usize).clamp(1, n_freq.saturating_sub(1).max(1));
    let w = ((keep / ar).sqrt().round() as usize).clamp(1, n_time.saturating_sub(1).max(1));
    (h, w)
}

fn place(rng: &mut impl Rng, n_freq: usize, n_time: usize, h: usize, w: usize) -> Rect {
    Rect {
        top: rng.random_range(0..=n_freq - h),
        left: rng.random_range(0..=n_time - w),
        h,
        w,
    }
}

type Draw = (Vec<Vec<u32>>, Vec<u32>, Vec<u32>);

/// Samples one batch of masks of `kind` on an `n_freq x n_time` grid.
pub fn sample_batch(
    cfg: &MaskConfig,
    kind: MaskKind,
    n_freq: usize,
    n_time: usize,
    batch: usize,
    rng: &mut impl Rng,
) -> BatchMasks {
    // Sizes (and, for time-frequency masks, orientations) shared by the whole batch.
    let shapes: Vec<(usize, usize)> = match kind {
        // I-JEPA draws one target size per batch (`p_size` in MaskCollator.__call__) for all
        // `npred` blocks, which also lets the predictor handle every block in one pass.
        MaskKind::RandomBlock => {
            let size = block_size(rng, n_freq, n_time, cfg.target_scale, cfg.target_aspect);
            vec![size; cfg.num_targets]
        }
        MaskKind::TimeFrequency => (0..cfg.tf_num_targets)
            .map(|_| {
                let s = rng.random_range(cfg.tf_target_scale.0..=cfg.tf_target_scale.1);
                if rng.random_bool(0.5) {
                    // Whole time columns: every frequency row.
                    let w = ((s * n_time as f64).round() as usize).clamp(1, n_time);
                    (n_freq, w)
                } else {
                    // Whole frequency rows: every time column.
                    let h = ((s * n_freq as f64).round() as usize).clamp(1, n_freq);
                    (h, n_time)
                }
            })
            .collect(),
    };
    let ctx_scale = rng.random_range(cfg.context_scale.0..=cfg.context_scale.1);
    let ctx_w = ((ctx_scale * n_time as f64).round() as usize).clamp(1, n_time);

    let n = n_freq * n_time;
    let mut contexts = Vec::with_capacity(batch);
    let mut targets: Vec<Vec<Vec<u32>>> = vec![Vec::with_capacity(batch); shapes.len()];
    let mut relaxed = 0;
    for _ in 0..batch {
        // (targets, context block, context block minus targets) of the best draw so far.
        let mut best: Option<Draw> = None;
        for _ in 0..cfg.max_tries.max(1) {
            let tg: Vec<Vec<u32>> = shapes
                .iter()
                .map(|&(h, w)| place(rng, n_freq, n_time, h, w).indices(n_freq))
                .collect();
            let ctx = place(rng, n_freq, n_time, n_freq, ctx_w).indices(n_freq);
            let mut in_target = vec![false; n];
            for t in &tg {
                for &i in t {
                    in_target[i as usize] = true;
                }
            }
            let kept: Vec<u32> = ctx
                .iter()
                .copied()
                .filter(|&i| !in_target[i as usize])
                .collect();
            let ok = kept.len() >= cfg.min_keep;
            let better = best.as_ref().is_none_or(|(_, _, b)| kept.len() > b.len());
            if ok || better {
                best = Some((tg, ctx, kept));
            }
            if ok {
                break;
            }
        }
        let (tg, block, mut ctx) = best.expect("at least one draw");
        if ctx.len() < cfg.min_keep {
            // Relax: let the context keep patches of the last targets until min_keep holds.
            relaxed += 1;
            let mut removed: Vec<bool> = vec![false; n];
            for t in &tg {
                for &i in t {
                    removed[i as usize] = true;
                }
            }
            for t in tg.iter().rev() {
                if ctx.len() >= cfg.min_keep {
                    break;
                }
                for &i in t {
                    removed[i as usize] = false;
                }
                ctx = block
                    .iter()
                    .copied()
                    .filter(|&i| !removed[i as usize])
                    .collect();
            }
        }
        contexts.push(ctx);
        for (m, t) in tg.into_iter().enumerate() {
            targets[m].push(t);
        }
    }
    // Cut every context to the batch's shortest by a random subset (kept sorted).
    let k = contexts.iter().map(Vec::len).min().unwrap_or(0);
    for ctx in &mut contexts {
        if ctx.len() > k {
            ctx.shuffle(rng);
            ctx.truncate(k);
            ctx.sort_unstable();
        }
    }
    for tm in &mut targets {
        for t in tm {
            t.sort_unstable();
        }
    }
    BatchMasks {
        kind,
        context: contexts,
        targets,
        relaxed,
    }
}

/// Samples the kind of a batch from the curriculum at `step` of `total`, then its masks.
pub fn sample_for_step(
    cfg: &MaskConfig,
    step: u64,
    total: u64,
    n_freq: usize,
    n_time: usize,
    batch: usize,
    rng: &mut impl Rng,
) -> BatchMasks {
    let p = cfg.tf_probability(step, total);
    sample_with_probability(cfg, p, n_freq, n_time, batch, rng)
}

/// Samples the kind of a batch (time-frequency with probability `p`), then its masks.
pub fn sample_with_probability(
    cfg: &MaskConfig,
    p: f64,
    n_freq: usize,
    n_time: usize,
    batch: usize,
    rng: &mut impl Rng,
) -> BatchMasks {
    let kind = if rng.random_bool(p.clamp(0.0, 1.0)) {
        MaskKind::TimeFrequency
    } else {
        MaskKind::RandomBlock
    };
    sample_batch(cfg, kind, n_freq, n_time, batch, rng)
}
