//! Log-mel features of a dataset, computed once and cached on disk.
//!
//! Every file is decoded, resampled and turned into log-mel frames by the same front end the
//! streaming path uses (`audio_jepa::frontend`); the result is cached as `.npy` under a key of
//! the file's path, size, modification time and the front-end config, so a changed file or a
//! changed front end is recomputed and never silently reused.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use audio_jepa::frontend::LogMelExtractor;
use audio_jepa::FrontendConfig;

/// One clip's log-mel frames, `[n_frames][n_mels]`, not normalised.
#[derive(Debug, Clone)]
pub struct ClipFeatures {
    pub path: PathBuf,
    pub n_frames: usize,
    pub data: Arc<[f32]>,
}

/// Files that could not be used, with the reason (a bad file is reported and skipped, never
/// fatal for a large dataset).
#[derive(Debug, Default)]
pub struct Skipped(pub Vec<(PathBuf, String)>);

/// FNV-1a: a stable hash (std's `DefaultHasher` may change between Rust releases).
struct Fnv(u64);
impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= *b as u64;
            self.0 = self.0.wrapping_mul(0x100_0000_01b3);
        }
    }
}

fn cache_key(path: &Path, cfg: &FrontendConfig) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos();
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    std::fs::canonicalize(path).ok()?.hash(&mut h);
    meta.len().hash(&mut h);
    mtime.hash(&mut h);
    serde_json::to_string(cfg).ok()?.hash(&mut h);
    let stem = path.file_stem()?.to_string_lossy();
    Some(format!("{stem}-{:016x}.npy", h.finish()))
}

/// Features of every file in `files`, from `cache` when present (and written there when not).
/// `progress` is called after each file.
pub fn load_features(
    files: &[PathBuf],
    cfg: &FrontendConfig,
    cache: Option<&Path>,
    mut progress: impl FnMut(usize),
) -> Result<(Vec<ClipFeatures>, Skipped), audio_jepa::config::ConfigError> {
    let mut fe = LogMelExtractor::new(cfg)?;
    if let Some(dir) = cache {
        // A cache that cannot be created only costs time.
        if let Err(e) = std::fs::create_dir_all(dir) {
            tracing::warn!("feature cache {} unusable: {e}", dir.display());
        }
    }
    let mut clips = Vec::with_capacity(files.len());
    let mut skipped = Skipped::default();
    for (i, path) in files.iter().enumerate() {
        let cached = cache.and_then(|d| cache_key(path, cfg).map(|k| d.join(k)));
        let from_cache = cached.as_ref().and_then(|c| {
            let a = audio_jepa::arrays::read_npy(c).ok()?;
            (a.shape.len() == 2 && a.shape[1] == cfg.n_mels).then_some(a)
        });
        let (n_frames, data) = match from_cache {
            Some(a) => (a.shape[0], a.data),
            None => match audio_jepa::audio::load(path, cfg.sample_rate) {
                Ok(audio) => {
                    let spec = fe.compute(&audio.samples);
                    if spec.n_frames == 0 {
                        skipped
                            .0
                            .push((path.clone(), "shorter than one frame".into()));
                        progress(i + 1);
                        continue;
                    }
                    if let Some(c) = &cached {
                        if let Err(e) = audio_jepa::arrays::write_npy(
                            c,
                            &[spec.n_frames, spec.n_mels],
                            &spec.data,
                        ) {
                            tracing::warn!("cannot cache features: {e}");
                        }
                    }
                    (spec.n_frames, spec.data)
                }
                Err(e) => {
                    skipped.0.push((path.clone(), e.to_string()));
                    progress(i + 1);
                    continue;
                }
            },
        };
        clips.push(ClipFeatures {
            path: path.clone(),
            n_frames,
            data: data.into(),
        });
        progress(i + 1);
    }
    Ok((clips, skipped))
}
