//! The quantized strategy: int8 Q and K with per-token scales.

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor};

use crate::reference::{restore, softmax_masked, to_f32};

/// A tensor quantized to int8 with one symmetric scale per token (per row of the last axis).
///
/// `codes` hold integers in `[-127, 127]`, stored as f32 (exactly representable), so that the
/// integer product `codes_q · codes_kᵀ` can run through any backend's f32 matmul and stay
/// exact: every partial sum is an integer of magnitude at most `127² · d`, below 2²⁴ for
/// `d ≤ 1040`, and f32 holds every integer up to 2²⁴.
#[derive(Debug, Clone)]
pub struct QuantizedTokens<B: Backend> {
    /// Integer codes, `[b, h, n, d]`, values in `[-127, 127]`.
    pub codes: Tensor<B, 4>,
    /// One scale per token, `[b, h, n, 1]`: `x ≈ codes · scales`.
    pub scales: Tensor<B, 4>,
}

/// Symmetric int8 quantization with one scale per token: `s = max|x_row| / 127` (at least
/// `f32::EPSILON`, so all-zero rows get codes 0), `code = clamp(round(x / s), -127, 127)` with
/// burn's `round` (half to even).
///
/// # Shapes
/// `x`: `[b, h, n, d]` → codes `[b, h, n, d]`, scales `[b, h, n, 1]`.
pub fn quantize_per_token<B: Backend>(x: Tensor<B, 4>) -> QuantizedTokens<B> {
    let x = to_f32(x);
    let scales = (x.clone().abs().max_dim(3) / 127.0).clamp_min(f32::EPSILON);
    let codes = (x / scales.clone()).round().clamp(-127.0, 127.0);
    QuantizedTokens { codes, scales }
}

pub(crate) fn quantized_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    scale: f32,
    mask: Option<Tensor<B, 4, Bool>>,
) -> Tensor<B, 4> {
    let dtype = q.dtype();
    let q = quantize_per_token(q);
    let k = quantize_per_token(k);
    // Exact integer scores (see QuantizedTokens), then one f32 rescale per (query, key).
    let int_scores = q.codes.matmul(k.codes.swap_dims(2, 3));
    let scores = int_scores * (q.scales * scale) * k.scales.swap_dims(2, 3);
    let probs = softmax_masked(scores, mask);
    restore(probs.matmul(to_f32(v)), dtype)
}
