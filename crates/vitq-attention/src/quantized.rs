//! The quantized strategy: int8 Q and K with per-token scales; P·V and the output in f32 or
//! 8 bits, as [`QuantizedSpec`] says.

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor};

use crate::reference::{restore, softmax_masked, to_f32};

/// The precision of one stage of [`Strategy::Quantized`](crate::Strategy::Quantized).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Precision {
    /// f32 values.
    #[default]
    F32,
    /// 8-bit integer codes with one scale per token or channel (each stage says which).
    Int8,
}

/// What [`Strategy::Quantized`](crate::Strategy::Quantized) quantizes besides Q and K (which
/// are always int8 with one symmetric scale per token). The default quantizes nothing else.
///
/// Serde: `{"pv": "int8", "output": "f32"}`; both fields optional, unknown ones an error.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(default, deny_unknown_fields)]
pub struct QuantizedSpec {
    /// The `P·V` product. [`Precision::Int8`]: the softmax probabilities `P ∈ [0, 1]` become
    /// unsigned 8-bit codes with one scale per query row (`s_p = max_k P / 255`), V becomes
    /// symmetric int8 with one scale per channel of each (batch, head) slice
    /// (`s_v = max_k |V| / 127`), and `Σ_k P_int · V_int` is computed exactly (see
    /// [`quantized_pv`]). Both scales sit outside the sum over keys, which is why V's scale is
    /// per channel and not per token.
    pub pv: Precision,
    /// The output. [`Precision::Int8`]: symmetric int8 with one scale per token
    /// ([`quantize_per_token`]), returned as `codes · scale`, the input a W8A8 `proj` layer
    /// would see.
    pub output: Precision,
}

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

/// `P·V` in 8 bits: `P` (`[b, h, n_q, n_k]`, values in `[0, 1]`) → unsigned codes
/// `clamp(round(P / s_p), 0, 255)` with `s_p = max_k P / 255` per query row; `V`
/// (`[b, h, n_k, d_v]`) → `clamp(round(V / s_v), -127, 127)` with `s_v = max_k |V| / 127` per
/// channel (both scales at least `f32::EPSILON`, round half to even). Returns
/// `(Σ_k P_int · V_int) · s_p · s_v`, `[b, h, n_q, d_v]`, in f32.
///
/// The integer sums run through the backend's f32 matmul. Up to 518 keys every partial sum is
/// an integer below `255 · 127 · 518 < 2²⁴`, so the sums are exact on any backend; with more
/// keys they carry f32 rounding (relative error of order `2⁻²⁴` per addition past 2²⁴).
pub fn quantized_pv<B: Backend>(p: Tensor<B, 4>, v: Tensor<B, 4>) -> Tensor<B, 4> {
    let p = to_f32(p);
    let v = to_f32(v);
    let s_p = (p.clone().max_dim(3) / 255.0).clamp_min(f32::EPSILON);
    let p_codes = (p / s_p.clone()).round().clamp(0.0, 255.0);
    let s_v = (v.clone().abs().max_dim(2) / 127.0).clamp_min(f32::EPSILON);
    let v_codes = (v / s_v.clone()).round().clamp(-127.0, 127.0);
    p_codes.matmul(v_codes) * s_p * s_v
}

pub(crate) fn quantized_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    scale: f32,
    mask: Option<Tensor<B, 4, Bool>>,
    spec: QuantizedSpec,
) -> Tensor<B, 4> {
    let dtype = q.dtype();
    let q = quantize_per_token(q);
    let k = quantize_per_token(k);
    // Exact integer scores (see QuantizedTokens), then one f32 rescale per (query, key).
    let int_scores = q.codes.matmul(k.codes.swap_dims(2, 3));
    let scores = int_scores * (q.scales * scale) * k.scales.swap_dims(2, 3);
    let probs = softmax_masked(scores, mask);
    let out = match spec.pv {
        Precision::F32 => probs.matmul(to_f32(v)),
        Precision::Int8 => quantized_pv(probs, v),
    };
    let out = match spec.output {
        Precision::F32 => out,
        Precision::Int8 => {
            let t = quantize_per_token(out);
            t.codes * t.scales
        }
    };
    restore(out, dtype)
}
