#!/usr/bin/env python3
"""Export the PyTorch peer fixture for vitq's dynamic int8 quantization (issue 4).

Run by hand, never in CI. From the repository root:

    python3 -m pip install torch timm safetensors numpy
    python3 scripts/peer/export_dynamic_quant_fixture.py

It writes ``crates/vitq-models/tests/fixtures/dynamic_int8_vit_tiny2.safetensors``.
``crates/vitq-models/tests/dynamic_peer.rs`` reads it.

What torch computes (torch 2.15, read from the sources and checked below)
------------------------------------------------------------------------
``torch.ao.quantization.quantize_dynamic(model, {nn.Linear: qconfig}, dtype=torch.qint8)``
swaps every ``nn.Linear`` (including the ``qkv``, ``proj``, ``fc1``, ``fc2`` and ``head`` of a timm ViT)
for ``torch.ao.nn.quantized.dynamic.Linear``. Nothing else is quantized: the patch-embedding Conv2d,
LayerNorm, GELU, softmax and the two attention matmuls (``F.scaled_dot_product_attention``) stay float.

Weights, once, at conversion (``Linear.from_float`` -> ``qconfig.weight()`` observer ->
``_quantize_weight``):

* ``default_dynamic_qconfig``: ``MinMaxObserver(dtype=qint8, qscheme=per_tensor_symmetric)``.
  ``per_channel_dynamic_qconfig``: ``PerChannelMinMaxObserver(dtype=qint8,
  qscheme=per_channel_symmetric)``, channel axis 0 (output features).
* quant_min = -128, quant_max = 127 (no ``reduce_range`` for weights).
* ``scale = max(|min|, |max|) / ((quant_max - quant_min) / 2) = amax / 127.5``, clamped below by
  float32 eps; zero point 0 (``observer.py::_calculate_qparams``).
* ``codes = clamp(round_half_even(w * float32(1 / scale)), -128, 127)`` (``quantize_per_tensor`` /
  ``quantize_per_channel`` multiply by the reciprocal; dividing instead changes 2 (pt) and 72 (pc)
  of the 66,176 codes here). The largest |w| gives +-127.5: the most negative weight maps to -128,
  the most positive is rounded to 128 and clipped to 127, which cuts it by half a step.
* vitq's symmetric scale is ``amax / 127`` with codes in [-127, 127] (the value ``-128`` is never
  produced). So vitq's weight step is 127.5 / 127 = 1.0039 times torch's. No vitq spec gives
  ``amax / 127.5``.

Activations, at every call (``dynamic.Linear.forward`` ->
``torch.ops.quantized.linear_dynamic(x, packed, reduce_range=True)`` for module version 4, which
every freshly converted module is):

* the engine is ``torch.backends.quantized.engine``; on x86 it defaults to ``'x86'``, whose linear
  weights are packed by fbgemm (``PackedLinearWeight``), so the kernel is
  ``PackedLinearWeight::apply_dynamic_impl`` in ``aten/src/ATen/native/quantized/cpu/qlinear_dynamic.cpp``.
  This script checks that ``'x86'`` and ``'fbgemm'`` give bit-identical logits.
* ``x_min, x_max = fbgemm::FindMinMax(x)`` over the **whole input tensor** (every image of the batch
  and every token: one scale per call, i.e. per batch and per layer).
* ``quant_utils::ChooseQuantizationParams(x_min, x_max, qmin=0, qmax=255, preserve_sparsity=false,
  force_scale_power_of_two=false, reduce_range=true)``: ``reduce_range`` halves the range to
  **qmin = 0, qmax = 127, i.e. 7-bit activations** (so that the AVX2 ``vpmaddubsw`` pair sums cannot
  saturate int16). The range is extended to contain 0; ``scale = (double(max) - min) / 127``, used as
  float32; a scale below 6.1e-5 is raised to 6.1e-5; ``zero_point = nearbyint(qmin - min / scale)``
  (the "from min" candidate wins whenever min < 0), clamped to [0, 127].
* the codes: ``fbgemm::QuantizeAvx2`` (LEGACY): ``cvtps_epi32(fma(x, 1.0f / scale, zero_point))``
  rounded half to even, clamped to [0, 255].
* ``uint8 x int8 -> int32`` GEMM, then ``fbgemm::ReQuantizeForFloat``:
  ``y = (acc - zp_x * sum_k W[j, k]) * scale_x * scale_w[j] + bias[j]`` in float32. **The output is
  float and is not requantized**; the bias is float and added after the rescale.
* qnnpack (``torch.backends.quantized.engine = 'qnnpack'``) ignores ``reduce_range`` (it warns) and
  uses 8-bit activations [0, 255] instead. This script also stores those logits.

vitq expresses this as: weights 8-bit symmetric, per-tensor or per-channel axis 0, min-max;
activations **7-bit** asymmetric per-tensor with ``activation_mode = dynamic`` (vitq's per-batch
min-max, ``scale_and_zero_point``: same formulas in float32); overrides that keep
``patch_embed.proj`` and ``blocks.*.attn.matmul_*`` float. The remaining differences are the weight
scale (amax/127 vs amax/127.5) and float rounding (scale computed in float32 vs double, ``x / s`` vs
``fma(x, 1/s, z)``), which moves a few activation codes by one step.

What the file holds (about 636 kB)
----------------------------------
Tensors (F32 unless noted):

* ``input`` [2, 3, 32, 32], ``logits.float`` [2, 10]: copies of ``input`` and ``logits`` of
  ``vit_tiny2.safetensors``, whose ``weights.*`` are the model's weights (not copied here).
  ``input.b16`` [16, 3, 32, 32] (randn, seed 16) and ``logits.float.b16`` [16, 10]: a second batch.
* ``logits.{pt,pc}`` [2, 10] and ``logits.{pt,pc}.b16`` [16, 10]: ``quantize_dynamic`` with
  ``default_dynamic_qconfig`` (pt: per-tensor weights) and ``per_channel_dynamic_qconfig`` (pc),
  default engine ``x86`` (= fbgemm, 7-bit activations).
* ``logits.{pt,pc}.qnnpack`` and ``logits.{pt,pc}.qnnpack.b16``: the same with the qnnpack engine
  (8-bit activations; the weights are the same codes).
* ``logits.{pt,pc}.image0`` [1, 10]: the fbgemm models on ``input[0:1]`` alone. Activation scales are
  per batch, so these differ from row 0 of ``logits.{pt,pc}`` (by 8.6e-2 / 6.8e-2).
* ``weight.{pt,pc}.{layer}.codes`` I8 [out, in] and ``weight.{pt,pc}.{layer}.scale`` [1] or [out]:
  torch's quantized weights (``int_repr()``, ``q_scale()`` / ``q_per_channel_scales()``; the zero
  points are all 0, checked) for the 9 linear layers ``blocks.{0,1}.{attn.qkv, attn.proj, mlp.fc1,
  mlp.fc2}`` and ``head``.
* An MLP case, each layer run on its own so that vitq and torch see the same float input:
  ``mlp.input`` [48, 64] (randn with two outliers, 6.0 and -4.5), ``mlp.fc1.{weight [128, 64], bias}``
  (row 4 all zero: per-channel scale = eps; one weight 2.5), ``mlp.fc2.{weight [64, 128], bias}``;
  ``mlp.{pt,pc}.fc{1,2}.{codes (I8), scale}``; ``mlp.{pt,pc}{,.qnnpack}.fc1.out`` [48, 128] =
  ``q_fc1(input)`` and ``mlp.{pt,pc}{,.qnnpack}.fc2.out`` [48, 64] = ``q_fc2(relu(fc1.out))``;
  ``mlp.act_qparams.fc{1,2}{,.qnnpack}`` [2]: torch's activation (scale, zero point) for those
  inputs (pt), from the re-implementation below (the ReLU output has min 0, so zero point 0).

Metadata (strings): ``torch_version``, ``timm_version``, ``engine``, ``generator``, ``source``
(the vit_tiny2 file and its SHA-256), ``layers`` (JSON list of the 9 layer names),
``act_qparams`` (JSON: per scheme and layer, the input min / max and torch's scale / zero point on
``input``), ``diagnostics`` (JSON: max |diff| and RMS of torch and of numpy re-implementations
against torch and float: ``emul_torch`` torch's formulas, ``emul_torchw_vitqa`` torch's weights and
vitq's activation formulas, ``emul_vitqw_torcha`` vitq's weights (amax / 127) and torch's
activations, ``emul_vitq`` both vitq's, ``emul_a8`` 8-bit activations (= qnnpack), ``emul_wonly``
float activations), ``notes``.

Checks (the script exits non-zero if one fails): the float model reproduces ``vit_tiny2``'s logits
bit for bit; x86 and fbgemm engines agree bit for bit; the weight zero points are 0 and the codes
are ``clamp(round(w * (1 / scale)), -128, 127)`` with ``scale = amax / 127.5``; the re-implementation
with torch's formulas matches torch's logits (fbgemm) and the MLP layers (fbgemm and qnnpack) to
< 1e-5 (measured 1.2e-7 to 2.4e-7 on logits, exact on the MLP).

Chaos: because the scales are per batch, one activation that rounds the other way in one layer can
change the range, hence the scale, of every later layer for every image of the batch. Adding 1e-7
relative noise to every layer input of the 16-image batch changed 1 image in 1 of 6 trials with
7-bit activations, and 1 to 16 images in 4 of 6 trials with 8-bit ones; at 1e-6 nearly every trial
does. vitq (burn's float ops) against torch with the same int8 weights on that batch: one image
off by 3.8e-2 (pc, fbgemm), all 16 by up to 5.6e-2 (pt, qnnpack). So end-to-end logits of two
implementations are comparable bit for bit only on small batches; layer by layer they are exact.

Determinism: CPU, float32, ``torch.set_num_threads(1)``, seeded; the safetensors header is
re-serialised with sorted metadata keys, so the output is byte-for-byte reproducible for given
library versions.
"""

from __future__ import annotations

import copy
import hashlib
import json
import struct
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file
from safetensors.torch import save as save_bytes

import timm
from timm.models.vision_transformer import VisionTransformer

warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
warnings.filterwarnings("ignore", message=".*qnnpack incorrectly ignores reduce_range.*")

from torch.ao.quantization import (  # noqa: E402
    default_dynamic_qconfig,
    per_channel_dynamic_qconfig,
    quantize_dynamic,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
GENERATOR = "scripts/peer/export_dynamic_quant_fixture.py"
FIXTURES = REPO_ROOT / "crates" / "vitq-models" / "tests" / "fixtures"
SOURCE = FIXTURES / "vit_tiny2.safetensors"
OUT_PATH = FIXTURES / "dynamic_int8_vit_tiny2.safetensors"
SIZE_BUDGET = 1_000_000

LAYERS = [
    f"blocks.{i}.{n}" for i in range(2) for n in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
] + ["head"]
QCONFIGS = {"pt": default_dynamic_qconfig, "pc": per_channel_dynamic_qconfig}
SMALL_SCALE_THRESHOLD = np.float32(6.1e-5)
BATCH16_SEED = 16
# emulation name -> (weights: torch's codes or vitq's, activation formulas of dynamic_linear)
EMUL_MODES = {
    "torch": ("torch", "torch"),
    "torchw_vitqa": ("torch", "vitq"),
    "vitqw_torcha": ("vitq", "torch"),
    "vitq": ("vitq", "vitq"),
    "a8": ("torch", "a8"),
    "wonly": ("torch", "wonly"),
}
F32_EPS = np.float32(np.finfo(np.float32).eps)
WEIGHT_TIES: dict[str, int] = {}  # codes where w / scale and w * (1 / scale) round differently


# ---------------------------------------------------------------------------
# Functional re-implementation (numpy)
# ---------------------------------------------------------------------------
def torch_act_qparams(x_min: float, x_max: float, qmin: int = 0, qmax: int = 255, reduce_range: bool = True):
    """``quant_utils::ChooseQuantizationParams`` (preserve_sparsity = false, no power of two)."""
    if reduce_range:
        qmin, qmax = qmin // 2, qmax // 2
    mn = min(np.float32(x_min), np.float32(0.0))
    mx = max(np.float32(x_max), np.float32(0.0))
    scale = (float(mx) - float(mn)) / (qmax - qmin)
    if np.float32(scale) == 0 or np.isinf(np.float32(1.0) / np.float32(scale)):
        scale = 0.1
    if scale < float(SMALL_SCALE_THRESHOLD):
        org = np.float32(scale)
        scale = float(SMALL_SCALE_THRESHOLD)
        if mn == 0:
            mx = np.float32(SMALL_SCALE_THRESHOLD * (qmax - qmin))
        elif mx == 0:
            mn = np.float32(-SMALL_SCALE_THRESHOLD * (qmax - qmin))
        else:
            amp = np.float32(SMALL_SCALE_THRESHOLD / org)
            mn, mx = mn * amp, mx * amp
    zp_min = qmin - float(mn) / scale
    zp_max = qmax - float(mx) / scale
    err_min = abs(qmin) - abs(float(mn) / scale)
    err_max = abs(qmax) - abs(float(mx) / scale)
    init = zp_min if err_min < err_max else zp_max
    if init < qmin:
        zp = qmin
    elif init > qmax:
        zp = qmax
    else:
        zp = int(np.rint(init))
    return np.float32(scale), zp, qmin, qmax


def vitq_act_qparams(x_min: float, x_max: float, bits: int):
    """vitq's ``uniform::scale_and_zero_point`` for an asymmetric spec, in float32."""
    qmin, qmax = 0, (1 << bits) - 1
    lo = min(np.float32(x_min), np.float32(0.0))
    hi = max(np.float32(x_max), np.float32(0.0))
    s = max(np.float32(np.float32(hi - lo) / np.float32(qmax - qmin)), F32_EPS)
    z = qmin - int(np.rint(np.float32(lo / s)))
    return np.float32(s), int(np.clip(z, qmin, qmax)), qmin, qmax


def fma_f32(a: np.ndarray, b: np.float32, c: float) -> np.ndarray:
    """float32 fused multiply-add: the float64 product of two float32 values is exact."""
    return (a.astype(np.float64) * np.float64(b) + np.float64(c)).astype(np.float32)


def dynamic_linear(x: np.ndarray, codes: np.ndarray, w_scale: np.ndarray, bias: np.ndarray, mode: str) -> np.ndarray:
    """One dynamic linear layer. mode: torch | vitq | a8 (torch, 8-bit) | wonly (float activations)."""
    k = x.shape[-1]
    x2 = x.reshape(-1, k).astype(np.float32)
    wq = codes.astype(np.int64)
    ws = np.broadcast_to(w_scale.astype(np.float32), (codes.shape[0],))
    if mode == "wonly":
        w = (codes.astype(np.float32) * ws[:, None]).astype(np.float32)
        y = (x2 @ w.T).astype(np.float32) + bias
        return y.reshape(*x.shape[:-1], -1)
    if mode == "torch":
        # fbgemm::QuantizeAvx2<uint8_t, LEGACY=true>: round(fma(x, 1/s, z)).
        s, z, _, _ = torch_act_qparams(x2.min(), x2.max(), reduce_range=True)
        inv = np.float32(np.float32(1.0) / s)
        q = np.clip(np.rint(fma_f32(x2, inv, z)), 0, 255).astype(np.int64)
    elif mode == "a8":
        # qnnpack: at::quantize_per_tensor, i.e. fbgemm::Quantize<LEGACY=false>: round(x * (1/s)) + z.
        s, z, _, _ = torch_act_qparams(x2.min(), x2.max(), reduce_range=False)
        inv = np.float32(np.float32(1.0) / s)
        q = np.clip(np.rint((x2 * inv).astype(np.float32)) + z, 0, 255).astype(np.int64)
    else:
        s, z, qmin, qmax = vitq_act_qparams(x2.min(), x2.max(), bits=7)
        q = np.clip(np.rint(np.clip(x2 / s, qmin - z, qmax - z)) + z, qmin, qmax).astype(np.int64)
    acc = q @ wq.T - z * wq.sum(axis=1)[None, :]
    y = acc.astype(np.float32) * (s * ws)[None, :].astype(np.float32) + bias
    return y.astype(np.float32).reshape(*x.shape[:-1], -1)


def vitq_weight(w: np.ndarray, per_channel: bool):
    """vitq's symmetric 8-bit min-max weight quantization: scale amax / 127, codes in [-127, 127]."""
    amax = np.abs(w).max(axis=1) if per_channel else np.abs(w).max().reshape(1)
    s = np.maximum((amax / np.float32(127)).astype(np.float32), F32_EPS)
    sc = s[:, None] if per_channel else s
    codes = np.clip(np.rint(w / sc), -128, 127).astype(np.int64)
    return codes, s


def swap_linears(model: nn.Module, fn) -> nn.Module:
    """Replaces each quantized linear by a module that calls ``fn(name, x)``."""

    class Emul(nn.Module):
        def __init__(self, name):
            super().__init__()
            self.name = name

        def forward(self, x):
            return torch.from_numpy(fn(self.name, x.detach().numpy()))

    m = copy.deepcopy(model)
    for name in LAYERS:
        parent_name, _, child = name.rpartition(".")
        parent = m.get_submodule(parent_name) if parent_name else m
        setattr(parent, child, Emul(name))
    return m


# ---------------------------------------------------------------------------
def torch_weight(qmod):
    """(codes int8 [out, in], scale [1] or [out]) of a dynamic quantized linear; checks zp == 0."""
    w = qmod.weight()
    if w.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        scale = torch.tensor([w.q_scale()], dtype=torch.float32)
        assert w.q_zero_point() == 0
    else:
        scale = w.q_per_channel_scales().to(torch.float32)
        assert int(w.q_per_channel_zero_points().abs().max()) == 0
        assert w.q_per_channel_axis() == 0
    return w.int_repr().contiguous(), scale


def check_weight_formula(name: str, w_float: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor) -> None:
    """scale = amax / 127.5 (observer formula, float32), codes = clamp(round(w / scale), -128, 127)."""
    w = w_float.numpy()
    amax = np.abs(w).max(axis=1) if scale.numel() > 1 else np.abs(w).max().reshape(1)
    want = np.maximum((torch.from_numpy(amax) / 127.5).numpy().astype(np.float32), F32_EPS)
    got = scale.numpy()
    assert np.array_equal(got, want), f"{name}: scale is not amax/127.5 ({got[:3]} vs {want[:3]})"
    sc = got[:, None] if got.size > 1 else got
    inv = (np.float32(1.0) / sc).astype(np.float32)
    re = np.clip(np.rint((w * inv).astype(np.float32)), -128, 127).astype(np.int8)
    n_diff = int((re != codes.numpy()).sum())
    assert n_diff == 0, f"{name}: {n_diff} codes differ from clamp(round(w * (1 / scale)))"
    by_div = np.clip(np.rint(w / sc), -128, 127).astype(np.int8)
    WEIGHT_TIES[name] = int((by_div != re).sum())


def build_vit():
    src = load_file(str(SOURCE))
    m = VisionTransformer(
        img_size=32, patch_size=4, embed_dim=64, depth=2, num_heads=4, mlp_ratio=2, num_classes=10
    ).eval()
    m.load_state_dict({k[len("weights.") :]: v for k, v in src.items() if k.startswith("weights.")}, strict=True)
    x = src["input"]
    with torch.no_grad():
        y = m(x)
    assert torch.equal(y, src["logits"]), "float model does not reproduce vit_tiny2 logits"
    return m, x, y


def run_dynamic(m: nn.Module, qconfig, engine: str, x: torch.Tensor):
    torch.backends.quantized.engine = engine
    q = quantize_dynamic(copy.deepcopy(m), {nn.Linear: qconfig}, dtype=torch.qint8)
    with torch.no_grad():
        return q, q(x)


def build_mlp():
    """x [48, 64] ~ N(0, 1) with two outliers; fc1 64 -> 128 (an all-zero row, one large weight), fc2 128 -> 64."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(48, 64, generator=g)
    x[3, 5] = 6.0  # outliers set the whole batch's activation range
    x[40, 17] = -4.5
    fc1 = nn.Linear(64, 128)
    fc2 = nn.Linear(128, 64)
    with torch.no_grad():
        for lin in (fc1, fc2):
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) / lin.in_features**0.5)
            lin.bias.copy_(0.2 * torch.randn(lin.bias.shape, generator=g))
        fc1.weight[4].zero_()  # per-channel scale = eps
        fc1.weight[9, 2] = 2.5  # one large weight: the per-tensor scale is set by it
    return x, fc1.eval(), fc2.eval()


def canonical_header(blob: bytes) -> bytes:
    """Sort the metadata keys of the safetensors header (same length, same tensors)."""
    (n,) = struct.unpack("<Q", blob[:8])
    raw = blob[8 : 8 + n]
    header = json.loads(raw)
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    new = json.dumps(header, separators=(",", ":")).encode("ascii")
    new = new + b" " * (n - len(new))
    assert len(new) == n and json.loads(new) == json.loads(raw)
    return blob[:8] + new + blob[8 + n :]


def max_abs(a, b) -> float:
    return float((torch.as_tensor(a) - torch.as_tensor(b)).abs().max())


def rms(a, b) -> float:
    return float((torch.as_tensor(a) - torch.as_tensor(b)).pow(2).mean().sqrt())


def main() -> int:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    engine = torch.backends.quantized.engine
    print(f"torch {torch.__version__}, timm {timm.__version__}, default engine {engine}")
    if engine not in ("x86", "fbgemm"):
        print(f"expected the x86 or fbgemm engine, got {engine}")
        return 1

    m, x, y_float = build_vit()
    tensors: dict[str, torch.Tensor] = {"input": x.contiguous(), "logits.float": y_float.contiguous()}
    act_qparams: dict[str, dict[str, list]] = {}
    diagnostics: dict[str, dict[str, float]] = {}
    ok = True

    g = torch.Generator().manual_seed(BATCH16_SEED)
    x16 = torch.randn(16, 3, 32, 32, generator=g)
    with torch.no_grad():
        y16_float = m(x16)
    tensors["input.b16"] = x16.contiguous()
    tensors["logits.float.b16"] = y16_float.contiguous()
    inputs = {"": (x, y_float), ".b16": (x16, y16_float)}

    for scheme, qconfig in QCONFIGS.items():
        q, _ = run_dynamic(m, qconfig, engine, x)
        diagnostics[scheme] = {}

        # Weights: torch's codes and scales, checked against the observer formula.
        w_torch, w_vitq = {}, {}
        for name in LAYERS:
            codes, scale = torch_weight(q.get_submodule(name))
            lin = m.get_submodule(name)
            check_weight_formula(f"{scheme} {name}", lin.weight.detach(), codes, scale)
            tensors[f"weight.{scheme}.{name}.codes"] = codes
            tensors[f"weight.{scheme}.{name}.scale"] = scale.contiguous()
            bias = lin.bias.detach().numpy()
            w_torch[name] = (codes.numpy(), scale.numpy(), bias)
            w_vitq[name] = (*vitq_weight(lin.weight.detach().numpy(), scheme == "pc"), bias)
        diagnostics[scheme]["weight_codes_div_vs_mul"] = sum(
            v for k, v in WEIGHT_TIES.items() if k.startswith(f"{scheme} ")
        )
        diagnostics[scheme]["weight_codes_vitq_vs_torch_differ"] = int(
            sum((w_vitq[n][0] != w_torch[n][0]).sum() for n in LAYERS)
        )

        # Activation qparams torch chooses per layer on `input` (from the layer inputs, via hooks).
        seen = {}
        hooks = [
            q.get_submodule(n).register_forward_pre_hook(
                lambda mod, args, n=n: seen.__setitem__(n, (float(args[0].min()), float(args[0].max())))
            )
            for n in LAYERS
        ]
        with torch.no_grad():
            q(x)
        for h in hooks:
            h.remove()
        act_qparams[scheme] = {}
        for n in LAYERS:
            s, z, _, _ = torch_act_qparams(*seen[n])
            act_qparams[scheme][n] = [seen[n][0], seen[n][1], float(s), z]

        for suffix, (xi, yi_float) in inputs.items():
            _, y = run_dynamic(m, qconfig, engine, xi)
            _, y_fb = run_dynamic(m, qconfig, "fbgemm", xi)
            _, y_qnn = run_dynamic(m, qconfig, "qnnpack", xi)
            torch.backends.quantized.engine = engine
            if not torch.equal(y, y_fb):
                print(f"{scheme}{suffix}: engine {engine} and fbgemm differ by {max_abs(y, y_fb):.3e}")
                ok = False
            tensors[f"logits.{scheme}{suffix}"] = y.contiguous()
            tensors[f"logits.{scheme}.qnnpack{suffix}"] = y_qnn.contiguous()
            d = diagnostics[scheme]
            d[f"torch_vs_float{suffix}"] = max_abs(y, yi_float)
            d[f"torch_vs_float_rms{suffix}"] = rms(y, yi_float)
            d[f"qnnpack_vs_float{suffix}"] = max_abs(y_qnn, yi_float)
            d[f"qnnpack_vs_float_rms{suffix}"] = rms(y_qnn, yi_float)
            d[f"argmax_torch_eq_float{suffix}"] = int((y.argmax(1) == yi_float.argmax(1)).sum())
            for mode, (weights, act) in EMUL_MODES.items():
                w = w_vitq if weights == "vitq" else w_torch
                em = swap_linears(m, lambda n, a, w=w, act=act: dynamic_linear(a, *w[n], act))
                with torch.no_grad():
                    ye = em(xi)
                d[f"emul_{mode}_vs_torch{suffix}"] = max_abs(ye, y)
                d[f"emul_{mode}_vs_float{suffix}"] = max_abs(ye, yi_float)
                d[f"emul_{mode}_vs_torch_rms{suffix}"] = rms(ye, y)
                d[f"emul_{mode}_vs_float_rms{suffix}"] = rms(ye, yi_float)
                if mode == "a8":
                    d[f"emul_a8_vs_qnnpack{suffix}"] = max_abs(ye, y_qnn)
            if d[f"emul_torch_vs_torch{suffix}"] >= 1e-5:
                print(f"[{scheme}{suffix}] the re-implementation does not reproduce torch")
                ok = False
            if suffix == "":
                with torch.no_grad():
                    y0 = q(x[0:1])
                tensors[f"logits.{scheme}.image0"] = y0.contiguous()
                d["image0_alone_vs_in_batch"] = max_abs(y0, y[0:1])
        for k, v in diagnostics[scheme].items():
            print(f"[{scheme}] {k}: {v:.3e}" if isinstance(v, float) else f"[{scheme}] {k}: {v}")

    # MLP case: each layer on its own, on the same float input in vitq and torch (no float op between
    # that could move an activation across a rounding boundary).
    mx, fc1, fc2 = build_mlp()
    tensors["mlp.input"] = mx.contiguous()
    for i, lin in ((1, fc1), (2, fc2)):
        tensors[f"mlp.fc{i}.weight"] = lin.weight.detach().contiguous()
        tensors[f"mlp.fc{i}.bias"] = lin.bias.detach().contiguous()
    for scheme, qconfig in QCONFIGS.items():
        for eng, tag in ((engine, ""), ("qnnpack", ".qnnpack")):
            torch.backends.quantized.engine = eng
            q1 = quantize_dynamic(nn.Sequential(copy.deepcopy(fc1)), {nn.Linear: qconfig}, dtype=torch.qint8)[0]
            q2 = quantize_dynamic(nn.Sequential(copy.deepcopy(fc2)), {nn.Linear: qconfig}, dtype=torch.qint8)[0]
            with torch.no_grad():
                h = q1(mx)
                out = q2(torch.relu(h))
            tensors[f"mlp.{scheme}{tag}.fc1.out"] = h.contiguous()
            tensors[f"mlp.{scheme}{tag}.fc2.out"] = out.contiguous()
            mode = "torch" if tag == "" else "a8"
            for i, (qlin, lin, xin, y) in enumerate(((q1, fc1, mx, h), (q2, fc2, torch.relu(h), out)), 1):
                codes, scale = torch_weight(qlin)
                check_weight_formula(f"mlp {scheme}{tag} fc{i}", lin.weight.detach(), codes, scale)
                key = f"mlp.{scheme}.fc{i}"
                if tag == "":
                    tensors[f"{key}.codes"] = codes
                    tensors[f"{key}.scale"] = scale.contiguous()
                else:
                    assert torch.equal(tensors[f"{key}.codes"], codes) and torch.equal(tensors[f"{key}.scale"], scale)
                em = dynamic_linear(xin.numpy(), codes.numpy(), scale.numpy(), lin.bias.detach().numpy(), mode)
                d = max_abs(em, y)
                if d >= 1e-5:
                    print(f"[mlp {scheme}{tag} fc{i}] the re-implementation is {d:.3e} off")
                    ok = False
                if scheme == "pt":
                    qp = torch_act_qparams(float(xin.min()), float(xin.max()), reduce_range=(tag == ""))
                    tensors[f"mlp.act_qparams.fc{i}{tag}"] = torch.tensor([float(qp[0]), float(qp[1])])
            if scheme == "pc":
                assert float(torch_weight(q1)[1][4]) == float(F32_EPS)  # the zero row
            print(f"[mlp {scheme}{tag}] fc2 vs float {max_abs(out, fc2(torch.relu(fc1(mx))).detach()):.3e}")
    torch.backends.quantized.engine = engine
    assert float(tensors["mlp.act_qparams.fc2"][1]) == 0.0  # ReLU output: min 0, zero point 0

    src_sha = hashlib.sha256(SOURCE.read_bytes()).hexdigest()
    metadata = {
        "torch_version": torch.__version__,
        "timm_version": timm.__version__,
        "engine": engine,
        "generator": GENERATOR,
        "source": f"vit_tiny2.safetensors sha256 {src_sha}",
        "layers": json.dumps(LAYERS),
        "act_qparams": json.dumps(act_qparams, sort_keys=True),
        "diagnostics": json.dumps(diagnostics, sort_keys=True),
        "notes": (
            "quantize_dynamic(model, {nn.Linear: qconfig}, dtype=torch.qint8); pt = default_dynamic_qconfig "
            "(per-tensor symmetric weights), pc = per_channel_dynamic_qconfig (per-channel symmetric, axis 0). "
            "Weight scale amax/127.5, codes in [-128, 127]. Activations: per call min-max over the whole "
            "input, reduce_range=True -> [0, 127] (7 bits), float output, not requantized. qnnpack: 8 bits."
        ),
    }
    blob = canonical_header(save_bytes(tensors, metadata=metadata))
    OUT_PATH.write_bytes(blob)
    size = len(blob)
    print(f"wrote {OUT_PATH.relative_to(REPO_ROOT)}: {size} bytes, sha256 {hashlib.sha256(blob).hexdigest()[:16]}")
    if size >= SIZE_BUDGET:
        print(f"over the {SIZE_BUDGET}-byte budget")
        ok = False
    back = load_file(str(OUT_PATH))
    for k, v in tensors.items():
        if not torch.equal(back[k], v):
            print(f"re-read mismatch in {k}")
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
