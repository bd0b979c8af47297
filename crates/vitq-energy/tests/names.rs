//! The layer names `vitq-energy` generates are exactly the `name`s the real models give their
//! quantizable layers (`QConv2d`, `QLinear`, `QMatMul`), which is what `QuantConfig` patterns match.
//!
//! The models are built by `vitq-models` itself: every preset with zero weights (through its public
//! checkpoint loader, with the widths shrunk so that the big ones stay small; names depend only on depth
//! and structure), the vendored ResNet-20 checkpoint, and the timm ViT fixture. Two readings of a
//! model's names must both equal ours, in order:
//! - `vitq_core::ptq::layer_names`, the walk `quantize` matches config patterns against;
//! - every `name: "…"` in the model's `Debug` output (printed by exactly the three layer types), which
//!   does not rely on that walk being complete.

use std::path::PathBuf;

use burn::backend::Flex;
use vitq_core::checkpoint::{Checkpoint, FloatTensor};
use vitq_core::ptq::{self, Quantizable};
use vitq_energy::Network;
use vitq_models::resnet::{ResNet, ResNetConfig, ResNetKind};
use vitq_models::vit::{ViT, ViTConfig};
use vitq_models::weights::WeightMap;
use vitq_models::zoo;

type B = Flex;

fn map(tensors: Vec<(String, Vec<usize>)>) -> WeightMap {
    WeightMap::from_checkpoint(Checkpoint {
        path: PathBuf::from("zeros"),
        tensors: tensors
            .into_iter()
            .map(|(name, shape)| FloatTensor {
                data: vec![0.0; shape.iter().product()],
                name,
                shape,
                stored_as: "F32".into(),
            })
            .collect(),
        skipped: Vec::new(),
    })
}

/// Builds a model with zero weights through its strict loader: from an empty checkpoint the error
/// lists every key it needs, from one with those keys at a wrong shape every shape it needs.
fn zero_model<M>(build: impl Fn(WeightMap) -> vitq_models::Result<M>) -> M {
    let missing = match build(map(Vec::new())) {
        Err(vitq_models::Error::Keys { missing, .. }) => missing,
        Err(e) => panic!("expected missing keys, got {e}"),
        Ok(_) => panic!("a model without weights loaded"),
    };
    let wrong = missing.into_iter().map(|n| (n, vec![0])).collect();
    let shapes = match build(map(wrong)) {
        Err(vitq_models::Error::Keys {
            missing,
            mismatched,
            ..
        }) if missing.is_empty() => mismatched
            .into_iter()
            .map(|m| (m.name, m.expected))
            .collect(),
        Err(e) => panic!("expected only shape mismatches, got {e}"),
        Ok(_) => panic!("a model with empty tensors loaded"),
    };
    build(map(shapes)).expect("zero weights of the right shapes load")
}

/// The `name: "…"` fields of a model's `Debug` output, in order.
fn debug_names(model: &impl std::fmt::Debug) -> Vec<String> {
    let text = format!("{model:?}");
    text.match_indices("name: \"")
        .map(|(i, m)| {
            let rest = &text[i + m.len()..];
            rest[..rest.find('"').expect("closing quote")].to_string()
        })
        .collect()
}

/// Both readings of a model's layer names (see the module docs).
fn model_names<M: Quantizable<B> + std::fmt::Debug>(model: &mut M) -> [Vec<String>; 2] {
    let walked = ptq::layer_names(model);
    [walked, debug_names(model)]
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn names(net: &Network) -> Vec<String> {
    net.layer_names().into_iter().map(String::from).collect()
}

#[test]
fn every_preset_has_the_names_of_the_model_vitq_models_builds() {
    let device = Default::default();
    for preset in zoo::presets() {
        let full = Network::from_preset(preset, None).unwrap();
        if let Ok(mut cfg) = ResNetConfig::preset(preset) {
            if let ResNetKind::ImageNet { width, .. } = &mut cfg.kind {
                *width = 4;
            }
            let net = Network::resnet(&cfg, full.input).unwrap();
            assert_eq!(
                names(&net),
                names(&full),
                "{preset}: shrinking changed names"
            );
            let mut model = zero_model(|w| ResNet::<B>::from_weights(&cfg, w, &device));
            let [walked, fields] = model_names(&mut model);
            assert_eq!(walked, names(&net), "{preset}");
            // The fields are declared in forward order too.
            assert_eq!(fields, names(&net), "{preset}");
        } else {
            let mut cfg = ViTConfig::preset(preset).unwrap();
            cfg.embed_dim = 2 * cfg.num_heads;
            cfg.mlp_dim = 8;
            let net = Network::vit(&cfg, full.input).unwrap();
            assert_eq!(
                names(&net),
                names(&full),
                "{preset}: shrinking changed names"
            );
            let model = zero_model(|w| ViT::<B>::from_weights(&cfg, w, &device));
            // ViTs: the model declares `proj` before the matmuls; compare as sets (no duplicates).
            assert_eq!(sorted(debug_names(&model)), sorted(names(&net)), "{preset}");
        }
    }
}

#[test]
fn the_vendored_resnet20_checkpoint_has_the_same_names() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../assets/resnet20-cifar10/resnet20-12fca82f.safetensors");
    let cfg = ResNetConfig::preset("resnet20").unwrap();
    let mut model =
        ResNet::<B>::from_weights(&cfg, WeightMap::load(&path).unwrap(), &Default::default())
            .unwrap();
    let net = Network::from_preset("resnet20", None).unwrap();
    assert_eq!(model_names(&mut model), [names(&net), names(&net)]);
    assert_eq!(net.layers.len(), 20);
}

#[test]
fn the_timm_vit_fixture_has_the_same_names() {
    // timm `VisionTransformer(img_size=32, patch_size=4, embed_dim=64, depth=2, num_heads=4,
    // mlp_ratio=2, num_classes=10)`, written by scripts/peer/export_model_fixtures.py.
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../vitq-models/tests/fixtures/vit_tiny2.safetensors");
    let ckpt = Checkpoint::load(&path).unwrap();
    let weights = WeightMap::from_checkpoint_prefixed(ckpt, "weights.");
    let mut cfg = ViTConfig::infer(&weights).unwrap();
    cfg.num_heads = 4;
    let mut model = ViT::<B>::from_weights(&cfg, weights, &Default::default()).unwrap();
    let net = Network::vit(&cfg, [32, 32]).unwrap();
    let [walked, fields] = model_names(&mut model);
    assert_eq!(walked, names(&net));
    assert_eq!(sorted(fields), sorted(names(&net)));
    assert_eq!(net.layers.len(), 1 + 2 * 6 + 1);
}
