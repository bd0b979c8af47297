//! Quantize a ViT-B/16-shaped MLP weight (3072 × 768, Gaussian like a trained layer) with every
//! weight preset, print error and size, and round-trip one through a file.
//!
//! `cargo run --release -p vitq-examples --example quantize_weights`

use anyhow::Result;
use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use vitq_core::io::{QuantFile, StoredTensor};
use vitq_core::metrics::sqnr_db;
use vitq_core::synth::Rng;
use vitq_core::uniform::tensor_to_vec;
use vitq_core::{QuantConfig, QuantizedTensor, config::PRESETS};

fn main() -> Result<()> {
    let device = Default::default();
    let (rows, cols) = (3072, 768);
    let data: Vec<f32> = Rng::new(0)
        .gaussian_vec(rows * cols)
        .iter()
        .map(|v| v * 0.02)
        .collect();
    let w = Tensor::<Flex, 2>::from_data(TensorData::new(data.clone(), [rows, cols]), &device);
    let f32_bytes = 4 * rows * cols;

    println!(
        "{:<14} {:>5} {:>12} {:>10} {:>10}",
        "preset", "bits", "bytes", "ratio", "SQNR dB"
    );
    let mut keep = None;
    for name in PRESETS {
        let config = QuantConfig::preset(name)?;
        let Some(spec) = config.weights else { continue };
        let q = QuantizedTensor::from_tensor(&w, &spec)?;
        let back: Tensor<Flex, 2> = q.to_tensor(&device)?;
        let (back, _) = tensor_to_vec(&back)?;
        println!(
            "{:<14} {:>5} {:>12} {:>10.3} {:>10.2}",
            name,
            spec.bits,
            q.size_in_bytes(),
            q.size_in_bytes() as f64 / f32_bytes as f64,
            sqnr_db(&data, &back)
        );
        if name == "nf4" {
            keep = Some((config, q));
        }
    }

    if let Some((config, q)) = keep {
        let path = std::env::temp_dir().join("vitq-example-nf4.safetensors");
        let mut file = QuantFile::new(Some(config));
        file.insert_quantized("blocks.0.mlp.fc1.weight", q.clone());
        file.save(&path)?;
        let loaded = QuantFile::load(&path)?;
        let same = matches!(loaded.tensors.get("blocks.0.mlp.fc1.weight"), Some(StoredTensor::Quantized(l)) if *l == q);
        println!(
            "\nsaved {} ({} bytes on disk), reloaded identical: {same}",
            path.display(),
            std::fs::metadata(&path)?.len()
        );
        std::fs::remove_file(&path)?;
    }
    Ok(())
}
