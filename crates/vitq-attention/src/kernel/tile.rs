//! The one tile loop both kernels use: global `[n, d]` rows → shared memory.
//! (The `#[cube]` macro's generated items carry no docs of their own.)
#![allow(missing_docs)]

use cubecl::prelude::*;

/// Copies rows `first .. first + rows` of the contiguous `[count, d]` matrix starting at
/// `src[base]` into `dst[row * ld + col]`, converted to `S`; rows at or past `count` are
/// written as zeros. All `n_threads` units of the cube take part (`tid` is this unit's index);
/// consecutive units read consecutive elements.
#[cube]
#[allow(clippy::too_many_arguments)]
pub fn load_tile<F: Float, S: Float>(
    src: &Tensor<F>,
    dst: &mut SharedMemory<S>,
    base: usize,
    first: usize,
    count: usize,
    tid: usize,
    #[comptime] d: usize,
    #[comptime] ld: usize,
    #[comptime] rows: usize,
    #[comptime] n_threads: usize,
) {
    let loads = comptime!((rows * d).div_ceil(n_threads));
    #[unroll]
    for it in 0..loads {
        let i = it * n_threads + tid;
        if i < rows * d {
            let r = i / d;
            let c = i % d;
            let row = first + r;
            let mut x = S::new(0.0);
            if row < count {
                x = S::cast_from(src[base + row * d + c]);
            }
            dst[r * ld + c] = x;
        }
    }
}
