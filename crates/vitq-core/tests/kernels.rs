//! The int8 GEMM fast path against its reference, and the W8A8 linear layer against float.

use proptest::prelude::*;
use vitq_core::kernels::{
    ConvGeometry, IntWeight, Kernel, conv2d_i8, gemm_i8, gemm_i8_ref, gemm_i8_with, im2col_i8,
    linear_i8,
};
use vitq_core::synth::Rng;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Random shapes, including k not a multiple of 4 or 64, partial 4-row tiles, partial 16-column
    /// blocks and several 64-column tasks, and extreme values.
    #[test]
    fn fast_gemm_equals_reference(m in 0usize..11, n in 0usize..150, k in 0usize..300, seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let mut byte = || match rng.next_u64() % 8 { 0 => -128i8, 1 => 127, _ => rng.next_u64() as i8 };
        let a: Vec<i8> = (0..m * k).map(|_| byte()).collect();
        let b: Vec<i8> = (0..n * k).map(|_| byte()).collect();
        let want = gemm_i8_ref(&a, &b, m, n, k).unwrap();
        for kernel in Kernel::ALL.into_iter().filter(|k| k.is_available()) {
            prop_assert_eq!(&gemm_i8_with(kernel, &a, &b, m, n, k).unwrap(), &want, "{:?}", kernel);
        }
    }

    /// A weight laid out once for each kernel: the codes read back unchanged and its product equals
    /// the reference on the row-major codes.
    #[test]
    fn prepacked_weight_equals_reference(m in 0usize..9, n in 0usize..80, k in 0usize..140, seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let a: Vec<i8> = (0..m * k).map(|_| rng.next_u64() as i8).collect();
        let b: Vec<i8> = (0..n * k).map(|_| rng.next_u64() as i8).collect();
        let want = gemm_i8_ref(&a, &b, m, n, k).unwrap();
        let w = IntWeight::new(b.clone(), vec![1.0; n], n, k).unwrap();
        prop_assert_eq!(w.kernel(), Kernel::best());
        for kernel in Kernel::ALL.into_iter().filter(|k| k.is_available()) {
            let w = w.clone().with_kernel(kernel).unwrap();
            prop_assert_eq!(w.kernel(), kernel);
            prop_assert_eq!(&w.codes(), &b);
            prop_assert_eq!(&w.gemm(&a, m).unwrap(), &want, "{:?}", kernel);
        }
    }

    /// The W8A8 linear layer's rescaled output, `s_x·s_w[j]·(Σ x·w − z_x·Σ w) + b[j]`, written by
    /// every kernel's blocks, equals the same formula on the reference sums (rows past one block of
    /// 256, columns past one task of 64, and `k = 0`, where the output is the bias).
    #[test]
    fn linear_i8_equals_the_formula_on_reference_sums(m in 0usize..300, n in 1usize..140, k in 0usize..40, zero in -128i32..128, seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let x: Vec<i8> = (0..m * k).map(|_| rng.next_u64() as i8).collect();
        let codes: Vec<i8> = (0..n * k).map(|_| rng.next_u64() as i8).collect();
        let scales: Vec<f32> = (0..n).map(|_| 0.01 + rng.uniform() as f32).collect();
        let bias: Vec<f32> = rng.gaussian_vec(n);
        let sums = gemm_i8_ref(&x, &codes, m, n, k).unwrap();
        let s = 0.02f32;
        let w = IntWeight::new(codes.clone(), scales.clone(), n, k).unwrap();
        let want: Vec<f32> = sums
            .iter()
            .enumerate()
            .map(|(i, &acc)| {
                let j = i % n;
                (acc - w.row_sums()[j] * zero) as f32 * (scales[j] * s) + bias[j]
            })
            .collect();
        for kernel in Kernel::ALL.into_iter().filter(|k| k.is_available()) {
            let w = w.clone().with_kernel(kernel).unwrap();
            prop_assert_eq!(&linear_i8(&x, zero, s, &w, Some(&bias), m).unwrap(), &want, "{:?}", kernel);
        }
    }

    /// The integer convolution, which gathers its patches inside the GEMM, equals `linear_i8` on
    /// the full patch matrix of `im2col_i8`, bit for bit, for every kernel: strides, padding
    /// (filled with the zero point), dilation, and more than one block of 256 output pixels.
    #[test]
    fn conv2d_i8_equals_linear_i8_on_im2col(
        batch in 1usize..4, c in 1usize..20, h in 1usize..13, w in 1usize..13,
        kernel in (1usize..4, 1usize..4), stride in (1usize..3, 1usize..3),
        padding in (0usize..3, 0usize..3), dilation in (1usize..3, 1usize..3),
        n in 1usize..70, zero in -128i32..128, seed in any::<u64>(),
    ) {
        let g = ConvGeometry {
            input: [batch, c, h, w],
            kernel: [kernel.0, kernel.1],
            stride: [stride.0, stride.1],
            padding: [padding.0, padding.1],
            dilation: [dilation.0, dilation.1],
        };
        prop_assume!(g.output().is_ok());
        let mut rng = Rng::new(seed);
        let x: Vec<i8> = (0..batch * c * h * w).map(|_| rng.next_u64() as i8).collect();
        let k = c * kernel.0 * kernel.1;
        let codes: Vec<i8> = (0..n * k).map(|_| rng.next_u64() as i8).collect();
        let scales: Vec<f32> = (0..n).map(|_| 0.01 + rng.uniform() as f32).collect();
        let bias: Vec<f32> = rng.gaussian_vec(n);
        let (cols, out) = im2col_i8(&x, &g, zero as i8).unwrap();
        let rows = cols.len() / k;
        let weight = IntWeight::new(codes, scales, n, k).unwrap();
        for kernel in Kernel::ALL.into_iter().filter(|k| k.is_available()) {
            let weight = weight.clone().with_kernel(kernel).unwrap();
            let want = linear_i8(&cols, zero, 0.02, &weight, Some(&bias), rows).unwrap();
            let got = conv2d_i8(&x, &g, zero, 0.02, &weight, Some(&bias)).unwrap();
            prop_assert_eq!(got.1, out);
            prop_assert_eq!(&got.0, &want, "{:?}", kernel);
        }
    }
}

/// A conv weight reordered for im2col gives the same codes whichever kernel it is laid out for.
#[test]
fn conv_reorder_is_the_same_for_every_layout() {
    let (n, cin, kh, kw) = (5, 3, 3, 2);
    let k = cin * kh * kw;
    let codes: Vec<i8> = (0..n * k).map(|v| (v % 251) as i8).collect();
    let mut want = vec![0i8; n * k];
    for o in 0..n {
        for ci in 0..cin {
            for y in 0..kh {
                for x in 0..kw {
                    want[o * k + (y * kw + x) * cin + ci] = codes[o * k + (ci * kh + y) * kw + x];
                }
            }
        }
    }
    for kernel in Kernel::ALL.into_iter().filter(|k| k.is_available()) {
        let w = IntWeight::new(codes.clone(), vec![0.5; n], n, k)
            .unwrap()
            .with_kernel(kernel)
            .unwrap()
            .to_hwc(cin, kh, kw)
            .unwrap();
        assert_eq!(w.kernel(), kernel);
        assert_eq!(w.codes(), want, "{kernel:?}");
        assert_eq!(
            w.row_sums(),
            IntWeight::new(want.clone(), vec![0.5; n], n, k)
                .unwrap()
                .row_sums()
        );
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
    for kernel in Kernel::ALL.into_iter().filter(|k| k.is_available()) {
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
    assert!(IntWeight::new(vec![0; 5], vec![1.0; 2], 2, 3).is_err());
    assert!(IntWeight::new(vec![0; 6], vec![1.0; 3], 2, 3).is_err());
    let w = IntWeight::from_f32(&[0.5; 6], 2, 3, 8).unwrap();
    assert!(w.gemm(&[1; 4], 2).is_err());
    assert!(linear_i8(&[1; 5], 0, 1.0, &w, None, 2).is_err());
    assert!(linear_i8(&[1; 3], 0, 1.0, &w, Some(&[0.0; 3]), 1).is_err());
    let g = ConvGeometry {
        input: [1, 1, 2, 2],
        kernel: [3, 3],
        stride: [1, 1],
        padding: [0, 0],
        dilation: [1, 1],
    };
    assert!(
        im2col_i8(&[0; 4], &g, 0).is_err(),
        "kernel larger than the input"
    );
    // The integer convolution: the same geometry, a short input, patches that do not match the
    // weight's k, and a zero point that is not an i8 code.
    let w9 = IntWeight::from_f32(&[0.5; 18], 2, 9, 8).unwrap();
    assert!(conv2d_i8(&[0; 4], &g, 0, 1.0, &w9, None).is_err());
    let g = ConvGeometry {
        kernel: [1, 1],
        ..g
    };
    assert!(conv2d_i8(&[0; 3], &g, 0, 1.0, &w9, None).is_err());
    assert!(conv2d_i8(&[0; 4], &g, 0, 1.0, &w9, None).is_err());
    let w1 = IntWeight::from_f32(&[0.5; 2], 2, 1, 8).unwrap();
    assert!(conv2d_i8(&[0; 4], &g, 0, 1.0, &w1, None).is_ok());
    assert!(conv2d_i8(&[0; 4], &g, 200, 1.0, &w1, None).is_err());
    assert!(conv2d_i8(&[0; 4], &g, 0, 1.0, &w1, Some(&[0.0; 3])).is_err());
}
