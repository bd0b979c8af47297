//! Mixed precision: choose one [`Candidate`] bit-width per layer so that the summed per-layer
//! sensitivity is smallest while the model stays within a [`Budget`] (weight bytes, average weight
//! bits, or modelled energy), exactly.
//!
//! # The problem
//! Layer `l` at candidate `c` has a sensitivity `s[l][c]` (measured by quantizing only that layer at
//! those bits: [`crate::candidate_jobs`]) and a cost `k[l][c]` (its weight bytes, `weights × bits`,
//! or its energy from `vitq-energy`; layer costs add up exactly in all three). Minimize `Σ s[l][c_l]`
//! subject to `Σ k[l][c_l] ≤ budget`: a multiple-choice knapsack, NP-hard in general.
//!
//! # The solver
//! [`solve`] is an exact dynamic program over layers whose state is the list of *non-dominated*
//! partial assignments `(cost, sensitivity)`: after each layer, every state is extended by every
//! option, states over the budget are dropped, and a state is dropped when another has no more cost
//! and no more sensitivity (no completion of it can beat that one's). The optimum is the cheapest
//! state with the least sensitivity after the last layer, followed back to its choices. The lists are
//! never longer than the number of distinct reachable costs within the budget (so, for byte costs,
//! the classic `O(layers · options · budget)` knapsack bound holds), costs need not be integers, and
//! nothing is rounded. `brute_force` enumerates every assignment; the tests check that both agree on
//! random instances.
//!
//! Sensitivities are assumed additive over layers (as in HAWQ-V3's ILP and most mixed-precision
//! work): the [`Objective`] picks which measured score is summed.
//!
//! ```
//! use vitq_sensitivity::mixed::{Choice, solve};
//!
//! // Two layers, options (cost, sensitivity): 4-bit cheap and sensitive, 8-bit dear and safe.
//! let layers = vec![
//!     vec![Choice::new(4.0, 1.0), Choice::new(8.0, 0.1)],
//!     vec![Choice::new(4.0, 0.2), Choice::new(8.0, 0.0)],
//! ];
//! let best = solve(&layers, 12.0)?;
//! assert_eq!(best.picks, vec![1, 0]); // spend the extra bits on the sensitive layer
//! assert_eq!(best.cost, 12.0);
//! assert!((best.score - 0.3).abs() < 1e-12);
//! # Ok::<(), vitq_sensitivity::Error>(())
//! ```

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use vitq_core::{LayerOverride, QuantConfig};
use vitq_energy::{EnergyReport, EnergyTable, Network};

use crate::ablation::{Candidate, Job, Mode, Setting, candidate_specs, check_name, uniform_at};
use crate::error::{Error, Result};
use crate::metrics::Scores;
use crate::store::Store;
use crate::sweep::key_of;

/// One option of one layer: what it costs and how much it hurts.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Choice {
    /// Cost in budget units (≥ 0).
    pub cost: f64,
    /// Sensitivity (any finite value; smaller is better).
    pub score: f64,
}

impl Choice {
    /// A choice.
    pub fn new(cost: f64, score: f64) -> Self {
        Self { cost, score }
    }
}

/// The best assignment: one option index per layer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Solution {
    /// Chosen option of each layer.
    pub picks: Vec<usize>,
    /// Its total cost (summed in layer order).
    pub cost: f64,
    /// Its total sensitivity (summed in layer order).
    pub score: f64,
}

fn check_problem(layers: &[Vec<Choice>], budget: f64) -> Result<()> {
    if !budget.is_finite() {
        return Err(Error::Allocation(format!("budget {budget} is not finite")));
    }
    for (l, options) in layers.iter().enumerate() {
        if options.is_empty() {
            return Err(Error::Allocation(format!("layer {l} has no options")));
        }
        if let Some(c) = options
            .iter()
            .find(|c| !(c.cost.is_finite() && c.cost >= 0.0 && c.score.is_finite()))
        {
            return Err(Error::Allocation(format!(
                "layer {l} has an option with cost {} and sensitivity {}: costs must be finite and \
                 non-negative, sensitivities finite",
                c.cost, c.score
            )));
        }
    }
    Ok(())
}

fn over_budget(layers: &[Vec<Choice>], budget: f64) -> Error {
    let cheapest: f64 = layers
        .iter()
        .map(|o| o.iter().map(|c| c.cost).fold(f64::INFINITY, f64::min))
        .sum();
    Error::Allocation(format!(
        "the budget {budget} is below the cheapest assignment ({cheapest})"
    ))
}

#[derive(Clone, Copy)]
struct State {
    cost: f64,
    score: f64,
    parent: usize,
    pick: usize,
}

/// The assignment of least total sensitivity whose total cost is at most `budget` (exact; see the
/// module docs). Ties go to the cheaper assignment.
pub fn solve(layers: &[Vec<Choice>], budget: f64) -> Result<Solution> {
    check_problem(layers, budget)?;
    let start = State {
        cost: 0.0,
        score: 0.0,
        parent: 0,
        pick: 0,
    };
    let mut stages: Vec<Vec<State>> = vec![vec![start]];
    for options in layers {
        let prev = stages.last().map_or(&[][..], |v| v.as_slice());
        let mut next = Vec::with_capacity(prev.len() * options.len());
        for (i, s) in prev.iter().enumerate() {
            for (j, c) in options.iter().enumerate() {
                let cost = s.cost + c.cost;
                if cost <= budget {
                    next.push(State {
                        cost,
                        score: s.score + c.score,
                        parent: i,
                        pick: j,
                    });
                }
            }
        }
        if next.is_empty() {
            return Err(over_budget(layers, budget));
        }
        next.sort_by(|a, b| a.cost.total_cmp(&b.cost).then(a.score.total_cmp(&b.score)));
        let mut kept: Vec<State> = Vec::with_capacity(next.len());
        for s in next {
            if kept.last().is_none_or(|k| s.score < k.score) {
                kept.push(s);
            }
        }
        stages.push(kept);
    }
    // Scores strictly decrease along the last list: its last state is the optimum.
    let last = stages.last().map_or(&[][..], |v| v.as_slice());
    let Some(best) = last.last().copied() else {
        return Err(over_budget(layers, budget));
    };
    let mut picks = vec![0; layers.len()];
    let mut idx = last.len() - 1;
    for l in (0..layers.len()).rev() {
        let s = stages[l + 1][idx];
        picks[l] = s.pick;
        idx = s.parent;
    }
    Ok(Solution {
        picks,
        cost: best.cost,
        score: best.score,
    })
}

/// Every assignment tried (for tests on small instances; refuses more than 10⁷).
pub fn brute_force(layers: &[Vec<Choice>], budget: f64) -> Result<Solution> {
    check_problem(layers, budget)?;
    let total = layers
        .iter()
        .try_fold(1usize, |n, o| n.checked_mul(o.len()))
        .filter(|n| *n <= 10_000_000)
        .ok_or_else(|| Error::Allocation("too many assignments to enumerate".into()))?;
    let mut best: Option<Solution> = None;
    let mut picks = vec![0usize; layers.len()];
    for mut code in 0..total {
        for (p, o) in picks.iter_mut().zip(layers) {
            *p = code % o.len();
            code /= o.len();
        }
        let (mut cost, mut score) = (0.0, 0.0);
        for (p, o) in picks.iter().zip(layers) {
            cost += o[*p].cost;
            score += o[*p].score;
        }
        let better = best
            .as_ref()
            .is_none_or(|b| score < b.score || (score == b.score && cost < b.cost));
        if cost <= budget && better {
            best = Some(Solution {
                picks: picks.clone(),
                cost,
                score,
            });
        }
    }
    best.ok_or_else(|| over_budget(layers, budget))
}

/// Which measured score is summed over layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Objective {
    /// Mean KL divergence of the logits' softmax from the float model's (smooth, never negative;
    /// the default).
    Kl,
    /// Relative noise power of the logits, `10^(−SQNR/10)` (additive for independent errors).
    Noise,
    /// Top-1 accuracy drop in points (coarse on small sets; can be negative).
    AccuracyDrop,
}

impl Objective {
    /// The score of a measurement.
    pub fn of(self, s: &Scores) -> f64 {
        match self {
            Objective::Kl => s.kl,
            Objective::Noise => s.noise(),
            Objective::AccuracyDrop => s.accuracy_drop,
        }
    }
}

impl FromStr for Objective {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "kl" => Ok(Objective::Kl),
            "noise" | "sqnr" => Ok(Objective::Noise),
            "accuracy" | "accuracy-drop" => Ok(Objective::AccuracyDrop),
            other => Err(Error::Invalid(format!(
                "objective `{other}`: use kl, noise or accuracy-drop"
            ))),
        }
    }
}

impl fmt::Display for Objective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Objective::Kl => "kl",
            Objective::Noise => "noise",
            Objective::AccuracyDrop => "accuracy-drop",
        })
    }
}

/// What the model may cost in all.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Budget {
    /// Weight bytes of the quantizable layers (codes plus scales, as `vitq-core` stores them; biases
    /// and non-quantizable parameters are the same for every choice and not counted).
    Bytes(f64),
    /// Average weight bits over the quantizable layers' weights (`Σ n_l·b_l / Σ n_l`).
    AverageBits(f64),
    /// Modelled energy per image, picojoules (`vitq-energy`, whole network).
    EnergyPj(f64),
}

impl Budget {
    fn unit(&self) -> &'static str {
        match self {
            Budget::Bytes(_) => "bytes",
            Budget::AverageBits(_) => "weight bits",
            Budget::EnergyPj(_) => "pJ",
        }
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Budget::Bytes(b) => write!(f, "{b} weight bytes"),
            Budget::AverageBits(b) => write!(f, "{b} average weight bits"),
            Budget::EnergyPj(e) => write!(f, "{:.3} µJ", e / 1e6),
        }
    }
}

/// One layer's pick.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerPick {
    /// Module path.
    pub layer: String,
    /// Chosen bits.
    pub candidate: Candidate,
    /// Its cost, in the budget's unit.
    pub cost: f64,
    /// Its measured sensitivity.
    pub score: f64,
}

/// A mixed-precision allocation and the config that applies it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Allocation {
    /// The budget it meets.
    pub budget: Budget,
    /// The summed objective.
    pub objective: Objective,
    /// Per allocated layer (quantized layers with weights), in network order.
    pub layers: Vec<LayerPick>,
    /// Total cost in the budget's unit (allocated layers plus the fixed cost of the others).
    pub cost: f64,
    /// Total sensitivity.
    pub score: f64,
    /// The config: the setting's, with an override for each layer whose bits differ from it.
    #[serde(skip)]
    pub config: QuantConfig,
}

impl Allocation {
    /// The config as TOML, with a comment header naming the budget and each layer's pick.
    pub fn to_toml(&self) -> Result<String> {
        let mut out = format!(
            "# Mixed precision written by vitq-sensitivity: budget {}, objective {}, total cost {} {}.\n",
            self.budget,
            self.objective,
            self.cost,
            self.budget.unit()
        );
        for p in &self.layers {
            out.push_str(&format!(
                "#   {:<24} {:<6} cost {:<12} sensitivity {:.6}\n",
                p.layer,
                p.candidate.to_string(),
                p.cost,
                p.score
            ));
        }
        out.push_str(&self.config.to_toml_string()?);
        Ok(out)
    }
}

/// The inputs of [`allocate`].
#[derive(Debug)]
pub struct Request<'a> {
    /// The model's layers and shapes (`Network::from_preset`).
    pub network: &'a Network,
    /// The base setting: the layers' specs, and the default the config keeps.
    pub setting: &'a Setting,
    /// The bits to choose from (all of them measured for every layer in `store`).
    pub candidates: &'a [Candidate],
    /// The budget.
    pub budget: Budget,
    /// Which score to sum.
    pub objective: Objective,
    /// Energy prices (for [`Budget::EnergyPj`]).
    pub table: &'a EnergyTable,
}

/// The layers of `network` that a weight candidate applies to: they have weights and the setting
/// quantizes them.
pub fn allocatable_layers(network: &Network, setting: &Setting) -> Vec<String> {
    network
        .layers
        .iter()
        .filter(|l| l.weight_shape().is_some() && setting.config.resolve(&l.name).weights.is_some())
        .map(|l| l.name.clone())
        .collect()
}

/// What a whole config costs: the quantities the three budgets and the Pareto plots speak of.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ConfigCost {
    /// Weight bytes of every layer with weights (codes and scales; 4 bytes per float weight).
    pub weight_bytes: u64,
    /// Average weight bits over those layers' weights (32 for float ones).
    pub avg_weight_bits: f64,
    /// Modelled energy per image, pJ (whole network).
    pub energy_pj: f64,
}

/// The weight bytes, average weight bits and energy of `network` under `config`.
pub fn config_cost(
    network: &Network,
    config: &QuantConfig,
    table: &EnergyTable,
) -> Result<ConfigCost> {
    let report = EnergyReport::new(network, config, table)?;
    let (mut bits, mut weights) = (0.0, 0u64);
    for (layer, cost) in network.layers.iter().zip(&report.layers) {
        if layer.weight_shape().is_none() {
            continue;
        }
        let n = layer.counts()?.weights;
        let b = config
            .resolve(&layer.name)
            .weights
            .map_or(32, |s| s.bits.get());
        bits += n as f64 * f64::from(b);
        weights += n;
        debug_assert_eq!(cost.name, layer.name);
    }
    Ok(ConfigCost {
        weight_bytes: report.totals.weight_bytes,
        avg_weight_bits: if weights == 0 {
            0.0
        } else {
            bits / weights as f64
        },
        energy_pj: report.totals.energy_pj,
    })
}

/// The costs of a mixed-precision problem, in the budget's unit: bytes, weight bits (`n · b`, 32 for
/// float weights) or pJ.
#[derive(Clone, Debug, PartialEq)]
pub struct Costs {
    /// The allocatable layers ([`allocatable_layers`]).
    pub layers: Vec<String>,
    /// `[layer][candidate]` cost.
    pub table: Vec<Vec<f64>>,
    /// The other layers' cost, at the setting's specs.
    pub fixed: f64,
    /// The budget.
    pub limit: f64,
}

/// Each allocatable layer's cost at each candidate, the fixed cost of the other layers, and the
/// budget ([`Costs`]). Totals agree with [`config_cost`].
pub fn costs(
    network: &Network,
    setting: &Setting,
    candidates: &[Candidate],
    budget: Budget,
    table: &EnergyTable,
) -> Result<Costs> {
    let layers = allocatable_layers(network, setting);
    let base = EnergyReport::new(network, &setting.config, table)?;
    let reports = candidates
        .iter()
        .map(|c| {
            EnergyReport::new(
                network,
                &uniform_at(&setting.config, &setting.name, *c)?,
                table,
            )
            .map_err(Error::from)
        })
        .collect::<Result<Vec<_>>>()?;
    let unit_cost = |li: usize, report: &EnergyReport, weight_bits: u32| -> Result<f64> {
        let lc = &report.layers[li];
        Ok(match budget {
            Budget::Bytes(_) => lc.weight_bytes as f64,
            Budget::AverageBits(_) => {
                network.layers[li].counts()?.weights as f64 * f64::from(weight_bits)
            }
            Budget::EnergyPj(_) => lc.energy_pj,
        })
    };
    let (mut fixed, mut total_weights) = (0.0, 0u64);
    let mut table_costs = Vec::with_capacity(layers.len());
    for (li, layer) in network.layers.iter().enumerate() {
        if layer.weight_shape().is_some() {
            total_weights += layer.counts()?.weights;
        }
        if layers.contains(&layer.name) {
            let row = candidates
                .iter()
                .zip(&reports)
                .map(|(c, r)| unit_cost(li, r, c.weight_bits))
                .collect::<Result<Vec<_>>>()?;
            table_costs.push(row);
        } else {
            let bits = setting
                .config
                .resolve(&layer.name)
                .weights
                .map_or(32, |s| s.bits.get());
            fixed += unit_cost(li, &base, bits)?;
        }
    }
    let limit = match budget {
        Budget::Bytes(b) | Budget::EnergyPj(b) => b,
        Budget::AverageBits(b) => b * total_weights as f64,
    };
    Ok(Costs {
        layers,
        table: table_costs,
        fixed,
        limit,
    })
}

/// Checks, before anything is measured, that some assignment of the candidates fits the budget.
pub fn check_budget(
    network: &Network,
    setting: &Setting,
    candidates: &[Candidate],
    budget: Budget,
    table: &EnergyTable,
) -> Result<()> {
    if candidates.is_empty() {
        return Err(Error::Invalid("no candidate bit-widths given".into()));
    }
    let Costs {
        table: costs,
        fixed,
        limit,
        ..
    } = costs(network, setting, candidates, budget, table)?;
    let cheapest: f64 = fixed
        + costs
            .iter()
            .map(|row| row.iter().copied().fold(f64::INFINITY, f64::min))
            .sum::<f64>();
    if cheapest > limit {
        return Err(Error::Allocation(format!(
            "the budget {budget} is below the cheapest assignment of candidates {} ({cheapest} {})",
            candidates
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            budget.unit()
        )));
    }
    Ok(())
}

/// The sensitivity of `layer` at `candidate` measured in `store` ("quantize only this layer").
pub fn sensitivity(
    store: &Store,
    setting: &Setting,
    layer: &str,
    candidate: Candidate,
    objective: Objective,
) -> Result<f64> {
    let job = Job::new(setting, Mode::QuantizeOnly, Some(layer), Some(candidate));
    store
        .get(&key_of(&job)?)
        .map(|r| objective.of(&r.scores))
        .ok_or_else(|| Error::Missing {
            layer: layer.into(),
            candidate: candidate.to_string(),
            setting: setting.name.clone(),
        })
}

/// Chooses bits per layer within the budget, minimizing the summed measured sensitivity ([`solve`]).
pub fn allocate(req: &Request<'_>, store: &Store) -> Result<Allocation> {
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
        req.candidates
            .iter()
            .zip(row)
            .enumerate()
            .map(|(i, (c, k))| {
                sensitivity(store, req.setting, name, *c, req.objective)
                    .map(|s| (i, Choice::new(*k, s)))
            })
            .collect()
    })?;
    let name = format!("mixed-{}-{}", req.setting.name, budget_tag(req.budget));
    let config = mixed_config(req.setting, &picks, &name)?;
    Ok(Allocation {
        budget: req.budget,
        objective: req.objective,
        layers: picks,
        cost,
        score,
        config,
    })
}

/// The exact dynamic program over the allocatable layers of `costs`: `options(layer, its cost row)`
/// lists the candidate indices the layer may take, each with its [`Choice`]. Returns the picks, the
/// total cost (the fixed layers' included) and the total score.
pub(crate) fn choose(
    costs: &Costs,
    candidates: &[Candidate],
    budget: Budget,
    mut options: impl FnMut(&str, &[f64]) -> Result<Vec<(usize, Choice)>>,
) -> Result<(Vec<LayerPick>, f64, f64)> {
    let problem = costs
        .layers
        .iter()
        .zip(&costs.table)
        .map(|(name, row)| options(name, row))
        .collect::<Result<Vec<_>>>()?;
    let choices: Vec<Vec<Choice>> = problem
        .iter()
        .map(|o| o.iter().map(|(_, c)| *c).collect())
        .collect();
    let fixed = costs.fixed;
    let sol = solve(&choices, costs.limit - fixed).map_err(|e| match e {
        Error::Allocation(m) => Error::Allocation(format!(
            "{m} (budget {budget}{})",
            if fixed > 0.0 {
                format!(", of which {fixed} is taken by layers not allocated")
            } else {
                String::new()
            }
        )),
        other => other,
    })?;
    let picks = costs
        .layers
        .iter()
        .zip(&sol.picks)
        .zip(&problem)
        .map(|((name, &p), options)| {
            let (candidate, choice) = options[p];
            LayerPick {
                layer: name.clone(),
                candidate: candidates[candidate],
                cost: choice.cost,
                score: choice.score,
            }
        })
        .collect();
    Ok((picks, sol.cost + fixed, sol.score))
}

fn budget_tag(b: Budget) -> String {
    match b {
        Budget::Bytes(x) => format!("{x}B"),
        Budget::AverageBits(x) => format!("{x}bits"),
        Budget::EnergyPj(x) => format!("{:.3}uJ", x / 1e6),
    }
}

/// The setting's config with one override per layer whose picked bits differ from the setting's.
pub fn mixed_config(setting: &Setting, picks: &[LayerPick], name: &str) -> Result<QuantConfig> {
    let mut cfg = setting.config.clone();
    cfg.name = Some(name.to_string());
    for p in picks {
        check_name(&p.layer)?;
        let lq = setting.config.resolve(&p.layer);
        let (weights, activations) = candidate_specs(&setting.name, &p.layer, lq, p.candidate)?;
        let w_same = weights.map(|s| s.bits) == lq.weights.map(|s| s.bits);
        let a_same = activations.map(|s| s.bits) == lq.activations.map(|s| s.bits);
        if w_same && a_same {
            continue;
        }
        cfg.overrides.push(LayerOverride {
            pattern: p.layer.clone(),
            float: false,
            weights: if w_same { None } else { weights },
            activations: if a_same { None } else { activations },
        });
    }
    cfg.validate()?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vitq_core::synth::Rng;

    fn random_instance(rng: &mut Rng, integer_costs: bool) -> (Vec<Vec<Choice>>, f64) {
        let n = 1 + (rng.next_u64() % 7) as usize;
        let layers: Vec<Vec<Choice>> = (0..n)
            .map(|_| {
                let k = 1 + (rng.next_u64() % 4) as usize;
                (0..k)
                    .map(|_| {
                        let cost = if integer_costs {
                            (rng.next_u64() % 10) as f64
                        } else {
                            10.0 * rng.uniform()
                        };
                        // Negative sensitivities happen (accuracy drop); include them.
                        Choice::new(cost, rng.uniform() - 0.2)
                    })
                    .collect()
            })
            .collect();
        let lo: f64 = layers
            .iter()
            .map(|o| o.iter().map(|c| c.cost).fold(f64::INFINITY, f64::min))
            .sum();
        let hi: f64 = layers
            .iter()
            .map(|o| o.iter().map(|c| c.cost).fold(0.0, f64::max))
            .sum();
        // Sometimes below the cheapest assignment (infeasible), mostly in between.
        let budget = lo - 1.0 + (hi - lo + 2.0) * rng.uniform();
        (
            layers,
            if integer_costs {
                budget.floor()
            } else {
                budget
            },
        )
    }

    #[test]
    fn dp_equals_brute_force_on_random_instances() {
        let mut rng = Rng::new(2024);
        let (mut feasible, mut infeasible) = (0, 0);
        for i in 0..3000 {
            let (layers, budget) = random_instance(&mut rng, i % 2 == 0);
            let dp = solve(&layers, budget);
            let bf = brute_force(&layers, budget);
            match (dp, bf) {
                (Ok(dp), Ok(bf)) => {
                    feasible += 1;
                    assert_eq!(
                        dp.score, bf.score,
                        "instance {i}: {layers:?} budget {budget}"
                    );
                    assert!(dp.cost <= budget);
                    assert!(dp.cost <= bf.cost || dp.score < bf.score);
                    let (mut c, mut s) = (0.0, 0.0);
                    for (p, o) in dp.picks.iter().zip(&layers) {
                        c += o[*p].cost;
                        s += o[*p].score;
                    }
                    assert_eq!((c, s), (dp.cost, dp.score), "instance {i}");
                }
                (Err(Error::Allocation(_)), Err(Error::Allocation(_))) => infeasible += 1,
                (dp, bf) => panic!("instance {i}: dp {dp:?}, brute force {bf:?}"),
            }
        }
        assert!(
            feasible > 2000 && infeasible > 50,
            "{feasible} / {infeasible}"
        );
    }

    #[test]
    fn bad_problems_are_errors() {
        assert!(solve(&[vec![]], 1.0).is_err());
        assert!(solve(&[vec![Choice::new(-1.0, 0.0)]], 1.0).is_err());
        assert!(solve(&[vec![Choice::new(1.0, f64::NAN)]], 1.0).is_err());
        assert!(solve(&[vec![Choice::new(1.0, 0.0)]], f64::NAN).is_err());
        assert_eq!(solve(&[], 0.0).unwrap().picks, Vec::<usize>::new());
    }

    #[test]
    fn mixed_configs_round_trip_and_name_only_resnet20_layers() {
        let net = Network::from_preset("resnet20", None).unwrap();
        let setting = Setting::parse("w4a8").unwrap();
        let layers = allocatable_layers(&net, &setting);
        assert_eq!(layers.len(), 20);
        let bits = [2, 3, 4, 5, 6, 8];
        let picks: Vec<LayerPick> = layers
            .iter()
            .enumerate()
            .map(|(i, l)| LayerPick {
                layer: l.clone(),
                candidate: if i == 19 {
                    Candidate::both(8, 6)
                } else {
                    Candidate::weights(bits[i % bits.len()])
                },
                cost: 1.0,
                score: 0.0,
            })
            .collect();
        let cfg = mixed_config(&setting, &picks, "mixed-test").unwrap();
        // Layers at the setting's 4 bits need no override.
        assert_eq!(cfg.overrides.len(), 20 - 3);
        let alloc = Allocation {
            budget: Budget::AverageBits(5.0),
            objective: Objective::Kl,
            layers: picks.clone(),
            cost: 20.0,
            score: 0.0,
            config: cfg.clone(),
        };
        let back = QuantConfig::from_toml_str(&alloc.to_toml().unwrap()).unwrap();
        assert_eq!(back, cfg);
        back.check_layers(&layers).unwrap();
        for p in &picks {
            let lq = back.resolve(&p.layer);
            assert_eq!(lq.weights.unwrap().bits.get(), p.candidate.weight_bits);
            assert_eq!(
                lq.activations.unwrap().bits.get(),
                p.candidate.activation_bits.unwrap_or(8)
            );
            assert_eq!(
                lq.weights.unwrap().scheme,
                setting.config.weights.unwrap().scheme
            );
        }
        // What the config costs is what the allocation's layer costs add up to.
        let table = EnergyTable::default();
        let cands: Vec<Candidate> = bits.iter().map(|b| Candidate::weights(*b)).collect();
        let c = costs(&net, &setting, &cands, Budget::Bytes(0.0), &table).unwrap();
        assert_eq!(c.layers, layers);
        assert_eq!(c.fixed, 0.0);
        let at4: f64 = c.table.iter().map(|row| row[2]).sum();
        let w4 = config_cost(&net, &setting.config, &table).unwrap();
        assert_eq!(at4, w4.weight_bytes as f64);
        assert!(check_budget(&net, &setting, &cands, Budget::AverageBits(1.9), &table).is_err());
        check_budget(&net, &setting, &cands, Budget::AverageBits(2.0), &table).unwrap();
    }

    #[test]
    fn objectives_parse() {
        assert_eq!("kl".parse::<Objective>().unwrap(), Objective::Kl);
        assert_eq!(
            "accuracy-drop".parse::<Objective>().unwrap(),
            Objective::AccuracyDrop
        );
        assert!("loss".parse::<Objective>().is_err());
    }
}
