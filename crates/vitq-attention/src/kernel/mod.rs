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
    /// Compile the kernel with cubecl's fast-math modes (`FastMath::all()`: `__expf`, fast
    /// division). Off by default; not yet measured (see [`MmaTiling::TUNING_VAR`]).
    pub fast_math: bool,
}

impl MmaTiling {
    /// The environment variable that overrides the default tiling, for tuning runs on a GPU:
    /// `warps,keys` or `warps,keys,fast` (e.g. `8,64,fast`), with warps in {1, 2, 4, 8} and
    /// keys in {16, 32, 64, 128}. Unset or empty: the default. A value that is malformed or
    /// does not fit the device is reported on stderr once and the default is used.
    pub const TUNING_VAR: &'static str = "VITQ_FLASH_MMA";

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
    /// 64 keys per tile, no fast math, unless [`MmaTiling::TUNING_VAR`] says otherwise.
    pub fn choose(head_dim: usize, max_shared: usize) -> Option<Self> {
        let default = Self {
            head_dim,
            warps: 4,
            keys: 64,
            fast_math: false,
        };
        let t = match std::env::var(Self::TUNING_VAR) {
            Ok(value) if !value.trim().is_empty() => {
                match Self::parse(&value, head_dim, max_shared) {
                    Ok(t) => t,
                    Err(why) => {
                        static WARNED: std::sync::Once = std::sync::Once::new();
                        WARNED.call_once(|| {
                            eprintln!(
                                "vitq-attention: ignoring {}={value}: {why}",
                                Self::TUNING_VAR
                            )
                        });
                        default
                    }
                }
            }
            _ => default,
        };
        (head_dim.is_multiple_of(16) && t.shared_bytes() <= max_shared).then_some(t)
    }

    /// Parses a [`MmaTiling::TUNING_VAR`] value for `head_dim`.
    pub fn parse(value: &str, head_dim: usize, max_shared: usize) -> Result<Self, String> {
        let parts: Vec<&str> = value.split(',').map(str::trim).collect();
        let number = |i: usize, allowed: &[usize]| -> Result<usize, String> {
            parts
                .get(i)
                .and_then(|p| p.parse().ok())
                .filter(|n| allowed.contains(n))
                .ok_or_else(|| {
                    "expected `warps,keys[,fast]`, warps in {1, 2, 4, 8}, keys in {16, 32, 64, 128}"
                        .to_string()
                })
        };
        let fast_math = match parts.get(2) {
            None => false,
            Some(&"fast") => true,
            Some(other) => return Err(format!("third field `{other}` is not `fast`")),
        };
        if parts.len() > 3 {
            return Err("more than three fields".into());
        }
        let t = Self {
            head_dim,
            warps: number(0, &[1, 2, 4, 8])?,
            keys: number(1, &[16, 32, 64, 128])?,
            fast_math,
        };
        if t.shared_bytes() > max_shared {
            return Err(format!(
                "{} bytes of shared memory at head_dim {head_dim}, over the device's {max_shared}",
                t.shared_bytes()
            ));
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::MmaTiling;

    #[test]
    fn tuning_values_parse_or_say_why_not() {
        let t = MmaTiling::parse("8, 32,fast", 64, 48 * 1024).unwrap();
        assert_eq!((t.warps, t.keys, t.fast_math, t.rows()), (8, 32, true, 128));
        let t = MmaTiling::parse("2,128", 64, 48 * 1024).unwrap();
        assert_eq!((t.warps, t.keys, t.fast_math), (2, 128, false));
        for bad in ["", "4", "3,64", "4,48", "4,64,slow", "4,64,fast,x", "x,64"] {
            assert!(MmaTiling::parse(bad, 64, 48 * 1024).is_err(), "{bad:?}");
        }
        // d = 128 with 128 keys needs 69,632 bytes of shared memory.
        let e = MmaTiling::parse("4,128", 128, 48 * 1024).unwrap_err();
        assert!(e.contains("69632"), "{e}");
    }
}
