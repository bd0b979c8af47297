//! 4-bit NormalFloat (NF4) with double quantization, as in QLoRA (Dettmers et al., 2023).
//!
//! A tensor is cut into blocks of 64 consecutive elements (of the flattened tensor; the last block may
//! be shorter). Each block is divided by its absolute maximum, and every normalised value is replaced
//! by the index of the nearest of the 16 [`NF4_CODEBOOK`] values — the quantiles of a standard normal,
//! rescaled to `[-1, 1]`, with an exact zero. Dequantization is `codebook[q] · absmax`.
//!
//! Double quantization stores the absmax constants themselves in 8 bits: their mean is subtracted
//! and the centred constants are quantized symmetrically to int8 in blocks of 256, each with one f32
//! scale. That costs `8/64 + 32/(64·256) ≈ 0.127` bits per weight instead of `32/64 = 0.5`, the same
//! budget as QLoRA. (bitsandbytes stores the second-level codes with its non-linear "dynamic" 8-bit
//! map; vitq uses linear int8, which at 8 bits loses < 0.5 % of an absmax's value — see the tests.)
//!
//! ```
//! use vitq_core::nf4;
//!
//! let w: Vec<f32> = (0..256).map(|i| ((i as f32) * 0.37).sin()).collect();
//! let q = nf4::quantize(&w, 64, true)?;
//! let back = q.dequantize(w.len())?;
//! assert!(vitq_core::metrics::sqnr_db(&w, &back) > 15.0);
//! # Ok::<(), vitq_core::Error>(())
//! ```

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::uniform::check_finite;

/// The NF4 codebook as published with QLoRA (bitsandbytes `functional.py`, `get_4bit_type("nf4")`;
/// QLoRA paper, appendix E). Index 7 is exactly zero. The digits are kept exactly as published.
#[allow(clippy::excessive_precision)]
pub const NF4_CODEBOOK: [f32; 16] = [
    -1.0,
    -0.696_192_800_998_687_7,
    -0.525_073_051_452_636_7,
    -0.394_917_488_098_144_53,
    -0.284_441_381_692_886_35,
    -0.184_773_430_228_233_34,
    -0.091_050_036_251_544_95,
    0.0,
    0.079_580_299_556_255_34,
    0.160_930_201_411_247_25,
    0.246_112_301_945_686_34,
    0.337_915_241_718_292_24,
    0.440_709_829_330_444_34,
    0.562_617_003_917_694_1,
    0.722_956_836_223_602_3,
    1.0,
];

/// Block size of the second-level (double) quantization.
pub const DOUBLE_QUANT_BLOCK: usize = 256;

/// Index of the codebook value nearest to `v` (which should lie in `[-1, 1]`); ties go to the
/// larger value, as bitsandbytes' midpoint comparisons do.
#[inline]
pub fn nearest(v: f32) -> u8 {
    // Midpoints between consecutive codebook values, compared in order.
    let mut idx = 0u8;
    for i in 0..15 {
        let mid = 0.5 * (NF4_CODEBOOK[i] + NF4_CODEBOOK[i + 1]);
        if v >= mid {
            idx = i as u8 + 1;
        } else {
            break;
        }
    }
    idx
}

/// The per-block absmax constants, plain or double-quantized.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Absmax {
    /// One f32 per block.
    Full(Vec<f32>),
    /// int8 codes of `absmax - offset`, one f32 scale per [`DOUBLE_QUANT_BLOCK`] codes.
    Double {
        /// One int8 code per block.
        codes: Vec<i8>,
        /// One scale per 256 codes.
        scales: Vec<f32>,
        /// The mean absmax, subtracted before quantizing.
        offset: f32,
    },
}

impl Absmax {
    /// Double-quantizes absmax constants (see the module docs).
    pub fn double_quantize(absmax: &[f32]) -> Self {
        if absmax.is_empty() {
            return Absmax::Double {
                codes: vec![],
                scales: vec![],
                offset: 0.0,
            };
        }
        let offset =
            (absmax.iter().map(|&a| f64::from(a)).sum::<f64>() / absmax.len() as f64) as f32;
        let mut codes = Vec::with_capacity(absmax.len());
        let mut scales = Vec::with_capacity(absmax.len().div_ceil(DOUBLE_QUANT_BLOCK));
        for block in absmax.chunks(DOUBLE_QUANT_BLOCK) {
            let amax = block.iter().fold(0.0f32, |m, &a| m.max((a - offset).abs()));
            let s = (amax / 127.0).max(f32::EPSILON);
            scales.push(s);
            codes.extend(
                block
                    .iter()
                    .map(|&a| ((a - offset) / s).round_ties_even().clamp(-127.0, 127.0) as i8),
            );
        }
        Absmax::Double {
            codes,
            scales,
            offset,
        }
    }

    /// Number of blocks described.
    pub fn len(&self) -> usize {
        match self {
            Absmax::Full(v) => v.len(),
            Absmax::Double { codes, .. } => codes.len(),
        }
    }

    /// `true` if no block is described.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The absmax of every block (dequantized if double-quantized).
    pub fn values(&self) -> Vec<f32> {
        match self {
            Absmax::Full(v) => v.clone(),
            Absmax::Double {
                codes,
                scales,
                offset,
            } => codes
                .iter()
                .enumerate()
                .map(|(i, &q)| f32::from(q) * scales[i / DOUBLE_QUANT_BLOCK] + offset)
                .collect(),
        }
    }

    /// Bytes used to store the constants.
    pub fn size_in_bytes(&self) -> usize {
        match self {
            Absmax::Full(v) => 4 * v.len(),
            Absmax::Double { codes, scales, .. } => codes.len() + 4 * scales.len() + 4,
        }
    }

    /// Checks internal consistency against the number of blocks.
    pub fn validate(&self, blocks: usize) -> Result<()> {
        let bad = |what: &str, expected: usize, got: usize| Error::ShapeMismatch {
            what: format!("NF4 {what}"),
            expected: vec![expected],
            got: vec![got],
        };
        match self {
            Absmax::Full(v) if v.len() != blocks => Err(bad("absmax constants", blocks, v.len())),
            Absmax::Double { codes, .. } if codes.len() != blocks => {
                Err(bad("absmax codes", blocks, codes.len()))
            }
            Absmax::Double { scales, .. }
                if scales.len() != blocks.div_ceil(DOUBLE_QUANT_BLOCK) =>
            {
                Err(bad(
                    "absmax scales",
                    blocks.div_ceil(DOUBLE_QUANT_BLOCK),
                    scales.len(),
                ))
            }
            _ => Ok(()),
        }
    }
}

/// An NF4-quantized flat array: one codebook index per element (unpacked) and the block constants.
#[derive(Clone, Debug, PartialEq)]
pub struct Nf4 {
    /// Codebook indices, one per element.
    pub codes: Vec<u8>,
    /// Elements per block.
    pub block: usize,
    /// Per-block absmax.
    pub absmax: Absmax,
}

/// Quantizes `data` to NF4 in blocks of `block` elements, optionally double-quantizing the absmax.
/// Rejects empty input, NaN/Inf and `block == 0`.
pub fn quantize(data: &[f32], block: usize, double_quant: bool) -> Result<Nf4> {
    if data.is_empty() {
        return Err(Error::Empty {
            what: "tensor".into(),
            shape: vec![0],
        });
    }
    if block == 0 {
        return Err(Error::InvalidSpec(
            "NF4 block size must be at least 1".into(),
        ));
    }
    check_finite(data, &[data.len()])?;
    let mut absmax = Vec::with_capacity(data.len().div_ceil(block));
    let mut codes = Vec::with_capacity(data.len());
    for chunk in data.chunks(block) {
        let a = chunk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        absmax.push(a);
        let inv = if a > 0.0 { 1.0 / a } else { 0.0 };
        codes.extend(chunk.iter().map(|&v| nearest(v * inv)));
    }
    let absmax = if double_quant {
        Absmax::double_quantize(&absmax)
    } else {
        Absmax::Full(absmax)
    };
    Ok(Nf4 {
        codes,
        block,
        absmax,
    })
}

impl Nf4 {
    /// Dequantizes to `n` values (`n` must equal the number of codes).
    pub fn dequantize(&self, n: usize) -> Result<Vec<f32>> {
        dequantize(&self.codes, n, self.block, &self.absmax)
    }
}

/// `codebook[q] · absmax[block]` for each of `n` codes.
pub fn dequantize(codes: &[u8], n: usize, block: usize, absmax: &Absmax) -> Result<Vec<f32>> {
    if codes.len() != n || block == 0 {
        return Err(Error::ShapeMismatch {
            what: "NF4 codes".into(),
            expected: vec![n],
            got: vec![codes.len()],
        });
    }
    absmax.validate(n.div_ceil(block))?;
    if let Some(&c) = codes.iter().find(|&&c| c > 15) {
        return Err(Error::InvalidSpec(format!(
            "NF4 code {c} is not a 4-bit index"
        )));
    }
    let a = absmax.values();
    Ok(codes
        .iter()
        .enumerate()
        .map(|(i, &q)| NF4_CODEBOOK[q as usize] * a[i / block])
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Acklam's rational approximation of the standard normal quantile (relative error < 1.2e-9).
    #[allow(clippy::excessive_precision)]
    fn norm_ppf(p: f64) -> f64 {
        const A: [f64; 6] = [
            -3.969683028665376e1,
            2.209460984245205e2,
            -2.759285104469687e2,
            1.383577518672690e2,
            -3.066479806614716e1,
            2.506628277459239,
        ];
        const B: [f64; 5] = [
            -5.447609879822406e1,
            1.615858368580409e2,
            -1.556989798598866e2,
            6.680131188771972e1,
            -1.328068155288572e1,
        ];
        const C: [f64; 6] = [
            -7.784894002430293e-3,
            -3.223964580411365e-1,
            -2.400758277161838,
            -2.549732539343734,
            4.374664141464968,
            2.938163982698783,
        ];
        const D: [f64; 4] = [
            7.784695709041462e-3,
            3.224671290700398e-1,
            2.445134137142996,
            3.754408661907416,
        ];
        let tail = |q: f64| {
            (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
                / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
        };
        if p < 0.02425 {
            tail((-2.0 * p.ln()).sqrt())
        } else if p > 1.0 - 0.02425 {
            -tail((-2.0 * (1.0 - p).ln()).sqrt())
        } else {
            let q = p - 0.5;
            let r = q * q;
            (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
                / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
        }
    }

    /// QLoRA's construction (bitsandbytes `create_normal_map(offset=0.9677083)`): 8 positive quantiles
    /// from linspace(offset, 0.5, 9)[:-1], 7 negative from linspace(offset, 0.5, 8)[:-1], zero, then
    /// divided by the largest magnitude. The published table must come out of it.
    #[test]
    fn codebook_matches_the_quantile_construction() {
        let offset = 0.967_708_3_f64;
        let lin = |n: usize| -> Vec<f64> {
            (0..n)
                .map(|i| offset + (0.5 - offset) * i as f64 / (n - 1) as f64)
                .collect()
        };
        let mut v: Vec<f64> = lin(9)[..8].iter().map(|&p| norm_ppf(p)).collect();
        v.extend(lin(8)[..7].iter().map(|&p| -norm_ppf(p)));
        v.push(0.0);
        v.sort_by(f64::total_cmp);
        let max = v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        for (derived, published) in v.iter().map(|x| x / max).zip(NF4_CODEBOOK) {
            assert!(
                (derived - f64::from(published)).abs() < 1e-6,
                "{derived} vs {published}"
            );
        }
        assert_eq!(NF4_CODEBOOK[7], 0.0);
        assert!(NF4_CODEBOOK.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn nearest_picks_the_closest_codebook_value() {
        for i in 0..=2000 {
            let v = -1.0 + i as f32 / 1000.0;
            let best = (0..16)
                .min_by(|&a, &b| {
                    (NF4_CODEBOOK[a] - v)
                        .abs()
                        .total_cmp(&(NF4_CODEBOOK[b] - v).abs())
                })
                .unwrap();
            let got = nearest(v) as usize;
            assert!(
                (NF4_CODEBOOK[got] - v).abs() <= (NF4_CODEBOOK[best] - v).abs(),
                "{v}: {got} vs {best}"
            );
        }
    }

    #[test]
    fn double_quantization_keeps_absmax_within_half_a_percent() {
        let mut rng = crate::synth::Rng::new(11);
        let data: Vec<f32> = (0..64 * 1000).map(|_| rng.gaussian() * 0.02).collect();
        let single = quantize(&data, 64, false).unwrap();
        let double = quantize(&data, 64, true).unwrap();
        assert_eq!(single.codes, double.codes);
        let (a, b) = (single.absmax.values(), double.absmax.values());
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 0.005 * x, "{x} vs {y}");
        }
        // 0.127 bits per weight for the constants, as in QLoRA.
        let bits_per_weight = 8.0 * double.absmax.size_in_bytes() as f64 / data.len() as f64;
        assert!((bits_per_weight - 0.127).abs() < 0.002, "{bits_per_weight}");
    }

    #[test]
    fn zero_blocks_and_bad_input() {
        let q = quantize(&[0.0; 70], 64, true).unwrap();
        assert!(q.dequantize(70).unwrap().iter().all(|v| *v == 0.0));
        assert!(quantize(&[], 64, true).is_err());
        assert!(quantize(&[1.0, f32::INFINITY], 64, true).is_err());
        assert!(q.dequantize(71).is_err());
    }
}
