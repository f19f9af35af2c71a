#!/usr/bin/env bash
# Issue 13, item 4: the pretraining ablation. Every arm in training/configs/ablation/ trains for the
# same wall-clock budget (its config's `minutes`) on the same data, one after another on an otherwise
# idle machine, then its context encoder is probed on ESC-50 fold 4 (L2 chosen on fold 3) with the
# same `ajepa eval` command; the first arm's command also prints the baselines (log-mel statistics,
# a random-init encoder). Runs go to $RUNS/ARM (default runs/ablation), results to $RUNS/ARM/eval-ENCODER.txt.
#
#   scripts/ablation.sh                 # every arm
#   scripts/ablation.sh base mix        # some arms
#   MINUTES=30 RUNS=runs/ablation-30 scripts/ablation.sh layers3   # another budget, another folder
#   ENCODERS="context target" ...       # probe the EMA target too (default: the context encoder,
#                                       # the one the default model exports)
set -euo pipefail
cd "$(dirname "$0")/.."
ESC50=${ESC50:-../shared/data/esc50/esc50.csv}
[ -f "$ESC50" ] || { echo "ablation: no ESC-50 at $ESC50 (set ESC50=...)" >&2; exit 1; }
cargo build --release -q -p audio-jepa -p audio-jepa-training
arms=("$@")
[ ${#arms[@]} -gt 0 ] || arms=(base tf-wide views4 layers3 utterance mix)
first=1
for arm in "${arms[@]}"; do
    cfg=training/configs/ablation/$arm.toml
    [ -f "$cfg" ] || { echo "ablation: no arm $cfg" >&2; exit 1; }
    out=${RUNS:-runs/ablation}/$arm
    if [ ! -f "$out/encoder.safetensors" ]; then
        rm -rf "$out"
        ./target/release/ajepa-train pretrain --config "$cfg" --out "$out" ${MINUTES:+--minutes $MINUTES}
    fi
    extra=()
    [ $first -eq 1 ] || extra=(--no-baselines)
    first=0
    for enc in ${ENCODERS:-context}; do
        ./target/release/ajepa eval --model "$out" --encoder $enc --csv "$ESC50" \
            --train-folds 1,2,3 --test-folds 4 --pool mean,freqcat "${extra[@]}" | tee "$out/eval-$enc.txt"
        extra=(--no-baselines)
    done
done
