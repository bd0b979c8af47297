//! Reference, Quantized, Burn and Auto strategies on the default CPU backend (Flex), against
//! the host f64 oracle; typed errors for bad input.

mod common;

use burn::backend::Flex;
use burn::tensor::{Bool, DType, Tensor, TensorData};
use common::{gaussian, host, max_abs_score, numel, oracle, rel_err, tensor, tol};
use proptest::prelude::*;
use vitq_attention::{
    Error, Precision, QuantizedSpec, Strategy, attention, attention_trusted, default_scale,
    quantize_per_token, quantized_pv,
};

type B = Flex;

/// Int8 Q·Kᵀ, the rest in f32 (the default spec).
const QK8: Strategy = Strategy::Quantized(QuantizedSpec {
    pv: Precision::F32,
    output: Precision::F32,
});

struct Case {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    q_shape: [usize; 4],
    k_shape: [usize; 4],
}

fn case(b: usize, h: usize, n_q: usize, n_k: usize, d: usize, magnitude: f32, seed: u64) -> Case {
    let q_shape = [b, h, n_q, d];
    let k_shape = [b, h, n_k, d];
    Case {
        q: gaussian(seed, numel(q_shape), magnitude),
        k: gaussian(seed + 1, numel(k_shape), magnitude),
        v: gaussian(seed + 2, numel(k_shape), 1.0),
        q_shape,
        k_shape,
    }
}

fn run(c: &Case, strategy: Strategy, mask: Option<Tensor<B, 4, Bool>>) -> Vec<f32> {
    let dev = Default::default();
    let q = tensor::<B>(c.q.clone(), c.q_shape, DType::F32, &dev);
    let k = tensor::<B>(c.k.clone(), c.k_shape, DType::F32, &dev);
    let v = tensor::<B>(c.v.clone(), c.k_shape, DType::F32, &dev);
    let out = attention(q, k, v, default_scale(c.q_shape[3]), mask, strategy).unwrap();
    assert_eq!(out.dims(), c.q_shape);
    host(out)
}

fn score_max(c: &Case) -> f64 {
    max_abs_score(
        &c.q,
        &c.k,
        c.q_shape,
        c.k_shape[2],
        default_scale(c.q_shape[3]),
    )
}

fn expected(c: &Case) -> Vec<f64> {
    let d = c.q_shape[3];
    oracle(
        &c.q,
        &c.k,
        &c.v,
        c.q_shape,
        c.k_shape[2],
        d,
        default_scale(d),
        None,
        None,
    )
}

/// Host model of the Quantized strategy: per-token int8 Q and K, exact integer dot products.
fn quantized_oracle(c: &Case) -> Vec<f64> {
    let d = c.q_shape[3];
    let quant = |x: &[f32]| -> Vec<f32> {
        x.chunks(d)
            .flat_map(|row| {
                let amax = row.iter().fold(0f32, |m, &v| m.max(v.abs()));
                let s = (amax / 127.0).max(f32::EPSILON);
                row.iter()
                    .map(move |&v| (v / s).round_ties_even().clamp(-127.0, 127.0) * s)
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let (q, k) = (quant(&c.q), quant(&c.k));
    oracle(
        &q,
        &k,
        &c.v,
        c.q_shape,
        c.k_shape[2],
        d,
        default_scale(d),
        None,
        None,
    )
}

/// Int8 Q·Kᵀ, 8-bit P·V and an int8 output.
const ALL8: Strategy = Strategy::Quantized(QuantizedSpec {
    pv: Precision::Int8,
    output: Precision::Int8,
});

/// Host model of [`quantized_pv`]: p `[bh, n_q, n_k]`, v `[bh, n_k, d]`; codes and scales in
/// f32 as the crate computes them, the sums over keys in exact i64, one rescale in f32.
fn pv_host_model(p: &[f32], v: &[f32], bh: usize, n_q: usize, n_k: usize, d: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(bh * n_q * d);
    for sl in 0..bh {
        let vs = &v[sl * n_k * d..][..n_k * d];
        let s_v: Vec<f32> = (0..d)
            .map(|j| {
                let amax = (0..n_k).fold(0f32, |m, k| m.max(vs[k * d + j].abs()));
                (amax / 127.0).max(f32::EPSILON)
            })
            .collect();
        let v_codes: Vec<i64> = (0..n_k * d)
            .map(|i| (vs[i] / s_v[i % d]).round_ties_even().clamp(-127.0, 127.0) as i64)
            .collect();
        for i in 0..n_q {
            let row = &p[(sl * n_q + i) * n_k..][..n_k];
            let s_p = (row.iter().fold(0f32, |m, &x| m.max(x)) / 255.0).max(f32::EPSILON);
            let p_codes: Vec<i64> = row
                .iter()
                .map(|&x| (x / s_p).round_ties_even().clamp(0.0, 255.0) as i64)
                .collect();
            for (j, &sv) in s_v.iter().enumerate() {
                let sum: i64 = (0..n_k).map(|k| p_codes[k] * v_codes[k * d + j]).sum();
                out.push(f64::from(sum as f32 * s_p * sv));
            }
        }
    }
    out
}

/// Softmax rows of random scores (`peak` sets how peaked), `[rows, n_k]`; every fifth row has
/// its second half masked to exact zeros.
fn random_probs(rows: usize, n_k: usize, peak: f32, seed: u64) -> Vec<f32> {
    let scores = gaussian(seed, rows * n_k, peak);
    scores
        .chunks(n_k)
        .enumerate()
        .flat_map(|(r, row)| {
            let live = if r % 5 == 4 { n_k.div_ceil(2) } else { n_k };
            let m = row[..live].iter().fold(f32::MIN, |m, &x| m.max(x));
            let e: Vec<f32> = (0..n_k)
                .map(|j| if j < live { (row[j] - m).exp() } else { 0.0 })
                .collect();
            let sum: f32 = e.iter().sum();
            e.into_iter().map(move |x| x / sum)
        })
        .collect()
}

/// Per-token symmetric int8 of a host buffer with rows of `d`, as [`quantize_per_token`] does.
fn per_token_host(x: &[f32], d: usize) -> Vec<f64> {
    x.chunks(d)
        .flat_map(|row| {
            let s = (row.iter().fold(0f32, |m, &v| m.max(v.abs())) / 127.0).max(f32::EPSILON);
            row.iter()
                .map(move |&v| f64::from((v / s).round_ties_even().clamp(-127.0, 127.0) * s))
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn reference_matches_oracle(
        bh in (1usize..4, 1usize..4),
        n_q in 1usize..80,
        n_k in 1usize..80,
        d in prop::sample::select(vec![8usize, 32, 64, 128]),
        magnitude in prop::sample::select(vec![1.0f32, 40.0]),
        seed in any::<u64>(),
    ) {
        let c = case(bh.0, bh.1, n_q, n_k, d, magnitude, seed);
        let e = rel_err(&run(&c, Strategy::Reference, None), &expected(&c));
        let t = tol::f32_for_scores(score_max(&c));
        prop_assert!(e <= t, "rel err {e} > {t}");
    }

    #[test]
    fn burn_and_auto_match_oracle(
        n_q in 1usize..80,
        n_k in 1usize..80,
        d in prop::sample::select(vec![32usize, 64]),
        seed in any::<u64>(),
    ) {
        let c = case(2, 3, n_q, n_k, d, 1.0, seed);
        for s in [Strategy::Burn, Strategy::Auto] {
            let e = rel_err(&run(&c, s, None), &expected(&c));
            prop_assert!(e <= tol::F32, "{s:?}: rel err {e}");
        }
    }

    #[test]
    fn quantized_matches_its_host_model_and_is_close_to_float(
        n_q in 1usize..70,
        n_k in 1usize..70,
        d in prop::sample::select(vec![32usize, 64, 128]),
        seed in any::<u64>(),
    ) {
        let c = case(1, 2, n_q, n_k, d, 1.0, seed);
        let out = run(&c, QK8, None);
        let e = rel_err(&out, &quantized_oracle(&c));
        prop_assert!(e <= tol::F32, "vs int8 host model: rel err {e}");
        let e = rel_err(&out, &expected(&c));
        prop_assert!(e <= tol::INT8_VS_FLOAT, "vs float oracle: rel err {e}");
    }

    /// The 8-bit P·V against its host model: bit for bit up to 518 keys, where every integer
    /// sum is below 2²⁴; past that within the f32 tier.
    #[test]
    fn quantized_pv_matches_its_host_model(
        n_q in 1usize..40,
        n_k in prop::sample::select(vec![1usize, 7, 64, 197, 518, 1100]),
        d in prop::sample::select(vec![32usize, 64]),
        peak in prop::sample::select(vec![0.5f32, 4.0]),
        seed in any::<u64>(),
    ) {
        let p = random_probs(2 * n_q, n_k, peak, seed);
        let v = gaussian(seed + 1, 2 * n_k * d, 1.0);
        let dev = Default::default();
        let out = quantized_pv(
            tensor::<B>(p.clone(), [1, 2, n_q, n_k], DType::F32, &dev),
            tensor::<B>(v.clone(), [1, 2, n_k, d], DType::F32, &dev),
        );
        prop_assert_eq!(out.dims(), [1, 2, n_q, d]);
        let (got, want) = (host(out), pv_host_model(&p, &v, 2, n_q, n_k, d));
        if n_k <= 518 {
            prop_assert!(got.iter().zip(&want).all(|(&a, &b)| f64::from(a) == b));
        }
        let e = rel_err(&got, &want);
        prop_assert!(e <= tol::F32, "rel err {e}");
    }
}

/// `Strategy::Quantized` with 8-bit P·V is [`quantized_pv`] of its own probabilities (read
/// back through V = identity, which `P·I` returns exactly), and an int8 output is the per-token
/// quantization of that; both stay close to the float attention.
#[test]
fn quantized_spec_stages_compose() {
    let (n_q, n_k, d) = (33, 45, 64);
    let c = case(1, 2, n_q, n_k, d, 1.0, 21);
    let dev = Default::default();
    let input = |x: &[f32], shape| tensor::<B>(x.to_vec(), shape, DType::F32, &dev);
    let eye: Vec<f32> = (0..2 * n_k * n_k)
        .map(|i| f32::from(u8::from(i % n_k == (i / n_k) % n_k)))
        .collect();
    let attend = |v: Tensor<B, 4>, s| {
        let (q, k) = (input(&c.q, c.q_shape), input(&c.k, c.k_shape));
        attention(q, k, v, default_scale(d), None, s).unwrap()
    };
    let probs = attend(input(&eye, [1, 2, n_k, n_k]), QK8);
    let pv8 = Strategy::Quantized(QuantizedSpec {
        pv: Precision::Int8,
        output: Precision::F32,
    });
    let got = host(attend(input(&c.v, c.k_shape), pv8));
    let want = host(quantized_pv(probs, input(&c.v, c.k_shape)));
    assert_eq!(got, want);
    let float_err = rel_err(&got, &expected(&c));
    assert!(
        float_err <= tol::INT8_VS_FLOAT,
        "8-bit P·V vs float: {float_err}"
    );
    let all8 = host(attend(input(&c.v, c.k_shape), ALL8));
    let e = rel_err(&all8, &per_token_host(&got, d));
    assert!(e <= tol::F32, "int8 output vs its host model: {e}");
    let float_err8 = rel_err(&all8, &expected(&c));
    assert!(
        float_err8 <= tol::INT8_VS_FLOAT,
        "all int8 vs float: {float_err8}"
    );
    eprintln!(
        "relative error vs float: int8 QK {:.2e}, + 8-bit P·V {float_err:.2e}, + int8 output \
         {float_err8:.2e}",
        rel_err(&run(&c, QK8, None), &expected(&c))
    );
}

#[test]
fn vit_b16_shape_reference() {
    // ViT-B/16: 197 tokens, 12 heads of 64; batch 2 here to keep the debug build quick.
    let c = case(2, 12, 197, 197, 64, 1.0, 7);
    let e = rel_err(&run(&c, Strategy::Reference, None), &expected(&c));
    assert!(e <= tol::F32, "{e}");
}

#[test]
fn softmax_overflow_is_safe() {
    // Scores of order 1e4: exp would overflow without the max subtracted.
    let c = case(1, 2, 33, 47, 64, 100.0, 3);
    for s in [Strategy::Reference, Strategy::Burn, QK8] {
        let out = run(&c, s, None);
        assert!(out.iter().all(|x| x.is_finite()), "{s:?}");
    }
    let e = rel_err(&run(&c, Strategy::Reference, None), &expected(&c));
    assert!(e <= tol::f32_for_scores(score_max(&c)), "{e}");
}

#[test]
fn all_equal_scores_average_v() {
    let mut c = case(1, 1, 5, 9, 32, 1.0, 11);
    c.q.iter_mut().for_each(|x| *x = 0.0);
    let mean: Vec<f64> = (0..32)
        .map(|j| (0..9).map(|i| f64::from(c.v[i * 32 + j])).sum::<f64>() / 9.0)
        .collect();
    for s in [Strategy::Reference, QK8, Strategy::Burn] {
        let out = run(&c, s, None);
        for row in out.chunks(32) {
            assert!(rel_err(row, &mean) <= tol::F32, "{s:?}");
        }
    }
}

#[test]
fn mask_and_fully_masked_rows() {
    let c = case(2, 2, 6, 10, 32, 1.0, 5);
    // Key j is masked for row i when j > i + 2; row 5 of every slice fully masked.
    let rule = |_bh: usize, i: usize, j: usize| j > i + 2 || i == 5;
    let bits: Vec<bool> = (0..4)
        .flat_map(|bh| (0..6).flat_map(move |i| (0..10).map(move |j| rule(bh, i, j))))
        .collect();
    let dev = Default::default();
    let mask = Tensor::<B, 4, Bool>::from_data(TensorData::new(bits, [2, 2, 6, 10]), &dev);
    let want = oracle(
        &c.q,
        &c.k,
        &c.v,
        c.q_shape,
        10,
        32,
        default_scale(32),
        Some(&rule),
        None,
    );
    for s in [Strategy::Reference, Strategy::Burn, Strategy::Auto] {
        let got = run(&c, s, Some(mask.clone()));
        assert!(rel_err(&got, &want) <= tol::F32, "{s:?}");
    }
    // With 8-bit P·V and output, fully masked rows still give exact zeros.
    let got = run(&c, ALL8, Some(mask.clone()));
    assert!(rel_err(&got, &want) <= tol::INT8_VS_FLOAT);
    for bh in 0..4 {
        assert!(got[(bh * 6 + 5) * 32..][..32].iter().all(|&x| x == 0.0));
    }
    // A [1, 1, n_q, n_k] mask broadcasts over batch and heads.
    let small = mask.clone().slice([0..1, 0..1, 0..6, 0..10]);
    let got = run(&c, Strategy::Reference, Some(small));
    assert!(rel_err(&got, &want) <= tol::F32);
}

#[test]
fn half_inputs_on_cpu() {
    let c = case(1, 2, 20, 20, 64, 1.0, 9);
    let dev = Default::default();
    for dtype in [DType::F16, DType::BF16] {
        let q = tensor::<B>(c.q.clone(), c.q_shape, dtype, &dev);
        let k = tensor::<B>(c.k.clone(), c.k_shape, dtype, &dev);
        let v = tensor::<B>(c.v.clone(), c.k_shape, dtype, &dev);
        let (hq, hk, hv) = (host(q.clone()), host(k.clone()), host(v.clone()));
        let want = oracle(
            &hq,
            &hk,
            &hv,
            c.q_shape,
            20,
            64,
            default_scale(64),
            None,
            None,
        );
        let out = attention(q, k, v, default_scale(64), None, Strategy::Reference).unwrap();
        assert_eq!(out.dtype(), dtype);
        assert!(rel_err(&host(out), &want) <= tol::HALF, "{dtype:?}");
    }
}

#[test]
fn quantize_per_token_codes_and_scales() {
    let dev = Default::default();
    let x = Tensor::<B, 4>::from_data(
        TensorData::new(
            vec![1.0f32, -2.0, 0.5, 0.0, 0.0, 0.0, 127.0, -63.5],
            [1, 1, 2, 4],
        ),
        &dev,
    );
    let qt = quantize_per_token(x);
    let codes = host(qt.codes);
    let scales = host(qt.scales);
    assert_eq!(codes, vec![64.0, -127.0, 32.0, 0.0, 0.0, 0.0, 127.0, -64.0]);
    assert!((scales[0] - 2.0 / 127.0).abs() < 1e-9);
    assert_eq!(scales[1], 1.0);
}

fn zeros(shape: [usize; 4]) -> Tensor<B, 4> {
    Tensor::zeros(shape, &Default::default())
}

#[test]
fn errors_are_typed() {
    let s = default_scale(32);
    let r = attention(
        zeros([1, 2, 4, 32]),
        zeros([1, 2, 5, 16]),
        zeros([1, 2, 5, 32]),
        s,
        None,
        Strategy::Reference,
    );
    assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{r:?}");
    let r = attention(
        zeros([1, 2, 4, 32]),
        zeros([1, 2, 5, 32]),
        zeros([1, 2, 4, 32]),
        s,
        None,
        Strategy::Auto,
    );
    assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{r:?}");
    let r = attention(
        zeros([1, 2, 0, 32]),
        zeros([1, 2, 5, 32]),
        zeros([1, 2, 5, 32]),
        s,
        None,
        Strategy::Reference,
    );
    assert!(matches!(r, Err(Error::Empty { .. })), "{r:?}");
    for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        let r = attention(
            zeros([1, 1, 4, 32]),
            zeros([1, 1, 4, 32]),
            zeros([1, 1, 4, 32]),
            bad,
            None,
            Strategy::Reference,
        );
        assert!(matches!(r, Err(Error::BadScale(_))), "{r:?}");
    }
    let mask = Tensor::<B, 4, Bool>::empty([1, 1, 4, 3], &Default::default());
    let r = attention(
        zeros([1, 1, 4, 32]),
        zeros([1, 1, 4, 32]),
        zeros([1, 1, 4, 32]),
        s,
        Some(mask),
        Strategy::Reference,
    );
    assert!(matches!(r, Err(Error::MaskShape { .. })), "{r:?}");

    let mut k = vec![0.0f32; 4 * 32];
    k[17] = f32::NAN;
    let kt = tensor::<B>(k, [1, 1, 4, 32], DType::F32, &Default::default());
    let r = attention(
        zeros([1, 1, 4, 32]),
        kt.clone(),
        zeros([1, 1, 4, 32]),
        s,
        None,
        Strategy::Reference,
    );
    assert!(matches!(r, Err(Error::NonFinite { tensor: "k" })), "{r:?}");
    let v = zeros([1, 1, 4, 32]) + f32::INFINITY;
    let r = attention(
        zeros([1, 1, 4, 32]),
        zeros([1, 1, 4, 32]),
        v,
        s,
        None,
        Strategy::Reference,
    );
    assert!(matches!(r, Err(Error::NonFinite { tensor: "v" })), "{r:?}");
    // The trusted entry point skips that scan but still checks shapes.
    assert!(
        attention_trusted(
            zeros([1, 1, 4, 32]),
            kt,
            zeros([1, 1, 4, 32]),
            s,
            None,
            Strategy::Reference
        )
        .is_ok()
    );

    // Flash has no kernel on the CPU backend, and refuses what it does not support.
    let r = attention(
        zeros([1, 1, 4, 32]),
        zeros([1, 1, 4, 32]),
        zeros([1, 1, 4, 32]),
        s,
        None,
        Strategy::Flash,
    );
    assert!(matches!(r, Err(Error::UnsupportedBackend { .. })), "{r:?}");
    let r = attention(
        zeros([1, 1, 4, 48]),
        zeros([1, 1, 4, 48]),
        zeros([1, 1, 4, 48]),
        s,
        None,
        Strategy::Flash,
    );
    assert!(
        matches!(r, Err(Error::UnsupportedHeadDim { d: 48, .. })),
        "{r:?}"
    );
    let mask = Tensor::<B, 4, Bool>::empty([1, 1, 4, 4], &Default::default());
    let r = attention(
        zeros([1, 1, 4, 32]),
        zeros([1, 1, 4, 32]),
        zeros([1, 1, 4, 32]),
        s,
        Some(mask),
        Strategy::Flash,
    );
    assert!(matches!(r, Err(Error::Unsupported { .. })), "{r:?}");
    // Errors print their context.
    let msg = Error::UnsupportedHeadDim { d: 48, d_v: 48 }.to_string();
    assert!(msg.contains("48"), "{msg}");
}
