//! Shared helpers of the peer tests: fixture reading and the named tolerance tiers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use vitq_core::checkpoint::Checkpoint;
use vitq_core::synth::Rng;
use vitq_models::vit::{AttentionImpl, Pooling, TIMM_LN_EPS, ViT, ViTConfig};
use vitq_models::weights::WeightMap;
use vitq_models::zoo::Model;

/// f32 against PyTorch f32 on the same weights and inputs: max |a - b| / max |b| over a tensor.
pub const F32_REL: f64 = 1e-4;

pub type B = Flex;

pub fn fixture(name: &str) -> Checkpoint {
    Checkpoint::load(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .expect("fixture")
}

/// `../shared` beside the checkout, if present.
pub fn shared(rel: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared")
        .join(rel);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skipping: {} is absent", p.display());
        None
    }
}

pub fn tensor4(c: &Checkpoint, name: &str) -> Tensor<B, 4> {
    let t = c
        .get(name)
        .unwrap_or_else(|| panic!("fixture has no `{name}`"));
    let dims: [usize; 4] = t.shape.clone().try_into().expect("rank 4");
    Tensor::from_data(TensorData::new(t.data.clone(), dims), &Default::default())
}

pub fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().expect("f32 data")
}

/// Max relative error of `got` against the reference `want` (see [`F32_REL`]).
pub fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "length");
    let scale = want
        .iter()
        .fold(0f64, |m, v| m.max(f64::from(v.abs())))
        .max(1e-12);
    got.iter()
        .zip(want)
        .fold(0f64, |m, (a, b)| m.max(f64::from((a - b).abs())))
        / scale
}

pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f64) {
    let e = rel_err(got, want);
    assert!(e <= tol, "{what}: max relative error {e:.3e} > {tol:.0e}");
    eprintln!("{what}: max relative error {e:.3e}");
}

/// `VisionTransformer(img_size=32, patch_size=4, embed_dim=64, depth=2, num_heads=4, mlp_ratio=2,
/// num_classes=10)`: the model of the `vit_tiny2.safetensors` fixture.
pub fn vit_tiny2_config() -> ViTConfig {
    ViTConfig {
        name: "vit_tiny2".into(),
        img_size: 32,
        patch_size: 4,
        in_chans: 3,
        embed_dim: 64,
        depth: 2,
        num_heads: 4,
        mlp_dim: 128,
        num_classes: 10,
        layer_scale: false,
        pooling: Pooling::Cls,
        ln_eps: TIMM_LN_EPS,
        qkv_bias: true,
        attention: Default::default(),
        quantized_attention: Default::default(),
    }
}

/// The vit_tiny2 fixture as a [`Model`] with the given attention implementation, and its input batch.
pub fn vit_tiny2_model(attention: AttentionImpl) -> (Model<B>, Tensor<B, 4>) {
    vit_tiny2_model_with(ViTConfig {
        attention,
        ..vit_tiny2_config()
    })
}

/// The vit_tiny2 fixture's weights in a [`Model`] of `config` (a variant of
/// [`vit_tiny2_config`]), and its input batch.
pub fn vit_tiny2_model_with(config: ViTConfig) -> (Model<B>, Tensor<B, 4>) {
    let c = fixture("vit_tiny2.safetensors");
    let model = ViT::from_weights(
        &config,
        WeightMap::from_checkpoint_prefixed(c.clone(), "weights."),
        &Default::default(),
    )
    .expect("vit_tiny2 fixture");
    (
        Model::ViT {
            config,
            model: Box::new(model),
        },
        tensor4(&c, "input"),
    )
}

/// Gaussian batches `[n, 3, size, size]` (calibration data for models without a dataset here).
pub fn gaussian_batches(count: usize, n: usize, size: usize, seed: u64) -> Vec<Tensor<B, 4>> {
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|_| {
            Tensor::from_data(
                TensorData::new(rng.gaussian_vec(n * 3 * size * size), [n, 3, size, size]),
                &Default::default(),
            )
        })
        .collect()
}

/// `model` quantized with `config`, calibrated on the ViT tests' calibration set (4 Gaussian batches of
/// 8 images of 32×32, seed 3).
pub fn calibrated(model: &Model<B>, config: &vitq_core::QuantConfig) -> Model<B> {
    model
        .clone()
        .quantize(config, gaussian_batches(4, 8, 32, 3), &mut |_| {})
        .expect("quantize")
}

/// A model's logits on `x`, on the host.
pub fn logits(model: &Model<B>, x: Tensor<B, 4>) -> Vec<f32> {
    values(model.forward(x).expect("forward"))
}
