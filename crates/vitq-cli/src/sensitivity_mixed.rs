//! `vitq mixed` (exact mixed-precision allocation under a budget, written as a config) and
//! `vitq pareto` (accuracy against size and energy of uniform and mixed configs: CSV and PNG).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use vitq_core::QuantConfig;
use vitq_core::nuclear::sample_layers;
use vitq_energy::{EnergyTable, Network};
use vitq_sensitivity::mixed::{
    Budget, ConfigCost, LayerPick, Objective, Request, allocatable_layers, allocate, check_budget,
    config_cost,
};
use vitq_sensitivity::nuclear::{self, LayerNuclear, NuclearRequest, allocate_nuclear};
use vitq_sensitivity::pareto::{PlotOptions, Point, plot_png, to_csv, write_atomic};
use vitq_sensitivity::{Candidate, Job, Logits, Mode, Setting, Store, candidate_jobs, uniform_at};

use crate::sensitivity::{CommonArgs, ModelEval, run_with_bar};

/// Options shared by `mixed` and `pareto`: the base setting, the candidates and the objective.
#[derive(clap::Args, Debug)]
pub struct AllocArgs {
    /// Base setting: its specs are kept, only the bits change (a preset or a config file).
    #[arg(long, default_value = "w4a8")]
    pub setting: String,
    /// Candidate bits per layer: weight bits (`2,3,4,6,8`; activations stay the setting's) or
    /// weight and activation bits (`w4a8,w8a8`).
    #[arg(long, default_value = "2,3,4,5,6,8")]
    pub candidates: String,
    /// What the allocation minimizes. Measured by evaluating the model with one layer at each
    /// candidate: kl, noise (10^(-SQNR/10)) or accuracy-drop, summed over layers. Or Liu et al.'s
    /// nuclear-norm criteria, from calibration data alone (no evaluation; linear layers only, the
    /// others keep the setting's bits): nuclear (Σ ‖Y‖_* · ‖Ŷ − Y‖², the paper's) or
    /// nuclear-weighted-bits (maximize Σ ‖Y‖_* · bits).
    #[arg(long, default_value = "kl")]
    pub objective: String,
    /// Energy table (TOML, see docs/energy.md); default Horowitz 45 nm.
    #[arg(long)]
    pub energy_table: Option<PathBuf>,
}

/// Input rows sampled per linear layer for the nuclear-norm criteria (as `examples/nuclear_mixed.rs`).
const NUCLEAR_ROWS: usize = 256;

/// What `--objective` asks for.
#[derive(Clone, Copy, Debug)]
enum Minimized {
    /// A sensitivity measured by evaluating the model.
    Measured(Objective),
    /// A nuclear-norm criterion (`vitq_sensitivity::nuclear`).
    Nuclear(nuclear::Criterion),
}

impl std::str::FromStr for Minimized {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.strip_prefix("nuclear") {
            Some("") => Minimized::Nuclear(nuclear::Criterion::Perturbation),
            Some(c) => Minimized::Nuclear(c.trim_start_matches('-').parse()?),
            None => Minimized::Measured(s.parse()?),
        })
    }
}

impl std::fmt::Display for Minimized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Minimized::Measured(o) => write!(f, "{o}"),
            Minimized::Nuclear(c) => write!(f, "nuclear {c}"),
        }
    }
}

/// What an allocation is made from: the store's measured sensitivities, or nuclear norms.
enum Measurements {
    Store,
    Nuclear(Vec<LayerNuclear>),
}

/// An allocation, whichever way it was made.
#[derive(Serialize)]
struct Picked {
    budget: Budget,
    objective: String,
    /// Per allocated layer, in network order.
    layers: Vec<LayerPick>,
    /// Total cost in the budget's unit.
    cost: f64,
    /// The minimized total.
    score: f64,
    #[serde(skip)]
    config: QuantConfig,
    /// The config as TOML with its comment header.
    #[serde(skip)]
    toml: String,
}

/// The parsed [`AllocArgs`] and what measuring them needs.
struct Alloc {
    setting: Setting,
    candidates: Vec<Candidate>,
    objective: Minimized,
    table: EnergyTable,
    network: Network,
}

impl Alloc {
    fn parse(a: &AllocArgs, common: &CommonArgs) -> Result<Self> {
        if !common.layers.is_empty() {
            bail!("--layers is for `vitq sensitivity`; mixed precision allocates every layer");
        }
        let setting =
            Setting::parse(&a.setting).with_context(|| format!("setting `{}`", a.setting))?;
        let candidates = Candidate::parse_list(&a.candidates)?;
        let objective: Minimized = a
            .objective
            .parse()
            .with_context(|| format!("--objective `{}`", a.objective))?;
        let table = match &a.energy_table {
            Some(p) => EnergyTable::load(p)?,
            None => EnergyTable::default(),
        };
        let model = common
            .model
            .model
            .as_deref()
            .context("give --model (the preset name): sizes and energy come from its shapes")?;
        let network = Network::from_preset(model, None)?;
        for c in &candidates {
            uniform_at(&setting.config, &setting.name, *c)?;
        }
        Ok(Self {
            setting,
            candidates,
            objective,
            table,
            network,
        })
    }

    /// Measures every (layer, candidate) sensitivity missing from the store, or the nuclear norms and
    /// output perturbations.
    fn measure(
        &self,
        eval: &mut ModelEval,
        reference: &Logits,
        store: &mut Store,
        quiet: bool,
    ) -> Result<Measurements> {
        if let Minimized::Nuclear(_) = self.objective {
            let batches = eval.calibration().to_vec();
            if !quiet {
                eprintln!(
                    "nuclear norms: {NUCLEAR_ROWS} input rows per linear layer from {} calibration batches",
                    batches.len()
                );
            }
            let samples = sample_layers(&mut eval.model, batches, NUCLEAR_ROWS)?;
            let measured = nuclear::measure(&samples, &self.setting, &self.candidates)?;
            if measured.iter().all(|m| m.perturbation.is_empty()) {
                bail!(
                    "--objective {}: the nuclear-norm criteria measure linear layers, and `{}` quantizes \
                     none of this model's",
                    self.objective,
                    self.setting.name
                );
            }
            return Ok(Measurements::Nuclear(measured));
        }
        let layers = allocatable_layers(&self.network, &self.setting);
        if layers != eval.all_layers {
            let missing: Vec<&String> = eval
                .all_layers
                .iter()
                .filter(|l| !layers.contains(l))
                .collect();
            if !quiet && !missing.is_empty() {
                eprintln!("layers kept at the setting's specs: {missing:?}");
            }
        }
        let jobs = candidate_jobs(&self.setting, &layers, &self.candidates)?;
        if !quiet {
            eprintln!(
                "sensitivities: {} layers × {} candidates = {} evaluations on {} images",
                layers.len(),
                self.candidates.len(),
                jobs.len(),
                eval.images()
            );
        }
        run_with_bar(&jobs, eval, reference, store, quiet)?;
        Ok(Measurements::Store)
    }

    fn budget(&self, kind: &str, value: &str) -> Result<Budget> {
        let bad = || {
            anyhow::anyhow!(
                "--budget-{kind} `{value}`: give a number or the bits of a uniform setting (`w4`, `w6a8`)"
            )
        };
        if let Ok(v) = value.parse::<f64>() {
            if !(v.is_finite() && v > 0.0) {
                bail!("--budget-{kind} must be a positive number, not {value}");
            }
            return Ok(match kind {
                "bytes" => Budget::Bytes(v),
                "bits" => Budget::AverageBits(v),
                _ => Budget::EnergyPj(v * 1e6),
            });
        }
        let c: Candidate = value.parse().map_err(|_| bad())?;
        let cost = config_cost(
            &self.network,
            &uniform_at(&self.setting.config, &self.setting.name, c)?,
            &self.table,
        )?;
        Ok(match kind {
            "bytes" => Budget::Bytes(cost.weight_bytes as f64),
            "bits" => Budget::AverageBits(cost.avg_weight_bits),
            _ => Budget::EnergyPj(cost.energy_pj),
        })
    }

    /// Fails fast when no assignment of the candidates fits `budget`.
    fn check(&self, budget: Budget) -> Result<Budget> {
        check_budget(
            &self.network,
            &self.setting,
            &self.candidates,
            budget,
            &self.table,
        )?;
        Ok(budget)
    }

    fn allocate(&self, budget: Budget, store: &Store, measured: &Measurements) -> Result<Picked> {
        let objective = self.objective.to_string();
        Ok(match (self.objective, measured) {
            (Minimized::Measured(objective), Measurements::Store) => {
                let req = Request {
                    network: &self.network,
                    setting: &self.setting,
                    candidates: &self.candidates,
                    budget,
                    objective,
                    table: &self.table,
                };
                let a = allocate(&req, store)?;
                Picked {
                    toml: a.to_toml()?,
                    budget: a.budget,
                    objective: objective.to_string(),
                    layers: a.layers,
                    cost: a.cost,
                    score: a.score,
                    config: a.config,
                }
            }
            (Minimized::Nuclear(criterion), Measurements::Nuclear(m)) => {
                let req = NuclearRequest {
                    network: &self.network,
                    setting: &self.setting,
                    candidates: &self.candidates,
                    budget,
                    criterion,
                    table: &self.table,
                };
                let a = allocate_nuclear(&req, m)?;
                Picked {
                    toml: a.to_toml()?,
                    budget: a.budget,
                    objective,
                    layers: a.layers,
                    cost: a.cost,
                    score: a.score,
                    config: a.config,
                }
            }
            _ => bail!("the measurements do not match --objective {objective}"),
        })
    }
}

/// Evaluates whole configs (once each, through the store).
fn evaluate_configs(
    configs: &[(String, QuantConfig)],
    eval: &mut ModelEval,
    reference: &Logits,
    store: &mut Store,
    quiet: bool,
) -> Result<Vec<f64>> {
    let jobs = configs
        .iter()
        .map(|(name, cfg)| {
            let setting = match Setting::parse(name) {
                Ok(s) if s.config == *cfg => s,
                _ => Setting::hashed(name, cfg.clone())?,
            };
            Ok(Job::new(&setting, Mode::Uniform, None, None))
        })
        .collect::<Result<Vec<_>>>()?;
    let records = run_with_bar(&jobs, eval, reference, store, quiet)?;
    Ok(records.iter().map(|r| r.scores.accuracy).collect())
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("budget").required(true).args(["budget_bits", "budget_bytes", "budget_energy"])))]
pub struct MixedArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub alloc: AllocArgs,
    /// Budget: average weight bits over the quantizable layers' weights (e.g. 5.0), or `wN` for the
    /// setting's average at N bits.
    #[arg(long)]
    pub budget_bits: Option<String>,
    /// Budget: weight bytes (codes and scales) of the quantizable layers, or `wN` / `wNaM` for the
    /// weight bytes of the setting uniformly at those bits.
    #[arg(long)]
    pub budget_bytes: Option<String>,
    /// Budget: modelled energy per image in µJ (vitq-energy), or `wN` / `wNaM` for the setting's at
    /// those bits.
    #[arg(long)]
    pub budget_energy: Option<String>,
    /// Write the config (TOML, for `vitq quantize --config`) here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also quantize with the config and evaluate it (and the setting itself) on --data.
    #[arg(long)]
    pub eval: bool,
}

#[derive(Serialize)]
struct MixedReport<'a> {
    setting: String,
    allocation: &'a Picked,
    cost: ConfigCost,
    setting_cost: ConfigCost,
    out: Option<String>,
    float_accuracy: f64,
    /// With --eval: the mixed config's top-1.
    accuracy: Option<f64>,
    /// With --eval: the setting's own top-1.
    setting_accuracy: Option<f64>,
}

pub fn run_mixed(args: &MixedArgs) -> Result<()> {
    let alloc = Alloc::parse(&args.alloc, &args.common)?;
    let budget = match (&args.budget_bits, &args.budget_bytes, &args.budget_energy) {
        (Some(v), _, _) => alloc.check(alloc.budget("bits", v)?)?,
        (_, Some(v), _) => alloc.check(alloc.budget("bytes", v)?)?,
        (_, _, Some(v)) => alloc.check(alloc.budget("energy", v)?)?,
        _ => bail!("give one of --budget-bits, --budget-bytes, --budget-energy"),
    };
    if let Some(out) = &args.out
        && out.is_dir()
    {
        bail!("--out {} is a folder", out.display());
    }
    let quiet = args.common.json;
    let mut eval = ModelEval::load(&args.common)?;
    let mut store = eval.store(args.common.resume.as_deref())?;
    let reference = eval.reference()?;
    let measured = alloc.measure(&mut eval, &reference, &mut store, quiet)?;
    let a = alloc.allocate(budget, &store, &measured)?;
    let cost = config_cost(&alloc.network, &a.config, &alloc.table)?;
    let setting_cost = config_cost(&alloc.network, &alloc.setting.config, &alloc.table)?;
    let (accuracy, setting_accuracy) = if args.eval {
        let name = a.config.name.clone().unwrap_or_else(|| "mixed".into());
        let accs = evaluate_configs(
            &[
                (name, a.config.clone()),
                (alloc.setting.name.clone(), alloc.setting.config.clone()),
            ],
            &mut eval,
            &reference,
            &mut store,
            quiet,
        )?;
        (Some(accs[0]), Some(accs[1]))
    } else {
        (None, None)
    };
    if let Some(out) = &args.out {
        let text = &a.toml;
        // The config must read back and name only this model's layers.
        QuantConfig::from_toml_str(text)?.check_layers(&eval.all_layers)?;
        write_atomic(out, text.as_bytes())?;
    }
    let report = MixedReport {
        setting: alloc.setting.name.clone(),
        allocation: &a,
        cost,
        setting_cost,
        out: args.out.as_ref().map(|p| p.display().to_string()),
        float_accuracy: reference.accuracy(),
        accuracy,
        setting_accuracy,
    };
    if args.common.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_mixed(&report);
    }
    Ok(())
}

fn print_mixed(r: &MixedReport<'_>) {
    let a = r.allocation;
    println!(
        "\nmixed precision from {} under {}, minimizing summed {}\n",
        r.setting, a.budget, a.objective
    );
    println!(
        "{:<24} {:>6} {:>14} {:>12}",
        "layer", "bits", "cost", "sensitivity"
    );
    for p in &a.layers {
        println!(
            "{:<24} {:>6} {:>14.1} {:>12.6}",
            p.layer,
            p.candidate.to_string(),
            p.cost,
            p.score
        );
    }
    let line = |name: &str, c: &ConfigCost, acc: Option<f64>| {
        println!(
            "{:<12} {:>10} B  {:>6.3} bits  {:>8.3} µJ  {}",
            name,
            c.weight_bytes,
            c.avg_weight_bits,
            c.energy_pj / 1e6,
            acc.map_or(String::new(), |a| format!("top-1 {:.2} %", 100.0 * a))
        );
    };
    println!();
    line("mixed", &r.cost, r.accuracy);
    line(&r.setting, &r.setting_cost, r.setting_accuracy);
    println!("float top-1 {:.2} %", 100.0 * r.float_accuracy);
    if let Some(o) = &r.out {
        println!("wrote {o}");
    }
}

#[derive(clap::Args, Debug)]
pub struct ParetoArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub alloc: AllocArgs,
    /// Uniform configs: presets or files, or `@wN` / `@wNaM` for the setting at those bits.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "w8a8,w6a6,w4a8,w4a4,w8,w4,@w3,@w5,@w6"
    )]
    pub uniform: Vec<String>,
    /// Mixed configs at these average-weight-bit budgets.
    #[arg(long, value_delimiter = ',', default_value = "3,3.5,4,4.5,5,5.5,6")]
    pub mixed_bits: Vec<f64>,
    /// Mixed configs at these weight-byte budgets (numbers, or `wN` for the setting's at N bits).
    #[arg(long, value_delimiter = ',')]
    pub mixed_bytes: Vec<String>,
    /// Write the points (and whether each is on either front) as CSV here.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Write the plot (PNG) here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Leave points below this top-1 (percent) out of the plot (they stay in the CSV).
    #[arg(long, default_value_t = 0.0)]
    pub min_accuracy: f64,
    /// The plot's title.
    #[arg(long)]
    pub title: Option<String>,
}

pub fn run_pareto(args: &ParetoArgs) -> Result<()> {
    if args.csv.is_none() && args.out.is_none() && !args.common.json {
        bail!("give --csv, --out (PNG) or --json");
    }
    let alloc = Alloc::parse(&args.alloc, &args.common)?;
    let mut configs: Vec<(String, String, QuantConfig)> = Vec::new();
    for u in &args.uniform {
        let (name, cfg) = match u.strip_prefix('@') {
            Some(c) => {
                let c: Candidate = c.parse()?;
                let cfg = uniform_at(&alloc.setting.config, &alloc.setting.name, c)?;
                (format!("{}@{c}", alloc.setting.name), cfg)
            }
            None => {
                let s = Setting::parse(u).with_context(|| format!("--uniform `{u}`"))?;
                (s.name, s.config)
            }
        };
        configs.push((name, "uniform".into(), cfg));
    }
    let mut budgets = Vec::new();
    for b in &args.mixed_bits {
        budgets.push((
            format!("mix {b}b"),
            alloc.check(alloc.budget("bits", &b.to_string())?)?,
        ));
    }
    for b in &args.mixed_bytes {
        budgets.push((format!("mix ={b}"), alloc.check(alloc.budget("bytes", b)?)?));
    }
    for path in [&args.csv, &args.out].into_iter().flatten() {
        if path.is_dir() {
            bail!("{} is a folder", path.display());
        }
    }
    let quiet = args.common.json;
    let mut eval = ModelEval::load(&args.common)?;
    for (name, _, cfg) in &configs {
        cfg.check_layers(&eval.all_layers)
            .with_context(|| format!("--uniform `{name}`"))?;
    }
    let mut store = eval.store(args.common.resume.as_deref())?;
    let reference = eval.reference()?;
    if !budgets.is_empty() {
        let measured = alloc.measure(&mut eval, &reference, &mut store, quiet)?;
        for (name, budget) in budgets {
            let a = alloc
                .allocate(budget, &store, &measured)
                .with_context(|| name.clone())?;
            configs.push((name, "mixed".into(), a.config));
        }
    }
    let named: Vec<(String, QuantConfig)> = configs
        .iter()
        .map(|(n, _, c)| (n.clone(), c.clone()))
        .collect();
    let accs = evaluate_configs(&named, &mut eval, &reference, &mut store, quiet)?;
    let f32_cost = config_cost(&alloc.network, &QuantConfig::new(None, None), &alloc.table)?;
    let mut points = vec![Point {
        name: "f32".into(),
        kind: "float".into(),
        accuracy: reference.accuracy(),
        weight_bytes: f32_cost.weight_bytes,
        avg_weight_bits: f32_cost.avg_weight_bits,
        energy_pj: f32_cost.energy_pj,
    }];
    for ((name, kind, cfg), acc) in configs.iter().zip(accs) {
        let c = config_cost(&alloc.network, cfg, &alloc.table)?;
        points.push(Point {
            name: name.clone(),
            kind: kind.clone(),
            accuracy: acc,
            weight_bytes: c.weight_bytes,
            avg_weight_bits: c.avg_weight_bits,
            energy_pj: c.energy_pj,
        });
    }
    let csv = to_csv(&points);
    let png = match &args.out {
        Some(_) => Some(plot_png(
            &points,
            &PlotOptions {
                title: args.title.clone().unwrap_or_else(|| {
                    format!(
                        "{}: {} test images, mixed precision from {} (candidates {}, objective {})",
                        eval.model.name(),
                        eval.images(),
                        alloc.setting.name,
                        args.alloc.candidates,
                        alloc.objective
                    )
                }),
                min_accuracy: args.min_accuracy / 100.0,
                ..PlotOptions::default()
            },
        )?),
        None => None,
    };
    if let Some(p) = &args.csv {
        write_atomic(p, csv.as_bytes())?;
    }
    if let (Some(p), Some(png)) = (&args.out, &png) {
        write_atomic(p, png)?;
    }
    if args.common.json {
        println!("{}", serde_json::to_string(&points)?);
    } else {
        print!("{csv}");
        for p in [&args.csv, &args.out].into_iter().flatten() {
            println!("wrote {}", p.display());
        }
    }
    Ok(())
}
