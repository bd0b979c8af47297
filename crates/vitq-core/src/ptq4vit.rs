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
//!    (`α·Δ_W`; with `channel_search` and per-channel weights each output channel may pick its own
//!    `α`, the analogue of the authors' separate search of each block of output channels, since a
//!    channel's share of the distance depends on its own scale alone; see below), then the input
//!    quantizer: a uniform range `β·[lo, hi]`, the twin `Δ_R2 = β·max/(2^(k−1) − 1)` of `fc2`'s
//!    post-GELU input (its `m` set so that `R1` covers the negatives), the twin `m ∈ 0..20`
//!    of the post-softmax operand of `matmul_av`. `α` and `β` run over the paper's grid, `candidates + 1`
//!    evenly spaced values of `range` (the authors use `[0.01, 1.2]`, 100 and 3 rounds); the calibrated scales are
//!    the starting point and are kept unless a candidate is strictly better (the softmax twin starts
//!    from the finest split whose `R1` holds the calibrated maximum). Best means the smallest
//!    Hessian-guided distance of the paper (§4.2),
//!    `Σ (Ô − O)ᵀ diag((∂L/∂O)²) (Ô − O)` over the sampled rows, `O` the float output, `Ô` the output with
//!    quantized operands;
//! 4. fixes the chosen scales; inputs with a twin quantizer run the simulated path.
//!
//! **Twin or uniform (`twin_select`, off by default; an extension of the paper).** Where a twin
//! quantizer is asked for (the softmax operand of `matmul_av`, the input of `fc2`), step 3 runs twice
//! with the same metric and the same rows: once over the twin candidates, once over the uniform ones
//! (each search with its own weight / operand-B scales), and the input keeps the quantizer whose search
//! ended at the smaller distance (a tie keeps the twin). Each twin range has `2^(k−1)` levels, one bit
//! less than the uniform quantizer, which pays only where the values spread over both ranges: peaky
//! attention (trained ViTs, the paper's case) keeps the twin; near-flat attention (all weights close to
//! `1/N`, as in randomly initialised ViTs) and post-GELU data at 8 bits often get the uniform one. The
//! uniform alternative of the softmax operand only searches `β ≥ 1` (no clipping of the calibrated
//! range), the twin's own rule (`R2` always reaches 1): the few attention heads sampled per layer
//! rarely hold the large weights that a clipped range would destroy, and a clipped range chosen on
//! them lost 1–1.5 dB of logits SQNR on held-out inputs of the `vit_tiny2` fixture. With
//! `twin_select = false` every twin is kept, as in the paper.
//!
//! **Per-channel factors (`channel_search`, off by default; an extension of the paper).** One `α`
//! per output channel has `n` times the freedom of one per layer, fitted on a few hundred rows whose
//! gradient weights come from a few probes: on random-init `deit_tiny_patch16_224` at W6A6, factors
//! fitted on the first 16 calibration images raised the distance on the other 16 by 1–670 % in the
//! `qkv`, `fc1` and `fc2` layers (and lowered it in most `proj` layers). So the choice is checked
//! on held-out rows: both searches, per channel and per layer, run on the first half of the rows
//! (the first calibration images), and the per-channel factors are kept only if they end at the
//! smaller distance on the second half; the winning kind is then searched again on all rows. A
//! layer with fewer than two rows keeps one factor.
//!
//! Why the search starts the softmax twin at the calibrated split: the alternation searches operand B
//! (`V`) first with the starting twin fixed. Started at `m = 0` (a 7-bit grid of `[0, 1]` at 8 bits),
//! near-flat attention weights `≈ 1/197` all round to `0` or `1/127`, and the search of `V` then
//! compensates that bias by clipping `V` (to `≈ 0.2×` its range), a local minimum that no single `m`
//! leaves: on random-init `deit_tiny_patch16_224` at W4A8 the twin ended 10⁵ times worse than a
//! uniform quantizer by the metric and the logits lost 0.8 dB against min-max.
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
use crate::search::act_range;
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

/// The default lower and upper multiples of the calibrated scales searched (the authors' `eq_alpha`,
/// `eq_beta`).
pub const GRID: [f32; 2] = [0.01, 1.2];

/// The shifts `m` searched for the post-softmax twin quantizer (the authors' split points `2^-m`).
pub const SOFTMAX_SHIFTS: std::ops::Range<u32> = 0..20;

pub(crate) fn default_candidates() -> u32 {
    100
}
pub(crate) fn default_range() -> [f32; 2] {
    GRID
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
pub(crate) fn default_probes() -> u32 {
    8
}

impl PtqMethod {
    /// PTQ4ViT with the paper's settings (100 candidates, 3 rounds, both twin quantizers kept, Hessian
    /// metric) and 512 rows per layer.
    pub fn ptq4vit() -> Self {
        PtqMethod::Ptq4vit {
            candidates: default_candidates(),
            range: default_range(),
            rounds: default_rounds(),
            rows: default_rows(),
            twin_softmax: true,
            twin_gelu: true,
            twin_select: false,
            channel_search: false,
            metric: SearchMetric::Hessian,
            probes: default_probes(),
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
        range: [lo, hi],
        rounds,
        rows,
        twin_softmax,
        twin_gelu,
        twin_select,
        channel_search,
        metric,
        probes,
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
        let captures = model.capture_gradients(batch.clone(), probes.max(1) as usize)?;
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
    // Bias correction, if asked for, follows the search (the starting point does not need it).
    plain.bias_correction = Some(false);
    let mut model = crate::ptq::quantize(model, &plain, batches, progress)?;

    let grid: Vec<f32> = (0..=candidates.max(1))
        .map(|i| lo + (hi - lo) * i as f32 / candidates.max(1) as f32)
        .collect();
    let opts = Search {
        grid: &grid,
        rounds,
        metric,
        twin_select,
        channel_search,
        bias_correction: config.bias_correction(),
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
                let (weight, input, corrected) = match found {
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
                if let Some(b) = corrected {
                    layer.set_bias(&b)?;
                }
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

/// The value last made for a key: the quantized operand of the current best on one side of the
/// alternating search, made again only when that side's choice changes.
struct Memo<K, T>(Option<(K, T)>);

impl<K, T> Default for Memo<K, T> {
    fn default() -> Self {
        Memo(None)
    }
}

impl<K: PartialEq, T: Clone> Memo<K, T> {
    fn get(&mut self, key: K, make: impl FnOnce() -> Result<T>) -> Result<T> {
        match &self.0 {
            Some((k, t)) if *k == key => Ok(t.clone()),
            _ => {
                let t = make()?;
                self.0 = Some((key, t.clone()));
                Ok(t)
            }
        }
    }
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

/// The candidate quantizers of one input, in families searched separately: the twin-uniform ones
/// (when a twin is asked for) and the uniform ones (when no twin is asked for, or with `twin_select`).
/// The first candidate of each family is its starting point: the calibrated range for the uniform
/// family (the quantizer [`PtqMethod::Plain`] would use), the calibrated maximum (GELU) or `m = 0`
/// (softmax) for the twin family.
struct Candidates {
    list: Vec<InputQ>,
    families: Vec<std::ops::Range<usize>>,
}

impl Candidates {
    fn new(a: &ActQuant, twin: Option<TwinKind>, grid: &[f32], twin_select: bool) -> Result<Self> {
        let r = act_range(a).ok_or_else(|| {
            Error::Unsupported("PTQ4ViT needs static (calibrated) activation ranges".into())
        })?;
        let bits = a.spec.bits.get();
        // The uniform alternative to the softmax twin keeps the calibrated range: no clipping.
        let floor = if twin == Some(TwinKind::Softmax) {
            1.0
        } else {
            f32::NEG_INFINITY
        };
        let uniform = || -> Vec<InputQ> {
            std::iter::once(1.0)
                .chain(grid.iter().copied().filter(|&beta| beta >= floor))
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
                .collect()
        };
        let twins: Option<Vec<InputQ>> = match twin {
            None => None,
            Some(TwinKind::Gelu) => {
                let base = r.max.max(f32::EPSILON) / ((1u32 << (bits - 1)) - 1) as f32;
                Some(
                    std::iter::once(1.0)
                        .chain(grid.iter().copied())
                        .map(|beta| TwinQuant::gelu(bits, base * beta, r.min).map(InputQ::Twin))
                        .collect::<Result<_>>()?,
                )
            }
            Some(TwinKind::Softmax) => {
                let twins = SOFTMAX_SHIFTS
                    .map(|m| TwinQuant::softmax(bits, m))
                    .collect::<Result<Vec<_>>>()?;
                // Start from the finest split whose R1 still holds the calibrated range.
                let start = twins
                    .iter()
                    .rposition(|t| t.in_r1(r.max) || t.m == 0)
                    .unwrap_or(0);
                let mut list = vec![InputQ::Twin(twins[start])];
                list.extend(
                    twins
                        .iter()
                        .enumerate()
                        .filter(|&(i, _)| i != start)
                        .map(|(_, t)| InputQ::Twin(*t)),
                );
                Some(list)
            }
        };
        let mut out = Candidates {
            list: Vec::new(),
            families: Vec::new(),
        };
        let with_uniform = twins.is_none() || twin_select;
        for family in twins.into_iter().chain(with_uniform.then(uniform)) {
            let start = out.list.len();
            out.list.extend(family);
            out.families.push(start..out.list.len());
        }
        Ok(out)
    }
}

struct Search<'a> {
    grid: &'a [f32],
    rounds: u32,
    metric: SearchMetric,
    /// Search a uniform family beside each twin family ([`Candidates`]).
    twin_select: bool,
    /// Each output channel of a per-channel weight picks its own multiple (`channel_search`).
    channel_search: bool,
    /// Correct the bias of each searched linear layer for its chosen quantizers
    /// ([`QuantConfig::bias_correction`]).
    bias_correction: bool,
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

    /// The search of one layer: for each family of input candidates, an alternating search over
    /// `(weight candidate, input candidate)` indices (`rounds` rounds: every weight candidate with the
    /// best input so far, then every input of the family with the best weights), starting from weight
    /// index 0 and the family's first input. The weight side is chosen per group: `groups` independent
    /// choices (a linear layer's output channels, whose distances do not depend on each other's
    /// scales; 1 for a matmul's operand B). `eval(weights, input)` is the distance of each group for
    /// one weight index per group. The family whose search ends at the smaller total distance wins (a
    /// tie keeps the earlier family: the twin one).
    fn select(
        &self,
        nw: usize,
        groups: usize,
        families: &[std::ops::Range<usize>],
        mut eval: impl FnMut(&[usize], usize) -> Result<Vec<f64>>,
    ) -> Result<(Vec<usize>, usize)> {
        let mut pick: Option<(f64, Vec<usize>, usize)> = None;
        for family in families {
            let (mut bw, mut bi) = (vec![0; groups], family.start);
            let mut best = eval(&bw, bi)?;
            for _ in 0..self.rounds.max(1) {
                for w in 1..nw {
                    let d = eval(&vec![w; groups], bi)?;
                    for ((b, bwg), dg) in best.iter_mut().zip(&mut bw).zip(d) {
                        if dg < *b {
                            (*b, *bwg) = (dg, w);
                        }
                    }
                }
                let mut total: f64 = best.iter().sum();
                for i in family.start + 1..family.end {
                    let d = eval(&bw, i)?;
                    let t: f64 = d.iter().sum();
                    if t < total {
                        (total, best, bi) = (t, d, i);
                    }
                }
            }
            let total: f64 = best.iter().sum();
            if pick.as_ref().is_none_or(|(d, _, _)| total < *d) {
                pick = Some((total, bw, bi));
            }
        }
        pick.map(|(_, w, i)| (w, i))
            .ok_or_else(|| Error::Config("PTQ4ViT: no input candidates to search".into()))
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
    ) -> Result<(QuantizedTensor, InputQ, Option<Vec<f32>>)> {
        let params = weight
            .params()
            .ok_or_else(|| Error::Unsupported("PTQ4ViT searches uniform weights".into()))?;
        let per_channel = crate::search::symmetric_per_channel(&params, "PTQ4ViT")?;
        let rows = sample.count;
        let problem =
            crate::search::LinearProblem::<B>::new(&sample.a, rows, w, bias, [n, k], device)
                .with_grid(&params, per_channel);
        let g2 = self.weights(Tensor::<B, 2>::from_data(
            TensorData::new(sample.g.clone(), [rows, n]),
            device,
        ));
        // With `channel_search`, each output channel of a per-channel weight may pick its own factor:
        // a column's distance depends only on its own scale (the authors search each block of output
        // channels, `n_V`, on its own).
        let by_channel = per_channel && self.channel_search;
        let alphas: Vec<f32> = std::iter::once(1.0)
            .chain(self.grid.iter().copied())
            .collect();
        let factors = |picks: &[usize]| -> Vec<f32> { picks.iter().map(|&i| alphas[i]).collect() };
        let inputs = Candidates::new(
            act,
            twin_gelu.then_some(TwinKind::Gelu),
            self.grid,
            self.twin_select,
        )?;
        // The distance of each output channel (`[n]`) on `rows` for one weight choice per group and
        // one input candidate, with caches of the quantized operands of the current best on the
        // other side.
        let on_rows = |rows: std::ops::Range<usize>| {
            let x = problem.x.clone().slice([rows.clone(), 0..k]);
            let target = problem.target.clone().slice([rows.clone(), 0..n]);
            let g2 = g2.clone().slice([rows, 0..n]);
            let (mut xq_memo, mut wq_memo) = (Memo::default(), Memo::default());
            let inputs = &inputs;
            let problem = &problem;
            let factors = &factors;
            move |wi: &[usize], ii: usize| -> Result<Vec<f64>> {
                let xq = xq_memo.get(ii, || inputs.list[ii].apply(x.clone()))?;
                let wq = wq_memo.get(wi.to_vec(), || Ok(problem.weight_scaled(&factors(wi))))?;
                let d = ((problem.output(xq, wq) - target.clone()).powi_scalar(2) * g2.clone())
                    .sum_dim(0);
                Ok(uniform::tensor_to_vec(&d)?
                    .0
                    .into_iter()
                    .map(f64::from)
                    .collect())
            }
        };
        let search = |rows: std::ops::Range<usize>, groups: usize| {
            let mut d = on_rows(rows);
            self.select(alphas.len(), groups, &inputs.families, |wi, ii| {
                let d = d(wi, ii)?;
                Ok(if groups == 1 {
                    vec![d.into_iter().sum()]
                } else {
                    d
                })
            })
        };
        // Per-channel factors are fitted on the first half of the rows (the first calibration
        // images) and kept only if they beat one factor for the layer, fitted on the same half, on
        // the other half; the winner is then searched again on every row.
        let half = rows / 2;
        let per_channel_holds = by_channel && half > 0 && {
            let (cw, ci) = search(0..half, n)?;
            let (lw, li) = search(0..half, 1)?;
            let mut held_out = on_rows(half..rows);
            let channels: f64 = held_out(&cw, ci)?.into_iter().sum();
            let layer: f64 = held_out(&lw, li)?.into_iter().sum();
            channels < layer
        };
        let (bw, bi) = search(0..rows, if per_channel_holds { n } else { 1 })?;
        let chosen = QuantParams {
            scales: problem.scales_scaled(&factors(&bw)),
            ..params
        };
        let codes = uniform::quantize_ref(w, &chosen)?;
        let corrected = if self.bias_correction {
            let y = problem.output(
                inputs.list[bi].apply(problem.x.clone())?,
                problem.weight_scaled(&factors(&bw)),
            );
            problem.corrected_bias(&y)?
        } else {
            None
        };
        Ok((
            QuantizedTensor::from_codes(&codes, &chosen)?,
            inputs.list[bi],
            corrected,
        ))
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
        let ca = Candidates::new(
            a,
            twin_softmax.then_some(TwinKind::Softmax),
            self.grid,
            self.twin_select,
        )?;
        let cb = Candidates::new(b, None, self.grid, false)?;
        let (mut a_memo, mut b_memo) = (Memo::default(), Memo::default());
        // The alternation's "weight" side is operand B, its "input" side operand A.
        let (bb, ba) = self.select(cb.list.len(), 1, &ca.families, |bi, ai| {
            let bi = bi[0];
            let aq = a_memo.get(ai, || ca.list[ai].apply(at.clone()))?;
            let bq = b_memo.get(bi, || cb.list[bi].apply(bt.clone()))?;
            Ok(vec![
                ((aq.matmul(bq) - target.clone()).powi_scalar(2) * g2.clone())
                    .sum()
                    .into_scalar()
                    .elem::<f64>(),
            ])
        })?;
        Ok((ca.list[ba], cb.list[bb[0]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::Rng;
    use crate::{Granularity, QuantSpec, Scheme};
    use burn::backend::Flex;

    type B = Flex;

    /// A min-max calibrated asymmetric per-tensor quantizer of `x`.
    fn act(bits: u32, x: &[f32]) -> ActQuant {
        let spec = QuantSpec::new(bits, Scheme::Asymmetric, Granularity::PerTensor).unwrap();
        let r = x.iter().fold(Range { min: 0.0, max: 0.0 }, |r, &v| Range {
            min: r.min.min(v),
            max: r.max.max(v),
        });
        ActQuant {
            spec,
            params: Some(scale_and_zero_point(&spec, r)),
        }
    }

    /// The search with `candidates = 30`, 2 rounds, the Hessian metric.
    fn search(grid: &[f32], twin_select: bool) -> Search<'_> {
        Search {
            grid,
            rounds: 2,
            metric: SearchMetric::Hessian,
            twin_select,
            channel_search: false,
            bias_correction: false,
        }
    }

    fn grid() -> Vec<f32> {
        (0..=30)
            .map(|i| GRID[0] + (GRID[1] - GRID[0]) * i as f32 / 30.0)
            .collect()
    }

    /// A `matmul_av` sample: softmax of `temperature · N(0, 1)` scores over 197 tokens, Gaussian `V`
    /// and output gradients.
    fn attention_sample(temperature: f32, seed: u64) -> Sample {
        let mut rng = Rng::new(seed);
        let (h, t, d) = (2, 197, 16);
        let mut a = Vec::with_capacity(h * t * t);
        for _ in 0..h * t {
            let l: Vec<f32> = (0..t).map(|_| temperature * rng.gaussian()).collect();
            let max = l.iter().fold(f32::MIN, |m, &v| m.max(v));
            let e: Vec<f32> = l.iter().map(|v| (v - max).exp()).collect();
            let s: f32 = e.iter().sum();
            a.extend(e.iter().map(|v| v / s));
        }
        Sample {
            a,
            b: rng.gaussian_vec(h * t * d),
            g: rng.gaussian_vec(h * t * d),
            dims: [t, t, d],
            count: h,
        }
    }

    /// The searched operands' Hessian-guided distance relative to `Σ g²·O²`.
    fn relative_distance(sample: &Sample, qa: InputQ, qb: InputQ) -> f64 {
        let [m, k, n] = sample.dims;
        let h = sample.count;
        let dev = Default::default();
        let a = Tensor::<B, 3>::from_data(TensorData::new(sample.a.clone(), [h, m, k]), &dev);
        let b = Tensor::<B, 3>::from_data(TensorData::new(sample.b.clone(), [h, k, n]), &dev);
        let g2 = Tensor::<B, 3>::from_data(TensorData::new(sample.g.clone(), [h, m, n]), &dev)
            .powi_scalar(2);
        let o = a.clone().matmul(b.clone());
        let oq = qa.apply(a).unwrap().matmul(qb.apply(b).unwrap());
        let sum = |t: Tensor<B, 3>| t.sum().into_scalar().elem::<f64>();
        sum((oq - o.clone()).powi_scalar(2) * g2.clone()) / sum(o.powi_scalar(2) * g2)
    }

    /// Near-flat attention (weights ≈ 1/197) at 8 bits: the twin quantizer puts every weight in
    /// `R1`, with half the levels of the uniform one, so the selection takes the uniform quantizer;
    /// and the twin-only search (the paper's) does not stall at `m = 0` with a clipped `V`.
    #[test]
    fn flat_attention_at_8_bits_selects_uniform() {
        let sample = attention_sample(0.1, 5);
        let (a, b) = (act(8, &sample.a), act(8, &sample.b));
        let grid = grid();
        let dev = Default::default();
        let (qa, qb) = search(&grid, true)
            .matmul::<B>(&sample, &a, &b, true, &dev)
            .unwrap();
        assert!(matches!(qa, InputQ::Uniform(_)), "{qa:?}");
        let selected = relative_distance(&sample, qa, qb);
        let (ta, tb) = search(&grid, false)
            .matmul::<B>(&sample, &a, &b, true, &dev)
            .unwrap();
        let InputQ::Twin(t) = ta else {
            panic!("twin_select = false keeps the twin: {ta:?}");
        };
        let twin = relative_distance(&sample, ta, tb);
        eprintln!(
            "flat attention, A8: uniform {selected:.3e}, twin (m = {}) {twin:.3e}",
            t.m
        );
        assert!(selected <= twin, "{selected:.3e} vs {twin:.3e}");
        // Started at m = 0 (before the calibrated start), it ended at m = 8 with about 0.2.
        assert!(twin < 1e-3, "twin search stalled: m = {}, {twin:.3e}", t.m);
    }

    /// Peaky attention at 4 bits: the twin quantizer (fine `R1` for the many small weights, `R2` up to
    /// 1 for the few large ones) has the smaller distance and is kept.
    #[test]
    fn peaky_attention_at_4_bits_keeps_the_twin() {
        let sample = attention_sample(3.0, 7);
        let (a, b) = (act(4, &sample.a), act(4, &sample.b));
        let grid = grid();
        let (qa, _) = search(&grid, true)
            .matmul::<B>(&sample, &a, &b, true, &Default::default())
            .unwrap();
        assert!(matches!(qa, InputQ::Twin(_)), "{qa:?}");
    }

    /// The uniform alternative of the softmax operand never clips the calibrated range.
    #[test]
    fn softmax_uniform_candidates_keep_the_calibrated_range() {
        let sample = attention_sample(1.0, 3);
        let a = act(8, &sample.a);
        let hi = act_range(&a).unwrap().max;
        let c = Candidates::new(&a, Some(TwinKind::Softmax), &grid(), true).unwrap();
        assert_eq!(c.families.len(), 2);
        let uniform = &c.list[c.families[1].clone()];
        assert!(uniform.len() > 1);
        for q in uniform {
            let InputQ::Uniform(u) = q else {
                panic!("{q:?}")
            };
            assert!(act_range(u).unwrap().max >= hi * (1.0 - 1e-5), "{u:?}");
        }
        // The twin family starts from the finest split whose R1 holds the calibrated maximum.
        let InputQ::Twin(t) = c.list[0] else {
            panic!("{:?}", c.list[0])
        };
        assert!(t.in_r1(hi));
        assert!(!TwinQuant::softmax(8, t.m + 1).unwrap().in_r1(hi));
        // Without a twin there is one (uniform) family; without the selection, one (twin) family.
        assert_eq!(
            Candidates::new(&a, None, &grid(), true)
                .unwrap()
                .families
                .len(),
            1
        );
        let twin_only = Candidates::new(&a, Some(TwinKind::Softmax), &grid(), false).unwrap();
        assert_eq!(twin_only.families, vec![0..SOFTMAX_SHIFTS.len()]);
    }

    /// A linear layer `w` (`[n, k]`) quantized per channel at `bits` with min-max scales (the
    /// calibrated weight) and then searched on the rows `x` / gradients `g` with the given
    /// `channel_search`, 8-bit min-max input, 30 candidates: (calibrated, searched, input).
    fn search_linear(
        w: &[f32],
        [n, k]: [usize; 2],
        x: &[f32],
        g: &[f32],
        bits: u32,
        channel_search: bool,
    ) -> (QuantizedTensor, QuantizedTensor, InputQ) {
        let spec =
            QuantSpec::new(bits, Scheme::Symmetric, Granularity::PerChannel { axis: 0 }).unwrap();
        let calibrated = QuantizedTensor::quantize(w, &[n, k], &spec).unwrap();
        let sample = Sample {
            a: x.to_vec(),
            g: g.to_vec(),
            count: x.len() / k,
            ..Sample::default()
        };
        let grid = grid();
        let opts = Search {
            channel_search,
            ..search(&grid, false)
        };
        let (q, input, _) = opts
            .linear::<B>(
                w,
                None,
                [n, k],
                &sample,
                &calibrated,
                &act(8, x),
                false,
                &Default::default(),
            )
            .unwrap();
        (calibrated, q, input)
    }

    /// With a handful of rows, per-channel factors fitted on half of them fit that half's noise and
    /// lose on the other half: `channel_search` then keeps one factor for the layer, the result
    /// of the search without it.
    #[test]
    fn per_channel_factors_that_do_not_hold_out_are_dropped() {
        let mut rng = Rng::new(5);
        let (n, k, rows) = (32, 64, 6);
        let w = rng.gaussian_vec(n * k);
        let x = rng.gaussian_vec(rows * k);
        let g = rng.gaussian_vec(rows * n);
        let scales = |channel_search| {
            let (_, q, _) = search_linear(&w, [n, k], &x, &g, 6, channel_search);
            q.params().unwrap().scales
        };
        assert_eq!(scales(true), scales(false));
    }

    /// Per-channel 4-bit weights where one output channel holds an outlier on an input that is
    /// nearly always zero (clipping it costs nothing) and the others are Gaussian: the per-channel
    /// factors hold on the held-out rows, every channel picks its own factor, the outlier's channel
    /// clips, and the search ends below the Hessian-guided distance of the best single factor for all
    /// channels (found here by brute force over the same grid with the chosen input quantizer).
    #[test]
    fn per_channel_weights_pick_their_own_factor() {
        let mut rng = Rng::new(11);
        let (n, k, rows) = (6, 64, 256);
        let mut w = rng.gaussian_vec(n * k);
        w[3] = 12.0;
        let mut x = rng.gaussian_vec(rows * k);
        x.iter_mut().skip(3).step_by(k).for_each(|v| *v *= 0.01);
        let g: Vec<f32> = rng.gaussian_vec(rows * n);
        let (calibrated, q, input) = search_linear(&w, [n, k], &x, &g, 4, true);
        let grid = grid();
        let dev = Default::default();
        let before = calibrated.params().unwrap().scales;
        let after = q.params().unwrap().scales;
        let ratios: Vec<f32> = after.iter().zip(&before).map(|(a, b)| a / b).collect();
        assert!(ratios[0] < 0.8, "the outlier's channel clips: {ratios:?}");
        assert!(
            ratios[1..].iter().any(|r| (r - ratios[0]).abs() > 0.1),
            "channels differ: {ratios:?}"
        );
        // The Hessian-guided distance of a weight `[n, k]` with the chosen input quantizer.
        let xt = Tensor::<B, 2>::from_data(TensorData::new(x, [rows, k]), &dev);
        let xq = input.apply(xt.clone()).unwrap();
        let g2 = Tensor::<B, 2>::from_data(TensorData::new(g, [rows, n]), &dev).powi_scalar(2);
        let wt =
            |v: Vec<f32>| Tensor::<B, 2>::from_data(TensorData::new(v, [n, k]), &dev).transpose();
        let target = xt.matmul(wt(w.clone()));
        let dist = |v: Vec<f32>| {
            ((xq.clone().matmul(wt(v)) - target.clone()).powi_scalar(2) * g2.clone())
                .sum()
                .into_scalar()
                .elem::<f64>()
        };
        let searched = dist(q.dequantize().unwrap());
        let best_single = std::iter::once(1.0)
            .chain(grid.iter().copied())
            .map(|alpha| {
                let params = QuantParams {
                    scales: before.iter().map(|s| s * alpha).collect(),
                    ..calibrated.params().unwrap()
                };
                let codes = uniform::quantize_ref(&w, &params).unwrap();
                dist(uniform::dequantize_ref(&codes, &params).unwrap())
            })
            .fold(f64::INFINITY, f64::min);
        assert!(
            searched < 0.97 * best_single,
            "per-channel {searched} against the best single factor {best_single}"
        );
    }
}
