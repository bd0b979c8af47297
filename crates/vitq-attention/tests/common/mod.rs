//! Shared test helpers: a host f64 oracle, deterministic inputs and the tolerance tiers.
#![allow(dead_code)]

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use vitq_core::synth::Rng;

/// Tolerance tiers, as `max|out - oracle| / max|oracle|` (see [`rel_err`]).
pub mod tol {
    /// f32 inputs and output.
    pub const F32: f64 = 1e-5;
    /// f16 / bf16 inputs and output (the oracle sees the same rounded inputs).
    pub const HALF: f64 = 1e-2;
    /// int8 Q/K against the float oracle (quantization error, not arithmetic).
    pub const INT8_VS_FLOAT: f64 = 5e-2;

    /// f32 tier for inputs whose scores are large. A score `s` computed in f32 carries an
    /// absolute error of a few `ε·|s|`, and `exp(s - m)` turns that into the same *relative*
    /// error of the weight, whatever the algorithm; so the tier grows with `max|s|`:
    /// `F32 + 8·ε_f32·max|s|` (equal to [`F32`] for scores below ~10).
    pub fn f32_for_scores(max_abs_score: f64) -> f64 {
        F32 + 8.0 * f64::from(f32::EPSILON) * max_abs_score
    }

    /// The same growth for f16 / bf16 outputs (their rounding dominates below that).
    pub fn half_for_scores(max_abs_score: f64) -> f64 {
        HALF + 8.0 * f64::from(f32::EPSILON) * max_abs_score
    }
}

/// `max |scale · q_i · k_j|` over all slices (q `[b, h, n_q, d]`, k `[b, h, n_k, d]`).
pub fn max_abs_score(q: &[f32], k: &[f32], q_shape: [usize; 4], n_k: usize, scale: f32) -> f64 {
    let [b, h, n_q, d] = q_shape;
    let mut m = 0f64;
    for bh in 0..b * h {
        for i in 0..n_q {
            let qi = &q[(bh * n_q + i) * d..][..d];
            for j in 0..n_k {
                let kj = &k[(bh * n_k + j) * d..][..d];
                let dot: f64 = qi
                    .iter()
                    .zip(kj)
                    .map(|(&a, &b)| f64::from(a) * f64::from(b))
                    .sum();
                m = m.max((dot * f64::from(scale)).abs());
            }
        }
    }
    m
}

/// Relative error: `max_i |a_i - b_i| / max_i |b_i|` (`b` is the oracle). NaN anywhere → ∞.
pub fn rel_err(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mut num = 0.0f64;
    let mut den = 0.0f64;
    for (&x, &y) in a.iter().zip(b) {
        if !x.is_finite() {
            return f64::INFINITY;
        }
        num = num.max((f64::from(x) - y).abs());
        den = den.max(y.abs());
    }
    if den == 0.0 { num } else { num / den }
}

/// Shape `[b, h, n, d]` → number of elements.
pub fn numel(s: [usize; 4]) -> usize {
    s.iter().product()
}

/// Gaussian values times `magnitude`, deterministic in `seed`.
pub fn gaussian(seed: u64, n: usize, magnitude: f32) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.gaussian() * magnitude).collect()
}

/// A float tensor from host data, cast to `dtype`.
pub fn tensor<B: Backend>(
    data: Vec<f32>,
    shape: [usize; 4],
    dtype: DType,
    device: &B::Device,
) -> Tensor<B, 4> {
    let t = Tensor::<B, 4>::from_data(TensorData::new(data, shape), device);
    if dtype == DType::F32 {
        t
    } else {
        t.cast(dtype)
    }
}

/// A tensor's values as f32 on the host (whatever its dtype).
pub fn host<B: Backend>(t: Tensor<B, 4>) -> Vec<f32> {
    let t = if t.dtype() == DType::F32 {
        t
    } else {
        t.cast(DType::F32)
    };
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

/// The oracle: softmax(scale · q kᵀ, masked) v in f64, for the (batch·head) slices `slices`
/// only (all when `None`). `mask[bh][i][j] == true` removes key j from row i; a fully masked
/// row gives zeros. Returns the selected slices' outputs, concatenated.
#[allow(clippy::too_many_arguments)]
pub fn oracle(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    q_shape: [usize; 4],
    n_k: usize,
    d_v: usize,
    scale: f32,
    mask: Option<&dyn Fn(usize, usize, usize) -> bool>,
    slices: Option<&[usize]>,
) -> Vec<f64> {
    let [b, h, n_q, d] = q_shape;
    let all: Vec<usize> = (0..b * h).collect();
    let slices = slices.unwrap_or(&all);
    let mut out = Vec::with_capacity(slices.len() * n_q * d_v);
    let mut s = vec![0f64; n_k];
    for &bh in slices {
        for i in 0..n_q {
            let qi = &q[(bh * n_q + i) * d..][..d];
            let mut m = f64::NEG_INFINITY;
            for (j, sj) in s.iter_mut().enumerate() {
                let masked = mask.is_some_and(|f| f(bh, i, j));
                *sj = if masked {
                    f64::NEG_INFINITY
                } else {
                    let kj = &k[(bh * n_k + j) * d..][..d];
                    let dot: f64 = qi
                        .iter()
                        .zip(kj)
                        .map(|(&a, &b)| f64::from(a) * f64::from(b))
                        .sum();
                    dot * f64::from(scale)
                };
                m = m.max(*sj);
            }
            let mut row = vec![0f64; d_v];
            if m.is_finite() {
                let mut sum = 0.0;
                for (j, &sj) in s.iter().enumerate() {
                    let p = (sj - m).exp();
                    sum += p;
                    let vj = &v[(bh * n_k + j) * d_v..][..d_v];
                    for (r, &x) in row.iter_mut().zip(vj) {
                        *r += p * f64::from(x);
                    }
                }
                row.iter_mut().for_each(|r| *r /= sum);
            }
            out.extend(row);
        }
    }
    out
}

/// The elements of the selected (batch·head) slices of a `[b, h, n, d]` host buffer.
pub fn select(x: &[f32], n: usize, d: usize, slices: &[usize]) -> Vec<f32> {
    slices
        .iter()
        .flat_map(|&bh| x[bh * n * d..][..n * d].iter().copied())
        .collect()
}
