//! `vitq`: the command-line front end of the vitq crates.

mod assets;
mod bench;
mod demo;
mod energy;
mod eval;
mod inspect;
mod predict;
mod quantize;
mod sensitivity;
mod sensitivity_mixed;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Quantize Vision Transformers and ResNets, and see what quantization does to them.
#[derive(Parser, Debug)]
#[command(name = "vitq", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Per-tensor statistics and quantization error of a safetensors checkpoint at 8, 6 and 4 bits,
    /// per-tensor and per-channel.
    Inspect(inspect::Args),
    /// The embedded default: quantize the vendored CIFAR-10 ResNet-20 with the main presets, evaluate each
    /// on 1,000 CIFAR-10 test images and print one table.
    Demo(demo::Args),
    /// Post-training quantization: calibrate, quantize and write one file.
    Quantize(quantize::Args),
    /// Accuracy (top-1, top-5, F1), size and speed of a float or quantized model on a labelled dataset.
    Eval(eval::Args),
    /// Run a model on the `input` tensor of a safetensors file and write `logits`.
    Predict(predict::Args),
    /// Latency of a model's float forward pass on random inputs.
    Bench(bench::Args),
    /// Per-layer MACs, bytes and modelled energy (Horowitz, 45 nm) of a model preset at a config's
    /// bit-widths, and the reduction against float 32.
    Energy(energy::Args),
    /// Per-layer ablations of a setting (quantize only one layer; keep only one layer float), scored
    /// by accuracy drop, KL divergence and SQNR of the logits; resumable (--resume file.jsonl).
    Sensitivity(sensitivity::Args),
    /// Mixed precision: measure each layer's sensitivity at each candidate bit-width, choose the bits
    /// with an exact dynamic program under a byte, average-bit or energy budget, write the config.
    Mixed(sensitivity_mixed::MixedArgs),
    /// Accuracy against weight bytes and against energy of uniform and mixed configs: CSV and PNG.
    Pareto(sensitivity_mixed::ParetoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(args) => inspect::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Quantize(args) => quantize::run(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Predict(args) => predict::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Energy(args) => energy::run(&args),
        Command::Sensitivity(args) => sensitivity::run(&args),
        Command::Mixed(args) => sensitivity_mixed::run_mixed(&args),
        Command::Pareto(args) => sensitivity_mixed::run_pareto(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
