//! Similarity-aware scale search for one linear layer (Liu et al., "Post-Training Quantization for Vision
//! Transformer", NeurIPS 2021, §3.2), selected by [`crate::PtqMethod::SimilaritySearch`].
//!
//! Given rows `X` `[r, k]` of the layer's calibration inputs, its weight `W` `[n, k]` and bias, the float
//! output `O = X·Wᵀ + b` is the target. Starting from the calibrated scales `Δ_W` (per tensor or per output
//! channel) and the input range `[lo, hi]`, the search alternates, for `rounds` rounds:
//! 1. weights: `Δ_W ← α·Δ_W⁰` for `α` in `candidates` evenly spaced values of `[0.5, 1.2]`, keeping the best;
//! 2. inputs: `[lo, hi] ← β·[lo⁰, hi⁰]` likewise,
//!
//! where best means the largest cosine similarity between `O` and `Q(X)·Q(W)ᵀ + b` (the paper's
//! similarity; it also offers Pearson correlation). `α = β = 1` (the calibrated scales) is always a
//! candidate, so the search never ends worse than it started on the calibration rows. The products run on
//! the burn backend of the model.

use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::layers::ActQuant;
use crate::observer::Range;
use crate::uniform::{self, scale_and_zero_point};
use crate::{Granularity, QuantParams, QuantizedTensor, Scheme};

/// The lower and upper multiples searched.
pub const SEARCH_RANGE: [f32; 2] = [0.5, 1.2];

/// What [`search_linear`] found.
#[derive(Clone, Debug)]
pub struct SearchResult {
    /// The weight, quantized with the chosen scales.
    pub weight: QuantizedTensor,
    /// The input quantizer with the chosen range.
    pub input: ActQuant,
    /// Cosine similarity with the calibrated scales.
    pub similarity_before: f64,
    /// Cosine similarity with the chosen scales.
    pub similarity_after: f64,
}

/// The input range `[lo, hi]` a static quantizer represents.
pub(crate) fn act_range(a: &ActQuant) -> Option<Range> {
    let (s, z) = a.params?;
    let (qmin, qmax) = a.spec.qrange();
    Some(Range {
        min: (qmin - z) as f32 * s,
        max: (qmax - z) as f32 * s,
    })
}

pub(crate) fn scaled(a: &ActQuant, r: Range, beta: f32) -> ActQuant {
    let (s, z) = scale_and_zero_point(
        &a.spec,
        Range {
            min: r.min * beta,
            max: r.max * beta,
        },
    );
    ActQuant {
        spec: a.spec,
        params: Some((s, z)),
    }
}

/// Whether `params` are per output channel (`true`) or per tensor (`false`); the scale searches take
/// only symmetric weights quantized one of these two ways (`what` names the search in the error).
pub(crate) fn symmetric_per_channel(params: &QuantParams, what: &str) -> Result<bool> {
    match (params.spec.scheme, params.spec.granularity) {
        (Scheme::Symmetric, Granularity::PerTensor) => Ok(false),
        (Scheme::Symmetric, Granularity::PerChannel { axis: 0 }) => Ok(true),
        (s, g) => Err(Error::Unsupported(format!(
            "{what} needs symmetric per-tensor or per-channel weights, not {s:?} {g}"
        ))),
    }
}

/// The L2 norm of a whole tensor, in f64.
pub(crate) fn l2_norm<B: Backend, const D: usize>(y: &Tensor<B, D>) -> f64 {
    y.clone()
        .powi_scalar(2)
        .sum()
        .into_scalar()
        .elem::<f64>()
        .sqrt()
}

/// The cosine similarity of `y` and `target`, whose norm is `target_norm` ([`l2_norm`]).
pub(crate) fn cosine<B: Backend, const D: usize>(
    y: &Tensor<B, D>,
    target: &Tensor<B, D>,
    target_norm: f64,
) -> f64 {
    let dot = (y.clone() * target.clone())
        .sum()
        .into_scalar()
        .elem::<f64>();
    dot / (l2_norm(y) * target_norm).max(f64::MIN_POSITIVE)
}

pub(crate) fn candidates(n: u32) -> Vec<f32> {
    let n = n.max(2);
    let [lo, hi] = SEARCH_RANGE;
    let mut c: Vec<f32> = (0..n)
        .map(|i| lo + (hi - lo) * i as f32 / (n - 1) as f32)
        .collect();
    c.push(1.0);
    c
}

/// Searches the weight scales and input range of a linear layer (see the module docs). `weight` is the
/// calibrated quantized weight (uniform, symmetric, per tensor or per output channel: anything else is
/// [`Error::Unsupported`]), `w` its float values `[n, k]`, `x` the sampled input rows `[r, k]`.
#[allow(clippy::too_many_arguments)]
pub fn search_linear<B: Backend>(
    w: &[f32],
    bias: Option<&[f32]>,
    [n, k]: [usize; 2],
    x: &[f32],
    weight: &QuantizedTensor,
    input: &ActQuant,
    candidate_count: u32,
    rounds: u32,
    device: &B::Device,
) -> Result<SearchResult> {
    let params = weight
        .params()
        .ok_or_else(|| Error::Unsupported("similarity search needs uniform weights".into()))?;
    let per_channel = symmetric_per_channel(&params, "similarity search")?;
    let range = act_range(input).ok_or_else(|| {
        Error::Unsupported("similarity search needs a static (calibrated) input range".into())
    })?;
    let rows = x.len() / k.max(1);
    if rows == 0 || x.len() != rows * k || w.len() != n * k {
        return Err(Error::ShapeMismatch {
            what: "similarity search rows / weight".into(),
            expected: vec![n, k],
            got: vec![x.len(), w.len()],
        });
    }
    let xt = Tensor::<B, 2>::from_data(TensorData::new(x.to_vec(), [rows, k]), device);
    // [k, n]: the product is X · Wt.
    let wt = Tensor::<B, 2>::from_data(TensorData::new(w.to_vec(), [n, k]), device).transpose();
    let bt = bias.map(|b| Tensor::<B, 1>::from_data(TensorData::new(b.to_vec(), [n]), device));
    let add_bias = |y: Tensor<B, 2>| match &bt {
        Some(b) => y + b.clone().reshape([1, n]),
        None => y,
    };
    let target = add_bias(xt.clone().matmul(wt.clone()));
    let target_norm = l2_norm(&target);
    let cosine = |y: Tensor<B, 2>| cosine(&y, &target, target_norm);
    let (_, qmax) = params.spec.qrange();
    let (qmin, _) = params.spec.qrange();
    let base_scales = params.scales.clone();
    let scale_tensor = |alpha: f32| -> Tensor<B, 2> {
        let s: Vec<f32> = base_scales.iter().map(|s| s * alpha).collect();
        let len = s.len();
        let t = Tensor::<B, 1>::from_data(TensorData::new(s, [len]), device);
        if per_channel {
            t.reshape([1, n])
        } else {
            t.reshape([1, 1])
        }
    };
    let fq_weight = |alpha: f32| -> Tensor<B, 2> {
        let s = scale_tensor(alpha);
        wt.clone()
            .div(s.clone())
            .round()
            .clamp(qmin as f32, qmax as f32)
            .mul(s)
    };
    let eval = |alpha: f32, beta: f32| -> Result<f64> {
        let xq = scaled(input, range, beta).fake_quant(xt.clone())?;
        Ok(cosine(add_bias(xq.matmul(fq_weight(alpha)))))
    };
    let before = eval(1.0, 1.0)?;
    let (mut alpha, mut beta, mut best) = (1.0f32, 1.0f32, before);
    let grid = candidates(candidate_count);
    for _ in 0..rounds {
        // Weights, with the inputs fixed.
        let xq = scaled(input, range, beta).fake_quant(xt.clone())?;
        for &a in &grid {
            let sim = cosine(add_bias(xq.clone().matmul(fq_weight(a))));
            if sim > best {
                (best, alpha) = (sim, a);
            }
        }
        // Inputs, with the weights fixed.
        let wq = fq_weight(alpha);
        for &b in &grid {
            let xq = scaled(input, range, b).fake_quant(xt.clone())?;
            let sim = cosine(add_bias(xq.matmul(wq.clone())));
            if sim > best {
                (best, beta) = (sim, b);
            }
        }
    }
    let chosen = QuantParams {
        scales: base_scales.iter().map(|s| s * alpha).collect(),
        ..params
    };
    let codes = uniform::quantize_ref(w, &chosen)?;
    Ok(SearchResult {
        weight: QuantizedTensor::from_codes(&codes, &chosen)?,
        input: scaled(input, range, beta),
        similarity_before: before,
        similarity_after: best,
    })
}
