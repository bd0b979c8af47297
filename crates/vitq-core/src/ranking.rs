//! Ranking-aware quantization of self-attention (Liu et al., "Post-Training Quantization for Vision
//! Transformer", NeurIPS 2021, §3.3): a search of the operand scales of the attention matmuls, part of
//! [`crate::PtqMethod::SimilaritySearch`].
//!
//! For `Q·Kᵀ` (`*.matmul_qk`) the float attention scores `A` and the quantized ones `Â` (for every
//! sampled image and head, rows are queries) are compared by
//!
//! `cos(A, Â) − γ · L_ranking`, `L_ranking = mean over rows r and pairs i < j of Φ((Â_ri − Â_rj) · sign(A_ri − A_rj))`,
//!
//! with the hinge `Φ(p) = max(0, θ − p)`: a pair whose order quantization flips costs more than `θ`, a
//! pair kept in order with a margin of at least `θ` costs nothing. Departures from the paper, which
//! sums over heads and pairs: the sum is divided by the number of terms and score differences (and
//! `θ`) are measured in units of the mean absolute gap `|A_i − A_j|` of the float scores on the
//! sample, so that `γ` and `θ` depend neither on the token count nor on the scale of the scores; where
//! a row has more than [`MAX_PAIRS`] pairs, a fixed random subset of column pairs (the same for every
//! row) stands for all of them. ([`ranking_loss`] is the paper's exact sum, for tests and reports.)
//!
//! For the other matmuls (`softmax · V`) the objective is the cosine similarity, and only the range of
//! `V` is searched: the probabilities keep their calibrated range, because shrinking it clips the
//! largest attention probabilities, which are rare on the calibration images and decisive on others
//! (on the `vit_tiny2` fixture, searching it cost 5 dB of logits SQNR at W6A6).
//!
//! The search is [`crate::search`]'s: the calibrated ranges of the operands are scaled by multiples in
//! [`crate::search::SEARCH_RANGE`], alternately, for `rounds` rounds; the calibrated ranges (multiple
//! 1) are a candidate, so the objective on the sample never ends worse than it started.
//!
//! ```
//! use vitq_core::ranking::{pair_agreement, ranking_loss};
//!
//! let a = [0.1, 0.5, 0.3]; // one query, three keys
//! assert_eq!(ranking_loss(&a, &[0.0, 2.0, 1.0], [1, 3], 0.0)?, 0.0); // order kept
//! assert!(ranking_loss(&a, &[0.0, 1.0, 2.0], [1, 3], 0.0)? > 0.0); // keys 1 and 2 swapped
//! assert_eq!(pair_agreement(&a, &[0.0, 1.0, 2.0], [1, 3])?, 2.0 / 3.0);
//! # Ok::<(), vitq_core::Error>(())
//! ```

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::PtqMethod;
use crate::error::{Error, Result};
use crate::layers::{ActQuant, PairSample, QMatMul};
use crate::search::{act_range, candidates, cosine, l2_norm, scaled};
use crate::synth::Rng;
use crate::uniform::{check_finite, tensor_to_vec};

/// Default `γ`, the weight of the ranking loss against the similarity (with the loss averaged over
/// pairs and measured in mean gaps, both terms are of order one). Chosen on the `vit_tiny2` test
/// fixture (γ ∈ {0.1, 1, 10} × θ ∈ {0, 0.1, 0.5}, W6A6 / W4A8 / W6A4 / W4A4): the paper's values
/// apply to its unnormalized sum and are not reused.
pub const DEFAULT_GAMMA: f32 = 1.0;

/// Default hinge margin `θ`, in units of the mean absolute gap between two float attention scores of
/// one query on the sample.
pub const DEFAULT_THETA: f32 = 0.1;

/// Column pairs per row beyond which pairs are sampled.
pub const MAX_PAIRS: usize = 256;

fn check_maps(a: &[f32], a_hat: &[f32], [rows, n]: [usize; 2]) -> Result<()> {
    if a.len() != rows * n || a_hat.len() != rows * n {
        return Err(Error::ShapeMismatch {
            what: "attention maps (float, quantized)".into(),
            expected: vec![rows, n],
            got: vec![a.len(), a_hat.len()],
        });
    }
    check_finite(a, &[rows, n])?;
    check_finite(a_hat, &[rows, n])
}

/// The paper's ranking loss, exactly: `Σ_rows Σ_{i<j} max(0, θ − (Â_i − Â_j)·sign(A_i − A_j))` over
/// every pair of every row of `[rows, n]` maps (`sign(0) = 0`, so a pair tied in `A` costs `θ`).
pub fn ranking_loss(a: &[f32], a_hat: &[f32], [rows, n]: [usize; 2], theta: f32) -> Result<f64> {
    check_maps(a, a_hat, [rows, n])?;
    let theta = f64::from(theta);
    let mut loss = 0.0;
    for (r, rh) in a.chunks_exact(n.max(1)).zip(a_hat.chunks_exact(n.max(1))) {
        for i in 0..n {
            for j in i + 1..n {
                loss += hinge(r[i], r[j], rh[i], rh[j], theta);
            }
        }
    }
    Ok(loss)
}

fn sign(x: f32) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

fn hinge(ai: f32, aj: f32, hi: f32, hj: f32, theta: f64) -> f64 {
    (theta - f64::from(hi - hj) * sign(ai - aj)).max(0.0)
}

/// The fraction of pairs `i < j` of each row, among those with `A_i ≠ A_j`, whose order `Â` keeps
/// strictly (Kendall's τ as a fraction of concordant pairs; a tie in `Â` counts as not kept). 1 when
/// no pair differs.
pub fn pair_agreement(a: &[f32], a_hat: &[f32], [rows, n]: [usize; 2]) -> Result<f64> {
    check_maps(a, a_hat, [rows, n])?;
    let (mut kept, mut total) = (0u64, 0u64);
    for (r, rh) in a.chunks_exact(n.max(1)).zip(a_hat.chunks_exact(n.max(1))) {
        for i in 0..n {
            for j in i + 1..n {
                let s = sign(r[i] - r[j]);
                if s != 0.0 {
                    total += 1;
                    kept += u64::from(sign(rh[i] - rh[j]) == s);
                }
            }
        }
    }
    Ok(if total == 0 {
        1.0
    } else {
        kept as f64 / total as f64
    })
}

/// The column pairs scored in every row: all of them up to [`MAX_PAIRS`], else that many distinct
/// random ones (fixed seed).
fn column_pairs(n: usize) -> Vec<(usize, usize)> {
    let all = n * n.saturating_sub(1) / 2;
    if all <= MAX_PAIRS {
        return (0..n)
            .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
            .collect();
    }
    let mut rng = Rng::new(0x5eed);
    let mut seen = std::collections::HashSet::new();
    let mut pairs = Vec::with_capacity(MAX_PAIRS);
    while pairs.len() < MAX_PAIRS {
        let i = (rng.next_u64() % n as u64) as usize;
        let j = (rng.next_u64() % n as u64) as usize;
        let p = (i.min(j), i.max(j));
        if i != j && seen.insert(p) {
            pairs.push(p);
        }
    }
    pairs
}

/// The mean absolute gap `|A_i − A_j|` over `pairs` of every row (the unit of the sampled loss).
fn mean_gap(a: &[f32], n: usize, pairs: &[(usize, usize)]) -> f64 {
    let mut sum = 0.0;
    let mut terms = 0usize;
    for r in a.chunks_exact(n.max(1)) {
        for &(i, j) in pairs {
            sum += f64::from(r[i] - r[j]).abs();
        }
        terms += pairs.len();
    }
    sum / terms.max(1) as f64
}

/// The mean hinge over `pairs` of every row, with score differences in units of `unit` (see the
/// module docs).
fn sampled_loss(
    a: &[f32],
    a_hat: &[f32],
    n: usize,
    pairs: &[(usize, usize)],
    theta: f32,
    unit: f64,
) -> f64 {
    let theta = f64::from(theta) * unit;
    let mut loss = 0.0;
    let mut terms = 0usize;
    for (r, rh) in a.chunks_exact(n.max(1)).zip(a_hat.chunks_exact(n.max(1))) {
        for &(i, j) in pairs {
            loss += hinge(r[i], r[j], rh[i], rh[j], theta);
        }
        terms += pairs.len();
    }
    loss / (terms.max(1) as f64 * unit.max(f64::MIN_POSITIVE))
}

/// The ranking loss's settings for [`search_matmul`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ranking {
    /// Weight of the loss.
    pub gamma: f32,
    /// Hinge margin.
    pub theta: f32,
}

/// What [`search_matmul`] found.
#[derive(Clone, Debug)]
pub struct MatMulSearch {
    /// The operand quantizers with the chosen ranges.
    pub inputs: [Option<ActQuant>; 2],
    /// The objective with the calibrated ranges.
    pub objective_before: f64,
    /// The objective with the chosen ranges.
    pub objective_after: f64,
}

/// Searches the ranges of a matmul's two operand quantizers on the operand slices `sample` (see the
/// module docs). `inputs` are the calibrated static quantizers (`None`: that operand stays float);
/// only the operands whose `searched` entry is set are searched, the others keep their calibrated
/// range; `ranking` adds the ranking loss to the objective.
pub fn search_matmul<B: Backend>(
    sample: &PairSample,
    inputs: [Option<ActQuant>; 2],
    searched: [bool; 2],
    ranking: Option<Ranking>,
    candidate_count: u32,
    rounds: u32,
    device: &B::Device,
) -> Result<MatMulSearch> {
    let [m, k, n] = sample.dims;
    let s = sample.count;
    if s == 0 || sample.a.len() != s * m * k || sample.b.len() != s * k * n || m * k * n == 0 {
        return Err(Error::ShapeMismatch {
            what: "matmul operand sample".into(),
            expected: vec![s, m, k, n],
            got: vec![sample.a.len(), sample.b.len()],
        });
    }
    if let Some(r) = ranking
        && !(r.gamma.is_finite() && r.gamma >= 0.0 && r.theta.is_finite() && r.theta >= 0.0)
    {
        return Err(Error::Config(format!(
            "ranking loss γ = {}, θ = {}: both must be finite and ≥ 0",
            r.gamma, r.theta
        )));
    }
    let ranges = inputs
        .iter()
        .map(|q| match q {
            None => Ok(None),
            Some(q) => act_range(q).map(|r| Some((*q, r))).ok_or_else(|| {
                Error::Unsupported("matmul search needs static (calibrated) operand ranges".into())
            }),
        })
        .collect::<Result<Vec<_>>>()?;
    let at = Tensor::<B, 3>::from_data(TensorData::new(sample.a.clone(), [s, m, k]), device);
    let bt = Tensor::<B, 3>::from_data(TensorData::new(sample.b.clone(), [s, k, n]), device);
    let target = at.clone().matmul(bt.clone());
    let target_norm = l2_norm(&target);
    let ranking = ranking.filter(|r| r.gamma > 0.0);
    let target_host = match ranking {
        Some(_) => tensor_to_vec(&target)?.0,
        None => Vec::new(),
    };
    let pairs = column_pairs(n);
    let unit = mean_gap(&target_host, n, &pairs);
    let operand = |i: usize, beta: f32| -> Result<(Tensor<B, 3>, Option<ActQuant>)> {
        let x = if i == 0 { &at } else { &bt };
        match ranges[i] {
            None => Ok((x.clone(), None)),
            Some((q, r)) => {
                let q = scaled(&q, r, beta);
                Ok((q.fake_quant(x.clone())?, Some(q)))
            }
        }
    };
    let objective = |xa: &Tensor<B, 3>, xb: &Tensor<B, 3>| -> Result<f64> {
        let y = xa.clone().matmul(xb.clone());
        let cos = cosine(&y, &target, target_norm);
        Ok(match ranking {
            None => cos,
            Some(r) => {
                let (yh, _) = tensor_to_vec(&y)?;
                cos - f64::from(r.gamma) * sampled_loss(&target_host, &yh, n, &pairs, r.theta, unit)
            }
        })
    };
    let grid = candidates(candidate_count);
    let mut beta = [1.0f32; 2];
    let (xa, _) = operand(0, 1.0)?;
    let (xb, _) = operand(1, 1.0)?;
    let before = objective(&xa, &xb)?;
    let mut best = before;
    for _ in 0..rounds {
        for i in 0..2 {
            if ranges[i].is_none() || !searched[i] {
                continue;
            }
            // The other operand fixed at its current choice.
            let (other, _) = operand(1 - i, beta[1 - i])?;
            for &c in &grid {
                let (x, _) = operand(i, c)?;
                let value = if i == 0 {
                    objective(&x, &other)?
                } else {
                    objective(&other, &x)?
                };
                if value > best {
                    best = value;
                    beta[i] = c;
                }
            }
        }
    }
    let (_, qa) = operand(0, beta[0])?;
    let (_, qb) = operand(1, beta[1])?;
    Ok(MatMulSearch {
        inputs: [qa, qb],
        objective_before: before,
        objective_after: best,
    })
}

/// The matmul step of [`crate::ptq::quantize`]: with [`PtqMethod::SimilaritySearch`] and `attention`
/// set, replaces the calibrated operand quantizers `inputs` of `layer` by the searched ones (with the
/// ranking loss for a layer whose path ends in `matmul_qk`). A layer without an operand sample or
/// without static quantizers, or a call without a `device` (nothing was calibrated), is left alone.
pub fn search_layer<B: Backend>(
    layer: &QMatMul,
    method: PtqMethod,
    inputs: &mut [Option<ActQuant>],
    device: Option<&B::Device>,
) -> Result<()> {
    let PtqMethod::SimilaritySearch {
        candidates,
        rounds,
        attention: true,
        gamma,
        theta,
        ..
    } = method
    else {
        return Ok(());
    };
    let sample = layer.quant.calibration_pairs();
    let (Some(device), [a, b]) = (device, inputs) else {
        return Ok(());
    };
    let is_static = |q: &Option<ActQuant>| q.is_none_or(|q| q.params.is_some());
    if sample.count == 0 || (a.is_none() && b.is_none()) || !is_static(a) || !is_static(b) {
        return Ok(());
    }
    let qk = layer.name.ends_with("matmul_qk");
    let ranking = qk.then_some(Ranking { gamma, theta });
    // softmax · V: the probabilities keep their calibrated range (see the module docs).
    let searched = [qk, true];
    let found = search_matmul::<B>(
        &sample,
        [*a, *b],
        searched,
        ranking,
        candidates,
        rounds,
        device,
    )?;
    [*a, *b] = found.inputs;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranking_loss_is_zero_iff_the_order_is_kept() {
        let mut rng = Rng::new(3);
        let (rows, n) = (5, 9);
        let a: Vec<f32> = rng.gaussian_vec(rows * n);
        // Any strictly increasing map keeps the order: no loss at θ = 0.
        let kept: Vec<f32> = a.iter().map(|v| 3.0 * v + v.powi(3) - 1.0).collect();
        assert_eq!(ranking_loss(&a, &kept, [rows, n], 0.0).unwrap(), 0.0);
        assert_eq!(pair_agreement(&a, &kept, [rows, n]).unwrap(), 1.0);
        // Swapping two entries of one row costs their gap (the swapped pair), plus the pairs with an
        // entry in between.
        let mut swapped = a.clone();
        swapped.swap(2 * n + 1, 2 * n + 4);
        let loss = ranking_loss(&a, &swapped, [rows, n], 0.0).unwrap();
        assert!(loss > 0.0);
        let gap = f64::from((a[2 * n + 1] - a[2 * n + 4]).abs());
        assert!(loss >= gap - 1e-6, "{loss} vs gap {gap}");
        assert!(pair_agreement(&a, &swapped, [rows, n]).unwrap() < 1.0);
        // A margin θ charges pairs kept closer than θ, and nothing when they are far apart.
        let far: Vec<f32> = a.iter().map(|v| 100.0 * v).collect();
        assert_eq!(ranking_loss(&a, &far, [rows, n], 0.1).unwrap(), 0.0);
        let near: Vec<f32> = a.iter().map(|v| 1e-3 * v).collect();
        assert!(ranking_loss(&a, &near, [rows, n], 0.1).unwrap() > 0.0);
        // Reversing every row flips every pair: agreement 0.
        let reversed: Vec<f32> = a.iter().map(|v| -v).collect();
        assert_eq!(pair_agreement(&a, &reversed, [rows, n]).unwrap(), 0.0);
    }

    #[test]
    fn sampled_pairs_average_the_exact_loss() {
        let mut rng = Rng::new(4);
        for n in [5, 23, 40] {
            let a: Vec<f32> = rng.gaussian_vec(3 * n);
            let noisy: Vec<f32> = a.iter().map(|v| v + 0.5 * rng.gaussian()).collect();
            let exact =
                ranking_loss(&a, &noisy, [3, n], 0.2).unwrap() / (3 * n * (n - 1) / 2) as f64;
            let pairs = column_pairs(n);
            assert_eq!(pairs.len(), MAX_PAIRS.min(n * (n - 1) / 2));
            assert!(pairs.iter().all(|&(i, j)| i < j && j < n));
            let sampled = sampled_loss(&a, &noisy, n, &pairs, 0.2, 1.0);
            // In units of the mean gap, θ included.
            let unit = mean_gap(&a, n, &pairs);
            let scaled: Vec<f32> = a.iter().map(|v| v / unit as f32).collect();
            let scaled_noisy: Vec<f32> = noisy.iter().map(|v| v / unit as f32).collect();
            let rescaled = sampled_loss(&scaled, &scaled_noisy, n, &pairs, 0.2, 1.0);
            let unitless = sampled_loss(&a, &noisy, n, &pairs, 0.2, unit);
            assert!(
                (rescaled - unitless).abs() < 1e-6 * rescaled,
                "{rescaled} vs {unitless}"
            );
            if pairs.len() == n * (n - 1) / 2 {
                assert!((sampled - exact).abs() < 1e-12, "{sampled} vs {exact}");
            } else {
                assert!(
                    (sampled - exact).abs() < 0.15 * exact,
                    "{sampled} vs {exact}"
                );
            }
        }
    }

    #[test]
    fn bad_maps_are_errors() {
        assert!(ranking_loss(&[1.0, 2.0], &[1.0], [1, 2], 0.0).is_err());
        assert!(pair_agreement(&[1.0, f32::NAN], &[1.0, 2.0], [1, 2]).is_err());
        let empty = PairSample::default();
        assert!(
            search_matmul::<burn::backend::Flex>(
                &empty,
                [None, None],
                [true; 2],
                None,
                8,
                1,
                &Default::default()
            )
            .is_err()
        );
    }
}
