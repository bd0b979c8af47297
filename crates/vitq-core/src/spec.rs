//! What to quantize and how: bit-width, scheme, granularity, calibration and rounding.
//!
//! ```
//! use vitq_core::{BitWidth, Granularity, QuantSpec, Scheme};
//!
//! let spec = QuantSpec::new(4, Scheme::Symmetric, Granularity::PerChannel { axis: 0 })?;
//! assert_eq!(spec.bits.get(), 4);
//! assert_eq!(spec.qrange(), (-8, 7));
//! assert!(BitWidth::new(9).is_err());
//! # Ok::<(), vitq_core::Error>(())
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A bit-width in `2..=8`, validated on construction (also when deserialized).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct BitWidth(u8);

impl BitWidth {
    /// Smallest supported width.
    pub const MIN: u32 = 2;
    /// Largest supported width.
    pub const MAX: u32 = 8;

    /// Validates `bits`; anything outside `2..=8` is [`Error::InvalidBits`].
    pub fn new(bits: u32) -> Result<Self> {
        if (Self::MIN..=Self::MAX).contains(&bits) {
            Ok(Self(bits as u8))
        } else {
            Err(Error::InvalidBits { bits })
        }
    }

    /// The width as a number.
    pub fn get(self) -> u32 {
        u32::from(self.0)
    }
}

impl TryFrom<u32> for BitWidth {
    type Error = Error;
    fn try_from(bits: u32) -> Result<Self> {
        Self::new(bits)
    }
}

impl From<BitWidth> for u32 {
    fn from(b: BitWidth) -> u32 {
        b.get()
    }
}

impl fmt::Display for BitWidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How real values map to integer codes.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum Scheme {
    /// `q = clamp(round(x / s), -2^(b-1), 2^(b-1) - 1)`, `s = max|x| / (2^(b-1) - 1)`, no zero point.
    #[default]
    Symmetric,
    /// `q = clamp(round(x / s) + z, 0, 2^b - 1)` over the range `[min(lo, 0), max(hi, 0)]`,
    /// `s = (hi - lo) / (2^b - 1)`, `z = -round(lo / s)` (PyTorch's affine scheme).
    Asymmetric,
    /// 4-bit NormalFloat (QLoRA): a fixed 16-value codebook scaled by each block's absmax.
    /// Needs `bits = 4` and [`Granularity::PerBlock`].
    Nf4 {
        /// Quantize the per-block absmax constants again (8-bit, blocks of 256).
        double_quant: bool,
    },
}

/// Which elements share one scale (and zero point).
///
/// Every variant's doc gives the input shape → scale shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum Granularity {
    /// One scale for the whole tensor: `[d0, .., dn]` → `[]` (stored as `[1]`).
    #[default]
    PerTensor,
    /// One scale per index along `axis`: `[d0, .., dn]` → `[d_axis]`.
    /// In a [`crate::QuantConfig`], weights use PyTorch's layout, so axis 0 is the output channel.
    PerChannel {
        /// The channel axis.
        axis: usize,
    },
    /// One scale per run of `size` consecutive indices along `axis`, for every position of the other
    /// axes: `[d0, .., d_axis, .., dn]` → `[d0, .., d_axis / size, .., dn]`. `size` must divide `d_axis`.
    PerGroup {
        /// The axis along which groups run.
        axis: usize,
        /// Elements per group.
        size: usize,
    },
    /// One scale per block of `size` consecutive elements of the flattened (row-major) tensor, the last
    /// block possibly shorter (QLoRA's and bitsandbytes' blockwise layout): `[d0, .., dn]` →
    /// `[ceil(d0 · .. · dn / size)]`.
    PerBlock {
        /// Elements per block.
        size: usize,
    },
}

impl fmt::Display for Granularity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Granularity::PerTensor => write!(f, "per-tensor"),
            Granularity::PerChannel { axis } => write!(f, "per-channel(axis {axis})"),
            Granularity::PerGroup { axis, size } => {
                write!(f, "per-group(axis {axis}, size {size})")
            }
            Granularity::PerBlock { size } => write!(f, "per-block(size {size})"),
        }
    }
}

/// How the clipping range of a tensor is chosen from the data it sees (see [`crate::observer`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum CalibrationMethod {
    /// The running minimum and maximum.
    #[default]
    MinMax,
    /// Per-batch minimum and maximum, averaged with an exponential moving average
    /// (`r ← (1 - momentum)·r + momentum·r_batch`, PyTorch's `MovingAverageMinMaxObserver`).
    MovingAverageMinMax {
        /// Weight of the newest batch, in `(0, 1]`; PyTorch's default is 0.01.
        momentum: f32,
    },
    /// Clip at a percentile of the magnitudes (symmetric) or at the lower and upper percentiles
    /// (asymmetric), from a streaming histogram.
    Percentile {
        /// In `(50, 100]`, e.g. 99.99.
        percentile: f64,
    },
    /// The clipping range that minimises the expected quantization MSE on the streaming histogram (OMSE,
    /// Choukroun et al. 2019).
    Mse,
    /// The clipping range that minimises the KL divergence between the histogram and its quantized
    /// version (Migacz, "8-bit Inference with TensorRT", 2017; ONNX Runtime's entropy calibrator).
    Kl,
}

/// How `x / s` is rounded to an integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Rounding {
    /// Round to nearest, ties to even (IEEE 754 default; what PyTorch's `quantize_per_tensor` and burn's
    /// `round` do).
    #[default]
    NearestEven,
    /// Round to nearest, ties away from zero (C's `round`).
    NearestAway,
}

impl Rounding {
    /// Rounds one value.
    #[inline]
    pub fn apply(self, v: f32) -> f32 {
        match self {
            Rounding::NearestEven => v.round_ties_even(),
            Rounding::NearestAway => v.round(),
        }
    }
}

/// A complete description of how one tensor is quantized.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantSpec {
    /// Bits per code.
    pub bits: BitWidth,
    /// Symmetric, asymmetric or NF4.
    #[serde(default)]
    pub scheme: Scheme,
    /// Which elements share a scale.
    #[serde(default)]
    pub granularity: Granularity,
    /// How the clipping range is found.
    #[serde(default)]
    pub calibration: CalibrationMethod,
    /// How values are rounded.
    #[serde(default)]
    pub rounding: Rounding,
}

impl QuantSpec {
    /// A spec with min-max calibration and round-to-nearest-even, validated.
    pub fn new(bits: u32, scheme: Scheme, granularity: Granularity) -> Result<Self> {
        let spec = Self {
            bits: BitWidth::new(bits)?,
            scheme,
            granularity,
            calibration: CalibrationMethod::MinMax,
            rounding: Rounding::NearestEven,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// QLoRA's NF4: 4 bits, blocks of 64, optional double quantization of the block constants.
    pub fn nf4(double_quant: bool) -> Self {
        Self {
            bits: BitWidth(4),
            scheme: Scheme::Nf4 { double_quant },
            granularity: Granularity::PerBlock { size: 64 },
            calibration: CalibrationMethod::MinMax,
            rounding: Rounding::NearestEven,
        }
    }

    /// Returns a copy with another calibration method.
    pub fn with_calibration(mut self, calibration: CalibrationMethod) -> Self {
        self.calibration = calibration;
        self
    }

    /// Returns a copy with another rounding mode.
    pub fn with_rounding(mut self, rounding: Rounding) -> Self {
        self.rounding = rounding;
        self
    }

    /// Checks the parts against each other (independent of any tensor shape).
    pub fn validate(&self) -> Result<()> {
        match self.granularity {
            Granularity::PerGroup { size: 0, .. } | Granularity::PerBlock { size: 0 } => {
                return Err(Error::InvalidSpec(
                    "group and block sizes must be at least 1".into(),
                ));
            }
            _ => {}
        }
        if let Scheme::Nf4 { .. } = self.scheme {
            if self.bits.get() != 4 {
                return Err(Error::InvalidSpec(format!(
                    "NF4 needs 4 bits, not {}",
                    self.bits
                )));
            }
            if !matches!(self.granularity, Granularity::PerBlock { .. }) {
                return Err(Error::InvalidSpec(format!(
                    "NF4 needs per-block granularity (QLoRA's blocks of 64), not {}",
                    self.granularity
                )));
            }
        }
        match self.calibration {
            CalibrationMethod::MovingAverageMinMax { momentum }
                if !(momentum > 0.0 && momentum <= 1.0) =>
            {
                Err(Error::InvalidSpec(format!(
                    "moving-average momentum {momentum} is not in (0, 1]"
                )))
            }
            CalibrationMethod::Percentile { percentile }
                if !(percentile > 50.0 && percentile <= 100.0) =>
            {
                Err(Error::InvalidSpec(format!(
                    "percentile {percentile} is not in (50, 100]"
                )))
            }
            _ => Ok(()),
        }
    }

    /// The smallest and largest integer code: `(-2^(b-1), 2^(b-1) - 1)` for symmetric,
    /// `(0, 2^b - 1)` for asymmetric and NF4 (codebook indices).
    pub fn qrange(&self) -> (i32, i32) {
        let b = self.bits.get();
        match self.scheme {
            Scheme::Symmetric => (-(1 << (b - 1)), (1 << (b - 1)) - 1),
            Scheme::Asymmetric | Scheme::Nf4 { .. } => (0, (1 << b) - 1),
        }
    }

    /// `true` for the uniform (affine) schemes, which have scales and zero points.
    pub fn is_uniform(&self) -> bool {
        matches!(self.scheme, Scheme::Symmetric | Scheme::Asymmetric)
    }
}

/// A granularity applied to a concrete shape: the tensor seen as `[outer, groups, group_len, inner]`,
/// with one scale per `(outer, group, inner)` triple for per-group, one per `group` otherwise.
///
/// This is the single piece of index arithmetic shared by the reference quantizer, the burn-tensor
/// quantizer and the observers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The tensor's shape.
    pub shape: Vec<usize>,
    /// Product of the dimensions before the grouped axis (1 unless per-group).
    pub outer: usize,
    /// Number of scale groups along the axis.
    pub groups: usize,
    /// Elements per group along the axis.
    pub group_len: usize,
    /// Product of the dimensions after the axis (1 for per-tensor and per-block).
    pub inner: usize,
    /// Whether scales vary over `outer` and `inner` too (per-group).
    pub per_position: bool,
    /// Number of elements.
    pub numel: usize,
    /// Shape of the scale tensor (see [`Granularity`]).
    pub scale_shape: Vec<usize>,
}

impl Layout {
    /// Applies `granularity` to `shape`; errors if the tensor is empty, the axis is out of range or
    /// a group size does not divide its axis.
    pub fn new(shape: &[usize], granularity: Granularity) -> Result<Self> {
        let numel: usize = shape.iter().product();
        if numel == 0 {
            return Err(Error::Empty {
                what: "tensor".into(),
                shape: shape.to_vec(),
            });
        }
        let bad = |reason: String| Error::Granularity {
            granularity: granularity.to_string(),
            shape: shape.to_vec(),
            reason,
        };
        let check_axis = |axis: usize| {
            if axis >= shape.len() {
                Err(bad(format!(
                    "axis {axis} is out of range for a {}-d tensor",
                    shape.len()
                )))
            } else {
                Ok(())
            }
        };
        let (outer, groups, group_len, inner, per_position, scale_shape) = match granularity {
            Granularity::PerTensor => (1, 1, numel, 1, false, vec![1]),
            Granularity::PerChannel { axis } => {
                check_axis(axis)?;
                let c = shape[axis];
                let outer = shape[..axis].iter().product();
                let inner = shape[axis + 1..].iter().product();
                // Seen as [1, c, outer*inner] only if outer == 1; keep it general through `channel_of`.
                (outer, c, 1, inner, false, vec![c])
            }
            Granularity::PerGroup { axis, size } => {
                check_axis(axis)?;
                if size == 0 || !shape[axis].is_multiple_of(size) {
                    return Err(bad(format!(
                        "group size {size} does not divide dimension {} of axis {axis}",
                        shape[axis]
                    )));
                }
                let outer = shape[..axis].iter().product();
                let inner = shape[axis + 1..].iter().product();
                let mut scale_shape = shape.to_vec();
                scale_shape[axis] = shape[axis] / size;
                (outer, shape[axis] / size, size, inner, true, scale_shape)
            }
            Granularity::PerBlock { size } => {
                if size == 0 {
                    return Err(bad("block size 0".into()));
                }
                let blocks = numel.div_ceil(size);
                (1, blocks, size, 1, false, vec![blocks])
            }
        };
        Ok(Self {
            shape: shape.to_vec(),
            outer,
            groups,
            group_len,
            inner,
            per_position,
            numel,
            scale_shape,
        })
    }

    /// Number of scales.
    pub fn num_slices(&self) -> usize {
        self.scale_shape.iter().product()
    }

    /// The scale index of the element at flat (row-major) position `i`.
    #[inline]
    pub fn slice_of(&self, i: usize) -> usize {
        let inner_idx = i % self.inner;
        let along = (i / self.inner) % (self.groups * self.group_len);
        let g = along / self.group_len;
        if self.per_position {
            let o = i / (self.inner * self.groups * self.group_len);
            (o * self.groups + g) * self.inner + inner_idx
        } else {
            g
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_shapes_follow_the_granularity() {
        let s = [4, 6, 3];
        assert_eq!(
            Layout::new(&s, Granularity::PerTensor).unwrap().scale_shape,
            vec![1]
        );
        assert_eq!(
            Layout::new(&s, Granularity::PerChannel { axis: 1 })
                .unwrap()
                .scale_shape,
            vec![6]
        );
        assert_eq!(
            Layout::new(&s, Granularity::PerGroup { axis: 1, size: 3 })
                .unwrap()
                .scale_shape,
            vec![4, 2, 3]
        );
        assert_eq!(
            Layout::new(&s, Granularity::PerBlock { size: 64 })
                .unwrap()
                .scale_shape,
            vec![2]
        );
    }

    #[test]
    fn slice_of_matches_explicit_indexing() {
        let (a, b, c) = (3, 8, 5);
        let per_ch = Layout::new(&[a, b, c], Granularity::PerChannel { axis: 1 }).unwrap();
        let per_gr = Layout::new(&[a, b, c], Granularity::PerGroup { axis: 1, size: 4 }).unwrap();
        for i in 0..a {
            for j in 0..b {
                for k in 0..c {
                    let flat = (i * b + j) * c + k;
                    assert_eq!(per_ch.slice_of(flat), j);
                    assert_eq!(per_gr.slice_of(flat), (i * 2 + j / 4) * c + k);
                }
            }
        }
    }

    #[test]
    fn bad_shapes_are_typed_errors() {
        assert!(matches!(
            Layout::new(&[4, 6], Granularity::PerGroup { axis: 1, size: 4 }),
            Err(Error::Granularity { .. })
        ));
        assert!(matches!(
            Layout::new(&[4, 6], Granularity::PerChannel { axis: 2 }),
            Err(Error::Granularity { .. })
        ));
        assert!(matches!(
            Layout::new(&[0, 6], Granularity::PerTensor),
            Err(Error::Empty { .. })
        ));
    }

    #[test]
    fn nf4_spec_is_validated() {
        let mut spec = QuantSpec::nf4(true);
        assert!(spec.validate().is_ok());
        spec.bits = BitWidth::new(8).unwrap();
        assert!(matches!(spec.validate(), Err(Error::InvalidSpec(_))));
        assert!(matches!(
            BitWidth::new(1),
            Err(Error::InvalidBits { bits: 1 })
        ));
        assert!(serde_json::from_str::<BitWidth>("9").is_err());
    }
}
