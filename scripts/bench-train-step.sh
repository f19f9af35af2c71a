#!/usr/bin/env bash
# A pretraining step side by side, in one run on one machine: PyTorch (eager, and torch.compile
# with COMPILE=1) against ours (training/examples/step_profile, the fused CPU ops), on the
# reference config (encoder 192 x 6, predictor 128 x 4, batch 32, 4 target blocks), for each
# thread count in THREADS (default "1 2"). Run from the repository root on an otherwise idle
# machine; results go to BENCHMARKS.md ("Pretraining step").
#
#   PY=../peers-venv/bin/python THREADS="1 2" COMPILE=1 scripts/bench-train-step.sh
#
# CONTEXT (default 35, the mean context of our random-block masks on this config, which
# step_profile prints) sets the peer's context patches per crop, so both do the same work.
# BF16=1 adds mixed precision on both sides: the peer under torch.autocast(bfloat16), ours with
# [optim] precision = "bf16" (bf16 products on AVX-512 BF16, f32 where the CPU lacks it).
set -euo pipefail
PY=${PY:-../peers-venv/bin/python}
CONFIG=${CONFIG:-training/configs/reference-match.toml}
cargo build --release -q -p audio-jepa-training --example step_profile
for t in ${THREADS:-1 2}; do
    echo "== $t thread(s)"
    "$PY" benches/peers/train_step_peer.py --threads "$t" --steps 10 --context "${CONTEXT:-35}"
    if [ -n "${COMPILE:-}" ]; then
        "$PY" benches/peers/train_step_peer.py --threads "$t" --steps 10 --context "${CONTEXT:-35}" \
            --compile 2>&1 | tail -1
    fi
    CANDLE_NUM_THREADS=$t RAYON_NUM_THREADS=$t target/release/examples/step_profile "$CONFIG"
    if [ -n "${BF16:-}" ]; then
        echo "-- bf16 mixed precision"
        "$PY" benches/peers/train_step_peer.py --threads "$t" --steps 10 --context "${CONTEXT:-35}" --bf16
        PRECISION=bf16 CANDLE_NUM_THREADS=$t RAYON_NUM_THREADS=$t target/release/examples/step_profile "$CONFIG"
    fi
    if [ -n "${COMPOSED:-}" ]; then
        echo "-- candle's composed ops (AJEPA_FUSED=0)"
        AJEPA_FUSED=0 CANDLE_NUM_THREADS=$t RAYON_NUM_THREADS=$t target/release/examples/step_profile "$CONFIG"
    fi
done
