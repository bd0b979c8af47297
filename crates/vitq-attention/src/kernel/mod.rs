//! The flash-attention kernel, in CubeCL (`#[cube]` code only; the launch is in the crate's
//! private `flash` module).
//!
//! One cube computes `rows` query rows of one (batch, head) pair:
//!
//! 1. The cube's Q tile (`rows × d`) is read from global memory once, converted to f32 and kept
//!    in shared memory for the whole kernel.
//! 2. For each tile of `keys` keys: the K tile is streamed into shared memory; each row's scores
//!    are computed by `threads_per_row` threads (each owns `keys / threads_per_row` keys, held
//!    in registers); the row maximum is combined through a small shared buffer; the
//!    probabilities `exp(s - m_new)` go to a `rows × keys` shared buffer while the V tile
//!    replaces the K tile; each thread rescales its slice of the output accumulator (`d /
//!    threads_per_row` f32 registers) by `exp(m_old - m_new)` and adds `P · V`.
//! 3. The accumulator is divided by the running sum and written in the input dtype.
//!
//! Keys past the end (the last tile of a token count that is not a multiple of `keys`) get a
//! score of −∞ and so weight 0; query rows past the end are computed on zeros and not
//! written. Nothing of size `n_q × n_k` is ever stored. Shared-memory rows are padded by one
//! element so that threads of a plane reading different rows hit different banks.

//!
//! On CUDA with f16 / bf16 inputs a second kernel (`flash_attention_mma_kernel`) runs the two
//! products on tensor cores: each plane (warp) owns 16 query rows, `Q·Kᵀ` and `P·V` are
//! `m16n8k16` MMAs with f32 accumulators (cubecl's manual MMA, `cmma::MmaDefinition`), and the
//! online softmax and the rescale of the output work on the accumulator registers directly.

mod fused;
mod mma;
mod tile;

pub use fused::flash_attention_kernel;
pub use mma::flash_attention_mma_kernel;
pub use tile::load_tile;

/// Launch-time description of the tiling (no data): everything the kernel is specialised on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlashTiling {
    /// Head dimension `d` (32, 64 or 128).
    pub head_dim: usize,
    /// Query rows per cube.
    pub rows: usize,
    /// Keys per streamed K/V tile.
    pub keys: usize,
    /// Threads that share one query row (divides `head_dim` and `keys`).
    pub threads_per_row: usize,
}

impl FlashTiling {
    /// Shared memory one cube uses, in bytes.
    pub fn shared_bytes(&self) -> usize {
        let ld = self.head_dim + 1;
        4 * (self.rows * ld
            + self.keys * ld
            + self.rows * self.keys
            + 2 * self.rows * self.threads_per_row)
    }

    /// Threads per cube.
    pub fn threads(&self) -> usize {
        self.rows * self.threads_per_row
    }

    /// The largest tiling for `head_dim` that fits in `max_shared` bytes of shared memory and
    /// `max_threads` threads per cube, or `None` if even the smallest does not.
    pub fn choose(head_dim: usize, max_shared: usize, max_threads: usize) -> Option<Self> {
        const ROWS: [usize; 3] = [64, 32, 16];
        const KEYS: [usize; 3] = [32, 16, 8];
        for rows in ROWS {
            for keys in KEYS {
                let t = Self {
                    head_dim,
                    rows,
                    keys,
                    threads_per_row: 4,
                };
                if t.shared_bytes() <= max_shared && t.threads() <= max_threads {
                    return Some(t);
                }
            }
        }
        None
    }
}

/// Launch-time description of the tensor-core kernel's tiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MmaTiling {
    /// Head dimension `d` (a multiple of 16).
    pub head_dim: usize,
    /// Planes (warps of 32) per cube; each owns 16 query rows.
    pub warps: usize,
    /// Keys per K/V tile (a multiple of 16).
    pub keys: usize,
}

impl MmaTiling {
    /// Query rows per cube.
    pub fn rows(&self) -> usize {
        16 * self.warps
    }

    /// Shared memory one cube uses, in bytes: the K tile (`keys × (d + 8)`) and the
    /// transposed V tile (`d × (keys + 8)`), 2-byte elements.
    pub fn shared_bytes(&self) -> usize {
        2 * (self.keys * (self.head_dim + 8) + self.head_dim * (self.keys + 8))
    }

    /// The tiling for `head_dim` if it fits in `max_shared` bytes: 4 warps (64 query rows),
    /// 64 keys per tile.
    pub fn choose(head_dim: usize, max_shared: usize) -> Option<Self> {
        let t = Self {
            head_dim,
            warps: 4,
            keys: 64,
        };
        (head_dim.is_multiple_of(16) && t.shared_bytes() <= max_shared).then_some(t)
    }
}
