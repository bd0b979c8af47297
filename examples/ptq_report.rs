//! Post-training quantization of any vitq model, measured against its own f32 outputs: for each setting,
//! the SQNR of the logits and the top-1 agreement with f32 on a set of images.
//!
//! ```sh
//! cargo run --release -p vitq-examples --example ptq_report -- \
//!     deit_tiny_patch16_224 deit_tiny.safetensors ../shared/data/imagenet-sample 32 w8a8,w6a6,w4a8,w4a4,w8,nf4
//! ```
//!
//! Arguments: model preset (or `auto`: the architecture inferred from the checkpoint, e.g. a ViT trained by
//! `scripts/peer/train_cifar_vit.py`), weights (safetensors or .pth), the images: an ImageNet-style folder
//! (`<synset>_*.JPEG` plus `synsets.txt`) or a CIFAR-10 binary file (`.bin`, each 32×32 image upsampled
//! bilinearly to the model's input size, so that a random-init ViT can be compared on many images), how
//! many of its images calibrate (the rest are evaluated), comma-separated settings (presets or TOML / JSON
//! config files). Besides SQNR and agreement it prints each setting's top-1 accuracy against the images'
//! labels (where the model has as many classes as the images), which means something only for a trained
//! model. This is how the ViT figures in issue 4's notes
//! were made (on random-init timm weights and on the ViT trained on the CIFAR-10 slice, as no pretrained ViT
//! is available offline).

use anyhow::{Context, Result, bail};
use burn::backend::Flex;
use burn::tensor::Tensor;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use vitq_core::metrics::sqnr_db;
use vitq_core::ptq::Quantizable;
use vitq_core::{PtqMethod, QuantConfig};
use vitq_models::data::{Cifar10, ImageNetFolder};
use vitq_models::zoo::Model;

type B = Flex;

fn values(t: Tensor<B, 2>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))
}

fn argmaxes(logits: &[f32], classes: usize) -> Vec<usize> {
    logits
        .chunks_exact(classes)
        .map(|r| {
            r.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
                    if v > bv { (i, v) } else { (bi, bv) }
                })
                .0
        })
        .collect()
}

/// Which quantizer PTQ4ViT gave the inputs that can take a twin-uniform one (`twin_select` may
/// replace a twin by a uniform quantizer): `twin-uniform inputs: matmul_av 0/12, fc2 5/12`.
fn twin_summary(q: &Model<B>) -> String {
    let count = |suffix: &str| {
        let layers: Vec<bool> = q
            .layer_states()
            .iter()
            .filter(|(name, _)| name.ends_with(suffix))
            .map(|(_, s)| s.quantized().is_some_and(|q| q.twin(0).is_some()))
            .collect();
        let twins = layers.iter().filter(|&&t| t).count();
        format!("{suffix} {twins}/{}", layers.len())
    };
    format!(
        "twin-uniform inputs: {}, {}",
        count("matmul_av"),
        count("mlp.fc2")
    )
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [preset, weights, folder, calib, settings] = args.as_slice() else {
        bail!("usage: ptq_report <preset> <weights> <imagenet-folder> <calib-images> <settings>");
    };
    let calib: usize = calib.parse().context("calib-images")?;
    let device = Default::default();
    let model = if preset == "auto" {
        Model::<B>::load_inferred(weights, &device)?
    } else {
        Model::<B>::load(preset, weights, &device)?
    };
    let pre = model.preprocess();
    let batch = 16;
    // Images `lo..hi` of the set, in batches of `batch`, with their labels.
    type Loader = Box<dyn Fn(usize, usize) -> Result<(Tensor<B, 4>, Vec<usize>)>>;
    // The class count of the images' labels: accuracy is printed only for a model with as many.
    let (len, label_classes, load_batch): (usize, usize, Loader) = if folder.ends_with(".bin") {
        let data = Cifar10::load(folder)?;
        let size = pre.size;
        let upsample = InterpolateOptions::new(InterpolateMode::Bilinear);
        (
            data.len(),
            10,
            Box::new(move |lo, hi| {
                let x = data.batch::<B>(lo..hi, pre.normalize, &device);
                Ok((
                    interpolate(x, [size, size], upsample.clone()),
                    data.labels(lo..hi),
                ))
            }),
        )
    } else {
        let data = ImageNetFolder::open(folder)?;
        (
            data.len(),
            data.num_classes(),
            Box::new(move |lo, hi| Ok(data.batch::<B>(lo..hi, &pre, &device)?)),
        )
    };
    if calib >= len {
        bail!("{calib} calibration images leave none of the {len} to evaluate");
    }
    let load = |lo: usize, hi: usize| -> Result<(Vec<Tensor<B, 4>>, Vec<usize>)> {
        let mut xs = Vec::new();
        let mut labels = Vec::new();
        for s in (lo..hi).step_by(batch) {
            let (x, l) = load_batch(s, (s + batch).min(hi))?;
            xs.push(x);
            labels.extend(l);
        }
        Ok((xs, labels))
    };
    let (calib_batches, _) = load(0, calib)?;
    let (eval_batches, labels) = load(calib, len)?;
    let classes = model.num_classes();
    let run = |m: &Model<B>| -> Result<Vec<f32>> {
        let mut out = Vec::new();
        for x in &eval_batches {
            out.extend(values(m.forward(x.clone())?)?);
        }
        Ok(out)
    };
    // Images whose top-1 in `a` equals the class in `b`.
    let matches = |a: &[usize], b: &[usize]| a.iter().zip(b).filter(|(x, y)| x == y).count();
    let reference = run(&model)?;
    let ref_top1 = argmaxes(&reference, classes);
    let n = ref_top1.len();
    println!(
        "{}: {calib} calibration images, {n} evaluated\n",
        model.name()
    );
    println!(
        "{:<14} {:>12} {:>16} {:>14}",
        "setting", "SQNR (dB)", "top-1 agreement", "top-1 acc."
    );
    let acc = |top1: &[usize]| {
        if classes == label_classes {
            format!("{:.1}%", 100.0 * matches(top1, &labels) as f64 / n as f64)
        } else {
            "-".into()
        }
    };
    println!("{:<14} {:>12} {:>16} {:>14}", "f32", "", "", acc(&ref_top1));
    for s in settings.split(',') {
        let config = QuantConfig::from_preset_or_path(s)?;
        let q = model
            .clone()
            .quantize(&config, calib_batches.clone(), &mut |_| {})?;
        let y = run(&q)?;
        let top1 = argmaxes(&y, classes);
        // A config file by its stem (`ptq4vit-w4a8`), a preset as it is.
        let label = std::path::Path::new(s)
            .file_stem()
            .and_then(|f| f.to_str())
            .unwrap_or(s);
        println!(
            "{label:<14} {:>12.2} {:>10} / {n} {:>14}",
            sqnr_db(&reference, &y),
            matches(&top1, &ref_top1),
            acc(&top1)
        );
        if let PtqMethod::Ptq4vit { .. } = config.method {
            println!("{:<14} {}", "", twin_summary(&q));
        }
    }
    Ok(())
}
