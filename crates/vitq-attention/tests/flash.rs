//! The flash kernel against the host f64 oracle on the CubeCL backends compiled in
//! (`--features wgpu`: Vulkan, e.g. Mesa's llvmpipe on a CPU-only machine; `--features cuda`).

#![cfg(any(feature = "wgpu", feature = "cuda"))]

mod common;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use common::{gaussian, host, max_abs_score, numel, oracle, rel_err, select, tensor, tol};
use vitq_attention::{
    Error, Precision, QuantizedSpec, Strategy, attention, attention_trusted, default_scale,
};

/// Runs `strategy` on `[b, h, n_q, d]` × `[b, h, n_k, d]` inputs of `dtype` and returns
/// (relative error against the oracle on `slices`, the tier it must meet).
#[allow(clippy::too_many_arguments)]
fn check<B: Backend>(
    q_shape: [usize; 4],
    n_k: usize,
    dtype: DType,
    magnitude: f32,
    seed: u64,
    strategy: Strategy,
    slices: Option<&[usize]>,
    all_equal: bool,
) -> (f64, f64) {
    let dev = B::Device::default();
    let [b, h, _, d] = q_shape;
    let k_shape = [b, h, n_k, d];
    let mut qd = gaussian(seed, numel(q_shape), magnitude);
    if all_equal {
        qd.iter_mut().for_each(|x| *x = 0.0);
    }
    let q = tensor::<B>(qd, q_shape, dtype, &dev);
    let k = tensor::<B>(
        gaussian(seed + 1, numel(k_shape), magnitude),
        k_shape,
        dtype,
        &dev,
    );
    let v = tensor::<B>(
        gaussian(seed + 2, numel(k_shape), 1.0),
        k_shape,
        dtype,
        &dev,
    );
    // The oracle sees the inputs as the device holds them (after rounding to f16 / bf16).
    let (hq, hk, hv) = (host(q.clone()), host(k.clone()), host(v.clone()));
    let scale = default_scale(d);
    let out = attention_trusted(q, k, v, scale, None, strategy).unwrap();
    assert_eq!(out.dims(), q_shape);
    assert_eq!(out.dtype(), dtype);
    let out = host(out);
    let n_q = q_shape[2];
    let (out, hq, hk, hv, shape) = match slices {
        Some(s) => (
            select(&out, n_q, d, s),
            select(&hq, n_q, d, s),
            select(&hk, n_k, d, s),
            select(&hv, n_k, d, s),
            [1, s.len(), n_q, d],
        ),
        None => (out, hq, hk, hv, q_shape),
    };
    let want = oracle(&hq, &hk, &hv, shape, n_k, d, scale, None, None);
    let smax = max_abs_score(&hq, &hk, shape, n_k, scale);
    let tier = if dtype == DType::F32 {
        tol::f32_for_scores(smax)
    } else {
        tol::half_for_scores(smax)
    };
    (rel_err(&out, &want), tier)
}

fn device<B: Backend>() -> B::Device {
    Default::default()
}

fn assert_ok(what: &str, (e, tier): (f64, f64)) {
    assert!(e <= tier, "{what}: rel err {e:.3e} > {tier:.1e}");
    println!("{what}: rel err {e:.2e} (tier {tier:.1e})");
}

macro_rules! flash_tests {
    ($name:ident, $fusion:ty, $plain:ty, $big_batch:expr, $half_counts:expr) => {
        mod $name {
            use super::*;
            use proptest::prelude::*;
            use vitq_attention::Strategy;

            type B = $fusion;

            fn half_supported() -> Vec<DType> {
                let dev = device::<B>();
                [DType::F16, DType::BF16]
                    .into_iter()
                    .filter(|&t| {
                        let ok = B::supports_dtype(&dev, t);
                        if !ok {
                            println!("{t:?} not supported by this device: skipped");
                        }
                        ok
                    })
                    .collect()
            }

            proptest! {
                #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]

                #[test]
                fn flash_f32_matches_oracle(
                    bh in (1usize..3, 1usize..4),
                    n_q in prop_oneof![1usize..140, prop::sample::select(vec![65usize, 197, 257])],
                    n_k in prop_oneof![1usize..140, prop::sample::select(vec![65usize, 197, 257])],
                    d in prop::sample::select(vec![32usize, 64, 128]),
                    magnitude in prop::sample::select(vec![1.0f32, 1.0, 30.0]),
                    seed in any::<u64>(),
                ) {
                    let (e, tier) = check::<B>([bh.0, bh.1, n_q, d], n_k, DType::F32, magnitude, seed, Strategy::Flash, None, false);
                    prop_assert!(e <= tier, "rel err {e:.3e} > {tier:.1e}");
                }
            }

            proptest! {
                #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]

                #[test]
                fn flash_half_matches_oracle(
                    bh in (1usize..3, 1usize..4),
                    n_q in prop_oneof![1usize..140, prop::sample::select(vec![65usize, 197, 257])],
                    n_k in prop_oneof![1usize..140, prop::sample::select(vec![65usize, 197, 257])],
                    d in prop::sample::select(vec![32usize, 64, 128]),
                    magnitude in prop::sample::select(vec![1.0f32, 1.0, 20.0]),
                    which in 0usize..2,
                    seed in any::<u64>(),
                ) {
                    let dtypes = half_supported();
                    if let Some(&dtype) = dtypes.get(which % dtypes.len().max(1)) {
                        let (e, tier) = check::<B>([bh.0, bh.1, n_q, d], n_k, dtype, magnitude, seed, Strategy::Flash, None, false);
                        prop_assert!(e <= tier, "{dtype:?}: rel err {e:.3e} > {tier:.1e}");
                    }
                }
            }

            #[test]
            fn half_token_counts_and_head_dims() {
                // The tensor-core kernel on CUDA (the scalar one elsewhere): token counts of the
                // benchmarked shapes and odd ones, every head dim, large scores, all-equal scores.
                let counts: &[usize] = &$half_counts;
                for dtype in half_supported() {
                    for d in [32, 64, 128] {
                        println!("{dtype:?} d={d}: {:?} kernel", vitq_attention::flash_kernel::<B>(&device::<B>(), dtype, d));
                    }
                    for &n in counts {
                        for d in [32, 64, 128] {
                            let h = if n > 1100 { 1 } else { 2 };
                            let r = check::<B>([1, h, n, d], n, dtype, 1.0, (n + d) as u64, Strategy::Flash, None, false);
                            assert_ok(&format!("{dtype:?} n={n} d={d}"), r);
                        }
                    }
                    for d in [32, 64, 128] {
                        let r = check::<B>([2, 2, 77, d], 77, dtype, 20.0, d as u64, Strategy::Flash, None, false);
                        assert_ok(&format!("{dtype:?} large magnitude d={d}"), r);
                        let r = check::<B>([1, 2, 50, d], 83, dtype, 1.0, 1, Strategy::Flash, None, true);
                        assert_ok(&format!("{dtype:?} all-equal scores d={d}"), r);
                    }
                    let b: usize = $big_batch;
                    let last = b * 12 - 1;
                    let slices = [0, 1, 17, last / 2, last - 1, last];
                    let r = check::<B>([b, 12, 197, 64], 197, dtype, 1.0, 64, Strategy::Flash, Some(&slices), false);
                    assert_ok(&format!("{dtype:?} {b}x12x197x64"), r);
                }
            }

            #[test]
            fn token_counts_not_multiple_of_tile() {
                for (n, d) in [(65, 64), (197, 64), (257, 64), (577, 32), (1025, 128)] {
                    let r = check::<B>([1, 2, n, d], n, DType::F32, 1.0, n as u64, Strategy::Flash, None, false);
                    assert_ok(&format!("f32 n={n} d={d}"), r);
                }
            }

            #[test]
            fn four_thousand_tokens() {
                let r = check::<B>([1, 1, 4096, 32], 4096, DType::F32, 1.0, 4, Strategy::Flash, None, false);
                assert_ok("f32 n=4096 d=32", r);
            }

            #[test]
            fn vit_b16_full_batch() {
                // batch × 12 heads × 197 tokens × 64, checked on 6 of the (batch, head) slices.
                let b: usize = $big_batch;
                let last = b * 12 - 1;
                let slices = [0, 1, 17, last / 2, last - 1, last];
                let r = check::<B>([b, 12, 197, 64], 197, DType::F32, 1.0, 64, Strategy::Flash, Some(&slices), false);
                assert_ok(&format!("f32 {b}x12x197x64"), r);
            }

            #[test]
            fn overflow_and_all_equal_scores() {
                for d in [32, 64, 128] {
                    let r = check::<B>([2, 2, 77, d], 77, DType::F32, 60.0, d as u64, Strategy::Flash, None, false);
                    assert_ok(&format!("large magnitude d={d}"), r);
                    let r = check::<B>([1, 2, 50, d], 83, DType::F32, 1.0, 1, Strategy::Flash, None, true);
                    assert_ok(&format!("all-equal scores d={d}"), r);
                }
            }

            #[test]
            fn half_precision_inputs() {
                for dtype in half_supported() {
                    for d in [32, 64, 128] {
                        for n in [65, 197] {
                            let r = check::<B>([2, 3, n, d], n, dtype, 1.0, 9, Strategy::Flash, None, false);
                            assert_ok(&format!("{dtype:?} n={n} d={d}"), r);
                        }
                    }
                    let r = check::<B>([1, 2, 130, 64], 130, dtype, 20.0, 2, Strategy::Flash, None, false);
                    assert_ok(&format!("{dtype:?} large magnitude"), r);
                }
            }

            #[test]
            fn other_strategies_on_device() {
                let int8 = QuantizedSpec { pv: Precision::Int8, output: Precision::Int8 };
                for s in [
                    Strategy::Auto,
                    Strategy::Burn,
                    Strategy::Reference,
                    Strategy::Quantized(QuantizedSpec::default()),
                    Strategy::Quantized(int8),
                ] {
                    let r = check::<B>([2, 3, 97, 64], 97, DType::F32, 1.0, 3, s, None, false);
                    let (e, tier) = if matches!(s, Strategy::Quantized(_)) { (r.0, tol::INT8_VS_FLOAT) } else { r };
                    // burn's matmuls may use TF32 tensor cores on CUDA: 1e-3 for the decomposed ones.
                    // Auto is Burn for f32.
                    let tier = if matches!(s, Strategy::Reference | Strategy::Burn | Strategy::Auto) { tier.max(1e-3) } else { tier };
                    assert_ok(&format!("{s:?}"), (e, tier));
                }
            }

            #[test]
            fn without_fusion_and_non_contiguous() {
                // The plain CubeBackend (no fusion) path, on a swapped-axes (strided) input.
                type P = $plain;
                let dev = device::<P>();
                let (b, n, h, d) = (2, 37, 3, 64);
                let x = |s| tensor::<P>(gaussian(s, b * n * h * d, 1.0), [b, n, h, d], DType::F32, &dev).swap_dims(1, 2);
                let (q, k, v) = (x(1), x(2), x(3));
                let want = host(attention(q.clone(), k.clone(), v.clone(), default_scale(d), None, Strategy::Reference).unwrap());
                let got = host(attention(q, k, v, default_scale(d), None, Strategy::Flash).unwrap());
                let want: Vec<f64> = want.into_iter().map(f64::from).collect();
                assert_ok("no fusion, strided", (rel_err(&got, &want), 1e-3));
            }

            #[test]
            fn typed_errors_on_device() {
                let dev = device::<B>();
                let z = |d| Tensor::<B, 4>::zeros([1, 1, 8, d], &dev);
                let r = attention(z(48), z(48), z(48), 0.1, None, Strategy::Flash);
                assert!(matches!(r, Err(Error::UnsupportedHeadDim { d: 48, .. })), "{r:?}");
                let r = attention(z(64), z(64), z(32), 0.1, None, Strategy::Flash);
                assert!(matches!(r, Err(Error::UnsupportedHeadDim { d: 64, d_v: 32 })), "{r:?}");
                let nan = z(64) + f32::NAN;
                let r = attention(z(64), z(64), nan, 0.1, None, Strategy::Flash);
                assert!(matches!(r, Err(Error::NonFinite { tensor: "v" })), "{r:?}");
                // Auto still answers where Flash cannot (d = 48 → burn's attention).
                assert!(attention(z(48), z(48), z(48), 0.1, None, Strategy::Auto).is_ok());
            }
        }
    };
}

// Batch 8 and two half-precision token counts on wgpu: CI runs these on llvmpipe (a few
// GFLOP/s on 2 cores); on CUDA batch 64 and every benchmarked token count.
#[cfg(feature = "wgpu")]
flash_tests!(
    wgpu,
    burn::backend::Wgpu,
    burn_cubecl::CubeBackend<cubecl::wgpu::WgpuRuntime, f32, i32, u32>,
    8,
    [65, 257]
);

#[cfg(feature = "cuda")]
flash_tests!(
    cuda,
    burn::backend::Cuda,
    burn_cubecl::CubeBackend<cubecl::cuda::CudaRuntime, f32, i32, u8>,
    64,
    [1, 15, 65, 197, 257, 577, 1024, 1025, 4096]
);
