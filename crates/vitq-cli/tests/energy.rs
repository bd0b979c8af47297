//! End-to-end tests of `vitq energy`: the JSON agrees with the library, bad input fails cleanly.

mod common;

use common::{last_json, vitq};
use vitq_core::QuantConfig;
use vitq_energy::{EnergyReport, EnergyTable, Network};

fn fails_with(args: &[&str], needle: &str) {
    let out = vitq(args);
    assert!(!out.status.success(), "{args:?} succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(needle), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

#[test]
fn resnet20_w8a8_json_matches_the_library() {
    let r = last_json(&vitq(&[
        "energy", "--model", "resnet20", "--config", "w8a8", "--json",
    ]));
    let net = Network::from_preset("resnet20", None).unwrap();
    let table = EnergyTable::default();
    let lib = EnergyReport::new(&net, &QuantConfig::preset("w8a8").unwrap(), &table).unwrap();
    let f32 = EnergyReport::float32(&net, &table).unwrap();

    assert_eq!(r["macs"].as_u64().unwrap(), net.counts().unwrap().macs);
    assert_eq!(r["macs"].as_u64().unwrap(), 40_551_040);
    assert_eq!(r["weight_bytes"].as_u64().unwrap(), lib.totals.weight_bytes);
    assert_eq!(r["input_size"], serde_json::json!([32, 32]));
    assert_eq!(r["config"], "w8a8");
    assert!(rel(r["energy_pj"].as_f64().unwrap(), lib.energy_pj()) < 1e-12);
    assert!(rel(r["energy_pj_f32"].as_f64().unwrap(), f32.energy_pj()) < 1e-12);
    let reduction = r["reduction"].as_f64().unwrap();
    assert!(reduction > 1.0, "{reduction}");
    assert!(
        rel(
            reduction,
            r["energy_pj_f32"].as_f64().unwrap() / r["energy_pj"].as_f64().unwrap()
        ) < 1e-12
    );

    let layers = r["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 20);
    assert_eq!(layers[0]["name"], "conv1");
    assert_eq!(layers[19]["name"], "linear");
    assert_eq!(layers[1]["weight_precision"], "int8");
    assert_eq!(layers[1]["activation_precision"], "int8");
    assert_eq!(layers[1]["op"]["kind"], "conv2d");
    let sum: f64 = layers
        .iter()
        .map(|l| l["energy_pj"].as_f64().unwrap())
        .sum();
    assert!(rel(sum, r["energy_pj"].as_f64().unwrap()) < 1e-9);
    let macs: u64 = layers.iter().map(|l| l["macs"].as_u64().unwrap()).sum();
    assert_eq!(macs, 40_551_040);
}

#[test]
fn float_by_default_and_a_table_for_people() {
    let r = last_json(&vitq(&["energy", "--model", "resnet20", "--json"]));
    assert_eq!(r["config"], "f32");
    assert_eq!(r["reduction"].as_f64().unwrap(), 1.0);
    assert_eq!(r["layers"][0]["weight_precision"], "fp32");

    let out = vitq(&[
        "energy",
        "--model",
        "deit_tiny_patch16_224",
        "--config",
        "w4a8",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "blocks.11.attn.matmul_qk",
        "patch_embed.proj",
        "int4/int8",
        "1.25 G MACs",
        "less energy with w4a8",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in\n{text}");
    }
}

#[test]
fn config_files_input_sizes_and_tables() {
    let dir = tempfile::tempdir().unwrap();
    // Mixed precision: the classifier stays in float.
    let cfg = dir.path().join("mixed.toml");
    std::fs::write(
        &cfg,
        "version = 1\nweights = { bits = 4 }\nactivations = { bits = 8, scheme = { kind = \"asymmetric\" } }\n\n[[overrides]]\npattern = \"head\"\nfloat = true\n",
    )
    .unwrap();
    let r = last_json(&vitq(&[
        "energy",
        "--model",
        "vit_cifar_tiny",
        "--config",
        cfg.to_str().unwrap(),
        "--input-size",
        "64",
        "--json",
    ]));
    let layers = r["layers"].as_array().unwrap();
    let head = layers.last().unwrap();
    assert_eq!(head["name"], "head");
    assert_eq!(head["weight_precision"], "fp32");
    assert_eq!(layers[1]["weight_precision"], "int4");
    // 64×64 in patches of 4: 1 + 16² tokens.
    assert_eq!(layers[1]["op"]["rows"], 257);

    // Activations on chip: cheaper than the default DRAM for the same model and config.
    let table = dir.path().join("sram.toml");
    std::fs::write(&table, "name = \"on-chip\"\nactivations_from = \"sram\"\n").unwrap();
    let args = [
        "energy", "--model", "resnet20", "--config", "w8a8", "--json",
    ];
    let dram = last_json(&vitq(&args));
    let sram = last_json(&vitq(
        &[&args[..], &["--table", table.to_str().unwrap()]].concat(),
    ));
    assert_eq!(sram["table"]["name"], "on-chip");
    assert!(sram["energy_pj"].as_f64().unwrap() < dram["energy_pj"].as_f64().unwrap());
    assert_eq!(sram["macs"], dram["macs"]);
}

#[test]
fn bad_input_fails_cleanly() {
    fails_with(
        &["energy", "--model", "resnet21"],
        "unknown model `resnet21`",
    );
    fails_with(
        &[
            "energy",
            "--model",
            "vit_base_patch16_224",
            "--input-size",
            "100",
        ],
        "multiples of the patch size 16",
    );
    fails_with(
        &["energy", "--model", "resnet20", "--input-size", "0"],
        "cannot take a 0×0 input",
    );
    fails_with(
        &["energy", "--model", "resnet20", "--config", "w3a3"],
        "w3a3",
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "int8_mult_pj = -0.2\n").unwrap();
    fails_with(
        &[
            "energy",
            "--model",
            "resnet20",
            "--table",
            bad.to_str().unwrap(),
        ],
        "int8_mult_pj",
    );
    std::fs::write(&bad, "int8_mul_pj = 0.2\n").unwrap();
    fails_with(
        &[
            "energy",
            "--model",
            "resnet20",
            "--table",
            bad.to_str().unwrap(),
        ],
        "int8_mul_pj",
    );
    fails_with(
        &[
            "energy",
            "--model",
            "resnet20",
            "--table",
            "/nonexistent/table.toml",
        ],
        "/nonexistent/table.toml",
    );

    // An override that matches no layer of this model names the closest ones.
    let cfg = dir.path().join("typo.toml");
    std::fs::write(
        &cfg,
        "version = 1\nweights = { bits = 8 }\n\n[[overrides]]\npattern = \"layer1.0.cnv1\"\nfloat = true\n",
    )
    .unwrap();
    fails_with(
        &[
            "energy",
            "--model",
            "resnet20",
            "--config",
            cfg.to_str().unwrap(),
        ],
        "layer1.0.conv1",
    );
}
