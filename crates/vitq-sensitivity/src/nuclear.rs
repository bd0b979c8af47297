//! Nuclear-norm mixed precision (Liu et al., "Post-Training Quantization for Vision Transformer",
//! NeurIPS 2021, §3.4): bits per layer from the nuclear norm of each layer's output on calibration
//! data, under a model-size budget, with no evaluation of the quantized model.
//!
//! The paper takes the nuclear norm `‖Y_l‖_* = Σ_j σ_j(Y_l)` of a layer's output feature (the attention
//! map of an attention matmul, the output of the linears) as its sensitivity: a layer with more diverse
//! features loses more when quantized. [`measure`] computes, from the samples of
//! [`vitq_core::nuclear::sample_layers`], `‖Y_l‖_*` for every sampled layer and the output perturbation
//! `‖Ŷ_l(c) − Y_l‖²_F` of every layer with weights at every candidate `c`. [`allocate_nuclear`] then
//! picks one candidate per layer within the budget, with [`crate::mixed::solve`] (exact), minimizing
//! one of two [`Criterion`]s:
//! - [`Criterion::Perturbation`] (the paper's Eq. 10, the default): `Ω = Σ_l ‖Y_l‖_* · ‖Ŷ_l(c_l) − Y_l‖²_F`.
//!   The paper ranks candidate configurations by `Ω` on a Pareto front and keeps the best one within the
//!   target size; the dynamic program finds that configuration without enumerating them.
//! - [`Criterion::WeightedBits`]: maximize `Σ_l ‖Y_l‖_* · b_l` (the bits alone, no measurement of the
//!   quantization error), i.e. minimize its negative.
//!
//! Only layers with weights take part (the attention matmuls have no weights and cost nothing in a
//! size budget; their attention-map norms are reported). Allocatable layers without a sample (the
//! patch-embedding convolution) keep the setting's bits. The result is a [`vitq_core::QuantConfig`]
//! with per-layer overrides, written by [`crate::mixed::mixed_config`] like the measured allocations.
//!
//! ```
//! use vitq_core::nuclear::{LayerSample, Sample};
//! use vitq_sensitivity::nuclear::{Criterion, measure};
//! use vitq_sensitivity::{Candidate, Setting};
//!
//! let fc = LayerSample {
//!     name: "fc".into(),
//!     sample: Sample::Linear { weight: vec![1.0, 0.0, 0.0, 2.0], bias: None, shape: [2, 2], x: vec![1.0, 1.0, 3.0, -1.0] },
//! };
//! let m = measure(&[fc], &Setting::parse("w4a8")?, &Candidate::parse_list("4,8")?)?;
//! assert!(m[0].nuclear_norm > 0.0);
//! assert!(m[0].perturbation[0] >= m[0].perturbation[1]); // 4 bits perturb more than 8
//! assert_eq!(Criterion::Perturbation.to_string(), "perturbation");
//! # Ok::<(), vitq_sensitivity::Error>(())
//! ```

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use vitq_core::QuantConfig;
use vitq_core::nuclear::{LayerSample, Sample};
use vitq_energy::{EnergyTable, Network};

use crate::ablation::{Candidate, Setting, candidate_specs};
use crate::error::{Error, Result};
use crate::mixed::{Budget, Choice, LayerPick, choose, costs, mixed_config};

/// What the allocation minimizes (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Criterion {
    /// `Σ ‖Y‖_* · ‖Ŷ − Y‖²_F` (the paper's Eq. 10).
    #[default]
    Perturbation,
    /// `−Σ ‖Y‖_* · b`.
    WeightedBits,
}

impl FromStr for Criterion {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "perturbation" | "omega" => Ok(Criterion::Perturbation),
            "weighted-bits" | "bits" => Ok(Criterion::WeightedBits),
            other => Err(Error::Invalid(format!(
                "nuclear criterion `{other}`: use perturbation or weighted-bits"
            ))),
        }
    }
}

impl fmt::Display for Criterion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Criterion::Perturbation => "perturbation",
            Criterion::WeightedBits => "weighted-bits",
        })
    }
}

/// One sampled layer's measurements.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerNuclear {
    /// Module path.
    pub layer: String,
    /// Nuclear norm of its float output on the sample.
    pub nuclear_norm: f64,
    /// `‖Ŷ − Y‖²_F` at each candidate (in the order given), empty for layers without weights or
    /// without quantized weights in the setting.
    pub perturbation: Vec<f64>,
}

/// Nuclear norms of every sampled layer and, for the layers whose weights `setting` quantizes, the
/// output perturbation at each of `candidates` (weights and inputs quantized with the setting's specs
/// at the candidate's bits).
pub fn measure(
    samples: &[LayerSample],
    setting: &Setting,
    candidates: &[Candidate],
) -> Result<Vec<LayerNuclear>> {
    if candidates.is_empty() {
        return Err(Error::Invalid("no candidate bit-widths given".into()));
    }
    samples
        .iter()
        .map(|s| {
            let nuclear_norm = s.nuclear_norm()?;
            let lq = setting.config.resolve(&s.name);
            let perturbation = match (&s.sample, lq.weights) {
                (Sample::Linear { .. }, Some(_)) => candidates
                    .iter()
                    .map(|c| {
                        let (w, a) = candidate_specs(&setting.name, &s.name, lq, *c)?;
                        Ok(s.perturbation(w, a)?)
                    })
                    .collect::<Result<Vec<_>>>()?,
                _ => Vec::new(),
            };
            Ok(LayerNuclear {
                layer: s.name.clone(),
                nuclear_norm,
                perturbation,
            })
        })
        .collect()
}

/// The inputs of [`allocate_nuclear`].
#[derive(Debug)]
pub struct NuclearRequest<'a> {
    /// The model's layers and shapes (`Network::from_preset`).
    pub network: &'a Network,
    /// The base setting: its specs are kept, only the bits change.
    pub setting: &'a Setting,
    /// The bits to choose from (those [`measure`] was given, in the same order).
    pub candidates: &'a [Candidate],
    /// The budget (bytes or average bits; energy works too).
    pub budget: Budget,
    /// What is minimized.
    pub criterion: Criterion,
    /// Energy prices (for [`Budget::EnergyPj`]).
    pub table: &'a EnergyTable,
}

/// A nuclear-norm allocation and the config that applies it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NuclearAllocation {
    /// The budget it meets.
    pub budget: Budget,
    /// What was minimized.
    pub criterion: Criterion,
    /// Per allocated layer, in network order (`score`: the layer's term of the criterion).
    pub layers: Vec<LayerPick>,
    /// The measurements it was made from (matmuls included).
    pub measured: Vec<LayerNuclear>,
    /// Total cost in the budget's unit.
    pub cost: f64,
    /// The criterion's value.
    pub score: f64,
    /// The config.
    #[serde(skip)]
    pub config: QuantConfig,
}

impl NuclearAllocation {
    /// The config as TOML, with a comment header naming the budget and each layer's pick and norm.
    pub fn to_toml(&self) -> Result<String> {
        let mut out = format!(
            "# Nuclear-norm mixed precision (Liu et al. 2021) written by vitq-sensitivity: budget {}, \
             criterion {}, total cost {}.\n",
            self.budget, self.criterion, self.cost
        );
        for p in &self.layers {
            let norm = self
                .measured
                .iter()
                .find(|m| m.layer == p.layer)
                .map_or(f64::NAN, |m| m.nuclear_norm);
            out.push_str(&format!(
                "#   {:<24} {:<6} cost {:<12} nuclear norm {:<12.4} term {:.6e}\n",
                p.layer,
                p.candidate.to_string(),
                p.cost,
                norm,
                p.score
            ));
        }
        out.push_str(&self.config.to_toml_string()?);
        Ok(out)
    }
}

/// Chooses one candidate per layer within the budget, minimizing the request's [`Criterion`] over the
/// measurements `measured` (from [`measure`] with the same candidates).
pub fn allocate_nuclear(
    req: &NuclearRequest<'_>,
    measured: &[LayerNuclear],
) -> Result<NuclearAllocation> {
    if req.candidates.is_empty() {
        return Err(Error::Invalid("no candidate bit-widths given".into()));
    }
    let costs = costs(
        req.network,
        req.setting,
        req.candidates,
        req.budget,
        req.table,
    )?;
    let (picks, cost, score) = choose(&costs, req.candidates, req.budget, |name, row| {
        match measured
            .iter()
            .find(|m| m.layer == name && !m.perturbation.is_empty())
        {
            Some(m) => {
                if m.perturbation.len() != req.candidates.len() {
                    return Err(Error::Invalid(format!(
                        "layer `{name}` was measured at {} candidates, the request has {}",
                        m.perturbation.len(),
                        req.candidates.len()
                    )));
                }
                Ok(req
                    .candidates
                    .iter()
                    .zip(row)
                    .zip(&m.perturbation)
                    .enumerate()
                    .map(|(i, ((c, k), p))| {
                        let score = match req.criterion {
                            Criterion::Perturbation => m.nuclear_norm * p,
                            Criterion::WeightedBits => -m.nuclear_norm * f64::from(c.weight_bits),
                        };
                        (i, Choice::new(*k, score))
                    })
                    .collect())
            }
            None => {
                // Not sampled: the setting's bits if a candidate has them, else the most bits.
                let bits = req
                    .setting
                    .config
                    .resolve(name)
                    .weights
                    .map(|s| s.bits.get());
                let idx = req
                    .candidates
                    .iter()
                    .position(|c| Some(c.weight_bits) == bits && c.activation_bits.is_none())
                    .or_else(|| {
                        (0..req.candidates.len()).max_by_key(|&i| req.candidates[i].weight_bits)
                    })
                    .unwrap_or(0);
                Ok(vec![(idx, Choice::new(row[idx], 0.0))])
            }
        }
    })?;
    let name = format!("nuclear-{}-{}", req.setting.name, req.criterion);
    let config = mixed_config(req.setting, &picks, &name)?;
    Ok(NuclearAllocation {
        budget: req.budget,
        criterion: req.criterion,
        layers: picks,
        measured: measured.to_vec(),
        cost,
        score,
        config,
    })
}
