#!/usr/bin/env python3
"""Encoder per hop, side by side in one run: ours (`ajepa bench --model`: candle f32, the engine in
f32 and in int8) against PyTorch eager fp32, ONNX Runtime fp32 and ONNX Runtime dynamic int8, on the
SAME weights (safetensors) and the SAME window, batch 1, at 1 and 2 threads. Every output, ours
included, is checked against the PyTorch reference (tests/reference/encoder_reference.py, written
from I-JEPA's model code).

    python3 -m venv ~/peers && ~/peers/bin/pip install torch safetensors numpy onnx onnxscript onnxruntime
    cargo build --release
    ~/peers/bin/python benches/peers/encoder_peers.py --model models/default/encoder.safetensors

Absolute times hold for the machine they were taken on; compare the ratios.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "reference"))
from encoder_reference import Encoder  # noqa: E402
from safetensors.torch import load_file  # noqa: E402


class Pooled(torch.nn.Module):
    """The encoder plus mean pooling: what the live tagger computes per hop."""

    def __init__(self, enc):
        super().__init__()
        self.enc = enc

    def forward(self, x):
        return self.enc(x).mean(dim=1)


def timed(fn, repeat):
    for _ in range(10):
        fn()
    ms = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t) * 1e3)
    ms.sort()
    return {"p50": ms[len(ms) // 2], "p95": ms[int(0.95 * (len(ms) - 1))], "best": ms[0]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="encoder .safetensors (its .json beside it)")
    ap.add_argument("--columns", type=int, default=6, help="window in patch columns (6 = 0.96 s)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--ajepa", default="target/release/ajepa")
    args = ap.parse_args()

    with open(os.path.splitext(args.model)[0] + ".json") as f:
        cfg = json.load(f)
    state = {k: v.float() for k, v in load_file(args.model).items()}
    enc = Encoder(cfg)
    enc.load_state_dict(state, strict=True)
    model = Pooled(enc).eval()
    n = args.columns * cfg["n_mels"] // cfg["patch_size"]
    x = torch.from_numpy(np.random.default_rng(0).normal(0, 0.5, (1, n, cfg["patch_size"] ** 2)).astype(np.float32))
    with torch.no_grad():
        ref = model(x).numpy()
    patches_npy = os.path.join(tempfile.mkdtemp(), "window.npy")
    np.save(patches_npy, x.numpy()[0])

    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = tempfile.mkdtemp()
    fp32 = os.path.join(tmp, "encoder.onnx")
    int8 = os.path.join(tmp, "encoder.int8.onnx")
    try:
        torch.onnx.export(model, (x,), fp32, input_names=["patches"], output_names=["pooled"],
                          opset_version=17, dynamo=False)
    except TypeError:
        torch.onnx.export(model, (x,), fp32, input_names=["patches"], output_names=["pooled"], opset_version=17)
    quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8)

    def session(path, threads):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])

    rows = []
    checks = {}
    for threads in [int(t) for t in args.threads.split(",")]:
        out = subprocess.run([args.ajepa, "bench", "--model", args.model, "--window-columns", str(args.columns),
                              "--threads", str(threads), "--repeat", str(args.repeat), "--json",
                              "--patches", patches_npy],
                             check=True, capture_output=True, text=True).stdout
        report = json.loads(out)["encoder"]
        for r in report["runtimes"]:
            name = "ours: " + r["runtime"]
            got = np.asarray(r["pooled"], dtype=np.float32)[None, :]
            checks[name] = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
            checks[name + " cosine"] = float((got * ref).sum() / (np.linalg.norm(got) * np.linalg.norm(ref)))
            # The engine runs on one thread whatever --threads says: it is listed once per
            # thread count, as measured.
            rows.append((name, threads, r["per_hop_ms"]["p50"], r["per_hop_ms"]["p95"], r["best_ms"]))

        torch.set_num_threads(threads)
        with torch.no_grad():
            t = timed(lambda: model(x), args.repeat)
        rows.append(("PyTorch eager fp32", threads, t["p50"], t["p95"], t["best"]))
        for name, path in [("ONNX Runtime fp32", fp32), ("ONNX Runtime dynamic int8", int8)]:
            s = session(path, threads)
            feed = {"patches": x.numpy()}
            got = s.run(None, feed)[0]
            checks[name] = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
            cos = float((got * ref).sum() / (np.linalg.norm(got) * np.linalg.norm(ref)))
            checks[name + " cosine"] = cos
            t = timed(lambda: s.run(None, feed), args.repeat)
            rows.append((name, threads, t["p50"], t["p95"], t["best"]))

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"cpu: {cpu}; torch {torch.__version__}, onnxruntime {ort.__version__}")
    print(f"encoder {cfg['embed_dim']} x {cfg['depth']} ({cfg['num_heads']} heads), {n} patches, batch 1, "
          f"{args.repeat} timed runs each")
    print("ratios: our engine's p50 over the peer's p50 at the same thread count (<= 1.0: ours is at least as fast)")
    print(f"{'runtime':28} {'threads':>7} {'p50 ms':>9} {'p95 ms':>9} {'best ms':>9} {'engine f32 / this':>18} "
          f"{'engine q8 / this':>17}")
    for name, threads, p50, p95, best in rows:
        f32 = next(r[2] for r in rows if r[0] == "ours: engine f32" and r[1] == threads)
        q8 = next(r[2] for r in rows if r[0].startswith("ours: engine q8") and r[1] == threads)
        print(f"{name:28} {threads:>7} {p50:9.3f} {p95:9.3f} {best:9.3f} {f32 / p50:18.2f} {q8 / p50:17.2f}")
    for k, v in checks.items():
        print(f"check vs PyTorch reference: {k}: {'relative error' if 'cosine' not in k else ''} {v:.3e}")


if __name__ == "__main__":
    main()
