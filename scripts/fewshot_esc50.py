#!/usr/bin/env python3
"""The few-shot job of issue 13, as a user does it: teach 10 sounds the model never saw from 5 clips each,
then tag held-out clips of them with `ajepa listen`.

10 ESC-50 classes outside ESC-10 (the 10 lowest ESC-50 class numbers not in ESC-10), 5 clips each from folds
1-3 (the first five by file name) in a folder per class; `ajepa finetune --folders` fits the head on the
encoder; every fold-4 clip of those classes (8 per class) goes through `ajepa listen --fast --json`, and a
clip's tag is the class with the highest mean probability over its hops. Standard library only.

    python3 scripts/fewshot_esc50.py --model models/default/encoder.safetensors [--full] [--work /tmp/fewshot]
"""

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
from collections import defaultdict


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="encoder .safetensors (with its .json)")
    ap.add_argument("--esc50", default="../shared/data/esc50", help="ESC-50 folder (esc50.csv, audio/)")
    ap.add_argument("--ajepa", default="target/release/ajepa")
    ap.add_argument("--work", default="/tmp/fewshot")
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--full", action="store_true", help="fine-tune the encoder too (finetune --full)")
    args = ap.parse_args()

    rows = list(csv.DictReader(open(os.path.join(args.esc50, "esc50.csv"))))
    names = {int(r["target"]): r["category"] for r in rows if r["esc10"] != "True"}
    classes = [names[t] for t in sorted(names)[:10]]
    shutil.rmtree(args.work, ignore_errors=True)
    train_dir = os.path.join(args.work, "train")
    test = []
    by_class = defaultdict(list)
    for r in sorted(rows, key=lambda r: r["filename"]):
        if r["category"] not in classes:
            continue
        path = os.path.abspath(os.path.join(args.esc50, "audio", r["filename"]))
        if r["fold"] in ("1", "2", "3"):
            by_class[r["category"]].append(path)
        elif r["fold"] == "4":
            test.append((path, r["category"]))
    for c in classes:
        os.makedirs(os.path.join(train_dir, c))
        for p in by_class[c][: args.shots]:
            os.symlink(p, os.path.join(train_dir, c, os.path.basename(p)))

    head_dir = os.path.join(args.work, "head")
    cmd = [args.ajepa, "finetune", "--model", args.model, "--folders", train_dir, "--out", head_dir]
    if args.full:
        cmd.append("--full")
    fit = subprocess.run(cmd, capture_output=True, text=True)
    sys.stderr.write(fit.stderr[-2000:])
    if fit.returncode != 0:
        sys.exit(f"finetune failed ({fit.returncode})")
    encoder = os.path.join(head_dir, "encoder.safetensors") if args.full else args.model

    correct = 0
    per_class = defaultdict(lambda: [0, 0])
    for path, truth in test:
        out = subprocess.run(
            [args.ajepa, "listen", "--fast", "--json", "--input", path, "--model", encoder,
             "--head", os.path.join(head_dir, "head.safetensors")],
            capture_output=True, text=True, check=True,
        ).stdout
        sums = defaultdict(float)
        hops = 0
        for line in out.splitlines():
            msg = json.loads(line)
            if msg.get("type") != "hop":
                continue
            hops += 1
            for label, p in msg["top"]:
                sums[label] += p
        guess = max(sums, key=sums.get) if sums else None
        per_class[truth][1] += 1
        if guess == truth:
            correct += 1
            per_class[truth][0] += 1
    acc = correct / len(test)
    print(json.dumps({
        "model": args.model, "full": args.full, "shots": args.shots, "classes": classes,
        "test_clips": len(test), "accuracy": acc,
        "per_class": {c: f"{per_class[c][0]}/{per_class[c][1]}" for c in classes},
    }))


if __name__ == "__main__":
    main()
