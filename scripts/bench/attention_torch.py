#!/usr/bin/env python3
"""PyTorch scaled_dot_product_attention on the same shapes as vitq-attention's attention_bench.

Run on the GPU machine, in the same command as the Rust bench (see docs/attention.md):

    python3 scripts/bench/attention_torch.py            # table (flash backend, then math)
    python3 scripts/bench/attention_torch.py --mem 4096 # peak memory of one call at [1,12,N,64] f16

Timing: torch.cuda.Event around rounds of calls; 3 warm-ups, 7 rounds of ~20 ms, median round.
TFLOP/s counts 4*B*H*N^2*d, as the Rust bench does. f32 runs with the math backend only
(the flash backend takes f16/bf16), and TF32 is off so f32 stays f32.
"""
import argparse
import statistics

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

SHAPES = [
    ("ViT-B/16", (64, 12, 197, 64)),
    ("DINOv2-B/14", (64, 12, 257, 64)),
    ("N=1024", (16, 12, 1024, 64)),
    ("N=4096", (4, 12, 4096, 64)),
]
DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}


def time_call(fn):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    one = max(start.elapsed_time(end) / 1e3, 1e-6)
    iters = max(1, min(200, int(0.02 / one)))
    rounds = []
    for _ in range(7):
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        torch.cuda.synchronize()
        rounds.append(start.elapsed_time(end) / 1e3 / iters)
    return statistics.median(rounds)


def table():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print(f"# torch {torch.__version__}, {torch.cuda.get_device_name()}")
    print("| shape | B×H×N×d | dtype | torch flash TFLOP/s | torch math TFLOP/s | flash ms | math ms |")
    print("|---|---|---|---|---|---|---|")
    for name, (b, h, n, d) in SHAPES:
        flops = 4 * b * h * n * n * d
        for dname, dtype in DTYPES.items():
            q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=dtype) for _ in range(3))
            cells = []
            for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.MATH):
                try:
                    with sdpa_kernel(backend):
                        t = time_call(lambda: F.scaled_dot_product_attention(q, k, v))
                    cells.append((f"{flops / t / 1e12:.1f}", f"{t * 1e3:.3f}"))
                except RuntimeError:
                    cells.append(("–", "–"))
            print(f"| {name} | {b}×{h}×{n}×{d} | {dname} | {cells[0][0]} | {cells[1][0]} | {cells[0][1]} | {cells[1][1]} |")
            del q, k, v
            torch.cuda.empty_cache()


def mem(n):
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.MATH):
        q, k, v = (torch.randn(1, 12, n, 64, device="cuda", dtype=torch.float16) for _ in range(3))
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        with sdpa_kernel(backend):
            out = F.scaled_dot_product_attention(q, k, v)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        print(f"torch {backend.name} N={n}: peak extra allocation {peak / 2**20:.1f} MiB (output {out.numel() * 2 / 2**20:.1f} MiB)")
        del q, k, v, out
        torch.cuda.empty_cache()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--mem", type=int, default=None)
    a = p.parse_args()
    if a.mem:
        mem(a.mem)
    else:
        table()
