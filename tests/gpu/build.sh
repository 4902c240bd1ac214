#!/usr/bin/env bash
# Run HERE (a CPU machine) before a session that is lent a GPU: builds what tests/gpu/run.sh
# runs there. The GPU machine has the NVIDIA driver (580: CUDA 13.0), CUDA 13.0's libraries and
# torch, but no Rust and no network, so everything is built here and carried:
#   1. CUDA 13.0's nvcc and headers (tests/cuda_env.sh), and the libraries vene links against
#      (cuBLAS, cuRAND, NVRTC: about 570 MB of PyPI wheels) in target/cuda-link-13.0, with a
#      link-only libcuda stub (the real libcuda comes with the driver);
#   2. `vene` and the test binaries hf_parity, pyvene_oracle and device with --features cuda;
#   3. stripped and packed, with the path they were built in and a pyvene wheel, into
#      gpu-bundle/ (git-ignored), which must stay under the device tool's 64 MiB.
# Then: device run with command `bash tests/gpu/run.sh`, carry ["gpu-bundle"], timeout_s 560.
# Measured 2026-12-05: 32 min here under load (candle with CUDA and vene compile from scratch;
# the kernels come from tests/cuda_check.sh's build); bundle 35 MiB. It leaves the CUDA build
# in target/release (vene, libvene.*): a plain `cargo build --release` replaces it.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
source tests/cuda_env.sh

LINK=$ROOT/target/cuda-link-13.0
LINK_PKGS="nvidia-cublas==13.0.0.19 nvidia-curand==10.4.0.35 nvidia-cuda-nvrtc==13.0.88"
if [ "$(cat "$LINK/.installed" 2>/dev/null)" != "$LINK_PKGS" ]; then
  rm -rf "$LINK"
  # shellcheck disable=SC2086
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --target "$LINK/py" $LINK_PKGS
  mkdir -p "$LINK/lib/stubs"
  for f in "$LINK"/py/nvidia/cu13/lib/lib*.so.* "$CUDA_HOME"/lib/libcudart.so.*; do
    ln -sf "$f" "$LINK/lib/$(basename "$f")"
    ln -sf "$f" "$LINK/lib/$(basename "$f" | sed 's/\.so\..*/.so/')"
  done
  # A libcuda.so with every driver function cudarc declares, empty: only for the linker.
  ver=$(grep -A1 '^name = "cudarc"' Cargo.lock | sed -n 's/version = "\(.*\)"/\1/p')
  src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-"$ver" | head -1)
  grep -ohE '^pub unsafe fn cu[A-Za-z0-9_]+' "$src/src/driver/sys/mod.rs" | sort -u |
    awk '{print "void " $4 "(void) {}"}' >"$LINK/libcuda_stub.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$LINK/lib/stubs/libcuda.so" "$LINK/libcuda_stub.c"
  echo "$LINK_PKGS" >"$LINK/.installed"
fi
# cudarc's build script adds <root>/lib and <root>/lib/stubs of each of these to the link path.
export CUDA_TOOLKIT_ROOT_DIR=$LINK

export CARGO_INCREMENTAL=1
cargo build --release --features cuda --bin vene
tests=$(cargo test --release --features cuda --no-run --message-format=json \
  --test hf_parity --test pyvene_oracle --test device |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["executable"])')

B=$ROOT/gpu-bundle
rm -rf "$B" && mkdir -p "$B/stage"
cp target/release/vene "$B/stage/vene"
for t in $tests; do cp "$t" "$B/stage/$(basename "$t" | sed 's/-[0-9a-f]*$//')"; done
strip "$B"/stage/*
echo "$ROOT" >"$B/root"
tar -C "$B/stage" -cf - . | xz -T2 -6 >"$B/bins.tar.xz"
rm -rf "$B/stage"
python3 -m pip download --quiet --disable-pip-version-check --no-deps -d "$B/whl" pyvene==0.1.8
du -sh "$B" "$B"/*
size=$(du -sm "$B" | cut -f1)
[ "$size" -lt 60 ] || { echo "gpu-bundle is ${size} MiB: over what the device tool carries" >&2; exit 1; }
echo "gpu-bundle ready: device run 'bash tests/gpu/run.sh' with carry [\"gpu-bundle\"]"
