//! The tensor-core kernel (CUDA, f16 / bf16): `#[cube]` code only; its macro-generated launch
//! items carry no docs of their own.
#![allow(missing_docs)]

use cubecl::cmma::MmaDefinition;
use cubecl::prelude::*;

/// Two f16 / bf16 values: one 32-bit register of an MMA fragment.
type Pair<F> = Vector<F, Const<2>>;
/// Two f32 values of an accumulator fragment.
type Acc = Vector<f32, Const<2>>;

/// One `m16n8k16` MMA: `c += a · b` (A: 4 pairs, B: 2 pairs, C: 2 f32 pairs).
#[cube]
fn mma<F: Float>(a: &Array<Pair<F>>, b: &Array<Pair<F>>, c: &mut Array<Acc>) {
    let def = MmaDefinition::<F, F, f32>::new(16usize, 8usize, 16usize);
    def.execute_inplace(a, b, c);
}

/// Fused attention on tensor cores over contiguous `[bh, n, d]` f16 / bf16 tensors.
///
/// Grid `(ceil(n_q / (16·warps)), b·h, 1)`, cube `(32, warps, 1)`: each plane (warp) owns 16
/// query rows. Per tile of `keys` keys, read from global memory 8 elements (16 bytes) at a
/// time, K stays `[key][dim]` and V is stored transposed (`[dim][key]`) in shared memory, so
/// that every MMA operand register is one aligned 32-bit shared load; rows are padded by 8
/// elements, which makes those loads free of bank conflicts. `S = Q·Kᵀ` with `m16n8k16` MMAs (f32
/// accumulators), the online softmax on the accumulator registers (rows reduced over the 4
/// lanes of a quad with `plane_shuffle_xor`), the output accumulator rescaled in registers,
/// and `O += P·V` with `P` converted to `F` straight from the score accumulators.
///
/// Register layouts are PTX's `mma.m16n8k16` ones (cubecl-cuda's manual MMA; lane `= 4g + t`):
/// A (16×16) register `r` holds row `g + 8·(r % 2)`, columns `2t + 8·(r / 2) + {0, 1}`;
/// B (16×8) register `r` holds rows (k) `2t + 8r + {0, 1}`, column (n) `g`; the accumulator
/// (16×8) pair `r` holds row `g + 8r`, columns `2t + {0, 1}`. So the accumulators of two
/// neighbouring 8-key blocks of `S` are, pair for pair, the A fragment of `P` for those 16 keys.
///
/// `fast`: compile with cubecl's fast-math modes (`FastMath::all()`), off by default.
#[cube(
    launch_unchecked,
    fast_math = if fast { FastMath::all() } else { FastMath::all().difference(FastMath::all()) }
)]
#[allow(clippy::too_many_arguments)]
// `fast` is read by the `fast_math` attribute in the expanded kernel, not in the body.
#[allow(unused_variables)]
pub fn flash_attention_mma_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    out: &mut Tensor<F>,
    scale: f32,
    n_q: u32,
    n_k: u32,
    #[comptime] d: usize,
    #[comptime] warps: usize,
    #[comptime] keys: usize,
    #[comptime] fast: bool,
    #[define(F)] _dtype: StorageType,
) {
    let ld = comptime!(d + 8); // K row stride (elements)
    let ld8 = comptime!((d + 8) / 8); // the same in 8-element vectors
    let ldt = comptime!(keys + 8); // Vᵀ row stride
    let n_threads = comptime!(warps * 32);
    let d_tiles = comptime!(d / 16); // k-steps of Q·Kᵀ
    let d_blocks = comptime!(d / 8); // n-blocks of P·V
    let key_blocks = comptime!(keys / 8); // n-blocks of Q·Kᵀ
    let key_steps = comptime!(keys / 16); // k-steps of P·V
    let vec_rows = comptime!(d / 8); // 8-element vectors per row
    let loads = comptime!((keys * d / 8).div_ceil(warps * 32));

    let lane = UNIT_POS_X as usize;
    let warp = UNIT_POS_Y as usize;
    let tid = warp * 32 + lane;
    let g = lane / 4;
    let t = lane % 4;
    let nq = n_q as usize;
    let nk = n_k as usize;
    let bh = CUBE_POS_Y as usize;
    let q_base = bh * nq * d;
    let kv_base = bh * nk * d;
    let row_a = CUBE_POS_X as usize * comptime!(16 * warps) + warp * 16 + g;
    let row_b = row_a + 8;

    // Views of the inputs as 8-element vectors (K, V) and pairs (Q, out).
    let k8 = k
        .to_slice()
        .into_vectorized()
        .with_vector_size::<Const<8>>();
    let v8 = v
        .to_slice()
        .into_vectorized()
        .with_vector_size::<Const<8>>();
    let q2 = q
        .to_slice()
        .into_vectorized()
        .with_vector_size::<Const<2>>();
    let mut out2 = out
        .to_slice_mut()
        .into_vectorized()
        .with_vector_size::<Const<2>>();

    let mut ks = SharedMemory::<Vector<F, Const<8>>>::new(keys * ld8);
    let mut vt = SharedMemory::<F>::new(d * ldt);
    let ks2 = ks.to_slice().with_vector_size::<Const<2>>();
    let vt2 = vt
        .to_slice()
        .into_vectorized()
        .with_vector_size::<Const<2>>();

    // Q fragments, read once from global memory. Rows past the end read the last row (their
    // results are never written), so no branch.
    let mut ra = row_a;
    if ra >= nq {
        ra = nq - 1;
    }
    let mut rb = row_b;
    if rb >= nq {
        rb = nq - 1;
    }
    let mut qa = Array::<Pair<F>>::new(d_tiles * 4);
    #[unroll]
    for kt in 0..d_tiles {
        #[unroll]
        for r in 0..4usize {
            let row = if r % 2 == 0 { ra } else { rb };
            let col = kt * 16 + 2 * t + 8 * (r / 2);
            qa[kt * 4 + r] = q2[(q_base + row * d + col) / 2];
        }
    }

    let zero = Acc::new(0.0f32);
    let mut o = Array::<Acc>::new(d_blocks * 2);
    #[unroll]
    for i in 0..d_blocks * 2 {
        o[i] = zero;
    }
    let mut s = Array::<Acc>::new(key_blocks * 2);
    let mut a = Array::<Pair<F>>::new(4usize);
    let mut b = Array::<Pair<F>>::new(2usize);
    let mut c = Array::<Acc>::new(2usize);
    // Running max of rows a and b (identical in the 4 lanes of a quad) and this lane's part
    // of the running sums (summed over the quad at the end).
    let mut m_a = f32::new(-1.0e30);
    let mut m_b = f32::new(-1.0e30);
    let mut l_a = 0.0f32;
    let mut l_b = 0.0f32;

    let n_tiles = nk.div_ceil(keys);
    for tile in 0..n_tiles {
        let key0 = tile * keys;
        // Everyone is done with the previous K and V tiles.
        sync_cube();
        // K and V tiles, 16 bytes per load. Keys past the end read the last key: their scores
        // are masked below, so their weight is exactly 0.
        #[unroll]
        for it in 0..loads {
            let i = it * n_threads + tid;
            if i < comptime!(keys * d / 8) {
                // K: consecutive units, consecutive 16-byte pieces of a row.
                let j = i / vec_rows;
                let c8 = i % vec_rows;
                let mut key = key0 + j;
                if key >= nk {
                    key = nk - 1;
                }
                ks[j * ld8 + c8] = k8[(kv_base + key * d) / 8 + c8];
                // V: consecutive units, consecutive keys (conflict-free transposed stores).
                let jv = i % keys;
                let cv = i / keys;
                let mut key_v = key0 + jv;
                if key_v >= nk {
                    key_v = nk - 1;
                }
                let x = v8[(kv_base + key_v * d) / 8 + cv];
                #[unroll]
                for e in 0..8usize {
                    vt[(cv * 8 + e) * ldt + jv] = x[e];
                }
            }
        }
        sync_cube();

        // S = Q · Kᵀ, 8 keys at a time.
        #[unroll]
        for nb in 0..key_blocks {
            c[0] = zero;
            c[1] = zero;
            let key_row = (nb * 8 + g) * ld;
            #[unroll]
            for kt in 0..d_tiles {
                #[unroll]
                for r in 0..4usize {
                    a[r] = qa[kt * 4 + r];
                }
                #[unroll]
                for r in 0..2usize {
                    b[r] = ks2[(key_row + kt * 16 + 2 * t + 8 * r) / 2];
                }
                mma::<F>(&a, &b, &mut c);
            }
            s[nb * 2] = c[0];
            s[nb * 2 + 1] = c[1];
        }

        // Scale, mask the keys past the end, row maxima over the quad.
        let mut mx_a = f32::new(-1.0e30);
        let mut mx_b = f32::new(-1.0e30);
        #[unroll]
        for nb in 0..key_blocks {
            let mut sa = s[nb * 2];
            let mut sb = s[nb * 2 + 1];
            #[unroll]
            for e in 0..2usize {
                let key = key0 + nb * 8 + 2 * t + e;
                let mut xa = sa[e] * scale;
                let mut xb = sb[e] * scale;
                if key >= nk {
                    xa = f32::new(-1.0e30);
                    xb = f32::new(-1.0e30);
                }
                sa[e] = xa;
                sb[e] = xb;
                mx_a = f32::max(mx_a, xa);
                mx_b = f32::max(mx_b, xb);
            }
            s[nb * 2] = sa;
            s[nb * 2 + 1] = sb;
        }
        mx_a = f32::max(mx_a, plane_shuffle_xor(mx_a, 1));
        mx_a = f32::max(mx_a, plane_shuffle_xor(mx_a, 2));
        mx_b = f32::max(mx_b, plane_shuffle_xor(mx_b, 1));
        mx_b = f32::max(mx_b, plane_shuffle_xor(mx_b, 2));
        let mn_a = f32::max(m_a, mx_a);
        let mn_b = f32::max(m_b, mx_b);
        let alpha_a = f32::exp(m_a - mn_a);
        let alpha_b = f32::exp(m_b - mn_b);
        m_a = mn_a;
        m_b = mn_b;

        // P = exp(S − m) (exactly 0 for masked keys), in place.
        let mut sum_a = 0.0f32;
        let mut sum_b = 0.0f32;
        #[unroll]
        for nb in 0..key_blocks {
            let mut sa = s[nb * 2];
            let mut sb = s[nb * 2 + 1];
            #[unroll]
            for e in 0..2usize {
                let pa = f32::exp(sa[e] - mn_a);
                let pb = f32::exp(sb[e] - mn_b);
                sa[e] = pa;
                sb[e] = pb;
                sum_a += pa;
                sum_b += pb;
            }
            s[nb * 2] = sa;
            s[nb * 2 + 1] = sb;
        }
        l_a = l_a * alpha_a + sum_a;
        l_b = l_b * alpha_b + sum_b;
        let al_a = Acc::new(alpha_a);
        let al_b = Acc::new(alpha_b);
        #[unroll]
        for db in 0..d_blocks {
            o[db * 2] = o[db * 2] * al_a;
            o[db * 2 + 1] = o[db * 2 + 1] * al_b;
        }

        // O += P · V, 16 keys at a time.
        #[unroll]
        for ks_ in 0..key_steps {
            #[unroll]
            for r in 0..4usize {
                // A register r: row g + 8(r % 2), keys 2t + 8(r / 2) + {0, 1} of this step.
                a[r] = Pair::<F>::cast_from(s[(ks_ * 2 + r / 2) * 2 + r % 2]);
            }
            #[unroll]
            for db in 0..d_blocks {
                #[unroll]
                for r in 0..2usize {
                    b[r] = vt2[((db * 8 + g) * ldt + ks_ * 16 + 2 * t + 8 * r) / 2];
                }
                c[0] = o[db * 2];
                c[1] = o[db * 2 + 1];
                mma::<F>(&a, &b, &mut c);
                o[db * 2] = c[0];
                o[db * 2 + 1] = c[1];
            }
        }
    }

    l_a += plane_shuffle_xor(l_a, 1);
    l_a += plane_shuffle_xor(l_a, 2);
    l_b += plane_shuffle_xor(l_b, 1);
    l_b += plane_shuffle_xor(l_b, 2);
    let inv_a = 1.0f32 / l_a;
    let inv_b = 1.0f32 / l_b;
    let inv_a = Acc::new(inv_a);
    let inv_b = Acc::new(inv_b);
    #[unroll]
    for db in 0..d_blocks {
        let col = db * 8 + 2 * t;
        if row_a < nq {
            out2[(q_base + row_a * d + col) / 2] = Pair::<F>::cast_from(o[db * 2] * inv_a);
        }
        if row_b < nq {
            out2[(q_base + row_b * d + col) / 2] = Pair::<F>::cast_from(o[db * 2 + 1] * inv_b);
        }
    }
}
