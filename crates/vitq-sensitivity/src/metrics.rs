//! Scores of a quantized model's logits against the float model's on the same images: top-1 accuracy
//! and its drop, the KL divergence of the softmax distributions, and the SQNR of the logits.
//!
//! ```
//! use vitq_sensitivity::metrics::{Logits, Scores};
//!
//! let float = Logits::new(vec![2.0, 0.0, 0.0, 1.0], 2, vec![0, 1])?;
//! let quant = Logits::new(vec![1.9, 0.1, 0.2, 0.8], 2, vec![0, 1])?;
//! let s = Scores::compare(&float, &quant)?;
//! assert_eq!(s.accuracy, 1.0);
//! assert_eq!(s.accuracy_drop, 0.0);
//! assert!(s.kl > 0.0 && s.kl < 0.01);
//! assert!(s.sqnr_db > 15.0);
//! # Ok::<(), vitq_sensitivity::Error>(())
//! ```

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The logits of a model on `n` labelled images, row-major `[n, classes]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Logits {
    values: Vec<f32>,
    classes: usize,
    labels: Vec<usize>,
}

impl Logits {
    /// Logits `[labels.len(), classes]` and the true labels. Errors if the sizes disagree, a label is
    /// out of range, or there are no images.
    pub fn new(values: Vec<f32>, classes: usize, labels: Vec<usize>) -> Result<Self> {
        if classes == 0 || labels.is_empty() || values.len() != labels.len() * classes {
            return Err(Error::Shape(format!(
                "{} logits for {} images of {classes} classes",
                values.len(),
                labels.len()
            )));
        }
        if let Some(l) = labels.iter().find(|&&l| l >= classes) {
            return Err(Error::Shape(format!("label {l} with {classes} classes")));
        }
        Ok(Self {
            values,
            classes,
            labels,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Always `false` ([`Logits::new`] refuses empty sets).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The true labels.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// The logits, row-major.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    fn rows(&self) -> impl Iterator<Item = &[f32]> {
        self.values.chunks_exact(self.classes)
    }

    /// Top-1 accuracy in `[0, 1]` (ties go to the lowest class index).
    pub fn accuracy(&self) -> f64 {
        let correct = self
            .rows()
            .zip(&self.labels)
            .filter(|(row, l)| argmax(row) == **l)
            .count();
        correct as f64 / self.len() as f64
    }
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}

/// `log softmax(row)` in f64.
fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row
        .iter()
        .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
    let lse = max
        + row
            .iter()
            .map(|&v| (f64::from(v) - max).exp())
            .sum::<f64>()
            .ln();
    row.iter().map(|&v| f64::from(v) - lse).collect()
}

/// How far a quantized model's logits are from the float model's.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Images compared.
    pub images: usize,
    /// Top-1 accuracy of the quantized model, in `[0, 1]`.
    pub accuracy: f64,
    /// Float accuracy minus quantized accuracy, in percentage points (negative when quantization
    /// happened to help).
    pub accuracy_drop: f64,
    /// Mean over images of `KL(softmax(float) ‖ softmax(quantized))`, in nats.
    pub kl: f64,
    /// `10·log10(Σ float² / Σ (float − quantized)²)` over all logits, in dB (`+∞` when identical;
    /// written as the string `"inf"` in JSON, which has no infinity).
    #[serde(with = "extended_f64")]
    pub sqnr_db: f64,
}

impl Scores {
    /// Compares `quantized` with `float` (same images, same order).
    pub fn compare(float: &Logits, quantized: &Logits) -> Result<Self> {
        if float.classes != quantized.classes || float.labels != quantized.labels {
            return Err(Error::Shape(format!(
                "quantized logits ({} images, {} classes) are not of the float run's images ({} images, {} classes)",
                quantized.len(),
                quantized.classes,
                float.len(),
                float.classes
            )));
        }
        if float.values.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "the float model".into(),
            });
        }
        if quantized.values.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "the quantized model".into(),
            });
        }
        let mut kl = 0.0;
        for (p, q) in float.rows().zip(quantized.rows()) {
            let (lp, lq) = (log_softmax(p), log_softmax(q));
            kl += lp
                .iter()
                .zip(&lq)
                .map(|(a, b)| a.exp() * (a - b))
                .sum::<f64>()
                .max(0.0);
        }
        let (mut signal, mut noise) = (0.0f64, 0.0f64);
        for (a, b) in float.values.iter().zip(&quantized.values) {
            let (a, b) = (f64::from(*a), f64::from(*b));
            signal += a * a;
            noise += (a - b) * (a - b);
        }
        let accuracy = quantized.accuracy();
        Ok(Self {
            images: float.len(),
            accuracy,
            accuracy_drop: 100.0 * (float.accuracy() - accuracy),
            kl: kl / float.len() as f64,
            sqnr_db: sqnr_db(signal, noise),
        })
    }

    /// The relative noise power `10^(−SQNR/10) = Σ (float − quantized)² / Σ float²` (0 when
    /// identical): additive over layers when their quantization errors are independent.
    pub fn noise(&self) -> f64 {
        10f64.powf(-self.sqnr_db / 10.0)
    }
}

fn sqnr_db(signal: f64, noise: f64) -> f64 {
    if noise == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (signal / noise).log10()
    }
}

/// f64 in JSON with `"inf"`, `"-inf"` and `"nan"` for the values JSON numbers cannot hold.
mod extended_f64 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        match *v {
            v if v.is_finite() => s.serialize_f64(v),
            v if v.is_nan() => s.serialize_str("nan"),
            v if v > 0.0 => s.serialize_str("inf"),
            _ => s.serialize_str("-inf"),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Num(f64),
        Str(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Num(v) => Ok(v),
            Repr::Str(s) => match s.as_str() {
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                "nan" => Ok(f64::NAN),
                other => Err(D::Error::custom(format!("`{other}` is not a number"))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_logits_score_zero_kl_and_infinite_sqnr() {
        let l = Logits::new(vec![1.0, 2.0, 3.0, 0.5, 0.1, 0.0], 3, vec![2, 0]).unwrap();
        let s = Scores::compare(&l, &l).unwrap();
        assert_eq!(s.kl, 0.0);
        assert_eq!(s.sqnr_db, f64::INFINITY);
        assert_eq!(s.noise(), 0.0);
        assert_eq!(s.accuracy, 1.0);
        assert_eq!(s.accuracy_drop, 0.0);
    }

    #[test]
    fn kl_and_sqnr_match_hand_computed_values() {
        // One image, two classes: p = softmax(0, 0) = (1/2, 1/2), q = softmax(ln 3, 0) = (3/4, 1/4).
        let f = Logits::new(vec![0.0, 0.0], 2, vec![0]).unwrap();
        let q = Logits::new(vec![3f32.ln(), 0.0], 2, vec![0]).unwrap();
        let s = Scores::compare(&f, &q).unwrap();
        let expected = 0.5 * (0.5f64 / 0.75).ln() + 0.5 * (0.5f64 / 0.25).ln();
        assert!((s.kl - expected).abs() < 1e-6, "{} vs {expected}", s.kl);
        // Signal 0: SQNR is −∞ dB, noise +∞.
        assert_eq!(s.sqnr_db, f64::NEG_INFINITY);
        let f = Logits::new(vec![3.0, 4.0], 2, vec![1]).unwrap();
        let q = Logits::new(vec![3.0, 3.5], 2, vec![1]).unwrap();
        let s = Scores::compare(&f, &q).unwrap();
        assert!((s.sqnr_db - 10.0 * (25.0f64 / 0.25).log10()).abs() < 1e-9);
        assert!((s.noise() - 0.01).abs() < 1e-12);
    }

    #[test]
    fn accuracy_drop_is_in_points() {
        let f = Logits::new(vec![1.0, 0.0, 0.0, 1.0], 2, vec![0, 1]).unwrap();
        let q = Logits::new(vec![1.0, 0.0, 1.0, 0.0], 2, vec![0, 1]).unwrap();
        let s = Scores::compare(&f, &q).unwrap();
        assert_eq!(s.accuracy, 0.5);
        assert_eq!(s.accuracy_drop, 50.0);
    }

    #[test]
    fn infinite_sqnr_survives_json() {
        let l = Logits::new(vec![1.0, 2.0], 2, vec![1]).unwrap();
        let s = Scores::compare(&l, &l).unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"inf\""), "{json}");
        assert_eq!(serde_json::from_str::<Scores>(&json).unwrap(), s);
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(Logits::new(vec![1.0; 5], 2, vec![0, 1]).is_err());
        assert!(Logits::new(vec![1.0; 4], 2, vec![0, 2]).is_err());
        assert!(Logits::new(vec![], 2, vec![]).is_err());
        let f = Logits::new(vec![1.0; 4], 2, vec![0, 1]).unwrap();
        let other_labels = Logits::new(vec![1.0; 4], 2, vec![1, 1]).unwrap();
        assert!(matches!(
            Scores::compare(&f, &other_labels),
            Err(Error::Shape(_))
        ));
        let nan = Logits::new(vec![1.0, f32::NAN, 0.0, 0.0], 2, vec![0, 1]).unwrap();
        assert!(matches!(
            Scores::compare(&f, &nan),
            Err(Error::NonFinite { .. })
        ));
    }
}
