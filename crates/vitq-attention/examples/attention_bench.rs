//! Throughput and memory of the attention strategies on a CubeCL device.
//!
//! ```text
//! cargo run -p vitq-attention --release --features cuda --example attention_bench            # table
//! cargo run -p vitq-attention --release --features cuda --example attention_bench -- mem flash 4096
//! ```
//! (`--features wgpu` runs it on the wgpu backend instead.)
//!
//! Table mode: for each shape and dtype, checks Flash against Reference (relative error
//! `max|a-b| / max|ref|`), then times Flash, Burn and Reference: 3 warm-up calls, then 7 rounds
//! of `iters` calls each closed by a device sync; the median round gives the time per call.
//! TFLOP/s counts `4·B·H·N²·d`. Inputs are validated once, timed calls use
//! `attention_trusted` (no NaN scan).
//!
//! `quick [N]`: Flash alone, f16 and bf16 only (the shape with N tokens only, if given).
//!
//! Memory mode (`mem <strategy> <N>`): one call at `[1, 12, N, 64]` f16 in a fresh process, then
//! prints the memory pool's reserved and in-use bytes (the pool only grows within a process,
//! so reserved bytes bound the peak from above).

use std::time::Instant;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Distribution, Tensor};
use vitq_attention::{Strategy, attention, attention_trusted, default_scale, flash_kernel};

#[cfg(feature = "cuda")]
type B = burn::backend::Cuda;
#[cfg(all(feature = "wgpu", not(feature = "cuda")))]
type B = burn::backend::Wgpu;
#[cfg(feature = "cuda")]
type R = cubecl::cuda::CudaRuntime;
#[cfg(all(feature = "wgpu", not(feature = "cuda")))]
type R = cubecl::wgpu::WgpuRuntime;

type Dev = <B as burn::tensor::backend::BackendTypes>::Device;

fn inputs(shape: [usize; 4], dtype: DType, dev: &Dev) -> [Tensor<B, 4>; 3] {
    let r = || Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.0), dev).cast(dtype);
    [r(), r(), r()]
}

fn run(x: &[Tensor<B, 4>; 3], s: Strategy) -> Option<Tensor<B, 4>> {
    let d = x[0].dims()[3];
    attention_trusted(
        x[0].clone(),
        x[1].clone(),
        x[2].clone(),
        default_scale(d),
        None,
        s,
    )
    .ok()
}

fn rel_err(a: Tensor<B, 4>, b: Tensor<B, 4>) -> f32 {
    let a = a.cast(DType::F32);
    let b = b.cast(DType::F32);
    let num: f32 = (a - b.clone()).abs().max().into_scalar();
    let den: f32 = b.abs().max().into_scalar();
    num / den
}

/// Median seconds per call, or None if the strategy refused the inputs.
fn time(x: &[Tensor<B, 4>; 3], s: Strategy, dev: &Dev, flops: f64) -> Option<f64> {
    for _ in 0..3 {
        run(x, s)?;
    }
    B::sync(dev).ok()?;
    // About 20 ms per round.
    let t0 = Instant::now();
    run(x, s)?;
    B::sync(dev).ok()?;
    let one = t0.elapsed().as_secs_f64().max(1e-6);
    let iters = ((0.02 / one) as usize).clamp(1, 200);
    let mut rounds = Vec::new();
    for _ in 0..7 {
        let t0 = Instant::now();
        for _ in 0..iters {
            run(x, s)?;
        }
        B::sync(dev).ok()?;
        rounds.push(t0.elapsed().as_secs_f64() / iters as f64);
    }
    rounds.sort_by(f64::total_cmp);
    let _ = flops;
    Some(rounds[3])
}

/// Table mode; `quick` times Flash alone on f16 / bf16 (for tuning the kernel).
fn table(dev: &Dev, quick: bool, only_n: Option<usize>) {
    let shapes: [(&str, [usize; 4]); 4] = [
        ("ViT-B/16", [64, 12, 197, 64]),
        ("DINOv2-B/14", [64, 12, 257, 64]),
        ("N=1024", [16, 12, 1024, 64]),
        ("N=4096", [4, 12, 4096, 64]),
    ];
    println!(
        "| shape | B×H×N×d | dtype | Flash TFLOP/s | Burn TFLOP/s | Reference TFLOP/s | Flash ms | Burn ms | Reference ms | Flash rel err vs Reference |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (name, shape) in shapes {
        if only_n.is_some_and(|n| n != shape[2]) {
            continue;
        }
        let dtypes: &[DType] = if quick {
            &[DType::F16, DType::BF16]
        } else {
            &[DType::F16, DType::BF16, DType::F32]
        };
        for &dtype in dtypes {
            let [b, h, n, d] = shape;
            let flops = 4.0 * (b * h) as f64 * (n * n) as f64 * d as f64;
            let x = inputs(shape, dtype, dev);
            // Validate once (shapes, finiteness), then check Flash against the reference.
            let checked = attention(
                x[0].clone(),
                x[1].clone(),
                x[2].clone(),
                default_scale(d),
                None,
                Strategy::Flash,
            );
            let err = match (checked, run(&x, Strategy::Reference)) {
                (Ok(f), Some(r)) => format!("{:.1e}", rel_err(f, r)),
                (Err(e), _) => format!("flash error: {e}"),
                _ => "reference failed".into(),
            };
            let kernel = flash_kernel::<B>(dev, dtype, d);
            eprintln!("{name} {dtype:?}: Flash runs the {kernel:?} kernel");
            let mut cells = Vec::new();
            let mut ms = Vec::new();
            let strategies: &[Strategy] = if quick {
                &[Strategy::Flash]
            } else {
                &[Strategy::Flash, Strategy::Burn, Strategy::Reference]
            };
            for &s in strategies {
                match time(&x, s, dev, flops) {
                    Some(t) => {
                        cells.push(format!("{:.1}", flops / t / 1e12));
                        ms.push(format!("{:.3}", t * 1e3));
                    }
                    None => {
                        cells.push("–".into());
                        ms.push("–".into());
                    }
                }
            }
            cells.resize(3, "–".into());
            ms.resize(3, "–".into());
            println!(
                "| {name} | {b}×{h}×{n}×{d} | {dtype:?} | {} | {} | {} | {} | {} | {} | {err} |",
                cells[0], cells[1], cells[2], ms[0], ms[1], ms[2]
            );
        }
    }
}

fn mem(dev: &Dev, strategy: &str, n: usize) {
    use cubecl::prelude::Runtime;
    let s = match strategy {
        "flash" => Strategy::Flash,
        "burn" => Strategy::Burn,
        "reference" => Strategy::Reference,
        _ => {
            eprintln!("strategy: flash | burn | reference");
            return;
        }
    };
    let shape = [1, 12, n, 64];
    let x = inputs(shape, DType::F16, dev);
    let client = R::client(dev);
    B::sync(dev).ok();
    let before = client.memory_usage().ok();
    let out = run(&x, s);
    B::sync(dev).ok();
    let after = client.memory_usage().ok();
    drop(out);
    let input_bytes = 3 * shape.iter().product::<usize>() * 2;
    match (before, after) {
        (Some(b), Some(a)) => println!(
            "mem {strategy} N={n}: inputs {:.1} MiB; reserved before {:.1} MiB, after {:.1} MiB; in use after {:.1} MiB; an N×N f32 score matrix for 12 heads would be {:.1} MiB",
            input_bytes as f64 / 1048576.0,
            b.bytes_reserved as f64 / 1048576.0,
            a.bytes_reserved as f64 / 1048576.0,
            a.bytes_in_use as f64 / 1048576.0,
            (12 * n * n * 4) as f64 / 1048576.0
        ),
        _ => println!("mem {strategy}: memory usage not available"),
    }
}

fn main() {
    let dev = Dev::default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("mem") => {
            let s = args.get(1).map_or("flash", String::as_str);
            let n = args.get(2).and_then(|x| x.parse().ok()).unwrap_or(4096);
            mem(&dev, s, n);
        }
        Some("quick") => table(&dev, true, args.get(1).and_then(|x| x.parse().ok())),
        _ => table(&dev, false, None),
    }
}
