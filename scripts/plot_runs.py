#!/usr/bin/env python3
"""Overlays pretraining curves against crops seen: our runs (`RUN/log.jsonl` from ajepa-train
pretrain) and the PyTorch reference's (`$EXP/jepa_log.json` from its jepa.py), in one PNG with
the loss on the left and the effective rank of clip embeddings on the right.

    ~/refvenv/bin/python scripts/plot_runs.py --out docs/runs/matched/curves.png \\
        ours=runs/matched/log.jsonl reference=$HOME/jepa-ref/jepa_log.json

Needs matplotlib. The reference logs the mean loss since its previous record every 50 steps and
the rank of the target and context encoders' pooled embeddings on 128 fixed crops; ours logs the
mean loss every `log_every` steps and the target's pooled rank on `rank_clips` crops.
"""

import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read(path, x="crops"):
    """(x, loss) points and (x, rank) points of one log; x is crops seen or, for our logs, training minutes."""
    loss, rank = [], []
    if path.endswith(".jsonl"):
        batch = None
        rows = [json.loads(l) for l in open(path) if l.strip()]
        for r in rows:
            if "crops" in r and "step" in r and r["step"]:
                batch = r["crops"] / r["step"]
        batch = batch or 32
        minutes = {r["step"]: r["elapsed_s"] / 60 for r in rows if "elapsed_s" in r}
        for r in rows:
            at = r["step"] * batch if x == "crops" else minutes.get(r["step"])
            if at is None:
                # Rank records carry no time: the nearest earlier logged step's.
                earlier = [s for s in minutes if s <= r["step"]]
                at = minutes[max(earlier)] if earlier else 0.0
            if "loss" in r:
                loss.append((at, r["loss"]))
            if "rank_pooled" in r:
                rank.append((at, r["rank_pooled"]))
    else:
        for r in json.load(open(path)):
            c = r["step"] * 32
            loss.append((c, r["loss"]))
            rank.append((c, r["rank_tgt"]))
    return loss, rank


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--title", default="pretraining, matched recipe")
    ap.add_argument("--x", choices=["crops", "minutes"], default="crops", help="x axis (minutes: our logs only)")
    ap.add_argument("runs", nargs="+", help="NAME=PATH (log.jsonl of ours, jepa_log.json of the reference)")
    args = ap.parse_args()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for spec in args.runs:
        name, _, path = spec.partition("=")
        loss, rank = read(path, args.x)
        if loss:
            a.plot(*zip(*loss), label=name)
        if rank:
            b.plot(*zip(*rank), marker="o", label=name)
    xlabel = "crops seen" if args.x == "crops" else "training minutes"
    a.set_xlabel(xlabel)
    a.set_ylabel("JEPA loss (MSE on layer-normed targets)")
    a.set_yscale("log")
    a.grid(alpha=0.3)
    a.legend()
    b.set_xlabel(xlabel)
    b.set_ylabel("effective rank of pooled target embeddings")
    b.grid(alpha=0.3)
    b.legend()
    fig.suptitle(args.title)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
