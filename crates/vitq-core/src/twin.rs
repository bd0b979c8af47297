//! Twin-uniform quantization of post-softmax and post-GELU activations (Yuan et al., "PTQ4ViT:
//! Post-Training Quantization for Vision Transformers with Twin Uniform Quantization", ECCV 2022, §4.1).
//!
//! A `k`-bit twin-uniform quantizer has two uniform ranges, `R1` with scale `Δ_R1` and `R2` with scale
//! `Δ_R2 = 2^m · Δ_R1` (`m ≥ 0`, the paper's constraint: the two kinds of codes are aligned by a shift
//! of `m` bits, so a matmul accumulates both in one integer sum). A code is one range bit (the top bit:
//! 0 for `R1`, 1 for `R2`) and a `k − 1`-bit magnitude `q ∈ [0, 2^(k−1) − 1]`. Which range a value takes
//! is fixed by where it lies, as in the paper:
//!
//! | [`TwinKind`] | `R1` (fine) | `R2` (coarse) | fixed by the paper | searched |
//! |---|---|---|---|---|
//! | `Softmax` (input 0 of `attn.matmul_av`) | `[0, 2^(k−1)·Δ_R1)`: value `q·Δ_R1` | the rest of `[0, 1]`: `q·Δ_R2` | `Δ_R2 = 1 / (2^(k−1) − 1)`, so `R2` covers `[0, 1]` | `m` (`Δ_R1 = Δ_R2 / 2^m`) |
//! | `Gelu` (input of `mlp.fc2`) | negative values: `−q·Δ_R1` | `[0, ∞)`: `q·Δ_R2`, clamped | `R1` covers the negative range (GELU's minimum is −0.17): `m` is the largest with `(2^(k−1) − 1)·Δ_R1 ≥ |min x|` | `Δ_R2` |
//!
//! `q = clamp(round(|x| / Δ), 0, 2^(k−1) − 1)` in its range, rounding half to even. Two details differ
//! from the text of the paper, both as in the authors' code: `Δ_R2` of the softmax quantizer is
//! `1 / (2^(k−1) − 1)` (the paper writes `1 / 2^(k−1)`, which cannot represent an attention weight of 1),
//! and the magnitude has `2^(k−1)` levels in each range (one code per level, `k` bits in all). For GELU
//! the sign is the range bit, so `R1` gets `k − 1` bits for `[−0.17, 0)` alone.
//!
//! ```
//! use vitq_core::twin::TwinQuant;
//!
//! // 4 bits: Δ_R2 = 1/7, m = 2 so Δ_R1 = 1/28 and R1 = [0, 8/28).
//! let t = TwinQuant::softmax(4, 2)?;
//! assert_eq!(t.fake_quant_one(0.05), 1.0 / 28.0); // R1: round(1.4) = 1
//! assert_eq!(t.fake_quant_one(0.6), 4.0 / 7.0); // R2: round(4.2) = 4
//! assert_eq!(t.quantize_one(0.6), 0b1100); // range bit 1, magnitude 4
//! # Ok::<(), vitq_core::Error>(())
//! ```

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::uniform::check_finite;

/// The most bits of shift between the two scales (`m`); the authors' code searches `m < 20`.
pub const MAX_SHIFT: u32 = 24;

/// The smallest and largest bit-widths of a twin-uniform quantizer (one bit selects the range, so at
/// least two are left for the magnitude).
pub const TWIN_BITS: [u32; 2] = [3, 8];

/// GELU's minimum, `min_x x·Φ(x)` (at `x ≈ −0.7518`).
pub const GELU_MIN: f32 = -0.169_971_24;

/// Which activation a twin-uniform quantizer is made for (the table in the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TwinKind {
    /// Post-softmax attention weights in `[0, 1]`.
    Softmax,
    /// Post-GELU activations in `[−0.17, ∞)`.
    Gelu,
}

/// A twin-uniform quantizer: `bits` in all, scales `Δ_R1` and `Δ_R2 = 2^m · Δ_R1`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwinQuant {
    /// Post-softmax or post-GELU.
    pub kind: TwinKind,
    /// Bits per code (range bit included), in [`TWIN_BITS`].
    pub bits: u32,
    /// `Δ_R1`, the fine scale.
    pub delta_r1: f32,
    /// `Δ_R2 / Δ_R1 = 2^m`.
    pub m: u32,
}

impl TwinQuant {
    /// A quantizer with the given parameters, validated ([`TwinQuant::validate`]).
    pub fn new(kind: TwinKind, bits: u32, delta_r1: f32, m: u32) -> Result<Self> {
        let t = Self {
            kind,
            bits,
            delta_r1,
            m,
        };
        t.validate()?;
        Ok(t)
    }

    /// The post-softmax quantizer with `Δ_R2 = 1 / (2^(k−1) − 1)` and `Δ_R1 = Δ_R2 / 2^m`.
    pub fn softmax(bits: u32, m: u32) -> Result<Self> {
        check_bits(bits)?;
        let d2 = 1.0 / levels(bits) as f32;
        Self::new(TwinKind::Softmax, bits, d2 / pow2(m), m)
    }

    /// The post-GELU quantizer with scale `delta_r2` for the non-negative values and `Δ_R1 = Δ_R2 / 2^m`
    /// for the negative ones, `m` the largest (up to [`MAX_SHIFT`]) whose `R1` still covers
    /// `[negative_min, 0]` (`negative_min ≤ 0`, e.g. the calibrated minimum or [`GELU_MIN`]).
    pub fn gelu(bits: u32, delta_r2: f32, negative_min: f32) -> Result<Self> {
        check_bits(bits)?;
        if !(delta_r2.is_finite() && delta_r2 > 0.0 && negative_min.is_finite()) {
            return Err(Error::InvalidSpec(format!(
                "twin-uniform GELU quantizer: Δ_R2 = {delta_r2} and minimum {negative_min} must be \
                 finite, Δ_R2 positive"
            )));
        }
        let need = negative_min.min(0.0).abs();
        let q = levels(bits) as f32;
        let mut m = 0;
        while m < MAX_SHIFT && delta_r2 / pow2(m + 1) * q >= need {
            m += 1;
        }
        Self::new(TwinKind::Gelu, bits, delta_r2 / pow2(m), m)
    }

    /// Checks the bit-width ([`TWIN_BITS`]), `m ≤` [`MAX_SHIFT`] and that both scales are positive and
    /// finite.
    pub fn validate(&self) -> Result<()> {
        check_bits(self.bits)?;
        if self.m > MAX_SHIFT {
            return Err(Error::InvalidSpec(format!(
                "twin-uniform shift m = {} is larger than {MAX_SHIFT}",
                self.m
            )));
        }
        let d2 = self.delta_r2();
        if !(self.delta_r1.is_finite() && self.delta_r1 > 0.0 && d2.is_finite()) {
            return Err(Error::InvalidSpec(format!(
                "twin-uniform scales Δ_R1 = {}, Δ_R2 = {d2} must be positive and finite",
                self.delta_r1
            )));
        }
        Ok(())
    }

    /// `Δ_R2 = 2^m · Δ_R1`.
    pub fn delta_r2(&self) -> f32 {
        self.delta_r1 * pow2(self.m)
    }

    /// The largest magnitude code of a range, `2^(k−1) − 1`.
    pub fn max_level(&self) -> u32 {
        levels(self.bits)
    }

    /// Whether `x` belongs to the fine range `R1`.
    #[inline]
    pub fn in_r1(&self, x: f32) -> bool {
        match self.kind {
            TwinKind::Softmax => x < (self.max_level() + 1) as f32 * self.delta_r1,
            TwinKind::Gelu => x < 0.0,
        }
    }

    /// The `bits`-bit code of `x`: the range bit (1 for `R2`) above the `k − 1`-bit magnitude.
    #[inline]
    pub fn quantize_one(&self, x: f32) -> u8 {
        let qmax = self.max_level();
        let (r2, d) = if self.in_r1(x) {
            (0, self.delta_r1)
        } else {
            (1, self.delta_r2())
        };
        let mag = match self.kind {
            TwinKind::Gelu if r2 == 0 => -x,
            _ => x,
        };
        let q = (mag / d).round_ties_even().clamp(0.0, qmax as f32) as u32;
        ((r2 << (self.bits - 1)) | q) as u8
    }

    /// The value of a code made by [`TwinQuant::quantize_one`] (the magnitude bits above `k − 1` are
    /// ignored; [`TwinQuant::dequantize`] checks them).
    #[inline]
    pub fn dequantize_one(&self, code: u8) -> f32 {
        let r2 = (code >> (self.bits - 1)) & 1 == 1;
        let q = (u32::from(code) & self.max_level()) as f32;
        match (self.kind, r2) {
            (_, true) => q * self.delta_r2(),
            (TwinKind::Softmax, false) => q * self.delta_r1,
            (TwinKind::Gelu, false) => -q * self.delta_r1,
        }
    }

    /// Quantize → dequantize one value.
    #[inline]
    pub fn fake_quant_one(&self, x: f32) -> f32 {
        self.dequantize_one(self.quantize_one(x))
    }

    /// The reference quantizer: one code per value; [`Error::NonFinite`] at the first NaN or infinity.
    pub fn quantize(&self, x: &[f32]) -> Result<Vec<u8>> {
        self.validate()?;
        check_finite(x, &[x.len()])?;
        Ok(x.iter().map(|&v| self.quantize_one(v)).collect())
    }

    /// The reference dequantizer; a code of more than `bits` bits is [`Error::InvalidSpec`].
    pub fn dequantize(&self, codes: &[u8]) -> Result<Vec<f32>> {
        self.validate()?;
        if let Some(c) = codes.iter().find(|&&c| u32::from(c) >> self.bits != 0) {
            return Err(Error::InvalidSpec(format!(
                "code {c:#b} has more than {} bits",
                self.bits
            )));
        }
        Ok(codes.iter().map(|&c| self.dequantize_one(c)).collect())
    }

    /// Quantize → dequantize on the tensor's device (the simulated path of a layer whose input is
    /// twin-quantized). Equal to [`TwinQuant::fake_quant_one`] element by element.
    pub fn fake_quant<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let qmax = self.max_level() as f32;
        let (d1, d2) = (self.delta_r1, self.delta_r2());
        let r2 = x
            .clone()
            .div_scalar(d2)
            .round()
            .clamp(0.0, qmax)
            .mul_scalar(d2);
        match self.kind {
            TwinKind::Softmax => {
                let r1 = x
                    .clone()
                    .div_scalar(d1)
                    .round()
                    .clamp(0.0, qmax)
                    .mul_scalar(d1);
                let mask = x.lower_elem((qmax + 1.0) * d1);
                r2.mask_where(mask, r1)
            }
            TwinKind::Gelu => {
                // −round(−x/Δ) = round(x/Δ) for half-to-even rounding.
                let r1 = x
                    .clone()
                    .div_scalar(d1)
                    .round()
                    .clamp(-qmax, 0.0)
                    .mul_scalar(d1);
                let mask = x.lower_elem(0.0);
                r2.mask_where(mask, r1)
            }
        }
    }
}

fn check_bits(bits: u32) -> Result<()> {
    let [lo, hi] = TWIN_BITS;
    if (lo..=hi).contains(&bits) {
        Ok(())
    } else {
        Err(Error::InvalidSpec(format!(
            "twin-uniform quantization needs {lo}..={hi} bits (one selects the range), not {bits}"
        )))
    }
}

fn levels(bits: u32) -> u32 {
    (1 << (bits - 1)) - 1
}

fn pow2(m: u32) -> f32 {
    (m as f32).exp2()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_hand_worked_values() {
        // 4 bits: Δ_R2 = 1/7, m = 2 → Δ_R1 = 1/28, R1 = [0, 8/28 = 0.2857).
        let t = TwinQuant::softmax(4, 2).unwrap();
        assert_eq!(t.delta_r2(), 1.0 / 7.0);
        assert_eq!(t.delta_r1, 1.0 / 28.0);
        for (x, code, value) in [
            (0.0, 0b0000, 0.0),
            (0.05, 0b0001, 1.0 / 28.0),  // 1.4 → 1
            (0.25, 0b0111, 7.0 / 28.0),  // 7.0 → 7
            (0.28, 0b0111, 7.0 / 28.0),  // 7.84 → 8, clamped to 7 (still R1)
            (0.2858, 0b1010, 2.0 / 7.0), // R2: 2.0006 → 2
            (0.6, 0b1100, 4.0 / 7.0),    // 4.2 → 4
            (0.64, 0b1100, 4.0 / 7.0),   // 4.48 → 4
            (1.0, 0b1111, 1.0),          // 7
            (-0.01, 0b0000, 0.0),        // below the range: 0
        ] {
            assert_eq!(t.quantize_one(x), code, "x = {x}");
            let got = t.dequantize_one(code);
            assert!(
                (got - value).abs() < 1e-7,
                "code {code:#06b}: {got} ≠ {value}"
            );
        }
    }

    #[test]
    fn gelu_hand_worked_values() {
        // 4 bits, Δ_R2 = 0.5, negative minimum −0.17: 7·0.5/2^m ≥ 0.17 holds up to m = 4
        // (7·0.03125 = 0.21875) but not m = 5 (0.109).
        let t = TwinQuant::gelu(4, 0.5, GELU_MIN).unwrap();
        assert_eq!((t.m, t.delta_r1), (4, 0.031_25));
        for (x, code, value) in [
            (-0.17, 0b0101, -5.0 * 0.031_25), // 5.44 → 5
            (-0.01, 0b0000, 0.0),             // 0.32 → 0
            (-0.3, 0b0111, -7.0 * 0.031_25),  // 9.6, clamped to 7
            (0.0, 0b1000, 0.0),
            (0.8, 0b1010, 1.0), // 1.6 → 2
            (9.0, 0b1111, 3.5), // clamped to 7
        ] {
            assert_eq!(t.quantize_one(x), code, "x = {x}");
            let got = t.dequantize_one(code);
            assert!(
                (got - value).abs() < 1e-7,
                "code {code:#06b}: {got} ≠ {value}"
            );
        }
        // A range too small to cover the negatives gets m = 0 (and clamps).
        assert_eq!(TwinQuant::gelu(4, 0.01, -0.17).unwrap().m, 0);
    }

    #[test]
    fn codes_round_trip_and_bad_inputs_are_errors() {
        let t = TwinQuant::softmax(6, 5).unwrap();
        let x: Vec<f32> = (0..=200).map(|i| i as f32 / 200.0).collect();
        let codes = t.quantize(&x).unwrap();
        assert!(codes.iter().all(|&c| c < 64));
        let back = t.dequantize(&codes).unwrap();
        for (&a, &b) in x.iter().zip(&back) {
            assert_eq!(t.fake_quant_one(a), b);
            // Half a step, except at the top of R1, where values clamp to the last R1 level.
            let top_of_r1 = t.max_level() as f32 * t.delta_r1;
            let bound = match t.in_r1(a) {
                true if a > top_of_r1 => t.delta_r1,
                true => t.delta_r1 / 2.0,
                false => t.delta_r2() / 2.0,
            };
            assert!((a - b).abs() <= bound + 1e-7, "{a} → {b}");
        }
        for bits in [0, 1, 2, 9, 16] {
            assert!(matches!(
                TwinQuant::softmax(bits, 1),
                Err(Error::InvalidSpec(_))
            ));
        }
        assert!(TwinQuant::new(TwinKind::Gelu, 8, 0.0, 1).is_err());
        assert!(TwinQuant::new(TwinKind::Gelu, 8, f32::NAN, 1).is_err());
        assert!(TwinQuant::new(TwinKind::Softmax, 8, 0.1, MAX_SHIFT + 1).is_err());
        assert!(TwinQuant::gelu(8, f32::INFINITY, -0.1).is_err());
        assert!(matches!(
            t.quantize(&[0.5, f32::NAN]),
            Err(Error::NonFinite { index: 1, .. })
        ));
        assert!(t.dequantize(&[64]).is_err());
    }
}
