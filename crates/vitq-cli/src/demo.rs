//! `vitq demo`: the embedded default, end to end. The vendored CIFAR-10 ResNet-20 is quantized with each
//! setting (calibrating on the embedded training images), written to a file, loaded back from it,
//! evaluated on the 1,000 embedded test images, and compared with f32 in one table.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::backend::Flex;
use serde::Serialize;
use vitq_core::QuantConfig;
use vitq_core::checkpoint::Checkpoint;
use vitq_models::data::Cifar10;
use vitq_models::zoo::Model;

use crate::assets;
use crate::eval::{Dataset, evaluate, progress_bar};
use crate::quantize::quantize_model;

type B = Flex;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Settings to compare with f32: presets or TOML / JSON config files, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "w8a8,w6a6,w4a8,w4a4,w8,w4,nf4,int8-dynamic"
    )]
    settings: Vec<String>,
    /// Calibration images (of the 512 embedded).
    #[arg(long, default_value_t = crate::quantize::DEFAULT_CALIB_SIZE)]
    calib_size: usize,
    /// Keep the quantized files in this folder (default: a temporary folder, removed at the end).
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Row {
    setting: String,
    top1: f64,
    top5: f64,
    correct: usize,
    total: usize,
    model_bytes: u64,
    size_ratio: f64,
    ms_per_image: f64,
    speedup: f64,
    /// How the quantized layers run: integer, simulated, weight-only (counts).
    paths: String,
}

#[derive(Serialize)]
struct Report {
    model: String,
    calibration_images: usize,
    test_images: usize,
    threads: usize,
    seconds: f64,
    rows: Vec<Row>,
}

const EVAL_BATCH: usize = 100;

pub fn run(args: &Args) -> Result<()> {
    let start = std::time::Instant::now();
    if args.calib_size == 0 {
        bail!("--calib-size must be at least 1");
    }
    let device = Default::default();
    let ckpt = Checkpoint::from_bytes(assets::RESNET20, Path::new(assets::RESNET20_NAME))?;
    let float = Model::<B>::from_checkpoint("resnet20", ckpt, &device)?;
    let test = Dataset::Cifar10(Cifar10::from_bytes(
        assets::CIFAR10_TEST.to_vec(),
        Path::new("assets/cifar10/test_first1000.bin (embedded)"),
    )?);
    let calib = Dataset::Cifar10(Cifar10::from_bytes(
        assets::CIFAR10_CALIB.to_vec(),
        Path::new("assets/cifar10/calib_first512.bin (embedded)"),
    )?);
    let configs = args
        .settings
        .iter()
        .map(|s| QuantConfig::from_preset_or_path(s).with_context(|| format!("setting `{s}`")))
        .collect::<Result<Vec<_>>>()?;
    let temp;
    let dir = match &args.keep {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.as_path()
        }
        None => {
            temp = tempfile::tempdir().context("creating a temporary folder")?;
            temp.path()
        }
    };
    let total = test.len();
    let float_bytes = assets::RESNET20.len() as u64;
    let quiet = args.json;
    let say = |s: String| {
        if !quiet {
            eprintln!("{s}");
        }
    };

    say(format!(
        "ResNet-20 (CIFAR-10): f32 and {} settings, {} calibration images, {total} test images",
        configs.len(),
        args.calib_size.min(calib.len())
    ));
    let (m, speed) = evaluate(
        &float,
        &test,
        total,
        EVAL_BATCH,
        &progress_bar(total, "f32", quiet),
    )?;
    let f32_ms = speed.median_ms_per_image;
    let mut rows = vec![Row {
        setting: "f32".into(),
        top1: m.top1(),
        top5: m.top5(),
        correct: m.correct(),
        total: m.total(),
        model_bytes: float_bytes,
        size_ratio: 1.0,
        ms_per_image: f32_ms,
        speedup: 1.0,
        paths: "float".into(),
    }];
    for (setting, config) in args.settings.iter().zip(&configs) {
        say(format!(
            "{setting}: calibrating, quantizing, saving, evaluating"
        ));
        let (q, _) = quantize_model(
            float.clone(),
            config,
            Some(&calib),
            args.calib_size,
            64,
            quiet,
        )
        .with_context(|| format!("quantizing with {setting}"))?;
        let file = dir.join(format!(
            "resnet20-{}.safetensors",
            setting.replace(['/', '\\', '.'], "_")
        ));
        let bytes = q.save_quantized(&file, config)?;
        drop(q);
        let (q, _) = Model::<B>::load_quantized(&file, &device)
            .with_context(|| format!("loading {}", file.display()))?;
        let (m, speed) = evaluate(
            &q,
            &test,
            total,
            EVAL_BATCH,
            &progress_bar(total, setting, quiet),
        )?;
        let ms = speed.median_ms_per_image;
        rows.push(Row {
            setting: setting.clone(),
            top1: m.top1(),
            top5: m.top5(),
            correct: m.correct(),
            total: m.total(),
            model_bytes: bytes,
            size_ratio: bytes as f64 / float_bytes as f64,
            ms_per_image: ms,
            speedup: f32_ms / ms,
            paths: exec_paths(&q),
        });
    }
    let report = Report {
        model: "resnet20".into(),
        calibration_images: args.calib_size.min(calib.len()),
        test_images: total,
        threads: rayon_threads(),
        seconds: start.elapsed().as_secs_f64(),
        rows,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// e.g. `21 integer` or `20 weight-only, 1 float`.
fn exec_paths(model: &Model<B>) -> String {
    use vitq_core::layers::ExecPath;
    use vitq_core::ptq::Quantizable;
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for (_, s) in model.layer_states() {
        let path = s.quantized().map_or(ExecPath::Float, |q| q.path());
        let name = match path {
            ExecPath::Integer => "integer",
            ExecPath::Simulated => "simulated",
            ExecPath::WeightOnly => "weight-only",
            _ => "float",
        };
        *counts.entry(name).or_default() += 1;
    }
    counts
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_table(r: &Report) {
    println!(
        "\n{} on {} CIFAR-10 test images ({} calibration images, {} threads)\n",
        r.model, r.test_images, r.calibration_images, r.threads
    );
    println!(
        "{:<14} {:>7} {:>7} {:>11} {:>7} {:>10} {:>9}  layers run as",
        "setting", "top-1", "top-5", "size", "×f32", "ms/image", "speed-up"
    );
    for row in &r.rows {
        println!(
            "{:<14} {:>6.1}% {:>6.1}% {:>9.1}kB {:>7.3} {:>10.3} {:>8.2}×  {}",
            row.setting,
            100.0 * row.top1,
            100.0 * row.top5,
            row.model_bytes as f64 / 1000.0,
            row.size_ratio,
            row.ms_per_image,
            row.speedup,
            row.paths
        );
    }
    println!(
        "\nsize: bytes of the file on disk; ms/image: median over batches of {EVAL_BATCH} images of the forward time per image; {:.1} s in all",
        r.seconds
    );
}
