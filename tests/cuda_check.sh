#!/usr/bin/env bash
# The CUDA build's compile check, on a machine without a GPU: with CUDA 13.0's nvcc and headers
# from PyPI (tests/cuda_env.sh), `cargo clippy --features cuda` compiles candle's CUDA kernels
# (candle-kernels' build script runs nvcc) and checks vene's CUDA paths, tests included. Nothing
# is linked: cudarc links libcuda, cuBLAS, cuRAND and NVRTC (tests/gpu/build.sh links against
# PyPI's copies to make binaries for a GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/cuda_env.sh
CARGO_INCREMENTAL=1 cargo clippy --release --features cuda --all-targets -- -D warnings
echo "cuda_check: vene --features cuda compiles (kernels for sm_$CUDA_COMPUTE_CAP)"
