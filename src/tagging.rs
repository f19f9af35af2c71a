//! Whole files tagged by a head: the one per-clip verdict that `ajepa tag` prints and
//! `ajepa eval --head` scores, so the two can never disagree about a clip.
//!
//! A clip is cut into the windows the live tagger encodes (`finetune::windows`, one per hop of
//! one patch column): windows far quieter than the clip's loudest are left out (silence carries
//! no label), and a clip shorter than a window is padded as `finetune` pads it. A clip's score
//! for a class is the mean over its windows of the head's per-window score; the open-set check
//! (`model::open_set`) runs on the mean of the window embeddings, against the top class.

use std::path::Path;

use crate::engine::{EngineError, FastEncoder, Isa, Precision, Scratch};
use crate::finetune::windows::{load_clip_windows, WindowError, WindowSpec};
use crate::frontend::LogMelExtractor;
use crate::model::head::Head;
use crate::model::open_set::OpenSet;
use crate::model::Encoder;
use crate::FrontendConfig;

#[derive(Debug, thiserror::Error)]
pub enum TaggingError {
    #[error(transparent)]
    Window(#[from] WindowError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Width(String),
    #[error("window of {0} patch columns (1 to {max})", max = MAX_COLUMNS)]
    Columns(usize),
    #[error("starting the encoder's threads: {0}")]
    Threads(String),
}

/// The longest window a tagger accepts, in patch columns (10.24 s; attention's memory grows with
/// the square of it).
pub const MAX_COLUMNS: usize = 64;

/// What a head says about one clip.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The clip's length before any padding.
    pub seconds: f64,
    /// Windows that were scored.
    pub windows: usize,
    /// Per class, the mean over the windows of the head's score.
    pub scores: Vec<f32>,
    /// Classes, best first.
    pub order: Vec<usize>,
    /// The open-set check on the top class: (accepted, similarity, the class's threshold);
    /// `None` when the tagger has no check (or the clip is silent).
    pub known: Option<(bool, f32, f32)>,
    /// The loudest 160 ms of the clip, dBFS.
    pub peak_dbfs: f32,
    /// Even its loudest 160 ms are below the silence gate: no tag (as `listen` shows
    /// "silence" for such hops); the scores are all zero.
    pub silent: bool,
}

impl Verdict {
    /// The top class, unless the open-set check turned it down.
    pub fn accepted(&self) -> Option<usize> {
        if self.silent {
            return None;
        }
        match self.known {
            Some((false, _, _)) => None,
            _ => self.order.first().copied(),
        }
    }
}

/// A head on an encoder, ready to tag files; reuses its buffers from clip to clip.
pub struct ClipTagger {
    engine: FastEncoder,
    scratch: Scratch,
    lm: LogMelExtractor,
    fe: FrontendConfig,
    ws: WindowSpec,
    head: Head,
    open_set: Option<OpenSet>,
    silence_dbfs: Option<f32>,
    scores: Vec<f32>,
    embedding: Vec<f32>,
    pooled: Vec<f32>,
    os_scratch: Vec<f32>,
}

impl ClipTagger {
    /// `open_set`: the check to run (see `OpenSet::from_head`), or `None` to always answer
    /// with one of the head's classes.
    pub fn new(
        enc: &Encoder,
        precision: Precision,
        head: Head,
        open_set: Option<OpenSet>,
        window_columns: usize,
    ) -> Result<Self, TaggingError> {
        if !(1..=MAX_COLUMNS).contains(&window_columns) {
            return Err(TaggingError::Columns(window_columns));
        }
        let d = enc.config().embed_dim;
        head.check_width(d, enc.config().n_freq())
            .map_err(TaggingError::Width)?;
        let engine = FastEncoder::from_encoder(enc, precision, Isa::detect(), window_columns)?;
        let scratch = engine.scratch();
        let fe = FrontendConfig::default();
        Ok(Self {
            scratch,
            lm: LogMelExtractor::new(&fe)?,
            fe,
            ws: WindowSpec {
                columns: window_columns,
                hop: 1,
                ..WindowSpec::default()
            },
            engine,
            scores: Vec::new(),
            embedding: vec![0.0; head.dim],
            pooled: vec![0.0; head.dim],
            os_scratch: Vec::new(),
            open_set,
            silence_dbfs: None,
            head,
        })
    }

    /// Clips whose loudest 160 ms are below `dbfs` are silent, with no tag (`listen`'s
    /// `--silence-dbfs`; digital silence was tagged "dog" at 0.66, issue 15). `None`: no gate.
    /// Splits each window's encoding over `threads` threads (the same result at every count).
    pub fn with_threads(mut self, threads: usize) -> Result<Self, TaggingError> {
        self.scratch = self
            .engine
            .scratch_threads(threads)
            .map_err(|e| TaggingError::Threads(e.to_string()))?;
        Ok(self)
    }

    pub fn with_silence_gate(mut self, dbfs: Option<f32>) -> Self {
        self.silence_dbfs = dbfs;
        self
    }

    pub fn head(&self) -> &Head {
        &self.head
    }

    pub fn has_open_set(&self) -> bool {
        self.open_set.is_some()
    }

    /// Decodes `path` and tags it.
    pub fn tag_file(&mut self, path: &Path) -> Result<Verdict, TaggingError> {
        let w = load_clip_windows(path, &mut self.lm, &self.fe, &self.ws)?;
        let c = self.head.labels.len();
        let peak_dbfs = w.peak_dbfs.unwrap_or(0.0);
        if self.silence_dbfs.is_some_and(|g| peak_dbfs < g) {
            return Ok(Verdict {
                seconds: w.seconds,
                windows: 0,
                scores: vec![0.0; c],
                order: (0..c).collect(),
                known: None,
                peak_dbfs,
                silent: true,
            });
        }
        let mut sum = vec![0f32; c];
        self.embedding.iter_mut().for_each(|s| *s = 0.0);
        for i in 0..w.n {
            self.engine.forward(w.window(i), &mut self.scratch)?;
            let cfg = self.engine.config();
            self.head.pool.pool_into(
                self.scratch.output(),
                cfg.embed_dim,
                cfg.n_freq(),
                &mut self.pooled,
            );
            self.head.scores_into(&self.pooled, &mut self.scores);
            for (s, v) in sum.iter_mut().zip(&self.scores) {
                *s += v / w.n as f32;
            }
            for (m, v) in self.embedding.iter_mut().zip(&self.pooled) {
                *m += v / w.n as f32;
            }
        }
        let mut order: Vec<usize> = (0..c).collect();
        order.sort_by(|&a, &b| sum[b].total_cmp(&sum[a]));
        let known = match (&self.open_set, order.first()) {
            (Some(os), Some(&top)) => {
                let (known, sim) = os.check(&self.embedding, top, &mut self.os_scratch);
                Some((known, sim, os.thresholds[top]))
            }
            _ => None,
        };
        Ok(Verdict {
            seconds: w.seconds,
            windows: w.n,
            scores: sum,
            order,
            known,
            peak_dbfs,
            silent: false,
        })
    }
}
