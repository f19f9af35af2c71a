#!/usr/bin/env bash
# Multi-GPU pretraining on one node, the way torchrun launches PyTorch jobs: one process per GPU
# with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT set; rank 0 hands the NCCL id to
# the others over TCP. If any rank fails, the others are stopped (a rank left alone would wait
# for its peers forever); Ctrl-C stops them all. Needs an ajepa-train built with
# `scripts/build-cuda.sh` (features cuda,nccl).
#
#   scripts/launch.sh --gpus 4 -- target/cuda/ajepa-train pretrain --compute cuda \
#       --config training/configs/default.toml --data shards/ --out runs/ddp
#
# Several nodes: see scripts/pretrain.sbatch (Slurm starts the processes there).
set -euo pipefail
gpus=""
port=${MASTER_PORT:-29500}
while [ $# -gt 0 ]; do
    case "$1" in
        --gpus) gpus=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        --) shift; break ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "launch.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ -z "$gpus" ]; then
    gpus=$(nvidia-smi -L 2>/dev/null | wc -l || true)
fi
if ! [ "$gpus" -ge 1 ] 2>/dev/null; then
    echo "launch.sh: how many GPUs? pass --gpus N (nvidia-smi found none)" >&2
    exit 2
fi
if [ $# -eq 0 ]; then
    echo "launch.sh: give the command after --, e.g. -- target/cuda/ajepa-train pretrain ..." >&2
    exit 2
fi
pids=()
stop_all() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap 'stop_all; exit 130' INT TERM
for ((r = 0; r < gpus; r++)); do
    RANK=$r WORLD_SIZE=$gpus LOCAL_RANK=$r MASTER_ADDR=127.0.0.1 MASTER_PORT=$port "$@" &
    pids+=($!)
done
status=0
# The first rank to fail decides: the rest are stopped, and its status is the launch's.
while [ ${#pids[@]} -gt 0 ]; do
    done_pid=""
    if wait -n -p done_pid "${pids[@]}"; then rc=0; else rc=$?; fi
    [ -n "$done_pid" ] || break
    left=()
    for p in "${pids[@]}"; do [ "$p" = "$done_pid" ] || left+=("$p"); done
    pids=("${left[@]+"${left[@]}"}")
    if [ "$rc" -ne 0 ]; then
        echo "launch.sh: a rank (pid $done_pid) failed with status $rc; stopping the others" >&2
        stop_all
        wait "${pids[@]+"${pids[@]}"}" 2>/dev/null || true
        status=$rc
        break
    fi
done
exit $status
