#!/usr/bin/env python3
"""The same JEPA training step in PyTorch, for a side-by-side steps/s comparison.

Same model as training/configs/reference-match.toml (encoder 192 x 6, 3 heads; predictor 128 x 4;
`--preset edge`: 256 x 6, 4 heads), same batch (32 crops of 8 x 16 patches), mask sizes like a
random-block batch (context 48 patches, 4 targets of 20), AdamW, EMA update, MSE on layer-normed
targets, no gradient clipping (as the reference recipe). scripts/bench-train-step.sh runs it beside
ours.

    ../peers-venv/bin/python benches/peers/train_step_peer.py --threads 2 [--compile]
    python3 benches/peers/train_step_peer.py --device cuda --bf16 --batch 128   # on a GPU machine

`--bf16` runs the forward under torch.autocast(bfloat16) with f32 master weights, as I-JEPA's
`use_bfloat16` and our `[optim] precision = "bf16"` do.
"""

import argparse
import copy
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "reference"))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from encoder_reference import Block, Encoder, sincos_2d  # noqa: E402


class Predictor(nn.Module):
    def __init__(self, enc_dim, dim, depth, heads, n_freq, n_time):
        super().__init__()
        self.embed = nn.Linear(enc_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList([Block(dim, heads, 4, 1e-6) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.proj = nn.Linear(dim, enc_dim)
        self.register_buffer("pos", torch.from_numpy(sincos_2d(dim, n_freq, n_time)).float())

    def forward(self, z, ctx_idx, targets):
        x = self.embed(z) + self.pos[ctx_idx]
        out = []
        for t in targets:
            q = self.mask_token + self.pos[t]
            h = torch.cat([x, q], 1)
            for blk in self.blocks:
                h = blk(h)
            out.append(self.proj(self.norm(h)[:, x.shape[1]:]))
        return out


def gather(x, idx):
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action="store_true", help="autocast to bfloat16 (mixed precision)")
    ap.add_argument("--preset", choices=["reference", "edge"], default="reference",
                    help="reference: 192 x 6, 3 heads (training/configs/reference-match.toml); edge: 256 x 6, 4 heads")
    ap.add_argument("--context", type=int, default=48,
                    help="context patches per crop (our random-block masks keep 36-60, mean about 48)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the three networks")
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    d, heads = (192, 3) if args.preset == "reference" else (256, 4)
    cfg = dict(n_mels=128, patch_size=16, embed_dim=d, depth=6, num_heads=heads, mlp_ratio=4, layer_norm_eps=1e-6)
    ctx_enc = Encoder(cfg)
    tgt_enc = copy.deepcopy(ctx_enc)
    for p in tgt_enc.parameters():
        p.requires_grad_(False)
    pred = Predictor(d, 128, 4, 4, 8, 16)
    ctx_enc, tgt_enc, pred = ctx_enc.to(dev), tgt_enc.to(dev), pred.to(dev)
    opt = torch.optim.AdamW(list(ctx_enc.parameters()) + list(pred.parameters()), lr=5e-4, weight_decay=0.04)
    b, n = args.batch, 128
    x = torch.randn(b, n, 256, device=dev)  # 256 = one 16 x 16 patch
    pos = torch.from_numpy(sincos_2d(d, 8, 16)).float().to(dev)
    nc = args.context
    if args.compile:
        ctx_blocks = [torch.compile(blk) for blk in ctx_enc.blocks]
        tgt_fwd = torch.compile(tgt_enc)
        pred_fwd = torch.compile(pred)
    else:
        ctx_blocks, tgt_fwd, pred_fwd = list(ctx_enc.blocks), tgt_enc, pred

    def masks():
        perm = torch.stack([torch.randperm(n) for _ in range(b)]).to(dev)
        return perm[:, :nc], [perm[:, nc + 20 * i: nc + 20 + 20 * i] for i in range(4)]

    def step():
        ctx_idx, targets = masks()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.bf16):
            with torch.no_grad():
                h = F.layer_norm(tgt_fwd(x).float(), (d,))
            # Context encoder on the kept patches only (I-JEPA's apply_masks).
            tokens = gather(ctx_enc.patch_embed.proj(x) + pos, ctx_idx)
            for blk in ctx_blocks:
                tokens = blk(tokens)
            z = ctx_enc.norm(tokens)
            preds = pred_fwd(z, ctx_idx, targets)
        loss = sum(F.mse_loss(p.float(), gather(h, t), reduction="sum") for p, t in zip(preds, targets))
        loss = loss / sum(p.numel() for p in preds)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for pt, pc in zip(tgt_enc.parameters(), ctx_enc.parameters()):
                pt.mul_(0.996).add_(pc.detach(), alpha=0.004)
        return loss.item()

    for _ in range(2):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()  # loss.item() synchronises every step, as our step reads its loss
    dt = (time.perf_counter() - t0) / args.steps
    where = f"{args.threads} threads" if dev.type == "cpu" else torch.cuda.get_device_name(dev)
    if dev.type == "cuda":
        mem = f", peak {torch.cuda.max_memory_allocated(dev) / 2**20:.0f} MiB"
    else:
        import resource
        mem = f", peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    mode = ("bf16 autocast" if args.bf16 else "f32") + (", torch.compile" if args.compile else ", eager")
    print(f"pytorch {torch.__version__}, {where}, {mode}: {1 / dt:.3f} steps/s, {b / dt:.1f} samples/s{mem} "
          f"(batch {b}, {args.preset} encoder {d} x 6, predictor 128 x 4, context {nc}, 4 targets of 20)")


if __name__ == "__main__":
    main()
