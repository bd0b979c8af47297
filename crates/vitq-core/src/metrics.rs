//! Scale-free error measures and summary statistics on host slices.
//!
//! ```
//! use vitq_core::metrics::{sqnr_db, mse};
//! let x = [1.0, -2.0, 3.0];
//! let y = [1.1, -2.0, 2.9];
//! assert!((mse(&x, &y) - 0.02 / 3.0).abs() < 1e-7);
//! assert!(sqnr_db(&x, &y) > 25.0);
//! ```

use serde::{Deserialize, Serialize};

/// Mean squared error between `reference` and `approx` (in f64). Lengths must match; extra elements
/// of the longer slice are ignored.
pub fn mse(reference: &[f32], approx: &[f32]) -> f64 {
    let n = reference.len().min(approx.len());
    if n == 0 {
        return 0.0;
    }
    let s: f64 = reference
        .iter()
        .zip(approx)
        .map(|(a, b)| {
            let d = f64::from(*a) - f64::from(*b);
            d * d
        })
        .sum();
    s / n as f64
}

/// Signal-to-quantization-noise ratio `10·log10(Σx² / Σ(x - x̂)²)` in dB; `+inf` when exact.
pub fn sqnr_db(reference: &[f32], approx: &[f32]) -> f64 {
    let signal: f64 = reference.iter().map(|a| f64::from(*a).powi(2)).sum();
    let noise = mse(reference, approx) * reference.len().min(approx.len()) as f64;
    if noise == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (signal / noise).log10()
}

/// Summary statistics of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Smallest value.
    pub min: f32,
    /// Largest value.
    pub max: f32,
    /// Mean.
    pub mean: f64,
    /// Population standard deviation.
    pub std: f64,
    /// Fraction of exact zeros.
    pub sparsity: f64,
}

impl Stats {
    /// Statistics of `data` (all fields 0 for an empty slice; NaN propagates into mean and std).
    pub fn of(data: &[f32]) -> Self {
        if data.is_empty() {
            return Self {
                min: 0.0,
                max: 0.0,
                mean: 0.0,
                std: 0.0,
                sparsity: 0.0,
            };
        }
        let n = data.len() as f64;
        let (mut min, mut max, mut sum, mut zeros) =
            (f32::INFINITY, f32::NEG_INFINITY, 0.0, 0usize);
        for &v in data {
            min = min.min(v);
            max = max.max(v);
            sum += f64::from(v);
            zeros += usize::from(v == 0.0);
        }
        let mean = sum / n;
        let var = data
            .iter()
            .map(|v| (f64::from(*v) - mean).powi(2))
            .sum::<f64>()
            / n;
        Self {
            min,
            max,
            mean,
            std: var.sqrt(),
            sparsity: zeros as f64 / n,
        }
    }
}
