//! Reading float tensors from any safetensors checkpoint (timm, Hugging Face, PyTorch exports).
//!
//! F32, F16, BF16 and F64 tensors are converted to f32; tensors of other dtypes (integer counters
//! such as BatchNorm's `num_batches_tracked`, booleans, 8-bit floats) are listed in
//! [`Checkpoint::skipped`] rather than dropped silently.
//!
//! ```no_run
//! let ckpt = vitq_core::checkpoint::Checkpoint::load("model.safetensors")?;
//! for t in &ckpt.tensors {
//!     println!("{} {:?}", t.name, t.shape);
//! }
//! # Ok::<(), vitq_core::Error>(())
//! ```

use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

/// One float tensor of a checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct FloatTensor {
    /// Its name in the file.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Row-major values, converted to f32.
    pub data: Vec<f32>,
    /// The dtype it was stored in, e.g. `"F16"`.
    pub stored_as: String,
}

/// The float tensors of a checkpoint, in file order.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// Where it was read from.
    pub path: PathBuf,
    /// Float tensors, in the order the file stores them.
    pub tensors: Vec<FloatTensor>,
    /// `(name, dtype)` of tensors that are not floating point.
    pub skipped: Vec<(String, String)>,
}

impl Checkpoint {
    /// Reads a safetensors file. PyTorch pickles (`.pt`, `.pth`, `.th`, `.bin`) are rejected with
    /// [`Error::Unsupported`]; truncated or corrupt files give [`Error::Format`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if let Some(ext) = path.extension().and_then(|e| e.to_str())
            && ["pt", "pth", "th", "bin", "ckpt"].contains(&ext)
        {
            return Err(Error::Unsupported(format!(
                "{}: PyTorch pickle checkpoints are not read by vitq-core; convert to safetensors \
                 (`safetensors.torch.save_file(torch.load(p)[\"state_dict\"], out)`)",
                path.display()
            )));
        }
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses safetensors bytes; `path` is used in messages only.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| Error::Format {
            path: path.to_path_buf(),
            reason: format!("not a valid safetensors file: {e}"),
        })?;
        let mut entries: Vec<_> = st.tensors();
        // File order (by data offset) is the order the exporter wrote, usually the model's order.
        entries.sort_by_key(|(_, v)| v.data().as_ptr() as usize);
        let mut tensors = Vec::new();
        let mut skipped = Vec::new();
        for (name, view) in entries {
            let raw = view.data();
            let data: Vec<f32> = match view.dtype() {
                Dtype::F32 => raw
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
                Dtype::F16 => raw
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
                Dtype::BF16 => raw
                    .chunks_exact(2)
                    .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
                Dtype::F64 => raw
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
                    .collect(),
                other => {
                    skipped.push((name, format!("{other:?}")));
                    continue;
                }
            };
            tensors.push(FloatTensor {
                name,
                shape: view.shape().to_vec(),
                data,
                stored_as: format!("{:?}", view.dtype()),
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            tensors,
            skipped,
        })
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&FloatTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;

    #[test]
    fn converts_half_precision_and_lists_integers() {
        let h: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect();
        let b: Vec<u8> = [0.25f32]
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect();
        let i = 7i64.to_le_bytes();
        let bytes = safetensors::serialize(
            [
                ("a", TensorView::new(Dtype::F16, vec![2], &h).unwrap()),
                ("b", TensorView::new(Dtype::BF16, vec![1], &b).unwrap()),
                ("n", TensorView::new(Dtype::I64, vec![], &i).unwrap()),
            ],
            None,
        )
        .unwrap();
        let c = Checkpoint::from_bytes(&bytes, Path::new("x")).unwrap();
        assert_eq!(c.get("a").unwrap().data, vec![1.5, -2.0]);
        assert_eq!(c.get("b").unwrap().data, vec![0.25]);
        assert_eq!(c.skipped, vec![("n".to_string(), "I64".to_string())]);
        assert!(matches!(
            Checkpoint::from_bytes(&bytes[..bytes.len() - 1], Path::new("x")),
            Err(Error::Format { .. })
        ));
        assert!(matches!(
            Checkpoint::load("w.pth"),
            Err(Error::Unsupported(_))
        ));
    }
}
