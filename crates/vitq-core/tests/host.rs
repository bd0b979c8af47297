//! The host fast paths against burn's own ops on Flex (libm's `erff`).

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use vitq_core::host::{self, erf};
use vitq_core::synth::Rng;
use vitq_core::uniform::tensor_to_vec;

type B = Flex;

/// `erf` is within 5e-7 (about 4 ulp of 1) of libm's `erff` (through burn's `erf`) on a dense grid of [-6, 6], and odd.
#[test]
fn erf_matches_libm() {
    let xs: Vec<f32> = (-60_000..=60_000).map(|i| i as f32 * 1e-4).collect();
    let n = xs.len();
    let t = Tensor::<B, 1>::from_data(TensorData::new(xs.clone(), [n]), &Default::default());
    let want = tensor_to_vec(&t.erf()).unwrap().0;
    let mut worst = (0f32, 0f32);
    for (&x, &w) in xs.iter().zip(&want) {
        let d = (erf(x) - w).abs();
        if d > worst.0 {
            worst = (d, x);
        }
        assert_eq!(erf(-x), -erf(x), "{x}");
    }
    assert!(worst.0 <= 5e-7, "erf error {:e} at {}", worst.0, worst.1);
}

/// `host::gelu` equals burn's `gelu` within 5e-7·max(1, |x|) on contiguous, shared and transposed
/// tensors (the copying and the in-place path) and keeps the shape.
#[test]
fn gelu_matches_burn() {
    let mut rng = Rng::new(3);
    let device = Default::default();
    let data: Vec<f32> = rng.gaussian_vec(6 * 500).iter().map(|v| v * 3.0).collect();
    let x = Tensor::<B, 2>::from_data(TensorData::new(data, [6, 500]), &device);
    let check = |x: &Tensor<B, 2>, got: Tensor<B, 2>, what: &str| {
        assert_eq!(got.dims(), x.dims(), "{what}");
        let want = tensor_to_vec(&burn::tensor::activation::gelu(x.clone()))
            .unwrap()
            .0;
        let xs = tensor_to_vec(x).unwrap().0;
        let got = tensor_to_vec(&got).unwrap().0;
        for ((g, w), v) in got.iter().zip(&want).zip(&xs) {
            assert!(
                (g - w).abs() <= 5e-7 * v.abs().max(1.0),
                "{what}: gelu({v}) = {g}, not {w}"
            );
        }
    };
    // Shared buffer (x is still alive): the copying path.
    check(&x, host::gelu(x.clone()), "shared");
    // Transposed view.
    let xt = x.clone().transpose();
    check(&xt, host::gelu(xt.clone()), "transposed");
    // Sole owner: in place.
    let copy = Tensor::<B, 2>::from_data(x.to_data(), &device);
    check(&x, host::gelu(copy), "unique");
}

/// Direct convolution in f64: output and, per element, Σ|x·w| + |b| (the scale of its rounding error).
fn conv_reference(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    s: &host::ConvShape,
) -> (Vec<f64>, Vec<f64>, [usize; 2]) {
    let [n, cin, h, wd] = s.input;
    let [cout, _, kh, kw] = s.weight;
    let [oh, ow] = s.output().unwrap();
    let mut y = vec![0f64; n * cout * oh * ow];
    let mut mag = y.clone();
    for i in 0..n {
        for o in 0..cout {
            for oy in 0..oh {
                for ox in 0..ow {
                    let (mut acc, mut abs) = (b[o] as f64, b[o].abs() as f64);
                    for c in 0..cin {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * s.stride[0] + ky * s.dilation[0]) as isize
                                    - s.padding[0] as isize;
                                let ix = (ox * s.stride[1] + kx * s.dilation[1]) as isize
                                    - s.padding[1] as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let xv = x[((i * cin + c) * h + iy as usize) * wd + ix as usize];
                                let wv = w[((o * cin + c) * kh + ky) * kw + kx];
                                acc += xv as f64 * wv as f64;
                                abs += (xv as f64 * wv as f64).abs();
                            }
                        }
                    }
                    let at = ((i * cout + o) * oh + oy) * ow + ox;
                    y[at] = acc;
                    mag[at] = abs;
                }
            }
        }
    }
    (y, mag, [oh, ow])
}

/// `host::conv2d` (im2col + GEMM) equals a direct f64 convolution within 1e-5 of each output's
/// magnitude, and burn's own `conv2d`, over strides, padding, dilation, 1×1, 7×7 and patchify
/// kernels, a batch large enough to be split into two im2col groups, and a transposed (non-contiguous)
/// input; a grouped convolution falls back to burn's, and slices that do not match the shape are
/// refused.
#[test]
fn conv2d_matches_reference() {
    let mut rng = Rng::new(11);
    let device = Default::default();
    // (n, cin, h, w, cout, k, stride, padding, dilation)
    let cases = [
        (1, 3, 17, 19, 8, 3, 1, 1, 1),
        (3, 8, 15, 15, 16, 3, 2, 1, 1),
        (1, 16, 9, 9, 24, 1, 1, 0, 1),
        (2, 16, 9, 9, 24, 1, 1, 0, 1),
        (2, 16, 9, 9, 8, 1, 2, 0, 1),
        (2, 3, 32, 32, 8, 7, 2, 3, 1),
        (1, 4, 13, 13, 6, 3, 1, 2, 2),
        (2, 3, 32, 32, 16, 4, 4, 0, 1),
        (1, 2, 3, 3, 4, 5, 1, 2, 1),
        (2, 3, 17, 23, 5, 3, 3, 2, 2),
        (1, 2, 10, 10, 3, 3, 2, 4, 1),
        (13, 32, 48, 48, 4, 3, 1, 1, 1),
    ];
    for (n, cin, h, w, cout, k, stride, pad, dil) in cases {
        let what = format!("n {n} cin {cin} {h}×{w} cout {cout} k {k} s {stride} p {pad} d {dil}");
        let x = rng.gaussian_vec(n * cin * h * w);
        let wt = rng.gaussian_vec(cout * cin * k * k);
        let b = rng.gaussian_vec(cout);
        let shape = host::ConvShape {
            input: [n, cin, h, w],
            weight: [cout, cin, k, k],
            stride: [stride; 2],
            padding: [pad; 2],
            dilation: [dil; 2],
        };
        let (want, mag, [oh, ow]) = conv_reference(&x, &wt, &b, &shape);
        let (direct, out) = host::conv2d_f32(&x, &wt, Some(&b), &shape).unwrap();
        assert_eq!(out, [oh, ow], "{what}");
        let options = burn::tensor::ops::ConvOptions::new([stride; 2], [pad; 2], [dil; 2], 1);
        let xt = Tensor::<B, 4>::from_data(TensorData::new(x.clone(), [n, cin, h, w]), &device);
        let wt = Tensor::<B, 4>::from_data(TensorData::new(wt, [cout, cin, k, k]), &device);
        let bt = Tensor::<B, 1>::from_data(TensorData::new(b, [cout]), &device);
        let ours = host::conv2d(xt.clone(), wt.clone(), Some(bt.clone()), options.clone());
        let burns = burn::tensor::module::conv2d(xt, wt, Some(bt), options);
        assert_eq!(ours.dims(), [n, cout, oh, ow], "{what}");
        let ours = tensor_to_vec(&ours).unwrap().0;
        // Bit-identical to the slice kernel: the tensor entry point ran it, not burn's fallback.
        assert_eq!(ours, direct, "{what}");
        let burns = tensor_to_vec(&burns).unwrap().0;
        for (i, ((g, r), (w, m))) in ours
            .iter()
            .zip(&burns)
            .zip(want.iter().zip(&mag))
            .enumerate()
        {
            assert!(
                (*g as f64 - w).abs() <= 1e-5 * m,
                "{what}: [{i}] {g} vs f64 {w}"
            );
            assert!(
                (*r as f64 - w).abs() <= 1e-5 * m,
                "{what}: burn [{i}] {r} vs f64 {w}"
            );
        }
    }

    let shape = host::ConvShape {
        input: [1, 2, 4, 4],
        weight: [3, 2, 3, 3],
        stride: [1; 2],
        padding: [0; 2],
        dilation: [1; 2],
    };
    assert!(host::conv2d_f32(&[0.0; 31], &[0.0; 54], None, &shape).is_none());
    assert!(host::conv2d_f32(&[0.0; 32], &[0.0; 54], Some(&[0.0; 2]), &shape).is_none());
    let channels = host::ConvShape {
        weight: [3, 1, 3, 3],
        ..shape.clone()
    };
    assert_eq!(channels.output(), None);
    let big = host::ConvShape {
        weight: [3, 2, 5, 5],
        ..shape
    };
    assert_eq!(big.output(), None);

    // A transposed input view (H and W swapped) gives the convolution of the transposed image.
    let x = rng.gaussian_vec(2 * 3 * 7 * 5);
    let w = rng.gaussian_vec(4 * 3 * 3 * 3);
    let xt = Tensor::<B, 4>::from_data(TensorData::new(x, [2, 3, 7, 5]), &device).swap_dims(2, 3);
    let wt = Tensor::<B, 4>::from_data(TensorData::new(w, [4, 3, 3, 3]), &device);
    let options = burn::tensor::ops::ConvOptions::new([1; 2], [1; 2], [1; 2], 1);
    let ours = host::conv2d(xt.clone(), wt.clone(), None, options.clone());
    let burns = burn::tensor::module::conv2d(xt, wt, None, options);
    ours.into_data()
        .assert_approx_eq::<f32>(&burns.into_data(), Default::default());

    // Two groups: burn's convolution runs.
    let x = Tensor::<B, 4>::from_data(
        TensorData::new(rng.gaussian_vec(4 * 25), [1, 4, 5, 5]),
        &device,
    );
    let w = Tensor::<B, 4>::from_data(
        TensorData::new(rng.gaussian_vec(6 * 2 * 9), [6, 2, 3, 3]),
        &device,
    );
    let options = burn::tensor::ops::ConvOptions::new([1; 2], [1; 2], [1; 2], 2);
    let ours = host::conv2d(x.clone(), w.clone(), None, options.clone());
    let burns = burn::tensor::module::conv2d(x, w, None, options);
    assert_eq!(ours.dims(), [1, 6, 5, 5]);
    ours.into_data()
        .assert_approx_eq::<f32>(&burns.into_data(), Default::default());
}

/// `exp` is within 3e-7 relative of libm's `expf` on a dense grid of [-87, 88] and saturates at the
/// clamp bounds instead of returning 0 or ∞.
#[test]
fn exp_matches_libm() {
    let mut worst = (0f64, 0f32);
    for i in -870_000..=880_000 {
        let x = i as f32 * 1e-4;
        let (got, want) = (host::exp(x) as f64, (x as f64).exp());
        let rel = (got - want).abs() / want;
        if rel > worst.0 {
            worst = (rel, x);
        }
    }
    assert!(worst.0 <= 3e-7, "exp error {:e} at {}", worst.0, worst.1);
    assert!(host::exp(-1e4) > 0.0 && host::exp(-1e4) < 2e-38);
    assert!(host::exp(1e4).is_finite());
}

/// `host::attention_packed` equals the heads split out of the packed projection, `softmax(q·kᵀ·s)·v`
/// with burn's ops and the heads merged back, within 1e-5 of the output's scale: for token counts on
/// both sides of the 64-row block (1, 63, 67, 197), scores large enough to overflow a naive
/// softmax, and all-equal scores; a head count that does not divide the channels is refused.
#[test]
fn attention_packed_matches_burn() {
    let mut rng = Rng::new(5);
    let device = Default::default();
    let (heads, d) = (3, 16);
    let c = heads * d;
    for (b, n, magnitude) in [
        (2, 67, 1.0),
        (1, 1, 1.0),
        (1, 63, 1.0),
        (1, 197, 1.0),
        (2, 67, 30.0),
        (1, 67, 0.0),
    ] {
        let mut qkv: Vec<f32> = rng
            .gaussian_vec(b * n * 3 * c)
            .iter()
            .map(|v| v * magnitude)
            .collect();
        if magnitude == 0.0 {
            // q = k = 0 (all scores equal), v random.
            let v = rng.gaussian_vec(b * n * 3 * c);
            for (i, x) in qkv.iter_mut().enumerate() {
                if i % (3 * c) >= 2 * c {
                    *x = v[i];
                }
            }
        }
        let scale = 1.0 / (d as f32).sqrt();
        let t = Tensor::<B, 3>::from_data(TensorData::new(qkv.clone(), [b, n, 3 * c]), &device);
        let part = |i: usize| {
            t.clone()
                .narrow(2, i * c, c)
                .reshape([b, n, heads, d])
                .swap_dims(1, 2)
        };
        let scores = part(0).matmul(part(1).swap_dims(2, 3)).mul_scalar(scale);
        let want = burn::tensor::activation::softmax(scores, 3)
            .matmul(part(2))
            .swap_dims(1, 2)
            .reshape([b, n, c]);
        let want = tensor_to_vec(&want).unwrap().0;
        let got = host::attention_packed(&t, heads, scale).unwrap();
        assert_eq!(got.dims(), [b, n, c]);
        let got = tensor_to_vec(&got).unwrap().0;
        let top = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(g.is_finite(), "b {b} n {n} ×{magnitude}: [{i}] {g}");
            assert!(
                (g - w).abs() <= 1e-5 * top,
                "b {b} n {n} ×{magnitude}: [{i}] {g} vs {w}"
            );
        }
    }
    assert!(host::attention_packed_f32(&[0.0; 2 * 3 * 48], [1, 2, 3 * 48], 5, 1.0).is_none());
    assert!(host::attention_packed_f32(&[0.0; 10], [1, 2, 3 * 48], 3, 1.0).is_none());
}

/// `host::max_pool2d` equals burn's `max_pool2d` exactly (a max is exact) on all-negative inputs
/// (padding must never win), with and without padding, stride and dilation, on even and odd sizes;
/// a padding larger than half the window is refused by the slice kernel.
#[test]
fn max_pool2d_matches_burn() {
    let mut rng = Rng::new(9);
    let device = Default::default();
    // (n, c, h, w, k, stride, padding, dilation)
    for (n, c, h, w, k, s, p, d) in [
        (2, 3, 112, 112, 3, 2, 1, 1),
        (1, 4, 9, 7, 3, 2, 1, 1),
        (2, 2, 8, 8, 2, 2, 0, 1),
        (1, 3, 11, 10, 3, 1, 1, 2),
        (1, 1, 5, 5, 5, 1, 2, 1),
    ] {
        let data: Vec<f32> = rng
            .gaussian_vec(n * c * h * w)
            .iter()
            .map(|v| -v.abs() - 1.0)
            .collect();
        let x = Tensor::<B, 4>::from_data(TensorData::new(data, [n, c, h, w]), &device);
        let ours = host::max_pool2d(x.clone(), [k, k], [s, s], [p, p], [d, d]);
        let burns = burn::tensor::module::max_pool2d(x, [k, k], [s, s], [p, p], [d, d], false);
        assert_eq!(ours.dims(), burns.dims());
        assert_eq!(
            tensor_to_vec(&ours).unwrap().0,
            tensor_to_vec(&burns).unwrap().0,
            "{n}×{c}×{h}×{w} k {k} s {s} p {p} d {d}"
        );
    }
    let shape = host::ConvShape {
        input: [1, 1, 4, 4],
        weight: [1, 1, 2, 2],
        stride: [1; 2],
        padding: [2; 2],
        dilation: [1; 2],
    };
    assert!(host::max_pool2d_f32(&[0.0; 16], &shape).is_none());
}
