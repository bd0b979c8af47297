//! The reference strategy: three burn ops, in f32.

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, DType, Tensor};

/// `softmax(scale · Q Kᵀ + mask) · V` as matmul → softmax with the row max subtracted →
/// matmul, computed in f32 (inputs in another float dtype are cast up, the result cast back to
/// q's dtype). Masked entries (`true`) get weight 0; a row whose keys are all masked gives
/// zeros.
///
/// This is the oracle of the crate's tests. It does not validate its inputs: call it through
/// [`attention`](crate::attention) with [`Strategy::Reference`](crate::Strategy::Reference) for
/// typed errors. Mismatched shapes make burn panic here.
///
/// # Shapes
/// q `[b, h, n_q, d]`, k `[b, h, n_k, d]`, v `[b, h, n_k, d_v]`, mask `[b|1, h|1, n_q, n_k]`
/// → `[b, h, n_q, d_v]`.
pub fn reference_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    scale: f32,
    mask: Option<Tensor<B, 4, Bool>>,
) -> Tensor<B, 4> {
    let dtype = q.dtype();
    let scores = to_f32(q).matmul(to_f32(k).swap_dims(2, 3)) * scale;
    let probs = softmax_masked(scores, mask);
    restore(probs.matmul(to_f32(v)), dtype)
}

/// Softmax over the last axis with the row max subtracted; `true` in `mask` → weight 0; fully
/// masked rows → 0 (the max is clamped to a finite value and the sum to the smallest normal).
pub(crate) fn softmax_masked<B: Backend>(
    scores: Tensor<B, 4>,
    mask: Option<Tensor<B, 4, Bool>>,
) -> Tensor<B, 4> {
    let scores = match mask {
        Some(m) => {
            let dims = scores.dims();
            scores.mask_fill(m.expand(dims), f32::NEG_INFINITY)
        }
        None => scores,
    };
    let max = scores.clone().max_dim(3).clamp_min(f32::MIN);
    let e = (scores - max).exp();
    let sum = e.clone().sum_dim(3).clamp_min(f32::MIN_POSITIVE);
    e / sum
}

pub(crate) fn to_f32<B: Backend>(t: Tensor<B, 4>) -> Tensor<B, 4> {
    if t.dtype() == DType::F32 {
        t
    } else {
        t.cast(DType::F32)
    }
}

pub(crate) fn restore<B: Backend>(t: Tensor<B, 4>, dtype: DType) -> Tensor<B, 4> {
    if dtype == DType::F32 {
        t
    } else {
        t.cast(dtype)
    }
}
