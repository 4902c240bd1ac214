#!/usr/bin/env bash
# Builds and runs every quick-start of the READMEs exactly as written, from a directory outside
# the repository: C (gcc, then valgrind: no leaks), C++ (installed CMake package with
# find_package, and pkg-config), Go (a consumer module, plain and after `go mod vendor`), the
# CLI (`vene run --top-k 5`, where this build has it) and Julia (only where `julia` exists).
# Each must print the seed's top 5 with " Rome" first.
#
# The snippets are copied out of the Markdown, never kept here: a fenced block that follows a
# line `<!-- quickstart: DIR/FILE -->` becomes DIR/FILE in the scratch directory, and each
# DIR's *.sh blocks are run there with bash. Needs `cargo build --release` first.
#
#   bash tests/quickstart/run.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
for f in target/release/libvene.so target/release/vene; do
  [ -e "$repo/$f" ] || { echo "$f is missing: run cargo build --release first" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/vene-quickstart.XXXXXX")
trap 'rm -rf "$work"' EXIT
# What the READMEs tell the reader to set.
export VENE="$repo"
export PREFIX="$work/prefix"
MODEL=$("$VENE/target/release/vene" fetch)
export MODEL
# The Go quick-start lives next to the checkout (its go.mod says ../vene/bindings/go).
ln -s "$repo" "$work/vene"
# Nothing is downloaded: the Go module comes from the checkout through `replace`.
export GOPROXY=off

# Copies every marked snippet of the given Markdown files into $work.
extract() {
  awk -v out="$work" '
    /^<!-- quickstart: [^ ]+ -->$/ { name = $3; state = 1; next }
    state == 1 && /^```/ { file = out "/" name; printf "" > file; state = 2; next }
    state == 2 && /^```$/ { close(file); state = 0; next }
    state == 2 { print > file }
  ' "$@"
}
mkdir -p "$work"/{c,cpp,go,julia}
extract "$repo/README.md" "$repo/bindings/cpp/README.md" "$repo/bindings/go/README.md" \
  "$repo/bindings/julia/Vene.jl/README.md"
for f in c/quickstart.c c/run.sh cpp/main.cpp cpp/CMakeLists.txt cpp/cmake.sh cpp/pkg-config.sh \
         go/main.go go/go.mod go/run.sh julia/quickstart.jl julia/run.sh; do
  [ -s "$work/$f" ] || { echo "quick-start snippet $f not found in the READMEs" >&2; exit 1; }
done

# Runs DIR/SCRIPT as the reader would and keeps its output in DIR/SCRIPT.out.
run() {
  echo "== $1/$2"
  (cd "$work/$1" && bash -eu "$2") | tee "$work/$1/$2.out"
}

# Every top-5 list in FILE (lines "  31.5%  ' Rome'") must start with " Rome".
expect_rome() {
  local lists firsts
  lists=$(grep -c "%  '" "$1" || true)
  firsts=$(awk "/%  '/ { if (n++ % 5 == 0) print }" "$1")
  if [ "$lists" -lt 5 ] || [ $((lists % 5)) -ne 0 ] || grep -v "' Rome'$" <<<"$firsts" | grep -q .; then
    echo "FAILED: $1 should hold top-5 lists that start with ' Rome':" >&2
    cat "$1" >&2
    exit 1
  fi
  echo "ok: $((lists / 5)) top-5 list(s), ' Rome' first"
}

run c run.sh
expect_rome "$work/c/run.sh.out"
echo "== valgrind on the C quick-start"
(cd "$work/c" && valgrind --leak-check=full --errors-for-leak-kinds=definite,indirect \
  --error-exitcode=1 ./quickstart "$MODEL" 2>valgrind.log) || { cat "$work/c/valgrind.log" >&2; exit 1; }
grep -E "ERROR SUMMARY|definitely lost|indirectly lost" "$work/c/valgrind.log" || true

run cpp cmake.sh
expect_rome "$work/cpp/cmake.sh.out"
run cpp pkg-config.sh
expect_rome "$work/cpp/pkg-config.sh.out"

run go run.sh
expect_rome "$work/go/run.sh.out"
[ -f "$work/go/vendor/github.com/vene-project/vene/bindings/go/vene.h" ] \
  || { echo "FAILED: go mod vendor did not copy vene.h" >&2; exit 1; }

# The same interchange through the CLI: `vene run --top-k 5` (its --json form is checked).
echo "== vene run --top-k 5"
run_help=$("$VENE/target/release/vene" run --help)
if grep -q -- "--top-k" <<<"$run_help"; then
  cat >"$work/request.json" <<JSON
{"model": "$MODEL",
 "config": {"representations": [{"layer": 23, "component": "block_output"}]},
 "base": {"text": ["The capital of Spain is"]}, "sources": [{"text": ["The capital of Italy is"]}],
 "unit_locations": {"sources->base": 4}, "logits": "last"}
JSON
  "$VENE/target/release/vene" run --request "$work/request.json" --top-k 5
  "$VENE/target/release/vene" run --request "$work/request.json" --top-k 5 --json | python3 -c '
import json, sys
top = json.load(sys.stdin)["top_k"]["intervened"][0]
assert len(top) == 5 and top[0]["token"] == " Rome", top
print("ok: vene run --top-k 5 --json puts %r first (p %.3f)" % (top[0]["token"], top[0]["prob"]))'
else
  echo "vene run has no --top-k in this build: step NOT run"
fi

if command -v julia >/dev/null; then
  run julia run.sh
  expect_rome "$work/julia/run.sh.out"
else
  echo "julia not found: the Julia quick-start NOT run"
fi
echo "quick-starts: all passed"
