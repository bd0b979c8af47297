//! Strict loading of checkpoint tensors into models.
//!
//! A [`WeightMap`] holds a checkpoint's float tensors by name (with `module.` prefixes from
//! `DataParallel` stripped). Model constructors [`WeightMap::take`] each tensor they need with the
//! shape they need; [`WeightMap::finish`] then reports, in one [`Error::Keys`], every missing key,
//! every key left unused and every shape mismatch.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use vitq_core::checkpoint::Checkpoint;

use crate::error::{Error, Mismatch, Result};

/// Checkpoint tensors waiting to be placed into a model.
#[derive(Debug)]
pub struct WeightMap {
    path: PathBuf,
    tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    used: BTreeSet<String>,
    missing: Vec<String>,
    mismatched: Vec<Mismatch>,
}

impl WeightMap {
    /// Reads a checkpoint: safetensors, or a PyTorch pickle (`.pt`, `.pth`, `.th`, `.bin`, `.ckpt`,
    /// possibly nesting a `state_dict`; see [`crate::pytorch`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let ckpt = if crate::pytorch::is_pytorch_path(path) {
            crate::pytorch::load(path)?
        } else {
            Checkpoint::load(path)?
        };
        Ok(Self::from_checkpoint(ckpt))
    }

    /// Wraps an already-read checkpoint.
    pub fn from_checkpoint(ckpt: Checkpoint) -> Self {
        Self::from_checkpoint_prefixed(ckpt, "")
    }

    /// Wraps the tensors of a checkpoint whose names start with `prefix` (stripped), ignoring the rest;
    /// e.g. `weights.` for test fixtures that also hold inputs and outputs.
    pub fn from_checkpoint_prefixed(ckpt: Checkpoint, prefix: &str) -> Self {
        let tensors = ckpt
            .tensors
            .into_iter()
            .filter_map(|t| {
                let name = t.name.strip_prefix(prefix)?;
                let name = name.strip_prefix("module.").unwrap_or(name).to_string();
                Some((name, (t.shape, t.data)))
            })
            .collect();
        Self {
            path: ckpt.path,
            tensors,
            used: BTreeSet::new(),
            missing: Vec::new(),
            mismatched: Vec::new(),
        }
    }

    /// A map with no tensors (every `take` returns zeros).
    pub(crate) fn empty() -> Self {
        Self::from_checkpoint(Checkpoint {
            path: PathBuf::new(),
            tensors: Vec::new(),
            skipped: Vec::new(),
        })
    }

    /// Adds a zero tensor of `shape` (fixes a shape that a constructor reads from the checkpoint).
    pub(crate) fn insert_zeros(&mut self, name: &str, shape: &[usize]) {
        let n = shape.iter().product();
        self.tensors
            .insert(name.to_string(), (shape.to_vec(), vec![0.0; n]));
    }

    /// Names of all tensors.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Shape of a tensor, if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|(s, _)| s.as_slice())
    }

    /// Host values and shape of `name` if it has exactly `shape`; otherwise records the problem and
    /// returns zeros of `shape` so that construction can go on and collect every problem.
    pub fn take_vec(&mut self, name: &str, shape: &[usize]) -> Vec<f32> {
        match self.tensors.get(name) {
            None => {
                self.missing.push(name.to_string());
                vec![0.0; shape.iter().product()]
            }
            Some((s, _)) if s.as_slice() != shape => {
                self.mismatched.push(Mismatch {
                    name: name.to_string(),
                    expected: shape.to_vec(),
                    got: s.clone(),
                });
                self.used.insert(name.to_string());
                vec![0.0; shape.iter().product()]
            }
            Some((_, data)) => {
                self.used.insert(name.to_string());
                data.clone()
            }
        }
    }

    /// [`WeightMap::take_vec`] as a tensor on `device`.
    pub fn take<B: Backend, const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
        device: &B::Device,
    ) -> Tensor<B, D> {
        let data = self.take_vec(name, &shape);
        Tensor::from_data(TensorData::new(data, shape), device)
    }

    /// Takes `name` if the checkpoint has it (for optional tensors such as biases).
    pub fn take_optional<B: Backend, const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
        device: &B::Device,
    ) -> Option<Tensor<B, D>> {
        self.tensors
            .contains_key(name)
            .then(|| self.take(name, shape, device))
    }

    /// Ends loading: `Ok` only if every key was used with the right shape and none was missing.
    pub fn finish(self, model: &str) -> Result<()> {
        let unexpected: Vec<String> = self
            .tensors
            .keys()
            .filter(|k| !self.used.contains(*k))
            .cloned()
            .collect();
        if self.missing.is_empty() && unexpected.is_empty() && self.mismatched.is_empty() {
            return Ok(());
        }
        Err(Error::Keys {
            path: self.path,
            model: model.to_string(),
            missing: self.missing,
            unexpected,
            mismatched: self.mismatched,
        })
    }
}
