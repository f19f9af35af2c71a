#!/usr/bin/env python3
"""Side-by-side front-end benchmark: ajepa's log-mel against torchaudio and librosa, one thread.

Times, on the same decoded audio and on the same machine in one run:
  * torchaudio.compliance.kaldi.fbank with the A-JEPA/AudioMAE settings (the reference our
    fixtures come from),
  * librosa.feature.melspectrogram (512-point FFT, 400-sample Hann window, 160 hop, 128 mels,
    20 Hz to 8 kHz) followed by a natural log,
  * ajepa's offline and streaming front ends, via `ajepa bench --json` on the same file.

Every figure is milliseconds per second of audio (median and best over --repeat runs), and the
table gives each peer's time divided by ours (how many times faster we are).

Setup (a virtual environment outside the repository):
    python3 -m venv ../peers-venv
    ../peers-venv/bin/pip install numpy soundfile librosa torch torchaudio
    cargo build --release
    ../peers-venv/bin/python benches/peers/frontend_peers.py --input CLIP.flac
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

# One thread for every numeric library, set before they are imported.
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[var] = "1"

import numpy as np  # noqa: E402


def timed(fn, repeat):
    fn()  # warm-up: first-call caches (mel filters, FFT plans, JIT)
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs), min(runs)


def load_audio(path):
    import soundfile as sf

    data, rate = sf.read(path, dtype="float32", always_2d=True)
    data = data.mean(axis=1)
    if rate != 16000:
        import librosa

        data = librosa.resample(data, orig_sr=rate, target_sr=16000, res_type="soxr_hq")
    return np.ascontiguousarray(data, dtype=np.float32)


def main():
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", required=True, help="audio file (16 kHz mono is used as is)")
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--ajepa", default=os.path.join(repo, "target", "release", "ajepa"))
    ap.add_argument("--json", action="store_true", help="print the table as JSON")
    args = ap.parse_args()

    import librosa
    import torch
    import torchaudio

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)

    wave = load_audio(args.input)
    seconds = len(wave) / 16000.0
    w = torch.from_numpy(wave).unsqueeze(0)

    def torchaudio_fbank():
        x = w - w.mean()
        return torchaudio.compliance.kaldi.fbank(
            x, htk_compat=True, sample_frequency=16000, use_energy=False, window_type="hanning",
            num_mel_bins=128, dither=0.0, frame_length=25, frame_shift=10)

    def librosa_logmel():
        m = librosa.feature.melspectrogram(
            y=wave, sr=16000, n_fft=512, win_length=400, hop_length=160, window="hann",
            center=False, power=2.0, n_mels=128, fmin=20.0, fmax=8000.0, htk=True, norm=None)
        return np.log(np.maximum(m, 1.1920929e-07))

    rows = []
    with torch.inference_mode():
        med, best = timed(torchaudio_fbank, args.repeat)
    rows.append((f"torchaudio {torchaudio.__version__} kaldi.fbank", med, best))
    med, best = timed(librosa_logmel, args.repeat)
    rows.append((f"librosa {librosa.__version__} melspectrogram+log", med, best))

    # Ours, in the same run, on the same file.
    out = subprocess.run(
        [args.ajepa, "bench", "--input", args.input, "--repeat", str(args.repeat), "--json"],
        check=True, capture_output=True, text=True).stdout
    ours = json.loads(out.strip().splitlines()[-1])
    off = ours["offline_ms_per_audio_s"]
    stream = ours["streaming_ms_per_audio_s"]

    # Per second of audio, in ms.
    table = [(name, 1e3 * med / seconds, 1e3 * best / seconds) for name, med, best in rows]
    fastest_peer = min(t[1] for t in table)
    table.append(("ajepa offline", off["median"], off["best"]))
    table.append((f"ajepa streaming ({ours['chunk']}-sample pushes)", stream["median"], stream["best"]))

    # Our output against torchaudio's on this clip, so the timing compares like with like. Only
    # for 16 kHz files: otherwise the two sides resampled differently (rubato vs soxr) and the
    # near-empty bands above the source's Nyquist frequency amplify that difference in the log.
    import soundfile as sf

    native_16k = sf.info(args.input).samplerate == 16000
    with torch.inference_mode():
        ref = torchaudio_fbank().numpy()
    ours_arr = None
    try:
        if not native_16k:
            raise OSError("not a 16 kHz file: agreement check skipped")
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            npy = os.path.join(tmp, "ours.npy")
            subprocess.run([args.ajepa, "features", args.input, "--out", npy], check=True,
                           capture_output=True)
            ours_arr = np.load(npy)
    except (subprocess.CalledProcessError, OSError) as e:
        print(f"warning: could not compute our features for the agreement check: {e}", file=sys.stderr)

    cpu = ours.get("cpu", platform.processor())
    result = {
        "cpu": cpu,
        "threads": 1,
        "input": args.input,
        "audio_seconds": seconds,
        "repeat": args.repeat,
        "rows": [{"name": n, "ms_per_audio_s_median": m, "ms_per_audio_s_best": b,
                  "peer_over_ours": m / off["median"]} for n, m, b in table],
        "speedup_vs_fastest_peer": fastest_peer / off["median"],
        "max_abs_diff_vs_torchaudio": None if ours_arr is None
        else float(np.abs(ours_arr - ref).max()),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"cpu: {cpu}, 1 thread; input {args.input} ({seconds:.2f} s), {args.repeat} repetitions")
    print(f"{'front end':48} {'median ms/s':>12} {'best ms/s':>10} {'time / ajepa offline':>21}")
    for n, m, b in table:
        print(f"{n:48} {m:12.4f} {b:10.4f} {m / off['median']:20.2f}x")
    print(f"ajepa offline is {result['speedup_vs_fastest_peer']:.1f}x faster than the faster peer")
    if result["max_abs_diff_vs_torchaudio"] is not None:
        print(f"max |ajepa - torchaudio| on this clip: {result['max_abs_diff_vs_torchaudio']:.2e}")


if __name__ == "__main__":
    main()
