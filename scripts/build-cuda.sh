#!/usr/bin/env bash
# Builds `ajepa-train` with candle's CUDA kernels on a machine without a GPU:
#
#   scripts/build-cuda.sh            # release binary -> target/cuda/ajepa-train (for sm_90: H100/H200)
#   scripts/build-cuda.sh --check    # type-check the `cuda` and `nccl` features (what CI runs)
#   AJEPA_CUDA_FEATURES=cuda scripts/build-cuda.sh   # a single-GPU binary without NCCL
#
# Sets up the toolchain first (scripts/cuda-toolchain.sh). The environment must stay the same
# between builds or candle-kernels rebuilds (about 5 minutes). CUDA_COMPUTE_CAP picks the GPU
# generation (90 = Hopper); the binary needs the CUDA 13 runtime libraries where it runs.
set -euo pipefail
cd "$(dirname "$0")/.."
FEATURES=${AJEPA_CUDA_FEATURES:-cuda,nccl}
case ",$FEATURES," in
  *,nccl,*) [ "${1:-}" = "--check" ] && scripts/cuda-toolchain.sh || scripts/cuda-toolchain.sh --nccl ;;
  *) scripts/cuda-toolchain.sh ;;
esac
HOME_DIR=${AJEPA_CUDA_HOME:-$HOME/.cache/ajepa-cuda}
export CUDA_ROOT="$HOME_DIR/cudaroot"
export PATH="$CUDA_ROOT/bin:$PATH"
export CUDARC_CUDA_VERSION=13000
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-2}
export LIBRARY_PATH="$CUDA_ROOT/lib:$CUDA_ROOT/lib/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
# Separate target folder: the CPU build's artefacts stay valid.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cuda-build}
if [ "${1:-}" = "--check" ]; then
  cargo check -p audio-jepa-training --features "$FEATURES" --bins --lib
  exit 0
fi
cargo build --release -p audio-jepa-training --features "$FEATURES"
mkdir -p target/cuda
# Without symbols: the release profile keeps debug info (154 MB), stripped it is about 58 MiB, and
# what travels to a GPU machine is limited (64 MiB there, binary and shards together): `xz -9`
# shrinks it further for the trip.
strip -o target/cuda/ajepa-train "$CARGO_TARGET_DIR/release/ajepa-train"
ls -l target/cuda/ajepa-train
echo "run on the GPU machine with its CUDA 13 libraries, e.g.:"
echo "  LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib ./ajepa-train pretrain --compute cuda ..."
