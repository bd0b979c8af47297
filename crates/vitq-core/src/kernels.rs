//! Integer kernels: the i8 × i8 → i32 matrix product under W8A8 layers.
//!
//! `C[m×n] = A[m×k] · Bᵀ` with `A` the activations (row-major `[m, k]`) and `B` the weights in
//! PyTorch's layout (row-major `[n, k]`, one row per output channel), accumulated exactly in `i32`.
//!
//! | function | what |
//! |---|---|
//! | [`gemm_i8_ref`] | the oracle: one dot product at a time |
//! | [`gemm_i8`] | the fast path: register tiles split over threads; AVX-512 VNNI where the CPU has it, else AVX2, else plain Rust (detected at run time; [`Kernel`], [`gemm_i8_with`]) |
//! | [`IntWeight`], [`quantize_act`], [`linear_i8`] | a quantized linear layer in integers: codes, the zero-point correction, the rescale |
//! | [`im2col_i8`] | convolution patches of int8 codes (padding with the zero point's code), so a conv is one GEMM |
//!
//! The VNNI path uses `vpdpbusd`, which multiplies *unsigned* bytes by signed ones: it adds 128 to
//! every activation (`a ⊕ 0x80`) and subtracts `128 · Σ_k B[j, k]` afterwards, which is exact.
//! The AVX2 and portable paths widen both operands to `i16` and sum products in pairs (`vpmaddwd`:
//! `a₀b₀ + a₁b₁`, at most 2·2¹⁴, exact in `i32`). Sums stay exact as long as `k · 128 · 128 < 2^31`,
//! i.e. `k ≤ 131072` (checked).
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

use std::ops::Range;

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

/// The inner kernels of [`gemm_i8_with`] and [`IntWeight`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kernel {
    /// Plain Rust, any CPU: 6 × 16 register tiles over 16-bit weight panels, vectorised by LLVM.
    Portable,
    /// AVX2 (`vpmaddwd`), x86-64 CPUs since 2013: the portable kernel's panels, two `k` per instruction.
    Avx2,
    /// AVX-512 VNNI (`vpdpbusd`), x86-64 CPUs with avx512f, avx512bw and avx512vnni.
    Avx512Vnni,
}

impl Kernel {
    /// Every kernel, whether this CPU runs it or not ([`Kernel::is_available`] tells).
    pub const ALL: [Kernel; 3] = [Kernel::Portable, Kernel::Avx2, Kernel::Avx512Vnni];

    /// The fastest kernel this CPU runs (detected at run time).
    pub fn best() -> Self {
        [Kernel::Avx512Vnni, Kernel::Avx2]
            .into_iter()
            .find(|k| k.is_available())
            .unwrap_or(Kernel::Portable)
    }

    /// Whether this CPU can run the kernel.
    pub fn is_available(self) -> bool {
        match self {
            Kernel::Portable => true,
            Kernel::Avx2 => pairs::avx2_available(),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => vnni::available(),
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx512Vnni => false,
        }
    }

    fn check(self) -> Result<()> {
        if self.is_available() {
            Ok(())
        } else {
            Err(Error::Unsupported(format!(
                "the {self:?} int8 kernel needs CPU features this machine lacks"
            )))
        }
    }
}

/// Fast `C = A · Bᵀ` with the best kernel for this CPU, equal to [`gemm_i8_ref`] bit for bit.
pub fn gemm_i8(a: &[i8], b: &[i8], m: usize, n: usize, k: usize) -> Result<Vec<i32>> {
    gemm_i8_with(Kernel::best(), a, b, m, n, k)
}

/// `C = A · Bᵀ` with a chosen kernel; [`Error::Unsupported`] if this CPU cannot run it. The weights
/// are laid out for the kernel on every call; [`IntWeight`] lays them out once.
pub fn gemm_i8_with(
    kernel: Kernel,
    a: &[i8],
    b: &[i8],
    m: usize,
    n: usize,
    k: usize,
) -> Result<Vec<i32>> {
    check(a, b, m, n, k)?;
    kernel.check()?;
    let mut c = vec![0i32; m * n];
    if m > 0 && n > 0 && k > 0 {
        Layout::new(kernel, b, n, k).gemm(&matrix_rows(a, k), m, n, k, &mut c, &copy_sums);
    }
    Ok(c)
}

/// The `store` of [`gemm_blocked`] that keeps the sums.
fn copy_sums(_: usize, sums: &[i32], dst: &mut [i32]) {
    dst.copy_from_slice(sums);
}

/// Weights laid out for one register-tile kernel; [`gemm_blocked`] drives them all.
trait Panels: Sync {
    /// One activation as the tile reads it.
    type Act: Copy + Default + Send + Sync;
    /// Values of `k` a tile consumes per step (the panels pad `k` to whole groups).
    const GROUP: usize;
    /// Most rows of A one tile reads.
    const MAX_ROWS: usize;
    /// An activation code in the tile's encoding (padding is `Act::default()`, which meets zero weights).
    fn act(v: i8) -> Self::Act;
    /// Groups of [`Panels::GROUP`] values of `k`.
    fn groups(&self) -> usize;
    /// Rows of A per tile for `cols` output columns (≤ [`Panels::MAX_ROWS`]).
    fn tile_rows(&self, cols: usize) -> usize;
    /// `rows` rows of A (`a`, [`Panels::GROUP`]` · groups()` values per row, at least
    /// [`Panels::MAX_ROWS`] rows readable) against columns `j0 .. j0 + cols` (`cols` ≤ 64, `j0` a
    /// multiple of 16) over the groups `groups`, into `out` (`rows × cols`): written when the groups start
    /// at 0, added to otherwise.
    ///
    /// # Safety
    /// The CPU has the features of the kernel the panels were built for; the slices are as stated.
    unsafe fn tile(
        &self,
        a: &[Self::Act],
        j0: usize,
        groups: Range<usize>,
        out: &mut [i32],
        rows: usize,
        cols: usize,
    );
}

/// `C = A · Bᵀ` through the panels' register tiles, each run of sums `C[i, j0 .. j0 + cols]` written
/// to `c[i·n + j0 ..][..cols]` by `store(j0, sums, dst)` (`c` is `m × n`; [`linear_i8`] rescales to
/// `f32` there, with no `i32` matrix in between). The rows of A come from `rows(r0, dst)`, which
/// writes rows `r0 ..` into `dst` (`k` codes per row, `dst.len() / k` rows): a slice of a matrix,
/// or patches of a convolution gathered on the fly ([`conv2d_i8`]), so that no `m × k` matrix needs
/// to exist. Tasks own a block of at most 256 rows of A and 64 columns of C (the weight panel, ≤ 64·k
/// values, stays in L2; the block of A, encoded for the tile, in per-thread buffers), swept in
/// register tiles over chunks of 64 groups of `k` (the panel's slice stays in L1); each writes a
/// block of sums that the rows of `c` then read, in parallel. Splitting rows too keeps every core
/// busy when `n` is small (a conv's 16 channels).
///
/// # Safety
/// As [`Panels::tile`]; `rows` fills every row below `m`, `c.len() == m·n`, the panels are `[n, k]`,
/// and `m`, `n`, `k` ≥ 1.
unsafe fn gemm_blocked<P: Panels, T: Send>(
    p: &P,
    rows: &(impl Fn(usize, &mut [i8]) + Sync),
    [m, n, k]: [usize; 3],
    c: &mut [T],
    store: &(impl Fn(usize, &[i32], &mut [T]) + Sync),
) {
    const COLS: usize = 64;
    const ROWS: usize = 256;
    const KC: usize = 64;
    // A in the tile's encoding: rows padded to whole groups (the padding stays `Act::default()`, which
    // meets zero weights), and MAX_ROWS rows past the end so that every tile may read whole tiles.
    let stride = P::GROUP * p.groups();
    // Rows `r0 ..` of A encoded into `dst` (whole rows of `stride`), through the raw buffer `raw`.
    let encode = |raw: &mut Vec<i8>, r0: usize, dst: &mut [P::Act]| {
        let count = dst.len() / stride;
        raw.resize(count * k, 0);
        rows(r0, raw);
        for (d, s) in dst.chunks_exact_mut(stride).zip(raw.chunks_exact(k)) {
            for (d, &v) in d.iter_mut().zip(s) {
                *d = P::act(v);
            }
        }
    };
    let col_blocks = n.div_ceil(COLS);
    // With one block of columns each task encodes its own rows of A, so no `m × k` buffer exists
    // (a conv's patches are gathered right there); with more, every block of rows is read by
    // `col_blocks` tasks, so it is encoded once, here.
    let shared: Option<Vec<P::Act>> = (col_blocks > 1).then(|| {
        let mut all = vec![P::Act::default(); (m + P::MAX_ROWS) * stride];
        all[..m * stride]
            .par_chunks_mut(ROWS * stride)
            .enumerate()
            .for_each_init(Vec::new, |raw, (b, dst)| encode(raw, b * ROWS, dst));
        all
    });
    let tasks: Vec<(usize, usize)> = (0..m.div_ceil(ROWS))
        .flat_map(|r| (0..col_blocks).map(move |c| (r * ROWS, c * COLS)))
        .collect();
    // In task order: block (r0 / ROWS, j0 / COLS) at r0 / ROWS · col_blocks + j0 / COLS.
    let blocks: Vec<Vec<i32>> = tasks
        .into_par_iter()
        .map_init(
            || (Vec::new(), Vec::new()),
            |(raw, own), (r0, j0)| {
                let cols = COLS.min(n - j0);
                let rows_blk = ROWS.min(m - r0);
                let a: &[P::Act] = match &shared {
                    Some(all) => &all[r0 * stride..],
                    None => {
                        own.resize((ROWS + P::MAX_ROWS) * stride, P::Act::default());
                        encode(raw, r0, &mut own[..rows_blk * stride]);
                        own
                    }
                };
                let mut out = vec![0i32; rows_blk * cols];
                let step = p.tile_rows(cols);
                for g0 in (0..p.groups()).step_by(KC) {
                    let groups = g0..(g0 + KC).min(p.groups());
                    for i0 in (0..rows_blk).step_by(step) {
                        let rows = step.min(rows_blk - i0);
                        // SAFETY: the CPU features are this function's contract; row i0 is followed
                        // by at least MAX_ROWS readable rows (their sums are not read), `out` holds
                        // `rows` rows from i0.
                        unsafe {
                            p.tile(
                                &a[i0 * stride..],
                                j0,
                                groups.clone(),
                                &mut out[i0 * cols..(i0 + rows) * cols],
                                rows,
                                cols,
                            )
                        };
                    }
                }
                out
            },
        )
        .collect();
    c.par_chunks_mut(n).enumerate().for_each(|(r, row)| {
        let (band, i) = (r / ROWS, r % ROWS);
        for (cb, out) in blocks[band * col_blocks..][..col_blocks].iter().enumerate() {
            let j0 = cb * COLS;
            let cols = COLS.min(n - j0);
            store(j0, &out[i * cols..(i + 1) * cols], &mut row[j0..j0 + cols]);
        }
    });
}

/// The rows of a row-major `[m, k]` matrix, for [`gemm_blocked`].
fn matrix_rows(a: &[i8], k: usize) -> impl Fn(usize, &mut [i8]) + Sync + '_ {
    move |r0, dst| dst.copy_from_slice(&a[r0 * k..][..dst.len()])
}

/// The portable and AVX2 kernels: weights as 16-bit pairs, two values of `k` per step.
mod pairs {
    use std::ops::Range;

    use rayon::prelude::*;

    /// Output columns per panel block.
    pub const LANES: usize = 16;
    /// Rows of A per register tile: 6 × 16 accumulators (12 AVX2 registers).
    pub const ROWS: usize = 6;

    /// Whether this CPU runs the AVX2 tile (detected at run time; never off x86-64).
    pub fn avx2_available() -> bool {
        #[cfg(target_arch = "x86_64")]
        return is_x86_feature_detected!("avx2");
        #[cfg(not(target_arch = "x86_64"))]
        return false;
    }

    /// B (`[n, k]`) as `i16`: for each block of 16 columns and each pair of `k`, the 32 values
    /// `B[j, 2p], B[j, 2p + 1]` of the block's columns in order (zero-padded past `n` and `k`), the
    /// operand of `vpmaddwd`. Twice the bytes of the `i8` codes, half those of `f32`.
    #[derive(Clone, Debug, PartialEq)]
    pub struct Packed {
        data: Vec<i16>,
        groups: usize,
        avx2: bool,
    }

    impl Packed {
        /// `avx2`: run the AVX2 tile (only taken where the CPU has AVX2).
        pub fn new(b: &[i8], n: usize, k: usize, avx2: bool) -> Self {
            let groups = k.div_ceil(2);
            let block = groups * 2 * LANES;
            let mut data = vec![0i16; n.div_ceil(LANES) * block];
            data.par_chunks_mut(block.max(1))
                .enumerate()
                .for_each(|(blk, dst)| {
                    for lane in 0..LANES.min(n - blk * LANES) {
                        let row = &b[(blk * LANES + lane) * k..][..k];
                        for (t, &v) in row.iter().enumerate() {
                            dst[(t / 2) * 2 * LANES + lane * 2 + t % 2] = i16::from(v);
                        }
                    }
                });
            Self {
                data,
                groups,
                avx2: avx2 && avx2_available(),
            }
        }

        /// Whether the AVX2 tile runs these panels.
        pub fn avx2(&self) -> bool {
            self.avx2
        }

        /// The same panels for the other tile.
        pub fn with_avx2(self, avx2: bool) -> Self {
            Self {
                avx2: avx2 && avx2_available(),
                ..self
            }
        }

        /// B back in its row-major `[n, k]` layout.
        pub fn unpack(&self, n: usize, k: usize) -> Vec<i8> {
            let mut b = vec![0i8; n * k];
            for (j, row) in b.chunks_exact_mut(k.max(1)).enumerate() {
                let src = &self.data[(j / LANES) * self.groups * 2 * LANES..];
                for (t, v) in row.iter_mut().enumerate() {
                    *v = src[(t / 2) * 2 * LANES + (j % LANES) * 2 + t % 2] as i8;
                }
            }
            b
        }
    }

    impl super::Panels for Packed {
        type Act = i16;
        const GROUP: usize = 2;
        const MAX_ROWS: usize = ROWS;

        fn act(v: i8) -> i16 {
            i16::from(v)
        }

        fn groups(&self) -> usize {
            self.groups
        }

        fn tile_rows(&self, _cols: usize) -> usize {
            ROWS
        }

        unsafe fn tile(
            &self,
            a: &[i16],
            j0: usize,
            groups: Range<usize>,
            out: &mut [i32],
            rows: usize,
            cols: usize,
        ) {
            let stride = 2 * self.groups;
            let block = self.groups * 2 * LANES;
            for c0 in (0..cols).step_by(LANES) {
                let panel = &self.data[((j0 + c0) / LANES) * block..][..block];
                let acc = match () {
                    // SAFETY: `avx2` is set only where the CPU has AVX2 (`new`, `with_avx2`); `a` holds
                    // ROWS rows of `stride` values and `panel` the block's `groups` pairs.
                    #[cfg(target_arch = "x86_64")]
                    () if self.avx2 => unsafe { block_avx2(a, stride, panel, groups.clone()) },
                    () => block_portable(a, stride, panel, groups.clone()),
                };
                let width = LANES.min(cols - c0);
                for (r, acc_r) in acc.iter().enumerate().take(rows) {
                    let dst = &mut out[r * cols + c0..][..width];
                    if groups.start == 0 {
                        dst.copy_from_slice(&acc_r[..width]);
                    } else {
                        dst.iter_mut().zip(acc_r).for_each(|(d, v)| *d += v);
                    }
                }
            }
        }
    }

    /// One 6 × 16 tile over `groups` pairs of `k`, in plain Rust.
    fn block_portable(
        a: &[i16],
        stride: usize,
        panel: &[i16],
        groups: Range<usize>,
    ) -> [[i32; LANES]; ROWS] {
        let mut acc = [[0i32; LANES]; ROWS];
        for g in groups {
            let bp: &[i16; 2 * LANES] = panel[g * 2 * LANES..][..2 * LANES]
                .try_into()
                .expect("a panel group holds 2·LANES values");
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let a0 = i32::from(a[r * stride + 2 * g]);
                let a1 = i32::from(a[r * stride + 2 * g + 1]);
                for (c, acc_rc) in acc_r.iter_mut().enumerate() {
                    *acc_rc += a0 * i32::from(bp[2 * c]) + a1 * i32::from(bp[2 * c + 1]);
                }
            }
        }
        acc
    }

    /// [`block_portable`] with `vpmaddwd`: each row's pair broadcast against the 16 columns' pairs.
    ///
    /// # Safety
    /// The CPU has AVX2; `a` holds ROWS rows of `stride` ≥ 2·groups.end values; `panel` holds
    /// `groups.end` pairs of 16 columns.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn block_avx2(
        a: &[i16],
        stride: usize,
        panel: &[i16],
        groups: Range<usize>,
    ) -> [[i32; LANES]; ROWS] {
        use std::arch::x86_64::*;
        assert!(
            a.len() >= (ROWS - 1) * stride + 2 * groups.end
                && panel.len() >= groups.end * 2 * LANES
        );
        let mut acc = [[_mm256_setzero_si256(); 2]; ROWS];
        for g in groups {
            // SAFETY (all): the bounds were checked above; the CPU has AVX2.
            let (b0, b1) = unsafe {
                let p = panel.as_ptr().add(g * 2 * LANES);
                (
                    _mm256_loadu_si256(p.cast()),
                    _mm256_loadu_si256(p.add(LANES).cast()),
                )
            };
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let pair = unsafe {
                    a.as_ptr()
                        .add(r * stride + 2 * g)
                        .cast::<i32>()
                        .read_unaligned()
                };
                let av = _mm256_set1_epi32(pair);
                acc_r[0] = _mm256_add_epi32(acc_r[0], _mm256_madd_epi16(av, b0));
                acc_r[1] = _mm256_add_epi32(acc_r[1], _mm256_madd_epi16(av, b1));
            }
        }
        let mut out = [[0i32; LANES]; ROWS];
        for (o, v) in out.iter_mut().zip(&acc) {
            // SAFETY: each row of `out` holds 16 i32, two 256-bit stores.
            unsafe {
                _mm256_storeu_si256(o.as_mut_ptr().cast(), v[0]);
                _mm256_storeu_si256(o.as_mut_ptr().add(8).cast(), v[1]);
            }
        }
        out
    }
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

    impl super::Panels for Packed {
        type Act = u8;
        const GROUP: usize = 4;
        const MAX_ROWS: usize = 16;

        /// Flipped to the unsigned byte `vpdpbusd` multiplies: `a ⊕ 0x80 = a + 128`.
        fn act(v: i8) -> u8 {
            (v as u8) ^ 0x80
        }

        fn groups(&self) -> usize {
            self.groups
        }

        fn tile_rows(&self, cols: usize) -> usize {
            tile_rows(cols)
        }

        unsafe fn tile(
            &self,
            a: &[u8],
            j0: usize,
            groups: Range<usize>,
            out: &mut [i32],
            rows: usize,
            cols: usize,
        ) {
            // SAFETY: the caller's contract is `tile`'s.
            unsafe { tile(a, self, j0, groups, out, rows, cols) }
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
    /// unsigned (`a ⊕ 0x80`) at [`Packed::row_bytes`] each (`a.len() ≥ rows·row_bytes`),
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
/// the AVX-512 VNNI kernel's byte panels, or the 16-bit panels of the AVX2 and portable kernels. Only
/// that one copy is kept, so [`linear_i8`] repacks nothing per call.
#[derive(Clone, Debug, PartialEq)]
pub struct IntWeight {
    layout: Layout,
    scales: Vec<f32>,
    row_sums: Vec<i32>,
    n: usize,
    k: usize,
}

/// The codes of a `[n, k]` weight as one kernel reads them.
#[derive(Clone, Debug, PartialEq)]
enum Layout {
    /// Panels of 16-bit pairs (the portable and AVX2 kernels).
    Pairs(pairs::Packed),
    /// Byte panels of the AVX-512 VNNI kernel.
    #[cfg(target_arch = "x86_64")]
    Vnni(vnni::Packed),
}

impl Layout {
    /// `b` (`[n, k]`) for `kernel`, which the caller has checked this CPU runs.
    fn new(kernel: Kernel, b: &[i8], n: usize, k: usize) -> Self {
        match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => Layout::Vnni(vnni::Packed::new(b, n, k)),
            _ => Layout::Pairs(pairs::Packed::new(b, n, k, kernel == Kernel::Avx2)),
        }
    }

    fn kernel(&self) -> Kernel {
        match self {
            Layout::Pairs(p) if p.avx2() => Kernel::Avx2,
            Layout::Pairs(_) => Kernel::Portable,
            #[cfg(target_arch = "x86_64")]
            Layout::Vnni(_) => Kernel::Avx512Vnni,
        }
    }

    fn unpack(&self, n: usize, k: usize) -> Vec<i8> {
        match self {
            Layout::Pairs(p) => p.unpack(n, k),
            #[cfg(target_arch = "x86_64")]
            Layout::Vnni(p) => p.unpack(n, k),
        }
    }

    /// `c = store(a · bᵀ)` (`a` `[m, k]` given by its `rows`, `c` `[m, n]`; `m`, `n`, `k` ≥ 1; see
    /// [`gemm_blocked`]).
    fn gemm<T: Send>(
        &self,
        rows: &(impl Fn(usize, &mut [i8]) + Sync),
        m: usize,
        n: usize,
        k: usize,
        c: &mut [T],
        store: &(impl Fn(usize, &[i32], &mut [T]) + Sync),
    ) {
        debug_assert_eq!(c.len(), m * n);
        match self {
            // SAFETY: the pairs' AVX2 flag is set only where the CPU has AVX2 (`pairs::Packed`).
            Layout::Pairs(p) => unsafe { gemm_blocked(p, rows, [m, n, k], c, store) },
            // SAFETY: VNNI panels are built only for a kernel the caller found available
            // (`gemm_i8_with`, `IntWeight::with_kernel`).
            #[cfg(target_arch = "x86_64")]
            Layout::Vnni(p) => unsafe { gemm_blocked(p, rows, [m, n, k], c, store) },
        }
    }
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
        // One sum per row, zero where `k = 0` (no codes).
        let row_sums = (0..n)
            .map(|j| {
                codes[j * k..(j + 1) * k]
                    .iter()
                    .map(|&v| i32::from(v))
                    .sum()
            })
            .collect();
        Ok(Self {
            layout: Layout::new(Kernel::best(), &codes, n, k),
            scales,
            row_sums,
            n,
            k,
        })
    }

    /// The same weight laid out for `kernel`; [`Error::Unsupported`] if this CPU cannot run it.
    pub fn with_kernel(self, kernel: Kernel) -> Result<Self> {
        kernel.check()?;
        let layout = match self.layout {
            _ if kernel == self.kernel() => self.layout,
            // The portable and AVX2 kernels read the same panels.
            Layout::Pairs(p) if kernel != Kernel::Avx512Vnni => {
                Layout::Pairs(p.with_avx2(kernel == Kernel::Avx2))
            }
            _ => Layout::new(kernel, &self.codes(), self.n, self.k),
        };
        Ok(Self { layout, ..self })
    }

    /// The kernel the codes are laid out for.
    pub fn kernel(&self) -> Kernel {
        self.layout.kernel()
    }

    /// The codes, row-major `[n, k]` (a copy, unpacked from the kernel's layout).
    pub fn codes(&self) -> Vec<i8> {
        self.layout.unpack(self.n, self.k)
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
        self.gemm_map(a, m, &copy_sums)
    }

    /// The product `A · codesᵀ` (the sums of [`IntWeight::gemm`]) written row-major through `store`,
    /// a run of columns of one row at a time ([`gemm_blocked`]).
    fn gemm_map<T: Send + Default + Clone>(
        &self,
        a: &[i8],
        m: usize,
        store: &(impl Fn(usize, &[i32], &mut [T]) + Sync),
    ) -> Result<Vec<T>> {
        if a.len() != m * self.k {
            return Err(Error::ShapeMismatch {
                what: "int8 GEMM activations".into(),
                expected: vec![m, self.k],
                got: vec![a.len()],
            });
        }
        Ok(self.gemm_rows_map(m, &matrix_rows(a, self.k), store))
    }

    /// [`IntWeight::gemm_map`] with the `m` rows of A given by `rows` (see [`gemm_blocked`]).
    fn gemm_rows_map<T: Send + Default + Clone>(
        &self,
        m: usize,
        rows: &(impl Fn(usize, &mut [i8]) + Sync),
        store: &(impl Fn(usize, &[i32], &mut [T]) + Sync),
    ) -> Vec<T> {
        let mut c = vec![T::default(); m * self.n];
        if m > 0 && self.n > 0 && self.k > 0 {
            self.layout.gemm(rows, m, self.n, self.k, &mut c, store);
        } else {
            // No products: every sum is zero.
            let zeros = vec![0; self.n];
            c.par_chunks_mut(self.n.max(1))
                .for_each(|row| store(0, &zeros, row));
        }
        c
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
    let r = Rescale::new(zero, scale, w, bias)?;
    w.gemm_map(x, m, &|j0, sums: &[i32], out: &mut [f32]| {
        r.store(j0, sums, out)
    })
}

/// The integer → f32 step of [`linear_i8`] and [`conv2d_i8`], per output column `j`:
/// `(acc − z_x · Σ_k W[j, k]) · (s_x · s_w[j]) + b[j]`.
struct Rescale {
    col_scale: Vec<f32>,
    col_zero: Vec<i32>,
    bias: Vec<f32>,
}

impl Rescale {
    fn new(zero: i32, scale: f32, w: &IntWeight, bias: Option<&[f32]>) -> Result<Self> {
        if let Some(b) = bias
            && b.len() != w.n
        {
            return Err(Error::ShapeMismatch {
                what: "integer linear bias".into(),
                expected: vec![w.n],
                got: vec![b.len()],
            });
        }
        Ok(Self {
            col_scale: w.scales.iter().map(|s| s * scale).collect(),
            col_zero: w.row_sums.iter().map(|s| s * zero).collect(),
            bias: bias.map_or_else(|| vec![0.0; w.n], <[f32]>::to_vec),
        })
    }

    /// `out = rescaled sums` for the columns `j0 ..` of one row.
    fn store(&self, j0: usize, sums: &[i32], out: &mut [f32]) {
        let cols = j0..j0 + sums.len();
        let terms = self.col_zero[cols.clone()]
            .iter()
            .zip(&self.col_scale[cols.clone()])
            .zip(&self.bias[cols]);
        for ((y, &acc), ((&z, &s), &b)) in out.iter_mut().zip(sums).zip(terms) {
            *y = (acc - z) as f32 * s + b;
        }
    }
}

/// A quantized convolution in integers: [`linear_i8`] over the patches of `x`, NHWC `i8` codes
/// (from [`quantize_act_nhwc`]) with zero point `zero` and scale `scale`, against `w` laid out for
/// NHWC patches ([`IntWeight::to_hwc`]). The patches are gathered block by block inside the GEMM, so
/// the `[batch · oh · ow, kh · kw · c]` matrix of [`im2col_i8`] is never built; the result equals
/// `linear_i8(im2col_i8(x, g, zero), ..)` bit for bit. Returns the output in NHWC order
/// (`[batch · oh · ow, out]`) and `[oh, ow]`.
pub fn conv2d_i8(
    x: &[i8],
    g: &ConvGeometry,
    zero: i32,
    scale: f32,
    w: &IntWeight,
    bias: Option<&[f32]>,
) -> Result<(Vec<f32>, [usize; 2])> {
    let [n, c, _, _] = g.input;
    let [oh, ow] = im2col_check(x, g)?;
    let cols = c * g.kernel[0] * g.kernel[1];
    if cols != w.k {
        return Err(Error::ShapeMismatch {
            what: "integer convolution patches (channels · kh · kw) against the weight".into(),
            expected: vec![w.k],
            got: vec![c, g.kernel[0], g.kernel[1]],
        });
    }
    let pad = i8::try_from(zero).map_err(|_| {
        Error::InvalidSpec(format!("activation zero point {zero} is not an i8 code"))
    })?;
    let r = Rescale::new(zero, scale, w, bias)?;
    let rows = |r0: usize, dst: &mut [i8]| im2col_rows(x, g, pad, [oh, ow], r0, dst);
    let y = w.gemm_rows_map(n * oh * ow, &rows, &|j0, sums: &[i32], out: &mut [f32]| {
        r.store(j0, sums, out)
    });
    Ok((y, [oh, ow]))
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
    let [oh, ow] = im2col_check(x, g)?;
    let [n, c, _, _] = g.input;
    let cols = c * g.kernel[0] * g.kernel[1];
    let mut out = vec![pad; n * oh * ow * cols];
    out.par_chunks_mut((cols * ow).max(1))
        .enumerate()
        .for_each(|(orow, patches)| im2col_rows(x, g, pad, [oh, ow], orow * ow, patches));
    Ok((out, [oh, ow]))
}

/// The input length against the geometry, and the output `[oh, ow]`.
fn im2col_check(x: &[i8], g: &ConvGeometry) -> Result<[usize; 2]> {
    let [n, c, h, w] = g.input;
    if x.len() != n * c * h * w {
        return Err(Error::ShapeMismatch {
            what: "im2col input".into(),
            expected: g.input.to_vec(),
            got: vec![x.len()],
        });
    }
    g.output()
}

/// Rows `r0 ..` of the patch matrix of [`im2col_i8`] (`dst.len() / (kh · kw · c)` of them; row
/// `r` is output pixel `r % ow`, `r / ow % oh` of image `r / (oh · ow)`), every value written.
fn im2col_rows(
    x: &[i8],
    g: &ConvGeometry,
    pad: i8,
    [oh, ow]: [usize; 2],
    r0: usize,
    dst: &mut [i8],
) {
    let [_, c, h, w] = g.input;
    let [kh, kw] = g.kernel;
    let cols = c * kh * kw;
    for (i, patch) in dst.chunks_exact_mut(cols.max(1)).enumerate() {
        let r = r0 + i;
        let (b, oy, ox) = (r / (oh * ow), r / ow % oh, r % ow);
        let image = &x[b * h * w * c..][..h * w * c];
        for ky in 0..kh {
            let dst_row = &mut patch[ky * kw * c..][..kw * c];
            let iy = (oy * g.stride[0] + ky * g.dilation[0]) as isize - g.padding[0] as isize;
            if iy < 0 || iy >= h as isize {
                dst_row.fill(pad);
                continue;
            }
            let src_row = &image[iy as usize * w * c..][..w * c];
            let ix0 = (ox * g.stride[1]) as isize - g.padding[1] as isize;
            if g.dilation[1] == 1 && ix0 >= 0 && ix0 as usize + kw <= w {
                // The whole run of kw pixels is inside: one copy of kw·c codes.
                dst_row.copy_from_slice(&src_row[ix0 as usize * c..][..kw * c]);
                continue;
            }
            for (kx, d) in dst_row.chunks_exact_mut(c.max(1)).enumerate() {
                let ix = ix0 + (kx * g.dilation[1]) as isize;
                if ix >= 0 && ix < w as isize {
                    d.copy_from_slice(&src_row[ix as usize * c..][..c]);
                } else {
                    d.fill(pad);
                }
            }
        }
    }
}
