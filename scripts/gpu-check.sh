#!/usr/bin/env bash
# GPU check, for a machine with an NVIDIA GPU and driver: builds maintcast-models with
# --features cuda, runs the PyTorch reference tests with the network on the GPU, then prints
# windows/s of the GPU path and of the CPU kernel at batch 1, 64, 1024 and 16384.
#
#   scripts/gpu-check.sh            # MIN_S=2 seconds per figure; BATCHES to change the batches
#
# Uses the system CUDA when `nvcc` is on PATH, else CUDA 13 from PyPI (deploy/cuda-toolkit.sh).
# CUDA_COMPUTE_CAP defaults to the GPU's own (nvidia-smi).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
BATCHES=${BATCHES:-1,64,1024,16384}
export MIN_S=${MIN_S:-2}

nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv
if [ -z "${CUDA_COMPUTE_CAP:-}" ]; then
  CUDA_COMPUTE_CAP=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '.')
  export CUDA_COMPUTE_CAP
fi
if ! command -v nvcc >/dev/null; then
  bash deploy/cuda-toolkit.sh install
  eval "$(bash deploy/cuda-toolkit.sh env)"
  export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP}
  # Linking may use the libcuda stub: its soname is libcuda.so.1, so at run time the loader picks
  # the driver's own. The wheels' cuBLAS/cuRAND/NVRTC are found through LD_LIBRARY_PATH.
  export LD_LIBRARY_PATH=$CUDA_ROOT/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
echo "[gpu-check] nvcc $(nvcc --version | tail -1), CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP"

time cargo build --release -p maintcast-models --features cuda --example infer_bench --tests
echo "[gpu-check] reference tests with the network on the GPU"
MAINTCAST_TEST_DEVICE=cuda cargo test --release -p maintcast-models --features cuda \
  --test lstm_reference --test lstm_reference_fused

bench="$CARGO_TARGET_DIR/release/examples/infer_bench"
echo "[gpu-check] windows/s, default shape (2 x LSTM(64), window 60, 14 features)"
"$bench" cuda "$BATCHES"
RAYON_NUM_THREADS=${THREADS:-$(nproc)} "$bench" auto "$BATCHES"
