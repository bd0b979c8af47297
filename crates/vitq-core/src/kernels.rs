//! Integer kernels: the i8 × i8 → i32 matrix product under W8A8 layers.
//!
//! `C[m×n] = A[m×k] · Bᵀ` with `A` the activations (row-major `[m, k]`) and `B` the weights in
//! PyTorch's layout (row-major `[n, k]`, one row per output channel), accumulated exactly in `i32`.
//!
//! | function | what |
//! |---|---|
//! | [`gemm_i8_ref`] | the oracle: one dot product at a time |
//! | [`gemm_i8`] | the fast path: rows split over threads; AVX-512 VNNI where the CPU has it (detected at run time), a portable loop elsewhere ([`Kernel`], [`gemm_i8_with`]) |
//!
//! The VNNI path uses `vpdpbusd`, which multiplies *unsigned* bytes by signed ones: it adds 128 to
//! every activation (`a ⊕ 0x80`) and subtracts `128 · Σ_k B[j, k]` afterwards, which is exact.
//! Sums stay exact as long as `k · 128 · 128 < 2^31`, i.e. `k ≤ 131072` (checked).
//!
//! ```
//! use vitq_core::kernels::{gemm_i8, gemm_i8_ref};
//! let a: Vec<i8> = (0..6).map(|v| v as i8 - 3).collect(); // 2 × 3
//! let b: Vec<i8> = vec![1, 0, -1, 2, 2, 2];                // 2 × 3 (two output channels)
//! let c = gemm_i8(&a, &b, 2, 2, 3)?;
//! assert_eq!(c, vec![-2, -12, -2, 6]);
//! assert_eq!(c, gemm_i8_ref(&a, &b, 2, 2, 3)?);
//! # Ok::<(), vitq_core::Error>(())
//! ```

use rayon::prelude::*;

use crate::error::{Error, Result};

/// Largest inner dimension for which i32 accumulation is exact on every path.
pub const MAX_K: usize = 1 << 17;

fn check(a: &[i8], b: &[i8], m: usize, n: usize, k: usize) -> Result<()> {
    if a.len() != m * k {
        return Err(Error::ShapeMismatch {
            what: "int8 GEMM activations".into(),
            expected: vec![m, k],
            got: vec![a.len()],
        });
    }
    if b.len() != n * k {
        return Err(Error::ShapeMismatch {
            what: "int8 GEMM weights".into(),
            expected: vec![n, k],
            got: vec![b.len()],
        });
    }
    if k > MAX_K {
        return Err(Error::Unsupported(format!(
            "int8 GEMM with k = {k} > {MAX_K} could overflow i32"
        )));
    }
    Ok(())
}

/// Reference `C = A · Bᵀ` (A `[m, k]`, B `[n, k]`, C `[m, n]`, all row-major).
pub fn gemm_i8_ref(a: &[i8], b: &[i8], m: usize, n: usize, k: usize) -> Result<Vec<i32>> {
    check(a, b, m, n, k)?;
    let mut c = vec![0i32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0i32;
            for t in 0..k {
                s += i32::from(a[i * k + t]) * i32::from(b[j * k + t]);
            }
            c[i * n + j] = s;
        }
    }
    Ok(c)
}

/// The inner kernels of [`gemm_i8_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kernel {
    /// Plain Rust, any CPU (LLVM vectorises the dot products).
    Portable,
    /// AVX-512 VNNI (`vpdpbusd`), x86-64 CPUs with avx512f, avx512bw and avx512vnni.
    Avx512Vnni,
}

impl Kernel {
    /// The fastest kernel this CPU runs (detected at run time).
    pub fn best() -> Self {
        #[cfg(target_arch = "x86_64")]
        if vnni::available() {
            return Kernel::Avx512Vnni;
        }
        Kernel::Portable
    }

    /// Whether this CPU can run the kernel.
    pub fn is_available(self) -> bool {
        match self {
            Kernel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => vnni::available(),
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx512Vnni => false,
        }
    }
}

/// Fast `C = A · Bᵀ` with the best kernel for this CPU, equal to [`gemm_i8_ref`] bit for bit.
pub fn gemm_i8(a: &[i8], b: &[i8], m: usize, n: usize, k: usize) -> Result<Vec<i32>> {
    gemm_i8_with(Kernel::best(), a, b, m, n, k)
}

/// `C = A · Bᵀ` with a chosen kernel; [`Error::Unsupported`] if this CPU cannot run it.
pub fn gemm_i8_with(
    kernel: Kernel,
    a: &[i8],
    b: &[i8],
    m: usize,
    n: usize,
    k: usize,
) -> Result<Vec<i32>> {
    check(a, b, m, n, k)?;
    if !kernel.is_available() {
        return Err(Error::Unsupported(format!(
            "the {kernel:?} int8 kernel needs CPU features this machine lacks"
        )));
    }
    let mut c = vec![0i32; m * n];
    if m == 0 || n == 0 || k == 0 {
        return Ok(c);
    }
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512Vnni => {
            let bsum: Vec<i32> = b
                .chunks_exact(k)
                .map(|r| r.iter().map(|&v| i32::from(v)).sum())
                .collect();
            // Tasks own blocks of `COLS` weight rows (≤ 64·k bytes, which stay in L2) and sweep every row of
            // A over them in 4×4 register tiles; each writes a `[m, cols]` block that is then scattered.
            const COLS: usize = 64;
            let blocks: Vec<(usize, Vec<i32>)> = (0..n.div_ceil(COLS))
                .into_par_iter()
                .map(|blk| {
                    let j0 = blk * COLS;
                    let cols = COLS.min(n - j0);
                    let mut out = vec![0i32; m * cols];
                    let b_blk = &b[j0 * k..(j0 + cols) * k];
                    for i0 in (0..m).step_by(4) {
                        let rows = 4.min(m - i0);
                        // SAFETY: `is_available()` checked avx512f, avx512bw and avx512vnni at run time;
                        // the slices have the lengths `vnni::rows` requires (rows·k, cols·k, cols, rows·cols).
                        unsafe {
                            vnni::rows(
                                &a[i0 * k..(i0 + rows) * k],
                                b_blk,
                                &bsum[j0..j0 + cols],
                                &mut out[i0 * cols..(i0 + rows) * cols],
                                rows,
                                cols,
                                k,
                            )
                        };
                    }
                    (j0, out)
                })
                .collect();
            for (j0, out) in blocks {
                let cols = out.len() / m;
                for (i, row) in out.chunks_exact(cols).enumerate() {
                    c[i * n + j0..i * n + j0 + cols].copy_from_slice(row);
                }
            }
        }
        _ => c.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
            let ai = &a[i * k..(i + 1) * k];
            for (j, out) in row.iter_mut().enumerate() {
                *out = dot_portable(ai, &b[j * k..(j + 1) * k]);
            }
        }),
    }
    Ok(c)
}

/// Dot product in blocks of 16 with i32 lanes; LLVM vectorises it (pmaddwd on x86).
fn dot_portable(a: &[i8], b: &[i8]) -> i32 {
    let mut acc = [0i32; 16];
    let chunks = a.len() / 16;
    for c in 0..chunks {
        for l in 0..16 {
            acc[l] += i32::from(a[c * 16 + l]) * i32::from(b[c * 16 + l]);
        }
    }
    let tail: i32 = a[chunks * 16..]
        .iter()
        .zip(&b[chunks * 16..])
        .map(|(x, y)| i32::from(*x) * i32::from(*y))
        .sum();
    acc.iter().sum::<i32>() + tail
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;

    pub fn available() -> bool {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni")
    }

    /// `rows` (≤ 4) rows of A against all of B, into `out` (`rows × n`).
    ///
    /// # Safety
    /// The CPU must have avx512f, avx512bw and avx512vnni; `a.len() == rows·k`, `b.len() == n·k`,
    /// `bsum.len() == n`, `out.len() == rows·n`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn rows(
        a: &[i8],
        b: &[i8],
        bsum: &[i32],
        out: &mut [i32],
        rows: usize,
        n: usize,
        k: usize,
    ) {
        let flip = _mm512_set1_epi8(-128);
        let steps = k.div_ceil(64);
        let tail_mask: __mmask64 = if k.is_multiple_of(64) {
            !0
        } else {
            (1u64 << (k % 64)) - 1
        };
        // Loads 64 bytes (or the masked tail) of row `r` of a matrix with row length k.
        let load = |m: &[i8], r: usize, s: usize| -> __m512i {
            let mask = if s + 1 == steps { tail_mask } else { !0 };
            // SAFETY: the masked load touches only bytes [r·k + 64·s, r·k + min(64·s + 64, k)), which
            // lie inside `m` by the function's contract.
            unsafe { _mm512_maskz_loadu_epi8(mask, m.as_ptr().add(r * k + 64 * s)) }
        };
        let mut j = 0;
        while j < n {
            let cols = (n - j).min(4);
            let mut acc = [[_mm512_setzero_si512(); 4]; 4];
            for s in 0..steps {
                let mut bv = [_mm512_setzero_si512(); 4];
                for (c, v) in bv.iter_mut().enumerate().take(cols) {
                    *v = load(b, j + c, s);
                }
                for (r, acc_r) in acc.iter_mut().enumerate().take(rows) {
                    // Masked-out bytes load as 0 and become 128 after the flip; B is 0 there too.
                    let av = _mm512_xor_si512(load(a, r, s), flip);
                    for c in 0..cols {
                        acc_r[c] = _mm512_dpbusd_epi32(acc_r[c], av, bv[c]);
                    }
                }
            }
            for (r, acc_r) in acc.iter().enumerate().take(rows) {
                for c in 0..cols {
                    out[r * n + j + c] = _mm512_reduce_add_epi32(acc_r[c]) - 128 * bsum[j + c];
                }
            }
            j += cols;
        }
    }
}

/// A W8A8 linear layer computed in integers: int8 weights (symmetric, one scale per output channel)
/// and int8 activations (symmetric, one scale per call), `i32` accumulation, then
/// `y[i, j] = s_x · s_w[j] · acc[i, j] + bias[j]`.
///
/// # Shapes
/// - weight codes `[out, in]` (PyTorch layout), scales `[out]`, bias `[out]`
/// - input `[m, in]` → output `[m, out]`
#[derive(Clone, Debug, PartialEq)]
pub struct LinearI8 {
    /// Weight codes, row-major `[out, in]`.
    pub codes: Vec<i8>,
    /// One scale per output channel.
    pub scales: Vec<f32>,
    /// Optional bias `[out]`.
    pub bias: Option<Vec<f32>>,
    /// Input features.
    pub d_in: usize,
    /// Output features.
    pub d_out: usize,
}

impl LinearI8 {
    /// Quantizes a float weight `[out, in]` to int8, symmetric, per output channel (`s = max|w| / 127`).
    pub fn from_f32(
        weight: &[f32],
        bias: Option<Vec<f32>>,
        d_out: usize,
        d_in: usize,
    ) -> Result<Self> {
        let spec = crate::QuantSpec::new(
            8,
            crate::Scheme::Symmetric,
            crate::Granularity::PerChannel { axis: 0 },
        )?;
        let p = crate::QuantParams::calibrate(weight, &[d_out, d_in], &spec)?;
        let codes = crate::uniform::quantize_ref(weight, &p)?
            .into_iter()
            .map(|q| q as i8)
            .collect();
        if let Some(b) = &bias
            && b.len() != d_out
        {
            return Err(Error::ShapeMismatch {
                what: "linear bias".into(),
                expected: vec![d_out],
                got: vec![b.len()],
            });
        }
        Ok(Self {
            codes,
            scales: p.scales,
            bias,
            d_in,
            d_out,
        })
    }

    /// `y = x · Wᵀ + b` for `x` `[m, in]`: `x` is quantized to int8 with scale `max|x| / 127` (or
    /// `act_scale` if given, e.g. from calibration), then the integer GEMM runs.
    pub fn forward(&self, x: &[f32], m: usize, act_scale: Option<f32>) -> Result<Vec<f32>> {
        if x.len() != m * self.d_in {
            return Err(Error::ShapeMismatch {
                what: "W8A8 linear input".into(),
                expected: vec![m, self.d_in],
                got: vec![x.len()],
            });
        }
        crate::uniform::check_finite(x, &[m, self.d_in])?;
        let s_x = act_scale
            .unwrap_or_else(|| {
                x.par_iter()
                    .fold(|| 0f32, |a, v| a.max(v.abs()))
                    .reduce(|| 0f32, f32::max)
                    / 127.0
            })
            .max(f32::EPSILON);
        let inv = 1.0 / s_x;
        // Multiplying by 1/s rather than dividing can differ from `x / s` by one code at exact ties;
        // the reference for this layer (tests/kernels.rs) quantizes the same way.
        let xq: Vec<i8> = x
            .par_iter()
            .map(|v| (v * inv).round_ties_even().clamp(-128.0, 127.0) as i8)
            .collect();
        let acc = gemm_i8(&xq, &self.codes, m, self.d_out, self.d_in)?;
        let col_scale: Vec<f32> = self.scales.iter().map(|s| s * s_x).collect();
        let zeros = vec![0f32; self.d_out];
        let bias = self.bias.as_deref().unwrap_or(&zeros);
        let y: Vec<f32> = acc
            .par_chunks(self.d_out)
            .flat_map_iter(|row| {
                row.iter()
                    .zip(&col_scale)
                    .zip(bias)
                    .map(|((&a, &s), &b)| a as f32 * s + b)
            })
            .collect();
        Ok(y)
    }
}
