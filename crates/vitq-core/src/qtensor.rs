//! [`QuantizedTensor`]: packed codes, their parameters, shape and spec.
//!
//! ```
//! use burn::backend::Flex;
//! use burn::tensor::Tensor;
//! use vitq_core::{Granularity, QuantSpec, QuantizedTensor, Scheme};
//!
//! let device = Default::default();
//! let w = Tensor::<Flex, 2>::from_floats([[0.1, -0.4, 0.3], [1.2, 0.0, -0.7]], &device);
//! let spec = QuantSpec::new(4, Scheme::Symmetric, Granularity::PerChannel { axis: 0 })?;
//! let q = QuantizedTensor::from_tensor(&w, &spec)?;
//! assert_eq!(q.packed().len(), 3); // 6 codes × 4 bits
//! let back: Tensor<Flex, 2> = q.to_tensor(&device)?;
//! assert_eq!(back.dims(), [2, 3]);
//! # Ok::<(), vitq_core::Error>(())
//! ```

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::nf4::{self, Absmax};
use crate::pack;
use crate::spec::{Granularity, Layout, QuantSpec, Scheme};
use crate::uniform::{self, QuantParams, tensor_to_vec};

/// How the codes of a [`QuantizedTensor`] map back to real values.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Encoding {
    /// Uniform affine codes: one scale and zero point per slice of the granularity.
    Uniform {
        /// Scales, in the row-major order of the granularity's scale shape.
        scales: Vec<f32>,
        /// Zero points (all zero for symmetric).
        zero_points: Vec<i32>,
    },
    /// NF4 codebook indices with per-block absmax constants.
    Nf4 {
        /// The block constants.
        absmax: Absmax,
    },
}

/// A quantized tensor: bit-packed codes plus everything needed to dequantize them.
///
/// Codes are stored unsigned, as `q - qmin` ([`QuantSpec::qrange`]), packed per [`crate::pack`].
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedTensor {
    spec: QuantSpec,
    shape: Vec<usize>,
    packed: Vec<u8>,
    encoding: Encoding,
}

impl QuantizedTensor {
    /// Quantizes host data: calibrates with the spec's method on the data itself, then quantizes.
    pub fn quantize(data: &[f32], shape: &[usize], spec: &QuantSpec) -> Result<Self> {
        spec.validate()?;
        let layout = Layout::new(shape, spec.granularity)?;
        if data.len() != layout.numel {
            return Err(Error::ShapeMismatch {
                what: "data length vs. shape".into(),
                expected: shape.to_vec(),
                got: vec![data.len()],
            });
        }
        match (spec.scheme, spec.granularity) {
            (Scheme::Nf4 { double_quant }, Granularity::PerBlock { size }) => {
                let q = nf4::quantize(data, size, double_quant)?;
                Self::from_parts(
                    *spec,
                    shape.to_vec(),
                    pack::pack(&q.codes, spec.bits)?,
                    Encoding::Nf4 { absmax: q.absmax },
                )
            }
            _ => {
                let params = QuantParams::calibrate(data, shape, spec)?;
                let codes = uniform::quantize_ref(data, &params)?;
                Self::from_codes(&codes, &params)
            }
        }
    }

    /// Quantizes a burn tensor: calibrates on it, quantizes on its device, packs on the host.
    pub fn from_tensor<B: Backend, const D: usize>(
        x: &Tensor<B, D>,
        spec: &QuantSpec,
    ) -> Result<Self> {
        if !spec.is_uniform() {
            let (data, shape) = tensor_to_vec(x)?;
            return Self::quantize(&data, &shape, spec);
        }
        let params = QuantParams::calibrate_tensor(x, spec)?;
        Self::from_tensor_with_params(x.clone(), &params)
    }

    /// Quantizes a burn tensor with given (e.g. calibrated elsewhere) parameters.
    pub fn from_tensor_with_params<B: Backend, const D: usize>(
        x: Tensor<B, D>,
        params: &QuantParams,
    ) -> Result<Self> {
        let codes = uniform::quantize_tensor(x, params)?;
        let codes = codes
            .into_data()
            .convert::<i32>()
            .into_vec::<i32>()
            .map_err(|e| Error::Unsupported(format!("reading codes: {e:?}")))?;
        Self::from_codes(&codes, params)
    }

    /// Packs signed codes made with `params`.
    pub fn from_codes(codes: &[i32], params: &QuantParams) -> Result<Self> {
        params.validate()?;
        let (qmin, qmax) = params.spec.qrange();
        let mut unsigned = Vec::with_capacity(codes.len());
        for (i, &q) in codes.iter().enumerate() {
            if !(qmin..=qmax).contains(&q) {
                return Err(Error::InvalidSpec(format!(
                    "code {q} at index {i} is outside [{qmin}, {qmax}]"
                )));
            }
            unsigned.push((q - qmin) as u8);
        }
        Self::from_parts(
            params.spec,
            params.shape.clone(),
            pack::pack(&unsigned, params.spec.bits)?,
            Encoding::Uniform {
                scales: params.scales.clone(),
                zero_points: params.zero_points.clone(),
            },
        )
    }

    /// Assembles a tensor from stored parts, checking that they fit together (used when loading).
    pub fn from_parts(
        spec: QuantSpec,
        shape: Vec<usize>,
        packed: Vec<u8>,
        encoding: Encoding,
    ) -> Result<Self> {
        spec.validate()?;
        let layout = Layout::new(&shape, spec.granularity)?;
        let need = pack::packed_len(layout.numel, spec.bits);
        if packed.len() != need {
            return Err(Error::ShapeMismatch {
                what: format!("packed codes of a {shape:?} tensor at {} bits", spec.bits),
                expected: vec![need],
                got: vec![packed.len()],
            });
        }
        match (&encoding, spec.is_uniform()) {
            (
                Encoding::Uniform {
                    scales,
                    zero_points,
                },
                true,
            ) => QuantParams {
                spec,
                shape: shape.clone(),
                scales: scales.clone(),
                zero_points: zero_points.clone(),
            }
            .validate()?,
            (Encoding::Nf4 { absmax }, false) => absmax.validate(layout.num_slices())?,
            _ => {
                return Err(Error::InvalidSpec(format!(
                    "encoding does not match scheme {:?}",
                    spec.scheme
                )));
            }
        }
        Ok(Self {
            spec,
            shape,
            packed,
            encoding,
        })
    }

    /// The spec.
    pub fn spec(&self) -> &QuantSpec {
        &self.spec
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The packed code bytes.
    pub fn packed(&self) -> &[u8] {
        &self.packed
    }

    /// The encoding (scales and zero points, or NF4 constants).
    pub fn encoding(&self) -> &Encoding {
        &self.encoding
    }

    /// The uniform parameters, or `None` for NF4.
    pub fn params(&self) -> Option<QuantParams> {
        match &self.encoding {
            Encoding::Uniform {
                scales,
                zero_points,
            } => Some(QuantParams {
                spec: self.spec,
                shape: self.shape.clone(),
                scales: scales.clone(),
                zero_points: zero_points.clone(),
            }),
            Encoding::Nf4 { .. } => None,
        }
    }

    /// The signed integer codes (codebook indices for NF4), unpacked.
    pub fn codes(&self) -> Result<Vec<i32>> {
        let (qmin, _) = self.spec.qrange();
        Ok(pack::unpack(&self.packed, self.numel(), self.spec.bits)?
            .into_iter()
            .map(|u| i32::from(u) + qmin)
            .collect())
    }

    /// Dequantizes on the host.
    pub fn dequantize(&self) -> Result<Vec<f32>> {
        match &self.encoding {
            Encoding::Uniform { .. } => {
                let params = self
                    .params()
                    .ok_or_else(|| Error::InvalidSpec("no params".into()))?;
                uniform::dequantize_ref(&self.codes()?, &params)
            }
            Encoding::Nf4 { absmax } => {
                let block = match self.spec.granularity {
                    Granularity::PerBlock { size } => size,
                    g => return Err(Error::InvalidSpec(format!("NF4 with granularity {g}"))),
                };
                let codes = pack::unpack(&self.packed, self.numel(), self.spec.bits)?;
                nf4::dequantize(&codes, self.numel(), block, absmax)
            }
        }
    }

    /// Dequantizes to a float burn tensor on `device` (uniform codes are dequantized there).
    pub fn to_tensor<B: Backend, const D: usize>(
        &self,
        device: &B::Device,
    ) -> Result<Tensor<B, D>> {
        let dims: [usize; D] = self
            .shape
            .clone()
            .try_into()
            .map_err(|_| Error::ShapeMismatch {
                what: format!("tensor rank {D}"),
                expected: self.shape.clone(),
                got: vec![D],
            })?;
        match self.params() {
            Some(params) => {
                let codes: Tensor<B, D, Int> =
                    Tensor::from_data(TensorData::new(self.codes()?, dims), device);
                uniform::dequantize_tensor(codes, &params)
            }
            None => Ok(Tensor::from_data(
                TensorData::new(self.dequantize()?, dims),
                device,
            )),
        }
    }

    /// Bytes this tensor takes in memory and on disk: packed codes plus scales (4 bytes each), zero
    /// points (4 bytes each, asymmetric only) or NF4 block constants.
    pub fn size_in_bytes(&self) -> usize {
        self.packed.len()
            + match &self.encoding {
                Encoding::Uniform {
                    scales,
                    zero_points,
                } => {
                    4 * scales.len()
                        + if self.spec.scheme == Scheme::Asymmetric {
                            4 * zero_points.len()
                        } else {
                            0
                        }
                }
                Encoding::Nf4 { absmax } => absmax.size_in_bytes(),
            }
    }
}
