#!/usr/bin/env python3
"""Probes our encoders exactly as the PyTorch reference run probes its own (a matched comparison).

Loads one or more of our `*.safetensors` encoders into the reference's ViT
(../shared/reference/jepa-pytorch/common.py, imported, not copied), mapping our parameter names to
its names and our `[time][frequency]` patch-embedding layout to its Conv2d `[frequency][time]`
kernel, then runs the reference's probe (`common.probe`: StandardScaler + logistic regression,
C chosen on fold 3 after training on folds 1-2, refit on folds 1-3, tested on fold 4) on the
reference's own features (`$EXP/X_lab.npy` from its feats.py). Reference checkpoints (`.pt` from
jepa.py) are probed the same way, so every row is the same protocol on the same features.
training/tests/reference_step.rs proves the mapping exact (the same loss and gradients).

    EXP=$HOME/jepa-ref ~/refvenv/bin/python tests/reference/probe_like_reference.py \\
        --reference ../shared/reference/jepa-pytorch --baselines \\
        RUN/context_encoder.safetensors RUN/target_encoder.safetensors $EXP/ckpt_final.pt:enc
"""

import argparse
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import load_file


def ref_name(ours):
    """Our encoder parameter name in the reference ViT's naming."""
    if ours.startswith("patch_embed.proj."):
        return "patch." + ours[len("patch_embed.proj."):]
    if ours.startswith("blocks."):
        _, i, rest = ours.split(".", 2)
        for a, b in [("norm1.", "n1."), ("norm2.", "n2."), ("attn.qkv.", "qkv."), ("attn.proj.", "proj."),
                     ("mlp.fc1.", "fc1."), ("mlp.fc2.", "fc2.")]:
            if rest.startswith(a):
                return f"blocks.{i}.{b}{rest[len(a):]}"
        raise SystemExit(f"unknown parameter {ours}")
    return ours


def load_ours(common, path):
    t = load_file(path)
    cfg = json.load(open(os.path.splitext(path)[0] + ".json"))
    d = cfg["embed_dim"]
    m = common.ViT(d=d, depth=cfg["depth"], heads=cfg["num_heads"])
    sd = {}
    for k, v in t.items():
        v = v.float()
        if k == "patch_embed.proj.weight":  # [D, time * 16 + freq] -> [D, 1, freq, time]
            v = v.reshape(d, 16, 16).transpose(1, 2).reshape(d, 1, 16, 16)
        sd[ref_name(k)] = v
    m.load_state_dict(sd)
    return m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reference", required=True)
    ap.add_argument("--baselines", action="store_true", help="also log-mel mean+std and a random-init ViT")
    ap.add_argument("models", nargs="*", help="our .safetensors encoders, or reference CKPT.pt:enc|tgt")
    args = ap.parse_args()
    sys.path.insert(0, os.path.abspath(args.reference))
    import common

    exp = os.environ.get("EXP", "exp-cache")
    torch.set_num_threads(int(os.environ.get("NT", "2")))
    torch.manual_seed(0)
    X = np.load(exp + "/X_lab.npy")
    y = np.load(exp + "/y_lab.npy")
    f = np.load(exp + "/fold_lab.npy")
    tr, te = f <= 3, f == 4

    def report(name, F):
        acc, C, vals = common.probe(F[tr], y[tr], f[tr], F[te], y[te], val_fold=3)
        print(json.dumps(dict(features=name, fold4_acc=round(float(acc), 4), fold3_val_acc=round(float(vals[C]), 4),
                              C=C, rankme=round(common.rankme(F[te]), 2))), flush=True)

    if args.baselines:
        report("log-mel mean+std", np.concatenate([X.mean(1), X.std(1)], 1))
        report("random-init ViT (reference init)", common.embed_full(common.ViT(), X))
    for spec in args.models:
        if spec.endswith(".safetensors"):
            m = load_ours(common, spec)
        else:
            path, _, which = spec.partition(":")
            ck = torch.load(path)
            m = common.ViT()
            m.load_state_dict(ck[which or "enc"])
            spec = f"{spec} (step {ck['step']})"
        m.eval()
        report(spec, common.embed_full(m, X))


if __name__ == "__main__":
    main()
