//! Weight-only quantized linear layers on the CPU: the weight stays in its codes (one byte per weight at
//! 5–8 bits, half a byte at 2–4 bits and for NF4) and is dequantized tile by tile inside the matmul, so
//! the f32 weight never exists as a whole.
//!
//! [`TiledWeight`] holds a [`QuantizedTensor`] `[n, k]` (PyTorch layout, one row per output feature) in a
//! row-aligned form: codes and, per row, runs of consecutive elements that share a scale and zero point.
//! A weight element is `(code + qmin − zero) · scale` (uniform) or `codebook[code] · absmax` (NF4).
//! [`linear`] computes `y = x · Wᵀ + b`:
//! - for up to [`FUSED_ROWS`] input rows (one token, a few images), one weight row at a time is
//!   dequantized into an L1-sized buffer and dotted with each input row, so the weight is read once,
//!   in its codes;
//! - for more input rows, [`TILE_ROWS`] weight rows at a time are dequantized into an f32 tile that the
//!   `gemm` crate's f32 kernels (the ones burn's Flex backend uses) multiply with `x`.
//!
//! Rows and tiles run in parallel on rayon; the loops are compiled for AVX-512 and AVX2 and chosen at
//! run time ([`crate::host::with_simd`]).
//!
//! [`TiledWeight::dequantize`] is the reference: [`linear`] equals the float product with the
//! dequantized weight up to float summation order (tests compare them for every encoding).
//!
//! ```
//! use vitq_core::weight_only::{TiledWeight, linear};
//! use vitq_core::{Granularity, QuantSpec, QuantizedTensor, Scheme};
//!
//! let w = [0.5f32, -1.0, 0.25, 1.0, 0.0, -0.5]; // [2, 3]
//! let spec = QuantSpec::new(4, Scheme::Symmetric, Granularity::PerChannel { axis: 0 })?;
//! let q = QuantizedTensor::quantize(&w, &[2, 3], &spec)?;
//! let tiled = TiledWeight::from_quantized(&q)?;
//! let y = linear(&[1.0, 2.0, 3.0], 1, &tiled, Some(&[0.0, 1.0]))?;
//! let deq = q.dequantize()?;
//! let want = [deq[0] + 2.0 * deq[1] + 3.0 * deq[2], deq[3] + 2.0 * deq[4] + 3.0 * deq[5] + 1.0];
//! assert!((y[0] - want[0]).abs() < 1e-6 && (y[1] - want[1]).abs() < 1e-6);
//! # Ok::<(), vitq_core::Error>(())
//! ```

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::host::with_simd;
use crate::nf4::NF4_CODEBOOK;
use crate::{Encoding, Layout, QuantizedTensor};

/// Weight rows dequantized per tile on the GEMM path.
pub const TILE_ROWS: usize = 256;

/// Input rows up to which [`linear`] dots each dequantized weight row with every input row instead of
/// calling a GEMM.
pub const FUSED_ROWS: usize = 8;

/// Runs per row above which a layout is not worth tiling (e.g. per-input-channel scales): such weights
/// stay on the dequantized-weight path.
const MAX_RUNS_PER_ROW: usize = 256;

/// Consecutive elements of a row that share one scale and zero point.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Run {
    len: u32,
    scale: f32,
    /// `qmin − zero` for uniform codes (unused for NF4).
    offset: i32,
}

/// How codes map to values before the run's scale.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Values {
    /// `code + offset`.
    Uniform,
    /// `codebook[code]`.
    Codebook([f32; 16]),
}

/// Codes, row-aligned.
#[derive(Clone, Debug, PartialEq)]
enum Codes {
    /// One byte per code, row `j` at `j · k`.
    Bytes(Vec<u8>),
    /// Two codes per byte (low nibble first), row `j` at byte `j · ⌈k / 2⌉`.
    Nibbles(Vec<u8>),
}

/// A weight `[n, k]` kept in its codes for [`linear`] (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct TiledWeight {
    /// Output features (rows).
    pub n: usize,
    /// Input features (columns).
    pub k: usize,
    codes: Codes,
    values: Values,
    runs: Vec<Run>,
    /// Index of each row's first run; `n + 1` entries.
    row_runs: Vec<usize>,
}

impl TiledWeight {
    /// From a quantized weight whose shape `[n, ...]` is read as `[n, k]` (a conv kernel flattens to
    /// `k = in · kh · kw`). Layouts with more than 256 scale runs per row (scales that change along the
    /// input features every few elements) are [`Error::Unsupported`].
    pub fn from_quantized(q: &QuantizedTensor) -> Result<Self> {
        let shape = q.shape();
        let n = shape.first().copied().unwrap_or(1).max(1);
        let k = q.numel() / n;
        let spec = q.spec();
        let (qmin, _) = spec.qrange();
        let unsigned = crate::pack::unpack(q.packed(), q.numel(), spec.bits)?;
        let (values, slots): (Values, Vec<(f32, i32)>) = match q.encoding() {
            Encoding::Uniform {
                scales,
                zero_points,
            } => (
                Values::Uniform,
                scales
                    .iter()
                    .zip(zero_points)
                    .map(|(&s, &z)| (s, qmin - z))
                    .collect(),
            ),
            Encoding::Nf4 { absmax } => (
                Values::Codebook(NF4_CODEBOOK),
                absmax.values().into_iter().map(|a| (a, 0)).collect(),
            ),
        };
        let layout = Layout::new(shape, spec.granularity)?;
        let mut runs = Vec::new();
        let mut row_runs = Vec::with_capacity(n + 1);
        for j in 0..n {
            row_runs.push(runs.len());
            let mut c = 0;
            while c < k {
                let slot = layout.slice_of(j * k + c);
                let mut len = 1;
                while c + len < k && layout.slice_of(j * k + c + len) == slot {
                    len += 1;
                }
                let (scale, offset) = *slots.get(slot).ok_or_else(|| {
                    Error::InvalidSpec(format!("scale slot {slot} of a {shape:?} weight"))
                })?;
                runs.push(Run {
                    len: len as u32,
                    scale,
                    offset,
                });
                c += len;
            }
            if runs.len() - row_runs[j] > MAX_RUNS_PER_ROW {
                return Err(Error::Unsupported(format!(
                    "weight-only tiles for a {shape:?} weight with granularity {} \
                     (more than {MAX_RUNS_PER_ROW} scales per row)",
                    spec.granularity
                )));
            }
        }
        row_runs.push(runs.len());
        let codes = if spec.bits.get() <= 4 {
            let row_bytes = k.div_ceil(2);
            let mut out = vec![0u8; n * row_bytes];
            for (src, dst) in unsigned
                .chunks_exact(k)
                .zip(out.chunks_exact_mut(row_bytes))
            {
                for (i, &u) in src.iter().enumerate() {
                    dst[i / 2] |= u << (4 * (i % 2));
                }
            }
            Codes::Nibbles(out)
        } else {
            Codes::Bytes(unsigned)
        };
        Ok(Self {
            n,
            k,
            codes,
            values,
            runs,
            row_runs,
        })
    }

    /// Bytes held: codes and scale runs.
    pub fn size_in_bytes(&self) -> usize {
        let codes = match &self.codes {
            Codes::Bytes(b) | Codes::Nibbles(b) => b.len(),
        };
        codes + std::mem::size_of::<Run>() * self.runs.len()
    }

    /// Dequantizes row `j` into `out` (`k` values). Written to vectorize.
    #[inline(always)]
    fn dequantize_row(&self, j: usize, out: &mut [f32]) {
        let k = self.k;
        let mut c = 0;
        for run in &self.runs[self.row_runs[j]..self.row_runs[j + 1]] {
            let len = run.len as usize;
            let dst = &mut out[c..c + len];
            let (s, off) = (run.scale, run.offset);
            match (&self.codes, &self.values) {
                (Codes::Bytes(b), Values::Uniform) => {
                    for (d, &u) in dst.iter_mut().zip(&b[j * k + c..j * k + c + len]) {
                        *d = (i32::from(u) + off) as f32 * s;
                    }
                }
                (Codes::Bytes(b), Values::Codebook(cb)) => {
                    for (d, &u) in dst.iter_mut().zip(&b[j * k + c..j * k + c + len]) {
                        *d = cb[usize::from(u & 15)] * s;
                    }
                }
                (Codes::Nibbles(b), values) => {
                    let row = &b[j * k.div_ceil(2)..];
                    let value = |u: u8| match values {
                        Values::Uniform => (i32::from(u) + off) as f32 * s,
                        Values::Codebook(cb) => cb[usize::from(u)] * s,
                    };
                    // A leading odd element, then whole bytes, then a trailing low nibble.
                    let mut e = c;
                    let mut d = 0;
                    if e % 2 == 1 && d < len {
                        dst[0] = value(row[e / 2] >> 4);
                        (e, d) = (e + 1, 1);
                    }
                    let pairs = (len - d) / 2;
                    for (pair, &byte) in dst[d..d + 2 * pairs]
                        .chunks_exact_mut(2)
                        .zip(&row[e / 2..e / 2 + pairs])
                    {
                        pair[0] = value(byte & 15);
                        pair[1] = value(byte >> 4);
                    }
                    (e, d) = (e + 2 * pairs, d + 2 * pairs);
                    if d < len {
                        dst[d] = value(row[e / 2] & 15);
                    }
                }
            }
            c += len;
        }
    }

    /// The whole weight `[n, k]` in f32 (the reference the tiles are checked against).
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.n * self.k];
        for (j, row) in out.chunks_exact_mut(self.k.max(1)).enumerate() {
            self.dequantize_row(j, row);
        }
        out
    }
}

/// `Σ a·b` with 16 independent partial sums (so that it vectorizes).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const L: usize = 16;
    let mut acc = [0f32; L];
    let (ac, bc) = (a.chunks_exact(L), b.chunks_exact(L));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..L {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ar.iter().zip(br).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// `y = x · Wᵀ + b` for `x` `[m, k]` (row-major), with `W` dequantized a row or a tile at a time (see
/// the module docs). Returns `y` `[m, n]`.
pub fn linear(x: &[f32], m: usize, w: &TiledWeight, bias: Option<&[f32]>) -> Result<Vec<f32>> {
    let (n, k) = (w.n, w.k);
    if x.len() != m * k {
        return Err(Error::ShapeMismatch {
            what: "weight-only linear input".into(),
            expected: vec![m, k],
            got: vec![x.len()],
        });
    }
    if let Some(b) = bias
        && b.len() != n
    {
        return Err(Error::ShapeMismatch {
            what: "weight-only linear bias".into(),
            expected: vec![n],
            got: vec![b.len()],
        });
    }
    if m == 0 || n == 0 {
        return Ok(vec![0.0; m * n]);
    }
    // yᵀ [n, m]: each weight row (or tile of rows) owns a contiguous block of it.
    let mut yt = vec![0f32; n * m];
    if m <= FUSED_ROWS {
        const ROWS_PER_TASK: usize = 32;
        yt.par_chunks_mut(ROWS_PER_TASK * m)
            .enumerate()
            .for_each(|(t, dst)| {
                let mut row = vec![0f32; k];
                with_simd(
                    #[inline(always)]
                    || {
                        for (r, out) in dst.chunks_exact_mut(m).enumerate() {
                            w.dequantize_row(t * ROWS_PER_TASK + r, &mut row);
                            for (i, o) in out.iter_mut().enumerate() {
                                *o = dot(&row, &x[i * k..(i + 1) * k]);
                            }
                        }
                    },
                )
            });
    } else {
        yt.par_chunks_mut(TILE_ROWS * m)
            .enumerate()
            .for_each(|(t, dst)| {
                let rows = dst.len() / m;
                let mut tile = vec![0f32; rows * k];
                with_simd(
                    #[inline(always)]
                    || {
                        for (r, row) in tile.chunks_exact_mut(k).enumerate() {
                            w.dequantize_row(t * TILE_ROWS + r, row);
                        }
                    },
                );
                // SAFETY: dst is `[rows, m]` (row stride m), the tile `[rows, k]` (row stride k) and x
                // read as `xᵀ` `[k, m]` (row stride 1, column stride k); all three slices hold exactly
                // these elements (x.len() == m · k was checked above), and dst aliases neither input.
                unsafe {
                    gemm::gemm(
                        rows,
                        m,
                        k,
                        dst.as_mut_ptr(),
                        1,
                        m as isize,
                        false,
                        tile.as_ptr(),
                        1,
                        k as isize,
                        x.as_ptr(),
                        k as isize,
                        1,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            });
    }
    let mut y = vec![0f32; m * n];
    y.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
        for (j, v) in row.iter_mut().enumerate() {
            *v = yt[j * m + i] + bias.map_or(0.0, |b| b[j]);
        }
    });
    Ok(y)
}
