#!/usr/bin/env bash
# Builds vitq-attention's CUDA kernel tests and attention bench on this CPU-only machine and packs
# them into the git-ignored `.devbin/` for the GPU machine (which has CUDA and PyTorch, no Rust).
# Then, with the `device` tool: run `scripts/gpu/run_issue5.sh <phase>` with carry [".devbin"].
#
#   scripts/gpu/build_devbin.sh          # ~11 min cold on 2 cores (16 GB in target-attn/)
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target-attn}"
cargo build -p vitq-attention --features cuda --tests --examples
flash=$(cargo test -p vitq-attention --features cuda --test flash --no-run 2>&1 |
    sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -1)
lib=$(cargo test -p vitq-attention --features cuda --lib --no-run 2>&1 |
    sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -1)
[ -x "$flash" ] && [ -x "$lib" ] || { echo "could not find the test binaries" >&2; exit 1; }
rm -rf .devbin && mkdir -p .devbin
strip -o .devbin/flash "$flash"
strip -o .devbin/unit "$lib"
strip -o .devbin/bench "$CARGO_TARGET_DIR/debug/examples/attention_bench"
git rev-parse --short HEAD > .devbin/commit
xz -1 .devbin/flash .devbin/unit .devbin/bench
du -sh .devbin
