//! Classification metrics: top-1, top-5, weighted F1, per-class accuracy, confusion matrix.
//!
//! ```
//! use vitq_models::metrics::Metrics;
//! let mut m = Metrics::new(3);
//! m.add(&[0.1, 0.7, 0.2], 1); // correct
//! m.add(&[0.5, 0.4, 0.1], 1); // wrong, but in the top 2
//! assert_eq!(m.correct(), 1);
//! assert_eq!(m.top1(), 0.5);
//! assert_eq!(m.confusion()[1], vec![1, 1, 0]);
//! ```

use serde::Serialize;

/// Streaming classification metrics over `classes` classes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Metrics {
    classes: usize,
    total: usize,
    top5_hits: usize,
    /// `confusion[true][predicted]`.
    confusion: Vec<Vec<usize>>,
}

impl Metrics {
    /// Empty metrics.
    pub fn new(classes: usize) -> Self {
        Self {
            classes,
            total: 0,
            top5_hits: 0,
            confusion: vec![vec![0; classes]; classes],
        }
    }

    /// Adds one prediction (`logits` of length `classes`) with its true label. Labels out of range
    /// are ignored; NaN logits rank last.
    pub fn add(&mut self, logits: &[f32], label: usize) {
        if label >= self.classes || logits.len() != self.classes {
            return;
        }
        let mut order: Vec<usize> = (0..self.classes).collect();
        order.sort_by(|&a, &b| {
            let (x, y) = (logits[a], logits[b]);
            y.partial_cmp(&x)
                .unwrap_or_else(|| x.is_nan().cmp(&y.is_nan()))
        });
        self.total += 1;
        self.top5_hits += usize::from(order.iter().take(5).any(|&c| c == label));
        self.confusion[label][order[0]] += 1;
    }

    /// Adds a batch: `logits` row-major `[labels.len(), classes]`.
    pub fn add_batch(&mut self, logits: &[f32], labels: &[usize]) {
        for (row, &label) in logits.chunks_exact(self.classes).zip(labels) {
            self.add(row, label);
        }
    }

    /// Number of predictions.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Number of correct top-1 predictions.
    pub fn correct(&self) -> usize {
        (0..self.classes).map(|c| self.confusion[c][c]).sum()
    }

    /// Top-1 accuracy in `[0, 1]`.
    pub fn top1(&self) -> f64 {
        ratio(self.correct(), self.total)
    }

    /// Top-5 accuracy in `[0, 1]` (top-k with k = classes when fewer than 5).
    pub fn top5(&self) -> f64 {
        ratio(self.top5_hits, self.total)
    }

    /// Accuracy of each class (recall), `NaN`-free: 0 for classes with no samples.
    pub fn per_class_accuracy(&self) -> Vec<f64> {
        (0..self.classes)
            .map(|c| ratio(self.confusion[c][c], self.confusion[c].iter().sum()))
            .collect()
    }

    /// F1 of each class weighted by its support (scikit-learn's `average="weighted"`).
    pub fn weighted_f1(&self) -> f64 {
        let mut sum = 0.0;
        for c in 0..self.classes {
            let tp = self.confusion[c][c];
            let support: usize = self.confusion[c].iter().sum();
            let predicted: usize = (0..self.classes).map(|t| self.confusion[t][c]).sum();
            let (p, r) = (ratio(tp, predicted), ratio(tp, support));
            let f1 = if p + r > 0.0 {
                2.0 * p * r / (p + r)
            } else {
                0.0
            };
            sum += f1 * support as f64;
        }
        ratio_f(sum, self.total)
    }

    /// The confusion matrix, `[true][predicted]`.
    pub fn confusion(&self) -> &[Vec<usize>] {
        &self.confusion
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn ratio_f(a: f64, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a / b as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checked by hand against scikit-learn's definition on a 3-class example.
    #[test]
    fn weighted_f1_matches_the_definition() {
        let mut m = Metrics::new(3);
        // true 0: predicted 0, 0, 1; true 1: predicted 1; true 2: predicted 0, 2.
        let one_hot = |c: usize| {
            let mut v = vec![0.0; 3];
            v[c] = 1.0;
            v
        };
        for (t, p) in [(0, 0), (0, 0), (0, 1), (1, 1), (2, 0), (2, 2)] {
            m.add(&one_hot(p), t);
        }
        // class 0: p = 2/3, r = 2/3, f1 = 2/3, support 3; class 1: p = 1/2, r = 1, f1 = 2/3, support 1;
        // class 2: p = 1, r = 1/2, f1 = 2/3, support 2. Weighted: 2/3.
        assert!((m.weighted_f1() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(m.correct(), 4);
        assert_eq!(m.per_class_accuracy()[2], 0.5);
        assert_eq!(m.top5(), 1.0);
    }
}
