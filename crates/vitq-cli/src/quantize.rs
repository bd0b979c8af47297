//! `vitq quantize`: post-training quantization of a float model into one file.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::backend::Flex;
use burn::tensor::Tensor;
use serde::Serialize;
use vitq_core::QuantConfig;
use vitq_models::zoo::Model;

use crate::eval::{Dataset, ModelArgs, progress_bar};

type B = Flex;

/// Calibration images used when `--calib-size` is not given.
pub const DEFAULT_CALIB_SIZE: usize = 256;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// A preset (w8a8, w6a6, w4a8, w4a4, w8, w4, nf4, int8-dynamic) or a TOML / JSON config file.
    #[arg(long)]
    config: String,
    /// Calibration images: `cifar10:<file.bin>`, `imagefolder:<dir>` or `imagenet:<dir>` (never the
    /// evaluation set). Not needed for weight-only and dynamic configs.
    #[arg(long)]
    calib: Option<String>,
    /// How many calibration images to use (the first N).
    #[arg(long, default_value_t = DEFAULT_CALIB_SIZE)]
    calib_size: usize,
    /// Images per calibration batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Output file (safetensors; written atomically).
    #[arg(long)]
    out: PathBuf,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    model: String,
    config: String,
    out: String,
    calibration_images: usize,
    seconds: f64,
    model_bytes: u64,
    float_bytes: u64,
    ratio: f64,
    layers: Vec<LayerReport>,
}

#[derive(Serialize)]
struct LayerReport {
    name: String,
    weight_bits: Option<u32>,
    activation_bits: Option<u32>,
}

/// Quantizes `model` with `config`, calibrating on the first `calib_size` images of `calib`.
pub fn quantize_model(
    model: Model<B>,
    config: &QuantConfig,
    calib: Option<&Dataset>,
    calib_size: usize,
    batch: usize,
    quiet: bool,
) -> Result<(Model<B>, usize)> {
    let batches: Vec<Tensor<B, 4>> = match calib {
        Some(data) if config.needs_calibration() => {
            let n = calib_size.min(data.len());
            (0..n)
                .step_by(batch.max(1))
                .map(|lo| data.batch(lo..(lo + batch).min(n), &model).map(|(x, _)| x))
                .collect::<Result<_>>()?
        }
        _ => Vec::new(),
    };
    let images: usize = batches.iter().map(|b| b.dims()[0]).sum();
    let bar = progress_bar(images, "calibration images", quiet);
    let q = model
        .quantize(config, batches, &mut |n| bar.set_position(n as u64))
        .map_err(|e| match e {
            vitq_models::Error::Core(c) if matches!(c.root(), vitq_core::Error::Empty { .. }) => {
                anyhow::anyhow!("{c}; give calibration images with --calib")
            }
            other => other.into(),
        })?;
    bar.finish_and_clear();
    Ok((q, images))
}

pub fn run(args: &Args) -> Result<()> {
    if args.model.quantized.is_some() {
        bail!("`vitq quantize` takes a float model (--model / --weights), not --quantized");
    }
    if args.calib_size == 0 || args.batch == 0 {
        bail!("--calib-size and --batch must be at least 1");
    }
    let config = QuantConfig::from_preset_or_path(&args.config)
        .with_context(|| format!("reading config `{}`", args.config))?;
    let loaded = args.model.load_with_size()?;
    let calib = args.calib.as_deref().map(Dataset::parse).transpose()?;
    if let Some(c) = &calib
        && c.is_empty()
    {
        bail!(
            "the calibration set {} is empty",
            args.calib.as_deref().unwrap_or("")
        );
    }
    let start = Instant::now();
    let name = loaded.model.name().to_string();
    let (q, images) = quantize_model(
        loaded.model,
        &config,
        calib.as_ref(),
        args.calib_size,
        args.batch,
        args.json,
    )?;
    let bytes = q
        .save_quantized(&args.out, &config)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let report = Report {
        model: name,
        config: args.config.clone(),
        out: args.out.display().to_string(),
        calibration_images: images,
        seconds: start.elapsed().as_secs_f64(),
        model_bytes: bytes,
        float_bytes: loaded.model_bytes,
        ratio: bytes as f64 / loaded.model_bytes as f64,
        layers: q
            .layer_bits()
            .into_iter()
            .map(|(name, weight_bits, activation_bits)| LayerReport {
                name,
                weight_bits,
                activation_bits,
            })
            .collect(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_report(&report, &args.out);
    }
    Ok(())
}

fn print_report(r: &Report, out: &Path) {
    let bits = |b: Option<u32>| b.map_or("f32".to_string(), |b| format!("{b}-bit"));
    println!("{:<32} {:>8} {:>12}", "layer", "weights", "activations");
    for l in &r.layers {
        println!(
            "{:<32} {:>8} {:>12}",
            l.name,
            bits(l.weight_bits),
            bits(l.activation_bits)
        );
    }
    println!(
        "\n{} quantized with {} ({} calibration images) in {:.1} s",
        r.model, r.config, r.calibration_images, r.seconds
    );
    println!(
        "wrote {}: {} bytes, {:.3}× the float file ({} bytes)",
        out.display(),
        r.model_bytes,
        r.ratio,
        r.float_bytes
    );
}
