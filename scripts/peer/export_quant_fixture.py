#!/usr/bin/env python3
"""Export a PyTorch peer fixture for vitq's uniform (min/max) quantization.

What it writes
--------------
``crates/vitq-core/tests/fixtures/torch_quant.safetensors`` (relative to the
repository root; directories are created).  The file holds:

* two float32 inputs:
  - ``input.a``  [32, 40]       = 2 * randn, with three hand-set outliers
                                  (a[3,7] = 11.0, a[10,0] = -9.5, a[31,39] = 7.25)
  - ``input.b``  [8, 3, 5, 5]   = Laplace(0, 0.3) samples, +0.2 on b[5]
                                  (channel 5 of axis 0), so asymmetric
                                  ranges are not centred on zero.
* for every case ``{input}.{gran}.{scheme}{bits}`` with input in {a, b},
  gran in {pt, pc0, pc1} (per-tensor, per-channel axis 0 / axis 1),
  scheme in {sym, asym} and bits in {8, 4, 2}, the tensors
  - ``{case}.scale``       float32, shape [1] (per-tensor) or [C] (per-channel)
  - ``{case}.zero_point``  int32,   same shape as scale
  - ``{case}.codes``       int32,   same shape as the input (``int_repr()``)
  - ``{case}.dequant``     float32, same shape as the input (``dequantize()``)
* safetensors metadata:
  - ``cases``          JSON list of {"name", "input", "granularity", "axis",
                       "scheme", "bits", "qmin", "qmax"}
  - ``torch_version``  ``torch.__version__``
  - ``generator``      this script's path relative to the repo root

Quantization recipe (PyTorch's own observers and quantize kernels):

* symmetric:  qmin = -(2^(bits-1) - 1), qmax = 2^(bits-1) - 1 (restricted
  range), dtype torch.qint8, qscheme per_tensor_symmetric /
  per_channel_symmetric, ``MinMaxObserver`` / ``PerChannelMinMaxObserver``.
* asymmetric: qmin = 0, qmax = 2^bits - 1, dtype torch.quint8, qscheme
  per_tensor_affine / per_channel_affine.
* ``scale, zp = obs.calculate_qparams()``; codes from
  ``torch.quantize_per_tensor`` / ``torch.quantize_per_channel``.

After writing, the script re-opens the file and checks every case (codes in
[qmin, qmax], dequant == (codes - zp) * scale exactly, qparams equal to a
numpy re-derivation of torch's formulas) and prints, per case, how many codes
differ from clamp(round_half_even(x / scale) + zp, qmin, qmax) computed in
float32 with numpy ("mismatch"), plus two diagnostics: "ties" = elements whose
float32 x / scale is exactly k + 0.5, "oor" = elements where the unclamped
formula falls outside [qmin, qmax].  It exits non-zero if a hard check fails
(a mismatch count above zero is reported, not treated as a failure).

How to run (from the repository root)
-------------------------------------
    python3 -m pip install torch safetensors numpy
    python3 scripts/peer/export_quant_fixture.py

Needs the pip packages ``torch``, ``safetensors`` and ``numpy``.  The output
is byte-for-byte deterministic (torch.manual_seed(0), CPU only, single
thread; the safetensors header is re-serialised with sorted metadata keys
because safetensors itself emits them in random HashMap order).
"""

from __future__ import annotations

import json
import struct
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as save_bytes

REPO_ROOT = Path(__file__).resolve().parents[2]
GENERATOR = "scripts/peer/export_quant_fixture.py"
OUT_PATH = REPO_ROOT / "crates" / "vitq-core" / "tests" / "fixtures" / "torch_quant.safetensors"

SEED = 0
BITS = (8, 4, 2)
SCHEMES = ("sym", "asym")
GRANULARITIES = (("pt", "per_tensor", 0), ("pc0", "per_channel", 0), ("pc1", "per_channel", 1))
F32_EPS = np.float32(np.finfo(np.float32).eps)


def make_inputs() -> dict[str, torch.Tensor]:
    torch.manual_seed(SEED)
    a = torch.randn(32, 40, dtype=torch.float32) * 2.0
    a[3, 7] = 11.0
    a[10, 0] = -9.5
    a[31, 39] = 7.25
    b = torch.distributions.Laplace(torch.tensor(0.0), torch.tensor(0.3)).sample((8, 3, 5, 5))
    b = b.to(torch.float32)
    b[5] += 0.2
    return {"a": a.contiguous(), "b": b.contiguous()}


def qrange(scheme: str, bits: int) -> tuple[int, int]:
    if scheme == "sym":
        q = 2 ** (bits - 1) - 1
        return -q, q
    return 0, 2**bits - 1


def quantize_case(x: torch.Tensor, gran: str, axis: int, scheme: str, bits: int):
    qmin, qmax = qrange(scheme, bits)
    obs_mod = torch.ao.quantization
    if scheme == "sym":
        dtype = torch.qint8
        qscheme = torch.per_tensor_symmetric if gran == "pt" else torch.per_channel_symmetric
    else:
        dtype = torch.quint8
        qscheme = torch.per_tensor_affine if gran == "pt" else torch.per_channel_affine

    if gran == "pt":
        obs = obs_mod.MinMaxObserver(dtype=dtype, qscheme=qscheme, quant_min=qmin, quant_max=qmax)
    else:
        obs = obs_mod.PerChannelMinMaxObserver(
            ch_axis=axis, dtype=dtype, qscheme=qscheme, quant_min=qmin, quant_max=qmax
        )
    # The observer must keep the custom range as given (no reduce_range adjustment).
    assert (obs.quant_min, obs.quant_max) == (qmin, qmax), (obs.quant_min, obs.quant_max)
    obs(x)
    scale, zp = obs.calculate_qparams()

    if gran == "pt":
        q = torch.quantize_per_tensor(x, float(scale), int(zp), dtype)
    else:
        q = torch.quantize_per_channel(x, scale, zp.to(torch.int64), axis, dtype)

    codes = q.int_repr().to(torch.int32)
    deq = q.dequantize().to(torch.float32)
    return (
        scale.to(torch.float32).reshape(-1).contiguous(),
        zp.to(torch.int32).reshape(-1).contiguous(),
        codes.contiguous(),
        deq.contiguous(),
        qmin,
        qmax,
    )


def build() -> tuple[dict[str, torch.Tensor], list[dict]]:
    inputs = make_inputs()
    tensors: dict[str, torch.Tensor] = {f"input.{k}": v for k, v in inputs.items()}
    cases: list[dict] = []
    for in_name, x in inputs.items():
        for gran, gran_long, axis in GRANULARITIES:
            for scheme in SCHEMES:
                for bits in BITS:
                    name = f"{in_name}.{gran}.{scheme}{bits}"
                    scale, zp, codes, deq, qmin, qmax = quantize_case(x, gran, axis, scheme, bits)
                    tensors[f"{name}.scale"] = scale
                    tensors[f"{name}.zero_point"] = zp
                    tensors[f"{name}.codes"] = codes
                    tensors[f"{name}.dequant"] = deq
                    cases.append(
                        {
                            "name": name,
                            "input": f"input.{in_name}",
                            "granularity": gran_long,
                            "axis": axis,
                            "scheme": "symmetric" if scheme == "sym" else "asymmetric",
                            "bits": bits,
                            "qmin": qmin,
                            "qmax": qmax,
                        }
                    )
    return tensors, cases


# ---------------------------------------------------------------- verification


def channel_minmax(x: np.ndarray, gran: str, axis: int):
    if gran == "per_tensor":
        return np.array([x.min()], np.float32), np.array([x.max()], np.float32)
    y = np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)
    return y.min(axis=1).astype(np.float32), y.max(axis=1).astype(np.float32)


def numpy_qparams(mn: np.ndarray, mx: np.ndarray, scheme: str, qmin: int, qmax: int):
    """Re-derivation of torch/ao/quantization/observer.py::_calculate_qparams in float32."""
    min_neg = np.minimum(mn, np.float32(0))
    max_pos = np.maximum(mx, np.float32(0))
    if scheme == "symmetric":
        amax = np.maximum(-min_neg, max_pos)
        scale = np.maximum(amax / np.float32((qmax - qmin) / 2), F32_EPS).astype(np.float32)
        zp = np.zeros_like(scale, dtype=np.int32)
    else:
        scale = np.maximum((max_pos - min_neg) / np.float32(qmax - qmin), F32_EPS).astype(np.float32)
        zp = (qmin - np.rint(min_neg / scale)).astype(np.int32)
        zp = np.clip(zp, qmin, qmax).astype(np.int32)
    return scale, zp


def broadcast_shape(ndim: int, gran: str, axis: int, n: int):
    if gran == "per_tensor":
        return (1,) * ndim
    shape = [1] * ndim
    shape[axis] = n
    return tuple(shape)


def verify(path: Path) -> bool:
    ok = True
    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata()
        cases = json.loads(meta["cases"])
        print(f"torch_version={meta['torch_version']} generator={meta['generator']} cases={len(cases)}")
        print(f"{'case':<16} {'n':>5} {'min':>5} {'max':>5} {'deq_maxerr':>10} {'qp_ok':>5} {'ties':>4} {'oor':>4} {'mismatch':>8}")
        for c in cases:
            name = c["name"]
            x = f.get_tensor(c["input"])
            scale = f.get_tensor(f"{name}.scale")
            zp = f.get_tensor(f"{name}.zero_point")
            codes = f.get_tensor(f"{name}.codes")
            deq = f.get_tensor(f"{name}.dequant")
            assert x.dtype == np.float32 and scale.dtype == np.float32 and deq.dtype == np.float32
            assert zp.dtype == np.int32 and codes.dtype == np.int32
            assert codes.shape == x.shape and deq.shape == x.shape
            qmin, qmax = c["qmin"], c["qmax"]
            bshape = broadcast_shape(x.ndim, c["granularity"], c["axis"], scale.shape[0])
            s = scale.reshape(bshape)
            z = zp.reshape(bshape)

            in_range = bool(codes.min() >= qmin and codes.max() <= qmax)
            deq_ref = ((codes - z).astype(np.float32) * s).astype(np.float32)
            deq_err = float(np.max(np.abs(deq - deq_ref)))

            mn, mx = channel_minmax(x, c["granularity"], c["axis"])
            s_np, z_np = numpy_qparams(mn, mx, c["scheme"], qmin, qmax)
            qp_ok = bool(np.array_equal(s_np, scale) and np.array_equal(z_np, zp))

            t = (x / s).astype(np.float32)
            unclamped = np.rint(t) + z
            # diagnostics: exact .5 ties in x/scale, and formula values the clamp had to fix
            ties = int(np.count_nonzero(t - np.floor(t) == np.float32(0.5)))
            oor = int(np.count_nonzero((unclamped < qmin) | (unclamped > qmax)))
            ref = np.clip(unclamped, qmin, qmax).astype(np.int32)
            mismatch = int(np.count_nonzero(ref != codes))

            print(
                f"{name:<16} {codes.size:>5} {int(codes.min()):>5} {int(codes.max()):>5} "
                f"{deq_err:>10.3g} {str(qp_ok):>5} {ties:>4} {oor:>4} {mismatch:>8}"
            )
            if not in_range:
                print(f"  FAIL {name}: codes outside [{qmin}, {qmax}]")
                ok = False
            if deq_err != 0.0:
                print(f"  FAIL {name}: dequant != (codes - zp) * scale")
                ok = False
            if not qp_ok:
                print(f"  FAIL {name}: qparams differ from numpy re-derivation: {s_np} {z_np} vs {scale} {zp}")
                ok = False
            if mismatch:
                idx = np.argwhere(ref != codes)[:5]
                for i in idx:
                    t = tuple(i)
                    print(
                        f"  note {name}{list(t)}: x={x[t]!r} x/scale={(x / s)[t]!r} torch={codes[t]} formula={ref[t]}"
                    )
    return ok


def canonical_header(blob: bytes) -> bytes:
    """Make the file byte-for-byte reproducible.

    safetensors (Rust) keeps ``__metadata__`` in a HashMap, so the order of its
    keys in the JSON header changes from run to run.  Re-serialise the header
    with the metadata keys sorted; tensor entries keep their order and offsets,
    and the header length is unchanged (same characters, only reordered).
    """
    (n,) = struct.unpack("<Q", blob[:8])
    raw = blob[8 : 8 + n]
    header = json.loads(raw)
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    new = json.dumps(header, separators=(",", ":")).encode("ascii")
    new = new + b" " * (n - len(new))
    assert len(new) == n, (len(new), n)
    assert json.loads(new) == json.loads(raw)
    return blob[:8] + new + blob[8 + n :]


def main() -> int:
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
    tensors, cases = build()
    OUT_PATH.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "cases": json.dumps(cases),
        "torch_version": torch.__version__,
        "generator": GENERATOR,
    }
    OUT_PATH.write_bytes(canonical_header(save_bytes(tensors, metadata=metadata)))
    print(f"wrote {OUT_PATH} ({OUT_PATH.stat().st_size} bytes, {len(tensors)} tensors, "
          f"quantized engine {torch.backends.quantized.engine})")
    ok = verify(OUT_PATH)
    print("verification:", "OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
