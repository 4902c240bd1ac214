#!/usr/bin/env bash
# Builds the `vene` Python wheel (abi3, maturin) with the main build's target dir, installs it
# into a fresh virtualenv and runs the pytest suite, then the multi-node Ray cluster test
# (skip it with VENE_SKIP_RAY_CLUSTER=1; it skips itself without SmolLM2 in ~/.cache/vene).
# Usage: bash bindings/python/test.sh   (from anywhere)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
PY="${PYTHON:-python3}"
WORK="${VENE_PY_WORK:-$ROOT/target/python}"
mkdir -p "$WORK"

# The main build first (a no-op when it is fresh): the wheel then reuses its compiled
# dependencies and vene itself, and the tests compare with its `vene` binary.
(cd "$ROOT" && cargo build --release)

# A build venv with maturin, kept between runs.
if [ ! -x "$WORK/build-venv/bin/maturin" ]; then
    "$PY" -m venv "$WORK/build-venv"
    "$WORK/build-venv/bin/pip" install -q "maturin>=1.5,<2"
fi
rm -rf "$WORK/wheels"
(cd "$HERE" && "$WORK/build-venv/bin/maturin" build --release --target-dir "$TARGET" \
    --out "$WORK/wheels" -i "$PY")

# A clean venv: the wheel and its declared dependencies only (plus the test extras). Kept
# between runs (only the wheel is reinstalled); VENE_PY_FRESH=1 makes it anew.
WHEEL="$(ls "$WORK"/wheels/vene-*.whl)"
if [ "${VENE_PY_FRESH:-0}" = 1 ] || [ ! -x "$WORK/test-venv/bin/pytest" ]; then
    "$PY" -m venv --clear "$WORK/test-venv"
    "$WORK/test-venv/bin/pip" install -q "$WHEEL[ray,test]"
else
    "$WORK/test-venv/bin/pip" install -q --force-reinstall --no-deps "$WHEEL"
fi

cd "$HERE/tests"
export RAY_AUTH_MODE=token
"$WORK/test-venv/bin/python" -m pytest -q -p no:cacheprovider -m "not ray_cluster" .
if [ "${VENE_SKIP_RAY_CLUSTER:-0}" != 1 ]; then
    # The cluster test ends its own Ray processes by pid (see tests/ray_cluster.py); this
    # trap covers a pytest that is itself killed.
    trap '"$WORK/test-venv/bin/python" -c "import ray_cluster; ray_cluster.stop_all()" || true' EXIT
    timeout 900 "$WORK/test-venv/bin/python" -m pytest -q -s -p no:cacheprovider \
        -m ray_cluster .
fi
