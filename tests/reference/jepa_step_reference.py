#!/usr/bin/env python3
"""Records one JEPA training step of the independent PyTorch reference run as a test fixture.

The reference is ../shared/reference/jepa-pytorch/ (written outside this project; see its README).
Nothing of it is copied here: its ViT comes from its `common.py` by import, and its predictor,
block-size and mask functions are taken from its `jepa.py` by parsing that file and executing
only those definitions (importing jepa.py would start its training loop), on a tiny grid.

One step of a tiny config, exactly as jepa.py's loop does it: targets = layer_norm(target(x)),
context encoder on the context indices, predictor on every target block (the context repeated
once per block), MSE over all predicted tokens, backward, AdamW (decay on >= 2-D weights except the
mask token, as jepa.py groups them), then the EMA update of the target with momentum `EMA_M`.

The fixture keeps the reference's own names and its frequency-major patch order (index = row * W +
col); the Rust test (training/tests/reference_step.rs) maps names and permutes indices. Run by
hand, not by CI (needs torch, numpy, safetensors):

    python3 -m venv ~/refvenv && ~/refvenv/bin/pip install numpy scipy scikit-learn torch safetensors
    ~/refvenv/bin/python tests/reference/jepa_step_reference.py \
        --reference ../shared/reference/jepa-pytorch --out tests/fixtures/jepa_step/reference_step.safetensors
"""

import argparse
import ast
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

# The tiny config: 8 frequency rows x 6 time columns of 16 x 16 patches (96 frames).
D, DEPTH, HEADS = 32, 2, 2
PD, PDEPTH, PHEADS = 16, 1, 2
GRID_H, GRID_W = 8, 6
BATCH, NTGT = 4, 4
LR, WD, EMA_M = 1e-3, 0.05, 0.9


def reference_defs(path, names, namespace):
    """Executes only the top-level definitions `names` of the file at `path` in `namespace`."""
    tree = ast.parse(open(path).read(), path)
    keep = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name in names]
    found = {n.name for n in keep}
    if found != set(names):
        sys.exit(f"{path}: missing definitions {set(names) - found}")
    exec(compile(ast.Module(body=keep, type_ignores=[]), path, "exec"), namespace)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reference", required=True, help="folder of the PyTorch reference run")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    sys.path.insert(0, os.path.abspath(args.reference))
    import common  # the reference's ViT, Block, sincos_2d, init_weights

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    ns = dict(vars(common))
    ns.update(H=GRID_H, W=GRID_W, np=np, torch=torch, math=__import__("math"), nn=torch.nn)
    reference_defs(os.path.join(args.reference, "jepa.py"), ["block_hw", "masks", "Predictor"], ns)

    enc = common.ViT(d=D, depth=DEPTH, heads=HEADS)
    pred = ns["Predictor"](d_enc=D, d=PD, depth=PDEPTH, heads=PHEADS)
    tgt = common.ViT(d=D, depth=DEPTH, heads=HEADS)
    with torch.no_grad():
        # Non-trivial norms, biases and mask token, and a target that is not a copy of the
        # context encoder (as after some EMA steps), so every path of the step is exercised.
        for m in (enc, pred):
            for n, p in m.named_parameters():
                if p.ndim == 1 or "mask" in n:
                    p.add_(0.1 * torch.randn_like(p))
        for pt, pe in zip(tgt.parameters(), enc.parameters()):
            pt.copy_(pe + 0.01 * torch.randn_like(pe))
    # Structured input (smooth in time and frequency), at the normalised scale the run sees.
    x = torch.randn(BATCH, GRID_W * 16, 128)
    x = 2.0 * F.avg_pool2d(x.unsqueeze(1), 5, 1, 2).squeeze(1) + 0.1 * torch.randn_like(x)
    cidx, tidxs = ns["masks"](BATCH, rng, ntgt=NTGT)

    params = list(enc.named_parameters()) + list(pred.named_parameters())
    decay = [p for n, p in params if p.ndim >= 2 and "mask" not in n]
    nodecay = [p for n, p in params if not (p.ndim >= 2 and "mask" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD}, {"params": nodecay, "weight_decay": 0.0}],
                            lr=LR, betas=(0.9, 0.999))

    before = {f"enc.{n}": p.detach().clone() for n, p in enc.named_parameters()}
    before.update({f"pred.{n}": p.detach().clone() for n, p in pred.named_parameters()})
    before.update({f"tgt.{n}": p.detach().clone() for n, p in tgt.named_parameters()})

    # The step, as jepa.py's training loop computes it.
    with torch.no_grad():
        ht = F.layer_norm(tgt(x), (D,))
    z = enc(x, cidx)
    nt = len(tidxs)
    ti = torch.cat(tidxs, 0)
    p = pred(z.repeat(nt, 1, 1), cidx.repeat(nt, 1), ti)
    y = torch.gather(ht.repeat(nt, 1, 1), 1, ti.unsqueeze(-1).expand(-1, -1, D))
    loss = F.mse_loss(p, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grads = {f"enc.{n}": q.grad.detach().clone() for n, q in enc.named_parameters()}
    grads.update({f"pred.{n}": q.grad.detach().clone() for n, q in pred.named_parameters()})
    opt.step()
    with torch.no_grad():
        for pt, pe in zip(tgt.parameters(), enc.parameters()):
            pt.mul_(EMA_M).add_(pe.detach(), alpha=1 - EMA_M)
    after = {f"enc.{n}": p.detach().clone() for n, p in enc.named_parameters()}
    after.update({f"pred.{n}": p.detach().clone() for n, p in pred.named_parameters()})
    after.update({f"tgt.{n}": p.detach().clone() for n, p in tgt.named_parameters()})

    out = {"x": x.contiguous(), "ctx": cidx.to(torch.int64).contiguous(), "loss": loss.detach().reshape(1)}
    for k, t in enumerate(tidxs):
        out[f"tgt_idx.{k}"] = t.to(torch.int64).contiguous()
    out.update({f"before.{k}": v.contiguous() for k, v in before.items()})
    out.update({f"grad.{k}": v.contiguous() for k, v in grads.items()})
    out.update({f"after.{k}": v.contiguous() for k, v in after.items()})
    meta = dict(
        config=json.dumps(dict(embed_dim=D, depth=DEPTH, num_heads=HEADS, pred_dim=PD, pred_depth=PDEPTH,
                               pred_heads=PHEADS, grid_h=GRID_H, grid_w=GRID_W, batch=BATCH, num_targets=NTGT,
                               lr=LR, weight_decay=WD, betas=[0.9, 0.999], eps=1e-8, ema=EMA_M)),
        patch_order="frequency-major: index = row * grid_w + col",
        torch=torch.__version__,
        source="../shared/reference/jepa-pytorch (common.py ViT; jepa.py Predictor, block_hw, masks)",
    )
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_file(out, args.out, metadata=meta)
    print(json.dumps(dict(loss=float(loss.detach()), tensors=len(out), context=list(cidx.shape),
                          targets=[list(t.shape) for t in tidxs])))


if __name__ == "__main__":
    main()
