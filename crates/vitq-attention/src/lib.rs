//! # vitq-attention
//!
//! Scaled-dot-product attention (SDPA) for vision transformers on burn tensors
//! `[batch, heads, tokens, head_dim]`:
//!
//! ```text
//! out = softmax(scale · Q Kᵀ + mask) · V
//! ```
//!
//! One entry point, [`attention`], and a [`Strategy`] that picks how it is computed:
//!
//! | strategy | what | where |
//! |---|---|---|
//! | [`Strategy::Reference`] | matmul → softmax with the row max subtracted → matmul, in f32 | every backend; the test oracle |
//! | [`Strategy::Flash`] | one fused CubeCL kernel: Q tiles stay on chip, K/V tiles stream through shared memory, online softmax, f32 accumulation, no N×N matrix in memory; on CUDA with f16 / bf16 both products run on tensor cores ([`flash_kernel`]) | CubeCL backends (`cuda`, `wgpu` features) |
//! | [`Strategy::Quantized`] | Q and K quantized to int8 with one scale per token (symmetric), exact integer QKᵀ, f32 softmax; P·V and the output in f32 or 8 bits ([`QuantizedSpec`]) | every backend |
//! | [`Strategy::Burn`] | burn 0.21's own `burn::tensor::module::attention` | every backend |
//! | [`Strategy::Auto`] | the fastest correct one measured for the backend (`Flash` on tensor cores, else `Burn`) | every backend |
//!
//! ## Dispatch
//! [`attention`] is generic over any `B: Backend`, with no extra trait bound, so a model that
//! is generic over `B` can call it. The flash kernel is reached by a run-time type check of the
//! tensor primitive (`CubeTensor<CudaRuntime>`, `CubeTensor<WgpuRuntime>` and their fusion
//! wrappers, as compiled in by features); on any other backend `Flash` returns
//! [`Error::UnsupportedBackend`].
//!
//! ## Example
//! ```
//! use burn::backend::Flex;
//! use burn::tensor::{Distribution, Tensor};
//! use vitq_attention::{Strategy, attention, default_scale};
//!
//! let device = Default::default();
//! let q = Tensor::<Flex, 4>::random([2, 3, 17, 32], Distribution::Normal(0.0, 1.0), &device);
//! let k = Tensor::<Flex, 4>::random([2, 3, 17, 32], Distribution::Normal(0.0, 1.0), &device);
//! let v = Tensor::<Flex, 4>::random([2, 3, 17, 32], Distribution::Normal(0.0, 1.0), &device);
//! let out = attention(q, k, v, default_scale(32), None, Strategy::Reference)?;
//! assert_eq!(out.dims(), [2, 3, 17, 32]);
//! // The flash kernel needs a CubeCL backend; on the CPU backend it is a typed error.
//! # let q = Tensor::<Flex, 4>::zeros([1, 1, 4, 32], &device);
//! # let (k, v) = (q.clone(), q.clone());
//! assert!(attention(q, k, v, default_scale(32), None, Strategy::Flash).is_err());
//! # Ok::<(), vitq_attention::Error>(())
//! ```
//!
//! ## Crate features
//! - `cuda`: burn's CUDA backend and the flash kernel on it (builds without a CUDA toolkit;
//!   needs `libcuda` and NVRTC at run time).
//! - `wgpu`: burn's wgpu backend (Vulkan / Metal / DX12) and the flash kernel on it. Tested on
//!   Mesa's software Vulkan driver (llvmpipe), see `docs/attention.md`.
//! - `cube`: the kernel code alone, without a runtime (turned on by the two above).
//!
//! The default build is CPU-only (burn `flex`) and pulls no CubeCL runtime.

#![deny(missing_docs)]

mod error;
#[cfg(feature = "cube")]
mod flash;
#[cfg(feature = "cube")]
pub mod kernel;
mod quantized;
mod reference;

use burn::tensor::backend::Backend;
use burn::tensor::module::attention as burn_attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, DType, ElementConversion, Tensor};

pub use error::{Error, Result};
pub use quantized::{Precision, QuantizedSpec, QuantizedTokens, quantize_per_token, quantized_pv};
pub use reference::reference_attention;

/// How [`attention`] computes its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Strategy {
    /// `softmax(scale · Q Kᵀ) V` as three burn ops (matmul, numerically safe softmax with the
    /// row max subtracted, matmul), computed in f32 whatever the input dtype and cast back.
    /// Always available; the oracle the other strategies are tested against. Writes the
    /// `[b, h, n_q, n_k]` score matrix to memory.
    Reference,
    /// The fused CubeCL flash-attention kernel of this crate (module `kernel`, with the `cube`
    /// feature). Inputs f32, f16 or bf16 (all three the same dtype), head dim 32, 64 or 128
    /// with `d_v = d`, any token count, no mask. f32 accumulation, output in the input dtype.
    /// Only on CubeCL backends: elsewhere (or with a mask) it returns an error, it never falls
    /// back silently.
    Flash,
    /// Q and K quantized to int8 with one symmetric scale per token (`s = max|row| / 127`, round
    /// half to even), the integer product `Q_int · K_intᵀ` computed exactly, rescaled by
    /// `s_q · s_k · scale`; softmax in f32. `P·V` and the output in f32 or in 8 bits, as the
    /// [`QuantizedSpec`] says (the default: both f32). The result is cast to the input dtype.
    /// This is the attention of a W8A8 ViT whose activation quantizers sit before QKᵀ (and,
    /// with `pv = Int8`, before `P·V`).
    Quantized(QuantizedSpec),
    /// burn 0.21's own `burn::tensor::module::attention`: the CubeCL flash kernels of `cubek`
    /// (autotuned) on cube backends, a tiled CPU kernel on Flex, a decomposition elsewhere.
    Burn,
    /// The fastest correct strategy measured for the backend: [`Strategy::Flash`] where it
    /// runs on tensor cores ([`FlashKernel::TensorCore`]: CUDA, f16 / bf16, no mask; 4.3–5.4×
    /// faster than burn's attention on an H100, docs/attention.md), [`Strategy::Burn`]
    /// everywhere else (as fast as the scalar flash kernel in f32 on CUDA; burn's tiled CPU
    /// kernel on Flex).
    #[default]
    Auto,
}

/// `1 / sqrt(head_dim)`, the usual softmax scale.
pub fn default_scale(head_dim: usize) -> f32 {
    1.0 / (head_dim as f32).sqrt()
}

/// Scaled-dot-product attention, `softmax(scale · Q Kᵀ + mask) · V`.
///
/// # Shapes
/// - `q`: `[batch, heads, n_q, d]`
/// - `k`: `[batch, heads, n_k, d]`
/// - `v`: `[batch, heads, n_k, d_v]`
/// - `mask`: `[batch | 1, heads | 1, n_q, n_k]`, `true` where a key must be ignored
///   (burn's convention). A row whose keys are all masked gives zeros.
/// - returns `[batch, heads, n_q, d_v]`, in q's dtype.
///
/// # Errors
/// Shape mismatches, empty dimensions, a scale that is not finite and positive, NaN or ±Inf in
/// q, k or v ([`Error::NonFinite`]; this check costs one reduction and one device-to-host read
/// per input, see [`attention_trusted`] to skip it), and whatever the strategy does not
/// support ([`Strategy`]).
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    scale: f32,
    mask: Option<Tensor<B, 4, Bool>>,
    strategy: Strategy,
) -> Result<Tensor<B, 4>> {
    for (name, t) in [("q", &q), ("k", &k), ("v", &v)] {
        check_finite(name, t)?;
    }
    attention_trusted(q, k, v, scale, mask, strategy)
}

/// [`attention`] without the scan for NaN / ±Inf values (shapes, dtypes and the scale are
/// still checked). For hot loops whose inputs are known to be finite; with non-finite inputs
/// the output is unspecified (but nothing panics).
pub fn attention_trusted<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    scale: f32,
    mask: Option<Tensor<B, 4, Bool>>,
    strategy: Strategy,
) -> Result<Tensor<B, 4>> {
    check_shapes(&q, &k, &v, mask.as_ref())?;
    if !(scale.is_finite() && scale > 0.0) {
        return Err(Error::BadScale(scale));
    }
    match strategy {
        Strategy::Reference => Ok(reference_attention(q, k, v, scale, mask)),
        Strategy::Quantized(spec) => Ok(quantized::quantized_attention(q, k, v, scale, mask, spec)),
        Strategy::Burn => Ok(burn_builtin(q, k, v, scale, mask)),
        Strategy::Flash => {
            if mask.is_some() {
                return Err(Error::Unsupported {
                    strategy,
                    what: "a mask",
                });
            }
            flash_dispatch(q, k, v, scale)
        }
        // Measured on an H100 (docs/attention.md): the tensor-core Flash kernel beats burn's
        // attention 4.3–5.4× in f16 / bf16 at every ViT shape; burn's attention is as fast as the
        // scalar kernel in f32 and is the tiled kernel on Flex.
        Strategy::Auto => {
            let [_, _, _, d] = q.dims();
            let tensor_cores = mask.is_none()
                && v.dims()[3] == d
                && k.dtype() == q.dtype()
                && v.dtype() == q.dtype()
                && flash_kernel::<B>(&q.device(), q.dtype(), d) == Some(FlashKernel::TensorCore);
            if tensor_cores {
                flash_dispatch(q, k, v, scale)
            } else {
                Ok(burn_builtin(q, k, v, scale, mask))
            }
        }
    }
}

/// Whether [`Strategy::Flash`] can run on these inputs on this backend and build.
pub fn flash_supports<B: Backend>(q: &Tensor<B, 4>, v: &Tensor<B, 4>) -> bool {
    let [_, _, _, d] = q.dims();
    let dv = v.dims()[3];
    matches!(d, 32 | 64 | 128)
        && dv == d
        && matches!(q.dtype(), DType::F32 | DType::F16 | DType::BF16)
        && q.dtype() == v.dtype()
        && flash_backend_available::<B>()
}

/// Whether this build can run the flash kernel on backend `B` (a CubeCL backend compiled in by
/// the `cuda` or `wgpu` feature).
pub fn flash_backend_available<B: Backend>() -> bool {
    #[cfg(feature = "cube")]
    {
        flash::is_cube_backend::<B>()
    }
    #[cfg(not(feature = "cube"))]
    {
        false
    }
}

/// Which kernel [`Strategy::Flash`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FlashKernel {
    /// f32 arithmetic on CUDA cores, any float dtype and CubeCL runtime (wgpu, CUDA).
    Scalar,
    /// `Q·Kᵀ` and `P·V` as `m16n8k16` tensor-core MMAs (f16 / bf16 inputs, f32 accumulators):
    /// CUDA, compute capability 8.0 or newer.
    TensorCore,
}

/// The kernel [`Strategy::Flash`] would launch for inputs of `dtype` and `head_dim` on
/// `device` of backend `B`, or `None` where it cannot run (not a CubeCL backend of this
/// build, or a head dim or dtype it does not take).
pub fn flash_kernel<B: Backend>(
    device: &B::Device,
    dtype: DType,
    head_dim: usize,
) -> Option<FlashKernel> {
    if !matches!(head_dim, 32 | 64 | 128) || !matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
    {
        return None;
    }
    #[cfg(feature = "cube")]
    {
        flash::kernel_for::<B>(device, dtype, head_dim)
    }
    #[cfg(not(feature = "cube"))]
    {
        let _ = device;
        None
    }
}

fn flash_dispatch<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    scale: f32,
) -> Result<Tensor<B, 4>> {
    let [_, _, _, d] = q.dims();
    let d_v = v.dims()[3];
    if !matches!(d, 32 | 64 | 128) || d_v != d {
        return Err(Error::UnsupportedHeadDim { d, d_v });
    }
    let dtype = q.dtype();
    if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
        || k.dtype() != dtype
        || v.dtype() != dtype
    {
        return Err(Error::UnsupportedDType {
            strategy: Strategy::Flash,
            dtype: format!("q {:?}, k {:?}, v {:?}", dtype, k.dtype(), v.dtype()),
        });
    }
    #[cfg(feature = "cube")]
    {
        flash::flash_attention(q, k, v, scale)
    }
    #[cfg(not(feature = "cube"))]
    {
        let _ = (k, v, scale);
        Err(Error::UnsupportedBackend {
            strategy: Strategy::Flash,
            backend: B::name(&q.device()),
            reason: "built without the `cuda` or `wgpu` feature",
        })
    }
}

fn burn_builtin<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    scale: f32,
    mask: Option<Tensor<B, 4, Bool>>,
) -> Tensor<B, 4> {
    let [b, h, n_q, _] = q.dims();
    let n_k = k.dims()[2];
    // burn's kernels want the mask at full shape.
    let mask = mask.map(|m| m.expand([b, h, n_q, n_k]));
    let options = AttentionModuleOptions {
        scale: Some(f64::from(scale)),
        ..Default::default()
    };
    burn_attention(q, k, v, mask, None, options)
}

fn check_finite<B: Backend>(name: &'static str, t: &Tensor<B, 4>) -> Result<()> {
    let all_finite: bool = t.clone().is_finite().all().into_scalar().elem();
    if !all_finite {
        Err(Error::NonFinite { tensor: name })
    } else {
        Ok(())
    }
}

fn check_shapes<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
    mask: Option<&Tensor<B, 4, Bool>>,
) -> Result<()> {
    let (qd, kd, vd) = (q.dims(), k.dims(), v.dims());
    let [b, h, n_q, d] = qd;
    let ok = kd[0] == b && kd[1] == h && kd[3] == d && vd[0] == b && vd[1] == h && vd[2] == kd[2];
    if !ok {
        return Err(Error::ShapeMismatch {
            q: qd,
            k: kd,
            v: vd,
        });
    }
    if qd.contains(&0) || kd.contains(&0) || vd[3] == 0 {
        return Err(Error::Empty { q: qd, k: kd });
    }
    if let Some(m) = mask {
        let md = m.dims();
        let n_k = kd[2];
        let ok = (md[0] == b || md[0] == 1)
            && (md[1] == h || md[1] == 1)
            && md[2] == n_q
            && md[3] == n_k;
        if !ok {
            return Err(Error::MaskShape {
                mask: md,
                b,
                h,
                n_q,
                n_k,
            });
        }
    }
    Ok(())
}
