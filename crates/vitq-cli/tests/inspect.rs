//! End-to-end tests of `vitq inspect`: the JSON agrees with the library, bad files fail cleanly.

mod common;

use common::{last_json, vitq};
use safetensors::{Dtype, tensor::TensorView};
use vitq_core::metrics::sqnr_db;
use vitq_core::{Granularity, QuantSpec, QuantizedTensor, Scheme};

#[test]
fn json_report_matches_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let mut rng = vitq_core::synth::Rng::new(1);
    let w = rng.gaussian_vec(8 * 12);
    let wb: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
    let steps = 5i64.to_le_bytes();
    let bytes = safetensors::serialize(
        [
            (
                "fc.weight",
                TensorView::new(Dtype::F32, vec![8, 12], &wb).unwrap(),
            ),
            (
                "steps",
                TensorView::new(Dtype::I64, vec![1], &steps).unwrap(),
            ),
        ],
        None,
    )
    .unwrap();
    std::fs::write(&path, bytes).unwrap();

    let out = vitq(&["inspect", path.to_str().unwrap(), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = last_json(&out);
    assert_eq!(r["parameters"], 96);
    assert_eq!(r["skipped"][0]["name"], "steps");
    let t = &r["tensors"][0];
    assert_eq!(t["name"], "fc.weight");
    assert_eq!(t["settings"].as_array().unwrap().len(), 6);
    for s in t["settings"].as_array().unwrap() {
        let bits = s["bits"].as_u64().unwrap() as u32;
        let g = if s["granularity"] == "per_tensor" {
            Granularity::PerTensor
        } else {
            Granularity::PerChannel { axis: 0 }
        };
        let q = QuantizedTensor::quantize(
            &w,
            &[8, 12],
            &QuantSpec::new(bits, Scheme::Symmetric, g).unwrap(),
        )
        .unwrap();
        let expected = sqnr_db(&w, &q.dequantize().unwrap());
        assert!(
            (s["sqnr_db"].as_f64().unwrap() - expected).abs() < 1e-9,
            "{s}"
        );
        assert_eq!(s["bytes"].as_u64().unwrap() as usize, q.size_in_bytes());
    }
}

#[test]
fn embedded_default_runs_and_prints_a_table() {
    let out = vitq(&["inspect"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("layer3.2.conv2.weight"), "{text}");
    assert!(text.contains("model size"), "{text}");
    let r = last_json(&vitq(&["inspect", "--json", "--bits", "8,4"]));
    assert_eq!(r["parameters"], 270_000 + 1_098);
    assert_eq!(r["tensors"].as_array().unwrap().len(), 97);
}

#[test]
fn bad_input_fails_with_a_message_and_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("t.safetensors");
    std::fs::write(&truncated, b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":").unwrap();
    let pth = dir.path().join("w.pth");
    std::fs::write(&pth, b"PK").unwrap();
    let t = truncated.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["inspect", t], "not a valid safetensors file"),
        (vec!["inspect", pth.to_str().unwrap()], "PyTorch pickle"),
        (vec!["inspect", "/no/such/file.safetensors"], "I/O error"),
        (vec!["inspect", "--bits", "9"], "bit-width 9"),
        (
            vec!["inspect", "--calibration", "magic"],
            "unknown calibration",
        ),
    ];
    for (args, needle) in cases {
        let out = vitq(&args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
