//! `ajepa enroll NAME CLIP...`: adds a class to a head from a few clips (seconds on a CPU).

use std::path::PathBuf;

use anyhow::{bail, Context};
use audio_jepa::finetune::enroll::enroll;
use audio_jepa::finetune::probe::ProbeConfig;
use audio_jepa::finetune::windows::{embed_windows, load_clip_windows, WindowSpec};
use audio_jepa::frontend::LogMelExtractor;
use audio_jepa::model::head::Head;
use audio_jepa::FrontendConfig;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Name of the sound (a new class, or an existing one to give more examples)
    pub name: String,
    /// A few clips of it (WAV, FLAC, Ogg, MP3)
    #[arg(required = true)]
    pub clips: Vec<PathBuf>,
    /// The encoder the head belongs to: a file, or `default` (the built-in model)
    #[arg(long, default_value = "default", env = "AJEPA_MODEL")]
    pub model: PathBuf,
    /// The head to extend (from `ajepa finetune` or an earlier `enroll`); without it, the
    /// built-in model's ESC-10 head (then --out is needed)
    #[arg(long)]
    pub head: Option<PathBuf>,
    /// Where to write the new head (default: replace --head, keeping the old one as HEAD.bakN)
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Window in patch columns; must match `listen`
    #[arg(long, default_value_t = 6)]
    pub window_columns: usize,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (head, head_name) = match &args.head {
        Some(p) => (Head::load(p)?, p.display().to_string()),
        None => {
            if args.out.is_none() {
                bail!("without --head, enroll extends the built-in head: give --out NEW_HEAD.safetensors (the built-in one cannot be replaced)");
            }
            (
                audio_jepa::default_model::head().context("the built-in head")?,
                "the built-in head".to_string(),
            )
        }
    };
    let (enc, _) = super::model::load(&args.model)?;
    if let Err(e) = head.check_width(enc.config().embed_dim, enc.config().n_freq()) {
        bail!(
            "head {head_name}: {e} (encoder {})",
            super::model::name(&args.model)
        );
    }
    // Support rows from another encoder would make the refitted head meaningless.
    if let Err(e) = super::model::head_fits(&head, &head_name, &enc, &args.model)? {
        bail!("{e}; enroll refuses to mix embeddings of two encoders");
    }
    if let Some(w) = head.window_columns.filter(|&w| w != args.window_columns) {
        bail!(
            "head {head_name} was fitted on {w}-column windows; enrolling with --window-columns {} would mix embeddings of two window lengths (pass --window-columns {w})",
            args.window_columns
        );
    }
    let fe = FrontendConfig::default();
    let mut lm = LogMelExtractor::new(&fe)?;
    let ws = WindowSpec {
        columns: args.window_columns,
        ..WindowSpec::default()
    };
    let mut rows = Vec::new();
    for clip in &args.clips {
        let w = load_clip_windows(clip, &mut lm, &fe, &ws)
            .with_context(|| format!("reading {}", clip.display()))?;
        rows.extend(embed_windows(&enc, &w, 32, head.pool)?);
    }
    let mut new = enroll(&head, &args.name, &rows, ProbeConfig::default())?;
    new.window_columns = Some(args.window_columns);
    new.encoder = Some(enc.fingerprint()?);
    let out = match (&args.out, &args.head) {
        (Some(o), _) => o.clone(),
        (None, Some(h)) => h.clone(),
        (None, None) => unreachable!("checked above"),
    };
    let mut inputs = super::model::files(&args.model);
    inputs.extend(args.clips.iter().cloned());
    super::check_output(&out, &inputs, &["safetensors"], false)?;
    if let Some(h) = args.head.as_ref().filter(|h| super::same_file(&out, h)) {
        let bak = keep_generation(h)?;
        note!("kept the previous head as {}", bak.display());
    }
    // Head::save writes a temporary and renames it: a full disk or a kill leaves the old head.
    new.save(&out)?;
    println!(
        "`{}` enrolled from {} clip(s) ({} windows); {} classes: {}; wrote {}",
        args.name.trim(),
        args.clips.len(),
        rows.len() / head.dim,
        new.labels.len(),
        new.labels.join(", "),
        out.display()
    );
    Ok(())
}

/// Copies `head` to the first free `HEAD.bakN` (N = 1, 2, ...), written atomically: every
/// enrollment keeps the head it replaced, and no backup is ever overwritten or left half-written.
fn keep_generation(head: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let bytes =
        std::fs::read(head).with_context(|| format!("reading {} to back it up", head.display()))?;
    let name = head
        .file_name()
        .context("the head path has no file name")?
        .to_string_lossy()
        .into_owned();
    for n in 1..=100_000u32 {
        let bak = head.with_file_name(format!("{name}.bak{n}"));
        if bak.exists() {
            continue;
        }
        audio_jepa::arrays::write_atomically(&bak, |w| std::io::Write::write_all(w, &bytes))
            .with_context(|| format!("writing the backup {}", bak.display()))?;
        return Ok(bak);
    }
    anyhow::bail!(
        "{}: 100000 backups already; remove old {name}.bakN files",
        head.display()
    )
}
