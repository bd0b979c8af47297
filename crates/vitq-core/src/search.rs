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

/// A linear layer's weight-scale search on the device: the sampled inputs `x` (`[rows, k]`), the float
/// weight transposed (`[k, n]`) and the bias, the float output `target = x·Wᵀ + b`, and the weight
/// fake-quantized at the calibrated scales times a factor ([`LinearProblem::weight`]). Shared by the
/// similarity search and PTQ4ViT.
pub(crate) struct LinearProblem<B: Backend> {
    /// The sampled inputs `[rows, k]`.
    pub x: Tensor<B, 2>,
    /// The float output `[rows, n]`.
    pub target: Tensor<B, 2>,
    wt: Tensor<B, 2>,
    bias: Option<Tensor<B, 2>>,
    scales: Vec<f32>,
    per_channel: bool,
    qrange: (i32, i32),
    n: usize,
}

impl<B: Backend> LinearProblem<B> {
    /// `x` holds `rows` rows of `k`, `w` is `[n, k]`; `params` the calibrated weight quantizer (its
    /// scales per tensor, or per output channel when `per_channel`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        x: &[f32],
        rows: usize,
        w: &[f32],
        bias: Option<&[f32]>,
        [n, k]: [usize; 2],
        params: &QuantParams,
        per_channel: bool,
        device: &B::Device,
    ) -> Self {
        let x = Tensor::<B, 2>::from_data(TensorData::new(x.to_vec(), [rows, k]), device);
        // [k, n]: the product is X · Wt.
        let wt = Tensor::<B, 2>::from_data(TensorData::new(w.to_vec(), [n, k]), device).transpose();
        let bias = bias.map(|b| {
            Tensor::<B, 1>::from_data(TensorData::new(b.to_vec(), [n]), device).reshape([1, n])
        });
        let mut problem = Self {
            target: x.clone(),
            x,
            wt,
            bias,
            scales: params.scales.clone(),
            per_channel,
            qrange: params.spec.qrange(),
            n,
        };
        problem.target = problem.output(problem.x.clone(), problem.wt.clone());
        problem
    }

    /// `x · wt + b` for quantized operands `x` (`[rows, k]`) and `wt` (`[k, n]`).
    pub fn output(&self, x: Tensor<B, 2>, wt: Tensor<B, 2>) -> Tensor<B, 2> {
        let y = x.matmul(wt);
        match &self.bias {
            Some(b) => y + b.clone(),
            None => y,
        }
    }

    /// The calibrated scales times `alpha`.
    pub fn scales(&self, alpha: f32) -> Vec<f32> {
        self.scales.iter().map(|s| s * alpha).collect()
    }

    /// The weight, transposed (`[k, n]`), fake-quantized at the scales `alpha·Δ`.
    pub fn weight(&self, alpha: f32) -> Tensor<B, 2> {
        let s = self.scales(alpha);
        let len = s.len();
        let st = Tensor::<B, 1>::from_data(TensorData::new(s, [len]), &self.wt.device());
        let st = if self.per_channel {
            st.reshape([1, self.n])
        } else {
            st.reshape([1, 1])
        };
        let (qmin, qmax) = self.qrange;
        self.wt
            .clone()
            .div(st.clone())
            .round()
            .clamp(qmin as f32, qmax as f32)
            .mul(st)
    }
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
    let problem = LinearProblem::<B>::new(x, rows, w, bias, [n, k], &params, per_channel, device);
    let xt = problem.x.clone();
    let target_norm = l2_norm(&problem.target);
    let cosine = |y: Tensor<B, 2>| cosine(&y, &problem.target, target_norm);
    let eval = |alpha: f32, beta: f32| -> Result<f64> {
        let xq = scaled(input, range, beta).fake_quant(xt.clone())?;
        Ok(cosine(problem.output(xq, problem.weight(alpha))))
    };
    let before = eval(1.0, 1.0)?;
    let (mut alpha, mut beta, mut best) = (1.0f32, 1.0f32, before);
    let grid = candidates(candidate_count);
    for _ in 0..rounds {
        // Weights, with the inputs fixed.
        let xq = scaled(input, range, beta).fake_quant(xt.clone())?;
        for &a in &grid {
            let sim = cosine(problem.output(xq.clone(), problem.weight(a)));
            if sim > best {
                (best, alpha) = (sim, a);
            }
        }
        // Inputs, with the weights fixed.
        let wq = problem.weight(alpha);
        for &b in &grid {
            let xq = scaled(input, range, b).fake_quant(xt.clone())?;
            let sim = cosine(problem.output(xq, wq.clone()));
            if sim > best {
                (best, beta) = (sim, b);
            }
        }
    }
    let chosen = QuantParams {
        scales: problem.scales(alpha),
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
