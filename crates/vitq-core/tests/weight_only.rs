//! Weight-only linears: the tile-by-tile kernel against the f64 product with the dequantized weight,
//! for every encoding and for shapes that leave a partial tile, and the layer running it.

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use vitq_core::layers::{ExecPath, QLinear};
use vitq_core::synth::Rng;
use vitq_core::uniform::tensor_to_vec;
use vitq_core::weight_only::{TiledWeight, linear};
use vitq_core::{Error, Granularity, QuantSpec, QuantizedTensor, Scheme};

type B = Flex;

/// max |a − b| / max |b|.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// `x · Wᵀ + b` in f64.
fn reference(x: &[f32], w: &[f32], bias: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    (0..m * n)
        .map(|idx| {
            let (i, j) = (idx / n, idx % n);
            let dot: f64 = (0..k)
                .map(|t| f64::from(x[i * k + t]) * f64::from(w[j * k + t]))
                .sum();
            (dot + f64::from(bias[j])) as f32
        })
        .collect()
}

fn specs() -> Vec<QuantSpec> {
    let s = |bits, scheme, g| QuantSpec::new(bits, scheme, g).unwrap();
    vec![
        s(8, Scheme::Symmetric, Granularity::PerChannel { axis: 0 }),
        s(8, Scheme::Asymmetric, Granularity::PerTensor),
        s(6, Scheme::Symmetric, Granularity::PerChannel { axis: 0 }),
        s(4, Scheme::Symmetric, Granularity::PerChannel { axis: 0 }),
        s(
            4,
            Scheme::Asymmetric,
            Granularity::PerGroup { axis: 1, size: 16 },
        ),
        s(3, Scheme::Asymmetric, Granularity::PerChannel { axis: 0 }),
        s(2, Scheme::Symmetric, Granularity::PerTensor),
        QuantSpec::nf4(true),
        s(
            4,
            Scheme::Nf4 {
                double_quant: false,
            },
            Granularity::PerBlock { size: 16 },
        ),
    ]
}

/// Every encoding, odd inner sizes (a row starts mid-byte at 4 bits), more rows than one tile plus a
/// partial tile, and 1 to 9 input rows.
#[test]
fn tiles_equal_the_dequantized_product() {
    let mut rng = Rng::new(5);
    for spec in specs() {
        for (m, n, k) in [
            (1, 70, 64),
            (9, 300, 48),
            (3, 17, 80),
            (2, 5, 33),
            (12, 7, 9),
        ] {
            let Ok(q) = QuantizedTensor::quantize(&rng.gaussian_vec(n * k), &[n, k], &spec) else {
                // Groups of 16 do not divide k = 33.
                assert!(k % 16 != 0, "{spec:?} [{n}, {k}]");
                continue;
            };
            let x = rng.gaussian_vec(m * k);
            let bias = rng.gaussian_vec(n);
            let tiled = TiledWeight::from_quantized(&q).unwrap();
            let wd = q.dequantize().unwrap();
            assert_eq!(tiled.dequantize(), wd, "{spec:?}");
            let y = linear(&x, m, &tiled, Some(&bias)).unwrap();
            let err = rel_err(&y, &reference(&x, &wd, &bias, m, n, k));
            assert!(err < 1e-5, "{spec:?} [{m}, {n}, {k}]: {err:e}");
        }
    }
}

/// At ViT shapes the tiles hold about half a byte (4 bits) or one byte (8 bits) per weight; NF4 adds
/// one scale run (12 bytes) per block of 64.
#[test]
fn tiles_keep_the_weight_small() {
    let mut rng = Rng::new(2);
    let (n, k) = (768, 768);
    let w = rng.gaussian_vec(n * k);
    let f32_bytes = (4 * n * k) as f64;
    for (spec, most) in [
        (
            QuantSpec::new(8, Scheme::Symmetric, Granularity::PerChannel { axis: 0 }).unwrap(),
            0.26,
        ),
        (
            QuantSpec::new(4, Scheme::Symmetric, Granularity::PerChannel { axis: 0 }).unwrap(),
            0.13,
        ),
        (QuantSpec::nf4(true), 0.18),
    ] {
        let q = QuantizedTensor::quantize(&w, &[n, k], &spec).unwrap();
        let ratio = TiledWeight::from_quantized(&q).unwrap().size_in_bytes() as f64 / f32_bytes;
        assert!(ratio <= most, "{spec:?}: {ratio:.3}× the f32 weight");
    }
}

/// A weight-only `QLinear` on the host backend reads its codes (the tiles) and gives the float layer's
/// output on the dequantized weight, for every leading shape.
#[test]
fn weight_only_linear_runs_the_tiles() {
    let mut rng = Rng::new(9);
    let (n, k) = (96, 40);
    let device = Default::default();
    let w = rng.gaussian_vec(n * k);
    let bias = rng.gaussian_vec(n);
    let spec = QuantSpec::new(4, Scheme::Symmetric, Granularity::PerChannel { axis: 0 }).unwrap();
    let q = QuantizedTensor::quantize(&w, &[n, k], &spec).unwrap();
    let wd = q.dequantize().unwrap();
    let mut layer = QLinear::<B>::from_torch(
        "fc",
        Tensor::from_data(TensorData::new(w, [n, k]), &device),
        Some(Tensor::from_data(
            TensorData::new(bias.clone(), [n]),
            &device,
        )),
    );
    layer.set_quantized(Some(q), None).unwrap();
    let state = layer.quant.quantized().unwrap();
    assert_eq!(state.path(), ExecPath::WeightOnly);
    assert!(state.tiled_weight().is_some());
    let x = rng.gaussian_vec(2 * 3 * k);
    let y = tensor_to_vec(&layer.forward(Tensor::<B, 3>::from_data(
        TensorData::new(x.clone(), [2, 3, k]),
        &device,
    )))
    .unwrap();
    assert!(layer.quant.take_fault().is_none());
    assert_eq!(y.1, vec![2, 3, n]);
    let err = rel_err(&y.0, &reference(&x, &wd, &bias, 6, n, k));
    assert!(err < 1e-5, "{err:e}");
}

/// Scales that change along the input features every element are not tiled (the layer keeps the
/// dequantized-weight path); wrong input and bias lengths are typed errors.
#[test]
fn unsupported_layouts_and_bad_shapes_are_errors() {
    let mut rng = Rng::new(1);
    let (n, k) = (4, 300);
    let per_input =
        QuantSpec::new(8, Scheme::Symmetric, Granularity::PerChannel { axis: 1 }).unwrap();
    let q = QuantizedTensor::quantize(&rng.gaussian_vec(n * k), &[n, k], &per_input).unwrap();
    assert!(matches!(
        TiledWeight::from_quantized(&q),
        Err(Error::Unsupported(_))
    ));
    let spec = QuantSpec::new(8, Scheme::Symmetric, Granularity::PerTensor).unwrap();
    let q = QuantizedTensor::quantize(&rng.gaussian_vec(n * k), &[n, k], &spec).unwrap();
    let t = TiledWeight::from_quantized(&q).unwrap();
    assert!(matches!(
        linear(&[0.0; 299], 1, &t, None),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        linear(&[0.0; 300], 1, &t, Some(&[0.0; 3])),
        Err(Error::ShapeMismatch { .. })
    ));
    assert_eq!(linear(&[], 0, &t, None).unwrap(), Vec::<f32>::new());
}
