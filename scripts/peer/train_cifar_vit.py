#!/usr/bin/env python3
"""Train a small timm ViT on the CIFAR-10 training slice, so that the ViT PTQ studies have a *trained*
model whose accuracy means something (no pretrained ViT is available offline, and random-init logits are
near-tied, which makes top-1 agreement noisy).

The model is timm's ``VisionTransformer(img_size=32, patch_size=4, embed_dim=192, depth=6, num_heads=3,
num_classes=10)`` (65 tokens, ViT-Ti width), trained from scratch on ``train_first2000.bin`` (2,000 images)
with random 4-pixel-padded crops and horizontal flips, AdamW, a cosine schedule with warm-up and label
smoothing, on ImageNet-normalised pixels (what ``vitq-models`` feeds a checkpoint without a preset of its
own). It prints the f32 top-1 on ``test_first1000.bin`` and writes the state_dict under timm's names, which
``vitq-models`` loads (``Model::load_inferred``; ``ptq_report auto ...``).

Run by hand (never in CI); about 10 minutes on 2 cores for the default 40 epochs (616 s for seed 0, sharing
the cores with a cargo build):
    python3 -m pip install torch timm safetensors
    python3 scripts/peer/train_cifar_vit.py --data ../shared/data/cifar10 --out /tmp/vit_cifar_d6.safetensors
    cargo run --release -p vitq-examples --example ptq_report -- auto /tmp/vit_cifar_d6.safetensors \
        ../shared/data/cifar10/test_first1000.bin 32 w8a8,examples/configs/w4a8_minmax.toml
"""

import argparse
import math
import os
import time

import numpy as np
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def load_cifar(path):
    """CIFAR-10 binary records: one label byte, then 3072 bytes of CHW pixels."""
    raw = np.fromfile(path, dtype=np.uint8).reshape(-1, 3073)
    labels = torch.from_numpy(raw[:, 0].astype(np.int64))
    x = torch.from_numpy(raw[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)
    return (x - MEAN) / STD, labels


def augment(x, g):
    """Random crop of a 4-pixel reflect-padded image and a horizontal flip, per image."""
    n = x.shape[0]
    padded = F.pad(x, (4, 4, 4, 4), mode="reflect")
    dx = torch.randint(0, 9, (n,), generator=g)
    dy = torch.randint(0, 9, (n,), generator=g)
    flip = torch.rand(n, generator=g) < 0.5
    out = torch.empty_like(x)
    for i in range(n):
        img = padded[i, :, dy[i] : dy[i] + 32, dx[i] : dx[i] + 32]
        out[i] = img.flip(-1) if flip[i] else img
    return out


def accuracy(model, x, y, batch=250):
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x[i : i + batch]).argmax(-1) for i in range(0, len(x), batch)])
    return (pred == y).float().mean().item()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/cifar10")
    ap.add_argument("--out", default="vit_cifar_d6.safetensors")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)

    xtr, ytr = load_cifar(os.path.join(args.data, "train_first2000.bin"))
    xte, yte = load_cifar(os.path.join(args.data, "test_first1000.bin"))
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=4, num_classes=10, embed_dim=192, depth=args.depth, num_heads=3,
        mlp_ratio=4.0, qkv_bias=True, drop_path_rate=0.1,
    )
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "pos_embed" not in n and "cls_token" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "pos_embed" not in n and "cls_token" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr)
    steps_per_epoch = math.ceil(len(xtr) / args.batch)
    total = args.epochs * steps_per_epoch
    warmup = 3 * steps_per_epoch

    def lr_at(step):
        if step < warmup:
            return args.lr * (step + 1) / warmup
        return 0.5 * args.lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    step = 0
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=g)
        seen, loss_sum = 0, 0.0
        for i in range(0, len(xtr), args.batch):
            idx = perm[i : i + args.batch]
            xb, yb = augment(xtr[idx], g), ytr[idx]
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            loss = F.cross_entropy(model(xb), yb, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            seen += len(idx)
            loss_sum += loss.item() * len(idx)
        msg = f"epoch {epoch + 1}/{args.epochs}: loss {loss_sum / seen:.3f}, {time.time() - start:.0f} s"
        if (epoch + 1) % 5 == 0 or epoch + 1 == args.epochs:
            msg += f", test top-1 {accuracy(model, xte, yte):.3f}"
        print(msg, flush=True)

    model.eval()
    test_top1 = accuracy(model, xte, yte)
    train_top1 = accuracy(model, xtr, ytr)
    print(f"f32 top-1: test_first1000 {test_top1:.4f}, train_first2000 {train_top1:.4f}")
    tensors = {k: v.contiguous() for k, v in model.state_dict().items() if v.is_floating_point()}
    save_file(tensors, args.out, metadata={
        "model": f"VisionTransformer(img_size=32, patch_size=4, embed_dim=192, depth={args.depth}, num_heads=3)",
        "trained_on": "train_first2000.bin", "epochs": str(args.epochs), "seed": str(args.seed),
        "test_first1000_top1": f"{test_top1:.4f}", "normalize": "imagenet",
        "torch_version": torch.__version__, "timm_version": timm.__version__,
    })
    print(args.out)


if __name__ == "__main__":
    main()
