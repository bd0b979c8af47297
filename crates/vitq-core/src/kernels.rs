//! Integer kernels: the i8 × i8 → i32 matrix product under W8A8 layers.
//!
//! `C[m×n] = A[m×k] · Bᵀ` with `A` the activations (row-major `[m, k]`) and `B` the weights in
//! PyTorch's layout (row-major `[n, k]`, one row per output channel), accumulated exactly in `i32`.
//!
//! | function | what |
//! |---|---|
//! | [`gemm_i8_ref`] | the oracle: one dot product at a time |
//! | [`gemm_i8`] | the fast path: rows split over threads; AVX-512 VNNI where the CPU has it (detected at run time), a portable loop elsewhere ([`Kernel`], [`gemm_i8_with`]) |
//! | [`IntWeight`], [`quantize_act`], [`linear_i8`] | a quantized linear layer in integers: codes, the zero-point correction, the rescale |
//! | [`im2col_i8`] | convolution patches of int8 codes (padding with the zero point's code), so a conv is one GEMM |
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
            // SAFETY: `is_available()` checked avx512f, avx512bw and avx512vnni at run time.
            unsafe { gemm_vnni(a, &vnni::Packed::new(b, n, k), m, n, k, &mut c) }
        }
        _ => gemm_portable(a, b, k, &mut c),
    }
    Ok(c)
}

/// The portable path of [`gemm_i8_with`], into `c` (`m × n`, `n` the rows of `b`; `k` ≥ 1).
fn gemm_portable(a: &[i8], b: &[i8], k: usize, c: &mut [i32]) {
    let n = b.len() / k.max(1);
    c.par_chunks_mut(n.max(1))
        .zip(a.par_chunks(k.max(1)))
        .for_each(|(row, ai)| {
            for (out, bj) in row.iter_mut().zip(b.chunks_exact(k)) {
                *out = dot_portable(ai, bj);
            }
        });
}

/// The VNNI path of [`gemm_i8_with`] on weights already packed, into `c` (`m × n`, zeroed).
///
/// # Safety
/// The CPU must have avx512f, avx512bw and avx512vnni; `a.len() == m·k`, `packed` is `[n, k]`,
/// `m`, `n` and `k` ≥ 1.
#[cfg(target_arch = "x86_64")]
unsafe fn gemm_vnni(a: &[i8], packed: &vnni::Packed, m: usize, n: usize, k: usize, c: &mut [i32]) {
    // A flipped to the unsigned bytes vpdpbusd multiplies (a ⊕ 0x80 = a + 128), rows padded
    // to whole groups of 4 (the padding meets zero weights).
    let stride = packed.row_bytes();
    let mut flipped = vec![0u8; m * stride];
    flipped
        .par_chunks_mut(stride)
        .zip(a.par_chunks(k))
        .for_each(|(dst, src)| {
            for (d, &v) in dst.iter_mut().zip(src) {
                *d = (v as u8) ^ 0x80;
            }
        });
    // Tasks own a block of at most `ROWS` rows of A and `COLS` columns of C (the packed weight
    // panel, ≤ 64·k bytes, stays in L2), swept in 4-row × 64-column register tiles; each writes
    // a `[rows, cols]` block that is then scattered. Splitting rows too keeps every core busy
    // when `n` is small (a conv's 16 channels).
    const COLS: usize = 4 * vnni::LANES;
    const ROWS: usize = 256;
    let tasks: Vec<(usize, usize)> = (0..m.div_ceil(ROWS))
        .flat_map(|r| (0..n.div_ceil(COLS)).map(move |c| (r * ROWS, c * COLS)))
        .collect();
    let blocks: Vec<(usize, usize, Vec<i32>)> = tasks
        .into_par_iter()
        .map(|(r0, j0)| {
            let cols = COLS.min(n - j0);
            let rows_blk = ROWS.min(m - r0);
            let mut out = vec![0i32; rows_blk * cols];
            // Rows per register tile: 16 accumulators whatever the number of column blocks.
            let step = vnni::tile_rows(cols);
            // k in chunks of KC groups, so that the panel's slice (64 columns × 4·KC
            // bytes, 16 KiB) stays in L1 while every row tile of the block reads it.
            const KC: usize = 64;
            for g0 in (0..packed.groups()).step_by(KC) {
                let groups = g0..(g0 + KC).min(packed.groups());
                for i0 in (0..rows_blk).step_by(step) {
                    let rows = step.min(rows_blk - i0);
                    let a0 = (r0 + i0) * stride;
                    // SAFETY: the CPU features are this function's contract; the slices have
                    // the lengths `vnni::tile` requires.
                    unsafe {
                        vnni::tile(
                            &flipped[a0..a0 + rows * stride],
                            packed,
                            j0,
                            groups.clone(),
                            &mut out[i0 * cols..(i0 + rows) * cols],
                            rows,
                            cols,
                        )
                    };
                }
            }
            (r0, j0, out)
        })
        .collect();
    for (r0, j0, out) in blocks {
        let cols = COLS.min(n - j0);
        for (i, row) in out.chunks_exact(cols).enumerate() {
            let at = (r0 + i) * n + j0;
            c[at..at + cols].copy_from_slice(row);
        }
    }
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
    use std::ops::Range;

    use rayon::prelude::*;

    pub fn available() -> bool {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni")
    }

    /// Output columns per vector: 16 `i32` lanes.
    pub const LANES: usize = 16;

    /// B (`[n, k]`, one row per output column) in the layout `vpdpbusd` reads: for each block of 16
    /// columns and each group of 4 `k`, one 64-byte vector holding the 4 bytes of each column
    /// (zero-padded past `n` and `k`); and `128 · Σ_k B[j, k]` per column (the correction for the
    /// flipped activations), zero-padded to whole blocks.
    #[derive(Clone, Debug, PartialEq)]
    pub struct Packed {
        data: Vec<i8>,
        correction: Vec<i32>,
        groups: usize,
    }

    impl Packed {
        /// Bytes per row of A as [`tile`] reads it: `k` rounded up to whole groups of 4.
        pub fn row_bytes(&self) -> usize {
            4 * self.groups
        }

        /// Groups of 4 values of `k`.
        pub fn groups(&self) -> usize {
            self.groups
        }

        pub fn new(b: &[i8], n: usize, k: usize) -> Self {
            let groups = k.div_ceil(4);
            let blocks = n.div_ceil(LANES);
            let mut data = vec![0i8; blocks * groups * 64];
            // One block of 16 columns per task, written in order (64 bytes per group of 4 k).
            data.par_chunks_mut((groups * 64).max(1))
                .enumerate()
                .for_each(|(block, dst)| {
                    for lane in 0..LANES.min(n - block * LANES) {
                        let row = &b[(block * LANES + lane) * k..][..k];
                        for (g, quad) in row.chunks(4).enumerate() {
                            dst[g * 64 + lane * 4..][..quad.len()].copy_from_slice(quad);
                        }
                    }
                });
            let mut correction = vec![0i32; blocks * LANES];
            for (j, row) in b.chunks_exact(k.max(1)).enumerate() {
                correction[j] = 128 * row.iter().map(|&v| i32::from(v)).sum::<i32>();
            }
            Self {
                data,
                correction,
                groups,
            }
        }

        /// B back in its row-major `[n, k]` layout.
        pub fn unpack(&self, n: usize, k: usize) -> Vec<i8> {
            let mut b = vec![0i8; n * k];
            for (j, row) in b.chunks_exact_mut(k.max(1)).enumerate() {
                let (block, lane) = (j / LANES, j % LANES);
                let src = &self.data[block * self.groups * 64..][..self.groups * 64];
                for (g, quad) in row.chunks_mut(4).enumerate() {
                    let len = quad.len();
                    quad.copy_from_slice(&src[g * 64 + lane * 4..][..len]);
                }
            }
            b
        }
    }

    /// Rows of A per register tile for `cols` output columns: 4 rows × 4 blocks of 16 columns, 8 × 2
    /// or 16 × 1, so that a tile always keeps 16 accumulators.
    pub fn tile_rows(cols: usize) -> usize {
        match cols.div_ceil(LANES) {
            0 | 1 => 16,
            2 => 8,
            _ => 4,
        }
    }

    /// `rows` (≤ [`tile_rows`]`(cols)`) rows of A against columns `j0 .. j0 + cols`
    /// (`cols` ≤ 64, `j0` a multiple of 16) of the packed B, into `out` (`rows × cols`): each step
    /// broadcasts 4 bytes of a row of A and accumulates 16 columns per `vpdpbusd`, so no horizontal
    /// sums are needed.
    ///
    /// # Safety
    /// The CPU must have avx512f, avx512bw and avx512vnni; `a` holds `rows` rows of A flipped to
    /// unsigned (`a ⊕ 0x80`) at [`Packed::row_bytes`] each (`a.len() == rows·row_bytes`),
    /// `out.len() == rows·cols`, and the columns must exist in `b`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn tile(
        a: &[u8],
        b: &Packed,
        j0: usize,
        groups: Range<usize>,
        out: &mut [i32],
        rows: usize,
        cols: usize,
    ) {
        // Whole tiles run with constant bounds (the accumulators stay in registers), edge tiles with
        // the same code on run-time bounds.
        let full = rows == tile_rows(cols) && matches!(cols, 16 | 32 | 64);
        // SAFETY (all): same contract as this function; each shape fits its accumulators.
        unsafe {
            match (cols.div_ceil(LANES), full) {
                (0 | 1, true) => tile_body::<16, 1, true>(a, b, j0, groups, out, rows, cols),
                (0 | 1, false) => tile_body::<16, 1, false>(a, b, j0, groups, out, rows, cols),
                (2, true) => tile_body::<8, 2, true>(a, b, j0, groups, out, rows, cols),
                (2, false) => tile_body::<8, 2, false>(a, b, j0, groups, out, rows, cols),
                (_, true) => tile_body::<4, 4, true>(a, b, j0, groups, out, rows, cols),
                (_, false) => tile_body::<4, 4, false>(a, b, j0, groups, out, rows, cols),
            }
        }
    }

    /// What one step of a register tile reads.
    struct Tile<'a> {
        b: &'a Packed,
        first: usize,
        blocks: usize,
        rows: usize,
    }

    impl Tile<'_> {
        /// Accumulates group `g` (4 values of k) of the tile's rows: `word(r)` gives row r's 4 bytes.
        ///
        /// # Safety
        /// Inlined into a function with avx512f, avx512bw and avx512vnni; the tile's blocks exist.
        #[inline(always)]
        unsafe fn step<const R: usize, const C: usize, const FULL: bool>(
            &self,
            acc: &mut [[__m512i; C]; R],
            g: usize,
            word: impl Fn(usize) -> i32,
        ) {
            // Constant trip counts for full tiles, so that the accumulators stay in registers.
            let (rows, blocks) = if FULL {
                (R, C)
            } else {
                (self.rows, self.blocks)
            };
            let mut bv = [unsafe { _mm512_setzero_si512() }; C];
            for (c, v) in bv.iter_mut().enumerate().take(blocks) {
                let at = ((self.first + c) * self.b.groups + g) * 64;
                // SAFETY: block first + c exists, so its 64 bytes at group g lie inside `data`.
                *v = unsafe { _mm512_loadu_si512(self.b.data.as_ptr().add(at).cast()) };
            }
            for (r, acc_r) in acc.iter_mut().enumerate().take(rows) {
                // SAFETY: the CPU features are the caller's.
                unsafe {
                    let av = _mm512_set1_epi32(word(r));
                    for c in 0..blocks {
                        acc_r[c] = _mm512_dpbusd_epi32(acc_r[c], av, bv[c]);
                    }
                }
            }
        }
    }

    /// [`tile`] with at most `R` rows and `C` column blocks; `FULL`: exactly that many.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn tile_body<const R: usize, const C: usize, const FULL: bool>(
        a: &[u8],
        b: &Packed,
        j0: usize,
        groups: Range<usize>,
        out: &mut [i32],
        rows: usize,
        cols: usize,
    ) {
        let blocks = cols.div_ceil(LANES).min(C);
        let first = j0 / LANES;
        let mut acc = [[_mm512_setzero_si512(); C]; R];
        let tile = Tile {
            b,
            first,
            blocks,
            rows,
        };
        let stride = b.row_bytes();
        let first_chunk = groups.start == 0;
        for g in groups {
            // SAFETY: rows of `a` are `stride` = 4·groups bytes, so the 4 bytes at 4·g lie inside
            // row r; the CPU features are this function's.
            unsafe {
                tile.step::<R, C, FULL>(&mut acc, g, |r| {
                    a.as_ptr()
                        .add(r * stride + 4 * g)
                        .cast::<i32>()
                        .read_unaligned()
                })
            };
        }
        for (r, acc_r) in acc.iter().enumerate().take(rows) {
            for (c, &v) in acc_r.iter().enumerate().take(blocks) {
                let lanes = LANES.min(cols - c * LANES);
                let mask: __mmask16 = if lanes == LANES { !0 } else { (1 << lanes) - 1 };
                // SAFETY: `correction` is padded to whole blocks; the masked load and store touch
                // `lanes` i32 at row r, columns c·16 .. c·16 + lanes of `out` (rows × cols).
                unsafe {
                    let at = out.as_mut_ptr().add(r * cols + c * LANES);
                    // The first chunk of k writes the sum less the flip's correction; later chunks
                    // add to it.
                    let base = if first_chunk {
                        _mm512_sub_epi32(
                            _mm512_setzero_si512(),
                            _mm512_loadu_si512(
                                b.correction.as_ptr().add((first + c) * LANES).cast(),
                            ),
                        )
                    } else {
                        _mm512_maskz_loadu_epi32(mask, at)
                    };
                    _mm512_mask_storeu_epi32(at, mask, _mm512_add_epi32(v, base));
                }
            }
        }
    }
}

/// The weights of one layer ready for the integer GEMM: symmetric codes `[n, k]` (PyTorch layout: one row
/// per output channel, conv kernels flattened), one scale per row, and each row's code sum (used to
/// correct for the activations' zero point).
///
/// The codes are laid out once, when the weight is built, for the kernel that will run them
/// ([`IntWeight::kernel`]: the fastest this CPU has, or the one given to [`IntWeight::with_kernel`]):
/// the AVX-512 VNNI kernel's column panels, or row-major codes for the portable one. Only that one copy
/// is kept, so [`linear_i8`] repacks nothing per call.
#[derive(Clone, Debug, PartialEq)]
pub struct IntWeight {
    layout: Layout,
    scales: Vec<f32>,
    row_sums: Vec<i32>,
    n: usize,
    k: usize,
}

/// The codes of an [`IntWeight`], as its kernel reads them.
#[derive(Clone, Debug, PartialEq)]
enum Layout {
    /// Row-major `[n, k]` (the portable kernel).
    Rows(Vec<i8>),
    /// Column panels of the AVX-512 VNNI kernel.
    #[cfg(target_arch = "x86_64")]
    Vnni(vnni::Packed),
}

impl IntWeight {
    /// From codes (row-major `[n, k]`) and one scale per row, laid out for [`Kernel::best`].
    pub fn new(codes: Vec<i8>, scales: Vec<f32>, n: usize, k: usize) -> Result<Self> {
        if codes.len() != n * k || scales.len() != n {
            return Err(Error::ShapeMismatch {
                what: "integer weight codes and scales".into(),
                expected: vec![n, k],
                got: vec![codes.len(), scales.len()],
            });
        }
        if k > MAX_K {
            return Err(Error::Unsupported(format!(
                "int8 GEMM with k = {k} > {MAX_K} could overflow i32"
            )));
        }
        let row_sums = codes
            .chunks_exact(k.max(1))
            .map(|r| r.iter().map(|&v| i32::from(v)).sum())
            .collect();
        Self {
            layout: Layout::Rows(codes),
            scales,
            row_sums,
            n,
            k,
        }
        .with_kernel(Kernel::best())
    }

    /// The same weight laid out for `kernel`; [`Error::Unsupported`] if this CPU cannot run it.
    pub fn with_kernel(self, kernel: Kernel) -> Result<Self> {
        if !kernel.is_available() {
            return Err(Error::Unsupported(format!(
                "the {kernel:?} int8 kernel needs CPU features this machine lacks"
            )));
        }
        if kernel == self.kernel() {
            return Ok(self);
        }
        let codes = self.codes();
        let layout = match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => Layout::Vnni(vnni::Packed::new(&codes, self.n, self.k)),
            _ => Layout::Rows(codes),
        };
        Ok(Self { layout, ..self })
    }

    /// The kernel the codes are laid out for.
    pub fn kernel(&self) -> Kernel {
        match self.layout {
            Layout::Rows(_) => Kernel::Portable,
            #[cfg(target_arch = "x86_64")]
            Layout::Vnni(_) => Kernel::Avx512Vnni,
        }
    }

    /// The codes, row-major `[n, k]` (a copy; unpacked from the kernel's layout where needed).
    pub fn codes(&self) -> Vec<i8> {
        match &self.layout {
            Layout::Rows(c) => c.clone(),
            #[cfg(target_arch = "x86_64")]
            Layout::Vnni(p) => p.unpack(self.n, self.k),
        }
    }

    /// One scale per output row.
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// `Σ_k codes[j, k]` per row.
    pub fn row_sums(&self) -> &[i32] {
        &self.row_sums
    }

    /// Output rows.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Inner dimension.
    pub fn k(&self) -> usize {
        self.k
    }

    /// `A · codesᵀ` for `A` `[m, k]`, equal to [`gemm_i8_ref`] bit for bit.
    pub fn gemm(&self, a: &[i8], m: usize) -> Result<Vec<i32>> {
        if a.len() != m * self.k {
            return Err(Error::ShapeMismatch {
                what: "int8 GEMM activations".into(),
                expected: vec![m, self.k],
                got: vec![a.len()],
            });
        }
        let mut c = vec![0i32; m * self.n];
        if m == 0 || self.n == 0 || self.k == 0 {
            return Ok(c);
        }
        match &self.layout {
            Layout::Rows(b) => gemm_portable(a, b, self.k, &mut c),
            // SAFETY: the layout is built only where `is_available()` found the CPU features
            // (`with_kernel`); `a` is `[m, k]` and the panels `[n, k]`.
            #[cfg(target_arch = "x86_64")]
            Layout::Vnni(p) => unsafe { gemm_vnni(a, p, m, self.n, self.k, &mut c) },
        }
        Ok(c)
    }

    /// From a uniform, symmetric [`QuantizedTensor`](crate::QuantizedTensor) quantized per tensor or per
    /// output channel (axis 0); its shape `[n, ...]` is read as `[n, k]`. Other encodings are
    /// [`Error::Unsupported`]: they run through the simulated (dequantized) path instead.
    pub fn from_quantized(q: &crate::QuantizedTensor) -> Result<Self> {
        let spec = q.spec();
        let per_row = match spec.granularity {
            crate::Granularity::PerTensor => false,
            crate::Granularity::PerChannel { axis: 0 } => true,
            g => {
                return Err(Error::Unsupported(format!(
                    "integer GEMM needs per-tensor or per-output-channel weights, not {g}"
                )));
            }
        };
        if spec.scheme != crate::Scheme::Symmetric {
            return Err(Error::Unsupported(format!(
                "integer GEMM needs symmetric weights, not {:?}",
                spec.scheme
            )));
        }
        let params = q
            .params()
            .ok_or_else(|| Error::Unsupported("integer GEMM needs uniform weight codes".into()))?;
        let shape = q.shape();
        let n = shape.first().copied().unwrap_or(1);
        let k = q.numel() / n.max(1);
        let codes: Vec<i8> = q.codes()?.into_iter().map(|c| c as i8).collect();
        let scales = if per_row {
            params.scales
        } else {
            vec![params.scales[0]; n]
        };
        Self::new(codes, scales, n, k)
    }

    /// The codes of a conv weight `[out, in, kh, kw]` reordered to `[out, kh, kw, in]`, the column order
    /// of [`im2col_i8`]. Scales and row sums do not change.
    pub fn to_hwc(self, cin: usize, kh: usize, kw: usize) -> Result<Self> {
        if cin * kh * kw != self.k {
            return Err(Error::ShapeMismatch {
                what: "conv weight codes".into(),
                expected: vec![self.n, cin, kh, kw],
                got: vec![self.n, self.k],
            });
        }
        let kernel = self.kernel();
        let codes = self.codes();
        let mut out = vec![0i8; codes.len()];
        for (src, dst) in codes
            .chunks_exact(self.k.max(1))
            .zip(out.chunks_exact_mut(self.k.max(1)))
        {
            for ci in 0..cin {
                for y in 0..kh {
                    for x in 0..kw {
                        dst[(y * kw + x) * cin + ci] = src[(ci * kh + y) * kw + x];
                    }
                }
            }
        }
        Self::new(out, self.scales, self.n, self.k)?.with_kernel(kernel)
    }

    /// Quantizes a float weight `[n, k]` to `bits`-bit symmetric codes, one min-max scale per row.
    pub fn from_f32(weight: &[f32], n: usize, k: usize, bits: u32) -> Result<Self> {
        let spec = crate::QuantSpec::new(
            bits,
            crate::Scheme::Symmetric,
            crate::Granularity::PerChannel { axis: 0 },
        )?;
        Self::from_quantized(&crate::QuantizedTensor::quantize(weight, &[n, k], &spec)?)
    }
}

/// The offset between a per-tensor activation quantizer's codes and the `i8` the GEMM reads: 128 for
/// asymmetric (unsigned) codes, 0 for symmetric ones.
pub fn act_offset(spec: &crate::QuantSpec) -> i32 {
    if spec.scheme == crate::Scheme::Asymmetric {
        128
    } else {
        0
    }
}

/// Quantizes activations with scale `s` and zero point `z` (the formula of
/// [`quantize_one`](crate::uniform::quantize_one)) into `i8`, shifted by [`act_offset`]; returns the
/// codes and the shifted zero point. Specs of more than 8 bits cannot occur ([`crate::BitWidth`]).
pub fn quantize_act(x: &[f32], s: f32, z: i32, spec: &crate::QuantSpec) -> (Vec<i8>, i32) {
    let q = ActCoder::new(s, z, spec);
    (x.par_iter().map(|&v| q.code(v)).collect(), q.zero())
}

/// [`quantize_act`] for an NCHW activation `[n, c, h, w]`, writing the codes in NHWC order (what
/// [`im2col_i8`] reads).
pub fn quantize_act_nhwc(
    x: &[f32],
    [n, c, h, w]: [usize; 4],
    s: f32,
    z: i32,
    spec: &crate::QuantSpec,
) -> Result<(Vec<i8>, i32)> {
    if x.len() != n * c * h * w {
        return Err(Error::ShapeMismatch {
            what: "NCHW activation".into(),
            expected: vec![n, c, h, w],
            got: vec![x.len()],
        });
    }
    let q = ActCoder::new(s, z, spec);
    let mut out = vec![0i8; x.len()];
    out.par_chunks_mut((w * c).max(1))
        .enumerate()
        .for_each(|(row, dst)| {
            let (b, y) = (row / h, row % h);
            for ci in 0..c {
                let src = &x[((b * c + ci) * h + y) * w..][..w];
                for (xi, &v) in src.iter().enumerate() {
                    dst[xi * c + ci] = q.code(v);
                }
            }
        });
    Ok((out, q.zero()))
}

/// One activation quantizer, inlined: `clamp(round(x / s) + z, qmin, qmax) − offset`.
struct ActCoder {
    s: f32,
    z: i32,
    lo: f32,
    hi: f32,
    off: i32,
    spec: crate::QuantSpec,
}

impl ActCoder {
    fn new(s: f32, z: i32, spec: &crate::QuantSpec) -> Self {
        let (qmin, qmax) = spec.qrange();
        Self {
            s,
            z,
            lo: (qmin - z) as f32,
            hi: (qmax - z) as f32,
            off: act_offset(spec),
            spec: *spec,
        }
    }

    fn zero(&self) -> i32 {
        self.z - self.off
    }

    #[inline(always)]
    fn code(&self, v: f32) -> i8 {
        // Clamping to the integer bounds before rounding gives the same code as rounding first. Adding and
        // subtracting 1.5·2²³ rounds to nearest, ties to even, for |v| < 2²² (the bounds are within ±2⁹).
        const MAGIC: f32 = 12_582_912.0;
        if self.spec.rounding == crate::Rounding::NearestEven {
            let r = ((v / self.s).clamp(self.lo, self.hi) + MAGIC) - MAGIC;
            (r as i32 + self.z - self.off) as i8
        } else {
            (crate::uniform::quantize_one(v, self.s, self.z, &self.spec) - self.off) as i8
        }
    }
}

/// A quantized linear layer in integers: `y[i, j] = s_x · s_w[j] · (Σ_k x[i, k] · W[j, k] − z_x · Σ_k W[j, k]) + b[j]`
/// for `i8` activation codes `x` `[m, k]` with zero point `z_x` and scale `s_x` (from [`quantize_act`]).
/// The GEMM is [`gemm_i8`]; the correction and rescale are exact up to the final f32 multiply.
pub fn linear_i8(
    x: &[i8],
    zero: i32,
    scale: f32,
    w: &IntWeight,
    bias: Option<&[f32]>,
    m: usize,
) -> Result<Vec<f32>> {
    if let Some(b) = bias
        && b.len() != w.n
    {
        return Err(Error::ShapeMismatch {
            what: "integer linear bias".into(),
            expected: vec![w.n],
            got: vec![b.len()],
        });
    }
    let acc = w.gemm(x, m)?;
    let col_scale: Vec<f32> = w.scales.iter().map(|s| s * scale).collect();
    let col_zero: Vec<i32> = w.row_sums.iter().map(|s| s * zero).collect();
    let zeros = vec![0f32; w.n];
    let bias = bias.unwrap_or(&zeros);
    let mut y = vec![0f32; m * w.n];
    y.par_chunks_mut(w.n.max(1))
        .zip(acc.par_chunks(w.n.max(1)))
        .for_each(|(out, row)| {
            for j in 0..row.len() {
                out[j] = (row[j] - col_zero[j]) as f32 * col_scale[j] + bias[j];
            }
        });
    Ok(y)
}

/// Convolution geometry for [`im2col_i8`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Input `[batch, channels, h, w]`.
    pub input: [usize; 4],
    /// Kernel `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Stride.
    pub stride: [usize; 2],
    /// Zero padding (both sides).
    pub padding: [usize; 2],
    /// Dilation.
    pub dilation: [usize; 2],
}

impl ConvGeometry {
    /// Output `[oh, ow]`; [`Error::ShapeMismatch`] when the kernel does not fit the padded input.
    pub fn output(&self) -> Result<[usize; 2]> {
        let mut out = [0; 2];
        for (a, o) in out.iter_mut().enumerate() {
            let span = self.dilation[a] * (self.kernel[a].max(1) - 1) + 1;
            let padded = self.input[2 + a] + 2 * self.padding[a];
            if span > padded || self.stride[a] == 0 {
                return Err(Error::ShapeMismatch {
                    what: "convolution input (kernel larger than the padded input)".into(),
                    expected: vec![span],
                    got: self.input.to_vec(),
                });
            }
            *o = (padded - span) / self.stride[a] + 1;
        }
        Ok(out)
    }
}

/// The patch matrix of a convolution over `i8` codes in NHWC order (from [`quantize_act_nhwc`]): rows
/// `[batch · oh · ow]`, columns `[kh · kw · channels]` — the order of a conv weight permuted to
/// `[out, kh, kw, in]` ([`IntWeight::to_hwc`]). Padding takes the code `pad` (the activations' zero point,
/// which stands for 0.0), so the zero-point correction of [`linear_i8`] stays exact at the borders.
/// Returns the matrix and `[oh, ow]`.
pub fn im2col_i8(x: &[i8], g: &ConvGeometry, pad: i8) -> Result<(Vec<i8>, [usize; 2])> {
    let [n, c, h, w] = g.input;
    if x.len() != n * c * h * w {
        return Err(Error::ShapeMismatch {
            what: "im2col input".into(),
            expected: g.input.to_vec(),
            got: vec![x.len()],
        });
    }
    let [oh, ow] = g.output()?;
    let [kh, kw] = g.kernel;
    let cols = c * kh * kw;
    let mut out = vec![pad; n * oh * ow * cols];
    out.par_chunks_mut((cols * ow).max(1))
        .enumerate()
        .for_each(|(orow, patches)| {
            let (b, oy) = (orow / oh, orow % oh);
            let image = &x[b * h * w * c..][..h * w * c];
            for (ox, patch) in patches.chunks_exact_mut(cols).enumerate() {
                for ky in 0..kh {
                    let iy =
                        (oy * g.stride[0] + ky * g.dilation[0]) as isize - g.padding[0] as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    let src_row = &image[iy as usize * w * c..][..w * c];
                    let dst_row = &mut patch[ky * kw * c..][..kw * c];
                    let ix0 = (ox * g.stride[1]) as isize - g.padding[1] as isize;
                    if g.dilation[1] == 1 && ix0 >= 0 && ix0 as usize + kw <= w {
                        // The whole run of kw pixels is inside: one copy of kw·c codes.
                        dst_row.copy_from_slice(&src_row[ix0 as usize * c..][..kw * c]);
                        continue;
                    }
                    for kx in 0..kw {
                        let ix = ix0 + (kx * g.dilation[1]) as isize;
                        if ix >= 0 && ix < w as isize {
                            dst_row[kx * c..][..c]
                                .copy_from_slice(&src_row[ix as usize * c..][..c]);
                        }
                    }
                }
            }
        });
    Ok((out, [oh, ow]))
}
