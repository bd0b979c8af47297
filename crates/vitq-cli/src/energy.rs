//! `vitq energy`: per-layer MACs, bytes and modelled energy of a model preset at the bit-widths of a
//! quantization config, and the reduction against float 32 (see `docs/energy.md`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;
use vitq_core::QuantConfig;
use vitq_energy::{EnergyReport, EnergyTable, LayerCost, Network, Precision};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model preset (resnet20, resnet18, resnet50, deit_tiny_patch16_224, vit_base_patch16_224, …).
    #[arg(long)]
    model: String,
    /// Bit-widths: a preset (w8a8, w6a6, w4a8, w4a4, w8, w4, nf4, int8-dynamic), a TOML / JSON config
    /// file, or `f32` (nothing quantized).
    #[arg(long, default_value = "f32")]
    config: String,
    /// Input side length in pixels (default: the size the model was made for).
    #[arg(long)]
    input_size: Option<usize>,
    /// Energy table (TOML; entries left out keep their defaults). Default: Horowitz, ISSCC 2014, 45 nm,
    /// weights and activations in DRAM.
    #[arg(long)]
    table: Option<PathBuf>,
    /// Print one JSON object (the last line of output) instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report<'a> {
    model: &'a str,
    input_size: [usize; 2],
    config: String,
    table: &'a EnergyTable,
    macs: u64,
    weight_bytes: u64,
    bias_bytes: u64,
    act_read_bytes: u64,
    act_write_bytes: u64,
    mac_energy_pj: f64,
    weight_energy_pj: f64,
    activation_energy_pj: f64,
    energy_pj: f64,
    weight_bytes_f32: u64,
    energy_pj_f32: f64,
    /// `energy_pj_f32 / energy_pj`.
    reduction: f64,
    layers: &'a [LayerCost],
}

fn parse_config(s: &str) -> Result<QuantConfig> {
    if matches!(s, "f32" | "fp32" | "float" | "none") {
        let mut c = QuantConfig::new(None, None);
        c.name = Some("f32".into());
        return Ok(c);
    }
    let mut c = QuantConfig::from_preset_or_path(s)
        .with_context(|| format!("reading the quantization config `{s}`"))?;
    if c.name.is_none() {
        c.name = Some(s.to_string());
    }
    Ok(c)
}

pub fn run(args: &Args) -> Result<()> {
    let config = parse_config(&args.config)?;
    let table = match &args.table {
        Some(p) => EnergyTable::load(p)?,
        None => EnergyTable::default(),
    };
    let net = Network::from_preset(&args.model, args.input_size)?;
    let report = EnergyReport::new(&net, &config, &table)
        .with_context(|| format!("estimating {} with `{}`", net.name, args.config))?;
    let f32 = EnergyReport::float32(&net, &table)?;
    let t = &report.totals;
    let out = Report {
        model: &net.name,
        input_size: net.input,
        config: config.name.clone().unwrap_or_default(),
        table: &table,
        macs: t.macs,
        weight_bytes: t.weight_bytes,
        bias_bytes: t.bias_bytes,
        act_read_bytes: t.act_read_bytes,
        act_write_bytes: t.act_write_bytes,
        mac_energy_pj: t.mac_energy_pj,
        weight_energy_pj: t.weight_energy_pj,
        activation_energy_pj: t.activation_energy_pj,
        energy_pj: t.energy_pj,
        weight_bytes_f32: f32.totals.weight_bytes,
        energy_pj_f32: f32.totals.energy_pj,
        reduction: report.reduction_from(&f32),
        layers: &report.layers,
    };
    if args.json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        print_tables(&out, &table)?;
    }
    Ok(())
}

/// `1234567` → `1.23 M`.
fn count(n: u64) -> String {
    let v = n as f64;
    match n {
        0..1_000 => format!("{n}"),
        1_000..1_000_000 => format!("{:.1} K", v / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2} M", v / 1e6),
        _ => format!("{:.2} G", v / 1e9),
    }
}

fn bytes(b: u64) -> String {
    let v = b as f64;
    if b >= 1 << 30 {
        format!("{:.2} GiB", v / (1u64 << 30) as f64)
    } else if b >= 1 << 20 {
        format!("{:.2} MiB", v / (1u64 << 20) as f64)
    } else if b >= 1 << 10 {
        format!("{:.1} KiB", v / 1024.0)
    } else {
        format!("{b} B")
    }
}

/// Picojoules in the unit that keeps 1–999.
fn energy(pj: f64) -> String {
    let units = [(1e12, "J"), (1e9, "mJ"), (1e6, "µJ"), (1e3, "nJ")];
    for (scale, unit) in units {
        if pj.abs() >= scale {
            return format!("{:.2} {unit}", pj / scale);
        }
    }
    format!("{pj:.2} pJ")
}

/// `part` as a percentage of `total` (`-` when the total is zero).
fn share(part: f64, total: f64) -> String {
    if total > 0.0 {
        format!("{:.1}%", 100.0 * part / total)
    } else {
        "-".into()
    }
}

fn precision(w: Option<Precision>, a: Precision) -> String {
    match w {
        Some(w) => format!("{w}/{a}"),
        None => format!("{a}/{a}"),
    }
}

fn print_tables(r: &Report<'_>, table: &EnergyTable) -> Result<()> {
    let int8 = table.mac_pj(Precision::Int(8), Precision::Int(8))?;
    let fp32 = table.mac_pj(Precision::F32, Precision::F32)?;
    println!(
        "model   {}, input {}×{}, per image",
        r.model, r.input_size[0], r.input_size[1]
    );
    println!("config  {}", r.config);
    println!(
        "table   {}: MAC int8·int8 {int8:.3} pJ, fp32 {fp32:.2} pJ; weights in {} ({:.3} pJ/bit), activations in {} ({:.3} pJ/bit)",
        table.name,
        table.weights_from,
        table.pj_per_bit(table.weights_from),
        table.activations_from,
        table.pj_per_bit(table.activations_from),
    );
    println!();
    let name_w = r
        .layers
        .iter()
        .map(|l| l.name.chars().count())
        .max()
        .unwrap_or(5)
        .clamp(5, 40);
    let op_w = r
        .layers
        .iter()
        .map(|l| l.op.describe().chars().count())
        .max()
        .unwrap_or(2)
        .clamp(2, 40);
    println!(
        "{:<name_w$} {:<op_w$} {:>11} {:>9} {:>10} {:>10} {:>10} {:>10} {:>6}",
        "layer", "op", "w/a", "MACs", "weights", "act in", "act out", "energy", "share"
    );
    for l in r.layers {
        println!(
            "{:<name_w$} {:<op_w$} {:>11} {:>9} {:>10} {:>10} {:>10} {:>10} {:>6}",
            l.name,
            l.op.describe(),
            precision(l.weight_precision, l.activation_precision),
            count(l.macs),
            bytes(l.weight_bytes + l.bias_bytes),
            bytes(l.act_read_bytes),
            bytes(l.act_write_bytes),
            energy(l.energy_pj),
            share(l.energy_pj, r.energy_pj)
        );
    }
    println!();
    println!(
        "total   {} MACs; weights {} (+ {} biases), activations {} read, {} written",
        count(r.macs),
        bytes(r.weight_bytes),
        bytes(r.bias_bytes),
        bytes(r.act_read_bytes),
        bytes(r.act_write_bytes)
    );
    println!(
        "energy  {} = MACs {} + weights {} + activations {}",
        energy(r.energy_pj),
        energy(r.mac_energy_pj),
        energy(r.weight_energy_pj),
        energy(r.activation_energy_pj)
    );
    let reduction = if r.reduction.is_finite() {
        format!("{:.2}x less energy with {}", r.reduction, r.config)
    } else {
        "no reduction to report (the table prices nothing)".to_string()
    };
    println!(
        "f32     {} (weights {}) -> {reduction}",
        energy(r.energy_pj_f32),
        bytes(r.weight_bytes_f32),
    );
    Ok(())
}
