//! Uniform (affine) quantization: parameters, a reference quantizer on slices, and the same
//! quantizer on burn tensors (any backend, any device).
//!
//! The formulas (`b` bits, scale `s`, zero point `z`, rounding `round` per [`Rounding`]):
//!
//! | scheme | range used | `s` | `z` | code |
//! |---|---|---|---|---|
//! | symmetric | `a = max(|lo|, |hi|)` | `a / (2^(b-1) - 1)` | 0 | `clamp(round(x/s), -2^(b-1), 2^(b-1)-1)` |
//! | asymmetric | `[min(lo,0), max(hi,0)]` | `(hi - lo) / (2^b - 1)` | `clamp(-round(lo/s), 0, 2^b-1)` | `clamp(round(x/s) + z, 0, 2^b-1)` |
//!
//! Dequantization is `(q - z) · s`. A zero range (an all-zero slice) gives `s = f32::EPSILON`, as in
//! PyTorch's observers, so that every code is `z` and zeros reproduce exactly. These are exactly
//! PyTorch's `torch.ao.quantization` formulas with `quant_min = -(2^(b-1) - 1)` for the symmetric
//! scale; `tests/torch_peer.rs` checks codes and scales against PyTorch.
//!
//! ```
//! use burn::backend::Flex;
//! use burn::tensor::Tensor;
//! use vitq_core::{uniform, Granularity, QuantSpec, Scheme};
//!
//! let device = Default::default();
//! let x = Tensor::<Flex, 2>::from_floats([[0.5, -1.0], [2.0, 0.25]], &device);
//! let spec = QuantSpec::new(8, Scheme::Symmetric, Granularity::PerChannel { axis: 0 })?;
//! let params = uniform::QuantParams::calibrate_tensor(&x, &spec)?;
//! let codes = uniform::quantize_tensor(x.clone(), &params)?;
//! let back = uniform::dequantize_tensor(codes, &params)?;
//! assert!((back - x).abs().max().into_scalar() <= 2.0 / 127.0 / 2.0 + 1e-6);
//! # Ok::<(), vitq_core::Error>(())
//! ```

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::observer::{Observer, Range};
use crate::spec::{Layout, QuantSpec, Rounding, Scheme};

/// Scales and zero points of a uniformly quantized tensor, with the spec and layout they belong to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantParams {
    /// The spec (must be symmetric or asymmetric).
    pub spec: QuantSpec,
    /// Shape of the quantized tensor.
    pub shape: Vec<usize>,
    /// One scale per slice, in the row-major order of the granularity's scale shape.
    pub scales: Vec<f32>,
    /// One zero point per slice (all zero for symmetric).
    pub zero_points: Vec<i32>,
}

impl QuantParams {
    /// Parameters from one clipping range per slice (as produced by an [`Observer`]).
    pub fn from_ranges(spec: &QuantSpec, shape: &[usize], ranges: &[Range]) -> Result<Self> {
        spec.validate()?;
        if !spec.is_uniform() {
            return Err(Error::InvalidSpec(format!(
                "{:?} is not a uniform scheme; use vitq_core::nf4",
                spec.scheme
            )));
        }
        let layout = Layout::new(shape, spec.granularity)?;
        if ranges.len() != layout.num_slices() {
            return Err(Error::ShapeMismatch {
                what: "clipping ranges (one per scale)".into(),
                expected: layout.scale_shape.clone(),
                got: vec![ranges.len()],
            });
        }
        let mut scales = Vec::with_capacity(ranges.len());
        let mut zero_points = Vec::with_capacity(ranges.len());
        for r in ranges {
            if !r.min.is_finite() || !r.max.is_finite() {
                return Err(Error::InvalidSpec(format!(
                    "non-finite clipping range {r:?}"
                )));
            }
            let (s, z) = scale_and_zero_point(spec, *r);
            scales.push(s);
            zero_points.push(z);
        }
        Ok(Self {
            spec: *spec,
            shape: shape.to_vec(),
            scales,
            zero_points,
        })
    }

    /// Calibrates on `data` itself with the spec's calibration method (the usual path for weights).
    pub fn calibrate(data: &[f32], shape: &[usize], spec: &QuantSpec) -> Result<Self> {
        let mut obs = Observer::new(*spec)?;
        obs.observe(data, shape)?;
        Self::from_ranges(spec, shape, &obs.ranges()?)
    }

    /// [`QuantParams::calibrate`] on a burn tensor (read back to the host once).
    pub fn calibrate_tensor<B: Backend, const D: usize>(
        x: &Tensor<B, D>,
        spec: &QuantSpec,
    ) -> Result<Self> {
        let (data, shape) = tensor_to_vec(x)?;
        Self::calibrate(&data, &shape, spec)
    }

    /// The layout (granularity applied to the shape).
    pub fn layout(&self) -> Result<Layout> {
        Layout::new(&self.shape, self.spec.granularity)
    }

    /// Checks that the number of scales and zero points fits the shape and granularity.
    pub fn validate(&self) -> Result<()> {
        self.spec.validate()?;
        let layout = self.layout()?;
        for (what, n) in [
            ("scales", self.scales.len()),
            ("zero points", self.zero_points.len()),
        ] {
            if n != layout.num_slices() {
                return Err(Error::ShapeMismatch {
                    what: what.into(),
                    expected: layout.scale_shape.clone(),
                    got: vec![n],
                });
            }
        }
        if let Some(s) = self.scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(Error::InvalidSpec(format!(
                "scale {s} is not a positive finite number"
            )));
        }
        let (qmin, qmax) = self.spec.qrange();
        if let Some(z) = self
            .zero_points
            .iter()
            .find(|z| !(qmin..=qmax).contains(*z))
        {
            return Err(Error::InvalidSpec(format!(
                "zero point {z} is outside [{qmin}, {qmax}]"
            )));
        }
        Ok(())
    }
}

/// The scale and zero point of one slice whose clipping range is `r` (the table in the module docs).
/// `spec` must be uniform; NF4 specs are treated as asymmetric.
pub fn scale_and_zero_point(spec: &QuantSpec, r: Range) -> (f32, i32) {
    let (qmin, qmax) = spec.qrange();
    match spec.scheme {
        Scheme::Symmetric => {
            let amax = r.min.abs().max(r.max.abs());
            ((amax / qmax as f32).max(f32::EPSILON), 0)
        }
        _ => {
            let lo = r.min.min(0.0);
            let hi = r.max.max(0.0);
            let s = ((hi - lo) / (qmax - qmin) as f32).max(f32::EPSILON);
            let z = qmin - (lo / s).round_ties_even() as i32;
            (s, z.clamp(qmin, qmax))
        }
    }
}

/// [`scale_and_zero_point`] for a range seen at run time (dynamic quantization), computed as
/// PyTorch's dynamic quantization does (fbgemm's `ChooseQuantizationParams`): in f64, the scale
/// rounded to f32 once. (torch.ao's static observers compute in f32, like [`scale_and_zero_point`]; the
/// two differ by at most one f32 rounding of the scale.)
pub fn dynamic_scale_and_zero_point(spec: &QuantSpec, r: Range) -> (f32, i32) {
    let (qmin, qmax) = spec.qrange();
    let eps = f64::from(f32::EPSILON);
    match spec.scheme {
        Scheme::Symmetric => {
            let amax = f64::from(r.min.abs().max(r.max.abs()));
            ((amax / f64::from(qmax)).max(eps) as f32, 0)
        }
        _ => {
            let lo = f64::from(r.min.min(0.0));
            let hi = f64::from(r.max.max(0.0));
            let s = ((hi - lo) / f64::from(qmax - qmin)).max(eps);
            let z = qmin - (lo / s).round_ties_even() as i32;
            (s as f32, z.clamp(qmin, qmax))
        }
    }
}

/// Quantizes then dequantizes one value with scale `s` and zero point `z` (the reference formula).
#[inline]
pub fn fake_quant(x: f32, s: f32, z: i32, spec: &QuantSpec) -> f32 {
    (quantize_one(x, s, z, spec) - z) as f32 * s
}

/// The code of one value: `clamp(round(x / s) + z, qmin, qmax)`.
#[inline]
pub fn quantize_one(x: f32, s: f32, z: i32, spec: &QuantSpec) -> i32 {
    let (qmin, qmax) = spec.qrange();
    (spec.rounding.apply(x / s) as i64 + i64::from(z)).clamp(i64::from(qmin), i64::from(qmax))
        as i32
}

/// Reference quantizer: one element at a time, in plain Rust. The oracle for [`quantize_tensor`].
pub fn quantize_ref(data: &[f32], params: &QuantParams) -> Result<Vec<i32>> {
    let layout = params.layout()?;
    check_len(data.len(), &layout)?;
    check_finite(data, &layout.shape)?;
    Ok(data
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let k = layout.slice_of(i);
            quantize_one(x, params.scales[k], params.zero_points[k], &params.spec)
        })
        .collect())
}

/// Reference dequantizer: `(q - z) · s` per element.
pub fn dequantize_ref(codes: &[i32], params: &QuantParams) -> Result<Vec<f32>> {
    let layout = params.layout()?;
    check_len(codes.len(), &layout)?;
    Ok(codes
        .iter()
        .enumerate()
        .map(|(i, &q)| {
            let k = layout.slice_of(i);
            (q - params.zero_points[k]) as f32 * params.scales[k]
        })
        .collect())
}

/// Quantizes a burn tensor on its own device; returns the integer codes (same shape).
///
/// Non-finite inputs are rejected by [`QuantParams::calibrate`]; this function trusts `x` to be finite
/// (NaN has no code) so that it stays on the device.
pub fn quantize_tensor<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    params: &QuantParams,
) -> Result<Tensor<B, D, Int>> {
    let layout = params.layout()?;
    check_tensor_shape(&x.dims(), &layout)?;
    let device = x.device();
    let dims = x.dims();
    let (qmin, qmax) = params.spec.qrange();
    let view = view4(x, &layout);
    let scales = param_tensor::<B>(&params.scales, &layout, &device);
    let t = view.div(scales);
    let t = match params.spec.rounding {
        Rounding::NearestEven => t.round(),
        Rounding::NearestAway => t.clone().sign() * (t.abs() + 0.5).floor(),
    };
    let t = if params.spec.scheme == Scheme::Asymmetric {
        let z: Vec<f32> = params.zero_points.iter().map(|&z| z as f32).collect();
        t + param_tensor::<B>(&z, &layout, &device)
    } else {
        t
    };
    let codes = t.clamp(qmin as f32, qmax as f32).int();
    Ok(unview4(codes, &layout, dims))
}

/// Dequantizes integer codes made by [`quantize_tensor`]: `(q - z) · s`, on the codes' device.
pub fn dequantize_tensor<B: Backend, const D: usize>(
    codes: Tensor<B, D, Int>,
    params: &QuantParams,
) -> Result<Tensor<B, D>> {
    let layout = params.layout()?;
    check_tensor_shape(&codes.dims(), &layout)?;
    let device = codes.device();
    let dims = codes.dims();
    let view = view4(codes.float(), &layout);
    let view = if params.spec.scheme == Scheme::Asymmetric {
        let z: Vec<f32> = params.zero_points.iter().map(|&z| z as f32).collect();
        view - param_tensor::<B>(&z, &layout, &device)
    } else {
        view
    };
    let out = view * param_tensor::<B>(&params.scales, &layout, &device);
    Ok(unview4(out, &layout, dims))
}

/// Reads a float tensor back to the host as `(data, shape)`, checking it is non-empty and finite.
pub fn tensor_to_vec<B: Backend, const D: usize>(
    x: &Tensor<B, D>,
) -> Result<(Vec<f32>, Vec<usize>)> {
    let shape = x.dims().to_vec();
    let data = x
        .to_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| Error::Unsupported(format!("reading tensor data: {e:?}")))?;
    check_values(&data, &shape)?;
    Ok((data, shape))
}

/// The checks of [`tensor_to_vec`]: `data` is non-empty and finite.
pub(crate) fn check_values(data: &[f32], shape: &[usize]) -> Result<()> {
    if data.is_empty() {
        return Err(Error::Empty {
            what: "tensor".into(),
            shape: shape.to_vec(),
        });
    }
    check_finite(data, shape)
}

/// Errors with [`Error::NonFinite`] at the first NaN or infinity.
pub fn check_finite(data: &[f32], shape: &[usize]) -> Result<()> {
    // Branch-free per chunk (so it vectorizes) and in parallel; the position only on failure.
    let finite = |c: &[f32]| c.iter().fold(true, |ok, v| ok & v.is_finite());
    if data.par_chunks(1 << 14).all(finite) {
        return Ok(());
    }
    match data.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(Error::NonFinite {
            value: data[index],
            index,
            shape: shape.to_vec(),
        }),
        None => Ok(()),
    }
}

fn check_len(n: usize, layout: &Layout) -> Result<()> {
    if n != layout.numel {
        return Err(Error::ShapeMismatch {
            what: "data length vs. shape".into(),
            expected: layout.shape.clone(),
            got: vec![n],
        });
    }
    Ok(())
}

fn check_tensor_shape(dims: &[usize], layout: &Layout) -> Result<()> {
    if dims != layout.shape.as_slice() {
        return Err(Error::ShapeMismatch {
            what: "tensor vs. quantization parameters".into(),
            expected: layout.shape.clone(),
            got: dims.to_vec(),
        });
    }
    Ok(())
}

/// The 4-d view `[outer, groups, group_len, inner]` of the layout, padded with zeros for a partial
/// last block.
fn view4<B: Backend, const D: usize, K>(x: Tensor<B, D, K>, layout: &Layout) -> Tensor<B, 4, K>
where
    K: burn::tensor::BasicOps<B>,
{
    let dims = [layout.outer, layout.groups, layout.group_len, layout.inner];
    let padded: usize = dims.iter().product();
    let flat: Tensor<B, 1, K> = x.reshape([layout.numel]);
    let flat = if padded > layout.numel {
        let pad = Tensor::<B, 1, K>::zeros([padded - layout.numel], &flat.device());
        Tensor::cat(vec![flat, pad], 0)
    } else {
        flat
    };
    flat.reshape(dims)
}

fn unview4<B: Backend, const D: usize, K>(
    x: Tensor<B, 4, K>,
    layout: &Layout,
    dims: [usize; D],
) -> Tensor<B, D, K>
where
    K: burn::tensor::BasicOps<B>,
{
    let padded = x.shape().num_elements();
    let flat: Tensor<B, 1, K> = x.reshape([padded]);
    let flat = if padded > layout.numel {
        flat.slice(0..layout.numel)
    } else {
        flat
    };
    flat.reshape(dims)
}

/// Scales or zero points as a tensor that broadcasts against [`view4`].
fn param_tensor<B: Backend>(values: &[f32], layout: &Layout, device: &B::Device) -> Tensor<B, 4> {
    let shape = if layout.per_position {
        [layout.outer, layout.groups, 1, layout.inner]
    } else {
        [1, layout.groups, 1, 1]
    };
    Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
}
