//! The one error type of `vitq-models`.

use std::path::PathBuf;

/// Result alias of `vitq-models`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A tensor whose shape differs from what the model expects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// Checkpoint key.
    pub name: String,
    /// Shape the model needs.
    pub expected: Vec<usize>,
    /// Shape in the checkpoint.
    pub got: Vec<usize>,
}

/// Everything that can go wrong in `vitq-models`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A checkpoint that does not fit the model: every problem is listed at once.
    #[error(
        "checkpoint {path} does not fit {model}: {} missing {missing:?}, {} unexpected {unexpected:?}, {} with wrong shape {}",
        missing.len(),
        unexpected.len(),
        mismatched.len(),
        mismatched.iter().map(|m| format!("{} (expected {:?}, got {:?})", m.name, m.expected, m.got)).collect::<Vec<_>>().join(", ")
    )]
    Keys {
        /// The checkpoint.
        path: PathBuf,
        /// The model preset.
        model: String,
        /// Keys the model needs that the checkpoint lacks.
        missing: Vec<String>,
        /// Keys the checkpoint has that the model does not use.
        unexpected: Vec<String>,
        /// Keys present with the wrong shape.
        mismatched: Vec<Mismatch>,
    },
    /// An unknown model preset.
    #[error("unknown model `{name}`; known models: {known}")]
    UnknownModel {
        /// What was asked for.
        name: String,
        /// The presets that exist.
        known: String,
    },
    /// A data file that is truncated, corrupt or not what it claims to be.
    #[error("bad data file {path}: {reason}")]
    Data {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An input of the wrong shape.
    #[error("{what}: expected shape {expected}, got {got:?}")]
    Shape {
        /// What was checked.
        what: String,
        /// The shape required, in words (e.g. `[N, 3, 32, 32]`).
        expected: String,
        /// The shape given.
        got: Vec<usize>,
    },
    /// Reading a file failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An error from `vitq-core` (checkpoint parsing, quantization).
    #[error(transparent)]
    Core(#[from] vitq_core::Error),
}
