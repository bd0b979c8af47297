//! `vitq eval`: accuracy and speed of a float or quantized model on a labelled dataset.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::backend::Flex;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use vitq_models::data::{Cifar10, ImageFolder, ImageNetFolder};
use vitq_models::metrics::Metrics;
use vitq_models::zoo::Model;

type B = Flex;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Dataset: `cifar10:<file.bin>`, `imagefolder:<dir>` (one sub-folder per class) or
    /// `imagenet:<dir>` (flat `<synset>_*.JPEG` files plus `synsets.txt`).
    #[arg(long)]
    data: String,
    /// Evaluate only the first N images.
    #[arg(long)]
    limit: Option<usize>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    model: String,
    data: String,
    top1: f64,
    top5: f64,
    f1: f64,
    correct: usize,
    total: usize,
    images_per_second: f64,
    /// Weight bits (32 = float; `null` when layers differ).
    bits: Option<u32>,
    /// Bytes of the model file.
    model_bytes: u64,
    per_class_accuracy: Vec<f64>,
    confusion: Vec<Vec<usize>>,
}

/// A parsed `--data` argument.
pub enum Dataset {
    Cifar10(Cifar10),
    ImageFolder(ImageFolder),
    ImageNet(ImageNetFolder),
}

impl Dataset {
    pub fn parse(spec: &str) -> Result<Self> {
        match spec.split_once(':') {
            Some(("cifar10", path)) => Ok(Dataset::Cifar10(Cifar10::load(path)?)),
            Some(("imagefolder", path)) => Ok(Dataset::ImageFolder(ImageFolder::open(path)?)),
            Some(("imagenet", path)) => Ok(Dataset::ImageNet(ImageNetFolder::open(path)?)),
            _ => bail!(
                "unknown dataset `{spec}`: use cifar10:<file.bin>, imagefolder:<dir> or imagenet:<dir>"
            ),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Dataset::Cifar10(d) => d.len(),
            Dataset::ImageFolder(d) => d.len(),
            Dataset::ImageNet(d) => d.len(),
        }
    }

    /// Whether the dataset has no images.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A normalized batch for `model` and its labels.
    pub fn batch(
        &self,
        range: std::ops::Range<usize>,
        model: &Model<B>,
    ) -> Result<(burn::tensor::Tensor<B, 4>, Vec<usize>)> {
        match self {
            Dataset::Cifar10(d) => {
                if model.input_size() != 32 {
                    bail!(
                        "{} expects {}×{} inputs; CIFAR-10 images are 32×32",
                        model.name(),
                        model.input_size(),
                        model.input_size()
                    );
                }
                Ok((
                    d.batch(range.clone(), model.normalize(), &Default::default()),
                    d.labels(range),
                ))
            }
            Dataset::ImageFolder(d) => {
                Ok(d.batch(range, &model.preprocess(), &Default::default())?)
            }
            Dataset::ImageNet(d) => Ok(d.batch(range, &model.preprocess(), &Default::default())?),
        }
    }
}

/// `--model` and `--weights` (a float model) or `--quantized` (a file from `vitq quantize`), shared by
/// the commands that run a model.
#[derive(clap::Args, Debug)]
pub struct ModelArgs {
    /// Model preset (e.g. resnet20, deit_tiny_patch16_224); inferred from the checkpoint's tensor names
    /// and shapes when omitted.
    #[arg(long, conflicts_with = "quantized")]
    pub model: Option<String>,
    /// Float weights (safetensors, or a PyTorch .pth / .th).
    #[arg(long, required_unless_present = "quantized")]
    pub weights: Option<PathBuf>,
    /// A quantized model written by `vitq quantize` (instead of --model / --weights).
    #[arg(long)]
    pub quantized: Option<PathBuf>,
}

/// A model and what it costs on disk.
pub struct Loaded {
    pub model: Model<B>,
    /// Weight bits: 32 for float, the config's default weight bits otherwise (`None` if mixed).
    pub bits: Option<u32>,
    /// Size of the file it was loaded from.
    pub model_bytes: u64,
}

impl ModelArgs {
    /// Loads the model on the CPU backend.
    pub fn load(&self) -> Result<Model<B>> {
        Ok(self.load_with_size()?.model)
    }

    /// Loads the model and measures its file.
    pub fn load_with_size(&self) -> Result<Loaded> {
        let (path, model) = match (&self.quantized, &self.weights) {
            (Some(q), _) => {
                let (model, _config) = Model::<B>::load_quantized(q, &Default::default())
                    .with_context(|| format!("loading quantized model {}", q.display()))?;
                (q, model)
            }
            (None, Some(w)) => (w, load_model(self.model.as_deref(), w)?),
            (None, None) => bail!("give --weights (a float model) or --quantized"),
        };
        let model_bytes = std::fs::metadata(path)
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        Ok(Loaded {
            bits: weight_bits(&model),
            model,
            model_bytes,
        })
    }
}

/// The weight bits shared by every quantizable layer (32 = float), `None` when they differ.
pub fn weight_bits(model: &Model<B>) -> Option<u32> {
    let bits: std::collections::BTreeSet<u32> = model
        .layer_bits()
        .iter()
        .map(|(_, w, _)| w.unwrap_or(32))
        .collect();
    (bits.len() == 1).then(|| bits.into_iter().next().unwrap_or(32))
}

fn load_model(name: Option<&str>, weights: &std::path::Path) -> Result<Model<B>> {
    let device = Default::default();
    match name {
        Some(n) => Model::<B>::load(n, weights, &device)
            .with_context(|| format!("loading {n} from {}", weights.display())),
        None => Model::<B>::load_inferred(weights, &device)
            .with_context(|| format!("inferring the model of {}", weights.display())),
    }
}

/// A progress bar on stderr for passes over more than a few hundred images (hidden otherwise, or when
/// `quiet`).
pub fn progress_bar(total: usize, what: &str, quiet: bool) -> ProgressBar {
    if quiet || total <= 200 {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
    b.set_style(
        ProgressStyle::with_template(&format!(
            "{{bar:40}} {{pos}}/{{len}} {what}  {{per_sec}}  eta {{eta}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b
}

/// Accuracy of `model` on the first `total` images of `data`, and its speed.
pub fn evaluate(
    model: &Model<B>,
    data: &Dataset,
    total: usize,
    batch: usize,
    bar: &ProgressBar,
) -> Result<(Metrics, Speed)> {
    let mut metrics = Metrics::new(model.num_classes());
    let mut secs = 0.0;
    let mut per_image = Vec::new();
    for lo in (0..total).step_by(batch.max(1)) {
        let hi = (lo + batch).min(total);
        let (x, labels) = data.batch(lo..hi, model)?;
        let start = Instant::now();
        let logits = model
            .forward(x)?
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let t = start.elapsed().as_secs_f64();
        secs += t;
        per_image.push(t / (hi - lo) as f64);
        metrics.add_batch(&logits, &labels);
        bar.inc((hi - lo) as u64);
    }
    bar.finish_and_clear();
    per_image.sort_by(f64::total_cmp);
    Ok((
        metrics,
        Speed {
            images_per_second: total as f64 / secs.max(1e-9),
            median_ms_per_image: 1000.0 * per_image[per_image.len() / 2],
        },
    ))
}

/// How fast an evaluation ran (forward passes only, data loading excluded).
pub struct Speed {
    /// Images over the summed forward time.
    pub images_per_second: f64,
    /// Median over batches of the forward time per image (robust to a busy machine).
    pub median_ms_per_image: f64,
}

pub fn run(args: &Args) -> Result<()> {
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let loaded = args.model.load_with_size()?;
    let model = &loaded.model;
    let data = Dataset::parse(&args.data)?;
    let total = args.limit.unwrap_or(usize::MAX).min(data.len());
    if total == 0 {
        bail!("no images to evaluate (--limit 0?)");
    }
    let bar = progress_bar(total, "images", args.json);
    let (metrics, speed) = evaluate(model, &data, total, args.batch, &bar)?;
    let images_per_second = speed.images_per_second;
    let report = Report {
        model: model.name().to_string(),
        data: args.data.clone(),
        top1: metrics.top1(),
        top5: metrics.top5(),
        f1: metrics.weighted_f1(),
        correct: metrics.correct(),
        total: metrics.total(),
        images_per_second,
        bits: loaded.bits,
        model_bytes: loaded.model_bytes,
        per_class_accuracy: metrics.per_class_accuracy(),
        confusion: metrics.confusion().to_vec(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("model      {}", report.model);
        println!("data       {} ({} images)", report.data, report.total);
        println!(
            "top-1      {:.2} %  ({} / {})",
            100.0 * report.top1,
            report.correct,
            report.total
        );
        println!("top-5      {:.2} %", 100.0 * report.top5);
        println!("F1         {:.4} (weighted)", report.f1);
        let bits = report.bits.map_or("mixed".into(), |b| b.to_string());
        println!(
            "model      {} bytes on disk, {bits}-bit weights",
            report.model_bytes
        );
        println!(
            "speed      {:.1} images/s ({} threads available)",
            report.images_per_second,
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
        let accs: Vec<String> = report
            .per_class_accuracy
            .iter()
            .map(|a| format!("{:.0}", 100.0 * a))
            .collect();
        println!("per class  {} %", accs.join(" "));
    }
    Ok(())
}
