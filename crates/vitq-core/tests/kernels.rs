//! The int8 GEMM fast path against its reference, and the W8A8 linear layer against float.

use proptest::prelude::*;
use vitq_core::kernels::{Kernel, LinearI8, gemm_i8, gemm_i8_ref, gemm_i8_with};
use vitq_core::metrics::sqnr_db;
use vitq_core::synth::Rng;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Random shapes, including k not a multiple of 64 and partial 4×4 tiles, and extreme values.
    #[test]
    fn fast_gemm_equals_reference(m in 0usize..11, n in 0usize..14, k in 0usize..300, seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let mut byte = || match rng.next_u64() % 8 { 0 => -128i8, 1 => 127, _ => rng.next_u64() as i8 };
        let a: Vec<i8> = (0..m * k).map(|_| byte()).collect();
        let b: Vec<i8> = (0..n * k).map(|_| byte()).collect();
        let want = gemm_i8_ref(&a, &b, m, n, k).unwrap();
        for kernel in [Kernel::Portable, Kernel::Avx512Vnni].into_iter().filter(|k| k.is_available()) {
            prop_assert_eq!(&gemm_i8_with(kernel, &a, &b, m, n, k).unwrap(), &want, "{:?}", kernel);
        }
    }
}

#[test]
fn vit_b16_shapes_and_worst_case_values() {
    eprintln!("int8 GEMM kernel: {:?}", Kernel::best());
    // All -128: the largest magnitude sums, and the 128-offset correction at its extreme.
    let (m, n, k) = (5, 7, 768);
    let a = vec![-128i8; m * k];
    let b = vec![-128i8; n * k];
    assert!(
        gemm_i8(&a, &b, m, n, k)
            .unwrap()
            .iter()
            .all(|&c| c == 128 * 128 * 768)
    );
    let mut rng = Rng::new(3);
    let (m, n, k) = (197, 96, 768);
    let a: Vec<i8> = (0..m * k).map(|_| rng.next_u64() as i8).collect();
    let b: Vec<i8> = (0..n * k).map(|_| rng.next_u64() as i8).collect();
    let want = gemm_i8_ref(&a, &b, m, n, k).unwrap();
    for kernel in [Kernel::Portable, Kernel::Avx512Vnni]
        .into_iter()
        .filter(|k| k.is_available())
    {
        assert_eq!(
            gemm_i8_with(kernel, &a, &b, m, n, k).unwrap(),
            want,
            "{kernel:?}"
        );
    }
}

#[test]
fn bad_shapes_are_errors() {
    assert!(gemm_i8(&[0; 5], &[0; 6], 2, 2, 3).is_err());
    assert!(gemm_i8(&[0; 6], &[0; 5], 2, 2, 3).is_err());
    let l = LinearI8::from_f32(&[0.5; 6], None, 2, 3).unwrap();
    assert!(l.forward(&[1.0; 5], 2, None).is_err());
    assert!(l.forward(&[1.0, f32::NAN, 0.0], 1, None).is_err());
    assert!(LinearI8::from_f32(&[0.5; 6], Some(vec![0.0; 3]), 2, 3).is_err());
}

/// The integer layer equals the float product of its dequantized operands (up to f32 rounding of the
/// final rescale), and stays close to the unquantized float layer (SQNR of W8A8 on Gaussian data).
#[test]
fn w8a8_linear_matches_float_of_dequantized_operands() {
    let mut rng = Rng::new(8);
    let (m, d_in, d_out) = (13, 200, 37);
    let w: Vec<f32> = (0..d_out * d_in).map(|_| rng.gaussian() * 0.05).collect();
    let x: Vec<f32> = (0..m * d_in).map(|_| rng.gaussian()).collect();
    let bias: Vec<f32> = (0..d_out).map(|_| rng.gaussian()).collect();
    let layer = LinearI8::from_f32(&w, Some(bias.clone()), d_out, d_in).unwrap();
    let y = layer.forward(&x, m, None).unwrap();

    let s_x = x.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
    let inv = 1.0 / s_x;
    let xq: Vec<f64> = x
        .iter()
        .map(|v| f64::from((v * inv).round_ties_even().clamp(-128.0, 127.0)) * f64::from(s_x))
        .collect();
    let wq: Vec<f64> = (0..d_out * d_in)
        .map(|i| f64::from(layer.codes[i]) * f64::from(layer.scales[i / d_in]))
        .collect();
    let mut exact = vec![0f32; m * d_out];
    let mut float = vec![0f32; m * d_out];
    for i in 0..m {
        for j in 0..d_out {
            let dq: f64 = (0..d_in).map(|t| xq[i * d_in + t] * wq[j * d_in + t]).sum();
            exact[i * d_out + j] = (dq + f64::from(bias[j])) as f32;
            let fl: f64 = (0..d_in)
                .map(|t| f64::from(x[i * d_in + t]) * f64::from(w[j * d_in + t]))
                .sum();
            float[i * d_out + j] = (fl + f64::from(bias[j])) as f32;
        }
    }
    let max_ref = exact.iter().fold(0f32, |a, v| a.max(v.abs()));
    let err = y
        .iter()
        .zip(&exact)
        .fold(0f32, |a, (p, q)| a.max((p - q).abs()))
        / max_ref;
    assert!(
        err < 1e-5,
        "relative error against dequantized float: {err:e}"
    );
    let sqnr = sqnr_db(&float, &y);
    assert!(sqnr > 30.0, "W8A8 vs float SQNR {sqnr:.1} dB");
}
