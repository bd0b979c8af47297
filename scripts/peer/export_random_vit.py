#!/usr/bin/env python3
"""Write random-init timm ViT weights for the PTQ studies (no pretrained ViT is available offline).

For each seed, ``timm.create_model(<model>, pretrained=False)`` after ``torch.manual_seed(seed)`` (timm's
own initialisation: truncated normal weights, zero biases), then, unless ``--plain``, the LayerNorm affine
parameters perturbed as ``scripts/bench/compare_pytorch.py`` does (weights U(0.5, 1.5), biases N(0, 0.1),
generator seeded with ``seed + 1``) so that they matter. Writes ``<out>/<model>_seed<seed>.safetensors``:
the floating-point entries of the state_dict under timm's names, which ``vitq-models`` loads.

Run by hand (never in CI):
    python3 -m pip install torch timm safetensors
    python3 scripts/peer/export_random_vit.py --out /tmp/vitw --seeds 1 2 3
    cargo run --release -p vitq-examples --example ptq_report -- deit_tiny_patch16_224 \
        /tmp/vitw/deit_tiny_patch16_224_seed1.safetensors ../shared/data/cifar10/test_first1000.bin 32 \
        examples/configs/w4a8_minmax.toml,examples/configs/ptq4vit-w4a8.toml
"""

import argparse
import os

import timm
import torch
from safetensors.torch import save_file


def build(name, seed, plain):
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False)
    if not plain:
        g = torch.Generator().manual_seed(seed + 1)
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.data.uniform_(0.5, 1.5, generator=g)
                m.bias.data.normal_(0, 0.1, generator=g)
    return model.eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="deit_tiny_patch16_224")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--plain", action="store_true", help="keep timm's LayerNorm init (weight 1, bias 0)")
    ap.add_argument("--out", default=".")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for seed in args.seeds:
        model = build(args.model, seed, args.plain)
        path = os.path.join(args.out, f"{args.model}_seed{seed}.safetensors")
        tensors = {k: v.contiguous() for k, v in model.state_dict().items() if v.is_floating_point()}
        save_file(tensors, path, metadata={"model": args.model, "seed": str(seed), "plain": str(args.plain),
                                           "torch_version": torch.__version__, "timm_version": timm.__version__})
        print(path)


if __name__ == "__main__":
    main()
