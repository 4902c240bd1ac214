# Sourced by tests/cuda_check.sh and tests/gpu/build.sh: NVIDIA's CUDA 13.0 compiler and headers
# from PyPI in target/cuda-toolkit-13.0 (installed once), and the variables candle's build
# scripts read (nvcc on PATH, CUDA_HOME, CUDA_COMPUTE_CAP).
#
# CUDA 13.0 because the lent GPU machines run driver 580 (CUDA 13.0), which cannot load PTX from
# a newer nvcc; cudarc 0.19.10 (candle 0.11) knows CUDA up to 13.4. The -cu12 wheels on PyPI
# ship ptxas but no nvcc. CUDA_COMPUTE_CAP: 90 (H100/H200) unless set.
CUDA_PKGS="nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85"
CUDA_TK=$(pwd)/target/cuda-toolkit-13.0
if [ "$(cat "$CUDA_TK/.installed" 2>/dev/null)" != "$CUDA_PKGS" ]; then
  rm -rf "$CUDA_TK"
  # shellcheck disable=SC2086
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --target "$CUDA_TK" $CUDA_PKGS
  echo "$CUDA_PKGS" >"$CUDA_TK/.installed"
fi
CUDA_HOME=$CUDA_TK/nvidia/cu13
export PATH=$CUDA_HOME/bin:$PATH CUDA_HOME CUDA_PATH=$CUDA_HOME CUDA_ROOT=$CUDA_HOME
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
nvcc --version | tail -1
