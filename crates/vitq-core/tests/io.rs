//! Quantized-model files: round trips, and every way a file can be bad.

use std::path::Path;

use vitq_core::io::{QuantFile, StoredTensor};
use vitq_core::synth::Rng;
use vitq_core::{Error, Granularity, QuantConfig, QuantSpec, QuantizedTensor, Scheme};

fn sample() -> QuantFile {
    let mut rng = Rng::new(9);
    let w = rng.gaussian_vec(16 * 72);
    let mut f = QuantFile::new(Some(QuantConfig::preset("w4a8").unwrap()));
    let specs = [
        (
            "sym8.pc",
            QuantSpec::new(8, Scheme::Symmetric, Granularity::PerChannel { axis: 0 }).unwrap(),
        ),
        (
            "asym3.pt",
            QuantSpec::new(3, Scheme::Asymmetric, Granularity::PerTensor).unwrap(),
        ),
        (
            "asym5.group",
            QuantSpec::new(
                5,
                Scheme::Asymmetric,
                Granularity::PerGroup { axis: 1, size: 8 },
            )
            .unwrap(),
        ),
        (
            "sym2.block",
            QuantSpec::new(2, Scheme::Symmetric, Granularity::PerBlock { size: 50 }).unwrap(),
        ),
        ("nf4.double", QuantSpec::nf4(true)),
        ("nf4.single", QuantSpec::nf4(false)),
    ];
    for (name, spec) in specs {
        f.insert_quantized(
            name,
            QuantizedTensor::quantize(&w, &[16, 72], &spec).unwrap(),
        );
    }
    f.insert_float("bias", vec![3], vec![1.0, -2.0, 0.5])
        .unwrap();
    f.metadata.insert("model".into(), "resnet20".into());
    f
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn is_format_error(e: &Error) -> bool {
    matches!(e, Error::Format { .. })
}

#[test]
fn round_trip_keeps_everything() {
    let dir = tmp();
    let path = dir.path().join("m.safetensors");
    let f = sample();
    f.save(&path).unwrap();
    let g = QuantFile::load(&path).unwrap();
    assert_eq!(g, f);
    for (name, t) in &g.tensors {
        if let (StoredTensor::Quantized(a), StoredTensor::Quantized(b)) = (t, &f.tensors[name]) {
            assert_eq!(a.dequantize().unwrap(), b.dequantize().unwrap(), "{name}");
        }
    }
    // The file costs its tensor bytes plus a small header.
    let on_disk = std::fs::metadata(&path).unwrap().len() as usize;
    assert!(
        on_disk >= f.size_in_bytes() && on_disk < f.size_in_bytes() + 4096,
        "{on_disk}"
    );
}

#[test]
fn truncated_files_are_format_errors() {
    let bytes = sample().to_bytes().unwrap();
    for cut in [0, 1, 7, 8, 20, bytes.len() / 2, bytes.len() - 1] {
        let e = QuantFile::from_bytes(&bytes[..cut], Path::new("cut.safetensors")).unwrap_err();
        assert!(is_format_error(&e), "cut at {cut}: {e}");
    }
}

#[test]
fn corrupt_files_are_format_errors() {
    let bytes = sample().to_bytes().unwrap();
    // Garbage in the header length, in the JSON header, and a plain text file.
    let mut a = bytes.clone();
    a[0..8].copy_from_slice(&u64::MAX.to_le_bytes());
    let mut b = bytes.clone();
    b[12] = b'}';
    for (what, data) in [
        ("length", a),
        ("header", b),
        ("text", b"hello world, not a model".to_vec()),
    ] {
        let e = QuantFile::from_bytes(&data, Path::new("bad")).unwrap_err();
        assert!(is_format_error(&e), "{what}: {e}");
    }
}

#[test]
fn mismatched_files_are_format_errors() {
    // A plain safetensors checkpoint (no vitq metadata).
    let plain = safetensors::serialize(
        [(
            "w",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &[0, 0, 0, 0])
                .unwrap(),
        )],
        None,
    )
    .unwrap();
    let e = QuantFile::from_bytes(&plain, Path::new("plain")).unwrap_err();
    assert!(e.to_string().contains("format"), "{e}");

    // Metadata that describes a shape the stored codes do not fit.
    let mut f = sample();
    let Some(StoredTensor::Quantized(q)) = f.tensors.remove("sym8.pc") else {
        panic!("sample has a quantized `sym8.pc`");
    };
    {
        // Same codes, claimed for a different shape: rebuild the file by hand.
        let bytes = {
            let mut h = QuantFile::new(None);
            h.insert_quantized("sym8.pc", q);
            h.to_bytes().unwrap()
        };
        // Same header length, same element count, but 18 channels instead of 16.
        let at = bytes
            .windows(7)
            .position(|w| w == b"[16,72]")
            .expect("shape in header");
        let mut edited = bytes.clone();
        edited[at..at + 7].copy_from_slice(b"[18,64]");
        let e = QuantFile::from_bytes(&edited, Path::new("shape")).unwrap_err();
        assert!(is_format_error(&e), "{e}");
        assert!(e.to_string().contains("sym8.pc"), "{e}");
    }
}

#[test]
fn failed_save_leaves_nothing_half_written() {
    let dir = tmp();
    // The target's folder does not exist.
    let missing = dir.path().join("no/such/dir/m.safetensors");
    assert!(matches!(sample().save(&missing), Err(Error::Io { .. })));
    assert!(!missing.exists());

    // The target is a non-empty directory: the rename fails, the directory is untouched and no
    // temporary file is left behind.
    let target = dir.path().join("m.safetensors");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep"), b"x").unwrap();
    assert!(matches!(sample().save(&target), Err(Error::Io { .. })));
    assert!(target.join("keep").exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");

    // Overwriting an existing good file replaces it whole.
    let good = dir.path().join("good.safetensors");
    sample().save(&good).unwrap();
    let mut f = sample();
    f.metadata.insert("run".into(), "2".into());
    f.save(&good).unwrap();
    assert_eq!(QuantFile::load(&good).unwrap().metadata["run"], "2");
}

#[test]
fn missing_file_is_an_io_error() {
    let e = QuantFile::load("/definitely/not/here.safetensors").unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
}
