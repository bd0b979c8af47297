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
