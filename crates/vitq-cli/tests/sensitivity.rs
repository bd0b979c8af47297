//! End-to-end tests of `vitq sensitivity`, `vitq mixed` and `vitq pareto` on a few layers and a few
//! images of the vendored ResNet-20 and CIFAR-10 slices: outputs, resuming, the written config, and
//! failures (non-zero exit, no output file).

mod common;

use std::process::Output;

use common::{asset, last_json, vitq};
use vitq_core::QuantConfig;

fn failure(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Model, 12 test images, 16 calibration images.
fn base(extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "--model",
        "resnet20",
        "--weights",
        &asset("resnet20-cifar10/resnet20-12fca82f.safetensors"),
        "--data",
        &format!("cifar10:{}", asset("cifar10/test_first1000.bin")),
        "--calib",
        &format!("cifar10:{}", asset("cifar10/calib_first512.bin")),
        "--limit",
        "12",
        "--calib-size",
        "16",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn run(cmd: &str, extra: &[&str]) -> Output {
    let mut args = vec![cmd.to_string()];
    args.extend(base(extra));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    vitq(&refs)
}

#[test]
fn sensitivity_on_two_layers_resumes_without_reevaluating() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("sens.jsonl");
    let r = results.to_string_lossy().into_owned();
    let args = [
        "--layers",
        "conv1,linear",
        "--setting",
        "w4a4",
        "--resume",
        &r,
        "--json",
    ];
    let first = last_json(&run("sensitivity", &args));
    let s = &first["settings"][0];
    assert_eq!(s["setting"], "w4a4");
    assert_eq!(first["images"], 12);
    let layers = s["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    assert_eq!(layers[0]["layer"], "conv1");
    for l in layers {
        for mode in ["quantize_only", "float_only"] {
            let sc = &l[mode];
            assert!(sc["kl"].as_f64().unwrap() >= 0.0, "{sc}");
            assert!(sc["accuracy"].as_f64().unwrap() <= 1.0);
        }
    }
    // Uniform + 2 layers × 2 ablations.
    let text = std::fs::read_to_string(&results).unwrap();
    assert_eq!(text.lines().count(), 5);

    // A second run reads everything back: same numbers, nothing appended.
    let again = last_json(&run("sensitivity", &args));
    assert_eq!(again["settings"], first["settings"]);
    assert_eq!(std::fs::read_to_string(&results).unwrap(), text);

    // A run on other images cannot resume from this file.
    let mut other = base(&args);
    let i = other.iter().position(|a| a == "12").unwrap();
    other[i] = "13".into();
    let mut full = vec!["sensitivity".to_string()];
    full.extend(other);
    let refs: Vec<&str> = full.iter().map(String::as_str).collect();
    let err = failure(&vitq(&refs));
    assert!(err.contains("another results file"), "{err}");
}

#[test]
fn mixed_writes_a_config_that_quantize_takes_and_pareto_reuses_the_measurements() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("sens.jsonl");
    let r = results.to_string_lossy().into_owned();
    let toml = dir.path().join("mixed.toml");
    let t = toml.to_string_lossy().into_owned();
    let report = last_json(&run(
        "mixed",
        &[
            "--setting",
            "w4a8",
            "--candidates",
            "4,8",
            "--budget-bits",
            "6",
            "--out",
            &t,
            "--resume",
            &r,
            "--json",
        ],
    ));
    let avg = report["cost"]["avg_weight_bits"].as_f64().unwrap();
    assert!((4.0..=6.0).contains(&avg), "{report}");
    // 20 layers × 2 candidates.
    assert_eq!(
        std::fs::read_to_string(&results).unwrap().lines().count(),
        40
    );
    let cfg = QuantConfig::from_toml_str(&std::fs::read_to_string(&toml).unwrap()).unwrap();
    let picks = report["allocation"]["layers"].as_array().unwrap();
    assert_eq!(picks.len(), 20);
    for p in picks {
        let layer = p["layer"].as_str().unwrap();
        let bits = if p["candidate"] == "w8" { 8 } else { 4 };
        assert_eq!(
            cfg.resolve(layer).weights.unwrap().bits.get(),
            bits,
            "{layer}"
        );
        assert_eq!(cfg.resolve(layer).activations.unwrap().bits.get(), 8);
    }

    let q = dir.path().join("mixed.safetensors");
    let quantized = last_json(&vitq(&[
        "quantize",
        "--model",
        "resnet20",
        "--weights",
        &asset("resnet20-cifar10/resnet20-12fca82f.safetensors"),
        "--config",
        &t,
        "--calib",
        &format!("cifar10:{}", asset("cifar10/calib_first512.bin")),
        "--calib-size",
        "16",
        "--out",
        &q.to_string_lossy(),
        "--json",
    ]));
    assert_eq!(quantized["layers"].as_array().unwrap().len(), 20);

    // The Pareto run reuses the 40 measurements and adds one line per config evaluated.
    let csv = dir.path().join("p.csv");
    let png = dir.path().join("p.png");
    let points = last_json(&run(
        "pareto",
        &[
            "--setting",
            "w4a8",
            "--candidates",
            "4,8",
            "--uniform",
            "w8a8,@w4",
            "--mixed-bits",
            "6",
            "--csv",
            &csv.to_string_lossy(),
            "--out",
            &png.to_string_lossy(),
            "--resume",
            &r,
            "--json",
        ],
    ));
    assert_eq!(points.as_array().unwrap().len(), 4, "{points}");
    assert_eq!(
        std::fs::read_to_string(&results).unwrap().lines().count(),
        43
    );
    let csv_text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(csv_text.lines().count(), 5, "{csv_text}");
    assert!(csv_text.starts_with("name,kind,top1,weight_bytes"));
    assert_eq!(&std::fs::read(&png).unwrap()[1..4], b"PNG");
}

/// `--objective nuclear` allocates from calibration data alone: nothing is evaluated, so the results
/// file stays empty (and `pareto` adds only its whole configs). ResNet-20 has one linear layer (`linear`), the only one the nuclear-norm criteria
/// measure; its convolutions keep the setting's bits.
#[test]
fn mixed_with_the_nuclear_criterion_evaluates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("sens.jsonl");
    let toml = dir.path().join("nuclear.toml");
    let t = toml.to_string_lossy().into_owned();
    let report = last_json(&run(
        "mixed",
        &[
            "--setting",
            "w4a8",
            "--candidates",
            "4,8",
            "--objective",
            "nuclear",
            "--budget-bits",
            "6",
            "--out",
            &t,
            "--resume",
            &results.to_string_lossy(),
            "--json",
        ],
    ));
    assert_eq!(report["allocation"]["objective"], "nuclear perturbation");
    let picks = report["allocation"]["layers"].as_array().unwrap();
    let linear = picks.iter().find(|p| p["layer"] == "linear").unwrap();
    // 640 weights: 8 bits fit the budget and perturb the output less than 4.
    assert_eq!(linear["candidate"], "w8", "{report}");
    assert!(linear["score"].as_f64().unwrap() > 0.0, "{report}");
    let text = std::fs::read_to_string(&toml).unwrap();
    assert!(text.contains("Nuclear-norm mixed precision"), "{text}");
    let cfg = QuantConfig::from_toml_str(&text).unwrap();
    assert_eq!(cfg.resolve("linear").weights.unwrap().bits.get(), 8);
    assert_eq!(cfg.resolve("layer1.0.conv1").weights.unwrap().bits.get(), 4);
    let evaluated = std::fs::read_to_string(&results).map_or(0, |s| s.lines().count());
    assert_eq!(evaluated, 0);

    // `pareto` with the same objective evaluates only the whole configs: one uniform, one mixed.
    let points = last_json(&run(
        "pareto",
        &[
            "--setting",
            "w4a8",
            "--candidates",
            "4,8",
            "--objective",
            "nuclear",
            "--uniform",
            "w8a8",
            "--mixed-bits",
            "6",
            "--resume",
            &results.to_string_lossy(),
            "--json",
        ],
    ));
    let names: Vec<&str> = points
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["f32", "w8a8", "mix 6b"], "{points}");
    assert_eq!(
        std::fs::read_to_string(&results).unwrap().lines().count(),
        2
    );

    let err = failure(&run(
        "mixed",
        &["--objective", "nuclear-norms", "--budget-bits", "6"],
    ));
    assert!(err.contains("nuclear-norms"), "{err}");
}

#[test]
fn bad_input_fails_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.toml");
    let o = out.to_string_lossy().into_owned();
    let results = dir.path().join("r.jsonl");
    let r = results.to_string_lossy().into_owned();

    let err = failure(&run("sensitivity", &["--setting", "w9a9", "--resume", &r]));
    assert!(err.contains("w9a9"), "{err}");
    let err = failure(&run(
        "sensitivity",
        &["--layers", "layer9.*", "--resume", &r],
    ));
    assert!(err.contains("matches no layer"), "{err}");
    let err = failure(&run(
        "mixed",
        &["--candidates", "4,12", "--budget-bits", "5", "--out", &o],
    ));
    assert!(err.contains("12"), "{err}");
    let err = failure(&run("mixed", &["--budget-bytes", "lots", "--out", &o]));
    assert!(err.contains("budget-bytes"), "{err}");
    // No budget: clap refuses.
    failure(&run("mixed", &["--out", &o]));
    // A budget below every assignment fails before anything is measured.
    let err = failure(&run(
        "mixed",
        &[
            "--candidates",
            "4,8",
            "--budget-bits",
            "3",
            "--out",
            &o,
            "--resume",
            &r,
        ],
    ));
    assert!(err.contains("below the cheapest"), "{err}");
    let err = failure(&run(
        "mixed",
        &["--layers", "conv1", "--budget-bits", "5", "--out", &o],
    ));
    assert!(err.contains("--layers"), "{err}");
    let err = failure(&run(
        "pareto",
        &[
            "--uniform",
            "w8a8",
            "--mixed-bits",
            "3",
            "--candidates",
            "4,8",
        ],
    ));
    assert!(err.contains("--csv"), "{err}");
    assert!(!out.exists());
    assert!(!results.exists());
}
