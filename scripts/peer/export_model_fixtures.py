#!/usr/bin/env python3
"""Export PyTorch peer fixtures for vitq-models (ViT / DINOv2 / ResNet on burn).

What it writes
--------------
Into ``crates/vitq-models/tests/fixtures/`` (relative to the repository root;
the directory is created), one safetensors file per case:

* ``vit_tiny2.safetensors``      timm ``VisionTransformer`` (img 32, patch 4,
                                 dim 64, depth 2, 4 heads, mlp_ratio 2, 10 classes)
* ``dinov2_block.safetensors``   timm ``vit_small_patch14_dinov2`` shrunk to
                                 img 28, dim 48, depth 2, 3 heads, 10 classes,
                                 layer-scale, ``dynamic_img_size=True``; second
                                 input of 42x42 (pos-embed resampled 2x2 -> 3x3)
                                 plus standalone ``resample.*`` tensors that pin
                                 down timm's ``resample_abs_pos_embed``
* ``resnet20_cifar.safetensors`` CIFAR ResNet-20, option-A shortcuts (the
                                 ``resnet.py`` of Yerlan Idelbayev's
                                 pytorch_resnet_cifar10, re-typed below)
* ``resnet18_small.safetensors`` torchvision ResNet-18 layout (BasicBlock,
                                 [2, 2, 2, 2], identical key names) at widths
                                 (4, 8, 16, 32) instead of (64, 128, 256, 512)
* ``resnet20_cifar10_test1000_predictions.safetensors``  only when the real
  weights ``/work/shared/weights/resnet20-cifar10/resnet20-12fca82f.safetensors``
  and ``/work/shared/data/cifar10/test_first1000.bin`` exist: ``logits``
  [1000, 10] float32 and ``labels`` [1000] int64 of the real ResNet-20 on the
  first 1000 CIFAR-10 test images.

Each model file holds (all float32 unless the state_dict says otherwise):

* ``weights.<name>``  every entry of ``model.state_dict()`` under its original
                      timm / torchvision name (BatchNorm ``num_batches_tracked``
                      entries are int64 and are included, as in real checkpoints)
* ``input``           the input batch (randn), ``logits`` the model output
* ``act.<name>``      intermediate activations captured with forward hooks
                      (forward pre-hooks where the value is a module's input)
* extra tensors where noted (``input_42``, ``logits_42``, ``resample.*``)
* safetensors metadata (all strings): ``model`` (the constructor call, with all
  kwargs), ``torch_version``, ``timm_version``, ``torchvision_version``,
  ``generator`` (this script), ``activations`` (JSON: act name -> where it was
  captured), ``seed``, ``notes`` and case-specific keys.

Re-initialisation: every model is built under ``torch.manual_seed(seed)`` and
then re-initialised so that nothing has its trivial init value (LayerNorm
weight ~ N(1, 0.25), LayerNorm / Linear / Conv biases ~ N(0, 0.25 / 0.2),
Linear / Conv weights ~ N(0, 1/fan_in) so attention is far from uniform,
cls_token ~ N(0, 1), pos_embed ~ N(0, 0.5), layer-scale gamma ~ N(0.1, 0.05);
BatchNorm weight ~ N(1, 0.2), bias ~ N(0, 0.2), running stats measured on 4
randn batches in train mode and then perturbed: running_var *= U(0.5, 2),
running_mean += N(0, 0.2) * sqrt(running_var); num_batches_tracked = 4).

After writing, the script re-opens every file and checks, per model:
  1. a fresh model (built under a different seed) loaded with
     ``load_state_dict(strict=True)`` from the ``weights.*`` tensors reproduces
     ``logits`` (and ``logits_42``) and every ``act.*`` bit-for-bit;
  2. an independent functional re-implementation written from the documented
     semantics (plain torch ops on the stored weights; the DINOv2 pos-embed
     resampling in numpy, float64, from PyTorch's antialiased-bicubic formula)
     matches to < 1e-4 (max abs diff printed);
  3. diagnostics: how far the logits move under typical implementation mistakes
     (tanh GELU, LayerNorm eps 1e-5, attention scale 1/sqrt(dim), wrong qkv split,
     no layer-scale, non-antialiased / bilinear pos-embed resampling, wrong
     option-A padding, BN eps 1e-3) — printed only, so tolerances can be chosen.
It also checks the total size (< 3,000,000 bytes) and prints SHA-256 of each
file.  Exit status is non-zero if any hard check fails.

How to run (from the repository root)
-------------------------------------
    python3 -m pip install torch safetensors numpy timm torchvision
    python3 scripts/peer/export_model_fixtures.py

Versions used to produce the committed fixtures: torch 2.15.0+cu132,
timm 1.0.31, torchvision 0.29.2+cu132, safetensors 0.8.0, numpy 2.4.6,
Python 3.  Everything runs on CPU, float32, ``torch.set_num_threads(1)``,
eval mode, no pretrained downloads (``pretrained=False`` everywhere).  Output
is byte-for-byte deterministic for a given set of library versions (the
safetensors header is re-serialised with sorted metadata keys).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save as save_bytes

import timm
import torchvision
from timm.layers import LayerScale, resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torchvision.models.resnet import BasicBlock as TvBasicBlock
from torchvision.models.resnet import ResNet as TvResNet

REPO_ROOT = Path(__file__).resolve().parents[2]
GENERATOR = "scripts/peer/export_model_fixtures.py"
OUT_DIR = REPO_ROOT / "crates" / "vitq-models" / "tests" / "fixtures"
SIZE_BUDGET = 3_000_000  # bytes, all fixture files together

REAL_R20_WEIGHTS = Path("/work/shared/weights/resnet20-cifar10/resnet20-12fca82f.safetensors")
CIFAR_TEST = Path("/work/shared/data/cifar10/test_first1000.bin")
CIFAR_MEAN = (0.485, 0.456, 0.406)
CIFAR_STD = (0.229, 0.224, 0.225)

REF_TOL = 1e-4  # functional re-implementation vs torch/timm (max abs diff)


# ---------------------------------------------------------------------------
# CIFAR ResNet-20, option A -- re-typed from Yerlan Idelbayev's
# pytorch_resnet_cifar10/resnet.py (BSD-2-Clause), same module/key names.
# ---------------------------------------------------------------------------
def _weights_init(m):
    if isinstance(m, (nn.Linear, nn.Conv2d)):
        nn.init.kaiming_normal_(m.weight)


class LambdaLayer(nn.Module):
    def __init__(self, lambd):
        super().__init__()
        self.lambd = lambd

    def forward(self, x):
        return self.lambd(x)


class CifarBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1, option="A"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            if option == "A":
                # For CIFAR10 ResNet paper uses option A.
                self.shortcut = LambdaLayer(
                    lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4), "constant", 0)
                )
            elif option == "B":
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, self.expansion * planes, kernel_size=1, stride=stride, bias=False),
                    nn.BatchNorm2d(self.expansion * planes),
                )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        out = F.relu(out)
        return out


class CifarResNet(nn.Module):
    def __init__(self, block, num_blocks, num_classes=10):
        super().__init__()
        self.in_planes = 16
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(block, 16, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, 32, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, 64, num_blocks[2], stride=2)
        self.linear = nn.Linear(64, num_classes)
        self.apply(_weights_init)

    def _make_layer(self, block, planes, num_blocks, stride):
        strides = [stride] + [1] * (num_blocks - 1)
        layers = []
        for stride in strides:
            layers.append(block(self.in_planes, planes, stride))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer1(out)
        out = self.layer2(out)
        out = self.layer3(out)
        out = F.avg_pool2d(out, out.size()[3])
        out = out.view(out.size(0), -1)
        out = self.linear(out)
        return out


def resnet20():
    return CifarResNet(CifarBasicBlock, [3, 3, 3])


# ---------------------------------------------------------------------------
# torchvision ResNet-18 at reduced width.  torchvision's ResNet hard-codes the
# widths (64, 128, 256, 512) for BasicBlock and timm's ResNet hard-codes a
# 64-channel stem (stem_width is only used by deep stems, which changes the
# key layout), so: build torchvision's ResNet(BasicBlock, [2, 2, 2, 2]) and
# rebuild conv1/bn1/layer1..4/fc with torchvision's own _make_layer at
# narrower widths.  forward() is torchvision's, unchanged; key names and order
# are exactly those of torchvision.models.resnet18 (checked below).
# ---------------------------------------------------------------------------
class NarrowResNet18(TvResNet):
    def __init__(self, widths=(4, 8, 16, 32), num_classes=10):
        super().__init__(TvBasicBlock, [2, 2, 2, 2], num_classes=num_classes)
        w = widths
        self.inplanes = w[0]
        self.conv1 = nn.Conv2d(3, w[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = self._norm_layer(w[0])
        self.layer1 = self._make_layer(TvBasicBlock, w[0], 2)
        self.layer2 = self._make_layer(TvBasicBlock, w[1], 2, stride=2)
        self.layer3 = self._make_layer(TvBasicBlock, w[2], 2, stride=2)
        self.layer4 = self._make_layer(TvBasicBlock, w[3], 2, stride=2)
        self.fc = nn.Linear(w[3] * TvBasicBlock.expansion, num_classes)
        for m in self.modules():  # torchvision's own init, re-applied to the new modules
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)


R18_WIDTHS = (4, 8, 16, 32)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
def call_string(fn: str, args: tuple = (), kwargs: dict | None = None) -> str:
    parts = [repr(a) for a in args]
    parts += [f"{k}={v!r}" for k, v in (kwargs or {}).items()]
    return f"{fn}({', '.join(parts)})"


class Capture:
    """Forward hooks that copy module outputs (or inputs, kind='in')."""

    def __init__(self, model: nn.Module, specs: list[tuple[str, str, str, str]], suffix: str = ""):
        self.acts: dict[str, torch.Tensor] = {}
        self.handles = []
        for act, path, kind, _desc in specs:
            mod = model.get_submodule(path)
            key = f"act.{act}{suffix}"
            if kind == "out":
                self.handles.append(mod.register_forward_hook(self._out(key)))
            elif kind == "in":
                self.handles.append(mod.register_forward_pre_hook(self._in(key)))
            else:
                raise ValueError(kind)

    def _out(self, key):
        def hook(_m, _inp, out):
            self.acts[key] = out.detach().clone().contiguous()
        return hook

    def _in(self, key):
        def hook(_m, inp):
            self.acts[key] = inp[0].detach().clone().contiguous()
        return hook

    def close(self):
        for h in self.handles:
            h.remove()


def run_with_capture(model, x, specs, suffix=""):
    cap = Capture(model, specs, suffix)
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        cap.close()
    return logits.detach().clone().contiguous(), cap.acts


def canonical_header(blob: bytes) -> bytes:
    """Sort the metadata keys in the header (safetensors emits them in HashMap order)."""
    (n,) = struct.unpack("<Q", blob[:8])
    raw = blob[8 : 8 + n]
    header = json.loads(raw)
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    new = json.dumps(header, separators=(",", ":")).encode("ascii")
    new = new + b" " * (n - len(new))
    assert len(new) == n, (len(new), n)
    assert json.loads(new) == json.loads(raw)
    return blob[:8] + new + blob[8 + n :]


def base_metadata(model_call: str, seed: int | None, activations: dict[str, str]) -> dict[str, str]:
    return {
        "model": model_call,
        "torch_version": torch.__version__,
        "timm_version": timm.__version__,
        "torchvision_version": torchvision.__version__,
        "generator": GENERATOR,
        "seed": "" if seed is None else str(seed),
        "activations": json.dumps(activations),
    }


def write_fixture(name: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    path = OUT_DIR / name
    tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
    for k, v in tensors.items():
        assert v.dtype in (torch.float32, torch.int64), (k, v.dtype)
    path.write_bytes(canonical_header(save_bytes(tensors, metadata=metadata)))
    return path


def state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {f"weights.{k}": v.detach().clone() for k, v in model.state_dict().items()}


def reinit_transformer(model: nn.Module) -> None:
    """Give every parameter a non-trivial random value (uses the global torch RNG)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            leaf = name.rsplit(".", 1)[-1]
            if isinstance(owner, nn.LayerNorm):
                if leaf == "weight":
                    p.normal_(1.0, 0.25)
                else:
                    p.normal_(0.0, 0.25)
            elif isinstance(owner, LayerScale):
                p.normal_(0.1, 0.05)
            elif name == "cls_token":
                p.normal_(0.0, 1.0)
            elif name == "pos_embed":
                p.normal_(0.0, 0.5)
            elif leaf == "weight" and isinstance(owner, (nn.Linear, nn.Conv2d)):
                fan_in = p[0].numel()
                p.normal_(0.0, fan_in ** -0.5)
            elif leaf == "bias":
                p.normal_(0.0, 0.2)
            else:
                raise RuntimeError(f"no re-init rule for {name}")


def randomize_bn(model: nn.Module, input_shape: tuple[int, ...], batches: int = 4) -> None:
    """Random, non-trivial BatchNorm parameters and running statistics.

    weight ~ N(1, 0.2), bias ~ N(0, 0.2); then the running stats are measured
    on `batches` randn batches in train mode (cumulative average), and
    perturbed: running_var *= U(0.5, 2), running_mean += N(0, 0.2) * sqrt(var).
    Purely random running stats (not matched to the activations) make the
    ResNet-20 logits blow up to |x| ~ 70; calibrating first keeps them O(1).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for m in bns:
            m.weight.normal_(1.0, 0.2)
            m.bias.normal_(0.0, 0.2)
            m.reset_running_stats()
            m.momentum = None
        model.train()
        for _ in range(batches):
            model(torch.randn(*input_shape))
        model.eval()
        for m in bns:
            m.momentum = 0.1
            m.running_var.mul_(torch.empty_like(m.running_var).uniform_(0.5, 2.0))
            m.running_mean.add_(torch.randn_like(m.running_mean) * 0.2 * m.running_var.sqrt())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------
# case 1: tiny ViT
# ---------------------------------------------------------------------------
VIT_SEED = 1
VIT_KWARGS = dict(img_size=32, patch_size=4, embed_dim=64, depth=2, num_heads=4, mlp_ratio=2, num_classes=10)
VIT_CALL = call_string("timm.models.vision_transformer.VisionTransformer", (), VIT_KWARGS)
VIT_ACTS = [
    ("patch_embed", "patch_embed", "out",
     "output of patch_embed: Conv2d(3,64,k=4,s=4) then flatten(2).transpose(1,2) -> [B, 64 patches (row-major), 64]"),
    ("pos_drop", "pos_drop", "out",
     "output of pos_drop (identity in eval) = cat([cls_token.expand(B), patches], dim=1) + pos_embed -> [B, 65, 64]"),
    ("blocks.0", "blocks.0", "out", "output of blocks[0] (after both residual adds) -> [B, 65, 64]"),
    ("blocks.1.attn", "blocks.1.attn", "out",
     "output of blocks[1].attn = proj(softmax(q k^T * 16^-0.5) v) of norm1(x); before the residual add -> [B, 65, 64]"),
    ("norm", "norm", "out", "output of the final norm (LayerNorm eps 1e-6) over all tokens -> [B, 65, 64]; head uses [:, 0]"),
]


def build_vit() -> VisionTransformer:
    m = VisionTransformer(**VIT_KWARGS)
    return m.eval()


def case_vit():
    torch.manual_seed(VIT_SEED)
    model = build_vit()
    reinit_transformer(model)
    x = torch.randn(2, 3, 32, 32)
    logits, acts = run_with_capture(model, x, VIT_ACTS)
    tensors = {**state_tensors(model), "input": x, "logits": logits, **acts}
    meta = base_metadata(VIT_CALL, VIT_SEED, {a: d for a, _, _, d in VIT_ACTS})
    meta["resolved_config"] = json.dumps(dict(
        class_token=True, no_embed_class=False, pos_embed="learn", global_pool="token", qkv_bias=True,
        pre_norm=False, final_norm=True, fc_norm=False, init_values=None, act_layer="nn.GELU (exact erf)",
        norm_layer="timm LayerNorm eps=1e-6", mlp_hidden=128, head_dim=16, attn_scale=16 ** -0.5,
        dynamic_img_size=False))
    meta["notes"] = ("timm pre-norm (pre-LN) blocks: x = x + attn(norm1(x)); x = x + mlp(norm2(x)); "
                     "(timm's pre_norm kwarg is something else: a LayerNorm before the blocks, off here). "
                     "Parameters re-initialised to non-trivial random values after construction.")
    return "vit_tiny2.safetensors", tensors, meta


# ---------------------------------------------------------------------------
# case 2: DINOv2-style ViT with layer scale and dynamic image size
# ---------------------------------------------------------------------------
DINO_SEED = 2
DINO_KWARGS = dict(pretrained=False, img_size=28, embed_dim=48, depth=2, num_heads=3, num_classes=10,
                   init_values=1e-5, dynamic_img_size=True)
DINO_CALL = call_string("timm.create_model", ("vit_small_patch14_dinov2",), DINO_KWARGS)
DINO_ACTS = [
    ("patch_embed", "patch_embed", "out",
     "output of patch_embed: Conv2d(3,48,k=14,s=14); NHWC [B, H/14, W/14, 48] because dynamic_img_size=True "
     "defers the flatten (timm flattens to [B, N, 48] row-major after adding pos_embed)"),
    ("pos_drop", "pos_drop", "out",
     "output of pos_drop (identity in eval) = cat([cls_token.expand(B), patches.view(B,-1,48)], dim=1) + pos_embed "
     "(resampled to the input's patch grid; unchanged at 28x28) -> [B, 1+N, 48]"),
    ("blocks.0.ls1", "blocks.0.ls1", "out",
     "output of blocks[0].ls1 = ls1.gamma * attn(norm1(x)) (attention branch after layer-scale, before the residual add)"),
    ("blocks.0", "blocks.0", "out", "output of blocks[0] (after both residual adds) -> [B, 1+N, 48]"),
    ("norm", "norm", "out", "output of the final norm (LayerNorm eps 1e-6) over all tokens -> [B, 1+N, 48]; head uses [:, 0]"),
]
DINO_ACTS_42 = [a for a in DINO_ACTS if a[0] in ("patch_embed", "pos_drop", "norm")]
RESAMPLE_SIZES = {"to_3x3": (3, 3), "to_8x8": (8, 8), "to_4x7": (4, 7)}
RESAMPLE_CALL = ("timm.layers.resample_abs_pos_embed(posemb, new_size=(gh, gw), old_size=(2, 2), num_prefix_tokens=1) "
                 "with its defaults interpolation='bicubic', antialias=True, align_corners=None: the class-token row "
                 "posemb[:, :1] is kept unchanged; the patch rows posemb[:, 1:] are reshaped to [1, 2, 2, C] "
                 "(row-major grid), permuted to [1, C, 2, 2], resized with torch.nn.functional.interpolate("
                 "size=(gh, gw), mode='bicubic', align_corners=None (=False), antialias=True), permuted back and "
                 "flattened row-major, then the class-token row is concatenated in front. Done on every forward "
                 "(dynamic_img_size=True) from the model's stored grid (img_size 28 / patch 14 = 2x2) to the input's "
                 "grid; returns pos_embed unchanged when the grids are equal.")


def build_dino() -> VisionTransformer:
    m = timm.create_model("vit_small_patch14_dinov2", **DINO_KWARGS)
    assert type(m) is VisionTransformer, type(m)  # not NaFlexVit (TIMM_USE_NAFLEXVIT must not be 'true')
    return m.eval()


def case_dino():
    torch.manual_seed(DINO_SEED)
    model = build_dino()
    reinit_transformer(model)
    x = torch.randn(2, 3, 28, 28)
    x42 = torch.randn(2, 3, 42, 42)
    logits, acts = run_with_capture(model, x, DINO_ACTS)
    logits42, acts42 = run_with_capture(model, x42, DINO_ACTS_42, suffix="_42")
    with torch.no_grad():
        pe42 = resample_abs_pos_embed(model.pos_embed, new_size=(3, 3), old_size=(2, 2), num_prefix_tokens=1)
        src = torch.randn(1, 1 + 5 * 5, 16)
        resample = {"resample.src_5x5": src}
        for k, size in RESAMPLE_SIZES.items():
            resample[f"resample.{k}"] = resample_abs_pos_embed(src, new_size=size, old_size=(5, 5), num_prefix_tokens=1)
    tensors = {**state_tensors(model), "input": x, "logits": logits, **acts,
               "input_42": x42, "logits_42": logits42, **acts42, "act.pos_embed_42": pe42, **resample}
    act_desc = {a: d for a, _, _, d in DINO_ACTS}
    for a, _, _, d in DINO_ACTS_42:
        act_desc[f"{a}_42"] = f"[42x42 input, 3x3 patch grid] {d}"
    act_desc["pos_embed_42"] = ("resample_abs_pos_embed(pos_embed, new_size=(3,3), old_size=(2,2), num_prefix_tokens=1) "
                                "-> [1, 10, 48]: the pos embed timm adds for the 42x42 input (see pos_embed_resampling)")
    meta = base_metadata(DINO_CALL, DINO_SEED, act_desc)
    meta["resolved_config"] = json.dumps(dict(
        patch_size=14, embed_dim=48, depth=2, num_heads=3, head_dim=16, attn_scale=16 ** -0.5, mlp_ratio=4.0,
        mlp_hidden=192, qkv_bias=True, init_values=1e-5, class_token=True, no_embed_class=False, reg_tokens=0,
        global_pool="token", pre_norm=False, final_norm=True, fc_norm=False, dynamic_img_size=True,
        pos_embed_shape=[1, 5, 48], act_layer="nn.GELU (exact erf)", norm_layer="timm LayerNorm eps=1e-6"))
    meta["pos_embed_resampling"] = RESAMPLE_CALL
    meta["resample_tensors"] = ("resample.src_5x5 [1, 26, 16] (1 prefix row + 5x5 grid, randn); resample.to_3x3, "
                                "resample.to_8x8, resample.to_4x7 = resample_abs_pos_embed(src, new_size=(gh, gw), "
                                "old_size=(5, 5), num_prefix_tokens=1) with the defaults above (downsample, upsample, "
                                "non-square)")
    meta["real_checkpoint_note"] = (
        "timm 'vit_small_patch14_dinov2.lvd142m' (real weights): img_size=518 (37x37 grid), pos_embed [1, 1370, 384] "
        "(1 cls + 1369), patch_embed.proj.weight [384, 3, 14, 14], embed_dim 384, depth 12, num_heads 6, "
        "mlp_ratio 4, ls1.gamma/ls2.gamma [384] (init_values 1e-5, trained values), num_classes=0 (head = Identity, "
        "output = norm(x)[:, 0]), dynamic_img_size False by default (then input must be 518x518 unless the model is "
        "created with another img_size, in which case timm resamples pos_embed ONCE at load time in "
        "checkpoint_filter_fn with the same bicubic/antialias=True call). This fixture: pos_embed [1, 5, 48] "
        "(1 cls + 2x2 grid).")
    meta["notes"] = ("input_42 -> logits_42 exercises the per-forward pos-embed resampling (2x2 grid -> 3x3). "
                     "ls gamma re-initialised to ~N(0.1, 0.05) so layer-scale matters.")
    return "dinov2_block.safetensors", tensors, meta


# ---------------------------------------------------------------------------
# case 3: CIFAR ResNet-20 (option A), random weights; plus real-weight predictions
# ---------------------------------------------------------------------------
R20_SEED = 3
R20_CALL = ("ResNet(BasicBlock, [3, 3, 3], num_classes=10)  # = resnet20() of akamaster/pytorch_resnet_cifar10 "
            "resnet.py (option='A' shortcuts), re-typed in " + GENERATOR + " as CifarResNet/CifarBasicBlock")
R20_ACTS = [
    ("stem", "layer1", "in", "input of layer1 = relu(bn1(conv1(x))) (after the stem relu) -> [B, 16, 32, 32]"),
    ("layer1", "layer1", "out", "output of layer1 -> [B, 16, 32, 32]"),
    ("layer2.0", "layer2.0", "out",
     "output of layer2[0] (stride 2; shortcut = F.pad(x[:, :, ::2, ::2], (0,0,0,0,8,8)): even rows/cols, 8 zero "
     "channels before and 8 after) -> [B, 32, 16, 16]"),
    ("layer3", "layer3", "out", "output of layer3 -> [B, 64, 8, 8]"),
    ("pooled", "linear", "in", "input of linear = F.avg_pool2d(layer3, 8).view(B, -1) (pooled features) -> [B, 64]"),
]


def build_r20() -> CifarResNet:
    return resnet20().eval()


def case_r20():
    torch.manual_seed(R20_SEED)
    model = build_r20()
    randomize_bn(model, (8, 3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    logits, acts = run_with_capture(model, x, R20_ACTS)
    tensors = {**state_tensors(model), "input": x, "logits": logits, **acts}
    meta = base_metadata(R20_CALL, R20_SEED, {a: d for a, _, _, d in R20_ACTS})
    meta["notes"] = ("Random init (kaiming_normal_ conv/linear weights, as upstream) with random BatchNorm "
                     "weight/bias and perturbed calibrated running_mean/running_var (see generator docstring). "
                     "BatchNorm2d eps=1e-5, eval mode (running "
                     "stats). Option-A shortcut in layer2.0 and layer3.0: subsample x[:, :, ::2, ::2] (rows/cols "
                     "0, 2, 4, ...) then zero-pad planes//4 channels on EACH side (16->32: 8+16+8; 32->64: "
                     "16+32+16). No shortcut parameters. weights.*.num_batches_tracked are int64 (the real "
                     "checkpoint's safetensors has none of them).")
    return "resnet20_cifar.safetensors", tensors, meta


def read_cifar(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    raw = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    assert raw.size % 3073 == 0
    rec = raw.reshape(-1, 3073)
    labels = torch.from_numpy(rec[:, 0].astype(np.int64))
    img = torch.from_numpy(rec[:, 1:].astype(np.float32).reshape(-1, 3, 32, 32)) / 255.0
    mean = torch.tensor(CIFAR_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return (img - mean) / std, labels


def load_real_r20(model: nn.Module) -> None:
    from safetensors.torch import load_file
    sd = load_file(str(REAL_R20_WEIGHTS))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected, unexpected
    assert all(k.endswith("num_batches_tracked") for k in missing), missing


def case_r20_real():
    if not (REAL_R20_WEIGHTS.is_file() and CIFAR_TEST.is_file()):
        return None
    model = build_r20()
    load_real_r20(model)
    x, labels = read_cifar(CIFAR_TEST)
    with torch.no_grad():
        logits = model(x).contiguous()
    correct = int((logits.argmax(1) == labels).sum())
    meta = base_metadata(R20_CALL + " loaded with the real weights", None, {})
    meta.update({
        "weights_file": str(REAL_R20_WEIGHTS),
        "weights_sha256": sha256(REAL_R20_WEIGHTS),
        "data_file": str(CIFAR_TEST),
        "data_sha256": sha256(CIFAR_TEST),
        "preprocessing": ("CIFAR-10 binary: per record 1 label byte + 3072 bytes (R, G, B planes, 32x32 row-major); "
                          "x = (byte / 255 - mean[c]) / std[c], mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225), "
                          "float32, no resize; all 1000 images in one batch, eval mode"),
        "correct": str(correct),
        "num_images": str(labels.numel()),
        "notes": ("load_state_dict(strict=False): the real safetensors lacks the BN num_batches_tracked buffers "
                  "(only those are missing). logits [1000, 10] float32, labels [1000] int64."),
    })
    return "resnet20_cifar10_test1000_predictions.safetensors", {"logits": logits, "labels": labels}, meta, correct


# ---------------------------------------------------------------------------
# case 4: torchvision ResNet-18 layout at reduced width
# ---------------------------------------------------------------------------
R18_SEED = 4
R18_CALL = ("NarrowResNet18(widths=(4, 8, 16, 32), num_classes=10)  # subclass of torchvision.models.resnet.ResNet"
            "(torchvision.models.resnet.BasicBlock, [2, 2, 2, 2], num_classes=10) whose conv1 (7x7 s2 p3, no bias), "
            "bn1, layer1..layer4 (torchvision's own _make_layer, strides 1,2,2,2) and fc are rebuilt at widths "
            "(4, 8, 16, 32) instead of (64, 128, 256, 512); forward() is torchvision's; see " + GENERATOR)
R18_ACTS = [
    ("maxpool", "maxpool", "out", "output of maxpool (stem: conv1 7x7/2 -> bn1 -> relu -> MaxPool2d(3, 2, 1)) -> [1, 4, 16, 16]"),
    ("layer1", "layer1", "out", "output of layer1 -> [1, 4, 16, 16]"),
    ("layer2.0.downsample", "layer2.0.downsample", "out",
     "output of layer2[0].downsample = bn(conv1x1 stride 2 (no bias)) of the block input -> [1, 8, 8, 8]"),
    ("layer4", "layer4", "out", "output of layer4 -> [1, 32, 2, 2]"),
    ("pooled", "fc", "in", "input of fc = flatten(AdaptiveAvgPool2d(1)(layer4), 1) (pooled features) -> [1, 32]"),
]


def build_r18() -> NarrowResNet18:
    return NarrowResNet18(widths=R18_WIDTHS, num_classes=10).eval()


def check_r18_layout(model: nn.Module) -> None:
    ref = torchvision.models.resnet18(num_classes=10).state_dict()
    ours = model.state_dict()
    assert list(ref.keys()) == list(ours.keys()), "key layout differs from torchvision resnet18"
    f = 64 // R18_WIDTHS[0]
    for k, v in ref.items():
        want = list(v.shape)
        if k.startswith("fc.weight"):
            want = [want[0], want[1] // f]
        elif k == "fc.bias" or v.ndim == 0:
            pass
        elif v.ndim == 4:
            want = [want[0] // f, (want[1] // f) if want[1] != 3 else 3] + want[2:]
        else:
            want = [want[0] // f]
        assert list(ours[k].shape) == want, (k, list(ours[k].shape), want)


def case_r18():
    torch.manual_seed(R18_SEED)
    model = build_r18()
    check_r18_layout(model)
    randomize_bn(model, (8, 3, 64, 64))
    x = torch.randn(1, 3, 64, 64)
    logits, acts = run_with_capture(model, x, R18_ACTS)
    tensors = {**state_tensors(model), "input": x, "logits": logits, **acts}
    meta = base_metadata(R18_CALL, R18_SEED, {a: d for a, _, _, d in R18_ACTS})
    meta["notes"] = ("Key names/order identical to torchvision.models.resnet18 (checked), every channel dim /16. "
                     "Widths reduced to stay in the 3 MB budget ((8,16,32,64) would be ~0.76 MB on its own). "
                     "Random init (torchvision's kaiming_normal_ fan_out) + random BN weight/bias and perturbed "
                     "calibrated running stats; "
                     "BatchNorm2d eps=1e-5; downsample = Sequential(conv1x1 stride s no bias, BN) exists in "
                     "layer2.0/layer3.0/layer4.0 only; weights.*.num_batches_tracked are int64.")
    return "resnet18_small.safetensors", tensors, meta


# ---------------------------------------------------------------------------
# independent functional re-implementations (for the README's claims)
# ---------------------------------------------------------------------------
def np_aa_bicubic_weights(n_in: int, n_out: int) -> np.ndarray:
    """Weights [n_out, n_in] of PyTorch's antialiased bicubic resize (align_corners=False), float64.

    PIL-style: scale = n_in / n_out, support = 2 * max(scale, 1), center = scale * (i + 0.5),
    xmin = max(trunc(center - support + 0.5), 0), xmax = min(trunc(center + support + 0.5), n_in),
    w_j = k((j - center + 0.5) / max(scale, 1)) for j in [xmin, xmax), normalised to sum 1,
    k = Keys cubic with a = -0.5 (NOT the a = -0.75 of non-antialiased bicubic).
    """
    a = -0.5

    def k(x):
        x = abs(x)
        if x < 1.0:
            return ((a + 2) * x - (a + 3)) * x * x + 1
        if x < 2.0:
            return (((x - 5) * x + 8) * x - 4) * a
        return 0.0

    scale = n_in / n_out
    support = 2.0 * scale if scale >= 1.0 else 2.0
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    w = np.zeros((n_out, n_in))
    for i in range(n_out):
        center = scale * (i + 0.5)
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), n_in)
        ws = np.array([k((j - center + 0.5) * invscale) for j in range(xmin, xmax)])
        w[i, xmin:xmax] = ws / ws.sum()
    return w


def ref_resample(posemb: torch.Tensor, old: tuple[int, int], new: tuple[int, int], mode: str = "aa_bicubic"):
    prefix, grid = posemb[:, :1], posemb[:, 1:]
    c = grid.shape[-1]
    if mode == "aa_bicubic":
        g = grid.double().numpy().reshape(old[0], old[1], c)
        wh, ww = np_aa_bicubic_weights(old[0], new[0]), np_aa_bicubic_weights(old[1], new[1])
        out = np.einsum("ih,jw,hwc->ijc", wh, ww, g).reshape(1, -1, c)
        out = torch.from_numpy(out).float()
    else:  # variants for the diagnostics
        g = grid.reshape(1, old[0], old[1], c).permute(0, 3, 1, 2)
        tmode, aa = {"bicubic_noaa": ("bicubic", False), "bilinear_aa": ("bilinear", True)}[mode]
        out = F.interpolate(g, size=new, mode=tmode, align_corners=False, antialias=aa)
        out = out.permute(0, 2, 3, 1).reshape(1, -1, c)
    return torch.cat([prefix, out], dim=1)


def ref_vit(sd: dict, x: torch.Tensor, *, patch: int, heads: int, old_grid: tuple[int, int],
            gelu: str = "none", ln_eps: float = 1e-6, scale: str = "head_dim", qkv: str = "3HD",
            layer_scale: bool = True, resample: str = "aa_bicubic", stats: dict | None = None) -> torch.Tensor:
    ln = lambda t, p: F.layer_norm(t, (t.shape[-1],), sd[p + ".weight"], sd[p + ".bias"], ln_eps)
    lin = lambda t, p: F.linear(t, sd[p + ".weight"], sd[p + ".bias"])
    b = x.shape[0]
    t = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=patch)
    gh, gw = t.shape[-2:]
    t = t.flatten(2).transpose(1, 2)  # [B, gh*gw, C], row-major over the patch grid
    c = t.shape[-1]
    pos = sd["pos_embed"]
    if (gh, gw) != old_grid:
        pos = ref_resample(pos, old_grid, (gh, gw), resample)
    t = torch.cat([sd["cls_token"].expand(b, -1, -1), t], dim=1) + pos
    hd = c // heads
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    for i in range(depth):
        p = f"blocks.{i}"
        y = lin(ln(t, p + ".norm1"), p + ".attn.qkv")  # [B, N, 3C]
        n = y.shape[1]
        if qkv == "3HD":  # timm: reshape(B, N, 3, H, hd) -> q = rows [0, C), k = [C, 2C), v = [2C, 3C)
            q, k, v = y.reshape(b, n, 3, heads, hd).permute(2, 0, 3, 1, 4)
        else:  # wrong: per-head interleaved (B, N, H, 3, hd)
            q, k, v = y.reshape(b, n, heads, 3, hd).permute(3, 0, 2, 1, 4)
        s = hd ** -0.5 if scale == "head_dim" else c ** -0.5
        attn = ((q * s) @ k.transpose(-2, -1)).softmax(-1)
        if stats is not None:
            stats.setdefault("max_prob", []).append(float(attn.max(-1).values.mean()))
            stats.setdefault("entropy_ratio", []).append(
                float((-(attn * attn.clamp_min(1e-30).log()).sum(-1)).mean() / math.log(n)))
        a = lin((attn @ v).transpose(1, 2).reshape(b, n, c), p + ".attn.proj")
        if layer_scale and (p + ".ls1.gamma") in sd:
            a = a * sd[p + ".ls1.gamma"]
        t = t + a
        h = lin(ln(t, p + ".norm2"), p + ".mlp.fc1")
        h = F.gelu(h, approximate=gelu)
        h = lin(h, p + ".mlp.fc2")
        if layer_scale and (p + ".ls2.gamma") in sd:
            h = h * sd[p + ".ls2.gamma"]
        t = t + h
    t = ln(t, "norm")
    return lin(t[:, 0], "head")


def ref_bn(t, sd, p, eps=1e-5):
    return F.batch_norm(t, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"],
                        False, 0.0, eps)


def ref_r20(sd: dict, x: torch.Tensor, *, bn_eps: float = 1e-5, pad: str = "sym", sub: int = 0) -> torch.Tensor:
    t = F.relu(ref_bn(F.conv2d(x, sd["conv1.weight"], padding=1), sd, "bn1", bn_eps))
    for li, planes in ((1, 16), (2, 32), (3, 64)):
        for bi in range(3):
            p = f"layer{li}.{bi}"
            stride = 2 if (li > 1 and bi == 0) else 1
            o = F.relu(ref_bn(F.conv2d(t, sd[p + ".conv1.weight"], stride=stride, padding=1), sd, p + ".bn1", bn_eps))
            o = ref_bn(F.conv2d(o, sd[p + ".conv2.weight"], padding=1), sd, p + ".bn2", bn_eps)
            if stride != 1 or t.shape[1] != planes:
                s = t[:, :, sub::2, sub::2]
                padc = (planes // 4, planes // 4) if pad == "sym" else (0, planes // 2)
                t = F.pad(s, (0, 0, 0, 0) + padc)
            t = F.relu(o + t)
    t = t.mean(dim=(2, 3))
    return F.linear(t, sd["linear.weight"], sd["linear.bias"])


def ref_r18(sd: dict, x: torch.Tensor, *, bn_eps: float = 1e-5) -> torch.Tensor:
    t = F.relu(ref_bn(F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), sd, "bn1", bn_eps))
    t = F.max_pool2d(t, 3, 2, 1)
    for li in range(1, 5):
        for bi in range(2):
            p = f"layer{li}.{bi}"
            stride = 2 if (li > 1 and bi == 0) else 1
            o = F.relu(ref_bn(F.conv2d(t, sd[p + ".conv1.weight"], stride=stride, padding=1), sd, p + ".bn1", bn_eps))
            o = ref_bn(F.conv2d(o, sd[p + ".conv2.weight"], padding=1), sd, p + ".bn2", bn_eps)
            if (p + ".downsample.0.weight") in sd:
                t = ref_bn(F.conv2d(t, sd[p + ".downsample.0.weight"], stride=stride), sd, p + ".downsample.1", bn_eps)
            t = F.relu(o + t)
    t = t.mean(dim=(2, 3))
    return F.linear(t, sd["fc.weight"], sd["fc.bias"])


# ---------------------------------------------------------------------------
# verification
# ---------------------------------------------------------------------------
def load_fixture(path: Path):
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return tensors, meta


def maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


CASE_SPECS = {
    "vit_tiny2.safetensors": (build_vit, VIT_ACTS, [("input", "logits", "", VIT_ACTS)]),
    "dinov2_block.safetensors": (build_dino, DINO_ACTS,
                                 [("input", "logits", "", DINO_ACTS), ("input_42", "logits_42", "_42", DINO_ACTS_42)]),
    "resnet20_cifar.safetensors": (build_r20, R20_ACTS, [("input", "logits", "", R20_ACTS)]),
    "resnet18_small.safetensors": (build_r18, R18_ACTS, [("input", "logits", "", R18_ACTS)]),
}


def verify_model_file(path: Path) -> bool:
    ok = True
    tensors, meta = load_fixture(path)
    build, _acts, runs = CASE_SPECS[path.name]
    for key in ("model", "torch_version", "timm_version", "generator", "activations"):
        if key not in meta:
            print(f"  FAIL metadata key {key} missing")
            ok = False
    torch.manual_seed(999)  # different weights before the load, so the load must do all the work
    model = build()
    sd = {k[len("weights."):]: v for k, v in tensors.items() if k.startswith("weights.")}
    model.load_state_dict(sd, strict=True)
    model.eval()
    act_keys = sorted(k for k in tensors if k.startswith("act.") and k != "act.pos_embed_42")
    seen = set()
    for inp, out, suffix, specs in runs:
        logits, acts = run_with_capture(model, tensors[inp], specs, suffix)
        eq = torch.equal(logits, tensors[out])
        print(f"  strict reload + rerun: {out} {list(logits.shape)} bit-exact={eq} (max|d|={maxdiff(logits, tensors[out]):.3g})")
        ok &= eq
        for k, v in acts.items():
            e = torch.equal(v, tensors[k])
            seen.add(k)
            if not e:
                print(f"  FAIL {k} differs (max|d|={maxdiff(v, tensors[k]):.3g})")
            ok &= e
    if seen != set(act_keys):
        print(f"  FAIL activation key mismatch: {sorted(set(act_keys) ^ seen)}")
        ok = False
    print(f"  activations bit-exact: {sorted(seen)}")
    declared = set(json.loads(meta["activations"]))
    if declared != {k[len('act.'):] for k in tensors if k.startswith('act.')}:
        print("  FAIL metadata 'activations' does not list exactly the act.* tensors")
        ok = False

    # independent functional re-implementation + diagnostics
    x, ref_logits = tensors["input"], tensors["logits"]
    if path.name in ("vit_tiny2.safetensors", "dinov2_block.safetensors"):
        is_dino = path.name.startswith("dinov2")
        cfg = dict(patch=14, heads=3, old_grid=(2, 2)) if is_dino else dict(patch=4, heads=4, old_grid=(8, 8))
        stats: dict = {}
        d = maxdiff(ref_vit(sd, x, **cfg, stats=stats), ref_logits)
        print(f"  functional reference: max|d logits|={d:.3g}")
        ok &= d < REF_TOL
        print(f"  attention non-triviality: mean max prob per block {['%.3f' % v for v in stats['max_prob']]}, "
              f"entropy / log(N) {['%.3f' % v for v in stats['entropy_ratio']]}")
        variants = {"GELU tanh approx": dict(gelu="tanh"), "LayerNorm eps 1e-5": dict(ln_eps=1e-5),
                    "attn scale 1/sqrt(dim)": dict(scale="dim"), "qkv split per-head (H,3,hd)": dict(qkv="H3D")}
        if is_dino:
            variants["layer-scale ignored"] = dict(layer_scale=False)
        for name, kw in variants.items():
            print(f"    diag {name:32s} max|d logits|={maxdiff(ref_vit(sd, x, **cfg, **kw), ref_logits):.3g}")
        if is_dino:
            x42, l42 = tensors["input_42"], tensors["logits_42"]
            d = maxdiff(ref_vit(sd, x42, **cfg), l42)
            print(f"  functional reference 42x42 (numpy AA-bicubic pos-embed): max|d logits_42|={d:.3g}")
            ok &= d < REF_TOL
            d = maxdiff(ref_resample(sd["pos_embed"], (2, 2), (3, 3)), tensors["act.pos_embed_42"])
            print(f"  numpy AA-bicubic vs act.pos_embed_42: max|d|={d:.3g}")
            ok &= d < 1e-5
            for k, size in RESAMPLE_SIZES.items():
                d = maxdiff(ref_resample(tensors["resample.src_5x5"], (5, 5), size), tensors[f"resample.{k}"])
                print(f"  numpy AA-bicubic vs resample.{k}: max|d|={d:.3g}")
                ok &= d < 1e-5
            for mode in ("bicubic_noaa", "bilinear_aa"):
                print(f"    diag 42x42 pos-embed {mode:17s} max|d logits_42|="
                      f"{maxdiff(ref_vit(sd, x42, **cfg, resample=mode), l42):.3g}")
    elif path.name == "resnet20_cifar.safetensors":
        d = maxdiff(ref_r20(sd, x), ref_logits)
        print(f"  functional reference: max|d logits|={d:.3g}")
        ok &= d < REF_TOL
        for name, kw in {"BN eps 1e-3": dict(bn_eps=1e-3), "option-A pad all at end": dict(pad="end"),
                         "option-A subsample odd (1::2)": dict(sub=1)}.items():
            print(f"    diag {name:32s} max|d logits|={maxdiff(ref_r20(sd, x, **kw), ref_logits):.3g}")
    elif path.name == "resnet18_small.safetensors":
        d = maxdiff(ref_r18(sd, x), ref_logits)
        print(f"  functional reference: max|d logits|={d:.3g}")
        ok &= d < REF_TOL
        print(f"    diag {'BN eps 1e-3':32s} max|d logits|={maxdiff(ref_r18(sd, x, bn_eps=1e-3), ref_logits):.3g}")
    print(f"  logits range [{float(ref_logits.min()):.3f}, {float(ref_logits.max()):.3f}], "
          f"std {float(ref_logits.std()):.3f}")
    return ok


def verify_predictions(path: Path, expected_correct: int) -> bool:
    tensors, meta = load_fixture(path)
    model = build_r20()
    load_real_r20(model)
    x, labels = read_cifar(CIFAR_TEST)
    with torch.no_grad():
        logits = model(x)
    eq = torch.equal(logits, tensors["logits"]) and torch.equal(labels, tensors["labels"])
    correct = int((tensors["logits"].argmax(1) == tensors["labels"]).sum())
    d = maxdiff(ref_r20({k: v for k, v in model.state_dict().items()}, x), tensors["logits"])
    print(f"  reload + rerun bit-exact={eq}; correct={correct}/{labels.numel()} (metadata {meta['correct']}); "
          f"functional reference max|d|={d:.3g}")
    return eq and correct == expected_correct and d < REF_TOL


def main() -> int:
    torch.set_num_threads(1)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for case in (case_vit, case_dino, case_r20, case_r18):
        name, tensors, meta = case()
        written.append(write_fixture(name, tensors, meta))
    real = case_r20_real()
    pred_path = None
    if real is None:
        print("real ResNet-20 weights or CIFAR test file not found: predictions file skipped")
    else:
        name, tensors, meta, correct = real
        if sum(p.stat().st_size for p in written) + 45_000 < SIZE_BUDGET:
            pred_path = write_fixture(name, tensors, meta)
            written.append(pred_path)
            print(f"real ResNet-20 on {CIFAR_TEST.name}: {correct}/1000 correct")
        else:
            print("predictions file skipped: size budget")

    ok = True
    for p in written:
        print(f"{p.relative_to(REPO_ROOT)}: {p.stat().st_size} bytes, sha256 {sha256(p)[:16]}")
        if p == pred_path:
            ok &= verify_predictions(p, correct)
        else:
            ok &= verify_model_file(p)
    total = sum(p.stat().st_size for p in written)
    print(f"total {total} bytes ({total / 1e6:.3f} MB, budget {SIZE_BUDGET})")
    ok &= total < SIZE_BUDGET
    print("verification:", "OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    if os.environ.get("TIMM_USE_NAFLEXVIT", "").lower() == "true":
        sys.exit("unset TIMM_USE_NAFLEXVIT: the fixtures need timm's classic VisionTransformer")
    sys.exit(main())
