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
//!
//! **Bias correction** (the paper's, after Nagel et al. 2019; [`SearchOptions::bias_correction`]): the
//! quantized output's expected error `E[Q(X)·Q(W)ᵀ − X·Wᵀ]`, one value per output channel, is estimated
//! on the sampled rows and subtracted from the bias. Clipped weights and inputs bias the output whenever the
//! inputs do not have zero mean, and cosine similarity alone does not see a shift shared by every row.
//! Every candidate is scored after its own correction, so the search picks the scales that are best once
//! corrected. Layers without a bias are searched without it (there is nowhere to put the correction).

use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::layers::ActQuant;
use crate::observer::Range;
use crate::uniform::{self, scale_and_zero_point};
use crate::{Granularity, QuantParams, QuantizedTensor, Scheme};

/// The lower and upper multiples searched.
pub const SEARCH_RANGE: [f32; 2] = [0.5, 1.2];

/// How [`search_linear`] searches.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SearchOptions {
    /// Candidate multiples per search, evenly spaced in [`SEARCH_RANGE`] (plus 1).
    pub candidates: u32,
    /// Alternating weight / input rounds.
    pub rounds: u32,
    /// Correct the bias for the quantized output's mean error (see the module docs).
    pub bias_correction: bool,
}

/// What [`search_linear`] found.
#[derive(Clone, Debug)]
pub struct SearchResult {
    /// The weight, quantized with the chosen scales.
    pub weight: QuantizedTensor,
    /// The input quantizer with the chosen range.
    pub input: ActQuant,
    /// The corrected bias (`None` when bias correction is off or the layer has no bias).
    pub bias: Option<Vec<f32>>,
    /// Cosine similarity with the calibrated scales (and no bias correction).
    pub similarity_before: f64,
    /// Cosine similarity with the chosen scales (and the corrected bias).
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

/// A linear layer's quantization problem on the device: the sampled inputs `x` (`[rows, k]`), the float
/// weight transposed (`[k, n]`) and the bias, the float output `target = x·Wᵀ + b`, and, for the scale
/// searches, the weight fake-quantized at the calibrated scales times a factor
/// ([`LinearProblem::weight`]). Shared by the similarity search, PTQ4ViT and bias correction.
pub(crate) struct LinearProblem<B: Backend> {
    /// The sampled inputs `[rows, k]`.
    pub x: Tensor<B, 2>,
    /// The float output `[rows, n]`.
    pub target: Tensor<B, 2>,
    wt: Tensor<B, 2>,
    bias: Option<Tensor<B, 2>>,
    grid: Option<WeightGrid>,
    n: usize,
}

/// The calibrated weight quantizer the searches scale.
struct WeightGrid {
    scales: Vec<f32>,
    per_channel: bool,
    qrange: (i32, i32),
}

impl<B: Backend> LinearProblem<B> {
    /// `x` holds `rows` rows of `k`, `w` is `[n, k]`.
    pub fn new(
        x: &[f32],
        rows: usize,
        w: &[f32],
        bias: Option<&[f32]>,
        [n, k]: [usize; 2],
        device: &B::Device,
    ) -> Self {
        let x = Tensor::<B, 2>::from_data(TensorData::new(x.to_vec(), [rows, k]), device);
        let bias = bias.map(|b| {
            Tensor::<B, 1>::from_data(TensorData::new(b.to_vec(), [n]), device).reshape([1, n])
        });
        let mut problem = Self {
            target: x.clone(),
            x,
            wt: Self::transposed(w, [n, k], device),
            bias,
            grid: None,
            n,
        };
        problem.target = problem.output(problem.x.clone(), problem.wt.clone());
        problem
    }

    /// With the calibrated weight quantizer `params` (its scales per tensor, or per output channel when
    /// `per_channel`) that [`LinearProblem::weight`] scales.
    pub fn with_grid(mut self, params: &QuantParams, per_channel: bool) -> Self {
        self.grid = Some(WeightGrid {
            scales: params.scales.clone(),
            per_channel,
            qrange: params.spec.qrange(),
        });
        self
    }

    /// A weight `[n, k]` on the device, transposed to `[k, n]`.
    pub fn transposed(w: &[f32], [n, k]: [usize; 2], device: &B::Device) -> Tensor<B, 2> {
        // [k, n]: the product is X · Wt.
        Tensor::<B, 2>::from_data(TensorData::new(w.to_vec(), [n, k]), device).transpose()
    }

    /// `x · wt + b` for quantized operands `x` (`[rows, k]`) and `wt` (`[k, n]`).
    pub fn output(&self, x: Tensor<B, 2>, wt: Tensor<B, 2>) -> Tensor<B, 2> {
        let y = x.matmul(wt);
        match &self.bias {
            Some(b) => y + b.clone(),
            None => y,
        }
    }

    /// The mean error of a quantized output `y` (`[rows, n]`) against the float target, per output
    /// channel (`[1, n]`): what bias correction subtracts.
    pub fn mean_error(&self, y: &Tensor<B, 2>) -> Tensor<B, 2> {
        (y.clone() - self.target.clone()).mean_dim(0)
    }

    /// Bias correction for the quantized output `y`: the bias less [`LinearProblem::mean_error`]
    /// (`None` for a layer without a bias).
    pub fn corrected_bias(&self, y: &Tensor<B, 2>) -> Result<Option<Vec<f32>>> {
        match &self.bias {
            Some(b) => Ok(Some(
                uniform::tensor_to_vec(&(b.clone() - self.mean_error(y)))?.0,
            )),
            None => Ok(None),
        }
    }

    /// The calibrated scales times `alpha` (empty without a grid).
    pub fn scales(&self, alpha: f32) -> Vec<f32> {
        self.scales_scaled(&[alpha])
    }

    /// The calibrated scales times `factors`: one factor for all scales, or one per scale (per output
    /// channel); empty without a grid.
    pub fn scales_scaled(&self, factors: &[f32]) -> Vec<f32> {
        self.grid
            .iter()
            .flat_map(|g| {
                g.scales
                    .iter()
                    .zip(factors.iter().cycle())
                    .map(|(s, f)| s * f)
            })
            .collect()
    }

    /// The weight, transposed (`[k, n]`), fake-quantized at the scales `alpha·Δ` (the float weight
    /// without a grid).
    pub fn weight(&self, alpha: f32) -> Tensor<B, 2> {
        self.weight_scaled(&[alpha])
    }

    /// [`LinearProblem::weight`] at the scales of [`LinearProblem::scales_scaled`].
    pub fn weight_scaled(&self, factors: &[f32]) -> Tensor<B, 2> {
        let Some(grid) = &self.grid else {
            return self.wt.clone();
        };
        let s = self.scales_scaled(factors);
        let len = s.len();
        let st = Tensor::<B, 1>::from_data(TensorData::new(s, [len]), &self.wt.device());
        let st = if grid.per_channel {
            st.reshape([1, self.n])
        } else {
            st.reshape([1, 1])
        };
        let (qmin, qmax) = grid.qrange;
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
    options: SearchOptions,
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
    let problem =
        LinearProblem::<B>::new(x, rows, w, bias, [n, k], device).with_grid(&params, per_channel);
    let xt = problem.x.clone();
    let target_norm = l2_norm(&problem.target);
    let correct = options.bias_correction && bias.is_some();
    // Each candidate is scored after its own bias correction.
    let score = |y: Tensor<B, 2>| {
        let y = if correct {
            let e = problem.mean_error(&y);
            y - e
        } else {
            y
        };
        cosine(&y, &problem.target, target_norm)
    };
    let quantized = |alpha: f32, beta: f32| -> Result<Tensor<B, 2>> {
        let xq = scaled(input, range, beta).fake_quant(xt.clone())?;
        Ok(problem.output(xq, problem.weight(alpha)))
    };
    let before = cosine(&quantized(1.0, 1.0)?, &problem.target, target_norm);
    let (mut alpha, mut beta) = (1.0f32, 1.0f32);
    let mut best = score(quantized(1.0, 1.0)?);
    let grid = candidates(options.candidates);
    for _ in 0..options.rounds {
        // Weights, with the inputs fixed.
        let xq = scaled(input, range, beta).fake_quant(xt.clone())?;
        for &a in &grid {
            let sim = score(problem.output(xq.clone(), problem.weight(a)));
            if sim > best {
                (best, alpha) = (sim, a);
            }
        }
        // Inputs, with the weights fixed.
        let wq = problem.weight(alpha);
        for &b in &grid {
            let xq = scaled(input, range, b).fake_quant(xt.clone())?;
            let sim = score(problem.output(xq, wq.clone()));
            if sim > best {
                (best, beta) = (sim, b);
            }
        }
    }
    let corrected = if correct {
        problem.corrected_bias(&quantized(alpha, beta)?)?
    } else {
        None
    };
    let chosen = QuantParams {
        scales: problem.scales(alpha),
        ..params
    };
    let codes = uniform::quantize_ref(w, &chosen)?;
    Ok(SearchResult {
        weight: QuantizedTensor::from_codes(&codes, &chosen)?,
        input: scaled(input, range, beta),
        bias: corrected,
        similarity_before: before,
        similarity_after: best,
    })
}

/// Bias correction of a linear layer whose quantizers are already chosen (plain calibration): the rows
/// `x` (`[rows, k]`) run through the float layer (`w` `[n, k]`, `bias`) and the quantized one (the
/// dequantized weight `w_hat`, inputs through `input`); returns the bias less the mean error per output
/// channel (the same correction the searches apply).
pub fn correct_bias<B: Backend>(
    x: &[f32],
    [w, w_hat]: [&[f32]; 2],
    bias: &[f32],
    [n, k]: [usize; 2],
    input: &ActQuant,
    device: &B::Device,
) -> Result<Vec<f32>> {
    let rows = x.len() / k.max(1);
    if rows == 0
        || x.len() != rows * k
        || w.len() != n * k
        || w_hat.len() != n * k
        || bias.len() != n
    {
        return Err(Error::ShapeMismatch {
            what: "bias correction rows / weight / bias".into(),
            expected: vec![n, k],
            got: vec![x.len(), w.len(), w_hat.len(), bias.len()],
        });
    }
    let problem = LinearProblem::<B>::new(x, rows, w, Some(bias), [n, k], device);
    let y = problem.output(
        input.fake_quant(problem.x.clone())?,
        LinearProblem::<B>::transposed(w_hat, [n, k], device),
    );
    Ok(problem.corrected_bias(&y)?.unwrap_or_default())
}
