//! PyTorch pickle checkpoints (`.pt`, `.pth`, `.th`, `.bin`), read with burn-store's `PytorchReader`.
//!
//! Training scripts save either a bare `state_dict` or a dict that nests it under `state_dict`, `model`
//! or `model_state_dict` (with other entries such as the epoch or optimizer state). The nested dict is
//! found by trying those keys in turn; `module.` prefixes (DataParallel) are stripped later by
//! [`crate::weights::WeightMap`].

use std::path::Path;

use burn::tensor::DType;
use burn_store::pytorch::PytorchReader;
use vitq_core::checkpoint::{Checkpoint, FloatTensor};

use crate::error::{Error, Result};

/// Top-level keys under which checkpoints commonly nest their `state_dict`.
pub const NESTED_KEYS: [&str; 3] = ["state_dict", "model", "model_state_dict"];

/// `true` for the file extensions PyTorch checkpoints use.
pub fn is_pytorch_path(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("pt" | "pth" | "th" | "bin" | "ckpt")
    )
}

/// Reads the float tensors of a PyTorch checkpoint (non-float tensors are listed as skipped).
pub fn load(path: &Path) -> Result<Checkpoint> {
    if !path.exists() {
        return Err(Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }
    let bad = |reason: String| Error::Data {
        path: path.to_path_buf(),
        reason,
    };
    let reader = NESTED_KEYS
        .iter()
        .find_map(|k| {
            PytorchReader::with_top_level_key(path, k)
                .ok()
                .filter(|r| !r.is_empty())
        })
        .map_or_else(|| PytorchReader::new(path), Ok)
        .map_err(|e| bad(format!("not a readable PyTorch checkpoint: {e}")))?;
    let mut entries: Vec<_> = reader.into_tensors().into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut tensors = Vec::new();
    let mut skipped = Vec::new();
    for (name, snap) in entries {
        let dtype = snap.dtype;
        if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16 | DType::F64) {
            skipped.push((name, format!("{dtype:?}")));
            continue;
        }
        let data = snap
            .to_data()
            .map_err(|e| bad(format!("tensor `{name}`: {e:?}")))?;
        let shape = data.shape.to_vec();
        let values = data
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| bad(format!("tensor `{name}`: {e:?}")))?;
        tensors.push(FloatTensor {
            name,
            shape,
            data: values,
            stored_as: format!("{dtype:?}"),
        });
    }
    Ok(Checkpoint {
        path: path.to_path_buf(),
        tensors,
        skipped,
    })
}
