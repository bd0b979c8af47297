//! Post-training quantization of whole models: the ResNet-20 acceptance figures, quantized files that
//! load back to the same model, and the errors a user can run into.

mod common;

use std::path::Path;

use burn::tensor::{Tensor, TensorData};
use common::*;
use vitq_attention::{Precision, QuantizedSpec};
use vitq_core::io::QuantFile;
use vitq_core::ptq::Quantizable;
use vitq_core::{Error as CoreError, QuantConfig};
use vitq_models::Error;
use vitq_models::data::{Cifar10, Normalize};
use vitq_models::metrics::Metrics;
use vitq_models::vit::{AttentionImpl, ViTConfig};
use vitq_models::zoo::Model;

fn resnet20() -> Model<B> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../assets/resnet20-cifar10/resnet20-12fca82f.safetensors");
    Model::load("resnet20", path, &Default::default()).expect("vendored ResNet-20")
}

/// The acceptance figures of issue 4: ResNet-20 on the first 1000 CIFAR-10 test images (f32: 91.5 %),
/// calibrating on the first 256 training images: W8A8 ≥ 91.0 %, W6A6 ≥ 90.0 %, W4A8 ≥ 88.0 %, and
/// files of at most 0.27× (8-bit) and 0.15× (4-bit) the f32 checkpoint.
#[test]
fn resnet20_accuracy_and_size_after_ptq() {
    let (Some(weights), Some(test), Some(train)) = (
        shared("weights/resnet20-cifar10/resnet20-12fca82f.safetensors"),
        shared("data/cifar10/test_first1000.bin"),
        shared("data/cifar10/train_first2000.bin"),
    ) else {
        return;
    };
    let device = Default::default();
    let float = Model::<B>::load("resnet20", &weights, &device).unwrap();
    let float_bytes = std::fs::metadata(&weights).unwrap().len() as f64;
    let test = Cifar10::load(test).unwrap();
    let train = Cifar10::load(train).unwrap();
    let calib: Vec<Tensor<B, 4>> = (0..256)
        .step_by(64)
        .map(|s| train.batch(s..s + 64, Normalize::IMAGENET, &device))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    for (preset, min_top1, max_ratio) in [
        ("w8a8", 0.910, 0.27),
        ("w6a6", 0.900, 0.21),
        ("w4a8", 0.880, 0.15),
        ("w4a4", 0.0, 0.15),
        ("nf4", 0.0, 0.15),
    ] {
        let config = QuantConfig::preset(preset).unwrap();
        let q = float
            .clone()
            .quantize(&config, calib.clone(), &mut |_| {})
            .unwrap();
        let file = dir.path().join(format!("{preset}.safetensors"));
        let ratio = q.save_quantized(&file, &config).unwrap() as f64 / float_bytes;
        let (q, _) = Model::<B>::load_quantized(&file, &device).unwrap();
        let mut m = Metrics::new(10);
        for s in (0..test.len()).step_by(100) {
            let x = test.batch(s..s + 100, Normalize::IMAGENET, &device);
            m.add_batch(&logits(&q, x), &test.labels(s..s + 100));
        }
        eprintln!(
            "{preset}: top-1 {:.1} % ({} / 1000), file {ratio:.3}× f32",
            100.0 * m.top1(),
            m.correct()
        );
        assert!(m.top1() >= min_top1, "{preset}: top-1 {}", m.top1());
        assert!(ratio <= max_ratio, "{preset}: {ratio:.3}× the f32 file");
    }
}

/// A quantized model written to a file and read back computes exactly the same logits (ResNet and ViT,
/// static and dynamic, integer, simulated and weight-only layers).
#[test]
fn quantized_files_load_back_to_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    let x_resnet = gaussian_batches(1, 4, 32, 7).remove(0);
    let (vit, x_vit) = vit_tiny2_model(AttentionImpl::Layers);
    for (model, x, preset) in [
        (resnet20(), x_resnet.clone(), "w8a8"),
        (resnet20(), x_resnet.clone(), "int8-dynamic"),
        (resnet20(), x_resnet, "nf4"),
        (vit.clone(), x_vit.clone(), "w8a8"),
        (vit.clone(), x_vit.clone(), "w4a4"),
        (vit, x_vit, "w4"),
    ] {
        let config = QuantConfig::preset(preset).unwrap();
        let q = model
            .quantize(&config, gaussian_batches(2, 8, 32, 1), &mut |_| {})
            .unwrap();
        let file = dir.path().join("q.safetensors");
        q.save_quantized(&file, &config).unwrap();
        let (back, back_config) = Model::<B>::load_quantized(&file, &Default::default()).unwrap();
        assert_eq!(back_config, config);
        assert_eq!(back.layer_bits(), q.layer_bits(), "{preset}");
        assert_eq!(
            logits(&back, x.clone()),
            logits(&q, x),
            "{} {preset}",
            q.name()
        );
    }
}

/// On the ViT fixture, output SQNR against f32 falls with the bit-width, and W8A8 keeps the argmax.
#[test]
fn vit_fixture_sqnr_by_preset() {
    let (vit, x) = vit_tiny2_model(AttentionImpl::Layers);
    let reference = logits(&vit, x.clone());
    let mut table = Vec::new();
    for preset in ["w8a8", "w6a6", "w4a8", "w4a4", "w8", "nf4", "int8-dynamic"] {
        let q = calibrated(&vit, &QuantConfig::preset(preset).unwrap());
        let y = logits(&q, x.clone());
        let sqnr = vitq_core::metrics::sqnr_db(&reference, &y);
        eprintln!("vit_tiny2 {preset}: logits SQNR {sqnr:.1} dB");
        table.push((preset, sqnr));
    }
    let sqnr = |p: &str| table.iter().find(|(q, _)| *q == p).unwrap().1;
    assert!(sqnr("w8a8") > 25.0, "{table:?}");
    assert!(
        sqnr("w8a8") > sqnr("w6a6") && sqnr("w6a6") > sqnr("w4a4"),
        "{table:?}"
    );
    assert!(
        sqnr("w8") > sqnr("w8a8"),
        "weight-only is closer than W8A8: {table:?}"
    );
}

#[test]
fn quantize_reports_bad_calibration_and_configs() {
    let config = QuantConfig::preset("w8a8").unwrap();
    let e = resnet20()
        .quantize(&config, Vec::new(), &mut |_| {})
        .unwrap_err();
    assert!(
        matches!(&e, Error::Core(c) if matches!(c.root(), CoreError::Empty { .. })),
        "{e}"
    );

    let mut bad = gaussian_batches(1, 2, 32, 1);
    bad.push(Tensor::from_data(
        TensorData::new(vec![f32::NAN; 2 * 3 * 32 * 32], [2, 3, 32, 32]),
        &Default::default(),
    ));
    let e = resnet20().quantize(&config, bad, &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("`conv1`"), "names the layer: {e}");

    let toml = r#"
        version = 1
        weights = { bits = 4 }
        [[overrides]]
        pattern = "layer1.0.conv3"
        float = true
    "#;
    let e = resnet20()
        .quantize(
            &QuantConfig::from_toml_str(toml).unwrap(),
            Vec::new(),
            &mut |_| {},
        )
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("layer1.0.conv3") && msg.contains("layer1.0.conv1"),
        "{msg}"
    );
}

#[test]
fn corrupt_or_foreign_quantized_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = QuantConfig::preset("w8").unwrap();
    let q = resnet20()
        .quantize(&config, Vec::new(), &mut |_| {})
        .unwrap();
    let file = dir.path().join("q.safetensors");
    q.save_quantized(&file, &config).unwrap();
    let bytes = std::fs::read(&file).unwrap();

    // Truncated.
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert!(Model::<B>::load_quantized(&cut, &Default::default()).is_err());

    // A float checkpoint is not a quantized model.
    let float = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../assets/resnet20-cifar10/resnet20-12fca82f.safetensors");
    assert!(Model::<B>::load_quantized(&float, &Default::default()).is_err());

    // The file claims another architecture: ResNet-32 has more layers than the file holds.
    let mut f = QuantFile::load(&file).unwrap();
    let arch = f
        .metadata
        .get("model")
        .unwrap()
        .replace("resnet20", "resnet32");
    let arch = arch.replace("\"blocks\":3", "\"blocks\":5");
    f.metadata.insert("model".into(), arch);
    let foreign = dir.path().join("foreign.safetensors");
    f.save(&foreign).unwrap();
    match Model::<B>::load_quantized(&foreign, &Default::default()) {
        Err(Error::Keys { missing, .. }) => {
            assert!(
                missing.iter().any(|m| m.contains("layer1.3.conv1")),
                "{missing:?}"
            )
        }
        other => panic!("expected a Keys error, got {other:?}"),
    }

    // A weight of the wrong shape for its layer.
    let mut f = QuantFile::load(&file).unwrap();
    let fc = f.tensors.remove("linear.weight").unwrap();
    f.tensors.insert("conv1.weight".into(), fc);
    let swapped = dir.path().join("swapped.safetensors");
    f.save(&swapped).unwrap();
    let e = Model::<B>::load_quantized(&swapped, &Default::default()).unwrap_err();
    assert!(e.to_string().contains("conv1"), "{e}");
    let _ = q.layer_states();
}

fn min_max_config(wbits: u32, abits: u32, search: bool) -> QuantConfig {
    use vitq_core::{CalibrationMethod, Granularity, PtqMethod, QuantSpec, Scheme};
    let spec = |bits, scheme, g| {
        QuantSpec::new(bits, scheme, g)
            .unwrap()
            .with_calibration(CalibrationMethod::MinMax)
    };
    let mut c = QuantConfig::new(
        Some(spec(
            wbits,
            Scheme::Symmetric,
            Granularity::PerChannel { axis: 0 },
        )),
        Some(spec(abits, Scheme::Asymmetric, Granularity::PerTensor)),
    );
    if search {
        c.method = PtqMethod::similarity_search();
    }
    c
}

/// Liu et al.'s similarity-aware scale search (linears) with ranking-aware search of the attention
/// matmuls (the default `PtqMethod::similarity_search()`) beats plain min-max calibration on the ViT
/// fixture at W6A6 and W4A8 (logits SQNR against f32).
#[test]
fn similarity_search_beats_min_max_on_the_vit_fixture() {
    let (vit, x) = vit_tiny2_model(AttentionImpl::Layers);
    let reference = logits(&vit, x.clone());
    for (w, a) in [(6, 6), (4, 8)] {
        let sqnr = |search: bool| {
            let q = calibrated(&vit, &min_max_config(w, a, search));
            vitq_core::metrics::sqnr_db(&reference, &logits(&q, x.clone()))
        };
        let (plain, searched) = (sqnr(false), sqnr(true));
        eprintln!(
            "vit_tiny2 W{w}A{a}: min-max {plain:.2} dB, similarity search with ranking-aware \
             attention {searched:.2} dB"
        );
        assert!(searched > plain, "W{w}A{a}: {searched:.2} vs {plain:.2} dB");
    }
}

/// The ViT's attention implementation is a config field: every `vitq-attention` strategy gives the
/// logits of the layers' path within its tier (f32 strategies 1e-5 relative; int8 Q·Kᵀ 2e-2, and
/// 3e-2 with 8-bit P·V and output too), Flash (no CubeCL backend here) falls back to the layers'
/// path, and a quantized model runs its matmul quantizers whatever the implementation says.
#[test]
fn vit_attention_implementations_agree() {
    let (layers, x) = vit_tiny2_model(AttentionImpl::Layers);
    let reference = logits(&layers, x.clone());
    let int8 = QuantizedSpec {
        pv: Precision::Int8,
        output: Precision::Int8,
    };
    for (imp, spec, tol) in [
        (AttentionImpl::Reference, QuantizedSpec::default(), 1e-5),
        (AttentionImpl::Burn, QuantizedSpec::default(), 1e-5),
        (AttentionImpl::Auto, QuantizedSpec::default(), 1e-5),
        (AttentionImpl::Flash, QuantizedSpec::default(), 1e-5),
        (AttentionImpl::Quantized, QuantizedSpec::default(), 2e-2),
        (AttentionImpl::Quantized, int8, 3e-2),
    ] {
        // The strategy itself runs here (no silent fallback), except Flash, which needs CubeCL.
        let qkv = gaussian_batches(3, 2, 8, 9);
        let direct = vitq_attention::attention(
            qkv[0].clone(),
            qkv[1].clone(),
            qkv[2].clone(),
            0.25,
            None,
            imp.strategy(spec).unwrap(),
        );
        assert_eq!(direct.is_ok(), imp != AttentionImpl::Flash, "{imp:?}");
        let (m, _) = vit_tiny2_model_with(ViTConfig {
            attention: imp,
            quantized_attention: spec,
            ..vit_tiny2_config()
        });
        let err = rel_err(&logits(&m, x.clone()), &reference);
        eprintln!("{imp:?} {spec:?}: max relative error {err:.2e}");
        assert!(err <= tol, "{imp:?} {spec:?}: {err:e}");
    }
    let config = QuantConfig::preset("w8a8").unwrap();
    let calib = gaussian_batches(2, 8, 32, 5);
    let q_layers = layers
        .quantize(&config, calib.clone(), &mut |_| {})
        .unwrap();
    let (burn, _) = vit_tiny2_model(AttentionImpl::Burn);
    let q_burn = burn.quantize(&config, calib, &mut |_| {}).unwrap();
    assert_eq!(logits(&q_burn, x.clone()), logits(&q_layers, x));
}

/// `Q·Kᵀ` of every operand slice of `sample`, with the operands fake-quantized by `qa`, `qb` (`None`:
/// float): `[count · m, n]`.
fn attention_scores(
    p: &vitq_core::layers::PairSample,
    q: [Option<vitq_core::layers::ActQuant>; 2],
) -> Vec<f32> {
    use vitq_core::uniform::fake_quant;
    let [m, k, n] = p.dims;
    let fq = |x: &[f32], q: Option<vitq_core::layers::ActQuant>| -> Vec<f32> {
        match q {
            None => x.to_vec(),
            Some(q) => {
                let (s, z) = q.params.expect("static");
                x.iter().map(|&v| fake_quant(v, s, z, &q.spec)).collect()
            }
        }
    };
    let (a, b) = (fq(&p.a, q[0]), fq(&p.b, q[1]));
    let mut out = vec![0f32; p.count * m * n];
    for s in 0..p.count {
        for i in 0..m {
            for j in 0..n {
                out[(s * m + i) * n + j] = (0..k)
                    .map(|t| a[(s * m + i) * k + t] * b[(s * k + t) * n + j])
                    .sum();
            }
        }
    }
    out
}

fn search_config(wbits: u32, abits: u32, attention: bool, gamma: f32) -> QuantConfig {
    let mut c = min_max_config(wbits, abits, true);
    if let vitq_core::PtqMethod::SimilaritySearch {
        attention: a,
        gamma: g,
        ..
    } = &mut c.method
    {
        *a = attention;
        *g = gamma;
    }
    c
}

/// Liu et al.'s ranking loss keeps the order of the attention scores: on held-out images, the
/// quantized `Q·Kᵀ` of the model searched with the ranking loss keeps more pairs of scores of each
/// query in their float order (and has a smaller ranking loss) than the model searched for similarity
/// alone, and both keep more than the calibrated min-max ranges.
#[test]
fn ranking_loss_keeps_more_attention_order_on_the_vit_fixture() {
    use vitq_core::ranking::DEFAULT_GAMMA;
    let (vit, _) = vit_tiny2_model(AttentionImpl::Layers);
    let mut held_out = vit.clone();
    let samples =
        vitq_core::nuclear::sample_layers(&mut held_out, gaussian_batches(2, 8, 32, 11), 512)
            .unwrap();
    let calib = gaussian_batches(4, 8, 32, 3);
    // Only the activation bits matter here: the operands are the float model's.
    for (w, a) in [(8, 6), (8, 4)] {
        let mut table = Vec::new();
        for (what, config) in [
            ("min-max", min_max_config(w, a, false)),
            ("similarity", search_config(w, a, true, 0.0)),
            ("ranking", search_config(w, a, true, DEFAULT_GAMMA)),
        ] {
            let q = vit
                .clone()
                .quantize(&config, calib.clone(), &mut |_| {})
                .unwrap();
            let (agree, loss) = attention_order(&q, &samples, 0.0);
            eprintln!("W{w}A{a} {what}: pair agreement {agree:.4}, ranking loss {loss:.3}");
            table.push((agree, loss));
        }
        let [plain, similarity, ranking] = [table[0], table[1], table[2]];
        assert!(
            ranking.0 > similarity.0 && ranking.1 < similarity.1,
            "W{w}A{a}: {table:?}"
        );
        assert!(ranking.0 > plain.0, "W{w}A{a}: {table:?}");
    }
}

/// Pair agreement (mean over layers) and ranking loss (margin `theta`, summed) of the quantized `Q·Kᵀ`
/// of `q` against the float scores on the matmul_qk layers' operand samples.
fn attention_order(
    q: &Model<B>,
    samples: &[vitq_core::nuclear::LayerSample],
    theta: f32,
) -> (f64, f64) {
    use vitq_core::ranking::{pair_agreement, ranking_loss};
    let (mut agree, mut loss) = (0.0, 0.0);
    for s in samples.iter().filter(|s| s.name.ends_with("matmul_qk")) {
        let vitq_core::nuclear::Sample::MatMul(p) = &s.sample else {
            panic!("{} is a matmul", s.name)
        };
        let (_, state) = q
            .layer_states()
            .into_iter()
            .find(|(n, _)| *n == s.name)
            .unwrap();
        let inputs = &state.quantized().unwrap().inputs;
        let float = attention_scores(p, [None, None]);
        let quant = attention_scores(p, [inputs[0], inputs[1]]);
        let shape = [p.count * p.dims[0], p.dims[2]];
        agree += pair_agreement(&float, &quant, shape).unwrap();
        loss += ranking_loss(&float, &quant, shape, theta).unwrap();
    }
    let layers = samples
        .iter()
        .filter(|s| s.name.ends_with("matmul_qk"))
        .count();
    assert!(layers > 0, "no matmul_qk sample");
    (agree / layers as f64, loss)
}

/// `quantized_attention` in a saved ViT config: optional (older files have none), each stage
/// optional, and a misspelt stage is an error that names it.
#[test]
fn quantized_attention_spec_in_config_files() {
    let mut v = serde_json::to_value(vit_tiny2_config()).unwrap();
    v["attention"] = "quantized".into();
    v["quantized_attention"] = serde_json::json!({ "pv": "int8" });
    let c: ViTConfig = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(c.attention, AttentionImpl::Quantized);
    let pv8 = QuantizedSpec {
        pv: Precision::Int8,
        output: Precision::F32,
    };
    assert_eq!(c.quantized_attention, pv8);
    v.as_object_mut().unwrap().remove("quantized_attention");
    let c: ViTConfig = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(c.quantized_attention, QuantizedSpec::default());
    v["quantized_attention"] = serde_json::json!({ "p_v": "int8" });
    let e = serde_json::from_value::<ViTConfig>(v)
        .unwrap_err()
        .to_string();
    assert!(e.contains("p_v"), "{e}");
}
