//! `ajepa eval`: linear-probe accuracy of an encoder on a labeled set, with the baselines
//! computed by the same command on the same folds (log-mel statistics; a random encoder).

use std::path::PathBuf;

use anyhow::{bail, Context};
use audio_jepa::engine::{FastEncoder, Isa, Precision};
use audio_jepa::finetune::labeled::{parse_where, read_csv_where};
use audio_jepa::finetune::probe::{scores, Probe, ProbeConfig};
use audio_jepa::frontend::patches::{normalize, patchify};
use audio_jepa::frontend::{LogMel, LogMelExtractor};
use audio_jepa::model::checkpoint::load_encoder_with_quant;
use audio_jepa::model::{Encoder, EncoderConfig};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Encoder weights (.safetensors with its .json)
    #[arg(long)]
    model: PathBuf,
    /// ESC-50 style CSV (filename, fold, category)
    #[arg(long)]
    csv: PathBuf,
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    train_folds: Vec<u32>,
    #[arg(long, value_delimiter = ',', default_value = "4")]
    test_folds: Vec<u32>,
    /// Only rows where COLUMN equals VALUE, e.g. esc10=True
    #[arg(long = "where", value_name = "COLUMN=VALUE", value_parser = parse_where)]
    where_: Option<(String, String)>,
    /// Write the model's confusion matrix on the test folds as a PNG (rows true, columns
    /// predicted, classes in the printed order)
    #[arg(long)]
    confusion_png: Option<PathBuf>,
    /// Skip the baselines
    #[arg(long)]
    no_baselines: bool,
    /// Print the results as one JSON object
    #[arg(long)]
    json: bool,
    /// Arithmetic for the model's embeddings: f32, or q8 (the int8 engine a q8 file runs on;
    /// the default for a file written by `ajepa quantize --type q8|q4`)
    #[arg(long, value_parser = parse_precision)]
    precision: Option<Precision>,
}

fn parse_precision(s: &str) -> Result<Precision, String> {
    match s {
        "f32" => Ok(Precision::F32),
        "q8" => Ok(Precision::Q8),
        other => Err(format!("`{other}`: use f32 or q8")),
    }
}

/// The model's whole-clip embeddings through the engine, rebuilt when a longer clip comes.
struct EngineEmbedder<'a> {
    enc: &'a Encoder,
    precision: Precision,
    fast: Option<(FastEncoder, audio_jepa::engine::Scratch)>,
}

impl EngineEmbedder<'_> {
    fn pooled(
        &mut self,
        spec: &LogMel,
        fe: &audio_jepa::FrontendConfig,
    ) -> anyhow::Result<Vec<f32>> {
        let mut s = spec.clone();
        normalize(&mut s.data, fe);
        let p = patchify(&s, 16, 16)?;
        let n = p.grid.n_patches();
        if n == 0 {
            bail!("clip shorter than one patch column");
        }
        let cols = n / self.enc.config().n_freq();
        if self.fast.as_ref().is_none_or(|(f, _)| f.max_tokens() < n) {
            let f = FastEncoder::from_encoder(self.enc, self.precision, Isa::detect(), cols)?;
            let scratch = f.scratch();
            self.fast = Some((f, scratch));
        }
        let (f, scratch) = self.fast.as_mut().expect("built above");
        f.forward(&p.data, scratch)?;
        Ok(scratch.pooled.clone())
    }
}

/// A randomly initialised encoder of the same shape, seeded (N(0, 0.02) weights, unit norms).
fn random_like(cfg: &EncoderConfig) -> anyhow::Result<Encoder> {
    let vm = VarMap::new();
    let enc = Encoder::load(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu), cfg)?;
    let mut state = 0x1234_5678u64;
    let mut normal = move || {
        // Box-Muller on a 64-bit LCG.
        let mut u = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let (a, b) = (u(), u());
        ((-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()) as f32
    };
    let data = vm.data().lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let v = &data[name];
        let n = v.elem_count();
        let t = if name.ends_with(".bias") {
            Tensor::zeros(v.shape(), DType::F32, &Device::Cpu)?
        } else if name.contains("norm") {
            Tensor::ones(v.shape(), DType::F32, &Device::Cpu)?
        } else {
            Tensor::from_vec(
                (0..n).map(|_| 0.02 * normal()).collect::<Vec<f32>>(),
                v.shape(),
                &Device::Cpu,
            )?
        };
        v.set(&t)?;
    }
    drop(data);
    Ok(enc)
}

/// Train features, train labels, test features, test labels.
type Split = (Vec<f32>, Vec<usize>, Vec<f32>, Vec<usize>);

fn logmel_stats(spec: &LogMel) -> Vec<f32> {
    let m = spec.n_mels;
    let n = spec.n_frames.max(1) as f32;
    let mut mean = vec![0f32; m];
    for f in spec.frames() {
        for (a, v) in mean.iter_mut().zip(f) {
            *a += v / n;
        }
    }
    let mut std = vec![0f32; m];
    for f in spec.frames() {
        for ((a, v), mu) in std.iter_mut().zip(f).zip(&mean) {
            *a += (v - mu) * (v - mu) / n;
        }
    }
    mean.extend(std.iter().map(|v| v.sqrt()));
    mean
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let set = read_csv_where(
        &args.csv,
        args.where_.as_ref().map(|(c, v)| (c.as_str(), v.as_str())),
    )?;
    let fe = audio_jepa::FrontendConfig::default();
    let (model, quant) = load_encoder_with_quant(&args.model, &Device::Cpu)?;
    let precision = args.precision.unwrap_or(if quant.is_some() {
        Precision::Q8
    } else {
        Precision::F32
    });
    let random = random_like(model.config())?;
    let mut embedder = EngineEmbedder {
        enc: &model,
        precision,
        fast: None,
    };
    let mut random_embedder = EngineEmbedder {
        enc: &random,
        precision: Precision::F32,
        fast: None,
    };
    if !args.json {
        eprintln!("model embeddings computed by the engine in {precision:?}");
    }
    let mut lm = LogMelExtractor::new(&fe)?;
    let names = [
        "log-mel mean+std (linear probe)",
        "random-init encoder (linear probe)",
        "pretrained encoder (linear probe)",
    ];
    let mut feats: [Split; 3] = Default::default();
    let mut dims = [0usize; 3];
    let started = std::time::Instant::now();
    let used: Vec<_> = set
        .examples
        .iter()
        .filter(|e| {
            e.fold
                .is_some_and(|f| args.train_folds.contains(&f) || args.test_folds.contains(&f))
        })
        .collect();
    if used.is_empty() {
        bail!(
            "no clips in folds {:?} / {:?}",
            args.train_folds,
            args.test_folds
        );
    }
    for (i, ex) in used.iter().enumerate() {
        let audio = audio_jepa::audio::load(&ex.path, fe.sample_rate)
            .with_context(|| format!("clip {}", i + 1))?;
        let spec = lm.compute(&audio.samples);
        let train = ex.fold.is_some_and(|f| args.train_folds.contains(&f));
        let mut vecs = vec![logmel_stats(&spec)];
        if !args.no_baselines {
            vecs.push(random_embedder.pooled(&spec, &fe)?);
        } else {
            vecs.push(Vec::new());
        }
        vecs.push(embedder.pooled(&spec, &fe)?);
        for (k, v) in vecs.into_iter().enumerate() {
            if v.is_empty() {
                continue;
            }
            dims[k] = v.len();
            let slot = &mut feats[k];
            if train {
                slot.0.extend(v);
                slot.1.push(ex.class);
            } else {
                slot.2.extend(v);
                slot.3.push(ex.class);
            }
        }
        if (i + 1) % 200 == 0 {
            eprintln!(
                "{} / {} clips embedded ({:.0} s)",
                i + 1,
                used.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    let c = set.classes.len();
    let mut results = Vec::new();
    for k in 0..3 {
        if dims[k] == 0 || (k == 0 && args.no_baselines) {
            continue;
        }
        let (xtr, ytr, xte, yte) = &feats[k];
        let probe = Probe::fit(xtr, ytr, dims[k], c, ProbeConfig::default());
        let pred: Vec<usize> = xte.chunks(dims[k]).map(|v| probe.predict(v)).collect();
        let (acc, f1, cm) = scores(yte, &pred, c);
        if let (2, Some(png)) = (k, &args.confusion_png) {
            audio_jepa::render::write_confusion_png(png, &cm)?;
            if !args.json {
                println!(
                    "confusion matrix of the encoder (rows true, columns predicted; {}): {}",
                    set.classes.join(", "),
                    png.display()
                );
            }
        }
        results.push(serde_json::json!({"features": names[k], "dim": dims[k], "accuracy": acc, "macro_f1": f1,
            "train": ytr.len(), "test": yte.len()}));
        if !args.json {
            println!(
                "{:40} {:>5}-d  accuracy {:5.1} %  macro-F1 {:5.1} %  ({} train / {} test clips)",
                names[k],
                dims[k],
                100.0 * acc,
                100.0 * f1,
                ytr.len(),
                yte.len()
            );
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({"model": args.model, "precision": precision, "classes": c, "results": results})
        );
    }
    Ok(())
}
