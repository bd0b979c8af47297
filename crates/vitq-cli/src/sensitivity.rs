//! `vitq sensitivity`: per-layer ablations of a setting (quantize only one layer; keep only one layer
//! float), scored against the float model by accuracy drop, KL divergence and SQNR of the logits.
//! The model / data plumbing shared with `vitq mixed` and `vitq pareto` lives here too.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::backend::Flex;
use burn::tensor::Tensor;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use vitq_core::QuantConfig;
use vitq_core::config::glob_match;
use vitq_models::zoo::Model;
use vitq_sensitivity::{
    Evaluator, Job, Logits, Mode, Record, Scores, Setting, Store, ablation_jobs, run_jobs,
};

use crate::eval::{Dataset, ModelArgs};

type B = Flex;

/// Model, data and resume options shared by `sensitivity`, `mixed` and `pareto`.
#[derive(clap::Args, Debug)]
pub struct CommonArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Evaluation images: `cifar10:<file.bin>`, `imagefolder:<dir>` or `imagenet:<dir>`.
    #[arg(long)]
    pub data: String,
    /// Evaluate on N images only (the first N after --skip).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Skip the first N images of --data (e.g. to measure on a held-out part of a training file whose
    /// first images calibrate).
    #[arg(long, default_value_t = 0)]
    pub skip: usize,
    /// Calibration images (never the evaluation set).
    #[arg(long)]
    pub calib: String,
    /// How many calibration images to use (the first N).
    #[arg(long, default_value_t = crate::quantize::DEFAULT_CALIB_SIZE)]
    pub calib_size: usize,
    /// Images per forward pass.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Results file (JSON lines): measurements already in it are not repeated, new ones are appended
    /// as they finish, so an interrupted run resumes where it stopped.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Only these layers (comma-separated globs over module paths, e.g. `conv1,layer1.*`).
    #[arg(long, value_delimiter = ',')]
    pub layers: Vec<String>,
    /// Print one JSON object as the last line (and no progress bar).
    #[arg(long)]
    pub json: bool,
}

/// A float model, its calibration batches and its evaluation batches, ready to evaluate configs.
pub struct ModelEval {
    pub model: Model<B>,
    calib: Vec<Tensor<B, 4>>,
    eval: Vec<Tensor<B, 4>>,
    labels: Vec<usize>,
    /// Identifies model, evaluation and calibration data in results files.
    pub run: String,
    /// The model's quantizable layers (after `--layers`).
    pub layers: Vec<String>,
    /// All of the model's quantizable layers.
    pub all_layers: Vec<String>,
}

/// The evaluator's error (the CLI's errors are `anyhow`, which is not a `std::error::Error`).
#[derive(Debug)]
pub struct EvalError(anyhow::Error);

impl std::fmt::Display for EvalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for EvalError {}

fn file_tag(spec: &str) -> String {
    let path = spec.split_once(':').map_or(spec, |(_, p)| p);
    let p = Path::new(path);
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or(path);
    let size = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    format!("{name} ({size} B)")
}

impl ModelEval {
    /// Loads the float model and both data sets; checks every argument before anything runs.
    pub fn load(args: &CommonArgs) -> Result<Self> {
        if args.model.quantized.is_some() {
            bail!("sensitivity runs take a float model (--model / --weights), not --quantized");
        }
        if args.calib_size == 0 || args.batch == 0 || args.limit == Some(0) {
            bail!("--calib-size, --batch and --limit must be at least 1");
        }
        let data = Dataset::parse(&args.data)?;
        let calib = Dataset::parse(&args.calib)?;
        if data.is_empty() || calib.is_empty() {
            bail!("the evaluation or calibration set is empty");
        }
        let model = args.model.load()?;
        let all_layers = model.layer_names();
        let layers: Vec<String> = if args.layers.is_empty() {
            all_layers.clone()
        } else {
            for pat in &args.layers {
                if !all_layers.iter().any(|l| glob_match(pat, l)) {
                    bail!(
                        "--layers `{pat}` matches no layer of {}; its layers are {}",
                        model.name(),
                        all_layers.join(", ")
                    );
                }
            }
            all_layers
                .iter()
                .filter(|l| args.layers.iter().any(|p| glob_match(p, l)))
                .cloned()
                .collect()
        };
        if args.skip >= data.len() {
            bail!(
                "--skip {} leaves no images of the {} in {}",
                args.skip,
                data.len(),
                args.data
            );
        }
        let end = args
            .skip
            .saturating_add(args.limit.unwrap_or(usize::MAX))
            .min(data.len());
        let mut eval = Vec::new();
        let mut labels = Vec::new();
        for lo in (args.skip..end).step_by(args.batch) {
            let (x, l) = data.batch(lo..(lo + args.batch).min(end), &model)?;
            eval.push(x);
            labels.extend(l);
        }
        let m = args.calib_size.min(calib.len());
        // Batches of 64, as `vitq quantize` calibrates, so the scales are the same.
        let calib = (0..m)
            .step_by(64)
            .map(|lo| calib.batch(lo..(lo + 64).min(m), &model).map(|(x, _)| x))
            .collect::<Result<Vec<_>>>()?;
        let weights = args
            .model
            .weights
            .as_ref()
            .map(|w| file_tag(&w.to_string_lossy()))
            .unwrap_or_default();
        let run = format!(
            "{} weights={weights} eval={}[{}..{end}] calib={}[..{m}]",
            model.name(),
            file_tag(&args.data),
            if args.skip == 0 {
                String::new()
            } else {
                args.skip.to_string()
            },
            file_tag(&args.calib)
        );
        Ok(Self {
            model,
            calib,
            eval,
            labels,
            run,
            layers,
            all_layers,
        })
    }

    /// Number of evaluation images.
    pub fn images(&self) -> usize {
        self.labels.len()
    }

    fn run_model(&self, model: &Model<B>) -> Result<Logits> {
        let mut values = Vec::with_capacity(self.labels.len() * model.num_classes());
        for x in &self.eval {
            let logits = model
                .forward(x.clone())?
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            values.extend(logits);
        }
        Ok(Logits::new(
            values,
            model.num_classes(),
            self.labels.clone(),
        )?)
    }

    /// The calibration batches.
    pub fn calibration(&self) -> &[Tensor<B, 4>] {
        &self.calib
    }

    /// The float model's logits.
    pub fn reference(&self) -> Result<Logits> {
        self.logits_inner(None)
    }

    fn logits_inner(&self, config: Option<&QuantConfig>) -> Result<Logits> {
        match config {
            None => self.run_model(&self.model),
            Some(cfg) => {
                let q = self
                    .model
                    .clone()
                    .quantize(cfg, self.calib.clone(), &mut |_| {})?;
                self.run_model(&q)
            }
        }
    }

    /// Opens the results store (`--resume`, or memory).
    pub fn store(&self, resume: Option<&Path>) -> Result<Store> {
        Ok(match resume {
            Some(p) => Store::open(p, &self.run)?,
            None => Store::memory(&self.run),
        })
    }
}

impl Evaluator for ModelEval {
    type Error = EvalError;

    fn logits(&mut self, config: Option<&QuantConfig>) -> std::result::Result<Logits, EvalError> {
        self.logits_inner(config).map_err(EvalError)
    }
}

/// Runs `jobs` with a progress bar (hidden when `quiet`), resuming from `store`.
pub fn run_with_bar(
    jobs: &[Job],
    eval: &mut ModelEval,
    reference: &Logits,
    store: &mut Store,
    quiet: bool,
) -> Result<Vec<Record>> {
    let bar = if quiet || jobs.is_empty() {
        ProgressBar::hidden()
    } else {
        let b =
            ProgressBar::with_draw_target(Some(jobs.len() as u64), ProgressDrawTarget::stderr());
        b.set_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} evaluations  {elapsed} (eta {eta})  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    };
    let cached = jobs
        .iter()
        .filter(|j| {
            vitq_sensitivity::sweep::key_of(j)
                .ok()
                .is_some_and(|k| store.get(&k).is_some())
        })
        .count();
    if cached > 0 && !quiet {
        eprintln!(
            "resuming: {cached} of {} evaluations already in {}",
            jobs.len(),
            store
                .path()
                .map_or("memory".into(), |p| p.display().to_string())
        );
    }
    let records = run_jobs(jobs, eval, reference, store, &mut |p| {
        bar.set_position(p.done as u64);
        bar.set_message(format!(
            "{}: top-1 {:.1} %",
            p.job,
            100.0 * p.record.scores.accuracy
        ));
    });
    bar.finish_and_clear();
    Ok(records?)
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Base settings to ablate (presets or config files, comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "w4a4")]
    pub setting: Vec<String>,
}

#[derive(Serialize)]
struct LayerRow {
    layer: String,
    quantize_only: Scores,
    float_only: Scores,
}

#[derive(Serialize)]
struct SettingReport {
    setting: String,
    uniform: Scores,
    layers: Vec<LayerRow>,
}

#[derive(Serialize)]
struct Report {
    model: String,
    run: String,
    images: usize,
    float_accuracy: f64,
    settings: Vec<SettingReport>,
}

pub fn run(args: &Args) -> Result<()> {
    let settings = args
        .setting
        .iter()
        .map(|s| Setting::parse(s).with_context(|| format!("setting `{s}`")))
        .collect::<Result<Vec<_>>>()?;
    if settings.is_empty() {
        bail!("give at least one --setting");
    }
    let mut eval = ModelEval::load(&args.common)?;
    let mut jobs = Vec::new();
    for s in &settings {
        s.config
            .check_layers(&eval.all_layers)
            .with_context(|| format!("setting `{}`", s.name))?;
        jobs.extend(ablation_jobs(s, &eval.layers)?);
    }
    let mut store = eval.store(args.common.resume.as_deref())?;
    let quiet = args.common.json;
    if !quiet {
        eprintln!(
            "{}: {} evaluations ({} layers × 2 ablations + uniform, {} setting(s)) on {} images",
            eval.model.name(),
            jobs.len(),
            eval.layers.len(),
            settings.len(),
            eval.images()
        );
    }
    let reference = eval.reference()?;
    let records = run_with_bar(&jobs, &mut eval, &reference, &mut store, quiet)?;
    let mut reports = Vec::new();
    for s in &settings {
        let find = |mode: Mode, layer: Option<&str>| {
            jobs.iter()
                .zip(&records)
                .find(|(j, _)| {
                    j.setting.name == s.name && j.mode == mode && j.layer.as_deref() == layer
                })
                .map(|(_, r)| r.scores)
                .context("internal: a job has no record")
        };
        let mut layers = Vec::new();
        for l in &eval.layers {
            layers.push(LayerRow {
                layer: l.clone(),
                quantize_only: find(Mode::QuantizeOnly, Some(l))?,
                float_only: find(Mode::FloatOnly, Some(l))?,
            });
        }
        reports.push(SettingReport {
            setting: s.name.clone(),
            uniform: find(Mode::Uniform, None)?,
            layers,
        });
    }
    let report = Report {
        model: eval.model.name().to_string(),
        run: eval.run.clone(),
        images: eval.images(),
        float_accuracy: reference.accuracy(),
        settings: reports,
    };
    if args.common.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_tables(&report);
    }
    Ok(())
}

fn db(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1}")
    } else {
        "inf".into()
    }
}

fn print_tables(r: &Report) {
    for s in &r.settings {
        println!(
            "\n{} on {} images: float {:.2} %, uniform {} {:.2} % (KL {:.4}, SQNR {} dB)\n",
            r.model,
            r.images,
            100.0 * r.float_accuracy,
            s.setting,
            100.0 * s.uniform.accuracy,
            s.uniform.kl,
            db(s.uniform.sqnr_db)
        );
        println!(
            "{:<18} | {:>33} | {:>40}",
            "",
            format!("only this layer {}", s.setting),
            "all but this layer (it stays float)"
        );
        println!(
            "{:<18} | {:>6} {:>6} {:>9} {:>8} | {:>6} {:>6} {:>6} {:>9} {:>8}",
            "layer", "top-1", "drop", "KL", "SQNR dB", "top-1", "drop", "gain", "KL", "SQNR dB"
        );
        for l in &s.layers {
            let (q, f) = (&l.quantize_only, &l.float_only);
            println!(
                "{:<18} | {:>6.1} {:>6.1} {:>9.5} {:>8} | {:>6.1} {:>6.1} {:>6.1} {:>9.5} {:>8}",
                l.layer,
                100.0 * q.accuracy,
                q.accuracy_drop,
                q.kl,
                db(q.sqnr_db),
                100.0 * f.accuracy,
                f.accuracy_drop,
                100.0 * (f.accuracy - s.uniform.accuracy),
                f.kl,
                db(f.sqnr_db)
            );
        }
    }
    println!(
        "\ndrop: float top-1 minus this top-1 (points); gain: this top-1 minus the uniform setting's; \
         KL: mean KL(float ‖ quantized) of the softmax, nats; SQNR of the logits."
    );
}
