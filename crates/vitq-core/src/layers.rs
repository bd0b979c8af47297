//! The quantizable layers that vitq's models are built from: [`QLinear`], [`QConv2d`] and
//! [`QMatMul`] (the attention matmuls).
//!
//! Models (in `vitq-models`) are made of these layers so that quantization transforms the very same
//! model rather than a copy per precision. This version runs them in **float mode only**; the
//! calibrate and quantized modes (activation observers at every input, integer GEMM) arrive with the
//! post-training quantization pipeline. Each layer has a module path (its `name`), set by the model,
//! which is what [`crate::QuantConfig`] patterns match.
//!
//! ```
//! use burn::backend::Flex;
//! use burn::tensor::Tensor;
//! use vitq_core::layers::QLinear;
//!
//! let device = Default::default();
//! // PyTorch layout: weight [out, in].
//! let w = Tensor::<Flex, 2>::from_floats([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]], &device);
//! let b = Tensor::<Flex, 1>::from_floats([0.5, 0.0], &device);
//! let fc = QLinear::from_torch("fc", w, Some(b));
//! let y = fc.forward(Tensor::<Flex, 2>::from_floats([[1.0, 2.0, 3.0]], &device));
//! assert_eq!(y.into_data().to_vec::<f32>().unwrap(), vec![7.5, -1.0]);
//! ```

use burn::module::{Module, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn::tensor::module::{conv2d, linear};
use burn::tensor::ops::ConvOptions;

/// A linear layer `y = x · Wᵀ + b` (weight stored in burn's `[in, out]` layout for a transpose-free
/// matmul; constructed from PyTorch's `[out, in]` with [`QLinear::from_torch`]).
///
/// # Shapes
/// - input `[..., in]` → output `[..., out]`
#[derive(Module, Debug)]
pub struct QLinear<B: Backend> {
    /// `[in, out]`.
    pub weight: Param<Tensor<B, 2>>,
    /// `[out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// Module path, e.g. `blocks.0.mlp.fc1`.
    #[module(skip)]
    pub name: String,
}

impl<B: Backend> QLinear<B> {
    /// From a PyTorch-layout weight `[out, in]` and optional bias `[out]`.
    pub fn from_torch(
        name: impl Into<String>,
        weight: Tensor<B, 2>,
        bias: Option<Tensor<B, 1>>,
    ) -> Self {
        Self {
            weight: Param::from_tensor(weight.transpose()),
            bias: bias.map(Param::from_tensor),
            name: name.into(),
        }
    }

    /// Input features.
    pub fn d_in(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Output features.
    pub fn d_out(&self) -> usize {
        self.weight.dims()[1]
    }

    /// Applies the layer.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        linear(x, self.weight.val(), self.bias.as_ref().map(|b| b.val()))
    }
}

/// A 2-d convolution (PyTorch semantics and weight layout).
///
/// # Shapes
/// - weight `[out, in / groups, kh, kw]`
/// - input `[batch, in, h, w]` → output `[batch, out, h', w']`
#[derive(Module, Debug)]
pub struct QConv2d<B: Backend> {
    /// `[out, in / groups, kh, kw]`.
    pub weight: Param<Tensor<B, 4>>,
    /// `[out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// Stride `[sh, sw]`.
    #[module(skip)]
    pub stride: [usize; 2],
    /// Symmetric zero padding `[ph, pw]`.
    #[module(skip)]
    pub padding: [usize; 2],
    /// Dilation `[dh, dw]`.
    #[module(skip)]
    pub dilation: [usize; 2],
    /// Groups.
    #[module(skip)]
    pub groups: usize,
    /// Module path, e.g. `layer1.0.conv1`.
    #[module(skip)]
    pub name: String,
}

impl<B: Backend> QConv2d<B> {
    /// A convolution with the given weight, bias, stride and padding (dilation 1, one group).
    pub fn new(
        name: impl Into<String>,
        weight: Tensor<B, 4>,
        bias: Option<Tensor<B, 1>>,
        stride: usize,
        padding: usize,
    ) -> Self {
        Self {
            weight: Param::from_tensor(weight),
            bias: bias.map(Param::from_tensor),
            stride: [stride; 2],
            padding: [padding; 2],
            dilation: [1; 2],
            groups: 1,
            name: name.into(),
        }
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Applies the convolution.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        conv2d(
            x,
            self.weight.val(),
            self.bias.as_ref().map(|b| b.val()),
            ConvOptions::new(self.stride, self.padding, self.dilation, self.groups),
        )
    }
}

/// A batched matrix product of two activations (`Q·Kᵀ` and `softmax·V` in attention); the place
/// where activation quantizers for both operands sit once quantized modes land.
///
/// # Shapes
/// - `[..., m, k]` × `[..., k, n]` → `[..., m, n]`
#[derive(Module, Clone, Debug)]
pub struct QMatMul {
    /// Module path, e.g. `blocks.0.attn.matmul_qk`.
    #[module(skip)]
    pub name: String,
}

impl QMatMul {
    /// A named matmul.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }

    /// `a · b`.
    pub fn forward<B: Backend, const D: usize>(
        &self,
        a: Tensor<B, D>,
        b: Tensor<B, D>,
    ) -> Tensor<B, D> {
        a.matmul(b)
    }
}
