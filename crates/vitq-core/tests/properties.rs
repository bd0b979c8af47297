//! Property tests of the quantizers, the burn-tensor path against the reference, and packing.

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use proptest::prelude::*;
use vitq_core::pack;
use vitq_core::uniform::{self, QuantParams};
use vitq_core::{BitWidth, Granularity, Layout, QuantSpec, QuantizedTensor, Scheme};

fn shape3() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..=7, 3)
}

fn granularity_for(shape: Vec<usize>) -> impl Strategy<Value = Granularity> {
    let rank = shape.len();
    let divisors = move |axis: usize| -> Vec<usize> {
        (1..=shape[axis])
            .filter(|d| shape[axis].is_multiple_of(*d))
            .collect()
    };
    let groups: Vec<Granularity> = (0..rank)
        .flat_map(|axis| {
            divisors(axis)
                .into_iter()
                .map(move |size| Granularity::PerGroup { axis, size })
        })
        .collect();
    prop_oneof![
        Just(Granularity::PerTensor),
        (0..rank).prop_map(|axis| Granularity::PerChannel { axis }),
        prop::sample::select(groups),
        (1usize..=70).prop_map(|size| Granularity::PerBlock { size }),
    ]
}

/// (shape, data, spec): data has a random magnitude and sometimes exact zeros.
fn case() -> impl Strategy<Value = (Vec<usize>, Vec<f32>, QuantSpec)> {
    shape3()
        .prop_flat_map(|shape| {
            let n: usize = shape.iter().product();
            (
                Just(shape.clone()),
                prop::collection::vec(prop_oneof![4 => -1.0f32..1.0, 1 => Just(0.0f32)], n),
                -6i32..6,
                granularity_for(shape),
                2u32..=8,
                prop::bool::ANY,
            )
        })
        .prop_map(|(shape, data, exp, granularity, bits, sym)| {
            let scale = 10f32.powi(exp);
            let data = data.into_iter().map(|v| v * scale).collect();
            let scheme = if sym {
                Scheme::Symmetric
            } else {
                Scheme::Asymmetric
            };
            (
                shape,
                data,
                QuantSpec::new(bits, scheme, granularity).unwrap(),
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// |x - deq(q(x))| ≤ s/2 for every x inside its slice's clipping range.
    #[test]
    fn round_trip_error_is_at_most_half_a_step((shape, data, spec) in case()) {
        let p = QuantParams::calibrate(&data, &shape, &spec).unwrap();
        let codes = uniform::quantize_ref(&data, &p).unwrap();
        let back = uniform::dequantize_ref(&codes, &p).unwrap();
        let layout = p.layout().unwrap();
        let (qmin, qmax) = spec.qrange();
        for (i, (&x, &y)) in data.iter().zip(&back).enumerate() {
            let k = layout.slice_of(i);
            let (s, z) = (p.scales[k], p.zero_points[k]);
            let (lo, hi) = ((qmin - z) as f32 * s, (qmax - z) as f32 * s);
            if x >= lo && x <= hi {
                let tol = 0.5 * s * (1.0 + 1e-5) + 4.0 * f32::EPSILON * x.abs();
                prop_assert!((x - y).abs() <= tol, "x={x} y={y} s={s} z={z}");
            }
        }
    }

    /// quantize ∘ dequantize ∘ quantize = quantize, and the codes stay in range.
    #[test]
    fn quantization_is_idempotent_and_in_range((shape, data, spec) in case()) {
        let p = QuantParams::calibrate(&data, &shape, &spec).unwrap();
        let codes = uniform::quantize_ref(&data, &p).unwrap();
        let back = uniform::dequantize_ref(&codes, &p).unwrap();
        prop_assert_eq!(&uniform::quantize_ref(&back, &p).unwrap(), &codes);
        let b = spec.bits.get();
        let (lo, hi) = match spec.scheme {
            Scheme::Symmetric => (-(1 << (b - 1)), (1 << (b - 1)) - 1),
            _ => (0, (1 << b) - 1),
        };
        prop_assert!(codes.iter().all(|c| (lo..=hi).contains(c)));
    }

    /// Zero is exactly representable: code 0 (symmetric) or the zero point (asymmetric), and it
    /// dequantizes to exactly 0.
    #[test]
    fn zero_maps_exactly((shape, data, spec) in case()) {
        let p = QuantParams::calibrate(&data, &shape, &spec).unwrap();
        let codes = uniform::quantize_ref(&data, &p).unwrap();
        let back = uniform::dequantize_ref(&codes, &p).unwrap();
        let layout = p.layout().unwrap();
        for (i, &x) in data.iter().enumerate() {
            if x == 0.0 {
                let z = p.zero_points[layout.slice_of(i)];
                if spec.scheme == Scheme::Symmetric { prop_assert_eq!(codes[i], 0); }
                prop_assert_eq!(codes[i], z);
                prop_assert_eq!(back[i], 0.0);
            }
        }
    }

    /// One scale per slice, laid out in the granularity's scale shape.
    #[test]
    fn scale_shape_matches_granularity((shape, data, spec) in case()) {
        let p = QuantParams::calibrate(&data, &shape, &spec).unwrap();
        let layout = Layout::new(&shape, spec.granularity).unwrap();
        let expected: Vec<usize> = match spec.granularity {
            Granularity::PerTensor => vec![1],
            Granularity::PerChannel { axis } => vec![shape[axis]],
            Granularity::PerGroup { axis, size } => {
                let mut s = shape.clone();
                s[axis] /= size;
                s
            }
            Granularity::PerBlock { size } => vec![data.len().div_ceil(size)],
            _ => unreachable!(),
        };
        prop_assert_eq!(&layout.scale_shape, &expected);
        prop_assert_eq!(p.scales.len(), expected.iter().product::<usize>());
        prop_assert_eq!(p.zero_points.len(), p.scales.len());
    }

    /// The burn-tensor quantizer gives exactly the reference codes and dequantized values.
    #[test]
    fn tensor_path_matches_reference((shape, data, spec) in case()) {
        let device = Default::default();
        let p = QuantParams::calibrate(&data, &shape, &spec).unwrap();
        let dims: [usize; 3] = shape.clone().try_into().unwrap();
        let x = Tensor::<Flex, 3>::from_data(TensorData::new(data.clone(), dims), &device);
        let codes = uniform::quantize_tensor(x, &p).unwrap();
        let got: Vec<i32> = codes.to_data().convert::<i32>().into_vec().unwrap();
        let want = uniform::quantize_ref(&data, &p).unwrap();
        prop_assert_eq!(&got, &want);
        let back: Vec<f32> = uniform::dequantize_tensor(codes, &p).unwrap().into_data().into_vec().unwrap();
        prop_assert_eq!(back, uniform::dequantize_ref(&want, &p).unwrap());
    }

    /// QuantizedTensor packs and unpacks the codes losslessly.
    #[test]
    fn quantized_tensor_round_trips_codes((shape, data, spec) in case()) {
        let q = QuantizedTensor::quantize(&data, &shape, &spec).unwrap();
        let p = QuantParams::calibrate(&data, &shape, &spec).unwrap();
        prop_assert_eq!(q.codes().unwrap(), uniform::quantize_ref(&data, &p).unwrap());
        prop_assert_eq!(q.packed().len(), pack::packed_len(data.len(), spec.bits));
    }

    /// Packing is lossless for every width and length, and the fast path equals the bit-by-bit
    /// reference.
    #[test]
    fn packing_is_lossless(bits in 2u32..=8, codes in prop::collection::vec(any::<u8>(), 0..600)) {
        let b = BitWidth::new(bits).unwrap();
        let codes: Vec<u8> = codes.into_iter().map(|c| c & ((1u16 << bits) - 1) as u8).collect();
        let packed = pack::pack(&codes, b).unwrap();
        prop_assert_eq!(&packed, &pack::pack_ref(&codes, b).unwrap());
        prop_assert_eq!(packed.len(), (codes.len() * bits as usize).div_ceil(8));
        prop_assert_eq!(&pack::unpack(&packed, codes.len(), b).unwrap(), &codes);
        prop_assert_eq!(&pack::unpack_ref(&packed, codes.len(), b).unwrap(), &codes);
    }
}

/// Every length 0..=64 at every width, exhaustively (odd lengths included).
#[test]
fn packing_all_small_lengths() {
    let mut rng = vitq_core::synth::Rng::new(5);
    for bits in 2..=8 {
        let b = BitWidth::new(bits).unwrap();
        for n in 0..=64 {
            let codes: Vec<u8> = (0..n)
                .map(|_| (rng.next_u64() % (1 << bits)) as u8)
                .collect();
            let packed = pack::pack(&codes, b).unwrap();
            assert_eq!(
                pack::unpack(&packed, n, b).unwrap(),
                codes,
                "bits {bits} n {n}"
            );
        }
    }
}

#[test]
fn bad_input_is_a_typed_error_not_a_panic() {
    use vitq_core::Error;
    let spec = QuantSpec::new(8, Scheme::Symmetric, Granularity::PerTensor).unwrap();
    let e = QuantizedTensor::quantize(&[1.0, f32::NAN], &[2], &spec).unwrap_err();
    assert!(matches!(e, Error::NonFinite { index: 1, .. }), "{e}");
    let e = QuantizedTensor::quantize(&[], &[0, 3], &spec).unwrap_err();
    assert!(matches!(e, Error::Empty { .. }), "{e}");
    let e = QuantizedTensor::quantize(&[1.0; 3], &[4], &spec).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    let g = QuantSpec::new(
        4,
        Scheme::Symmetric,
        Granularity::PerGroup { axis: 1, size: 5 },
    )
    .unwrap();
    let e = QuantizedTensor::quantize(&[1.0; 12], &[2, 6], &g).unwrap_err();
    assert!(matches!(e, Error::Granularity { .. }), "{e}");
    assert!(e.to_string().contains("group size 5"), "{e}");
    assert!(matches!(
        QuantSpec::new(9, Scheme::Symmetric, Granularity::PerTensor),
        Err(Error::InvalidBits { bits: 9 })
    ));
    assert!(matches!(
        QuantSpec::new(1, Scheme::Asymmetric, Granularity::PerTensor),
        Err(Error::InvalidBits { bits: 1 })
    ));
    // Zero-range data: all codes at the zero point, exact reconstruction.
    for scheme in [Scheme::Symmetric, Scheme::Asymmetric] {
        let spec = QuantSpec::new(4, scheme, Granularity::PerChannel { axis: 0 }).unwrap();
        let q = QuantizedTensor::quantize(&[0.0, 0.0, 3.0, 3.0], &[2, 2], &spec).unwrap();
        assert_eq!(q.dequantize().unwrap()[..2], [0.0, 0.0]);
        let back = q.dequantize().unwrap();
        assert!(
            (back[2] - 3.0).abs() < 1e-6 && (back[3] - 3.0).abs() < 1e-6,
            "{back:?}"
        );
    }
    // Tensor of another shape than the parameters.
    let p = QuantParams::calibrate(&[1.0; 6], &[2, 3], &spec).unwrap();
    let x = Tensor::<Flex, 2>::zeros([3, 2], &Default::default());
    assert!(matches!(
        uniform::quantize_tensor(x, &p),
        Err(Error::ShapeMismatch { .. })
    ));
}
