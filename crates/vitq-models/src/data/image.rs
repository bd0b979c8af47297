//! JPEG / PNG decoding and timm's evaluation preprocessing.
//!
//! [`Preprocess`] reproduces `timm.data.create_transform(size, interpolation=…, crop_pct=…)` in eval mode
//! (`transforms_imagenet_eval` with the default `crop_mode='center'`), which is torchvision's
//!
//! 1. `Resize(floor(size / crop_pct))`: the **shorter** side becomes `floor(size / crop_pct)` (256 for 224 at
//!    0.875); the longer side becomes `int(s · long / short)` with `s` that size, i.e. **truncated**, not
//!    rounded, so the aspect ratio is kept up to one pixel. A side that already has the target length is not resampled.
//! 2. `CenterCrop(size)`: offsets `int(round((h − size) / 2))` with Python's `round`, which rounds halves to
//!    **even** (a margin of 117 gives offset 58, one of 119 gives 60). A crop larger than the image is
//!    zero-padded first, `(crop − h) // 2` before and the rest after, as torchvision does.
//! 3. `ToTensor` (`byte / 255` in f32) and `Normalize` (`(x − mean) / std` in f32), channels first.
//!
//! The resize runs on PIL images, so its numbers are PIL's: [`resize`] is a port of Pillow's
//! `ImagingResample` for 8-bit images (`libImaging/Resample.c`):
//!
//! * separable, **horizontal pass first**, the intermediate rounded and clamped to `u8`, then vertical;
//! * filters: bicubic with `a = −0.5` (support 2), bilinear (triangle, support 1);
//! * antialiasing: when shrinking by `scale = in / out > 1` the kernel is stretched by `scale` (support
//!   `2·scale` for bicubic), so every input pixel contributes;
//! * output pixel `i` is centred at `(i + 0.5)·scale`; the taps run over `[trunc(c − support + 0.5),
//!   trunc(c + support + 0.5))` clipped to the image, with weights `k((j − c + 0.5) / max(scale, 1))`
//!   normalized to sum to 1 over the taps that remain;
//! * weights are fixed point with 22 fractional bits (`PRECISION_BITS`), rounded half away from zero; each
//!   output is `(Σ w·p + 2^21) >> 22`, clamped to `[0, 255]`.
//!
//! With the same decoded pixels, [`Preprocess::resize_crop`] gives PIL's bytes exactly (checked against
//! Pillow in `tests/preprocess_peer.rs`). Only the output window is computed: resize-then-crop costs the
//! crop, not the full resized image.
//!
//! Decoding uses the `image` crate (zune-jpeg, png); PIL uses libjpeg-turbo. The JPEG decoders do not
//! agree bit for bit: on the 100-image ImageNet sample, 4:4:4 JPEGs give crops within 3 levels of timm's
//! with ≤ 3 % of bytes different (IDCT / colour-conversion rounding), 4:2:0 JPEGs within 4 levels with
//! 4–35 % different and a small bias (zune-jpeg rounds its chroma up-sampling twice, libjpeg-turbo once):
//! channel means of the normalized tensor move by up to 7e-3.
//!
//! Every image becomes 8-bit RGB as PIL's `convert('RGB')` does (timm's loaders call it): grey is
//! replicated, alpha is dropped (not composited), palettes are expanded, CMYK JPEGs are converted by the
//! decoder. Against PIL, 8-bit PNGs (RGB, RGBA, L, LA, P) decode identically; grey and CMYK JPEGs within 1
//! level. 16-bit PNGs are scaled to 8 bits (`v / 257`), where PIL **clips** a 16-bit grey image
//! (`I;16 → RGB` saturates almost every pixel at 255). EXIF orientation is **not** applied (neither PIL's
//! `Image.open` nor timm applies it).
//!
//! ```no_run
//! use burn::backend::Flex;
//! use vitq_models::data::Preprocess;
//! let pre = Preprocess::imagenet(224);
//! let x = pre.load::<Flex>("n01440764_tench.JPEG", &Default::default())?;
//! assert_eq!(x.dims(), [3, 224, 224]);
//! # Ok::<(), vitq_models::Error>(())
//! ```

use std::io::Cursor;
use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::Normalize;
use crate::error::{Error, Result};

/// Fractional bits of Pillow's fixed-point resampling weights (`PRECISION_BITS = 32 - 8 - 2`).
const PRECISION_BITS: u32 = 22;

/// The largest side [`Preprocess`] accepts for its resize target (`floor(size / crop_pct)`).
pub const MAX_SIDE: usize = 1 << 15;

/// An 8-bit RGB image, rows top to bottom, pixels interleaved `R, G, B` (`[height, width, 3]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

impl RgbImage {
    /// Wraps interleaved RGB bytes; `None` if `pixels.len() != width · height · 3`.
    pub fn from_raw(width: usize, height: usize, pixels: Vec<u8>) -> Option<Self> {
        (width.checked_mul(height)?.checked_mul(3)? == pixels.len()).then_some(Self {
            width,
            height,
            pixels,
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The bytes, `[height, width, 3]` row-major.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// Takes the bytes.
    pub fn into_pixels(self) -> Vec<u8> {
        self.pixels
    }

    /// The pixel at column `x`, row `y`.
    ///
    /// # Panics
    /// If `(x, y)` is outside the image.
    pub fn get(&self, x: usize, y: usize) -> [u8; 3] {
        assert!(
            x < self.width && y < self.height,
            "pixel ({x}, {y}) outside {}×{}",
            self.width,
            self.height
        );
        let i = (y * self.width + x) * 3;
        [self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]]
    }
}

/// Reads and decodes a JPEG or PNG file (format from its first bytes, not its name) to 8-bit RGB.
///
/// A file that cannot be read is [`Error::Io`]; one that is not a JPEG or PNG, is corrupt or is
/// truncated is [`Error::Data`] naming the file.
pub fn decode(path: impl AsRef<Path>) -> Result<RgbImage> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode_bytes(&bytes, path)
}

/// Decodes JPEG or PNG bytes already in memory; `path` is for messages.
///
/// zune-jpeg decodes truncated JPEGs leniently (the missing part comes out grey); PIL refuses them
/// ("image file is truncated"), and so does this function: a JPEG whose last scan is not followed by an
/// end-of-image marker is an error.
pub fn decode_bytes(bytes: &[u8], path: &Path) -> Result<RgbImage> {
    let bad = |reason: String| Error::Data {
        path: path.to_path_buf(),
        reason,
    };
    let reader = ::image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| bad(format!("cannot read the image header: {e}")))?;
    match reader.format() {
        Some(::image::ImageFormat::Jpeg) => check_jpeg_complete(bytes).map_err(bad)?,
        Some(::image::ImageFormat::Png) => {}
        Some(f) => {
            return Err(bad(format!(
                "{f:?} images are not supported (JPEG and PNG only)"
            )));
        }
        None => {
            return Err(bad(format!(
                "not a JPEG or PNG image ({} bytes, starts with {:02x?})",
                bytes.len(),
                &bytes[..bytes.len().min(8)]
            )));
        }
    }
    let img = reader
        .decode()
        .map_err(|e| bad(format!("cannot decode: {e}")))?;
    let rgb = img.into_rgb8();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    if w == 0 || h == 0 {
        return Err(bad(format!("empty image ({w}×{h})")));
    }
    Ok(RgbImage {
        width: w,
        height: h,
        pixels: rgb.into_raw(),
    })
}

/// A JPEG is complete if an end-of-image marker (`FF D9`) follows its last start-of-scan (`FF DA`).
/// Entropy-coded data stuffs every `FF` byte (`FF 00`), so `FF D9` there can only be the marker.
fn check_jpeg_complete(bytes: &[u8]) -> std::result::Result<(), String> {
    let marker = |m: u8| bytes.windows(2).rposition(|w| w[0] == 0xFF && w[1] == m);
    match (marker(0xDA), marker(0xD9)) {
        (None, _) => Err(format!(
            "JPEG without image data (no start-of-scan marker; {} bytes, truncated?)",
            bytes.len()
        )),
        (Some(sos), Some(eoi)) if eoi > sos => Ok(()),
        _ => Err(format!(
            "truncated JPEG: no end-of-image marker after the last scan ({} bytes)",
            bytes.len()
        )),
    }
}

/// PIL resampling filters (`PIL.Image.Resampling`), as timm names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Interpolation {
    /// Triangle filter, support 1 (`'bilinear'`; torchvision's ResNet recipe).
    Bilinear,
    /// Keys cubic with `a = −0.5`, support 2 (`'bicubic'`; timm's ViT / DeiT recipe).
    #[default]
    Bicubic,
}

impl Interpolation {
    /// timm's name (`'bilinear'`, `'bicubic'`).
    pub fn name(self) -> &'static str {
        match self {
            Interpolation::Bilinear => "bilinear",
            Interpolation::Bicubic => "bicubic",
        }
    }

    fn support(self) -> f64 {
        match self {
            Interpolation::Bilinear => 1.0,
            Interpolation::Bicubic => 2.0,
        }
    }

    /// Pillow's filter functions, term for term (the order of the f64 operations matters for the
    /// rounding of the fixed-point weights).
    fn kernel(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Interpolation::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Interpolation::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// One axis of a resize (+ crop): for each output pixel, the source taps and their fixed-point weights,
/// or `None` for padding (value 0).
#[derive(Debug)]
struct Axis {
    /// `(first source index, number of taps, offset into weights)`.
    taps: Vec<Option<(usize, usize, usize)>>,
    weights: Vec<i32>,
}

impl Axis {
    /// Resize `in_size → out_size`, then keep the output pixels `window` (indices into the resized axis;
    /// `None` = padding). Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc`. An axis whose length does
    /// not change is not resampled at all (Pillow skips that pass), so it maps pixels one to one.
    fn new(
        in_size: usize,
        out_size: usize,
        filter: Interpolation,
        window: &[Option<usize>],
    ) -> Self {
        let mut taps = Vec::with_capacity(window.len());
        let mut weights = Vec::new();
        if in_size == out_size {
            for &o in window {
                taps.push(o.map(|i| {
                    weights.push(1 << PRECISION_BITS);
                    (i, 1, weights.len() - 1)
                }));
            }
            return Self { taps, weights };
        }
        // (double)(in1 - in0) / outSize with a float box (0, in_size): exact for any real image size.
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filter.support() * filterscale;
        let inv_filterscale = 1.0 / filterscale;
        let mut k = Vec::new();
        for &o in window {
            let Some(xx) = o else {
                taps.push(None);
                continue;
            };
            let center = (xx as f64 + 0.5) * scale;
            // C's (int) casts truncate toward zero, as `as` does.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
            let n = usize::try_from(xmax - xmin).unwrap_or(0);
            k.clear();
            let mut ww = 0.0;
            for x in 0..n {
                let w = filter.kernel(((x as i64 + xmin) as f64 - center + 0.5) * inv_filterscale);
                k.push(w);
                ww += w;
            }
            let offset = weights.len();
            for &w in &k {
                let w = if ww != 0.0 { w / ww } else { w };
                let f = w * f64::from(1u32 << PRECISION_BITS);
                weights.push(if w < 0.0 {
                    (-0.5 + f) as i32
                } else {
                    (0.5 + f) as i32
                });
            }
            taps.push(Some((xmin as usize, n, offset)));
        }
        Self { taps, weights }
    }

    /// The range of source indices any output pixel reads.
    fn source_range(&self) -> std::ops::Range<usize> {
        let mut lo = usize::MAX;
        let mut hi = 0;
        for &(first, n, _) in self.taps.iter().flatten() {
            if n > 0 {
                lo = lo.min(first);
                hi = hi.max(first + n);
            }
        }
        if lo > hi { 0..0 } else { lo..hi }
    }

    /// Pillow's `clip8`: round (the `2^21` bias), shift, clamp.
    fn apply(&self, out: usize, mut pixel: impl FnMut(usize) -> u8) -> u8 {
        let Some((first, n, offset)) = self.taps[out] else {
            return 0;
        };
        let mut ss: i64 = 1 << (PRECISION_BITS - 1);
        for (j, &w) in self.weights[offset..offset + n].iter().enumerate() {
            ss += i64::from(pixel(first + j)) * i64::from(w);
        }
        (ss >> PRECISION_BITS).clamp(0, 255) as u8
    }
}

/// The centre-crop window of torchvision's `CenterCrop` on an axis of length `len`: for each of the
/// `crop` output pixels, its index in the axis or `None` where the crop pads.
fn center_window(len: usize, crop: usize) -> Vec<Option<usize>> {
    if crop > len {
        let before = (crop - len) / 2;
        (0..crop)
            .map(|o| o.checked_sub(before).filter(|&i| i < len))
            .collect()
    } else {
        // int(round((len - crop) / 2.0)) with Python's round-half-to-even.
        let offset = ((len - crop) as f64 / 2.0).round_ties_even() as usize;
        (offset..offset + crop).map(Some).collect()
    }
}

/// Resizes with Pillow's 8-bit resampler and keeps `(x_window, y_window)` of the result.
fn resample_window(
    img: &RgbImage,
    (out_w, out_h): (usize, usize),
    filter: Interpolation,
    x_window: &[Option<usize>],
    y_window: &[Option<usize>],
) -> RgbImage {
    let h_axis = Axis::new(img.width, out_w, filter, x_window);
    let v_axis = Axis::new(img.height, out_h, filter, y_window);
    let rows = v_axis.source_range();
    let w = x_window.len();
    // Horizontal pass over the source rows the vertical pass needs, rounded to u8 (as Pillow does).
    let mut tmp = vec![0u8; rows.len() * w * 3];
    for (r, y) in rows.clone().enumerate() {
        let line = &img.pixels[y * img.width * 3..(y + 1) * img.width * 3];
        let out = &mut tmp[r * w * 3..(r + 1) * w * 3];
        for xx in 0..w {
            for c in 0..3 {
                out[xx * 3 + c] = h_axis.apply(xx, |x| line[x * 3 + c]);
            }
        }
    }
    // Vertical pass.
    let h = y_window.len();
    let mut pixels = vec![0u8; h * w * 3];
    for yy in 0..h {
        for xx in 0..w {
            for c in 0..3 {
                pixels[(yy * w + xx) * 3 + c] =
                    v_axis.apply(yy, |y| tmp[((y - rows.start) * w + xx) * 3 + c]);
            }
        }
    }
    RgbImage {
        width: w,
        height: h,
        pixels,
    }
}

/// Resizes to `width × height` exactly as Pillow's `Image.resize(…, resample)` does for an RGB image.
/// A zero target gives an empty image.
pub fn resize(img: &RgbImage, width: usize, height: usize, filter: Interpolation) -> RgbImage {
    let xs: Vec<_> = (0..width).map(Some).collect();
    let ys: Vec<_> = (0..height).map(Some).collect();
    resample_window(img, (width, height), filter, &xs, &ys)
}

/// torchvision's `CenterCrop((height, width))`: half-to-even rounded offsets, zero padding where the
/// crop is larger than the image.
pub fn center_crop(img: &RgbImage, width: usize, height: usize) -> RgbImage {
    let xs = center_window(img.width, width);
    let ys = center_window(img.height, height);
    let mut pixels = vec![0u8; width * height * 3];
    for (yy, y) in ys.iter().enumerate() {
        for (xx, x) in xs.iter().enumerate() {
            if let (Some(x), Some(y)) = (x, y) {
                let src = (y * img.width + x) * 3;
                pixels[(yy * width + xx) * 3..][..3].copy_from_slice(&img.pixels[src..src + 3]);
            }
        }
    }
    RgbImage {
        width,
        height,
        pixels,
    }
}

/// timm's evaluation transform: resize the shorter side to `floor(size / crop_pct)`, centre-crop
/// `size × size`, scale to `[0, 1]`, normalize. See the [module documentation](self) for the exact rules.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Preprocess {
    /// Output side length (the model's input size).
    pub size: usize,
    /// Fraction of the resized shorter side kept by the crop (timm's `crop_pct`; > 0, usually ≤ 1).
    pub crop_pct: f64,
    /// Resampling filter of the resize.
    pub interpolation: Interpolation,
    /// Channel normalization after `/ 255`.
    pub normalize: Normalize,
}

impl Preprocess {
    /// timm's default eval transform at `size`: bicubic, `crop_pct` 0.875 (`DEFAULT_CROP_PCT`), ImageNet
    /// mean / std. For 224 this is resize 256, crop 224.
    pub fn imagenet(size: usize) -> Self {
        Self {
            size,
            crop_pct: 0.875,
            interpolation: Interpolation::Bicubic,
            normalize: Normalize::IMAGENET,
        }
    }

    /// The eval transform of a model, from timm's `pretrained_cfg` (timm 1.0) for the weights named, or
    /// the recipe of the original weights for this crate's presets. `name` is a timm name, optionally with
    /// its tag (`deit_small_patch16_224.fb_in1k`).
    ///
    /// | name | size | crop_pct | filter | mean / std |
    /// |---|---|---|---|---|
    /// | `resnet20`, `resnet32`, `resnet44`, `resnet56` (CIFAR) | 32 | 1.0 | bilinear | ImageNet |
    /// | `resnet18`, `resnet34`, `resnet50` (`.tv_in1k`, torchvision's V1 weights) | 224 | 0.875 | bilinear | ImageNet |
    /// | `resnet18`, `resnet34`, `resnet50` `.a1_in1k` (timm's own) | 224 | 0.95 | bicubic | ImageNet |
    /// | `deit_*_224`, `deit3_*_224` (`.fb_in1k`) | 224 | 0.9 | bicubic | ImageNet |
    /// | `deit_*_384`, `deit3_*_384` | 384 | 1.0 | bicubic | ImageNet |
    /// | `vit_{tiny,small,base,large}_patch{16,32}_224`, `vit_base_patch8_224` (AugReg: `.augreg_in21k_ft_in1k`, `.augreg2_in21k_ft_in1k`) | 224 | 0.9 | bicubic | 0.5 / 0.5 ([`Normalize::INCEPTION`]) |
    /// | the same at `_384` | 384 | 1.0 | bicubic | 0.5 / 0.5 |
    /// | `vit_*_patch14_dinov2`, `vit_*_patch14_reg4_dinov2` (`.lvd142m`) | 518 | 1.0 | bicubic | ImageNet |
    ///
    /// Checked against every matching name of timm 1.0.31's registry. Other tags of the same
    /// architectures (MAE, DINO, CLIP, in21k-only) use other statistics and are not listed.
    ///
    /// A bare `resnet18/34/50` means torchvision's weights (this crate's layout), not timm's default tag
    /// (`a1_in1k`). Unknown names or tags are [`Error::UnknownModel`].
    pub fn for_model(name: &str) -> Result<Self> {
        use Interpolation::{Bicubic, Bilinear};
        let (arch, tag) = name.split_once('.').unwrap_or((name, ""));
        let parts: Vec<&str> = arch.split('_').collect();
        // 224 → crop 0.9, 384 → crop 1.0 for every DeiT and AugReg ViT.
        let res = match parts.last() {
            Some(&"224") => Some((224, 0.9)),
            Some(&"384") => Some((384, 1.0)),
            _ => None,
        };
        let cfg = |size, crop_pct, interpolation, normalize| Self {
            size,
            crop_pct,
            interpolation,
            normalize,
        };
        let imagenet = Normalize::IMAGENET;
        let found = match (parts.as_slice(), tag) {
            (["resnet20" | "resnet32" | "resnet44" | "resnet56"], "") => {
                Some(cfg(32, 1.0, Bilinear, imagenet))
            }
            (["resnet18" | "resnet34" | "resnet50"], "" | "tv_in1k") => {
                Some(cfg(224, 0.875, Bilinear, imagenet))
            }
            (["resnet18" | "resnet34" | "resnet50"], "a1_in1k") => {
                Some(cfg(224, 0.95, Bicubic, imagenet))
            }
            (["deit" | "deit3", _, .., "patch16" | "patch14", _], "" | "fb_in1k") => {
                res.map(|(s, c)| cfg(s, c, Bicubic, imagenet))
            }
            (
                [
                    "vit",
                    "tiny" | "small" | "base" | "large",
                    "patch16" | "patch32",
                    _,
                ]
                | ["vit", "base", "patch8", _],
                "" | "augreg_in21k_ft_in1k" | "augreg2_in21k_ft_in1k",
            ) => res.map(|(s, c)| cfg(s, c, Bicubic, Normalize::INCEPTION)),
            (
                [
                    "vit",
                    "small" | "base" | "large" | "giant",
                    "patch14",
                    ..,
                    "dinov2",
                ],
                "" | "lvd142m",
            ) => Some(cfg(518, 1.0, Bicubic, imagenet)),
            _ => None,
        };
        found.ok_or_else(|| Error::UnknownModel {
            name: name.into(),
            known: "resnet20/32/44/56, resnet18/34/50[.tv_in1k|.a1_in1k], \
                    deit[3]_<size>[_distilled]_patch16_{224,384}[.fb_in1k], \
                    vit_{tiny,small,base,large}_patch{16,32}_{224,384}[.augreg_in21k_ft_in1k|.augreg2_in21k_ft_in1k], \
                    vit_base_patch8_224, vit_<size>_patch14[_reg4]_dinov2[.lvd142m]"
                .into(),
        })
    }

    /// The resize target of the shorter side, `floor(size / crop_pct)` (timm's `scale_size`).
    pub fn scale_size(&self) -> usize {
        (self.size as f64 / self.crop_pct).floor() as usize
    }

    /// Checks `size ≥ 1` and `crop_pct > 0` with `1 ≤ scale_size() ≤` [`MAX_SIDE`].
    pub fn check(&self) -> Result<()> {
        let scale = self.size as f64 / self.crop_pct;
        if self.size == 0
            || self.crop_pct.is_nan()
            || self.crop_pct <= 0.0
            || !scale.is_finite()
            || scale < 1.0
            || scale >= MAX_SIDE as f64 + 1.0
        {
            return Err(Error::Shape {
                what: format!(
                    "Preprocess (size {}, crop_pct {})",
                    self.size, self.crop_pct
                ),
                expected: format!(
                    "size ≥ 1 and crop_pct > 0 with 1 ≤ size / crop_pct ≤ {MAX_SIDE}"
                ),
                got: vec![self.size],
            });
        }
        Ok(())
    }

    /// `(width, height)` after the resize: torchvision's `Resize(scale_size)` on a `width × height`
    /// image (shorter side → `scale_size`, longer side `scale_size · long / short` truncated).
    pub fn resized_dims(&self, width: usize, height: usize) -> (usize, usize) {
        let s = self.scale_size();
        if width <= height {
            (
                s,
                (s as u128 * height as u128 / width.max(1) as u128) as usize,
            )
        } else {
            (
                (s as u128 * width as u128 / height.max(1) as u128) as usize,
                s,
            )
        }
    }

    /// Resize + centre crop: the `size × size` 8-bit image that timm's transform hands to `ToTensor`.
    pub fn resize_crop(&self, img: &RgbImage) -> Result<RgbImage> {
        self.check()?;
        let (w, h) = self.resized_dims(img.width, img.height);
        let xs = center_window(w, self.size);
        let ys = center_window(h, self.size);
        Ok(resample_window(img, (w, h), self.interpolation, &xs, &ys))
    }

    /// `ToTensor` + `Normalize` of an image already resized and cropped: `[3, h, w]` values, channels
    /// first, `(byte / 255 − mean) / std` in f32 as torchvision computes it.
    pub fn normalize_values(&self, img: &RgbImage) -> Vec<f32> {
        let n = img.width * img.height;
        let mut out = Vec::with_capacity(3 * n);
        for c in 0..3 {
            let (m, s) = (self.normalize.mean[c], self.normalize.std[c]);
            out.extend(
                img.pixels[c..]
                    .iter()
                    .step_by(3)
                    .map(|&v| (f32::from(v) / 255.0 - m) / s),
            );
        }
        out
    }

    /// The whole transform on a decoded image: `[3, size, size]`.
    pub fn tensor<B: Backend>(&self, img: &RgbImage, device: &B::Device) -> Result<Tensor<B, 3>> {
        let crop = self.resize_crop(img)?;
        let s = self.size;
        Ok(Tensor::from_data(
            TensorData::new(self.normalize_values(&crop), [3, s, s]),
            device,
        ))
    }

    /// Decodes a JPEG / PNG file and transforms it: `[3, size, size]`.
    pub fn load<B: Backend>(
        &self,
        path: impl AsRef<Path>,
        device: &B::Device,
    ) -> Result<Tensor<B, 3>> {
        self.check()?;
        self.tensor(&decode(path)?, device)
    }

    /// Decodes and transforms several files into one `[n, 3, size, size]` batch; the first failure is
    /// returned.
    pub fn load_batch<B: Backend, P: AsRef<Path>>(
        &self,
        paths: &[P],
        device: &B::Device,
    ) -> Result<Tensor<B, 4>> {
        self.check()?;
        let s = self.size;
        let mut out = Vec::with_capacity(paths.len() * 3 * s * s);
        for p in paths {
            let crop = self.resize_crop(&decode(p)?)?;
            out.extend(self.normalize_values(&crop));
        }
        Ok(Tensor::from_data(
            TensorData::new(out, [paths.len(), 3, s, s]),
            device,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(w: usize, h: usize) -> RgbImage {
        let px = (0..w * h * 3).map(|i| (i * 37 % 256) as u8).collect();
        RgbImage::from_raw(w, h, px).unwrap()
    }

    #[test]
    fn scale_size_and_resized_dims_follow_timm_and_torchvision() {
        let p = Preprocess::imagenet(224);
        assert_eq!(p.scale_size(), 256);
        assert_eq!(p.resized_dims(500, 375), (341, 256)); // 256·500/375 = 341.33 → 341
        assert_eq!(p.resized_dims(375, 500), (256, 341));
        assert_eq!(p.resized_dims(128, 160), (256, 320));
        assert_eq!(p.resized_dims(300, 300), (256, 256));
        let p9 = Preprocess { crop_pct: 0.9, ..p };
        assert_eq!(p9.scale_size(), 248); // floor(248.89)
    }

    #[test]
    fn center_crop_offsets_round_half_to_even() {
        // margin 117 → 58.5 → 58; margin 119 → 59.5 → 60; margin 2 → 1.
        assert_eq!(center_window(341, 224)[0], Some(58));
        assert_eq!(center_window(343, 224)[0], Some(60));
        assert_eq!(center_window(226, 224)[0], Some(1));
        // Padding: 3 pixels into 6 → 1 before, 2 after.
        assert_eq!(
            center_window(3, 6),
            vec![None, Some(0), Some(1), Some(2), None, None]
        );
    }

    #[test]
    fn windowed_resize_equals_resize_then_crop() {
        let img = ramp(37, 23);
        for f in [Interpolation::Bicubic, Interpolation::Bilinear] {
            for (w, h, cw, ch) in [
                (20, 13, 11, 7),
                (80, 51, 60, 40),
                (37, 11, 30, 11),
                (9, 9, 12, 5),
            ] {
                let full = center_crop(&resize(&img, w, h, f), cw, ch);
                let xs = center_window(w, cw);
                let ys = center_window(h, ch);
                assert_eq!(resample_window(&img, (w, h), f, &xs, &ys), full);
            }
        }
    }

    #[test]
    fn same_size_resize_is_identity_and_constant_stays_constant() {
        let img = ramp(10, 7);
        assert_eq!(resize(&img, 10, 7, Interpolation::Bicubic), img);
        let flat = RgbImage::from_raw(13, 9, vec![200; 13 * 9 * 3]).unwrap();
        let r = resize(&flat, 31, 4, Interpolation::Bicubic);
        assert!(r.pixels().iter().all(|&v| v == 200));
    }

    #[test]
    fn bad_configs_and_bytes_are_errors() {
        let img = ramp(4, 4);
        for p in [
            Preprocess {
                size: 0,
                ..Preprocess::imagenet(224)
            },
            Preprocess {
                crop_pct: 0.0,
                ..Preprocess::imagenet(224)
            },
            Preprocess {
                crop_pct: f64::NAN,
                ..Preprocess::imagenet(224)
            },
            Preprocess {
                crop_pct: 1e-9,
                ..Preprocess::imagenet(224)
            },
        ] {
            assert!(
                matches!(p.resize_crop(&img), Err(Error::Shape { .. })),
                "{p:?}"
            );
        }
        for bytes in [
            &b""[..],
            b"GIF89a",
            b"\xFF\xD8\xFF\xE0garbage",
            b"\x89PNG\r\n\x1a\n",
        ] {
            let e = decode_bytes(bytes, Path::new("x")).unwrap_err();
            assert!(matches!(e, Error::Data { .. }), "{e}");
        }
    }

    #[test]
    fn for_model_presets() {
        let p = Preprocess::for_model("deit_small_patch16_224.fb_in1k").unwrap();
        assert_eq!(
            (p.size, p.crop_pct, p.interpolation),
            (224, 0.9, Interpolation::Bicubic)
        );
        let p = Preprocess::for_model("resnet50").unwrap();
        assert_eq!(
            (p.scale_size(), p.interpolation),
            (256, Interpolation::Bilinear)
        );
        assert_eq!(
            Preprocess::for_model("vit_base_patch16_384")
                .unwrap()
                .scale_size(),
            384
        );
        assert_eq!(
            Preprocess::for_model("vit_tiny_patch16_224")
                .unwrap()
                .normalize,
            Normalize::INCEPTION
        );
        assert_eq!(
            Preprocess::for_model("vit_small_patch14_reg4_dinov2.lvd142m")
                .unwrap()
                .size,
            518
        );
        assert_eq!(
            Preprocess::for_model("deit_tiny_distilled_patch16_224")
                .unwrap()
                .crop_pct,
            0.9
        );
        assert!(Preprocess::for_model("vit_small_patch8_224").is_err()); // DINO weights
        assert!(Preprocess::for_model("vit_base_patch16_clip_224").is_err());
        assert!(matches!(
            Preprocess::for_model("vit_base_patch16_224.mae"),
            Err(Error::UnknownModel { .. })
        ));
    }
}
