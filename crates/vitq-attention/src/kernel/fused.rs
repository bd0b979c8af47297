//! The `#[cube]` function (its macro-generated launch items carry no docs of their own).
#![allow(missing_docs)]

use cubecl::prelude::*;

use super::load_tile;

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
    load_tile::<F, f32>(q, &mut qs, q_base, row0, nq, tid, d, ld, rows, n_threads);

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
        load_tile::<F, f32>(k, &mut kvs, kv_base, key0, nk, tid, d, ld, keys, n_threads);
        sync_cube();

        // Scores of row r against this thread's keys j = jj * tpr + t; each q element read
        // from shared memory once per tile and used for all of the thread's keys.
        #[unroll]
        for jj in 0..keys_per_thread {
            s[jj] = 0.0f32;
        }
        #[unroll]
        for c in 0..d {
            let qv = qs[r * ld + c];
            #[unroll]
            for jj in 0..keys_per_thread {
                s[jj] += qv * kvs[(jj * tpr + t) * ld + c];
            }
        }
        let mut local_max = f32::new(-1.0e30);
        #[unroll]
        for jj in 0..keys_per_thread {
            let j = jj * tpr + t;
            let mut sc = s[jj] * scale;
            if key0 + j >= nk {
                sc = f32::new(-1.0e30);
            }
            s[jj] = sc;
            local_max = f32::max(local_max, sc);
        }
        red_max[tid] = local_max;
        sync_cube();

        // Everyone has read K: the V tile replaces it.
        load_tile::<F, f32>(v, &mut kvs, kv_base, key0, nk, tid, d, ld, keys, n_threads);

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
