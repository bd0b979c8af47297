#!/usr/bin/env bash
# PTQ methods on several random-init draws of a ViT: one `ptq_report` table per draw (logits SQNR and top-1
# agreement with f32), so that a win or a loss can be told from the luck of one draw.
#
# Run by hand from the repository root (never in CI); weights from scripts/peer/export_random_vit.py:
#   python3 scripts/peer/export_random_vit.py --out /tmp/vitw --seeds 1 2 3
#   scripts/ptq_draws.sh /tmp/vitw/deit_tiny_patch16_224_seed{1,2,3}.safetensors
# A ViT trained by scripts/peer/train_cifar_vit.py: MODEL=auto scripts/ptq_draws.sh vit_cifar_d6.safetensors.
# PTQ4ViT with channel_search (docs/architecture.md's held-out table):
#   CONFIGS=examples/configs/ptq4vit-channel-w6a6.toml,examples/configs/ptq4vit-channel-w4a8.toml scripts/ptq_draws.sh <weights…>
# Environment: MODEL (deit_tiny_patch16_224; `auto` infers the architecture from the checkpoint), DATA (../shared/data/cifar10/test_first1000.bin),
# CALIB (32 images; the rest are evaluated), CONFIGS (comma-separated; the min-max, ranking-aware and
# PTQ4ViT presets at W6A6 and W4A8).
set -euo pipefail
cd "$(dirname "$0")/.."
model=${MODEL:-deit_tiny_patch16_224}
data=${DATA:-../shared/data/cifar10/test_first1000.bin}
calib=${CALIB:-32}
c=examples/configs
configs=${CONFIGS:-$c/w6a6_minmax.toml,$c/w6a6_ranking.toml,$c/ptq4vit-w6a6.toml,$c/w4a8_minmax.toml,$c/w4a8_ranking.toml,$c/ptq4vit-w4a8.toml}
cargo build --release -q -p vitq-examples --example ptq_report
for w in "$@"; do
  echo "== $w"
  target/release/examples/ptq_report "$model" "$w" "$data" "$calib" "$configs"
done
