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

use cubecl::prelude::*;

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

/// Fused attention over contiguous `[bh, n, d]` tensors (any float `F`; math in f32).
///
/// Grid: `(ceil(n_q / rows), b·h, 1)` cubes of `rows · threads_per_row` units.
/// `scale` multiplies the raw scores `q · k`.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn flash_attention_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    out: &mut Tensor<F>,
    scale: f32,
    n_q: u32,
    n_k: u32,
    #[comptime] d: usize,
    #[comptime] rows: usize,
    #[comptime] keys: usize,
    #[comptime] tpr: usize,
    #[define(F)] _dtype: StorageType,
) {
    let ld = comptime!(d + 1);
    let dims_per_thread = comptime!(d / tpr);
    let keys_per_thread = comptime!(keys / tpr);
    let n_threads = comptime!(rows * tpr);
    let q_loads = comptime!(rows * d).div_ceil(n_threads);
    let kv_loads = comptime!(keys * d).div_ceil(n_threads);

    let tid = UNIT_POS as usize;
    let r = tid / tpr;
    let t = tid % tpr;
    let nq = n_q as usize;
    let nk = n_k as usize;
    let bh = CUBE_POS_Y as usize;
    let row0 = CUBE_POS_X as usize * rows;
    let q_base = bh * nq * d;
    let kv_base = bh * nk * d;

    let mut qs = SharedMemory::<f32>::new(rows * ld);
    let mut kvs = SharedMemory::<f32>::new(keys * ld);
    let mut ps = SharedMemory::<f32>::new(rows * keys);
    let mut red_max = SharedMemory::<f32>::new(rows * tpr);
    let mut red_sum = SharedMemory::<f32>::new(rows * tpr);

    // Q tile → shared (zeros past the last row).
    #[unroll]
    for it in 0..q_loads {
        let i = it * n_threads + tid;
        if i < rows * d {
            let rr = i / d;
            let c = i % d;
            let row = row0 + rr;
            let mut x = 0.0f32;
            if row < nq {
                x = f32::cast_from(q[q_base + row * d + c]);
            }
            qs[rr * ld + c] = x;
        }
    }

    let mut m = f32::new(-1.0e30);
    let mut l = 0.0f32;
    let mut acc = Array::<f32>::new(dims_per_thread);
    #[unroll]
    for x in 0..dims_per_thread {
        acc[x] = 0.0f32;
    }
    let mut s = Array::<f32>::new(keys_per_thread);

    let n_tiles = nk.div_ceil(keys);
    for tile in 0..n_tiles {
        let key0 = tile * keys;
        // Everyone is done with the previous V tile and P.
        sync_cube();
        #[unroll]
        for it in 0..kv_loads {
            let i = it * n_threads + tid;
            if i < keys * d {
                let j = i / d;
                let c = i % d;
                let key = key0 + j;
                let mut x = 0.0f32;
                if key < nk {
                    x = f32::cast_from(k[kv_base + key * d + c]);
                }
                kvs[j * ld + c] = x;
            }
        }
        sync_cube();

        // Scores of row r against this thread's keys j = jj * tpr + t.
        let mut local_max = f32::new(-1.0e30);
        #[unroll]
        for jj in 0..keys_per_thread {
            let j = jj * tpr + t;
            let mut dot = 0.0f32;
            #[unroll]
            for c in 0..d {
                dot += qs[r * ld + c] * kvs[j * ld + c];
            }
            let mut sc = dot * scale;
            if key0 + j >= nk {
                sc = f32::new(-1.0e30);
            }
            s[jj] = sc;
            local_max = f32::max(local_max, sc);
        }
        red_max[tid] = local_max;
        sync_cube();

        // Everyone has read K: the V tile replaces it.
        #[unroll]
        for it in 0..kv_loads {
            let i = it * n_threads + tid;
            if i < keys * d {
                let j = i / d;
                let c = i % d;
                let key = key0 + j;
                let mut x = 0.0f32;
                if key < nk {
                    x = f32::cast_from(v[kv_base + key * d + c]);
                }
                kvs[j * ld + c] = x;
            }
        }

        let mut tile_max = f32::new(-1.0e30);
        #[unroll]
        for x in 0..tpr {
            tile_max = f32::max(tile_max, red_max[r * tpr + x]);
        }
        let m_new = f32::max(m, tile_max);
        let alpha = f32::exp(m - m_new);
        let mut local_sum = 0.0f32;
        #[unroll]
        for jj in 0..keys_per_thread {
            let j = jj * tpr + t;
            // exp(-1e30 - m_new) underflows to exactly 0 for padded keys.
            let p = f32::exp(s[jj] - m_new);
            ps[r * keys + j] = p;
            local_sum += p;
        }
        red_sum[tid] = local_sum;
        sync_cube();

        let mut tile_sum = 0.0f32;
        #[unroll]
        for x in 0..tpr {
            tile_sum += red_sum[r * tpr + x];
        }
        l = l * alpha + tile_sum;
        m = m_new;

        // Output dims c = x * tpr + t (interleaved: neighbouring threads, neighbouring banks).
        #[unroll]
        for x in 0..dims_per_thread {
            acc[x] *= alpha;
        }
        for j in 0..keys {
            let p = ps[r * keys + j];
            #[unroll]
            for x in 0..dims_per_thread {
                acc[x] += p * kvs[j * ld + x * tpr + t];
            }
        }
    }

    let row = row0 + r;
    if row < nq {
        let inv = 1.0f32 / l;
        #[unroll]
        for x in 0..dims_per_thread {
            out[q_base + row * d + x * tpr + t] = F::cast_from(acc[x] * inv);
        }
    }
}
