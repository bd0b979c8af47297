//! The CIFAR-10 binary format: records of 3,073 bytes, one label byte (0–9) then 1,024 red, 1,024 green
//! and 1,024 blue bytes, each plane 32×32 row-major.
//!
//! ```no_run
//! use burn::backend::Flex;
//! use vitq_models::data::{Cifar10, Normalize};
//! let data = Cifar10::load("test_batch.bin")?;
//! let x = data.batch::<Flex>(0..16, Normalize::IMAGENET, &Default::default());
//! assert_eq!(x.dims(), [16, 3, 32, 32]);
//! # Ok::<(), vitq_models::Error>(())
//! ```

use std::ops::Range;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::Normalize;
use crate::error::{Error, Result};

/// Bytes per record.
pub const RECORD: usize = 1 + 3 * 32 * 32;
/// The class names in label order.
pub const CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// A CIFAR-10 file held in memory.
#[derive(Clone, Debug)]
pub struct Cifar10 {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl Cifar10 {
    /// Reads and checks a file: its size must be a non-zero multiple of 3,073 and every label 0–9.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(bytes, path)
    }

    /// Checks bytes already in memory; `path` is for messages.
    pub fn from_bytes(bytes: Vec<u8>, path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::Data {
            path: path.to_path_buf(),
            reason,
        };
        if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD) {
            return Err(bad(format!(
                "{} bytes is not a whole number of {RECORD}-byte CIFAR-10 records (truncated?)",
                bytes.len()
            )));
        }
        if let Some(i) = (0..bytes.len() / RECORD).find(|i| bytes[i * RECORD] > 9) {
            return Err(bad(format!(
                "record {i} has label {} (expected 0–9)",
                bytes[i * RECORD]
            )));
        }
        Ok(Self {
            path: path.to_path_buf(),
            bytes,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.bytes.len() / RECORD
    }

    /// `true` if there are no images (never, for a loaded file).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Label of image `i`.
    pub fn label(&self, i: usize) -> usize {
        usize::from(self.bytes[i * RECORD])
    }

    /// Labels of a range of images.
    pub fn labels(&self, range: Range<usize>) -> Vec<usize> {
        range.map(|i| self.label(i)).collect()
    }

    /// Images `range` (clamped to the file) as a normalized `[n, 3, 32, 32]` batch.
    pub fn batch<B: Backend>(
        &self,
        range: Range<usize>,
        norm: Normalize,
        device: &B::Device,
    ) -> Tensor<B, 4> {
        let range = range.start.min(self.len())..range.end.min(self.len());
        let n = range.len();
        let mut out = Vec::with_capacity(n * 3 * 1024);
        for i in range {
            let px = &self.bytes[i * RECORD + 1..(i + 1) * RECORD];
            for c in 0..3 {
                let (m, s) = (norm.mean[c], norm.std[c]);
                out.extend(
                    px[c * 1024..(c + 1) * 1024]
                        .iter()
                        .map(|&v| (f32::from(v) / 255.0 - m) / s),
                );
            }
        }
        Tensor::from_data(TensorData::new(out, [n, 3, 32, 32]), device)
    }
}
