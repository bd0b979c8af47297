//! Fast paths for burn's host backend, [`Flex`]: models stay generic over the backend, and these
//! functions check at run time (`TypeId`) whether the tensors live on Flex; if they do, the work runs
//! on the tensor's own buffer, otherwise the backend's op runs.
//!
//! - [`gelu`]: exact (erf) GELU, vectorized and parallel. Flex 0.21 computes it one element at a time
//!   with libm's `erff` on one thread, which took about a tenth of a ViT's f32 inference time.
//!
//! ```
//! use burn::backend::Flex;
//! use burn::tensor::Tensor;
//!
//! let x = Tensor::<Flex, 1>::from_floats([-1.0, 0.0, 2.0], &Default::default());
//! let y = vitq_core::host::gelu(x.clone());
//! let reference = burn::tensor::activation::gelu(x);
//! y.into_data().assert_approx_eq::<f32>(&reference.into_data(), Default::default());
//! ```

use std::any::{Any, TypeId};

use burn::backend::Flex;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};
use burn_flex::FlexTensor;
use rayon::prelude::*;

/// Whether `B` is the host backend ([`Flex`]), where host kernels read tensors without copies.
pub fn is_host<B: Backend>() -> bool {
    TypeId::of::<B>() == TypeId::of::<Flex>()
}

/// The Flex tensor behind `x`, or `x` back when `B` is not Flex.
fn into_flex<B: Backend, const D: usize>(x: Tensor<B, D>) -> Result<FlexTensor, Tensor<B, D>> {
    if !is_host::<B>() {
        return Err(x);
    }
    let prim: Box<dyn Any> = Box::new(x.into_primitive().tensor());
    // `B` is Flex, so its float primitive is a FlexTensor: the downcast cannot fail.
    match prim.downcast::<FlexTensor>() {
        Ok(t) => Ok(*t),
        Err(_) => unreachable!("Flex's float primitive is FlexTensor"),
    }
}

fn from_flex<B: Backend, const D: usize>(t: FlexTensor) -> Tensor<B, D> {
    let prim: Box<dyn Any> = Box::new(t);
    match prim.downcast::<B::FloatTensorPrimitive>() {
        Ok(p) => Tensor::from_primitive(TensorPrimitive::Float(*p)),
        Err(_) => unreachable!("only called when B is Flex"),
    }
}

/// Applies `f` to every element of an f32 Flex tensor: in place when the tensor owns its contiguous
/// buffer, into a new buffer otherwise. Other dtypes are `Err` (left to the backend).
fn map_f32(mut t: FlexTensor, f: fn(&mut [f32])) -> Result<FlexTensor, FlexTensor> {
    const CHUNK: usize = 1 << 14;
    if t.dtype() != DType::F32 {
        return Err(t);
    }
    let n = t.layout().num_elements();
    let whole = t.layout().contiguous_offsets() == Some((0, n)) && t.bytes().len() == 4 * n;
    if whole && let Some(buf) = t.try_storage_mut::<f32>() {
        buf.par_chunks_mut(CHUNK).for_each(f);
        return Ok(t);
    }
    let shape = t.layout().shape().clone();
    let contiguous = t.to_contiguous();
    let mut v = match contiguous.as_slice::<f32>() {
        Some(s) => s.to_vec(),
        None => return Err(t),
    };
    v.par_chunks_mut(CHUNK).for_each(f);
    Ok(FlexTensor::from_data(TensorData::new(v, shape)))
}

/// Exact GELU, `0.5·x·(1 + erf(x/√2))` (PyTorch's `nn.GELU()`): on Flex with [`erf`] on the tensor's
/// buffer (AVX-512 / AVX2 when the CPU has them, detected at run time), elsewhere burn's `gelu`.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    match into_flex(x).map(|t| map_f32(t, gelu_slice)) {
        Ok(Ok(t)) => from_flex(t),
        Ok(Err(t)) => burn::tensor::activation::gelu(from_flex(t)),
        Err(x) => burn::tensor::activation::gelu(x),
    }
}

/// `erf(x)` for f32: a rational approximation (odd degree-13 numerator, even degree-8 denominator in
/// `x`, the form used by Eigen and XLA) on `x` clamped to `[-4, 4]`, where `erf` already rounds to ±1
/// in f32. Absolute error about 1e-7 against libm's `erff` (see the tests). Branch-free, so loops of
/// it vectorize.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    const A: [f32; 7] = [
        -2.726_142_3e-10,
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906_3e-4,
        -2.954_6e-3,
        -1.609_603_3e-2,
    ];
    const B: [f32; 5] = [
        -1.456_607_2e-5,
        -2.133_740_6e-4,
        -1.682_827e-3,
        -7.373_329e-3,
        -1.426_474e-2,
    ];
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = A.iter().skip(1).fold(A[0], |p, &a| p * x2 + a) * x;
    let q = B.iter().skip(1).fold(B[0], |q, &b| q * x2 + b);
    p / q
}

#[inline(always)]
fn gelu_portable(xs: &mut [f32]) {
    for v in xs {
        *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// GELU over a slice, with the widest vector unit the CPU has ([`with_simd`]).
pub fn gelu_slice(xs: &mut [f32]) {
    with_simd(
        #[inline(always)]
        || gelu_portable(xs),
    )
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn run_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn run_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Runs `f` compiled for the widest x86 vector extension the CPU has (AVX-512, else AVX2 + FMA,
/// detected at run time), or as portable code. `f` and what it calls should be `#[inline(always)]`
/// loops written to vectorize; they are then compiled once per extension.
#[inline(always)]
pub fn with_simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
            // SAFETY: the CPU has AVX-512F and BW (checked just above).
            return unsafe { run_avx512(f) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            return unsafe { run_avx2(f) };
        }
    }
    f()
}
