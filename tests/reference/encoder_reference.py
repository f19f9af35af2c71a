#!/usr/bin/env python3
"""PyTorch reference forward of the audio-jepa encoder on the same safetensors weights.

Written from I-JEPA's src/models/vision_transformer.py (pre-norm ViT, nn.GELU, LayerNorm,
2D sine-cosine position embeddings), not from our Rust code: it checks that our encoder computes
the model the weights describe. Run by hand (needs torch, safetensors, numpy), not by CI:

    cargo run --release -- embed CLIP.flac --model RUN/encoder.safetensors \
        --out /tmp/ours.npy --patches-out /tmp/patches.npy
    python3 tests/reference/encoder_reference.py --model RUN/encoder.safetensors \
        --patches /tmp/patches.npy --ours /tmp/ours.npy
"""

import argparse
import json
import math
import os

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file


def sincos_1d(dim, pos):
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_2d(dim, n_freq, n_time):
    # I-JEPA get_2d_sincos_pos_embed on an (n_freq x n_time) grid; patches numbered time-major.
    rows = np.array([i % n_freq for i in range(n_freq * n_time)], dtype=np.float64)
    cols = np.array([i // n_freq for i in range(n_freq * n_time)], dtype=np.float64)
    return np.concatenate([sincos_1d(dim // 2, rows), sincos_1d(dim // 2, cols)], axis=1)


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((att @ v).transpose(1, 2).reshape(b, n, c))


class MLP(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, ratio, eps):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MLP(dim, dim * ratio)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch_len, dim):
        super().__init__()
        self.proj = nn.Linear(patch_len, dim)


class Encoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg["embed_dim"]
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg["patch_size"] ** 2, d)
        self.blocks = nn.ModuleList(
            [Block(d, cfg["num_heads"], cfg["mlp_ratio"], cfg["layer_norm_eps"]) for _ in range(cfg["depth"])])
        self.norm = nn.LayerNorm(d, eps=cfg["layer_norm_eps"])

    def forward(self, patches):
        n = patches.shape[1]
        n_freq = self.cfg["n_mels"] // self.cfg["patch_size"]
        pos = torch.from_numpy(sincos_2d(self.cfg["embed_dim"], n_freq, n // n_freq)).float()
        x = self.patch_embed.proj(patches) + pos
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--patches", required=True)
    ap.add_argument("--ours", required=True)
    args = ap.parse_args()
    with open(os.path.splitext(args.model)[0] + ".json") as f:
        cfg = json.load(f)
    enc = Encoder(cfg)
    missing, unexpected = enc.load_state_dict(load_file(args.model), strict=True), None
    enc.eval()
    patches = torch.from_numpy(np.load(args.patches)).float().unsqueeze(0)
    with torch.no_grad():
        ref = enc(patches)[0].double().numpy()
    ours = np.load(args.ours).astype(np.float64)
    rel = np.linalg.norm(ours - ref) / np.linalg.norm(ref)
    print(f"encoder {cfg['embed_dim']} x {cfg['depth']}, {patches.shape[1]} patches: "
          f"relative error {rel:.3e}, max |diff| {np.abs(ours - ref).max():.3e}")
    if rel > 1e-4:
        raise SystemExit("FAIL: relative error above 1e-4")
    print("OK: relative error <= 1e-4")


if __name__ == "__main__":
    main()
