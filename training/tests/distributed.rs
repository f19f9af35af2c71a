//! Data-parallel training without GPUs: ranks as threads of one process (`ThreadGroup`), the
//! same code path NCCL ranks take. Averaged gradients equal the gradients of the concatenated
//! batch; ranks that start apart end identical; rank 0 alone writes; each batch is used once.

use std::sync::Arc;

use audio_jepa_training::config::PatchInit;
use audio_jepa_training::distributed::{average_gradients, batch_index, Collective, ThreadGroup};
use audio_jepa_training::jepa::{Jepa, MaskTensors};
use audio_jepa_training::loader::{make_batch, Batch, Corpus, Loader};
use audio_jepa_training::masks::BatchMasks;
use audio_jepa_training::objective::Objective;
use audio_jepa_training::train::{Trainer, CHECKPOINT};
use candle_core::{Device, Tensor, Var};

mod common;
use common::{max_diff, synthetic_clips, tiny_config};

/// Samples `range` of `b` as a batch of their own (masks are collated to one length per batch,
/// so any subset of a batch is itself a valid batch).
fn part(b: &Batch, range: std::ops::Range<usize>) -> Batch {
    let per = b.patches.len() / b.batch;
    Batch {
        step: b.step,
        batch: range.len(),
        n_patches: b.n_patches,
        patches: b.patches[range.start * per..range.end * per].to_vec(),
        masks: BatchMasks {
            kind: b.masks.kind,
            context: b.masks.context[range.clone()].to_vec(),
            targets: b
                .masks
                .targets
                .iter()
                .map(|t| t[range.clone()].to_vec())
                .collect(),
            relaxed: 0,
        },
        extra_views: Vec::new(),
        student: None,
    }
}

/// Loss and gradients (by variable name) of `batch` on a fresh model from `seed`, averaged over
/// `group` when given.
fn grads(batch: &Batch, seed: u64, group: Option<&dyn Collective>) -> (f32, Vec<(String, Tensor)>) {
    let cfg = tiny_config(10);
    let enc = cfg.model.encoder_config().unwrap();
    let dev = Device::Cpu;
    let jepa = Jepa::new(&enc, &cfg.predictor, &dev, seed, PatchInit::Normal).unwrap();
    let patches =
        Tensor::from_slice(&batch.patches, (batch.batch, batch.n_patches, 256), &dev).unwrap();
    let views = [MaskTensors::new(&batch.masks, &dev).unwrap()];
    let obj = Objective::from_config(&cfg.objective, cfg.optim.loss);
    let loss = jepa.objective_loss(&patches, None, &views, &obj).unwrap();
    let mut g = loss.backward().unwrap();
    let named = jepa.trainable_vars();
    let vars: Vec<Var> = named.iter().map(|(_, v)| v.clone()).collect();
    let loss: f32 = match group {
        Some(c) => average_gradients(c, &vars, &mut g, &loss).unwrap(),
        None => loss,
    }
    .to_scalar()
    .unwrap();
    let out = named
        .iter()
        .map(|(n, v)| (n.clone(), g.get(v.as_tensor()).unwrap().clone()))
        .collect();
    (loss, out)
}

#[test]
fn averaged_gradients_equal_the_gradients_of_the_concatenated_batch() {
    let cfg = tiny_config(10);
    let corpus = Corpus::new(synthetic_clips(8), &cfg);
    let full = make_batch(&corpus, &cfg, 3);
    assert_eq!(full.batch, 8);
    let (loss, want) = grads(&full, 11, None);

    let group = ThreadGroup::new(2);
    let ranks: Vec<(f32, Vec<(String, Tensor)>)> = std::thread::scope(|s| {
        let handles: Vec<_> = group
            .iter()
            .map(|g| {
                let half = part(&full, g.rank() * 4..(g.rank() + 1) * 4);
                s.spawn(move || grads(&half, 11, Some(g as &dyn Collective)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (rank_loss, got) in &ranks {
        assert!(
            (rank_loss - loss).abs() <= 1e-5 * loss.abs(),
            "loss {rank_loss} vs {loss}"
        );
        assert_eq!(got.len(), want.len());
        for ((name, g), (_, w)) in got.iter().zip(&want) {
            let scale: f32 = w.abs().unwrap().max_all().unwrap().to_scalar().unwrap();
            let diff = max_diff(g, w);
            assert!(
                diff <= 1e-5 * scale.max(1e-6),
                "{name}: max |diff| {diff} against max |g| {scale}"
            );
        }
    }
    // Both ranks hold the very same averaged gradients.
    for ((n, a), (_, b)) in ranks[0].1.iter().zip(&ranks[1].1) {
        assert_eq!(max_diff(a, b), 0.0, "{n}");
    }
}

/// What a rank did: its losses, the run's batches it used, its final weights.
type RankRun = (
    Vec<f64>,
    Vec<u64>,
    std::collections::HashMap<String, Tensor>,
);

#[test]
fn ranks_start_from_rank_0_stay_identical_and_only_rank_0_writes() {
    let mut cfg = tiny_config(4);
    cfg.optim.batch_size = 4;
    let corpus = Arc::new(Corpus::new(synthetic_clips(8), &cfg));
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let group = ThreadGroup::new(2);
    let results: Vec<RankRun> = std::thread::scope(|s| {
        let handles: Vec<_> = group
            .into_iter()
            .zip(&dirs)
            .map(|(g, dir)| {
                let (corpus, cfg) = (corpus.clone(), cfg.clone());
                s.spawn(move || {
                    let rank = g.rank();
                    // Rank 1 starts from other weights (another seed): joining copies rank 0's.
                    let mut init = cfg.clone();
                    init.run.seed += rank as u64;
                    let mut t = Trainer::new(init, &Device::Cpu).unwrap();
                    t.join(Box::new(g)).unwrap();
                    let cfg = Arc::new(cfg);
                    let loader = Loader::start_rank(corpus, cfg.clone(), 0, 0.0, rank, 2);
                    let (mut losses, mut used) = (Vec::new(), Vec::new());
                    for step in 0..4 {
                        let batch = loader.get(step).unwrap();
                        used.push(batch.step);
                        losses.push(t.train_step(&batch).unwrap().loss);
                    }
                    t.save(dir.path()).unwrap();
                    (losses, used, t.jepa.tensors())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // The same (averaged) losses and bit-identical weights, EMA target included.
    assert_eq!(results[0].0, results[1].0);
    for (k, a) in &results[0].2 {
        assert_eq!(max_diff(a, &results[1].2[k]), 0.0, "{k}");
    }
    // Rank r used the run's batches 2k + r: together 0..8, each once.
    let mut used: Vec<u64> = results.iter().flat_map(|r| r.1.clone()).collect();
    used.sort();
    assert_eq!(used, (0..8).collect::<Vec<u64>>());
    assert_eq!(results[1].1, vec![1, 3, 5, 7]);
    assert_eq!(batch_index(3, 1, 2), 7);
    // Rank 0 wrote the checkpoint; rank 1 wrote nothing.
    assert!(dirs[0].path().join(CHECKPOINT).is_file());
    assert_eq!(std::fs::read_dir(dirs[1].path()).unwrap().count(), 0);
}

fn launch(args: &[&str]) -> std::process::Output {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/launch.sh");
    std::process::Command::new("bash")
        .arg(script)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_launcher_starts_one_process_per_rank_and_stops_all_when_one_fails() {
    let ok = launch(&[
        "--gpus",
        "3",
        "--port",
        "29999",
        "--",
        "sh",
        "-c",
        "echo $RANK/$WORLD_SIZE/$LOCAL_RANK@$MASTER_ADDR:$MASTER_PORT",
    ]);
    assert!(ok.status.success(), "{ok:?}");
    let mut lines: Vec<String> = String::from_utf8_lossy(&ok.stdout)
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "0/3/0@127.0.0.1:29999",
            "1/3/1@127.0.0.1:29999",
            "2/3/2@127.0.0.1:29999"
        ]
    );
    // Rank 1 fails at once; ranks 0 and 2 would wait a minute: they are stopped, and the
    // launch fails with rank 1's status.
    let started = std::time::Instant::now();
    let failed = launch(&[
        "--gpus",
        "3",
        "--",
        "sh",
        "-c",
        "[ $RANK = 1 ] && exit 3; exec sleep 60",
    ]);
    assert_eq!(failed.status.code(), Some(3), "{failed:?}");
    assert!(
        started.elapsed().as_secs() < 30,
        "the other ranks were not stopped"
    );
    assert!(String::from_utf8_lossy(&failed.stderr).contains("stopping the others"));
}
