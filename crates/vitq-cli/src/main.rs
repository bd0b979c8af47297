//! `vitq`: the command-line front end of the vitq crates.

mod bench;
mod eval;
mod inspect;
mod predict;

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
    /// Accuracy (top-1, top-5, F1) and speed of a float model on a labelled dataset.
    Eval(eval::Args),
    /// Run a model on the `input` tensor of a safetensors file and write `logits`.
    Predict(predict::Args),
    /// Latency of a model's float forward pass on random inputs.
    Bench(bench::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(args) => inspect::run(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Predict(args) => predict::run(&args),
        Command::Bench(args) => bench::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
