//! PTQ4ViT (Yuan et al., "PTQ4ViT: Post-Training Quantization for Vision Transformers with Twin Uniform
//! Quantization", ECCV 2022), selected by [`PtqMethod::Ptq4vit`]: twin-uniform quantizers for the
//! post-softmax and post-GELU activations ([`crate::twin`]) and a Hessian-guided search of every linear
//! and matmul layer's scales.
//!
//! [`quantize`] (called by [`crate::ptq::quantize`]):
//! 1. runs the float model once over the calibration batches on burn's autodiff backend and records,
//!    for every linear and matmul layer, its inputs and `∂L/∂O`, the gradient of the task loss with
//!    respect to its output ([`crate::hessian`], which also says which loss); up to `rows` rows per
//!    linear layer (for a matmul, whole attention heads holding about as many rows) are kept, spread
//!    over the batches;
//! 2. quantizes the model as [`PtqMethod::Plain`] would (weights with their specs, activation ranges
//!    from the observers): the starting point;
//! 3. searches each linear layer with quantized weights and static input (`qkv`, `proj`, `fc1`, `fc2`,
//!    `head`) and each attention matmul, alternately for `rounds` rounds: the weight scales
//!    (`α·Δ_W`), then the input quantizer: a uniform range `β·[lo, hi]`, the twin `Δ_R2 = β·max/(2^(k−1) − 1)`
//!    of `fc2`'s post-GELU input (its `m` set so that `R1` covers the negatives), the twin `m ∈ 0..20`
//!    of the post-softmax operand of `matmul_av`. `α` and `β` run over the paper's grid, `candidates + 1`
//!    evenly spaced values of `[0.01, 1.2]` (the authors use 100 and 3 rounds); the calibrated scales are
//!    the starting point and are kept unless a candidate is strictly better. Best means the smallest
//!    Hessian-guided distance of the paper (§4.2),
//!    `Σ (Ô − O)ᵀ diag((∂L/∂O)²) (Ô − O)` over the sampled rows, `O` the float output, `Ô` the output with
//!    quantized operands;
//! 4. fixes the chosen scales; inputs with a twin quantizer run the simulated path.
//!
//! The patch-embedding convolution keeps its calibrated scales (the authors leave its input in float).
//! With `metric = "mse"` the distance is the plain squared error (the paper's ablation); a layer whose
//! output gradient is zero everywhere is searched with it too.
//!
//! ```
//! use vitq_core::{PtqMethod, QuantConfig};
//! let cfg = QuantConfig::from_toml_str(r#"
//!     version = 1
//!     weights = { bits = 6, granularity = { kind = "per_channel", axis = 0 } }
//!     activations = { bits = 6, scheme = { kind = "asymmetric" } }
//!     method = { kind = "ptq4vit", candidates = 50 }
//! "#)?;
//! assert!(matches!(cfg.method, PtqMethod::Ptq4vit { candidates: 50, rounds: 3, .. }));
//! # Ok::<(), vitq_core::Error>(())
//! ```

use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::config::ActivationMode;
use crate::error::{Error, Result, ResultExt};
use crate::hessian::Capture;
use crate::layers::{ActQuant, LayerMut};
use crate::observer::Range;
use crate::ptq::{Quantizable, layer_names};
use crate::twin::{TwinKind, TwinQuant};
use crate::uniform::{self, scale_and_zero_point};
use crate::{PtqMethod, QuantConfig, QuantParams, QuantizedTensor};

/// The distance the scale search minimizes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchMetric {
    /// `Σ (∂L/∂O)² (Ô − O)²`: the paper's Hessian-guided metric.
    #[default]
    Hessian,
    /// `Σ (Ô − O)²` (the paper's ablation).
    Mse,
}

/// The lower and upper multiples of the calibrated scales searched (the authors' `eq_alpha`,
/// `eq_beta`).
pub const GRID: [f32; 2] = [0.01, 1.2];

/// The shifts `m` searched for the post-softmax twin quantizer (the authors' split points `2^-m`).
pub const SOFTMAX_SHIFTS: std::ops::Range<u32> = 0..20;

pub(crate) fn default_candidates() -> u32 {
    100
}
pub(crate) fn default_rounds() -> u32 {
    3
}
pub(crate) fn default_rows() -> u32 {
    512
}
pub(crate) fn default_true() -> bool {
    true
}

impl PtqMethod {
    /// PTQ4ViT with the paper's settings (100 candidates, 3 rounds, both twin quantizers, Hessian
    /// metric) and 512 rows per layer.
    pub fn ptq4vit() -> Self {
        PtqMethod::Ptq4vit {
            candidates: default_candidates(),
            rounds: default_rounds(),
            rows: default_rows(),
            twin_softmax: true,
            twin_gelu: true,
            metric: SearchMetric::Hessian,
        }
    }
}

/// What is searched in one layer.
#[derive(Clone, Debug)]
enum Target {
    Linear {
        w: Vec<f32>,
        bias: Option<Vec<f32>>,
        n: usize,
        k: usize,
        twin_gelu: bool,
    },
    MatMul {
        twin_softmax: bool,
    },
}

/// The rows kept for one layer.
#[derive(Clone, Debug, Default)]
struct Sample {
    /// Linear: input rows `[r, k]`; matmul: operand A of the kept heads `[h, m, k]`.
    a: Vec<f32>,
    /// Matmul: operand B `[h, k, n]`.
    b: Vec<f32>,
    /// The output gradient rows `[r, n]` / `[h, m, n]`.
    g: Vec<f32>,
    /// `[m, k, n]` of a matmul head (the linear layer's are in its target).
    dims: [usize; 3],
    /// Rows (linear) or heads (matmul) kept.
    count: usize,
}

impl Sample {
    fn add_linear(&mut self, c: &Capture, k: usize, n: usize, quota: usize) -> Result<()> {
        let x = &c
            .inputs
            .first()
            .ok_or_else(|| Error::Empty {
                what: "captured inputs of a linear layer".into(),
                shape: vec![0],
            })?
            .data;
        let g = &c.output_grad.data;
        let rows = x.len() / k.max(1);
        if x.len() != rows * k || g.len() != rows * n {
            return Err(Error::ShapeMismatch {
                what: "captured input / output-gradient rows".into(),
                expected: vec![rows, k, n],
                got: vec![x.len(), g.len()],
            });
        }
        let step = rows.div_ceil(quota.max(1)).max(1);
        for r in (0..rows).step_by(step) {
            self.a.extend_from_slice(&x[r * k..(r + 1) * k]);
            self.g.extend_from_slice(&g[r * n..(r + 1) * n]);
            self.count += 1;
        }
        Ok(())
    }

    fn add_matmul(&mut self, c: &Capture, quota: usize) -> Result<()> {
        let (sa, sb, sg) = (&c.inputs[0].shape, &c.inputs[1].shape, &c.output_grad.shape);
        let r = sa.len();
        if r < 2 || sb.len() != r || sg.len() != r || sa[r - 1] != sb[r - 2] {
            return Err(Error::ShapeMismatch {
                what: "captured matmul operands".into(),
                expected: sa.clone(),
                got: sb.clone(),
            });
        }
        let (m, k, n) = (sa[r - 2], sa[r - 1], sb[r - 1]);
        let heads = c.inputs[0].data.len() / (m * k).max(1);
        if c.inputs[1].data.len() != heads * k * n || c.output_grad.data.len() != heads * m * n {
            return Err(Error::ShapeMismatch {
                what: "captured matmul heads (broadcast operands are not supported)".into(),
                expected: vec![heads, m, k, n],
                got: vec![c.inputs[1].data.len(), c.output_grad.data.len()],
            });
        }
        if self.count > 0 && self.dims != [m, k, n] {
            return Err(Error::ShapeMismatch {
                what: "matmul operands across calibration batches".into(),
                expected: self.dims.to_vec(),
                got: vec![m, k, n],
            });
        }
        self.dims = [m, k, n];
        let step = heads.div_ceil(quota.max(1)).max(1);
        for h in (0..heads).step_by(step) {
            self.a
                .extend_from_slice(&c.inputs[0].data[h * m * k..(h + 1) * m * k]);
            self.b
                .extend_from_slice(&c.inputs[1].data[h * k * n..(h + 1) * k * n]);
            self.g
                .extend_from_slice(&c.output_grad.data[h * m * n..(h + 1) * m * n]);
            self.count += 1;
        }
        Ok(())
    }
}

/// PTQ4ViT on a whole model (see the module docs); `config.method` must be [`PtqMethod::Ptq4vit`].
///
/// Errors: those of [`crate::ptq::quantize`], an empty calibration set, dynamic activations (nothing
/// to search), activation bits outside [`crate::twin::TWIN_BITS`] where a twin quantizer is asked for,
/// and a model that cannot capture gradients ([`Quantizable::capture_gradients`]).
pub fn quantize<B, M, I>(
    mut model: M,
    config: &QuantConfig,
    batches: I,
    progress: &mut dyn FnMut(usize),
) -> Result<M>
where
    B: Backend,
    M: Quantizable<B>,
    I: IntoIterator<Item = Tensor<B, 4>>,
{
    let PtqMethod::Ptq4vit {
        candidates,
        rounds,
        rows,
        twin_softmax,
        twin_gelu,
        metric,
    } = config.method
    else {
        return Err(Error::Config(
            "ptq4vit::quantize needs method = { kind = \"ptq4vit\" }".into(),
        ));
    };
    config.validate()?;
    config.check_layers(&layer_names(&mut model))?;
    if config.activation_mode == ActivationMode::Dynamic {
        return Err(Error::Config(
            "PTQ4ViT searches static activation scales: activation_mode must be \"static\"".into(),
        ));
    }
    let batches: Vec<Tensor<B, 4>> = batches.into_iter().collect();
    if batches.is_empty() {
        return Err(Error::Empty {
            what: "calibration set (PTQ4ViT searches scales on it)".into(),
            shape: vec![0],
        });
    }

    // What to search, from the float layers.
    let mut targets = Vec::new();
    for layer in model.layers_mut() {
        let name = layer.name().to_string();
        let lq = config.resolve(&name);
        let target = match (&layer, lq.weights, lq.activations) {
            (LayerMut::Linear(l), Some(_), Some(a)) => {
                let (w, shape) = l.weight_torch()?;
                let twin = twin_gelu && name.ends_with("mlp.fc2");
                if twin {
                    TwinQuant::softmax(a.bits.get(), 0).context(|| format!("layer `{name}`"))?;
                }
                Some(Target::Linear {
                    w,
                    bias: layer.bias()?,
                    n: shape[0],
                    k: shape[1],
                    twin_gelu: twin,
                })
            }
            (LayerMut::MatMul(_), _, Some(a)) => {
                let twin = twin_softmax && name.ends_with("matmul_av");
                if twin {
                    TwinQuant::softmax(a.bits.get(), 0).context(|| format!("layer `{name}`"))?;
                }
                Some(Target::MatMul { twin_softmax: twin })
            }
            _ => None,
        };
        targets.push(target);
    }

    // Inputs and output gradients of the float model.
    let mut samples = vec![Sample::default(); targets.len()];
    let nb = batches.len();
    for batch in &batches {
        let captures = model.capture_gradients(batch.clone())?;
        if captures.len() != targets.len() {
            return Err(Error::ShapeMismatch {
                what: "captures (one per quantizable layer)".into(),
                expected: vec![targets.len()],
                got: vec![captures.len()],
            });
        }
        for ((target, sample), capture) in targets.iter().zip(&mut samples).zip(captures) {
            match (target, capture) {
                (Some(Target::Linear { n, k, .. }), Some(c)) => {
                    sample.add_linear(&c, *k, *n, (rows as usize).div_ceil(nb))?
                }
                (Some(Target::MatMul { .. }), Some(c)) if c.inputs.len() == 2 => {
                    let m = c.inputs[0].shape.iter().rev().nth(1).copied().unwrap_or(1);
                    let heads = (rows as usize).div_ceil(m.max(1)).max(4);
                    sample.add_matmul(&c, heads.div_ceil(nb))?
                }
                _ => {}
            }
        }
    }

    // The starting point: plain calibration.
    let device = batches[0].device();
    let mut plain = config.clone();
    plain.method = PtqMethod::Plain;
    let mut model = crate::ptq::quantize(model, &plain, batches, progress)?;

    let grid: Vec<f32> = (0..=candidates.max(1))
        .map(|i| GRID[0] + (GRID[1] - GRID[0]) * i as f32 / candidates.max(1) as f32)
        .collect();
    let opts = Search {
        grid: &grid,
        rounds,
        metric,
    };
    for ((mut layer, target), sample) in model.layers_mut().into_iter().zip(targets).zip(samples) {
        let (Some(target), false) = (target, sample.count == 0) else {
            continue;
        };
        let name = layer.name().to_string();
        let Some(q) = layer.state().quantized().cloned() else {
            continue;
        };
        match target {
            Target::Linear {
                w,
                bias,
                n,
                k,
                twin_gelu,
            } => {
                let (Some(weight), Some(Some(act))) = (&q.weight, q.inputs.first()) else {
                    continue;
                };
                let found = opts.linear::<B>(
                    &w,
                    bias.as_deref(),
                    [n, k],
                    &sample,
                    weight,
                    act,
                    twin_gelu,
                    &device,
                );
                let (weight, input) = match found {
                    Ok(f) => f,
                    // Weights the search cannot scale keep their calibrated scales.
                    Err(Error::Unsupported(_)) => continue,
                    Err(e) => return Err(e).context(|| format!("PTQ4ViT search of `{name}`")),
                };
                let (act, twin) = match input {
                    InputQ::Uniform(a) => (a, None),
                    InputQ::Twin(t) => (*act, Some(t)),
                };
                layer
                    .set_quantized(Some(weight), vec![Some(act)])
                    .context(|| format!("layer `{name}`"))?;
                layer.state_mut().set_twin(0, twin)?;
            }
            Target::MatMul { twin_softmax } => {
                let (Some(Some(a)), Some(Some(b))) = (q.inputs.first(), q.inputs.get(1)) else {
                    continue;
                };
                let (qa, qb) = opts
                    .matmul::<B>(&sample, a, b, twin_softmax, &device)
                    .context(|| format!("PTQ4ViT search of `{name}`"))?;
                let (a, twin) = match qa {
                    InputQ::Uniform(u) => (u, None),
                    InputQ::Twin(t) => (*a, Some(t)),
                };
                let b = match qb {
                    InputQ::Uniform(u) => u,
                    InputQ::Twin(_) => *b,
                };
                layer
                    .set_quantized(None, vec![Some(a), Some(b)])
                    .context(|| format!("layer `{name}`"))?;
                layer.state_mut().set_twin(0, twin)?;
            }
        }
    }
    Ok(model)
}

/// A candidate input quantizer.
#[derive(Clone, Copy, Debug)]
enum InputQ {
    Uniform(ActQuant),
    Twin(TwinQuant),
}

impl InputQ {
    fn apply<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Result<Tensor<B, D>> {
        match self {
            InputQ::Uniform(a) => a.fake_quant(x),
            InputQ::Twin(t) => Ok(t.fake_quant(x)),
        }
    }
}

/// The input range `[lo, hi]` a static quantizer represents.
fn act_range(a: &ActQuant) -> Result<Range> {
    let (s, z) = a.params.ok_or_else(|| {
        Error::Unsupported("PTQ4ViT needs static (calibrated) activation ranges".into())
    })?;
    let (qmin, qmax) = a.spec.qrange();
    Ok(Range {
        min: (qmin - z) as f32 * s,
        max: (qmax - z) as f32 * s,
    })
}

/// The candidates of one input: the starting quantizer first.
fn input_candidates(a: &ActQuant, twin: Option<TwinKind>, grid: &[f32]) -> Result<Vec<InputQ>> {
    let r = act_range(a)?;
    let bits = a.spec.bits.get();
    Ok(match twin {
        None => std::iter::once(1.0)
            .chain(grid.iter().copied())
            .map(|beta| {
                let (s, z) = scale_and_zero_point(
                    &a.spec,
                    Range {
                        min: r.min * beta,
                        max: r.max * beta,
                    },
                );
                InputQ::Uniform(ActQuant {
                    spec: a.spec,
                    params: Some((s, z)),
                })
            })
            .collect(),
        Some(TwinKind::Gelu) => {
            let base = r.max.max(f32::EPSILON) / ((1u32 << (bits - 1)) - 1) as f32;
            std::iter::once(1.0)
                .chain(grid.iter().copied())
                .map(|beta| TwinQuant::gelu(bits, base * beta, r.min).map(InputQ::Twin))
                .collect::<Result<_>>()?
        }
        Some(TwinKind::Softmax) => SOFTMAX_SHIFTS
            .map(|m| TwinQuant::softmax(bits, m).map(InputQ::Twin))
            .collect::<Result<_>>()?,
    })
}

struct Search<'a> {
    grid: &'a [f32],
    rounds: u32,
    metric: SearchMetric,
}

impl Search<'_> {
    /// The squared output gradients (ones for the MSE metric or an all-zero gradient).
    fn weights<B: Backend, const D: usize>(&self, g: Tensor<B, D>) -> Tensor<B, D> {
        let g2 = g.powi_scalar(2);
        let total = g2.clone().sum().into_scalar().elem::<f64>();
        if self.metric == SearchMetric::Mse || !(total > 0.0 && total.is_finite()) {
            g2.ones_like()
        } else {
            g2
        }
    }

    /// Alternating search over `(weight candidate, input candidate)` indices, each `eval` a distance;
    /// index 0 of each list is the starting point.
    fn alternate(
        &self,
        nw: usize,
        ni: usize,
        mut eval: impl FnMut(usize, usize) -> Result<f64>,
    ) -> Result<(usize, usize)> {
        let (mut bw, mut bi) = (0, 0);
        let mut best = eval(0, 0)?;
        for _ in 0..self.rounds.max(1) {
            for w in 1..nw {
                let d = eval(w, bi)?;
                if d < best {
                    (best, bw) = (d, w);
                }
            }
            for i in 1..ni {
                let d = eval(bw, i)?;
                if d < best {
                    (best, bi) = (d, i);
                }
            }
        }
        Ok((bw, bi))
    }

    #[allow(clippy::too_many_arguments)]
    fn linear<B: Backend>(
        &self,
        w: &[f32],
        bias: Option<&[f32]>,
        [n, k]: [usize; 2],
        sample: &Sample,
        weight: &QuantizedTensor,
        act: &ActQuant,
        twin_gelu: bool,
        device: &B::Device,
    ) -> Result<(QuantizedTensor, InputQ)> {
        let params = weight
            .params()
            .ok_or_else(|| Error::Unsupported("PTQ4ViT searches uniform weights".into()))?;
        let per_channel = crate::search::symmetric_per_channel(&params, "PTQ4ViT")?;
        let rows = sample.count;
        let xt = Tensor::<B, 2>::from_data(TensorData::new(sample.a.clone(), [rows, k]), device);
        let g2 = self.weights(Tensor::<B, 2>::from_data(
            TensorData::new(sample.g.clone(), [rows, n]),
            device,
        ));
        let wt = Tensor::<B, 2>::from_data(TensorData::new(w.to_vec(), [n, k]), device).transpose();
        let bt = bias.map(|b| Tensor::<B, 1>::from_data(TensorData::new(b.to_vec(), [n]), device));
        let add_bias = |y: Tensor<B, 2>| match &bt {
            Some(b) => y + b.clone().reshape([1, n]),
            None => y,
        };
        let target = add_bias(xt.clone().matmul(wt.clone()));
        let dist = |y: Tensor<B, 2>| -> f64 {
            ((y - target.clone()).powi_scalar(2) * g2.clone())
                .sum()
                .into_scalar()
                .elem::<f64>()
        };
        let (qmin, qmax) = params.spec.qrange();
        let alphas: Vec<f32> = std::iter::once(1.0)
            .chain(self.grid.iter().copied())
            .collect();
        let scales = |alpha: f32| -> Vec<f32> { params.scales.iter().map(|s| s * alpha).collect() };
        let fq_weight = |alpha: f32| -> Tensor<B, 2> {
            let s = scales(alpha);
            let len = s.len();
            let st = Tensor::<B, 1>::from_data(TensorData::new(s, [len]), device);
            let st = if per_channel {
                st.reshape([1, n])
            } else {
                st.reshape([1, 1])
            };
            wt.clone()
                .div(st.clone())
                .round()
                .clamp(qmin as f32, qmax as f32)
                .mul(st)
        };
        let inputs = input_candidates(act, twin_gelu.then_some(TwinKind::Gelu), self.grid)?;
        // Cache the quantized operands of the current best on the other side.
        let mut xq_cache: Option<(usize, Tensor<B, 2>)> = None;
        let mut wq_cache: Option<(usize, Tensor<B, 2>)> = None;
        let (bw, bi) = self.alternate(alphas.len(), inputs.len(), |wi, ii| {
            let xq = match &xq_cache {
                Some((i, t)) if *i == ii => t.clone(),
                _ => {
                    let t = inputs[ii].apply(xt.clone())?;
                    xq_cache = Some((ii, t.clone()));
                    t
                }
            };
            let wq = match &wq_cache {
                Some((i, t)) if *i == wi => t.clone(),
                _ => {
                    let t = fq_weight(alphas[wi]);
                    wq_cache = Some((wi, t.clone()));
                    t
                }
            };
            Ok(dist(add_bias(xq.matmul(wq))))
        })?;
        let chosen = QuantParams {
            scales: scales(alphas[bw]),
            ..params
        };
        let codes = uniform::quantize_ref(w, &chosen)?;
        Ok((QuantizedTensor::from_codes(&codes, &chosen)?, inputs[bi]))
    }

    fn matmul<B: Backend>(
        &self,
        sample: &Sample,
        a: &ActQuant,
        b: &ActQuant,
        twin_softmax: bool,
        device: &B::Device,
    ) -> Result<(InputQ, InputQ)> {
        let [m, k, n] = sample.dims;
        let h = sample.count;
        let at = Tensor::<B, 3>::from_data(TensorData::new(sample.a.clone(), [h, m, k]), device);
        let bt = Tensor::<B, 3>::from_data(TensorData::new(sample.b.clone(), [h, k, n]), device);
        let g2 = self.weights(Tensor::<B, 3>::from_data(
            TensorData::new(sample.g.clone(), [h, m, n]),
            device,
        ));
        let target = at.clone().matmul(bt.clone());
        let ca = input_candidates(a, twin_softmax.then_some(TwinKind::Softmax), self.grid)?;
        let cb = input_candidates(b, None, self.grid)?;
        let mut a_cache: Option<(usize, Tensor<B, 3>)> = None;
        let mut b_cache: Option<(usize, Tensor<B, 3>)> = None;
        // The alternation's "weight" side is operand B, its "input" side operand A.
        let (bb, ba) = self.alternate(cb.len(), ca.len(), |bi, ai| {
            let aq = match &a_cache {
                Some((i, t)) if *i == ai => t.clone(),
                _ => {
                    let t = ca[ai].apply(at.clone())?;
                    a_cache = Some((ai, t.clone()));
                    t
                }
            };
            let bq = match &b_cache {
                Some((i, t)) if *i == bi => t.clone(),
                _ => {
                    let t = cb[bi].apply(bt.clone())?;
                    b_cache = Some((bi, t.clone()));
                    t
                }
            };
            Ok(
                ((aq.matmul(bq) - target.clone()).powi_scalar(2) * g2.clone())
                    .sum()
                    .into_scalar()
                    .elem::<f64>(),
            )
        })?;
        Ok((ca[ba], cb[bb]))
    }
}
