//! `vitq bench`: latency of a model's float forward pass on random inputs (median of timed runs after
//! warm-up). Used by `scripts/bench/compare_pytorch.py` to compare with PyTorch at the same thread
//! count (`RAYON_NUM_THREADS` sets vitq's on the CPU backend).

use std::time::Instant;

use anyhow::{Result, bail};
use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use serde::Serialize;
use vitq_models::zoo::Model;

type B = Flex;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: crate::eval::ModelArgs,
    /// Images per forward pass.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Input side length (default: the model's).
    #[arg(long)]
    size: Option<usize>,
    /// Untimed runs first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed runs.
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    model: String,
    batch: usize,
    size: usize,
    threads: usize,
    iters: usize,
    median_ms: f64,
    min_ms: f64,
    images_per_second: f64,
}

pub fn run(args: &Args) -> Result<()> {
    if args.batch == 0 || args.iters == 0 {
        bail!("--batch and --iters must be at least 1");
    }
    let device = Default::default();
    let model: Model<B> = args.model.load()?;
    let size = args.size.unwrap_or_else(|| model.input_size());
    let x = vitq_core::synth::Rng::new(0).gaussian_vec(args.batch * 3 * size * size);
    let x = Tensor::<B, 4>::from_data(TensorData::new(x, [args.batch, 3, size, size]), &device);
    let run_once = || -> Result<f64> {
        let t = Instant::now();
        // Reading the result back forces the computation to finish.
        let _ = model.forward(x.clone())?.into_data();
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    for _ in 0..args.warmup {
        run_once()?;
    }
    let mut times = (0..args.iters)
        .map(|_| run_once())
        .collect::<Result<Vec<_>>>()?;
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let report = Report {
        model: model.name().to_string(),
        batch: args.batch,
        size,
        threads: std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        iters: args.iters,
        median_ms: median,
        min_ms: times[0],
        images_per_second: args.batch as f64 / (median / 1e3),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} batch {} at {}×{}: median {:.2} ms, min {:.2} ms, {:.1} images/s ({} threads)",
            report.model,
            report.batch,
            size,
            size,
            report.median_ms,
            report.min_ms,
            report.images_per_second,
            report.threads
        );
    }
    Ok(())
}
