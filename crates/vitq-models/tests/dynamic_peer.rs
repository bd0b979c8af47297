//! Dynamic int8 quantization against PyTorch's `torch.ao.quantization.quantize_dynamic` (fixture from
//! `scripts/peer/export_dynamic_quant_fixture.py`; `tests/fixtures/README.md` says what torch computes
//! and records the figures).
//!
//! torch (fbgemm, behind the default `x86` engine) quantizes every `nn.Linear`: int8 symmetric weights
//! (`amax / 127.5`, codes in [-128, 127]) and, at every call, the whole input tensor with **7-bit**
//! asymmetric min-max (`reduce_range=True`: codes [0, 127]); the output is float. The patch-embedding
//! conv and the attention matmuls stay float. qnnpack does the same with 8-bit activations.
//!
//! 1. [`dynamic_linear_layers_match_fbgemm_and_qnnpack`]: two linear layers, each on the same float
//!    input in vitq and torch, with torch's weight codes: vitq's dynamic activation quantizer and
//!    integer kernel give torch's outputs up to float rounding, for both engines and both weight
//!    granularities. Nothing upstream can differ, so this is exact on any machine.
//! 2. [`torch_int8_weights_in_the_vitq_vit_reproduce_torch`]: the same, end to end through the ViT, with
//!    the per-batch semantics (one image alone gets its own scales). End to end, float rounding in the
//!    float ops between the layers can move an activation across a rounding boundary, and since the
//!    scales are per batch one such flip can change the scales of every later layer for every image
//!    (the script measures it), so the exact comparison is asserted on the 2-image batch and the
//!    16-image batch is reported.
//! 3. [`vitq_dynamic_config_is_as_close_to_torch_as_torch_is_to_float`]: `Model::quantize` with the
//!    config that mirrors torch. vitq's weight scale is `amax / 127` (no spec gives 127.5), which changes
//!    10–15 % of the weight codes, so logits agree only within quantization noise: the test checks the
//!    weights and the execution path layer by layer, and the logits statistically.

mod common;

use burn::tensor::{Tensor, TensorData};
use common::*;
use safetensors::{Dtype, SafeTensors};
use vitq_core::checkpoint::Checkpoint;
use vitq_core::layers::{ActQuant, ExecPath, QLinear};
use vitq_core::ptq::Quantizable;
use vitq_core::{
    ActivationMode, Granularity, LayerOverride, QuantConfig, QuantParams, QuantSpec,
    QuantizedTensor, Scheme,
};
use vitq_models::vit::ViT;
use vitq_models::weights::WeightMap;
use vitq_models::zoo::Model;

const FIXTURE: &str = "dynamic_int8_vit_tiny2.safetensors";

/// The linear layers torch quantizes (every `nn.Linear`), in forward order.
const LAYERS: [&str; 9] = [
    "blocks.0.attn.qkv",
    "blocks.0.attn.proj",
    "blocks.0.mlp.fc1",
    "blocks.0.mlp.fc2",
    "blocks.1.attn.qkv",
    "blocks.1.attn.proj",
    "blocks.1.mlp.fc1",
    "blocks.1.mlp.fc2",
    "head",
];

/// fbgemm's activation range with `reduce_range=True`: [0, 127].
const FBGEMM_ACT_BITS: u32 = 7;
/// qnnpack ignores `reduce_range`: [0, 255].
const QNNPACK_ACT_BITS: u32 = 8;

/// Max |Δ| between vitq and torch running the *same* int8 weights on the same input. Only float
/// rounding is left (the rescale `(acc − z·Σw) · s_x · s_w + b` in another order, the activation
/// scale computed in float32 where torch uses double): measured ≤ 4.8e-7 on the MLP layers and
/// ≤ 4.8e-7 on the ViT logits (2-image batch, logits up to 2.8). The mistakes this must catch move
/// outputs by 4e-2 or more (8-bit instead of 7-bit activations or the reverse, float activations,
/// one scale per image instead of per batch); the tests check that they are > 100× this tolerance.
const SAME_WEIGHTS_TOL: f32 = 1e-4;

/// vitq's own dynamic quantization vs torch's: both are quantization noise of the same size around
/// the float logits, drawn differently (vitq's weight step is 127.5/127 times torch's), so the RMS of
/// their difference should be about √2 times torch's own RMS error; this allows 2×.
const NOISE_FACTOR: f64 = 2.0;
/// vitq's RMS error against float over torch's: measured 0.62–1.06. Below a quarter would mean
/// (almost) nothing is quantized, above 2 a coarser or broken quantizer. (Float activations alone
/// would give about 0.3–0.5: the layer-by-layer checks catch that, not this ratio.)
const NOISE_RATIO_RANGE: (f64, f64) = (0.25, 2.0);

struct Fixture {
    bytes: Vec<u8>,
    floats: Checkpoint,
}

impl Fixture {
    fn load() -> Self {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(FIXTURE);
        Self {
            bytes: std::fs::read(&path).expect("fixture"),
            floats: fixture(FIXTURE),
        }
    }

    fn f32s(&self, name: &str) -> &[f32] {
        &self
            .floats
            .get(name)
            .unwrap_or_else(|| panic!("fixture has no `{name}`"))
            .data
    }

    fn shape(&self, name: &str) -> Vec<usize> {
        self.floats.get(name).expect(name).shape.clone()
    }

    fn input(&self, name: &str) -> Tensor<B, 4> {
        tensor4(&self.floats, name)
    }

    /// An I8 tensor (the torch weight codes) as i32 codes and its shape.
    fn codes(&self, name: &str) -> (Vec<i32>, Vec<usize>) {
        let st = SafeTensors::deserialize(&self.bytes).expect("safetensors");
        let t = st
            .tensor(name)
            .unwrap_or_else(|e| panic!("fixture has no `{name}`: {e}"));
        assert_eq!(t.dtype(), Dtype::I8, "{name}");
        let codes = t.data().iter().map(|&b| i32::from(b as i8)).collect();
        (codes, t.shape().to_vec())
    }

    /// torch's quantized weight `{prefix}.codes` / `{prefix}.scale` as a vitq tensor.
    fn torch_weight(&self, prefix: &str) -> QuantizedTensor {
        let (codes, shape) = self.codes(&format!("{prefix}.codes"));
        let scales = self.f32s(&format!("{prefix}.scale")).to_vec();
        let granularity = if scales.len() == 1 {
            Granularity::PerTensor
        } else {
            Granularity::PerChannel { axis: 0 }
        };
        let params = QuantParams {
            spec: QuantSpec::new(8, Scheme::Symmetric, granularity).unwrap(),
            shape,
            zero_points: vec![0; scales.len()],
            scales,
        };
        QuantizedTensor::from_codes(&codes, &params).expect(prefix)
    }
}

fn vit_tiny2() -> Model<B> {
    let c = fixture("vit_tiny2.safetensors");
    let config = vit_tiny2_config();
    let model = ViT::from_weights(
        &config,
        WeightMap::from_checkpoint_prefixed(c, "weights."),
        &Default::default(),
    )
    .expect("vit_tiny2 fixture");
    Model::ViT {
        config,
        model: Box::new(model),
    }
}

/// Dynamic per-tensor asymmetric activations of `bits` bits (scale and zero point from every batch).
fn dynamic_act(bits: u32) -> ActQuant {
    ActQuant {
        spec: QuantSpec::new(bits, Scheme::Asymmetric, Granularity::PerTensor).unwrap(),
        params: None,
    }
}

/// What `quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)` does, as far as vitq says it:
/// 8-bit symmetric min-max weights (per tensor or per output channel), dynamic asymmetric per-tensor
/// activations of `act_bits`, the patch-embedding conv and the attention matmuls in float.
fn torch_mirror_config(per_channel: bool, act_bits: u32) -> QuantConfig {
    let granularity = if per_channel {
        Granularity::PerChannel { axis: 0 }
    } else {
        Granularity::PerTensor
    };
    let mut config = QuantConfig::new(
        Some(QuantSpec::new(8, Scheme::Symmetric, granularity).unwrap()),
        Some(dynamic_act(act_bits).spec),
    );
    config.activation_mode = ActivationMode::Dynamic;
    config.overrides = ["patch_embed.proj", "blocks.*.attn.matmul_*"]
        .into_iter()
        .map(|pattern| LayerOverride {
            pattern: pattern.into(),
            float: true,
            weights: None,
            activations: None,
        })
        .collect();
    config
}

/// vit_tiny2 with torch's int8 weights of `scheme` in every linear layer and dynamic `act` (or float
/// activations) on their inputs; everything else float.
fn with_torch_weights(f: &Fixture, scheme: &str, act: Option<ActQuant>) -> Model<B> {
    let mut model = vit_tiny2();
    let mut done = 0;
    for mut layer in model.layers_mut() {
        let name = layer.name().to_string();
        if LAYERS.contains(&name.as_str()) {
            let w = f.torch_weight(&format!("weight.{scheme}.{name}"));
            layer.set_quantized(Some(w), vec![act]).expect(&name);
            let expected = if act.is_some() {
                ExecPath::Integer
            } else {
                ExecPath::WeightOnly
            };
            assert_eq!(
                layer.state().quantized().unwrap().path(),
                expected,
                "{name}"
            );
            done += 1;
        }
    }
    assert_eq!(done, LAYERS.len());
    model
}

fn logits(model: &Model<B>, x: Tensor<B, 4>) -> Vec<f32> {
    values(model.forward(x).expect("forward"))
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

fn rms(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let s: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    (s / a.len() as f64).sqrt()
}

fn argmax(row: &[f32]) -> usize {
    (0..row.len())
        .max_by(|&i, &j| row[i].total_cmp(&row[j]))
        .unwrap()
}

/// How many rows of `[n, 10]` logits have the same argmax.
fn argmax_agree(a: &[f32], b: &[f32]) -> usize {
    a.chunks_exact(10)
        .zip(b.chunks_exact(10))
        .filter(|(x, y)| argmax(x) == argmax(y))
        .count()
}

/// The engines: activation bits and the fixture's key suffix.
const ENGINES: [(&str, u32, &str); 2] = [
    ("fbgemm", FBGEMM_ACT_BITS, ""),
    ("qnnpack", QNNPACK_ACT_BITS, ".qnnpack"),
];

#[test]
fn torch_int8_weights_in_the_vitq_vit_reproduce_torch() {
    let f = Fixture::load();
    // The float model is the one torch quantized.
    let x = f.input("input");
    assert_close(
        "float logits",
        &logits(&vit_tiny2(), x.clone()),
        f.f32s("logits.float"),
        F32_REL,
    );

    for scheme in ["pt", "pc"] {
        for (engine, bits, suffix) in ENGINES {
            let model = with_torch_weights(&f, scheme, Some(dynamic_act(bits)));
            for batch in ["", ".b16"] {
                let want = f.f32s(&format!("logits.{scheme}{suffix}{batch}"));
                let got = logits(&model, f.input(&format!("input{batch}")));
                let d = max_abs(&got, want);
                let n = want.len() / 10;
                let exact = got
                    .chunks_exact(10)
                    .zip(want.chunks_exact(10))
                    .filter(|(a, b)| max_abs(a, b) <= SAME_WEIGHTS_TOL)
                    .count();
                eprintln!(
                    "{scheme} {engine} input{batch}: max |vitq - torch| {d:.2e}, rms {:.2e}, \
                     {exact}/{n} images within {SAME_WEIGHTS_TOL:.0e}, argmax agree {}/{n}",
                    rms(&got, want),
                    argmax_agree(&got, want),
                );
                if batch.is_empty() {
                    assert!(
                        d <= SAME_WEIGHTS_TOL,
                        "{scheme} {engine}: {d:.3e} > {SAME_WEIGHTS_TOL:.0e}"
                    );
                }
            }
        }
        // Activation scales are per batch: image 0 alone has its own, as in torch.
        let model = with_torch_weights(&f, scheme, Some(dynamic_act(FBGEMM_ACT_BITS)));
        let alone = logits(&model, x.clone().narrow(0, 0, 1));
        let want = f.f32s(&format!("logits.{scheme}.image0"));
        let torch = f.f32s(&format!("logits.{scheme}"));
        let d = max_abs(&alone, want);
        let per_batch = max_abs(want, &torch[..10]);
        eprintln!(
            "{scheme} image 0 alone: max |vitq - torch| {d:.2e} (torch alone vs in the batch: {per_batch:.2e})"
        );
        assert!(d <= SAME_WEIGHTS_TOL, "{scheme} image 0 alone: {d:.3e}");
        assert!(per_batch > 100.0 * SAME_WEIGHTS_TOL);

        // The tolerance tells the mistakes apart: 8-bit instead of 7-bit activations, float ones.
        let a8 = f.f32s(&format!("logits.{scheme}.qnnpack"));
        assert!(max_abs(torch, a8) > 100.0 * SAME_WEIGHTS_TOL, "{scheme} a8");
        let weight_only = logits(&with_torch_weights(&f, scheme, None), x.clone());
        let d = max_abs(&weight_only, torch);
        eprintln!("{scheme} float activations: max |vitq - torch| {d:.2e}");
        assert!(
            d > 100.0 * SAME_WEIGHTS_TOL,
            "{scheme} weight-only: {d:.3e}"
        );
    }
}

#[test]
fn dynamic_linear_layers_match_fbgemm_and_qnnpack() {
    let f = Fixture::load();
    let device = Default::default();
    let t2 = |data: &[f32], shape: &[usize]| {
        Tensor::<B, 2>::from_data(
            TensorData::new(data.to_vec(), [shape[0], shape[1]]),
            &device,
        )
    };
    let x = f.f32s("mlp.input");
    let x_shape = f.shape("mlp.input");
    let float = |i: usize| {
        let w = format!("mlp.fc{i}.weight");
        QLinear::from_torch(
            format!("fc{i}"),
            t2(f.f32s(&w), &f.shape(&w)),
            Some(Tensor::<B, 1>::from_floats(
                f.f32s(&format!("mlp.fc{i}.bias")),
                &device,
            )),
        )
    };

    for (engine, bits, suffix) in ENGINES {
        // The activation scale and zero point torch chose for fc1's input and for the ReLU output that
        // fc2 gets (min 0: zero point 0): both computed in f64 and rounded to f32 once, so equal.
        for (i, data) in [
            (1, x.to_vec()),
            (
                2,
                f.f32s(&format!("mlp.pt{suffix}.fc1.out"))
                    .iter()
                    .map(|v| v.max(0.0))
                    .collect(),
            ),
        ] {
            let key = format!("mlp.act_qparams.fc{i}{suffix}");
            let (s, z) = dynamic_act(bits).params_for(&data);
            let want = f.f32s(&key);
            eprintln!(
                "{key}: vitq ({s:e}, {z}), torch ({:e}, {})",
                want[0], want[1]
            );
            assert_eq!(s, want[0], "{key}");
            assert_eq!(z as f32, want[1], "{key}");
        }

        for scheme in ["pt", "pc"] {
            let fc1_out = f.f32s(&format!("mlp.{scheme}{suffix}.fc1.out"));
            let h: Vec<f32> = fc1_out.iter().map(|v| v.max(0.0)).collect();
            let h_shape = f.shape(&format!("mlp.{scheme}{suffix}.fc1.out"));
            for (i, input, shape) in [(1, x, &x_shape), (2, &h[..], &h_shape)] {
                let mut fc = float(i);
                let w = f.torch_weight(&format!("mlp.{scheme}.fc{i}"));
                fc.set_quantized(Some(w), Some(dynamic_act(bits))).unwrap();
                assert_eq!(fc.quant.quantized().unwrap().path(), ExecPath::Integer);
                let got = values(fc.forward(t2(input, shape)));
                let want = f.f32s(&format!("mlp.{scheme}{suffix}.fc{i}.out"));
                let d = max_abs(&got, want);
                eprintln!("mlp fc{i} {scheme} {engine}: max |vitq - torch| {d:.2e}");
                assert!(
                    d <= SAME_WEIGHTS_TOL,
                    "mlp fc{i} {scheme} {engine}: {d:.3e}"
                );
                // The other engine's activation width is far off.
                let other = if suffix.is_empty() { ".qnnpack" } else { "" };
                let wrong = f.f32s(&format!("mlp.{scheme}{other}.fc{i}.out"));
                if i == 1 {
                    assert!(max_abs(&got, wrong) > 100.0 * SAME_WEIGHTS_TOL);
                }
            }
        }
    }

    // vitq's own weights (amax / 127): the all-zero row gets scale eps and zero codes.
    let spec = QuantSpec::new(8, Scheme::Symmetric, Granularity::PerChannel { axis: 0 }).unwrap();
    let (w, shape) = float(1).weight_torch().unwrap();
    let q = QuantizedTensor::quantize(&w, &shape, &spec).unwrap();
    assert_eq!(q.params().unwrap().scales[4], f32::EPSILON);
    assert!(
        q.codes().unwrap()[4 * shape[1]..5 * shape[1]]
            .iter()
            .all(|&c| c == 0)
    );
}

#[test]
fn vitq_dynamic_config_is_as_close_to_torch_as_torch_is_to_float() {
    let f = Fixture::load();
    for ((scheme, per_channel), (engine, bits, suffix)) in [("pt", false), ("pc", true)]
        .into_iter()
        .flat_map(|s| ENGINES.map(|e| (s, e)))
    {
        let config = torch_mirror_config(per_channel, bits);
        let mut model = vit_tiny2()
            .quantize(&config, Vec::new(), &mut |_| {})
            .expect("dynamic quantization needs no calibration");

        // Layer by layer: which layers are quantized, how, and the weights against torch's.
        for layer in model.layers_mut() {
            let name = layer.name().to_string();
            let q = layer.state().quantized();
            if !LAYERS.contains(&name.as_str()) {
                assert!(q.is_none(), "{name} must stay float, as in torch");
                continue;
            }
            let q = q.unwrap_or_else(|| panic!("{name} is not quantized"));
            assert_eq!(q.path(), ExecPath::Integer, "{name}");
            assert_eq!(q.inputs, vec![Some(dynamic_act(bits))], "{name}");
            let ours = q.weight.as_ref().unwrap();
            let torch = f.torch_weight(&format!("weight.{scheme}.{name}"));
            let (p_ours, p_torch) = (ours.params().unwrap(), torch.params().unwrap());
            assert_eq!(p_ours.scales.len(), p_torch.scales.len(), "{name}");
            // Both scales come from the same amax: vitq amax / 127, torch amax / 127.5.
            for (s, t) in p_ours.scales.iter().zip(&p_torch.scales) {
                let amax_ours = f64::from(*s) * 127.0;
                let amax_torch = f64::from(*t) * 127.5;
                assert!(
                    (amax_ours - amax_torch).abs() <= 1e-6 * amax_torch.max(1e-30),
                    "{name}: amax {amax_ours} vs {amax_torch}"
                );
            }
            // Dequantized weights differ by at most one torch step (different grids on one range).
            let (w_ours, w_torch) = (ours.dequantize().unwrap(), torch.dequantize().unwrap());
            let row_len = w_ours.len() / p_torch.scales.len();
            for (i, (a, b)) in w_ours.iter().zip(&w_torch).enumerate() {
                let step = p_torch.scales[i / row_len];
                assert!((a - b).abs() <= step * 1.0001, "{name}[{i}]: {a} vs {b}");
            }
        }

        for batch in ["", ".b16"] {
            let got = logits(&model, f.input(&format!("input{batch}")));
            let torch = f.f32s(&format!("logits.{scheme}{suffix}{batch}"));
            let float = f.f32s(&format!("logits.float{batch}"));
            let n = torch.len() / 10;
            let (vt, vf, tf) = (rms(&got, torch), rms(&got, float), rms(torch, float));
            eprintln!(
                "{scheme} {engine} input{batch}: vitq-torch max {:.2e} rms {vt:.2e} | vitq-float max {:.2e} rms {vf:.2e} \
                 | torch-float max {:.2e} rms {tf:.2e} | argmax vitq=torch {}/{n}, vitq=float {}/{n}, torch=float {}/{n}",
                max_abs(&got, torch),
                max_abs(&got, float),
                max_abs(torch, float),
                argmax_agree(&got, torch),
                argmax_agree(&got, float),
                argmax_agree(torch, float),
            );
            assert!(
                vt <= NOISE_FACTOR * tf,
                "{scheme} {engine} input{batch}: rms |vitq - torch| {vt:.3e} > {NOISE_FACTOR} × torch's own error {tf:.3e}"
            );
            let ratio = vf / tf;
            assert!(
                (NOISE_RATIO_RANGE.0..=NOISE_RATIO_RANGE.1).contains(&ratio),
                "{scheme} {engine} input{batch}: vitq's error is {ratio:.2} × torch's"
            );
        }
    }
}
