#!/usr/bin/env python3
"""Compare vitq's float models with PyTorch on full-size, random-init models: outputs and speed.

For each model (timm / torchvision, random init, BatchNorm statistics perturbed so that they matter):
  1. writes its state_dict to <workdir>/<model>.safetensors and a random normalized input batch;
  2. correctness: runs `vitq predict` on the same weights and input and prints the max relative error
     max|vitq - torch| / max|torch| of the logits and the argmax agreement;
  3. speed: median latency of torch eager (torch.inference_mode, torch.set_num_threads(T)) and of
     `vitq bench` (RAYON_NUM_THREADS=T) at batch 1 and 16, side by side in one run, and the ratio.

Run by hand from the repository root (never in CI):
    cargo build --release -p vitq-cli
    python3 -m pip install torch torchvision timm safetensors numpy
    python3 scripts/bench/compare_pytorch.py [--models deit_tiny_patch16_224 vit_base_patch16_224 resnet18]
        [--threads 2] [--batches 1 16] [--iters 10] [--skip-speed]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from safetensors.torch import load_file, save_file

VITQ = os.path.join(os.path.dirname(__file__), "..", "..", "target", "release", "vitq")


def build(name):
    torch.manual_seed(0)
    if name.startswith("resnet"):
        import torchvision

        model = getattr(torchvision.models, name)()
    else:
        import timm

        model = timm.create_model(name, pretrained=False)
    # Non-trivial BatchNorm statistics and LayerNorm affine parameters.
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1, generator=g)
            m.running_var.uniform_(0.5, 2.0, generator=g)
            m.weight.data.uniform_(0.5, 1.5, generator=g)
            m.bias.data.normal_(0, 0.1, generator=g)
        if isinstance(m, torch.nn.LayerNorm):
            m.weight.data.uniform_(0.5, 1.5, generator=g)
            m.bias.data.normal_(0, 0.1, generator=g)
    return model.eval()


def median_ms(fn, warmup, iters):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["deit_tiny_patch16_224", "vit_base_patch16_224", "resnet18"])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--vitq", default=VITQ)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    work = tempfile.mkdtemp(prefix="vitq-compare-")
    print(f"torch {torch.__version__}, {args.threads} threads, files in {work}")
    rows = []
    for name in args.models:
        model = build(name)
        weights = os.path.join(work, f"{name}.safetensors")
        save_file({k: v.contiguous() for k, v in model.state_dict().items() if v.is_floating_point()}, weights)
        x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
        inp, out = os.path.join(work, f"{name}.in.safetensors"), os.path.join(work, f"{name}.out.safetensors")
        save_file({"input": x}, inp)
        with torch.inference_mode():
            ref = model(x)
        r = subprocess.run([args.vitq, "predict", "--model", name, "--weights", weights, "--input", inp, "--output", out],
                           env=env, capture_output=True, text=True)
        if r.returncode != 0:
            print(f"{name}: vitq predict failed: {r.stderr.strip()}")
            continue
        got = load_file(out)["logits"]
        rel = float((got - ref).abs().max() / ref.abs().max())
        agree = int((got.argmax(1) == ref.argmax(1)).sum())
        print(f"{name}: logits max relative error {rel:.3e}, argmax agreement {agree}/{len(x)}")
        if args.skip_speed:
            continue
        for b in args.batches:
            xb = torch.randn(b, 3, 224, 224)
            with torch.inference_mode():
                t_torch = median_ms(lambda: model(xb), args.warmup, args.iters)
            r = subprocess.run([args.vitq, "bench", "--model", name, "--weights", weights, "--batch", str(b),
                                "--warmup", str(args.warmup), "--iters", str(args.iters), "--json"],
                               env=env, capture_output=True, text=True)
            if r.returncode != 0:
                print(f"{name}: vitq bench failed: {r.stderr.strip()}")
                continue
            t_vitq = json.loads(r.stdout.strip().splitlines()[-1])["median_ms"]
            rows.append((name, b, t_torch, t_vitq))
    if rows:
        print(f"\n| model | batch | PyTorch eager ms | vitq ms | vitq / PyTorch |")
        print("|---|---|---|---|---|")
        for name, b, tt, tv in rows:
            print(f"| {name} | {b} | {tt:.1f} | {tv:.1f} | {tv / tt:.2f}x |")


if __name__ == "__main__":
    sys.exit(main())
