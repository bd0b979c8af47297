//! `vitq inspect`: the per-layer quantization table a person wants first.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use vitq_core::checkpoint::{Checkpoint, FloatTensor};
use vitq_core::metrics::{Stats, mse, sqnr_db};
use vitq_core::{CalibrationMethod, Granularity, QuantSpec, QuantizedTensor, Scheme};

use crate::assets::{RESNET20 as DEFAULT_BYTES, RESNET20_NAME as DEFAULT_NAME};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A safetensors checkpoint; without one, the embedded CIFAR-10 ResNet-20.
    checkpoint: Option<PathBuf>,
    /// Print one JSON object (the last line of output) instead of tables.
    #[arg(long)]
    json: bool,
    /// Also print, for every tensor, the scale, zero point, MSE and SQNR of each setting.
    #[arg(long)]
    full: bool,
    /// Bit-widths to try, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "8,6,4")]
    bits: Vec<u32>,
    /// `symmetric` or `asymmetric`.
    #[arg(long, default_value = "symmetric")]
    scheme: String,
    /// `minmax`, `mse`, `kl` or `percentile:<p>` (e.g. `percentile:99.99`).
    #[arg(long, default_value = "minmax")]
    calibration: String,
    /// Channel axis for per-channel quantization (0 = output channel in PyTorch's layout).
    #[arg(long, default_value_t = 0)]
    axis: usize,
}

#[derive(Serialize)]
struct Report {
    checkpoint: String,
    scheme: String,
    calibration: String,
    parameters: usize,
    float32_bytes: usize,
    tensors: Vec<TensorReport>,
    skipped: Vec<Skipped>,
    sizes: Vec<SizeRow>,
}

#[derive(Serialize)]
struct Skipped {
    name: String,
    dtype: String,
}

#[derive(Serialize)]
struct TensorReport {
    name: String,
    shape: Vec<usize>,
    stored_as: String,
    stats: Stats,
    settings: Vec<Setting>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize, Clone)]
struct Setting {
    bits: u32,
    granularity: String,
    /// Smallest and largest scale (equal for per-tensor).
    scale: [f32; 2],
    /// Smallest and largest zero point.
    zero_point: [i32; 2],
    mse: f64,
    sqnr_db: f64,
    bytes: usize,
}

#[derive(Serialize)]
struct SizeRow {
    bits: u32,
    bytes: usize,
    ratio_to_f32: f64,
}

fn parse_calibration(s: &str) -> Result<CalibrationMethod> {
    Ok(match s {
        "minmax" | "min-max" => CalibrationMethod::MinMax,
        "mse" => CalibrationMethod::Mse,
        "kl" => CalibrationMethod::Kl,
        p if p.starts_with("percentile:") => CalibrationMethod::Percentile {
            percentile: p["percentile:".len()..]
                .parse()
                .with_context(|| format!("bad percentile in `{p}`"))?,
        },
        other => bail!("unknown calibration `{other}` (minmax, mse, kl, percentile:<p>)"),
    })
}

pub fn run(args: &Args) -> Result<()> {
    let scheme = match args.scheme.as_str() {
        "symmetric" | "sym" => Scheme::Symmetric,
        "asymmetric" | "asym" => Scheme::Asymmetric,
        other => bail!("unknown scheme `{other}` (symmetric, asymmetric)"),
    };
    let calibration = parse_calibration(&args.calibration)?;
    // Validate every bit-width before reading anything.
    for &b in &args.bits {
        QuantSpec::new(b, scheme, Granularity::PerTensor)?;
    }
    let (ckpt, label) = match &args.checkpoint {
        Some(p) => (Checkpoint::load(p)?, p.display().to_string()),
        None => (
            Checkpoint::from_bytes(DEFAULT_BYTES, Path::new(DEFAULT_NAME))?,
            DEFAULT_NAME.to_string(),
        ),
    };
    if ckpt.tensors.is_empty() {
        bail!("{label} holds no floating-point tensors");
    }

    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::with_draw_target(
            Some(ckpt.tensors.len() as u64),
            ProgressDrawTarget::stderr(),
        );
        b.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    };
    let mut tensors = Vec::with_capacity(ckpt.tensors.len());
    for t in &ckpt.tensors {
        bar.set_message(t.name.clone());
        tensors.push(analyze(t, &args.bits, scheme, calibration, args.axis));
        bar.inc(1);
    }
    bar.finish_and_clear();

    let parameters: usize = ckpt.tensors.iter().map(|t| t.data.len()).sum();
    let sizes = args
        .bits
        .iter()
        .map(|&bits| {
            // Per-channel where a tensor has channels, per-tensor for 1-d ones; float if it failed.
            let bytes = tensors
                .iter()
                .zip(&ckpt.tensors)
                .map(|(r, t)| {
                    r.settings
                        .iter()
                        .filter(|s| s.bits == bits)
                        .map(|s| s.bytes)
                        .min()
                        .unwrap_or(4 * t.data.len())
                })
                .sum::<usize>();
            SizeRow {
                bits,
                bytes,
                ratio_to_f32: bytes as f64 / (4 * parameters) as f64,
            }
        })
        .collect();
    let report = Report {
        checkpoint: label,
        scheme: args.scheme.clone(),
        calibration: args.calibration.clone(),
        parameters,
        float32_bytes: 4 * parameters,
        tensors,
        skipped: ckpt
            .skipped
            .iter()
            .map(|(n, d)| Skipped {
                name: n.clone(),
                dtype: d.clone(),
            })
            .collect(),
        sizes,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_tables(&report, args.full);
    }
    Ok(())
}

fn analyze(
    t: &FloatTensor,
    bits: &[u32],
    scheme: Scheme,
    cal: CalibrationMethod,
    axis: usize,
) -> TensorReport {
    let mut report = TensorReport {
        name: t.name.clone(),
        shape: t.shape.clone(),
        stored_as: t.stored_as.clone(),
        stats: Stats::of(&t.data),
        settings: Vec::new(),
        error: None,
    };
    let mut granularities = vec![Granularity::PerTensor];
    if t.shape.len() >= 2 && axis < t.shape.len() {
        granularities.push(Granularity::PerChannel { axis });
    }
    for &b in bits {
        for &g in &granularities {
            let result = QuantSpec::new(b, scheme, g).and_then(|spec| {
                let q = QuantizedTensor::quantize(&t.data, &t.shape, &spec.with_calibration(cal))?;
                let back = q.dequantize()?;
                let p = q
                    .params()
                    .ok_or_else(|| vitq_core::Error::Unsupported("no parameters".into()))?;
                let fold = |v: &[f32]| {
                    v.iter()
                        .fold([f32::INFINITY, f32::NEG_INFINITY], |[a, b], x| {
                            [a.min(*x), b.max(*x)]
                        })
                };
                let zmin = p.zero_points.iter().copied().min().unwrap_or(0);
                let zmax = p.zero_points.iter().copied().max().unwrap_or(0);
                Ok(Setting {
                    bits: b,
                    granularity: if g == Granularity::PerTensor {
                        "per_tensor".into()
                    } else {
                        "per_channel".into()
                    },
                    scale: fold(&p.scales),
                    zero_point: [zmin, zmax],
                    mse: mse(&t.data, &back),
                    sqnr_db: sqnr_db(&t.data, &back),
                    bytes: q.size_in_bytes(),
                })
            });
            match result {
                Ok(s) => report.settings.push(s),
                Err(e) => {
                    report.error = Some(e.to_string());
                    return report;
                }
            }
        }
    }
    report
}

fn human_bytes(b: usize) -> String {
    if b >= 1 << 20 {
        format!("{:.2} MiB", b as f64 / (1 << 20) as f64)
    } else {
        format!("{:.1} KiB", b as f64 / 1024.0)
    }
}

fn sqnr_cell(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_infinite() => "exact".into(),
        Some(x) => format!("{x:.1}"),
        None => "-".into(),
    }
}

fn print_tables(r: &Report, full: bool) {
    println!("checkpoint  {}", r.checkpoint);
    println!(
        "tensors     {} float ({} parameters, {} as f32){}",
        r.tensors.len(),
        r.parameters,
        human_bytes(r.float32_bytes),
        if r.skipped.is_empty() {
            String::new()
        } else {
            format!(", {} non-float skipped", r.skipped.len())
        }
    );
    println!(
        "quantizer   {} scheme, {} calibration; SQNR in dB (higher is better), pt = per-tensor, pc = per-channel",
        r.scheme, r.calibration
    );
    println!();
    let name_w = r
        .tensors
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(6)
        .clamp(6, 48);
    let bits: Vec<u32> = r
        .tensors
        .iter()
        .flat_map(|t| t.settings.iter().map(|s| s.bits))
        .fold(Vec::new(), |mut v, b| {
            if !v.contains(&b) {
                v.push(b);
            }
            v
        });
    print!(
        "{:<name_w$} {:<16} {:>9} {:>9} {:>9} {:>8} {:>6}",
        "tensor", "shape", "min", "max", "mean", "std", "zeros"
    );
    for b in &bits {
        print!(" | {:>12}", format!("int{b} pt/pc"));
    }
    println!();
    for t in &r.tensors {
        let shape = format!("{:?}", t.shape).replace(' ', "");
        print!(
            "{:<name_w$} {:<16} {:>9.4} {:>9.4} {:>9.4} {:>8.4} {:>5.1}%",
            t.name,
            shape,
            t.stats.min,
            t.stats.max,
            t.stats.mean,
            t.stats.std,
            100.0 * t.stats.sparsity
        );
        for b in &bits {
            let get = |g: &str| {
                t.settings
                    .iter()
                    .find(|s| s.bits == *b && s.granularity == g)
                    .map(|s| s.sqnr_db)
            };
            print!(
                " | {:>12}",
                format!(
                    "{}/{}",
                    sqnr_cell(get("per_tensor")),
                    sqnr_cell(get("per_channel"))
                )
            );
        }
        if let Some(e) = &t.error {
            print!("  error: {e}");
        }
        println!();
        if full {
            for s in &t.settings {
                println!(
                    "    int{} {:<11} scale {:.3e}..{:.3e}  zero point {}..{}  MSE {:.3e}  SQNR {} dB",
                    s.bits,
                    s.granularity,
                    s.scale[0],
                    s.scale[1],
                    s.zero_point[0],
                    s.zero_point[1],
                    s.mse,
                    sqnr_cell(Some(s.sqnr_db))
                );
            }
        }
    }
    for s in &r.skipped {
        println!(
            "{:<name_w$} skipped ({} is not a float dtype)",
            s.name, s.dtype
        );
    }
    println!();
    print!("model size  f32 {}", human_bytes(r.float32_bytes));
    for s in &r.sizes {
        print!(
            "  ->  int{} {} ({:.3}x)",
            s.bits,
            human_bytes(s.bytes),
            s.ratio_to_f32
        );
    }
    println!("   (per-channel where a tensor has channels, codes + scales)");
}
