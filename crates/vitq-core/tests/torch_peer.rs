//! Peer check against PyTorch: `torch.ao.quantization` min-max observers and
//! `torch.quantize_per_tensor` / `torch.quantize_per_channel` on the same inputs must give the same
//! scales, zero points, integer codes and dequantized values as vitq, bit for bit.
//!
//! The fixture is written by `scripts/peer/export_quant_fixture.py` (see `tests/fixtures/README.md`).
//! PyTorch's symmetric observer is run with the restricted range `[-(2^(b-1)-1), 2^(b-1)-1]`, which
//! makes its scale `max|x| / (2^(b-1)-1)`, vitq's formula.

use std::collections::HashMap;

use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;
use vitq_core::observer::Observer;
use vitq_core::uniform::{self, QuantParams};
use vitq_core::{Granularity, QuantSpec, Scheme};

#[derive(Deserialize)]
struct Case {
    name: String,
    input: String,
    granularity: String,
    axis: usize,
    scheme: String,
    bits: u32,
    qmin: i32,
    qmax: i32,
}

fn f32s(st: &SafeTensors<'_>, name: &str) -> (Vec<f32>, Vec<usize>) {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.dtype(), Dtype::F32, "{name}");
    let v = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (v, t.shape().to_vec())
}

fn i32s(st: &SafeTensors<'_>, name: &str) -> Vec<i32> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.dtype(), Dtype::I32, "{name}");
    t.data()
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn codes_and_scales_match_pytorch() {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/torch_quant.safetensors"
    ))
    .expect("fixture is committed");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta: HashMap<String, String> = header.metadata().clone().unwrap();
    let cases: Vec<Case> = serde_json::from_str(&meta["cases"]).unwrap();
    assert_eq!(cases.len(), 36);
    for c in &cases {
        let (x, shape) = f32s(&st, &c.input);
        let granularity = match c.granularity.as_str() {
            "per_tensor" => Granularity::PerTensor,
            _ => Granularity::PerChannel { axis: c.axis },
        };
        let scheme = if c.scheme == "symmetric" {
            Scheme::Symmetric
        } else {
            Scheme::Asymmetric
        };
        let spec = QuantSpec::new(c.bits, scheme, granularity).unwrap();
        // Our code range contains torch's (the symmetric one has one extra negative code).
        let (qmin, qmax) = spec.qrange();
        assert!(qmin <= c.qmin && qmax == c.qmax, "{}", c.name);

        let mut obs = Observer::new(spec).unwrap();
        obs.observe(&x, &shape).unwrap();
        let p = QuantParams::from_ranges(&spec, &shape, &obs.ranges().unwrap()).unwrap();

        let (scale, _) = f32s(&st, &format!("{}.scale", c.name));
        assert_eq!(p.scales, scale, "{}: scales", c.name);
        assert_eq!(
            p.zero_points,
            i32s(&st, &format!("{}.zero_point", c.name)),
            "{}: zero points",
            c.name
        );

        let codes = uniform::quantize_ref(&x, &p).unwrap();
        let torch_codes = i32s(&st, &format!("{}.codes", c.name));
        let diff = codes
            .iter()
            .zip(&torch_codes)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(
            diff,
            0,
            "{}: {diff} of {} codes differ",
            c.name,
            codes.len()
        );

        let (deq, _) = f32s(&st, &format!("{}.dequant", c.name));
        assert_eq!(
            uniform::dequantize_ref(&codes, &p).unwrap(),
            deq,
            "{}: dequantized",
            c.name
        );
    }
}
