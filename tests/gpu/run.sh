#!/usr/bin/env bash
# Run on a lent GPU machine (the device tool), from the repository root, with gpu-bundle/ made by
# tests/gpu/build.sh carried: command `bash tests/gpu/run.sh`, carry ["gpu-bundle"],
# timeout_s 560. NEVER RUN YET (no session so far was lent a GPU). Steps, most telling first,
# each under its own time limit; everything it prints also goes to $OUT/gpu-run.log:
#   1. tests/device.rs with VENE_TEST_DEVICE=cuda:0, ignored tests included: device names,
#      pyvene fixture requests and DAS losses on the GPU equal to the CPU's (f32, f16, Q8_0);
#   2. tests/hf_parity.rs on cuda:0: every HF fixture within 1e-3 of transformers (TF32 off);
#   3. `vene demo das --device cuda:0 --quick`: the MLP and DAS / Boundless DAS trained there;
#   4. tests/pyvene_oracle.rs: every pyvene case through `vene run --device cuda:0`, 1e-3;
#   5. tests/bench/interventions.py --device cuda:0 --only gpt2: vene vs pyvene + torch on the
#      same GPU (pyvene from the carried wheel).
# `vene demo` (capitals) needs SmolLM2 (94 MiB), more than the tool carries: not run here.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/vene-gpu}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu-run.log") 2>&1
B=gpu-bundle
[ -f $B/bins.tar.xz ] || { echo "no gpu-bundle: run tests/gpu/build.sh first, carry gpu-bundle"; exit 2; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
mkdir -p $B/bin && { tar -C $B/bin -xJf $B/bins.tar.xz 2>/dev/null ||
  python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' $B/bins.tar.xz $B/bin; }
# The test binaries hold the paths they were built in (fixtures, target/release/vene).
root=$(cat $B/root)
if [ "$root" != "$PWD" ] && [ ! -e "$root" ]; then mkdir -p "$(dirname "$root")" && ln -s "$PWD" "$root"; fi
mkdir -p target/release target/tmp && cp $B/bin/vene target/release/vene
# CUDA 13 libraries: the driver's libcuda, and cuBLAS / cuRAND / NVRTC / cudart of torch's wheels.
libs=$(python3 - <<'PY'
import glob, os, site
dirs = set()
for sp in site.getsitepackages():
    for pat in ("libcublas.so.*", "libcurand.so.*", "libnvrtc.so.*", "libcudart.so.*"):
        dirs.update(os.path.dirname(p) for p in glob.glob(f"{sp}/nvidia/**/{pat}", recursive=True))
print(":".join(sorted(dirs)))
PY
)
export LD_LIBRARY_PATH=$libs:/usr/local/nvidia/lib64:${LD_LIBRARY_PATH:-}
if ldd target/release/vene | grep "not found"; then echo "missing libraries (above)"; exit 3; fi
export VENE_TEST_DEVICE=cuda:0 RUST_BACKTRACE=1
status=0
step() {
  local limit=$1; shift
  echo "=== $* (limit ${limit}s)"
  local t0=$SECONDS
  timeout "$limit" "$@" || { echo "=== FAILED ($?): $*"; status=1; }
  echo "=== $((SECONDS - t0)) s"
}
step 20 target/release/vene --device cuda:0 info tests/fixtures/hf/llama
step 150 $B/bin/device --include-ignored --nocapture
step 90 $B/bin/hf_parity
step 60 target/release/vene demo das --device cuda:0 --quick
step 150 $B/bin/pyvene_oracle
if python3 -m pip install -q --no-index --no-deps --target /tmp/site $B/whl/*.whl; then
  PYTHONPATH=/tmp/site VENE_BIN=target/release/vene step 100 \
    python3 tests/bench/interventions.py --device cuda:0 --only gpt2 --iters 5 --out "$OUT/bench.md"
fi
echo "=== gpu run: $([ $status = 0 ] && echo all passed || echo FAILURES above)"
exit $status
