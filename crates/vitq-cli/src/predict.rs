//! `vitq predict`: run a model on a tensor from a safetensors file and write its output, for checking
//! vitq against another framework on the same weights and inputs.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use safetensors::{Dtype, tensor::TensorView};
use vitq_core::checkpoint::Checkpoint;
use vitq_models::zoo::{Model, Output};

type B = Flex;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: crate::eval::ModelArgs,
    /// safetensors file with a float tensor `input` of shape [N, 3, H, W], already normalized.
    #[arg(long)]
    input: PathBuf,
    /// Where to write `logits` [N, classes], or `last_hidden_state` [N, tokens, dim] for a backbone
    /// without a head (safetensors, written atomically).
    #[arg(long)]
    output: PathBuf,
}

pub fn run(args: &Args) -> Result<()> {
    let device = Default::default();
    let input = Checkpoint::load(&args.input)?;
    let x = input
        .get("input")
        .with_context(|| format!("{} has no tensor named `input`", args.input.display()))?;
    let dims: [usize; 4] = match x.shape.as_slice() {
        &[n, 3, h, w] if n > 0 && h > 0 && w > 0 => [n, 3, h, w],
        other => bail!("`input` must have shape [N, 3, H, W], got {other:?}"),
    };
    if let Some(i) = x.data.iter().position(|v| !v.is_finite()) {
        bail!(
            "`input` has a non-finite value ({}) at flat index {i}",
            x.data[i]
        );
    }
    let model: Model<B> = args.model.load()?;
    let x = Tensor::<B, 4>::from_data(TensorData::new(x.data.clone(), dims), &device);
    let (name, data) = match model.predict(x)? {
        Output::Logits(t) => ("logits", t.into_data()),
        Output::LastHiddenState(t) => ("last_hidden_state", t.into_data()),
    };
    let shape = data.shape.to_vec();
    let values = data
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut meta = HashMap::new();
    meta.insert("model".to_string(), model.name().to_string());
    let out = safetensors::serialize(
        [(name, TensorView::new(Dtype::F32, shape.clone(), &bytes)?)],
        Some(meta),
    )?;
    vitq_core::io::write_atomic(&args.output, &out)?;
    eprintln!("wrote {name} {shape:?} to {}", args.output.display());
    Ok(())
}
