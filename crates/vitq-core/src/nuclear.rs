//! Nuclear norms of layer outputs, and the output perturbation of a layer quantized at given bits: the
//! measurements behind Liu et al.'s mixed precision ("Post-Training Quantization for Vision Transformer",
//! NeurIPS 2021, §3.4). The bit allocation itself, an exact dynamic program under a size budget, is
//! `vitq_sensitivity::nuclear`.
//!
//! - [`sample_layers`] runs calibration batches through a float model and keeps, per linear layer,
//!   rows of its input (with its weight and bias) and, per attention matmul, operand slices (one per
//!   image and head).
//! - [`LayerSample::nuclear_norm`]: the sum of the singular values of the layer's output on those
//!   inputs: `Y = X·Wᵀ + b` for a linear, the attention map `Q·Kᵀ` of each slice for a matmul (the mean
//!   over slices) — the paper's measure of feature diversity, hence of sensitivity.
//! - [`LayerSample::perturbation`]: `‖Ŷ − Y‖²_F` when the weights and inputs are quantized with given
//!   specs (weights with their spec's calibration, inputs with theirs on the sample itself).
//! - [`singular_values`]: one-sided Jacobi (Hestenes) SVD in f64, no dependency.
//!
//! ```
//! use vitq_core::nuclear::{nuclear_norm, singular_values};
//!
//! // [[3, 0], [0, -4], [0, 0]]: singular values 4 and 3.
//! let y = [3.0, 0.0, 0.0, -4.0, 0.0, 0.0];
//! let s = singular_values(&y, 3, 2)?;
//! assert!((s[0] - 4.0).abs() < 1e-12 && (s[1] - 3.0).abs() < 1e-12);
//! assert!((nuclear_norm(&y, 3, 2)? - 7.0).abs() < 1e-12);
//! # Ok::<(), vitq_core::Error>(())
//! ```

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use rayon::prelude::*;

use crate::error::{Error, Result, ResultExt};
use crate::layers::{LayerMut, PairSample};
use crate::observer::Observer;
use crate::ptq::{Quantizable, take_fault};
use crate::uniform::{check_finite, fake_quant, scale_and_zero_point};
use crate::{QuantSpec, QuantizedTensor};

/// Sweeps after which [`singular_values`] gives up (it converges in well under 20 on any matrix here).
const MAX_SWEEPS: usize = 60;

/// Relative off-diagonal tolerance of the Jacobi rotations.
const TOLERANCE: f64 = 1e-13;

fn check_matrix(y: &[f32], rows: usize, cols: usize) -> Result<()> {
    if y.len() != rows * cols {
        return Err(Error::ShapeMismatch {
            what: "matrix for the SVD".into(),
            expected: vec![rows, cols],
            got: vec![y.len()],
        });
    }
    if rows == 0 || cols == 0 {
        return Err(Error::Empty {
            what: "matrix for the SVD".into(),
            shape: vec![rows, cols],
        });
    }
    check_finite(y, &[rows, cols])
}

/// The singular values of the row-major `[rows, cols]` matrix `y`, in descending order
/// (`min(rows, cols)` of them), by one-sided Jacobi rotations in f64: pairs of columns are rotated
/// until all are orthogonal, and the singular values are then their norms. Accurate to about 1e-12
/// relative to the largest singular value.
pub fn singular_values(y: &[f32], rows: usize, cols: usize) -> Result<Vec<f64>> {
    check_matrix(y, rows, cols)?;
    // Work on the columns of y or of yᵀ, whichever are fewer (and longer).
    let (count, len) = (rows.min(cols), rows.max(cols));
    let mut u: Vec<Vec<f64>> = (0..count)
        .map(|c| {
            (0..len)
                .map(|i| {
                    f64::from(if rows >= cols {
                        y[i * cols + c]
                    } else {
                        y[c * cols + i]
                    })
                })
                .collect()
        })
        .collect();
    let mut converged = false;
    for _ in 0..MAX_SWEEPS {
        let mut rotated = false;
        for p in 0..count {
            for q in p + 1..count {
                let (head, tail) = u.split_at_mut(q);
                let (up, uq) = (&mut head[p], &mut tail[0]);
                let (mut alpha, mut beta, mut gamma) = (0.0, 0.0, 0.0);
                for (a, b) in up.iter().zip(uq.iter()) {
                    alpha += a * a;
                    beta += b * b;
                    gamma += a * b;
                }
                if gamma == 0.0 || gamma.abs() <= TOLERANCE * (alpha * beta).sqrt() {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = c * t;
                for (a, b) in up.iter_mut().zip(uq.iter_mut()) {
                    let (x, z) = (*a, *b);
                    *a = c * x - s * z;
                    *b = s * x + c * z;
                }
            }
        }
        if !rotated {
            converged = true;
            break;
        }
    }
    if !converged {
        return Err(Error::Unsupported(format!(
            "Jacobi SVD of a {rows}×{cols} matrix did not converge in {MAX_SWEEPS} sweeps"
        )));
    }
    let mut s: Vec<f64> = u
        .iter()
        .map(|c| c.iter().map(|v| v * v).sum::<f64>().sqrt())
        .collect();
    s.sort_by(|a, b| b.total_cmp(a));
    Ok(s)
}

/// The nuclear norm (sum of singular values) of the row-major `[rows, cols]` matrix `y`.
pub fn nuclear_norm(y: &[f32], rows: usize, cols: usize) -> Result<f64> {
    Ok(singular_values(y, rows, cols)?.iter().sum())
}

/// What [`sample_layers`] kept of one layer.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Sample {
    /// A linear layer: weight `[n, k]` (PyTorch layout), bias `[n]`, input rows `x` `[rows, k]`.
    Linear {
        /// `[n, k]`, row-major.
        weight: Vec<f32>,
        /// `[n]`.
        bias: Option<Vec<f32>>,
        /// `[n, k]`.
        shape: [usize; 2],
        /// Input rows, `[rows, k]` row-major.
        x: Vec<f32>,
    },
    /// An activation matmul: operand slices.
    MatMul(PairSample),
}

/// A layer's name and its [`Sample`].
#[derive(Clone, Debug, PartialEq)]
pub struct LayerSample {
    /// Module path.
    pub name: String,
    /// What was kept.
    pub sample: Sample,
}

/// `x·wᵀ + b` for row-major `x` `[r, k]` and `w` `[n, k]` (f32 products, f64 accumulation per
/// output is not needed at these sizes: f32 with eight partial sums).
fn linear_host(x: &[f32], w: &[f32], bias: Option<&[f32]>, [n, k]: [usize; 2]) -> Vec<f32> {
    let rows = x.len() / k.max(1);
    let mut y = vec![0f32; rows * n];
    y.par_chunks_mut(n.max(1))
        .zip(x.par_chunks(k.max(1)))
        .for_each(|(yr, xr)| {
            for (j, out) in yr.iter_mut().enumerate() {
                let wr = &w[j * k..][..k];
                let mut acc = [0f32; 8];
                let (xc, wc) = (xr.chunks_exact(8), wr.chunks_exact(8));
                let (xt, wt) = (xc.remainder(), wc.remainder());
                for (a, b) in xc.zip(wc) {
                    for t in 0..8 {
                        acc[t] += a[t] * b[t];
                    }
                }
                let tail: f32 = xt.iter().zip(wt).map(|(a, b)| a * b).sum();
                *out = acc.iter().sum::<f32>() + tail + bias.map_or(0.0, |b| b[j]);
            }
        });
    y
}

/// Fake-quantizes `x` with `spec`, calibrated (with the spec's own method) on `x` itself.
fn fake_quant_on_itself(x: &[f32], shape: &[usize], spec: &QuantSpec) -> Result<Vec<f32>> {
    let mut o = Observer::new(*spec)?;
    o.observe(x, shape)?;
    let r = o.ranges()?;
    let (s, z) = scale_and_zero_point(spec, r[0]);
    Ok(x.iter().map(|&v| fake_quant(v, s, z, spec)).collect())
}

/// Products `a_s · b_s` of every slice: `[count, m, n]`.
fn slice_products(a: &[f32], b: &[f32], [m, k, n]: [usize; 3]) -> Vec<f32> {
    let count = a.len() / (m * k).max(1);
    let mut out = vec![0f32; count * m * n];
    out.par_chunks_mut((m * n).max(1))
        .enumerate()
        .for_each(|(s, o)| {
            let (a, b) = (&a[s * m * k..][..m * k], &b[s * k * n..][..k * n]);
            for i in 0..m {
                let row = &mut o[i * n..][..n];
                for t in 0..k {
                    let av = a[i * k + t];
                    for (r, bv) in row.iter_mut().zip(&b[t * n..][..n]) {
                        *r += av * bv;
                    }
                }
            }
        });
    out
}

impl LayerSample {
    /// The layer's float output on the sample: `[rows, n]` for a linear; for a matmul, the slices'
    /// products stacked, `[count · m, n]`.
    pub fn output(&self) -> Result<(Vec<f32>, [usize; 2])> {
        self.output_with(None, None)
    }

    /// The output with the weights quantized by `weights` and the inputs (both operands of a matmul)
    /// by `activations` (`None`: float). Input quantizers are calibrated on the sample itself.
    pub fn output_with(
        &self,
        weights: Option<QuantSpec>,
        activations: Option<QuantSpec>,
    ) -> Result<(Vec<f32>, [usize; 2])> {
        match &self.sample {
            Sample::Linear {
                weight,
                bias,
                shape: [n, k],
                x,
            } => {
                let rows = x.len() / (*k).max(1);
                if rows == 0 || x.len() != rows * k || weight.len() != n * k {
                    return Err(Error::ShapeMismatch {
                        what: format!("sample of `{}`", self.name),
                        expected: vec![*n, *k],
                        got: vec![x.len(), weight.len()],
                    });
                }
                let w = match weights {
                    Some(spec) => {
                        QuantizedTensor::quantize(weight, &[*n, *k], &spec)?.dequantize()?
                    }
                    None => weight.clone(),
                };
                let xq = match activations {
                    Some(spec) => fake_quant_on_itself(x, &[rows, *k], &spec)?,
                    None => x.clone(),
                };
                Ok((linear_host(&xq, &w, bias.as_deref(), [*n, *k]), [rows, *n]))
            }
            Sample::MatMul(p) => {
                let [m, k, n] = p.dims;
                if p.count == 0 || p.a.len() != p.count * m * k || p.b.len() != p.count * k * n {
                    return Err(Error::Empty {
                        what: format!("operand sample of `{}`", self.name),
                        shape: vec![p.count, m, k, n],
                    });
                }
                let (a, b) = match activations {
                    Some(spec) => (
                        fake_quant_on_itself(&p.a, &[p.count * m, k], &spec)?,
                        fake_quant_on_itself(&p.b, &[p.count * k, n], &spec)?,
                    ),
                    None => (p.a.clone(), p.b.clone()),
                };
                Ok((slice_products(&a, &b, p.dims), [p.count * m, n]))
            }
        }
    }

    /// The nuclear norm of the float output: of `Y` `[rows, n]` for a linear, the mean over slices of
    /// the attention maps' `[m, n]` for a matmul.
    pub fn nuclear_norm(&self) -> Result<f64> {
        let (y, [rows, n]) = self.output()?;
        match &self.sample {
            Sample::Linear { .. } => nuclear_norm(&y, rows, n),
            Sample::MatMul(p) => {
                let m = p.dims[0];
                let norms = y
                    .par_chunks((m * n).max(1))
                    .map(|s| nuclear_norm(s, m, n))
                    .collect::<Result<Vec<_>>>()?;
                Ok(norms.iter().sum::<f64>() / norms.len().max(1) as f64)
            }
        }
        .context(|| format!("nuclear norm of `{}`", self.name))
    }

    /// `‖Ŷ − Y‖²_F`: the squared error of the output on the sample when quantized as
    /// [`LayerSample::output_with`] says.
    pub fn perturbation(
        &self,
        weights: Option<QuantSpec>,
        activations: Option<QuantSpec>,
    ) -> Result<f64> {
        let (y, _) = self.output()?;
        let (yq, _) = self
            .output_with(weights, activations)
            .context(|| format!("quantized output of `{}`", self.name))?;
        Ok(y.iter()
            .zip(&yq)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum())
    }
}

/// Runs `batches` through the float `model` and keeps, for every linear layer, up to `rows` of its
/// input rows (spread over the batches) with its weight, and for every activation matmul up to
/// `max(8, ⌈rows / m⌉)` operand slices. Convolutions are not sampled. The model is left in float mode.
///
/// Errors: `rows` of 0, no calibration image, a fault (NaN / Inf) in a layer.
pub fn sample_layers<B, M, I>(model: &mut M, batches: I, rows: usize) -> Result<Vec<LayerSample>>
where
    B: Backend,
    M: Quantizable<B>,
    I: IntoIterator<Item = Tensor<B, 4>>,
{
    if rows == 0 {
        return Err(Error::Config("sample at least one row per layer".into()));
    }
    let reset = |model: &mut M| {
        for mut l in model.layers_mut() {
            l.state_mut().reset();
        }
    };
    for mut l in model.layers_mut() {
        let specs = vec![None; l.num_inputs()];
        match l {
            LayerMut::Conv(_) => l.state_mut().reset(),
            _ => l.state_mut().start_calibration(&specs, rows)?,
        }
    }
    let mut images = 0;
    for batch in batches {
        let n = batch.dims()[0];
        let step = model.calibration_step(batch);
        if let Some(fault) = take_fault(model) {
            reset(model);
            return Err(fault).context(|| format!("sampling after {images} images"));
        }
        if let Err(e) = step {
            reset(model);
            return Err(e);
        }
        images += n;
    }
    if images == 0 {
        reset(model);
        return Err(Error::Empty {
            what: "calibration set for the layer samples".into(),
            shape: vec![0],
        });
    }
    let mut out = Vec::new();
    for l in model.layers_mut() {
        match &l {
            LayerMut::Linear(lin) => {
                let x = lin.quant.calibration_sample();
                if x.is_empty() {
                    continue;
                }
                let (weight, shape) = lin.weight_torch()?;
                out.push(LayerSample {
                    name: lin.name.clone(),
                    sample: Sample::Linear {
                        weight,
                        bias: l.bias()?,
                        shape: [shape[0], shape[1]],
                        x,
                    },
                });
            }
            LayerMut::MatMul(mm) => {
                let p = mm.quant.calibration_pairs();
                if p.count > 0 {
                    out.push(LayerSample {
                        name: mm.name.clone(),
                        sample: Sample::MatMul(p),
                    });
                }
            }
            LayerMut::Conv(_) => {}
        }
    }
    reset(model);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::Rng;

    /// A random orthogonal `n × n` matrix: a product of Householder reflections.
    fn orthogonal(n: usize, rng: &mut Rng) -> Vec<f64> {
        let mut q: Vec<f64> = (0..n * n)
            .map(|i| if i % (n + 1) == 0 { 1.0 } else { 0.0 })
            .collect();
        for _ in 0..n {
            let v: Vec<f64> = (0..n).map(|_| f64::from(rng.gaussian())).collect();
            let vv: f64 = v.iter().map(|x| x * x).sum();
            // q ← q · (I − 2 v vᵀ / vᵀv)
            for r in 0..n {
                let dot: f64 = (0..n).map(|c| q[r * n + c] * v[c]).sum();
                for c in 0..n {
                    q[r * n + c] -= 2.0 * dot * v[c] / vv;
                }
            }
        }
        q
    }

    #[test]
    fn singular_values_of_known_matrices() {
        let mut rng = Rng::new(5);
        // Diagonal (rectangular, negative entries): the absolute values.
        let mut d = vec![0f32; 4 * 6];
        for (i, v) in [2.0, -7.0, 0.5, 3.0].iter().enumerate() {
            d[i * 6 + i] = *v;
        }
        let s = singular_values(&d, 4, 6).unwrap();
        for (got, want) in s.iter().zip([7.0, 3.0, 2.0, 0.5]) {
            assert!((got - want).abs() < 1e-12, "{s:?}");
        }
        // U · diag(σ) · Vᵀ with random orthogonal U (7×7) and V (5×5).
        let (m, n) = (7, 5);
        let (u, v) = (orthogonal(m, &mut rng), orthogonal(n, &mut rng));
        let sigma = [9.0, 4.0, 2.5, 1.0, 0.25];
        let a: Vec<f32> = (0..m * n)
            .map(|idx| {
                let (i, j) = (idx / n, idx % n);
                (0..n)
                    .map(|t| u[i * m + t] * sigma[t] * v[j * n + t])
                    .sum::<f64>() as f32
            })
            .collect();
        for (rows, cols, mat) in [(m, n, a.clone()), (n, m, transpose(&a, m, n))] {
            let s = singular_values(&mat, rows, cols).unwrap();
            for (got, want) in s.iter().zip(sigma) {
                assert!((got - want).abs() < 1e-5, "{rows}×{cols}: {s:?}");
            }
            let nn = nuclear_norm(&mat, rows, cols).unwrap();
            assert!((nn - sigma.iter().sum::<f64>()).abs() < 1e-5);
        }
        // Rank one: u·vᵀ has one singular value |u|·|v|, the others zero.
        let (uu, vv) = (rng.gaussian_vec(30), rng.gaussian_vec(11));
        let r1: Vec<f32> = uu
            .iter()
            .flat_map(|a| vv.iter().map(move |b| a * b))
            .collect();
        let s = singular_values(&r1, 30, 11).unwrap();
        let norm = |x: &[f32]| x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
        assert!((s[0] - norm(&uu) * norm(&vv)).abs() < 1e-5 * s[0], "{s:?}");
        assert!(s[1..].iter().all(|x| *x < 1e-5 * s[0]), "{s:?}");
        // Frobenius norm² = Σ σ² on a random matrix.
        let g = rng.gaussian_vec(40 * 13);
        let s = singular_values(&g, 40, 13).unwrap();
        let fro: f64 = g.iter().map(|v| f64::from(*v).powi(2)).sum();
        assert!((s.iter().map(|x| x * x).sum::<f64>() - fro).abs() < 1e-9 * fro);
    }

    fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        (0..rows * cols)
            .map(|idx| {
                let (j, i) = (idx / rows, idx % rows);
                a[i * cols + j]
            })
            .collect()
    }

    #[test]
    fn bad_matrices_are_errors() {
        assert!(matches!(
            singular_values(&[1.0, 2.0, 3.0], 2, 2),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            singular_values(&[], 0, 3),
            Err(Error::Empty { .. })
        ));
        assert!(matches!(
            singular_values(&[1.0, f32::INFINITY], 1, 2),
            Err(Error::NonFinite { .. })
        ));
    }

    #[test]
    fn layer_outputs_and_perturbations() {
        let mut rng = Rng::new(6);
        let (n, k, rows) = (6, 10, 20);
        let weight = rng.gaussian_vec(n * k);
        let bias = rng.gaussian_vec(n);
        let x = rng.gaussian_vec(rows * k);
        let l = LayerSample {
            name: "fc".into(),
            sample: Sample::Linear {
                weight: weight.clone(),
                bias: Some(bias.clone()),
                shape: [n, k],
                x: x.clone(),
            },
        };
        let (y, [r, c]) = l.output().unwrap();
        assert_eq!([r, c], [rows, n]);
        for i in 0..rows {
            for j in 0..n {
                let want: f64 = (0..k)
                    .map(|t| f64::from(x[i * k + t]) * f64::from(weight[j * k + t]))
                    .sum::<f64>()
                    + f64::from(bias[j]);
                assert!((f64::from(y[i * n + j]) - want).abs() < 1e-4);
            }
        }
        assert!((l.nuclear_norm().unwrap() - nuclear_norm(&y, rows, n).unwrap()).abs() < 1e-9);
        assert_eq!(l.perturbation(None, None).unwrap(), 0.0);
        let spec = |b| {
            QuantSpec::new(
                b,
                crate::Scheme::Symmetric,
                crate::Granularity::PerChannel { axis: 0 },
            )
            .unwrap()
        };
        let (p2, p4, p8) = (
            l.perturbation(Some(spec(2)), None).unwrap(),
            l.perturbation(Some(spec(4)), None).unwrap(),
            l.perturbation(Some(spec(8)), None).unwrap(),
        );
        assert!(p2 > p4 && p4 > p8 && p8 > 0.0, "{p2} {p4} {p8}");
    }
}
