#!/usr/bin/env bash
# Teach the built-in model two sounds it has never heard, from five clips each, then measure it
# on clips it has not seen: what a user does with their own recordings.
#   demos/few-shot/run.sh [CLASS_A CLASS_B]     two ESC-50 classes outside ESC-10 (default: frog, door_wood_knock)
# Works in a temporary folder; prints the held-out accuracy of the two new classes.
set -euo pipefail
. "$(dirname "$0")/../common.sh"
need_esc50
a="${1:-frog}"
b="${2:-door_wood_knock}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

head="$work/head.safetensors"
for class in "$a" "$b"; do
    mapfile -t shots < <(for f in 1 2 3; do esc50_clips "$class" "$f"; done | head -n 5)
    if [ "${#shots[@]}" -lt 5 ]; then
        echo "class \`$class\` has fewer than 5 clips in folds 1-3 of $ESC50/esc50.csv" >&2
        exit 2
    fi
    # The first enrollment extends the built-in head (ESC-10) into a new file; the second extends that.
    if [ -f "$head" ]; then
        "$AJEPA" enroll "$class" "${shots[@]/#/$ESC50/audio/}" --head "$head"
    else
        "$AJEPA" enroll "$class" "${shots[@]/#/$ESC50/audio/}" --out "$head"
    fi
    # Held-out clips (fold 4), one folder per class, as `eval --folders` reads them.
    mkdir -p "$work/held-out/$class"
    esc50_clips "$class" 4 | while read -r f; do ln -s "$ESC50/audio/$f" "$work/held-out/$class/$f"; done
done
echo
echo "== the extended head on the fold-4 clips of $a and $b (never used for teaching):"
"$AJEPA" eval --head "$head" --folders "$work/held-out"
