#!/usr/bin/env python3
"""Export a timm / PIL peer fixture for vitq's image preprocessing (``vitq_models::data::Preprocess``).

Purpose
-------
``crates/vitq-models/tests/preprocess_peer.rs`` checks the Rust eval preprocessing (JPEG decoding,
Pillow-style bicubic resize, torchvision centre crop, ToTensor, Normalize) against timm's real eval
transform::

    timm.data.create_transform(224, interpolation='bicubic', crop_pct=0.875,
                               mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)

which is ``Resize(256, bicubic) -> CenterCrop(224) -> MaybeToTensor() -> Normalize(mean, std)``
(the script prints the transform and asserts that structure).

What it writes
--------------
``crates/vitq-models/tests/fixtures/preprocess_timm.safetensors`` (relative to the repository root):

* for each of 4 images of ``/work/shared/data/imagenet-sample/`` (``../shared`` beside the checkout),
  ``img{k}.`` with k = 0..3:

  - ``img{k}.crop``     U8  [224, 224, 3]  the PIL image after the transform's Resize and CenterCrop
                                             steps (what ToTensor receives), HWC RGB;
  - ``img{k}.mean``     F32 [3]  per-channel mean of the final normalized float tensor [3, 224, 224];
  - ``img{k}.std``      F32 [3]  per-channel standard deviation of it, population (``correction=0``);
  - ``img{k}.decoded``  U8  [48, 48, 3]  the 48x48 window at (left, top) = ((w-48)//2, (h-48)//2) of the
                                         image as PIL decodes it (``Image.open(p).convert('RGB')``),
                                         before any resize: tells JPEG-decoder differences apart from
                                         resampling differences.

  The images themselves are NOT stored (third-party images are not committed); the test reads them
  from ``../shared/data/imagenet-sample/`` and skips when that folder is absent.

* decoder-independent resampler cases, on a seeded random U8 image ``synth.input`` [23, 37, 3] (h, w, c):
  ``synth.{name}`` U8 [h, w, 3] = ``Image.fromarray(input).resize((w, h), filter)`` for the cases listed in
  the metadata (down- and up-scaling, non-square, one axis unchanged, bicubic and bilinear).
  These must match bit for bit.

* the whole timm transform (Resize + CenterCrop) on a lossless, decoder-free input: ``pipe.input``
  U8 [61, 97, 3], a seeded smooth-plus-noise image, and ``pipe.{name}`` U8 [48, 48, 3] =
  ``create_transform(48, interpolation=f, crop_pct=c)``'s Resize and CenterCrop steps on it, for
  (bicubic, 0.875) and (bilinear, 0.9). Both crops have a half-pixel margin on one axis (offset 18.5 -> 18
  and 2.5 -> 2, Python rounds half to even). These must match bit for bit too.

* metadata (strings): ``images`` (JSON list of {key, file, subsampling, width, height, mode, resized,
  crop_box, decoded_window, why}), ``synth_cases`` (JSON), ``pipe_cases`` (JSON), ``transform`` (repr of the timm transform), ``generator``, and the versions
  ``timm_version``, ``torch_version``, ``torchvision_version``, ``pillow_version``, ``numpy_version``,
  ``safetensors_version``, plus ``notes``.

Image choice: portrait, landscape, up-scaled (short side < 256) and odd sizes. All 100 images of the
sample are RGB JPEGs (the script lists any grayscale / CMYK one it finds; there is none), so the
grayscale / CMYK conversion is not covered by this fixture.

How to run (from the repository root)
-------------------------------------
    python3 -m pip install torch torchvision timm safetensors numpy pillow
    python3 scripts/peer/export_preprocess_fixture.py

Produced with timm 1.0.31, torch 2.15.0+cu132, torchvision 0.29.2+cu132, Pillow 13.0.0 (libjpeg-turbo
as bundled in its wheel), numpy 2.4.6, safetensors 0.8.0. CPU only; the output is byte-for-byte
deterministic (the safetensors header is re-serialised with sorted metadata keys). After writing, the
script re-opens the file and checks it (shapes, sizes < 700 KB, that the stored crop reproduces the
float tensor exactly through ``(u8 / 255 - mean) / std``).
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np
import PIL
import safetensors
import timm
import torch
import torchvision
from PIL import Image, JpegImagePlugin
from safetensors.numpy import load_file
from safetensors.numpy import save as save_bytes
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform

REPO_ROOT = Path(__file__).resolve().parents[2]
GENERATOR = "scripts/peer/export_preprocess_fixture.py"
OUT_PATH = REPO_ROOT / "crates" / "vitq-models" / "tests" / "fixtures" / "preprocess_timm.safetensors"
SAMPLE = REPO_ROOT.parent / "shared" / "data" / "imagenet-sample"
BUDGET = 700_000

# (file, why): portrait / landscape / up-scaled / odd sizes.
IMAGES = [
    ("n01440764_tench.JPEG", "landscape 500x375, label 0, crop offset 58.5 -> 58 (half to even)"),
    ("n01756291_sidewinder.JPEG", "portrait 128x160: both sides up-scaled (256x320)"),
    ("n01798484_prairie_chicken.JPEG", "wide landscape 500x188: short side up-, long side down-scaled"),
    ("n01688243_frilled_lizard.JPEG", "portrait 613x920, odd width: down-scaled to 256x384"),
]
WINDOW = 48

SYNTH_SHAPE = (23, 37)  # h, w
# name, (w, h), filter
SYNTH_CASES = [
    ("bicubic_16x11", (16, 11), "bicubic"),
    ("bicubic_80x50", (80, 50), "bicubic"),
    ("bicubic_9x23", (9, 23), "bicubic"),
    ("bicubic_5x3", (5, 3), "bicubic"),
    ("bilinear_16x11", (16, 11), "bilinear"),
    ("bilinear_61x40", (61, 40), "bilinear"),
]
FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
PIPE_SHAPE = (61, 97)  # h, w
# name, size, filter, crop_pct
PIPE_CASES = [("bicubic48_c0875", 48, "bicubic", 0.875), ("bilinear48_c09", 48, "bilinear", 0.9)]
SUBSAMPLING = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}


def canonical_header(blob: bytes) -> bytes:
    """Sort the ``__metadata__`` keys of a safetensors header (safetensors writes them in HashMap order)."""
    (n,) = struct.unpack("<Q", blob[:8])
    raw = blob[8 : 8 + n]
    header = json.loads(raw)
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    new = json.dumps(header, separators=(",", ":")).encode("ascii")
    new = new + b" " * (n - len(new))
    assert len(new) == n, (len(new), n)
    return blob[:8] + new + blob[8 + n :]


def main() -> int:
    torch.set_num_threads(1)
    if not SAMPLE.is_dir():
        print(f"missing {SAMPLE}", file=sys.stderr)
        return 1

    t = create_transform(
        224, interpolation="bicubic", crop_pct=0.875, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD
    )
    print("transform:", t)
    steps = t.transforms
    assert len(steps) == 4, steps
    resize, crop = steps[0], steps[1]
    assert type(resize).__name__ == "Resize" and resize.size == 256, resize
    assert resize.interpolation == torchvision.transforms.InterpolationMode.BICUBIC, resize
    assert type(crop).__name__ == "CenterCrop" and tuple(crop.size) == (224, 224), crop
    assert type(steps[3]).__name__ == "Normalize", steps[3]

    modes = {}
    for p in sorted(SAMPLE.glob("*.JPEG")):
        with Image.open(p) as im:
            modes.setdefault(im.mode, []).append(p.name)
    print("modes in the sample:", {m: len(v) for m, v in modes.items()})
    for m, names in modes.items():
        if m != "RGB":
            print(f"  non-RGB ({m}): {names}")

    mean = np.asarray(IMAGENET_DEFAULT_MEAN, dtype=np.float32)
    std = np.asarray(IMAGENET_DEFAULT_STD, dtype=np.float32)
    tensors: dict[str, np.ndarray] = {}
    meta_images = []
    for k, (name, why) in enumerate(IMAGES):
        with Image.open(SAMPLE / name) as raw:
            mode = raw.mode
            sub = SUBSAMPLING.get(JpegImagePlugin.get_sampling(raw), "other")
            img = raw.convert("RGB")  # what timm's loaders do
        w, h = img.size
        resized = resize(img)
        cropped = crop(resized)
        u8 = np.asarray(cropped, dtype=np.uint8).copy()
        assert u8.shape == (224, 224, 3), u8.shape
        x = t(img)  # the full transform, [3, 224, 224] float32
        # The crop is exactly what ToTensor + Normalize see.
        again = (u8.transpose(2, 0, 1).astype(np.float32) / np.float32(255) - mean[:, None, None]) / std[
            :, None, None
        ]
        assert np.array_equal(again, x.numpy()), "crop does not reproduce the float tensor"
        cm = x.mean(dim=(1, 2)).numpy().astype(np.float32)
        cs = x.std(dim=(1, 2), correction=0).numpy().astype(np.float32)
        left, top = (w - WINDOW) // 2, (h - WINDOW) // 2
        dec = np.asarray(img, dtype=np.uint8)[top : top + WINDOW, left : left + WINDOW].copy()
        tensors[f"img{k}.crop"] = u8
        tensors[f"img{k}.mean"] = cm
        tensors[f"img{k}.std"] = cs
        tensors[f"img{k}.decoded"] = dec
        rw, rh = resized.size
        cl, ct = int(round((rw - 224) / 2.0)), int(round((rh - 224) / 2.0))
        meta_images.append(
            {
                "key": f"img{k}",
                "file": name,
                "subsampling": sub,
                "width": w,
                "height": h,
                "mode": mode,
                "resized": [rw, rh],
                "crop_box": [cl, ct, cl + 224, ct + 224],
                "decoded_window": [left, top, WINDOW, WINDOW],
                "why": why,
            }
        )
        print(f"img{k} {name}: {w}x{h} {mode} {sub} -> resized {rw}x{rh}, crop at ({cl}, {ct}); mean {cm} std {cs}")

    rng = np.random.default_rng(0)
    synth = rng.integers(0, 256, size=(*SYNTH_SHAPE, 3), dtype=np.uint8)
    # Add smooth structure and saturated patches so that overshoot and clamping are exercised.
    synth[:, :8] = 255
    synth[5:9, 20:30] = 0
    tensors["synth.input"] = synth
    synth_meta = []
    for name, (w, h), f in SYNTH_CASES:
        out = np.asarray(Image.fromarray(synth, "RGB").resize((w, h), FILTERS[f]), dtype=np.uint8).copy()
        tensors[f"synth.{name}"] = out
        synth_meta.append({"name": name, "width": w, "height": h, "filter": f})

    # A smooth image with noise: the whole Resize + CenterCrop of timm on a decoder-free input.
    yy, xx = np.mgrid[0 : PIPE_SHAPE[0], 0 : PIPE_SHAPE[1]].astype(np.float64)
    smooth = np.stack(
        [128 + 100 * np.sin(xx / 7.0 + c) * np.cos(yy / 5.0 - c) for c in range(3)], axis=-1
    )
    noise = rng.normal(0.0, 25.0, size=smooth.shape)
    pipe = np.clip(np.rint(smooth + noise), 0, 255).astype(np.uint8)
    tensors["pipe.input"] = pipe
    pipe_meta = []
    for name, size, f, cp in PIPE_CASES:
        tf = create_transform(size, interpolation=f, crop_pct=cp, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)
        r = tf.transforms[0](Image.fromarray(pipe, "RGB"))
        out = np.asarray(tf.transforms[1](r), dtype=np.uint8).copy()
        assert out.shape == (size, size, 3), out.shape
        tensors[f"pipe.{name}"] = out
        pipe_meta.append({"name": name, "size": size, "filter": f, "crop_pct": cp, "resized": list(r.size), "transform": repr(tf)})
        print(f"pipe.{name}: {PIPE_SHAPE[1]}x{PIPE_SHAPE[0]} -> resized {r.size[0]}x{r.size[1]} -> {size}x{size}")

    metadata = {
        "images": json.dumps(meta_images),
        "pipe_cases": json.dumps(pipe_meta),
        "synth_cases": json.dumps(synth_meta),
        "transform": repr(t),
        "generator": GENERATOR,
        "timm_version": timm.__version__,
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "pillow_version": PIL.__version__,
        "numpy_version": np.__version__,
        "safetensors_version": safetensors.__version__,
        "notes": (
            "crop = transform.transforms[1](transform.transforms[0](Image.open(p).convert('RGB'))); "
            "mean/std over each channel of transform(img), std with correction=0. "
            "synth.* = Image.fromarray(synth.input).resize((w, h), filter). "
            "pipe.* = the Resize and CenterCrop steps of create_transform(size, interpolation, crop_pct) on pipe.input."
        ),
    }
    OUT_PATH.parent.mkdir(parents=True, exist_ok=True)
    OUT_PATH.write_bytes(canonical_header(save_bytes(tensors, metadata=metadata)))
    size = OUT_PATH.stat().st_size
    print(f"wrote {OUT_PATH.relative_to(REPO_ROOT)} ({size} bytes, {len(tensors)} tensors)")

    back = load_file(OUT_PATH)
    assert set(back) == set(tensors)
    for key, v in tensors.items():
        assert back[key].dtype == v.dtype and np.array_equal(back[key], v), key
    assert size < BUDGET, f"{size} bytes > budget {BUDGET}"
    print("verification: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
