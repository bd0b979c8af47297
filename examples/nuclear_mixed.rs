//! Liu et al.'s nuclear-norm mixed precision for any vitq ViT or ResNet preset: samples every linear
//! layer's inputs and the attention matmuls' operands on calibration images, measures the nuclear norm
//! of each layer's output and its output perturbation at each candidate bit-width, allocates bits under
//! a weight-byte budget with the exact dynamic program, and writes the config (TOML).
//!
//! ```sh
//! cargo run --release -p vitq-examples --example nuclear_mixed -- \
//!     deit_tiny_patch16_224 deit_tiny.safetensors ../shared/data/imagenet-sample 32 \
//!     examples/configs/w6a6_minmax.toml 4,5,6,7,8 w6 perturbation nuclear_w6.toml
//! ```
//!
//! Arguments: model preset, weights, an ImageNet-style folder, how many of its images calibrate, the
//! base setting (preset or config file: its specs are kept, only weight bits change), candidate weight
//! bits, the budget (`wN`: the weight bytes of the setting at N bits everywhere; or a number of bytes),
//! the criterion (`perturbation` — the paper's — or `weighted-bits`), the output file.

use anyhow::{Context, Result, bail};
use burn::backend::Flex;
use burn::tensor::Tensor;
use vitq_core::nuclear::sample_layers;
use vitq_energy::{EnergyTable, Network};
use vitq_models::data::ImageNetFolder;
use vitq_models::zoo::Model;
use vitq_sensitivity::mixed::{Budget, config_cost};
use vitq_sensitivity::nuclear::{NuclearRequest, allocate_nuclear, measure};
use vitq_sensitivity::{Candidate, Setting, uniform_at};

type B = Flex;

/// Input rows kept per layer (the nuclear norms are of `[rows, out]` outputs).
const ROWS: usize = 256;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [
        preset,
        weights,
        folder,
        calib,
        setting,
        candidates,
        budget,
        criterion,
        out,
    ] = args.as_slice()
    else {
        bail!(
            "usage: nuclear_mixed <preset> <weights> <imagenet-folder> <calib-images> <setting> \
             <candidates> <budget: wN or bytes> <perturbation|weighted-bits> <out.toml>"
        );
    };
    let calib: usize = calib.parse().context("calib-images")?;
    let device = Default::default();
    let mut model = Model::<B>::load(preset, weights, &device)?;
    let data = ImageNetFolder::open(folder)?;
    let pre = model.preprocess();
    let batches: Vec<Tensor<B, 4>> = (0..calib.min(data.len()))
        .step_by(16)
        .map(|s| Ok(data.batch::<B>(s..(s + 16).min(calib), &pre, &device)?.0))
        .collect::<Result<_>>()?;
    let setting = Setting::parse(setting)?;
    let candidates = Candidate::parse_list(candidates)?;
    let network = Network::from_preset(preset, None)?;
    let table = EnergyTable::default();
    let budget = match budget.strip_prefix('w') {
        Some(bits) => {
            let c: Candidate = bits.parse()?;
            let cfg = uniform_at(&setting.config, &setting.name, c)?;
            Budget::Bytes(config_cost(&network, &cfg, &table)?.weight_bytes as f64)
        }
        None => Budget::Bytes(budget.parse().context("budget bytes")?),
    };
    let t = std::time::Instant::now();
    let samples = sample_layers(&mut model, batches, ROWS)?;
    let measured = measure(&samples, &setting, &candidates)?;
    eprintln!(
        "sampled and measured {} layers in {:.1} s",
        measured.len(),
        t.elapsed().as_secs_f64()
    );
    let alloc = allocate_nuclear(
        &NuclearRequest {
            network: &network,
            setting: &setting,
            candidates: &candidates,
            budget,
            criterion: criterion.parse()?,
            table: &table,
        },
        &measured,
    )?;
    let cost = config_cost(&network, &alloc.config, &table)?;
    let text = alloc.to_toml()?;
    std::fs::write(out, &text).with_context(|| format!("writing {out}"))?;
    for m in measured.iter().filter(|m| m.perturbation.is_empty()) {
        println!("{:<28} nuclear norm {:.4}", m.layer, m.nuclear_norm);
    }
    print!(
        "{}",
        text.lines()
            .take_while(|l| l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    );
    println!(
        "{out}: {} weight bytes ({budget}), {:.3} average weight bits",
        cost.weight_bytes, cost.avg_weight_bits
    );
    Ok(())
}
