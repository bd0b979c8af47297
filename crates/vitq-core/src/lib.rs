//! # vitq-core
//!
//! Quantization primitives for vision models on [burn](https://burn.dev): the math and data that
//! every other vitq crate builds on.
//!
//! | module | what it holds |
//! |---|---|
//! | [`spec`] | [`BitWidth`] (2..=8), [`Scheme`], [`Granularity`], [`CalibrationMethod`], [`Rounding`], [`QuantSpec`] |
//! | [`uniform`] | scales and zero points, the reference quantizer and the burn-tensor quantizer |
//! | [`observer`] | streaming calibration: min-max, moving average, percentile, MSE (OMSE), KL (entropy) |
//! | [`nf4`] | QLoRA's 4-bit NormalFloat with double quantization |
//! | [`pack`] | lossless bit packing of 2–8-bit codes |
//! | [`qtensor`] | [`QuantizedTensor`]: packed codes + parameters + shape + spec |
//! | [`config`] | [`QuantConfig`]: serde config with presets and per-layer overrides |
//! | [`kernels`] | int8 GEMM (i8 × i8 → i32: reference, AVX-512 VNNI, portable) and the integer linear / conv building blocks |
//! | [`layers`] | the quantizable layers models are built from: `QLinear`, `QConv2d`, `QMatMul`, in float, calibrate and quantized (integer) modes |
//! | [`ptq`] | [`ptq::quantize`]: post-training quantization of a whole model |
//! | [`search`] | similarity-aware scale search of a linear layer (Liu et al. 2021) |
//! | [`ranking`] | ranking-aware search of the attention matmuls' operand scales (Liu et al. 2021) |
//! | [`nuclear`] | nuclear norms of layer outputs (one-sided Jacobi SVD) and the output perturbation of a layer at given bits, for Liu et al.'s mixed precision |
//! | [`io`] | one-file safetensors save / load of quantized tensors and their config |
//! | [`checkpoint`] | float tensors from any safetensors checkpoint (F32 / F16 / BF16 / F64) |
//! | [`metrics`] | MSE, SQNR and summary statistics |
//! | [`synth`] | deterministic Gaussian / Laplacian data |
//! | [`twin`] | PTQ4ViT's twin-uniform quantizers for post-softmax and post-GELU activations |
//! | [`hessian`] | per-layer inputs and output gradients of the float model (autodiff probes) |
//! | [`ptq4vit`] | PTQ4ViT: twin-uniform activations and Hessian-guided scale search |
//!
//! ```
//! use burn::backend::Flex;
//! use burn::tensor::Tensor;
//! use vitq_core::{metrics, QuantConfig, QuantizedTensor};
//!
//! let device = Default::default();
//! let mut rng = vitq_core::synth::Rng::new(0);
//! let w = Tensor::<Flex, 2>::from_data(
//!     burn::tensor::TensorData::new(rng.gaussian_vec(64 * 32), [64, 32]),
//!     &device,
//! );
//! let spec = QuantConfig::preset("w8a8")?.weights.unwrap();
//! let q = QuantizedTensor::from_tensor(&w, &spec)?;
//! let back: Tensor<Flex, 2> = q.to_tensor(&device)?;
//! let (a, _) = vitq_core::uniform::tensor_to_vec(&w)?;
//! let (b, _) = vitq_core::uniform::tensor_to_vec(&back)?;
//! assert!(metrics::sqnr_db(&a, &b) > 35.0);
//! assert!(q.size_in_bytes() < 64 * 32 * 4 / 3);
//! # Ok::<(), vitq_core::Error>(())
//! ```
//!
//! # Crate features
//! - `cuda`: burn's CUDA backend (cubecl-cuda; loads the driver at run time, builds without a toolkit).
//! - `wgpu`: burn's wgpu backend (Vulkan, Metal, DX12).
//!
//! Without features the crate uses burn's pure-Rust `Flex` CPU backend, and every function here is
//! generic over `B: Backend`.

#![deny(missing_docs)]

pub mod checkpoint;
pub mod config;
pub mod error;
pub mod hessian;
pub mod host;
pub mod io;
pub mod kernels;
pub mod layers;
pub mod metrics;
pub mod nf4;
pub mod nuclear;
pub mod observer;
pub mod pack;
pub mod ptq;
pub mod ptq4vit;
pub mod qtensor;
pub mod ranking;
pub mod search;
pub mod spec;
pub mod synth;
pub mod twin;
pub mod uniform;
pub mod weight_only;

pub use config::{ActivationMode, LayerOverride, LayerQuant, PtqMethod, QuantConfig};
pub use error::{Error, Result, ResultExt};
pub use qtensor::{Encoding, QuantizedTensor};
pub use spec::{BitWidth, CalibrationMethod, Granularity, Layout, QuantSpec, Rounding, Scheme};
pub use uniform::QuantParams;
