//! ResNets against PyTorch on the same weights and inputs (fixtures from
//! `scripts/peer/export_model_fixtures.py`), and the real CIFAR-10 ResNet-20 accuracy.

mod common;

use common::*;
use vitq_models::data::{Cifar10, Normalize};
use vitq_models::metrics::Metrics;
use vitq_models::resnet::{ResNet, ResNetConfig, ResNetKind};
use vitq_models::weights::WeightMap;

#[test]
fn resnet20_cifar_matches_pytorch() {
    let c = fixture("resnet20_cifar.safetensors");
    let cfg = ResNetConfig::preset("resnet20").unwrap();
    let model = ResNet::<B>::from_weights(
        &cfg,
        WeightMap::from_checkpoint_prefixed(c.clone(), "weights."),
        &Default::default(),
    )
    .unwrap();
    let x = tensor4(&c, "input");
    assert_close(
        "pooled",
        &values(model.features(x.clone())),
        &c.get("act.pooled").unwrap().data,
        F32_REL,
    );
    assert_close(
        "logits",
        &values(model.forward(x)),
        &c.get("logits").unwrap().data,
        F32_REL,
    );
}

#[test]
fn resnet18_layout_matches_torchvision() {
    let c = fixture("resnet18_small.safetensors");
    let cfg = ResNetConfig {
        name: "resnet18-narrow".into(),
        kind: ResNetKind::ImageNet {
            layers: [2, 2, 2, 2],
            bottleneck: false,
            width: 4,
        },
        num_classes: 10,
    };
    let model = ResNet::<B>::from_weights(
        &cfg,
        WeightMap::from_checkpoint_prefixed(c.clone(), "weights."),
        &Default::default(),
    )
    .unwrap();
    let x = tensor4(&c, "input");
    assert_close(
        "pooled",
        &values(model.features(x.clone())),
        &c.get("act.pooled").unwrap().data,
        F32_REL,
    );
    assert_close(
        "logits",
        &values(model.forward(x)),
        &c.get("logits").unwrap().data,
        F32_REL,
    );
}

#[test]
fn wrong_checkpoints_list_every_problem() {
    let c = fixture("resnet18_small.safetensors");
    // A resnet20 built from resnet18 weights: missing `linear.*`, unexpected `fc.*`, wrong shapes.
    let cfg = ResNetConfig::preset("resnet20").unwrap();
    let err = ResNet::<B>::from_weights(
        &cfg,
        WeightMap::from_checkpoint_prefixed(c, "weights."),
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
            assert!(missing.contains(&"linear.weight".to_string()), "{err}");
            assert!(unexpected.contains(&"fc.weight".to_string()), "{err}");
            assert!(mismatched.iter().any(|m| m.name == "conv1.weight"), "{err}");
        }
        other => panic!("expected Keys, got {other}"),
    }
}

/// The pretrained ResNet-20 on the first 1000 CIFAR-10 test images: 915 correct, as in PyTorch, and the
/// same argmax as PyTorch on at least 999 images.
#[test]
fn pretrained_resnet20_scores_915_of_1000() {
    let (Some(weights), Some(data)) = (
        shared("weights/resnet20-cifar10/resnet20-12fca82f.safetensors"),
        shared("data/cifar10/test_first1000.bin"),
    ) else {
        return;
    };
    let device = Default::default();
    let cfg = ResNetConfig::preset("resnet20").unwrap();
    let model =
        ResNet::<B>::from_weights(&cfg, WeightMap::load(weights).unwrap(), &device).unwrap();
    let data = Cifar10::load(data).unwrap();
    let torch = fixture("resnet20_cifar10_test1000_predictions.safetensors");
    let torch_logits = &torch.get("logits").unwrap().data;
    let mut metrics = Metrics::new(10);
    let mut agree = 0;
    for start in (0..data.len()).step_by(100) {
        let logits = values(model.forward(data.batch::<B>(
            start..start + 100,
            Normalize::IMAGENET,
            &device,
        )));
        metrics.add_batch(&logits, &data.labels(start..start + 100));
        for (i, row) in logits.chunks_exact(10).enumerate() {
            let t = &torch_logits[(start + i) * 10..(start + i + 1) * 10];
            agree += usize::from(argmax(row) == argmax(t));
        }
    }
    eprintln!(
        "correct {} / 1000, argmax agreement with PyTorch {agree} / 1000",
        metrics.correct()
    );
    assert_eq!(metrics.correct(), 915);
    assert!(agree >= 999, "argmax agreement {agree}");
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

/// The original PyTorch `.th` checkpoint (a dict nesting `state_dict`, keys prefixed `module.`) loads
/// into the same model as its safetensors conversion: identical logits.
#[test]
fn pytorch_th_checkpoint_loads_like_safetensors() {
    let (Some(th), Some(st)) = (
        shared("weights/resnet20-cifar10/resnet20-12fca82f.th"),
        shared("weights/resnet20-cifar10/resnet20-12fca82f.safetensors"),
    ) else {
        return;
    };
    let device = Default::default();
    let cfg = ResNetConfig::preset("resnet20").unwrap();
    let a = ResNet::<B>::from_weights(&cfg, WeightMap::load(th).unwrap(), &device).unwrap();
    let b = ResNet::<B>::from_weights(&cfg, WeightMap::load(st).unwrap(), &device).unwrap();
    let x = tensor4(&fixture("resnet20_cifar.safetensors"), "input");
    assert_eq!(values(a.forward(x.clone())), values(b.forward(x)));
}

#[test]
fn corrupt_pytorch_files_are_data_errors() {
    let dir = std::env::temp_dir().join(format!("vitq-pth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("broken.pth");
    std::fs::write(&p, b"PK\x03\x04 this is not a zip").unwrap();
    let e = WeightMap::load(&p).unwrap_err();
    assert!(matches!(e, vitq_models::Error::Data { .. }), "{e}");
    let e = WeightMap::load(dir.join("absent.pth")).unwrap_err();
    assert!(matches!(e, vitq_models::Error::Io { .. }), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
