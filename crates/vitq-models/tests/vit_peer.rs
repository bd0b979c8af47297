//! ViT and DINOv2 against timm on the same weights and inputs (fixtures from
//! `scripts/peer/export_model_fixtures.py`; see `tests/fixtures/README.md` for where each activation
//! was captured), timm's antialiased bicubic pos-embed resampling, Hugging Face key names, strict
//! loading and config inference.

mod common;

use burn::tensor::{Tensor, TensorData};
use common::*;
use vitq_core::checkpoint::{Checkpoint, FloatTensor};
use vitq_models::vit::{
    HF_VIT_LN_EPS, Pooling, TIMM_LN_EPS, VIT_PRESETS, ViT, ViTConfig, resample_abs_pos_embed,
};
use vitq_models::weights::WeightMap;

/// `vit_small_patch14_dinov2` with `img_size=28, embed_dim=48, depth=2, num_heads=3, num_classes=10`.
fn dinov2_block_config() -> ViTConfig {
    ViTConfig {
        name: "dinov2_block".into(),
        img_size: 28,
        patch_size: 14,
        in_chans: 3,
        embed_dim: 48,
        depth: 2,
        num_heads: 3,
        mlp_dim: 192,
        num_classes: 10,
        layer_scale: true,
        pooling: Pooling::Cls,
        ln_eps: TIMM_LN_EPS,
        qkv_bias: true,
        attention: Default::default(),
        quantized_attention: Default::default(),
    }
}

fn tensor3(c: &Checkpoint, name: &str) -> Tensor<B, 3> {
    let t = c
        .get(name)
        .unwrap_or_else(|| panic!("fixture has no `{name}`"));
    let dims: [usize; 3] = t.shape.clone().try_into().expect("rank 3");
    Tensor::from_data(TensorData::new(t.data.clone(), dims), &Default::default())
}

fn want<'a>(c: &'a Checkpoint, name: &str) -> &'a [f32] {
    &c.get(name)
        .unwrap_or_else(|| panic!("fixture has no `{name}`"))
        .data
}

fn load(config: &ViTConfig, c: &Checkpoint) -> ViT<B> {
    ViT::from_weights(
        config,
        WeightMap::from_checkpoint_prefixed(c.clone(), "weights."),
        &Default::default(),
    )
    .unwrap()
}

#[test]
fn vit_tiny2_matches_timm() {
    let c = fixture("vit_tiny2.safetensors");
    let model = load(&vit_tiny2_config(), &c);
    let x = tensor4(&c, "input");
    assert_close(
        "patch_embed",
        &values(model.patch_tokens(x.clone())),
        want(&c, "act.patch_embed"),
        F32_REL,
    );
    let embedded = model.embed(x.clone());
    assert_close(
        "pos_drop",
        &values(embedded.clone()),
        want(&c, "act.pos_drop"),
        F32_REL,
    );
    assert_close(
        "blocks.0",
        &values(model.blocks()[0].forward(embedded)),
        want(&c, "act.blocks.0"),
        F32_REL,
    );
    // blocks[1] on timm's blocks.0 output, so that its error is its own.
    assert_close(
        "blocks.1.attn",
        &values(model.blocks()[1].attn_branch(tensor3(&c, "act.blocks.0"))),
        want(&c, "act.blocks.1.attn"),
        F32_REL,
    );
    assert_close(
        "norm",
        &values(model.forward_features(x.clone())),
        want(&c, "act.norm"),
        F32_REL,
    );
    assert_close(
        "logits",
        &values(model.try_forward(x).unwrap()),
        want(&c, "logits"),
        F32_REL,
    );
}

#[test]
fn dinov2_block_matches_timm_at_native_and_resampled_size() {
    let c = fixture("dinov2_block.safetensors");
    let model = load(&dinov2_block_config(), &c);
    assert_eq!(model.pos_grid(), [2, 2]);

    let x = tensor4(&c, "input");
    // timm's `act.patch_embed` is NHWC [B, gh, gw, C]: the same values as row-major tokens.
    assert_close(
        "patch_embed",
        &values(model.patch_tokens(x.clone())),
        want(&c, "act.patch_embed"),
        F32_REL,
    );
    let embedded = model.embed(x.clone());
    assert_close(
        "pos_drop",
        &values(embedded.clone()),
        want(&c, "act.pos_drop"),
        F32_REL,
    );
    assert_close(
        "blocks.0.ls1",
        &values(model.blocks()[0].attn_branch(embedded.clone())),
        want(&c, "act.blocks.0.ls1"),
        F32_REL,
    );
    assert_close(
        "blocks.0",
        &values(model.blocks()[0].forward(embedded)),
        want(&c, "act.blocks.0"),
        F32_REL,
    );
    assert_close(
        "norm",
        &values(model.forward_features(x.clone())),
        want(&c, "act.norm"),
        F32_REL,
    );
    assert_close(
        "logits",
        &values(model.forward(x)),
        want(&c, "logits"),
        F32_REL,
    );

    // 42×42: a 3×3 grid, pos_embed resampled from 2×2.
    let x42 = tensor4(&c, "input_42");
    assert_close(
        "pos_embed_42",
        &values(model.pos_embed([3, 3])),
        want(&c, "act.pos_embed_42"),
        F32_REL,
    );
    assert_close(
        "patch_embed_42",
        &values(model.patch_tokens(x42.clone())),
        want(&c, "act.patch_embed_42"),
        F32_REL,
    );
    assert_close(
        "pos_drop_42",
        &values(model.embed(x42.clone())),
        want(&c, "act.pos_drop_42"),
        F32_REL,
    );
    assert_close(
        "norm_42",
        &values(model.forward_features(x42.clone())),
        want(&c, "act.norm_42"),
        F32_REL,
    );
    assert_close(
        "logits_42",
        &values(model.try_forward(x42).unwrap()),
        want(&c, "logits_42"),
        F32_REL,
    );
}

#[test]
fn pos_embed_resampling_matches_timm() {
    let c = fixture("dinov2_block.safetensors");
    let src = want(&c, "resample.src_5x5");
    for (name, grid) in [("to_3x3", [3, 3]), ("to_8x8", [8, 8]), ("to_4x7", [4, 7])] {
        let got = resample_abs_pos_embed(src, 16, [5, 5], grid, 1);
        assert_close(
            &format!("resample.{name}"),
            &got,
            want(&c, &format!("resample.{name}")),
            F32_REL,
        );
        assert_eq!(got[..16], src[..16], "class-token row unchanged");
    }
    // The model's own pos_embed, 2×2 → 3×3, through the host function.
    let pos = want(&c, "weights.pos_embed");
    assert_close(
        "resample pos_embed_42",
        &resample_abs_pos_embed(pos, 48, [2, 2], [3, 3], 1),
        want(&c, "act.pos_embed_42"),
        F32_REL,
    );
    // Same grid: unchanged.
    assert_eq!(resample_abs_pos_embed(src, 16, [5, 5], [5, 5], 1), src);
}

#[test]
fn wrong_checkpoints_list_every_problem() {
    // vit_tiny2's layout with the DINOv2 weights: unexpected layer-scales, every width wrong.
    let dino = fixture("dinov2_block.safetensors");
    let err = ViT::<B>::from_weights(
        &vit_tiny2_config(),
        WeightMap::from_checkpoint_prefixed(dino, "weights."),
        &Default::default(),
    )
    .unwrap_err();
    match &err {
        vitq_models::Error::Keys {
            missing,
            unexpected,
            mismatched,
            ..
        } => {
            assert!(missing.is_empty(), "{err}");
            for k in ["blocks.0.ls1.gamma", "blocks.1.ls2.gamma"] {
                assert!(unexpected.contains(&k.to_string()), "{err}");
            }
            for k in [
                "patch_embed.proj.weight",
                "pos_embed",
                "blocks.0.attn.qkv.weight",
                "blocks.1.mlp.fc2.weight",
                "head.weight",
            ] {
                assert!(mismatched.iter().any(|m| m.name == k), "{k}: {err}");
            }
        }
        other => panic!("expected Keys, got {other}"),
    }

    // The DINOv2 layout with the ViT weights: the layer-scales are missing.
    let vit = fixture("vit_tiny2.safetensors");
    let mut cfg = vit_tiny2_config();
    cfg.layer_scale = true;
    let err = ViT::<B>::from_weights(
        &cfg,
        WeightMap::from_checkpoint_prefixed(vit, "weights."),
        &Default::default(),
    )
    .unwrap_err();
    match &err {
        vitq_models::Error::Keys {
            missing,
            unexpected,
            mismatched,
            ..
        } => {
            assert_eq!(missing.len(), 4, "{err}");
            assert!(missing.contains(&"blocks.1.ls2.gamma".to_string()), "{err}");
            assert!(unexpected.is_empty() && mismatched.is_empty(), "{err}");
        }
        other => panic!("expected Keys, got {other}"),
    }
}

#[test]
fn input_shapes_are_checked() {
    let c = fixture("vit_tiny2.safetensors");
    let model = load(&vit_tiny2_config(), &c);
    for dims in [[1, 3, 30, 32], [1, 1, 32, 32], [0, 3, 32, 32]] {
        let x = Tensor::<B, 4>::zeros(dims, &Default::default());
        match model.try_forward(x) {
            Err(vitq_models::Error::Shape { got, .. }) => assert_eq!(got, dims.to_vec()),
            other => panic!("{dims:?}: expected Shape, got {other:?}"),
        }
    }
    // Another multiple of the patch: pos_embed resampled, 10 logits per image.
    let x = Tensor::<B, 4>::zeros([1, 3, 16, 24], &Default::default());
    assert_eq!(model.try_forward(x).unwrap().dims(), [1, 10]);
}

#[test]
fn presets_and_unknown_names() {
    for name in VIT_PRESETS {
        let cfg = ViTConfig::preset(name).unwrap();
        assert_eq!(cfg.name, name);
        assert_eq!(cfg.embed_dim % cfg.num_heads, 0, "{name}");
        assert_eq!(cfg.head_dim(), 64, "{name}");
        assert_eq!(cfg.mlp_dim, 4 * cfg.embed_dim, "{name}");
        assert_eq!(cfg.img_size % cfg.patch_size, 0, "{name}");
    }
    let d = ViTConfig::preset("dinov2_small").unwrap();
    assert_eq!((d.patch_size, d.img_size, d.num_classes), (14, 518, 0));
    assert!(d.layer_scale);
    let c = ViTConfig::preset("vit_cifar_large").unwrap();
    assert_eq!(
        (
            c.img_size,
            c.patch_size,
            c.embed_dim,
            c.depth,
            c.num_heads,
            c.mlp_dim
        ),
        (32, 4, 512, 24, 8, 2048)
    );
    match ViTConfig::preset("vit_huge") {
        Err(vitq_models::Error::UnknownModel { known, .. }) => {
            assert!(known.contains("deit_small_patch16_224"))
        }
        other => panic!("expected UnknownModel, got {other:?}"),
    }
}

#[test]
fn infer_reads_the_config_from_shapes() {
    let c = fixture("vit_tiny2.safetensors");
    let w = WeightMap::from_checkpoint_prefixed(c.clone(), "weights.");
    let mut cfg = ViTConfig::infer(&w).unwrap();
    // Heads are a guess (head_dim 64) for a width outside the presets.
    assert_eq!(cfg.num_heads, 1);
    cfg.num_heads = 4;
    assert_eq!(
        cfg,
        ViTConfig {
            name: "vit_d64_l2_p4".into(),
            ..vit_tiny2_config()
        }
    );
    let model = ViT::<B>::from_weights(&cfg, w, &Default::default()).unwrap();
    assert_close(
        "inferred logits",
        &values(model.forward(tensor4(&c, "input"))),
        want(&c, "logits"),
        F32_REL,
    );

    // DINOv2: layer-scale found, but a width of 48 has no head count.
    let d = fixture("dinov2_block.safetensors");
    let w = WeightMap::from_checkpoint_prefixed(d.clone(), "weights.");
    assert!(matches!(
        ViTConfig::infer(&w),
        Err(vitq_models::Error::Shape { .. })
    ));

    // A preset's shapes give the preset's name (zeros stand in for the weights).
    let p = ViTConfig::preset("deit_tiny_patch16_224").unwrap();
    let shapes: Vec<(String, Vec<usize>)> = vec![
        ("cls_token".into(), vec![1, 1, 192]),
        ("pos_embed".into(), vec![1, 197, 192]),
        ("patch_embed.proj.weight".into(), vec![192, 3, 16, 16]),
        ("blocks.0.norm1.weight".into(), vec![192]),
        ("blocks.0.attn.qkv.bias".into(), vec![576]),
        ("blocks.0.mlp.fc1.weight".into(), vec![768, 192]),
        ("head.weight".into(), vec![1000, 192]),
    ]
    .into_iter()
    .chain((1..12).map(|i| (format!("blocks.{i}.norm1.weight"), vec![192])))
    .collect();
    let inferred = ViTConfig::infer(&WeightMap::from_checkpoint(checkpoint(shapes))).unwrap();
    assert_eq!(inferred.name, "vit_tiny_patch16_224");
    assert_eq!(
        inferred,
        ViTConfig {
            name: "vit_tiny_patch16_224".into(),
            ..p
        }
    );
}

fn checkpoint(shapes: Vec<(String, Vec<usize>)>) -> Checkpoint {
    Checkpoint {
        path: "synthetic.safetensors".into(),
        tensors: shapes
            .into_iter()
            .map(|(name, shape)| FloatTensor {
                data: vec![0.0; shape.iter().product()],
                name,
                shape,
                stored_as: "F32".into(),
            })
            .collect(),
        skipped: Vec::new(),
    }
}

/// The fixture's weights under Hugging Face names (`prefix` + `ViTModel` / `Dinov2Model` keys), q, k
/// and v split out of the fused qkv; `head` becomes `classifier` unless dropped.
fn to_hf(c: &Checkpoint, dinov2: bool, prefix: &str, keep_head: bool) -> Checkpoint {
    let mut tensors = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, data: Vec<f32>| {
        tensors.push(FloatTensor {
            name,
            shape,
            data,
            stored_as: "F32".into(),
        })
    };
    for t in &c.tensors {
        let Some(k) = t.name.strip_prefix("weights.") else {
            continue;
        };
        let parts: Vec<&str> = k.split('.').collect();
        let new = match parts.as_slice() {
            ["cls_token"] => format!("{prefix}embeddings.cls_token"),
            ["pos_embed"] => format!("{prefix}embeddings.position_embeddings"),
            ["patch_embed", "proj", p] => {
                format!("{prefix}embeddings.patch_embeddings.projection.{p}")
            }
            ["norm", p] => format!("{prefix}layernorm.{p}"),
            ["head", p] if keep_head => format!("classifier.{p}"),
            ["head", _] => continue,
            ["blocks", i, rest @ ..] => {
                let l = format!("{prefix}encoder.layer.{i}");
                match (rest, dinov2) {
                    (["attn", "qkv", p], _) => {
                        let d = t.shape[0] / 3;
                        let per = t.data.len() / 3;
                        for (j, part) in ["query", "key", "value"].into_iter().enumerate() {
                            let mut shape = t.shape.clone();
                            shape[0] = d;
                            push(
                                format!("{l}.attention.attention.{part}.{p}"),
                                shape,
                                t.data[j * per..(j + 1) * per].to_vec(),
                            );
                        }
                        continue;
                    }
                    (["attn", "proj", p], _) => format!("{l}.attention.output.dense.{p}"),
                    (["norm1", p], false) => format!("{l}.layernorm_before.{p}"),
                    (["norm2", p], false) => format!("{l}.layernorm_after.{p}"),
                    (["mlp", "fc1", p], false) => format!("{l}.intermediate.dense.{p}"),
                    (["mlp", "fc2", p], false) => format!("{l}.output.dense.{p}"),
                    ([ls, "gamma"], true) => {
                        format!("{l}.layer_scale{}.lambda1", &ls[2..])
                    }
                    (_, true) => format!("{l}.{}", rest.join(".")),
                    _ => panic!("unmapped {k}"),
                }
            }
            _ => panic!("unmapped {k}"),
        };
        push(new, t.shape.clone(), t.data.clone());
    }
    let d = c.get("weights.cls_token").unwrap().shape[2];
    push(
        format!("{prefix}embeddings.mask_token"),
        vec![1, d],
        vec![0.0; d],
    );
    Checkpoint {
        path: c.path.clone(),
        tensors,
        skipped: Vec::new(),
    }
}

#[test]
fn hugging_face_vit_names_load() {
    let c = fixture("vit_tiny2.safetensors");
    let hf = to_hf(&c, false, "vit.", true);
    let w = WeightMap::from_checkpoint(hf);
    let inferred = ViTConfig::infer(&w).unwrap();
    assert_eq!(inferred.ln_eps, HF_VIT_LN_EPS);
    assert_eq!(
        (inferred.embed_dim, inferred.depth, inferred.num_classes),
        (64, 2, 10)
    );
    // The fixture is timm's (LN ε 1e-6), so the config says so.
    let model = ViT::<B>::from_weights(&vit_tiny2_config(), w, &Default::default()).unwrap();
    assert_close(
        "HF ViT logits",
        &values(model.forward(tensor4(&c, "input"))),
        want(&c, "logits"),
        F32_REL,
    );
}

#[test]
fn hugging_face_dinov2_names_load_as_a_backbone() {
    let c = fixture("dinov2_block.safetensors");
    let w = WeightMap::from_checkpoint(to_hf(&c, true, "", false));
    let inferred = ViTConfig::infer(&w);
    assert!(matches!(inferred, Err(vitq_models::Error::Shape { .. })));
    let cfg = dinov2_block_config().with_classes(0);
    let model = ViT::<B>::from_weights(&cfg, w, &Default::default()).unwrap();
    let x = tensor4(&c, "input_42");
    let norm = want(&c, "act.norm_42");
    assert_close(
        "HF DINOv2 last_hidden_state 42",
        &values(model.forward_features(x.clone())),
        norm,
        F32_REL,
    );
    // Backbone output: the class token of the final norm, [2, 48].
    let cls: Vec<f32> = norm
        .chunks_exact(10 * 48)
        .flat_map(|img| img[..48].to_vec())
        .collect();
    assert_close(
        "HF DINOv2 pooled 42",
        &values(model.forward(x)),
        &cls,
        F32_REL,
    );
}
