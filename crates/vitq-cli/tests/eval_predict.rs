//! End-to-end tests of `vitq eval` and `vitq predict` on the real ResNet-20 (skipped where
//! `../shared` is absent) and on bad input.

mod common;

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use common::vitq;
use safetensors::{Dtype, tensor::TensorView};
use vitq_core::checkpoint::Checkpoint;
use vitq_models::zoo::Model;

fn shared(rel: &str) -> Option<PathBuf> {
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

fn embedded_weights() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../assets/resnet20-cifar10/resnet20-12fca82f.safetensors")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn eval_json_reports_accuracy_of_real_resnet20() {
    let Some(data) = shared("data/cifar10/test_first1000.bin") else {
        return;
    };
    let data = format!("cifar10:{}", data.display());
    let out = vitq(&[
        "eval",
        "--model",
        "resnet20",
        "--weights",
        &embedded_weights(),
        "--data",
        &data,
        "--limit",
        "200",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let r: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    for key in [
        "model",
        "top1",
        "top5",
        "f1",
        "correct",
        "total",
        "images_per_second",
    ] {
        assert!(r.get(key).is_some(), "missing {key}: {r}");
    }
    assert_eq!(r["total"], 200);
    let correct = r["correct"].as_u64().unwrap();
    assert!((170..=195).contains(&correct), "{correct} of 200");
    assert!((r["top1"].as_f64().unwrap() - correct as f64 / 200.0).abs() < 1e-12);
}

#[test]
fn predict_writes_the_same_logits_as_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.safetensors");
    let output = dir.path().join("out.safetensors");
    let x = vitq_core::synth::Rng::new(4).gaussian_vec(2 * 3 * 32 * 32);
    let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let file = safetensors::serialize(
        [(
            "input",
            TensorView::new(Dtype::F32, vec![2, 3, 32, 32], &bytes).unwrap(),
        )],
        None,
    )
    .unwrap();
    std::fs::write(&input, file).unwrap();
    let w = embedded_weights();
    let out = vitq(&[
        "predict",
        "--model",
        "resnet20",
        "--weights",
        &w,
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = Checkpoint::load(&output).unwrap();
    let logits = got.get("logits").unwrap();
    assert_eq!(logits.shape, vec![2, 10]);
    let device = Default::default();
    let model = Model::<Flex>::load("resnet20", &w, &device).unwrap();
    let want: Vec<f32> = model
        .forward(Tensor::from_data(
            TensorData::new(x, [2, 3, 32, 32]),
            &device,
        ))
        .unwrap()
        .into_data()
        .into_vec()
        .unwrap();
    assert_eq!(logits.data, want);
}

#[test]
fn bad_input_fails_cleanly_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let w = embedded_weights();
    let bad_shape = dir.path().join("bad.safetensors");
    let bytes = vec![0u8; 4 * 2 * 32 * 32];
    std::fs::write(
        &bad_shape,
        safetensors::serialize(
            [(
                "input",
                TensorView::new(Dtype::F32, vec![2, 32, 32], &bytes).unwrap(),
            )],
            None,
        )
        .unwrap(),
    )
    .unwrap();
    let no_input = dir.path().join("none.safetensors");
    std::fs::write(
        &no_input,
        safetensors::serialize(
            [("x", TensorView::new(Dtype::F32, vec![1], &[0; 4]).unwrap())],
            None,
        )
        .unwrap(),
    )
    .unwrap();
    let truncated = dir.path().join("t.bin");
    std::fs::write(&truncated, vec![1u8; 3073 + 5]).unwrap();
    let out_path = dir.path().join("out.safetensors");
    let out = out_path.to_str().unwrap();
    let cifar = format!("cifar10:{}", truncated.display());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "predict",
                "--model",
                "resnet20",
                "--weights",
                &w,
                "--input",
                bad_shape.to_str().unwrap(),
                "--output",
                out,
            ],
            "[N, 3, H, W]",
        ),
        (
            vec![
                "predict",
                "--model",
                "resnet20",
                "--weights",
                &w,
                "--input",
                no_input.to_str().unwrap(),
                "--output",
                out,
            ],
            "no tensor named `input`",
        ),
        (
            vec![
                "predict",
                "--model",
                "vit_huge",
                "--weights",
                &w,
                "--input",
                bad_shape.to_str().unwrap(),
                "--output",
                out,
            ],
            "[N, 3, H, W]",
        ),
        (
            vec![
                "eval",
                "--model",
                "resnet99",
                "--weights",
                &w,
                "--data",
                "cifar10:x.bin",
            ],
            "unknown model `resnet99`",
        ),
        (
            vec![
                "eval",
                "--model",
                "resnet18",
                "--weights",
                &w,
                "--data",
                "cifar10:x.bin",
            ],
            "does not fit resnet18",
        ),
        (
            vec![
                "eval",
                "--model",
                "resnet20",
                "--weights",
                &w,
                "--data",
                &cifar,
            ],
            "not a whole number",
        ),
        (
            vec![
                "eval",
                "--model",
                "resnet20",
                "--weights",
                &w,
                "--data",
                "mnist:x",
            ],
            "unknown dataset",
        ),
    ];
    for (args, needle) in cases {
        let r = vitq(&args);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success(), "{args:?} should fail");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(!out_path.exists(), "{args:?} left an output file");
    }
}
