//! PTQ4ViT on the ViT fixture: the output gradients its metric uses, the gain over min-max
//! calibration, quantized files with twin-uniform quantizers, and the errors.

mod common;

use common::*;
use vitq_core::hessian::{PROBE_SEED, fisher_probe_loss};
use vitq_core::ptq::Quantizable;
use vitq_core::ptq4vit::SearchMetric;
use vitq_core::twin::TwinKind;
use vitq_core::{
    CalibrationMethod, Error as CoreError, Granularity, PtqMethod, QuantConfig, QuantSpec, Scheme,
};
use vitq_models::Error;
use vitq_models::vit::{AttentionImpl, ViT, ViTConfig};
use vitq_models::weights::WeightMap;
use vitq_models::zoo::Model;

/// Min-max W{w}A{a}: symmetric per-channel weights, asymmetric per-tensor activations.
fn config(wbits: u32, abits: u32, method: PtqMethod) -> QuantConfig {
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
    c.method = method;
    c
}

/// PTQ4ViT with the paper's settings and `twin_select` as given.
fn ptq4vit(select: bool) -> PtqMethod {
    let mut m = PtqMethod::ptq4vit();
    if let PtqMethod::Ptq4vit { twin_select, .. } = &mut m {
        *twin_select = select;
    }
    m
}

/// PTQ4ViT with the paper's settings and `channel_search`.
fn ptq4vit_channel() -> PtqMethod {
    let mut m = PtqMethod::ptq4vit();
    if let PtqMethod::Ptq4vit { channel_search, .. } = &mut m {
        *channel_search = true;
    }
    m
}

/// The gradient captured at the head is the root mean square over the probes of the gradients of
/// [`fisher_probe_loss`] applied to the logits directly (same logits, same seeds), and every block
/// layer gets a non-zero gradient.
#[test]
fn captured_head_gradient_is_the_probe_loss_gradient() {
    use burn::backend::Autodiff;
    use burn::tensor::{Tensor, TensorData};
    let (vit, _) = vit_tiny2_model(AttentionImpl::Layers);
    let x = gaussian_batches(1, 3, 32, 11).remove(0);
    let z = values(vit.forward(x.clone()).unwrap());
    let probe = |seed: u64| {
        let leaf = Tensor::<Autodiff<B>, 2>::from_data(
            TensorData::new(z.clone(), [3, 10]),
            &Default::default(),
        )
        .require_grad();
        let grads = fisher_probe_loss(leaf.clone(), seed).unwrap().backward();
        values(leaf.grad(&grads).unwrap())
    };
    let (g0, g1) = (probe(PROBE_SEED), probe(PROBE_SEED + 1));
    let names = vit.layer_names();
    for probes in [1, 2] {
        let captures = vit.capture_gradients(x.clone(), probes).unwrap();
        assert_eq!(captures.len(), names.len());
        let head = captures.last().unwrap().as_ref().expect("head captured");
        assert_eq!(head.output_grad.shape, vec![3, 10]);
        for i in 0..30 {
            let want = if probes == 1 {
                g0[i].abs()
            } else {
                ((g0[i] * g0[i] + g1[i] * g1[i]) / 2.0).sqrt()
            };
            let got = head.output_grad.data[i];
            assert!(
                (got - want).abs() < 1e-6,
                "{probes} probes [{i}]: {got} vs {want}"
            );
        }
    }
    let captures = vit.capture_gradients(x, 1).unwrap();
    for (name, c) in names.iter().zip(&captures) {
        if name == "patch_embed.proj" {
            assert!(c.is_none(), "convolutions are not captured");
            continue;
        }
        let c = c.as_ref().unwrap_or_else(|| panic!("{name} captured"));
        let expected_inputs = if name.contains("matmul") { 2 } else { 1 };
        assert_eq!(c.inputs.len(), expected_inputs, "{name}");
        let g2: f64 = c
            .output_grad
            .data
            .iter()
            .map(|g| f64::from(*g).powi(2))
            .sum();
        assert!(g2 > 0.0, "{name}: zero gradient");
    }
}

/// PTQ4ViT (twin-uniform softmax and GELU inputs, Hessian-guided search), as the paper gives it,
/// with `twin_select` and with `channel_search`, beats plain min-max calibration at W6A6 and W4A8
/// in logits SQNR on the ViT fixture.
#[test]
fn ptq4vit_beats_min_max_on_the_vit_fixture() {
    let (vit, x) = vit_tiny2_model(AttentionImpl::Layers);
    let reference = logits(&vit, x.clone());
    for (w, a) in [(6, 6), (4, 8)] {
        let sqnr = |method: PtqMethod| {
            let q = calibrated(&vit, &config(w, a, method));
            vitq_core::metrics::sqnr_db(&reference, &logits(&q, x.clone()))
        };
        let plain = sqnr(PtqMethod::Plain);
        let paper = sqnr(ptq4vit(false));
        let selected = sqnr(ptq4vit(true));
        let channel = sqnr(ptq4vit_channel());
        eprintln!(
            "vit_tiny2 W{w}A{a}: min-max {plain:.2} dB, PTQ4ViT {paper:.2} dB, \
             with twin_select {selected:.2} dB, with channel_search {channel:.2} dB"
        );
        assert!(paper > plain, "W{w}A{a}: {paper:.2} vs {plain:.2} dB");
        assert!(selected > plain, "W{w}A{a}: {selected:.2} vs {plain:.2} dB");
        assert!(channel > plain, "W{w}A{a}: {channel:.2} vs {plain:.2} dB");
    }
}

/// A PTQ4ViT-quantized model in which `twin_select` left some twin-candidate inputs uniform (the
/// near-flat attention model at W6A6: uniform softmax operands, twin `fc2` inputs) saves and loads
/// back to the same quantizers and logits; the config round-trips through TOML.
#[test]
fn twin_quantized_model_round_trips_through_a_file() {
    let vit = vit_tiny2_flat_attention();
    let x = gaussian_batches(1, 4, 32, 99).remove(0);
    let cfg = config(6, 6, ptq4vit(true));
    assert_eq!(
        QuantConfig::from_toml_str(&cfg.to_toml_string().unwrap()).unwrap(),
        cfg
    );
    let q = vit
        .quantize(&cfg, gaussian_batches(2, 4, 32, 1), &mut |_| {})
        .unwrap();
    let mut twins = Vec::new();
    for (name, s) in q.layer_states() {
        if let Some(t) = s.quantized().and_then(|q| q.twins.iter().flatten().next()) {
            twins.push((name.to_string(), t.kind));
        }
    }
    // Mixed: both softmax operands uniform, at least one `fc2` input twin.
    assert!(!twins.is_empty(), "{twins:?}");
    for (name, kind) in &twins {
        assert!(
            name.ends_with("mlp.fc2") && *kind == TwinKind::Gelu,
            "{twins:?}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ptq4vit.safetensors");
    q.save_quantized(&file, &cfg).unwrap();
    let (back, back_cfg) = Model::<B>::load_quantized(&file, &Default::default()).unwrap();
    assert_eq!(back_cfg, cfg);
    for ((n, a), (_, b)) in back.layer_states().iter().zip(q.layer_states()) {
        let (a, b) = (a.quantized(), b.quantized());
        assert_eq!(
            a.map(|q| (q.inputs.clone(), q.twins.clone())),
            b.map(|q| (q.inputs.clone(), q.twins.clone())),
            "{n}"
        );
    }
    assert_eq!(logits(&back, x.clone()), logits(&q, x));
}

#[test]
fn ptq4vit_errors_are_typed() {
    let (vit, _) = vit_tiny2_model(AttentionImpl::Layers);
    // 2-bit activations leave one bit per twin range.
    let e = vit
        .clone()
        .quantize(
            &config(4, 2, PtqMethod::ptq4vit()),
            gaussian_batches(1, 2, 32, 1),
            &mut |_| {},
        )
        .unwrap_err();
    assert!(
        matches!(&e, Error::Core(c) if matches!(c.root(), CoreError::InvalidSpec(_))),
        "{e}"
    );
    assert!(e.to_string().contains("matmul_av"), "names the layer: {e}");
    // No calibration images.
    let e = vit
        .clone()
        .quantize(&config(6, 6, PtqMethod::ptq4vit()), Vec::new(), &mut |_| {})
        .unwrap_err();
    assert!(
        matches!(&e, Error::Core(c) if matches!(c.root(), CoreError::Empty { .. })),
        "{e}"
    );
    // Dynamic activations have nothing to search.
    let mut dynamic = config(6, 6, PtqMethod::ptq4vit());
    dynamic.activation_mode = vitq_core::ActivationMode::Dynamic;
    let e = vit
        .clone()
        .quantize(&dynamic, gaussian_batches(1, 2, 32, 1), &mut |_| {})
        .unwrap_err();
    assert!(matches!(&e, Error::Core(CoreError::Config(_))), "{e}");
    // Unknown metric names are config errors.
    let toml = "version = 1\nmethod = { kind = \"ptq4vit\", metric = \"cosine\" }";
    assert!(QuantConfig::from_toml_str(toml).is_err());
    // `twin_select` is a boolean, off unless asked for.
    let toml = "version = 1\nmethod = { kind = \"ptq4vit\", twin_select = \"yes\" }";
    assert!(QuantConfig::from_toml_str(toml).is_err());
    for (toml, want) in [("", false), (", twin_select = true", true)] {
        let toml = format!("version = 1\nmethod = {{ kind = \"ptq4vit\"{toml} }}");
        assert!(matches!(
            QuantConfig::from_toml_str(&toml).unwrap().method,
            PtqMethod::Ptq4vit { twin_select, .. } if twin_select == want
        ));
    }
    let toml = "version = 1\nmethod = { kind = \"ptq4vit\", metric = \"mse\" }";
    assert!(matches!(
        QuantConfig::from_toml_str(toml).unwrap().method,
        PtqMethod::Ptq4vit {
            metric: SearchMetric::Mse,
            ..
        }
    ));
}

/// The vit_tiny2 fixture with its query and key projections scaled by `1/50`: near-flat attention
/// (every weight close to `1/65`), as in a randomly initialised ViT.
fn vit_tiny2_flat_attention() -> Model<B> {
    let mut c = fixture("vit_tiny2.safetensors");
    for t in &mut c.tensors {
        if t.name.ends_with("attn.qkv.weight") || t.name.ends_with("attn.qkv.bias") {
            // Rows 0..128 of the [192, 64] weight (and of the bias) are q and k.
            let qk = 2 * t.shape[0] / 3 * t.shape.get(1).copied().unwrap_or(1);
            t.data[..qk].iter_mut().for_each(|v| *v /= 50.0);
        }
    }
    let config = ViTConfig {
        attention: AttentionImpl::Layers,
        ..vit_tiny2_config()
    };
    let model = ViT::from_weights(
        &config,
        WeightMap::from_checkpoint_prefixed(c, "weights."),
        &Default::default(),
    )
    .unwrap();
    Model::ViT {
        config,
        model: Box::new(model),
    }
}

/// The layers whose input 0 got a twin-uniform quantizer.
fn twin_layers(q: &Model<B>) -> Vec<String> {
    q.layer_states()
        .iter()
        .filter(|(_, s)| s.quantized().is_some_and(|q| q.twin(0).is_some()))
        .map(|(n, _)| n.to_string())
        .collect()
}

/// On near-flat attention the twin quantizer of the softmax operand is worse than the uniform one by
/// the search's metric (one bit less for the same values): with `twin_select` every `matmul_av` gets
/// the uniform quantizer, without it (the default, the paper's) every one keeps its twin. On 16
/// held-out inputs PTQ4ViT with `channel_search` beats min-max at W6A6 and W4A8; the paper's search
/// and `twin_select` are printed, not asserted (the paper's loses at W6A6 here, see
/// docs/architecture.md).
#[test]
fn twin_select_takes_uniform_softmax_on_flat_attention() {
    let vit = vit_tiny2_flat_attention();
    let x = gaussian_batches(1, 16, 32, 99).remove(0);
    let reference = logits(&vit, x.clone());
    for (w, a) in [(6, 6), (4, 8)] {
        let run = |method: PtqMethod| {
            let q = calibrated(&vit, &config(w, a, method));
            let s = vitq_core::metrics::sqnr_db(&reference, &logits(&q, x.clone()));
            (twin_layers(&q), s)
        };
        let (_, plain) = run(PtqMethod::Plain);
        let (selected, with_select) = run(ptq4vit(true));
        let (kept, paper) = run(ptq4vit(false));
        let (_, channel) = run(ptq4vit_channel());
        eprintln!(
            "flat vit_tiny2 W{w}A{a}: min-max {plain:.2} dB, PTQ4ViT {paper:.2} dB, \
             with twin_select {with_select:.2} dB (twins on {selected:?}), \
             with channel_search {channel:.2} dB"
        );
        assert!(channel > plain, "W{w}A{a}: {channel:.2} vs {plain:.2} dB");
        assert!(
            selected.iter().all(|n| !n.ends_with("matmul_av")),
            "W{w}A{a}: {selected:?}"
        );
        assert_eq!(
            kept.iter().filter(|n| n.ends_with("matmul_av")).count(),
            2,
            "W{w}A{a}: {kept:?}"
        );
    }
}
