//! What `--model` names on every command: an encoder file (written by `ajepa-train pretrain`,
//! `finetune --full` or `quantize`, with its `.json` beside it), or `default`, the model compiled
//! into the binary (models/default), so a fresh install needs no file at all. A file that is
//! really called `default` is reached as `./default`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use audio_jepa::engine::Precision;
use audio_jepa::model::checkpoint::{
    config_path, load_encoder_with_quant, load_tensors, Tensors, WeightQuant,
};
use audio_jepa::model::Encoder;
use candle_core::Device;

/// The `--model` value for the built-in model.
pub const BUILT_IN: &str = "default";

/// Whether `--model` names the built-in model.
pub fn is_built_in(model: &Path) -> bool {
    model.as_os_str() == BUILT_IN
}

/// The encoder `--model` names, and how its file stores the weights (`None`: floats).
pub fn load(model: &Path) -> anyhow::Result<(Encoder, Option<WeightQuant>)> {
    if is_built_in(model) {
        let enc = audio_jepa::default_model::encoder().context("the built-in default model")?;
        return Ok((enc, None));
    }
    load_encoder_with_quant(model, &Device::Cpu)
        .with_context(|| format!("loading the encoder {}", model.display()))
}

/// The arithmetic a model file's weights call for: int8 for int8 (or 4-bit) weights, f32 for
/// floats.
pub fn precision(quant: Option<WeightQuant>) -> Precision {
    if quant.is_some() {
        Precision::Q8
    } else {
        Precision::F32
    }
}

/// The encoder's tensors as stored (for `finetune --full` and `quantize`).
pub fn tensors(model: &Path) -> anyhow::Result<Tensors> {
    if is_built_in(model) {
        return audio_jepa::default_model::tensors().context("the built-in default model");
    }
    Ok(load_tensors(model, &Device::Cpu)
        .with_context(|| format!("loading the encoder {}", model.display()))?
        .0)
}

/// The files behind `--model` that no output may replace: the weights and their config (none
/// for the built-in model).
pub fn files(model: &Path) -> Vec<PathBuf> {
    if is_built_in(model) {
        Vec::new()
    } else {
        vec![model.to_path_buf(), config_path(model)]
    }
}

/// Whether `head` fits `enc`: `Err` with a message when the head records the fingerprint of
/// another encoder (issue 16: a head on an encoder it was not fitted on gives confident
/// nonsense). A head that records none (older heads) fits.
pub fn head_fits(
    head: &audio_jepa::model::head::Head,
    head_name: &str,
    enc: &Encoder,
    model: &Path,
) -> anyhow::Result<Result<(), String>> {
    if head.encoder.is_none() {
        return Ok(Ok(()));
    }
    let fp = enc.fingerprint()?;
    if head.fits_encoder(&fp).is_ok() {
        return Ok(Ok(()));
    }
    // An int8 or 4-bit file records the float encoder it was made from; its metadata is read
    // only here, on a mismatch.
    if !is_built_in(model) {
        if let Ok((_, meta)) = load_tensors(model, &Device::Cpu) {
            if let Some(source) = meta.get(audio_jepa::model::checkpoint::SOURCE_KEY) {
                if head.fits_encoder(source).is_ok() {
                    return Ok(Ok(()));
                }
            }
        }
    }
    Ok(head.fits_encoder(&fp).map_err(|theirs| {
        format!(
            "head {head_name} was fitted on the encoder with fingerprint {theirs}; {} has {fp} (another encoder, or another precision of it: its tags may be wrong; give the --model it was fitted on)",
            name(model)
        )
    }))
}

/// Prints the warning of [`head_fits`] when `head` records another encoder than `enc` (the
/// commands that tag: a head on the wrong encoder still runs, but says so).
pub fn warn_if_other_encoder(
    head: &audio_jepa::model::head::Head,
    head_name: &str,
    enc: &Encoder,
    model: &Path,
) -> anyhow::Result<()> {
    if let Err(w) = head_fits(head, head_name, enc, model)? {
        eprintln!("warning: {w}");
    }
    Ok(())
}

/// How messages name the model.
pub fn name(model: &Path) -> String {
    if is_built_in(model) {
        audio_jepa::default_model::NAME.to_string()
    } else {
        model.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_the_built_in_model_and_other_names_are_files() {
        assert!(is_built_in(Path::new("default")));
        assert!(!is_built_in(Path::new("./default")));
        let (enc, quant) = load(Path::new("default")).unwrap();
        assert!(quant.is_none());
        assert_eq!(
            tensors(Path::new("default")).unwrap()["norm.weight"].dims(),
            &[enc.config().embed_dim]
        );
        assert!(files(Path::new("default")).is_empty());
        let e = load(Path::new("./default")).unwrap_err();
        assert!(format!("{e:#}").contains("./default"), "{e:#}");
    }
}
