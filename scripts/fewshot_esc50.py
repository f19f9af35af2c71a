#!/usr/bin/env python3
"""The few-shot job of issue 13, as a user does it: teach 10 sounds the model never saw from 5 clips each,
then tag held-out clips of them with `ajepa listen`.

10 ESC-50 classes outside ESC-10 (the 10 lowest ESC-50 class numbers not in ESC-10), 5 clips each from folds
1-3 (the first five by file name) in a folder per class; `ajepa finetune --folders` fits the head on the
encoder; every fold-4 clip of those classes (8 per class) goes through `ajepa listen --fast --json`, and a
clip's tag is the class with the highest mean probability over its hops (hops that listen flags as silence
left out: they turn no tag on). `--via tag` asks `ajepa tag` instead (the product's clip verdict). Standard
library only.

`--pick distinct` takes the five clips of a class from five different source recordings, round-robin over
folds 1-3 (ESC-50's first five by file name are often five takes of one recording: all of "pig"'s are), as a
user teaching a sound would record it in several places. `--class-set K` (0-3) takes the K-th ten of the 40
classes outside ESC-10 in class-number order (0, the default, is the ten above): one set is 80 test clips, a
standard error near 5 points, so compare encoders over all four (320 clips, every non-ESC-10 class once).
`--probe` also writes the same 5-shot split as an ESC-50 style CSV (train fold 1, test fold 4) and runs `ajepa
eval` on it with a fixed L2: the encoder beside the log-mel statistics and random-init baselines, same clips, same
protocol.

    python3 scripts/fewshot_esc50.py --model models/default/encoder.safetensors [--full] [--pick first|distinct]
        [--pool freqcat|mean] [--classifier auto|logistic|prototype] [--class-set 0-3] [--probe] [--work /tmp/fewshot]
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
    ap.add_argument("--pick", choices=["first", "distinct"], default="first",
                    help="first: the first five clips by file name; distinct: five source recordings")
    ap.add_argument("--pool", choices=["freqcat", "mean"], default="freqcat",
                    help="the head's pooling (finetune --pool): freqcat (the default) or mean")
    ap.add_argument("--classifier", choices=["auto", "logistic", "prototype"], default="auto",
                    help="the head (finetune --classifier): chosen by cross-validation, or forced")
    ap.add_argument("--finetune-arg", action="append", default=[], metavar="ARG",
                    help="passed on to `ajepa finetune` (repeat), e.g. --finetune-arg=--window-hop=1")
    ap.add_argument("--via", choices=["listen", "tag"], default="listen",
                    help="listen: `ajepa listen --json` on each clip, the mean probability over its hops "
                         "(hops flagged silent left out, as listen shows them); tag: `ajepa tag --json`, "
                         "the product's clip verdict (finetune's windows, quiet ones left out)")
    ap.add_argument("--class-set", type=int, choices=range(4), default=0, metavar="0-3",
                    help="which ten of the 40 classes outside ESC-10, in class-number order (default 0)")
    ap.add_argument("--probe", action="store_true",
                    help="also `ajepa eval` the same split (linear probe on whole clips, both baselines)")
    args = ap.parse_args()

    rows = list(csv.DictReader(open(os.path.join(args.esc50, "esc50.csv"))))
    names = {int(r["target"]): r["category"] for r in rows if r["esc10"] != "True"}
    k = args.class_set
    classes = [names[t] for t in sorted(names)[10 * k: 10 * (k + 1)]]
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
    picked = {}
    for c in classes:
        if args.pick == "first":
            picked[c] = by_class[c][: args.shots]
        else:
            # Round-robin over folds 1-3, a new source recording each time (the id in the file name).
            pool, seen, pick = list(by_class[c]), set(), []
            while len(pick) < args.shots and pool:
                for fold in "123":
                    for p in pool:
                        name = os.path.basename(p)
                        src = name.split("-")[1]
                        if name[0] == fold and src not in seen:
                            seen.add(src)
                            pick.append(p)
                            pool.remove(p)
                            break
                    if len(pick) == args.shots:
                        break
                else:
                    if not any(os.path.basename(p).split("-")[1] not in seen for p in pool):
                        break
            picked[c] = pick
        os.makedirs(os.path.join(train_dir, c))
        for p in picked[c]:
            os.symlink(p, os.path.join(train_dir, c, os.path.basename(p)))
    if args.probe:
        split_csv = os.path.join(args.work, "split.csv")
        with open(split_csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["filename", "fold", "category"])
            for c in classes:
                w.writerows([p, 1, c] for p in picked[c])
            w.writerows([p, 4, c] for p, c in test)
        probe = subprocess.run(
            [args.ajepa, "eval", "--model", args.model, "--csv", split_csv, "--train-folds", "1",
             "--test-folds", "4", "--l2", "1e-2", "--pool", "mean,freqcat"],
            capture_output=True, text=True)
        sys.stderr.write(probe.stdout)
        if probe.returncode != 0:
            sys.exit(f"eval failed ({probe.returncode}): {probe.stderr[-1000:]}")

    head_dir = os.path.join(args.work, "head")
    cmd = [args.ajepa, "finetune", "--model", args.model, "--folders", train_dir, "--out", head_dir,
           "--pool", args.pool, "--classifier", args.classifier]
    if args.full:
        cmd.append("--full")
    cmd += args.finetune_arg
    fit = subprocess.run(cmd, capture_output=True, text=True)
    sys.stderr.write(fit.stderr[-2000:])
    if fit.returncode != 0:
        sys.exit(f"finetune failed ({fit.returncode})")
    encoder = os.path.join(head_dir, "encoder.safetensors") if args.full else args.model
    try:
        head_choice = json.load(open(os.path.join(head_dir, "finetune.json"))).get("head")
    except (OSError, ValueError):
        head_choice = None

    head = os.path.join(head_dir, "head.safetensors")
    guesses = {}
    if args.via == "tag":
        out = subprocess.run(
            [args.ajepa, "tag", "--json", "--no-unknown", "--top", "1", "--model", encoder, "--head", head]
            + [p for p, _ in test],
            capture_output=True, text=True, check=True,
        ).stdout
        for line in out.splitlines():
            msg = json.loads(line)
            top = msg.get("top") or []
            guesses[os.path.abspath(msg["file"])] = top[0][0] if top else None
    else:
        for path, _ in test:
            out = subprocess.run(
                [args.ajepa, "listen", "--fast", "--json", "--input", path, "--model", encoder,
                 "--head", head],
                capture_output=True, text=True, check=True,
            ).stdout
            sums = defaultdict(float)
            for line in out.splitlines():
                msg = json.loads(line)
                # A hop below the silence gate shows SILENCE and turns no tag on: not a vote.
                if msg.get("type") != "hop" or msg.get("silent"):
                    continue
                for label, p in msg["top"]:
                    sums[label] += p
            guesses[path] = max(sums, key=sums.get) if sums else None
    correct = 0
    per_class = defaultdict(lambda: [0, 0])
    for path, truth in test:
        per_class[truth][1] += 1
        if guesses.get(path) == truth:
            correct += 1
            per_class[truth][0] += 1
    acc = correct / len(test)
    print(json.dumps({
        "model": args.model, "full": args.full, "pool": args.pool, "classifier": args.classifier, "via": args.via,
        "head": head_choice, "shots": args.shots, "pick": args.pick, "class_set": args.class_set, "classes": classes,
        "test_clips": len(test), "accuracy": acc,
        "per_class": {c: f"{per_class[c][0]}/{per_class[c][1]}" for c in classes},
    }))


if __name__ == "__main__":
    main()
