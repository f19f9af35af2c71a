#!/usr/bin/env python3
"""Open-set check of the built-in ESC-10 head (issue 16, item 3), as a user would run it: `ajepa tag --json` on
every ESC-50 fold-4 clip. Known: the 80 ESC-10 clips (accuracy, and how many are wrongly called unknown).
Unseen: the 320 clips of the 40 classes the head never saw (false-tag rate: the share NOT called unknown).
One row per setting: --no-unknown (the head alone), then each --unknown-quantile. Standard library only.

    python3 scripts/open_set_esc50.py [--esc50 ../shared/data/esc50] [--quantiles 0.05,0.1,0.2] [--head H --model M]
"""

import argparse
import csv
import json
import os
import subprocess


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--esc50", default="../shared/data/esc50")
    ap.add_argument("--ajepa", default="target/release/ajepa")
    ap.add_argument("--quantiles", default="0.05,0.1,0.2")
    ap.add_argument("--model", default="default")
    ap.add_argument("--head")
    args = ap.parse_args()
    rows = [r for r in csv.DictReader(open(os.path.join(args.esc50, "esc50.csv"))) if r["fold"] == "4"]
    truth = {os.path.join(args.esc50, "audio", r["filename"]): (r["category"], r["esc10"] == "True") for r in rows}
    files = sorted(truth)
    settings = [["--no-unknown"]] + [["--unknown-quantile", q] for q in args.quantiles.split(",")]
    print("| setting | ESC-10 accuracy (80 known clips) | known clips called unknown | false tags on 320 unseen-class clips |")
    print("|---|---:|---:|---:|")
    for s in settings:
        cmd = [args.ajepa, "tag", "--json", "--model", args.model] + (["--head", args.head] if args.head else []) + s + files
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        known = correct = rejected = unseen = false_tags = 0
        for line in out.splitlines():
            r = json.loads(line)
            cat, is_known = truth[r["file"]]
            if is_known:
                known += 1
                rejected += r["unknown"]
                correct += (not r["unknown"]) and r["top"][0][0] == cat
            else:
                unseen += 1
                false_tags += not r["unknown"]
        print(f"| {' '.join(s)} | {100 * correct / known:.1f} % | {100 * rejected / known:.1f} % | {100 * false_tags / unseen:.1f} % |")


if __name__ == "__main__":
    main()
