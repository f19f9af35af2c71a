#!/usr/bin/env bash
# A CUDA 13.0 build toolchain from PyPI wheels, outside the repository, on a machine with no GPU
# and no system CUDA (the recipe of ../shared/gpu/README.md). Prints the environment to use.
#
#   scripts/cuda-toolchain.sh            # installs into ~/.cache/ajepa-cuda (or $AJEPA_CUDA_HOME)
#   scripts/cuda-toolchain.sh --nccl     # and NCCL (nvidia-nccl-cu13), which linking the `nccl`
#                                        # feature needs (a type check does not)
#
# CUDA 13.0 exactly: the GPU machines run driver R580 (CUDA 13.0), which cannot JIT the PTX of a
# newer nvcc. The link needs libcuda.so, which only a driver provides, so a stub exporting every
# driver symbol cudarc declares (each returning CUDA_ERROR_STUB_LIBRARY = 34) is built for linking;
# at run time the real driver's libcuda.so.1 is used. Never ship the stub.
set -euo pipefail
HOME_DIR=${AJEPA_CUDA_HOME:-$HOME/.cache/ajepa-cuda}
CUDARC=${CUDARC_VERSION:-0.19.10}   # the cudarc candle 0.11.1 depends on
CR="$HOME_DIR/cudaroot"
nccl() {
  [ -f "$CR/lib/libnccl.so" ] && return 0
  "$HOME_DIR/venv/bin/pip" install -q "nvidia-nccl-cu13"
  local lib
  lib=$("$HOME_DIR/venv/bin/python" -c 'import glob, os, nvidia; print(sorted(glob.glob(os.path.join(list(nvidia.__path__)[0], "nccl", "lib", "libnccl.so*")))[0])')
  ln -sf "$lib" "$CR/lib/libnccl.so"
  echo "NCCL linked from $lib" >&2
}
if [ -x "$CR/bin/nvcc" ] && [ -f "$CR/lib/stubs/libcuda.so" ]; then
  echo "toolchain already in $CR" >&2
  if [ "${1:-}" = "--nccl" ]; then nccl; fi
  exit 0
fi
python3 -m venv "$HOME_DIR/venv"
"$HOME_DIR/venv/bin/pip" install -q --upgrade pip
"$HOME_DIR/venv/bin/pip" install -q "cuda-toolkit[nvcc,cudart,cublas,curand,nvrtc,cccl,crt]==13.0.2" "nvidia-nvvm==13.0.88"
CU=$("$HOME_DIR/venv/bin/python" -c 'import os, nvidia; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')
mkdir -p "$CR/lib/stubs"
ln -sfn "$CU/bin" "$CR/bin"
ln -sfn "$CU/include" "$CR/include"
for l in cublas.so.13 cublasLt.so.13 curand.so.10 nvrtc.so.13 cudart.so.13; do
  ln -sf "$CU/lib/lib$l" "$CR/lib/lib${l%%.so.*}.so"
done
# The stub's symbols come from cudarc's own declarations, so they match the version linked.
cargo fetch --quiet
SYS=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-"$CUDARC" 2>/dev/null | head -1)/src/driver/sys/mod.rs
if [ ! -f "$SYS" ]; then
  echo "cudarc-$CUDARC sources not found after cargo fetch; set CUDARC_VERSION to the one in Cargo.lock" >&2
  exit 1
fi
grep -oE '^pub unsafe fn cu[A-Za-z0-9_]+' "$SYS" | awk '{print $4}' | sort -u \
  | awk '{print "int " $1 "(void) { return 34; }"}' > "$CR/libcuda_stub.c"
cc -shared -fPIC -o "$CR/lib/stubs/libcuda.so" -Wl,-soname,libcuda.so.1 "$CR/libcuda_stub.c"
ln -sf libcuda.so "$CR/lib/stubs/libcuda.so.1"
"$CR/bin/nvcc" --version | tail -1 >&2
echo "toolchain ready in $CR" >&2
if [ "${1:-}" = "--nccl" ]; then nccl; fi
