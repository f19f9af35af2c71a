//! The default model, compiled into the binary so that a fresh install tags sounds with no
//! download: a small encoder pretrained without labels on redistributable audio (ESC-10, the Free
//! Spoken Digit Dataset and freely licensed recordings from Debian packages) with a linear head for
//! ESC-10's ten classes. Its weights, model card
//! (data, licenses, commands, accuracy) and the commands that rebuild it are in models/default/.

use std::path::Path;

use candle_core::Device;

use crate::model::checkpoint::{load_encoder_bytes, load_tensors_bytes, Tensors};
use crate::model::head::Head;
use crate::model::{Encoder, ModelError};

const ENCODER: &[u8] = include_bytes!("../models/default/encoder.safetensors");
const HEAD: &[u8] = include_bytes!("../models/default/head.safetensors");

const ENCODER_ORIGIN: &str = "<built-in>/models/default/encoder.safetensors";

/// What `listen` shows as the model's name.
pub const NAME: &str = "default (ESC-10 tagger, models/default)";

pub fn encoder() -> Result<Encoder, ModelError> {
    load_encoder_bytes(ENCODER, &Device::Cpu, Path::new(ENCODER_ORIGIN))
}

/// The encoder's tensors as stored (what `quantize` and `finetune --full` start from).
pub fn tensors() -> Result<Tensors, ModelError> {
    Ok(load_tensors_bytes(ENCODER, &Device::Cpu, Path::new(ENCODER_ORIGIN))?.0)
}

/// Size of the encoder's file, bytes.
pub fn encoder_bytes() -> usize {
    ENCODER.len()
}

pub fn head() -> Result<Head, ModelError> {
    Head::from_bytes(
        HEAD,
        Path::new("<built-in>/models/default/head.safetensors"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_model_loads_and_fits_its_head() {
        let enc = encoder().unwrap();
        let head = head().unwrap();
        // The built-in head pools per frequency row (freqcat): 8 rows x 192 values.
        let cfg = enc.config();
        assert!(head.check_width(cfg.embed_dim, cfg.n_freq()).is_ok());
        assert_eq!(head.dim, head.pool.dim(cfg.embed_dim, cfg.n_freq()));
        assert_eq!(head.labels.len(), 10);
        assert!(head.trained);
        assert!(
            !head.support_labels.is_empty(),
            "enroll needs the support set"
        );
        // `listen` holds to the head's window (the Jetson profile's 8 columns would mislead it).
        assert_eq!(head.window_columns, Some(6));
        let t = tensors().unwrap();
        assert_eq!(
            t["patch_embed.proj.weight"].dims(),
            &[enc.config().embed_dim, enc.config().patch_len()]
        );
    }
}
