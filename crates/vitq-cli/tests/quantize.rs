//! End-to-end tests of `vitq quantize`, `vitq eval --quantized` and `vitq demo` on the vendored
//! ResNet-20 and CIFAR-10 slices, and their failures on bad input (non-zero exit, no output file).

mod common;

use common::{asset, last_json, vitq};

fn weights() -> String {
    asset("resnet20-cifar10/resnet20-12fca82f.safetensors")
}

fn calib() -> String {
    format!("cifar10:{}", asset("cifar10/calib_first512.bin"))
}

fn test_data() -> String {
    format!("cifar10:{}", asset("cifar10/test_first1000.bin"))
}

#[test]
fn quantize_then_eval_quantized() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r20-w8a8.safetensors");
    let out_s = out.to_string_lossy().into_owned();
    let q = last_json(&vitq(&[
        "quantize",
        "--model",
        "resnet20",
        "--weights",
        &weights(),
        "--config",
        "w8a8",
        "--calib",
        &calib(),
        "--calib-size",
        "64",
        "--out",
        &out_s,
        "--json",
    ]));
    assert_eq!(q["calibration_images"], 64);
    let ratio = q["ratio"].as_f64().unwrap();
    assert!(ratio < 0.27, "int8 file is {ratio}× the f32 file");
    assert_eq!(q["layers"].as_array().unwrap().len(), 20);
    assert_eq!(
        q["model_bytes"].as_u64().unwrap(),
        std::fs::metadata(&out).unwrap().len()
    );

    let e = last_json(&vitq(&[
        "eval",
        "--quantized",
        &out_s,
        "--data",
        &test_data(),
        "--limit",
        "200",
        "--json",
    ]));
    assert_eq!(e["model"], "resnet20");
    assert_eq!(e["bits"], 8);
    assert_eq!(e["model_bytes"], q["model_bytes"]);
    assert_eq!(e["total"], 200);
    let top1 = e["top1"].as_f64().unwrap();
    assert!(top1 > 0.85, "W8A8 top-1 on 200 test images: {top1}");
}

#[test]
fn quantize_failures_exit_non_zero_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q.safetensors");
    let out_s = out.to_string_lossy().into_owned();
    let w = weights();

    // Static activation quantization without calibration images.
    let r = vitq(&[
        "quantize",
        "--weights",
        &w,
        "--config",
        "w8a8",
        "--out",
        &out_s,
    ]);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("--calib"));

    // A config naming a layer that does not exist.
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "version = 1\nweights = { bits = 4 }\n[[overrides]]\npattern = \"layer9.conv1\"\nfloat = true\n",
    )
    .unwrap();
    let r = vitq(&[
        "quantize",
        "--weights",
        &w,
        "--config",
        &cfg.to_string_lossy(),
        "--out",
        &out_s,
    ]);
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("layer9.conv1") && err.contains("closest"),
        "{err}"
    );

    // Bits out of range.
    std::fs::write(&cfg, "version = 1\nweights = { bits = 9 }\n").unwrap();
    let r = vitq(&[
        "quantize",
        "--weights",
        &w,
        "--config",
        &cfg.to_string_lossy(),
        "--out",
        &out_s,
    ]);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains('9'));

    assert!(!out.exists(), "no output file after a failure");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "only bad.toml"
    );

    // A float checkpoint is not a quantized model.
    let r = vitq(&[
        "eval",
        "--quantized",
        &w,
        "--data",
        &test_data(),
        "--limit",
        "10",
    ]);
    assert!(!r.status.success());
}

#[test]
fn demo_prints_one_row_per_setting() {
    let r = last_json(&vitq(&[
        "demo",
        "--settings",
        "w8a8,nf4",
        "--calib-size",
        "64",
        "--json",
    ]));
    let rows = r["rows"].as_array().unwrap();
    let settings: Vec<&str> = rows
        .iter()
        .map(|r| r["setting"].as_str().unwrap())
        .collect();
    assert_eq!(settings, ["f32", "w8a8", "nf4"]);
    assert_eq!(
        rows[0]["correct"], 915,
        "the f32 ResNet-20 on the embedded test images"
    );
    for row in &rows[1..] {
        assert!(row["top1"].as_f64().unwrap() > 0.89, "{row}");
        assert!(row["size_ratio"].as_f64().unwrap() < 0.27, "{row}");
    }
    assert_eq!(rows[1]["paths"], "20 integer");
    assert_eq!(rows[2]["paths"], "20 weight-only");
}
