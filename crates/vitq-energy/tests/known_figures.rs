//! MAC counts against published figures.
//!
//! What is counted: the multiply-accumulates of every convolution, linear layer and attention matmul
//! (`Q·Kᵀ` and `softmax·V`), for one image; nothing else (no BatchNorm — folded —, ReLU, pooling,
//! residual adds, LayerNorm, softmax, GELU). The published figures below count the same GEMM work
//! (torchvision's "GFLOPS" are multiply-accumulates, as are timm's GMACs); a figure given to `d`
//! decimals is matched to within half a unit of its last digit, i.e. the count rounds to it.

use vitq_energy::{Layer, Network};

fn macs(preset: &str) -> u64 {
    Network::from_preset(preset, None)
        .unwrap()
        .counts()
        .unwrap()
        .macs
}

/// `value` (in units of `unit`) rounds to `published` given to `decimals` places.
fn rounds_to(value: u64, unit: f64, published: f64, decimals: i32) -> bool {
    let v = value as f64 / unit;
    (v - published).abs() <= 0.5 * 10f64.powi(-decimals) + 1e-12
}

#[test]
fn vit_b16_at_224_is_17_56_gmacs() {
    // torchvision docs, `vit_b_16` / ViT_B_16_Weights.IMAGENET1K_V1: "GFLOPS 17.56"
    // (https://pytorch.org/vision/stable/models/generated/torchvision.models.vit_b_16.html); the timm
    // model card of vit_base_patch16_224 rounds the same count to "GMACs: 17.6". Same architecture:
    // 197 tokens, 12 blocks of width 768, MLP 3072, a 1000-class head.
    let m = macs("vit_base_patch16_224");
    assert_eq!(m, 17_563_828_224);
    assert!(rounds_to(m, 1e9, 17.56, 2), "{m}");
    assert!(rounds_to(m, 1e9, 17.6, 1), "{m}");
    // The attention matmuls are part of that figure: without them (12 · 2 · 197² · 768 MACs) the
    // count would be 16.85 G.
    let attn = 12 * 2 * 197 * 197 * 768;
    assert!(!rounds_to(m - attn, 1e9, 17.56, 2));
}

#[test]
fn vit_l16_at_224_is_61_55_gmacs() {
    // torchvision docs, `vit_l_16` / ViT_L_16_Weights.IMAGENET1K_V1: "GFLOPS 61.55".
    let m = macs("vit_large_patch16_224");
    assert!(rounds_to(m, 1e9, 61.55, 2), "{m}");
}

#[test]
fn deit_tiny_is_1_25_gmacs() {
    // timm model card of deit_tiny_patch16_224.fb_in1k: "GMACs: 1.3"
    // (https://huggingface.co/timm/deit_tiny_patch16_224.fb_in1k).
    let m = macs("deit_tiny_patch16_224");
    assert_eq!(m, 1_253_683_200);
    assert!(rounds_to(m, 1e9, 1.3, 1), "{m}");
    // The reference figure, ≈ 1.26 G, within 1 %: the 0.5 % gap is the non-GEMM work
    // (LayerNorm, softmax, GELU) that profilers such as fvcore add and this count leaves out.
    assert!((m as f64 / 1e9 - 1.26).abs() / 1.26 < 0.01, "{m}");
}

#[test]
fn torchvision_resnets() {
    // torchvision docs: ResNet18_Weights.IMAGENET1K_V1 "GFLOPS 1.81", ResNet50_Weights.IMAGENET1K_V1
    // "GFLOPS 4.09" (v1.5: the stride on the 3×3 conv, as vitq-models builds it).
    let r18 = macs("resnet18");
    assert_eq!(r18, 1_814_073_344);
    assert!(rounds_to(r18, 1e9, 1.81, 2));
    assert!(rounds_to(macs("resnet50"), 1e9, 4.09, 2));
}

#[test]
fn cifar_resnets() {
    // ResNet-20 with option-A (parameter-free) shortcuts — He et al. 2016 §4.2, Idelbayev's
    // pytorch_resnet_cifar10 whose weights vitq vendors — is 40.55 M MACs:
    // conv1 0.44 M + 3 stages × 4.72 M (stage 1), 4.33 M (stages 2, 3) + 640 for the classifier.
    let r20 = macs("resnet20");
    assert_eq!(r20, 40_551_040);
    assert!(rounds_to(r20, 1e6, 40.55, 2));
    // chenyaofo/pytorch-cifar-models (README at commit 786c162, "#MAdds": conv and linear layers only)
    // lists resnet20 at 40.81 M and resnet56 at 125.75 M; its blocks use 1×1 projection shortcuts
    // (option B). Adding those two strided 1×1 convolutions to our option-A networks gives its
    // figures exactly.
    for (preset, published) in [("resnet20", 40.81), ("resnet56", 125.75)] {
        let mut net = Network::from_preset(preset, None).unwrap();
        net.layers.extend([
            Layer::conv2d("layer2.0.downsample.0", 16, 32, 1, 2, 0, [32, 32], false).unwrap(),
            Layer::conv2d("layer3.0.downsample.0", 32, 64, 1, 2, 0, [16, 16], false).unwrap(),
        ]);
        let m = net.counts().unwrap().macs;
        assert!(rounds_to(m, 1e6, published, 2), "{preset}: {m}");
    }
}

#[test]
fn counts_scale_with_the_input() {
    // Convolutions scale with the pixel count: ResNet-20 at 64×64 does 4× the MACs (the classifier
    // is 640 either way).
    let at64 = Network::from_preset("resnet20", Some(64))
        .unwrap()
        .counts()
        .unwrap()
        .macs;
    assert_eq!(at64 - 640, 4 * (40_551_040 - 640));
    // ViT linear layers scale with tokens, attention matmuls with tokens²: DINOv2-S at its own 518
    // (1 + 37² = 1370 tokens) and at 224 (1 + 16² = 257 tokens).
    let dino = |s| {
        Network::from_preset("dinov2_small", Some(s))
            .unwrap()
            .counts()
            .unwrap()
            .macs
    };
    let expected = |n: u64| {
        let d = 384u64;
        let patch = (n - 1) * d * 3 * 14 * 14;
        let block = n * d * 3 * d + n * d * d + 2 * n * d * 4 * d + 2 * n * n * d;
        patch + 12 * block // no head: a backbone
    };
    assert_eq!(dino(518), expected(1370));
    assert_eq!(dino(224), expected(257));
}
