#!/usr/bin/env bash
# Every measurement a default-model candidate gets, in one command, into one folder:
#   scripts/eval_run.sh RUN OUT
# RUN: a pretraining run folder (runs/default-v5); OUT: where the outputs go (docs/runs/default-v5).
# 1. ESC-50 fold 4 linear probe of the context encoder with both baselines (log-mel statistics, a
#    random-init encoder) under the same protocol (L2 chosen on fold 3), mean and freqcat pooling;
# 2. the ESC-10 tagger: a window probe on ESC-10 folds 1-3, scored on fold 4 (runs/NAME-probe);
# 3. few-shot: 10 unseen ESC-50 classes from 5 clips each, `finetune --folders` then `listen`
#    (scripts/fewshot_esc50.py), on each of the four sets of ten classes outside ESC-10, with the first five
#    clips and with five different recordings: eight runs and their mean (fewshot-sets.txt);
# 4. ESC-50 fold 4 for the EMA target encoder (the choice between the two is made on fold 3).
# Needs ../shared/data (ESC-50, digits), release binaries (cargo build --release --workspace)
# and python3.
set -euo pipefail
run=${1:?usage: scripts/eval_run.sh RUN OUT}
out=${2:?usage: scripts/eval_run.sh RUN OUT}
esc=${ESC50:-../shared/data/esc50}
ajepa=${AJEPA:-target/release/ajepa}
name=$(basename "$run")
mkdir -p "$out"
[ -f "$run/context_encoder.safetensors" ] || { echo "no $run/context_encoder.safetensors" >&2; exit 1; }

echo "== 1. ESC-50 fold 4, context encoder, with baselines"
"$ajepa" eval --model "$run" --encoder context --csv "$esc/esc50.csv" \
    --train-folds 1,2,3 --test-folds 4 --pool mean,freqcat | tee "$out/eval-context.txt"
echo "== 2. ESC-10 tagger"
rm -rf "runs/$name-probe"
"$ajepa" finetune --model "$run/context_encoder.safetensors" --csv "$esc/esc50.csv" \
    --where esc10=True --train-folds 1,2,3 --test-folds 4 --out "runs/$name-probe" 2>&1 | tee "$out/finetune.txt"
cp "runs/$name-probe/finetune.json" "$out/finetune.json"
cp "runs/$name-probe/confusion.png" "$out/esc10_fold4_confusion.png" 2>/dev/null || true
echo "== 3. few-shot, over all 40 classes outside ESC-10 (four sets of ten) and both picks"
: > "$out/fewshot-sets.txt"
for set in 0 1 2 3; do
    for pick in first distinct; do
        # Its progress lines go to a log, shown only when a run fails.
        python3 scripts/fewshot_esc50.py --model "$run/context_encoder.safetensors" --ajepa "$ajepa" \
            --esc50 "$esc" --work "/tmp/fewshot-$name" --pick "$pick" --class-set "$set" \
            > "/tmp/fewshot-$name.json" 2> "/tmp/fewshot-$name.log" \
            || { tail -5 "/tmp/fewshot-$name.log" >&2; exit 1; }
        tee -a "$out/fewshot-sets.txt" < "/tmp/fewshot-$name.json"
    done
done
# One set is 80 clips (a standard error near 5 points); the mean over the eight runs is 640 verdicts.
python3 -c 'import json, sys; a = [json.loads(l)["accuracy"] for l in open(sys.argv[1]) if l.startswith("{")]; print(f"few-shot mean over {len(a)} runs: {100 * sum(a) / len(a):.1f} %")' \
    "$out/fewshot-sets.txt" | tee -a "$out/fewshot-sets.txt"
if [ -z "${SKIP_TARGET:-}" ]; then
    echo "== 4. ESC-50 fold 4, target (EMA) encoder (SKIP_TARGET=1 skips it)"
    "$ajepa" eval --model "$run" --encoder target --csv "$esc/esc50.csv" \
        --train-folds 1,2,3 --test-folds 4 --pool mean,freqcat --no-baselines | tee "$out/eval-target.txt"
fi
"${AJEPA_TRAIN:-target/release/ajepa-train}" curves "$run" || true
cp "$run/config.toml" "$run/log.jsonl" "$out/"
cp "$run/curves.png" "$out/" 2>/dev/null || true
echo "== done: $out"
