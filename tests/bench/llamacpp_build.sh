#!/usr/bin/env bash
# Builds llama.cpp (CPU only) from the llama-cpp-python sdist on PyPI into tests/bench/out/llamacpp/.
# Idempotent: download, unpack and configure happen once; cmake rebuilds only what changed.
# Usage: bash tests/bench/llamacpp_build.sh   (env LLAMA_CPP_PYTHON_VERSION, JOBS)
set -euo pipefail
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.16}"
jobs="${JOBS:-2}"
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/out/llamacpp"
mkdir -p "$out"
sdist="$out/llama_cpp_python-$version.tar.gz"
src="$out/llama_cpp_python-$version"
if [ ! -f "$sdist" ]; then
  pip download --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$out"
fi
if [ ! -d "$src/vendor/llama.cpp" ]; then
  tar -xzf "$sdist" -C "$out"
fi
build="$out/build-$version"
if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S "$src/vendor/llama.cpp" -B "$build" -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=ON -DLLAMA_BUILD_SERVER=OFF
fi
nice -n 19 cmake --build "$build" -j"$jobs" --target llama-bench llama-tokenize llama-simple
# A small greedy decoder of our own that prints the top-2 logits at every step (see llamacpp_topk.c).
nice -n 19 gcc -O2 -o "$build/bin/vene-llama-topk" "$here/llamacpp_topk.c" \
  -I"$src/vendor/llama.cpp/include" -I"$src/vendor/llama.cpp/ggml/include" \
  "$build/src/libllama.a" "$build/ggml/src/libggml.a" "$build/ggml/src/libggml-cpu.a" \
  "$build/ggml/src/libggml-base.a" -lstdc++ -lm -lpthread -fopenmp
echo "llama.cpp binaries in $build/bin"
