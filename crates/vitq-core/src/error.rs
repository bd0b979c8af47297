//! The one error type of `vitq-core`.

use std::path::PathBuf;

/// Result alias used across `vitq-core`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `vitq-core`.
///
/// Every variant carries enough context (tensor or layer name, shapes, bits) to tell the caller
/// what to fix. Errors raised deep inside a tensor operation are wrapped with
/// [`Error::Context`] by [`ResultExt::context`] so that the name of the tensor or layer shows up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A bit-width outside the supported range 2..=8.
    #[error("bit-width {bits} is out of range: vitq supports 2..=8 bits")]
    InvalidBits {
        /// The rejected bit-width.
        bits: u32,
    },
    /// A tensor (or calibration set) with no elements.
    #[error("{what} is empty (shape {shape:?})")]
    Empty {
        /// What was empty: "tensor", "calibration set", ...
        what: String,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// A NaN or infinite value where finite numbers are required.
    #[error("non-finite value {value} at flat index {index} of a tensor of shape {shape:?}")]
    NonFinite {
        /// The offending value.
        value: f32,
        /// Its position in the flattened (row-major) tensor.
        index: usize,
        /// The tensor's shape.
        shape: Vec<usize>,
    },
    /// Two shapes that must agree do not.
    #[error("shape mismatch for {what}: expected {expected:?}, got {got:?}")]
    ShapeMismatch {
        /// What was being checked.
        what: String,
        /// The shape required.
        expected: Vec<usize>,
        /// The shape found.
        got: Vec<usize>,
    },
    /// A granularity that does not fit a tensor (axis out of range, group not dividing the axis).
    #[error("granularity {granularity} does not fit a tensor of shape {shape:?}: {reason}")]
    Granularity {
        /// The granularity, as written in a config.
        granularity: String,
        /// The tensor's shape.
        shape: Vec<usize>,
        /// Why it does not fit.
        reason: String,
    },
    /// An inconsistent quantization spec (e.g. NF4 at 8 bits).
    #[error("invalid quantization spec: {0}")]
    InvalidSpec(String),
    /// A config that cannot be parsed or is inconsistent.
    #[error("invalid quantization config: {0}")]
    Config(String),
    /// A config pattern that names no layer of the model.
    #[error("config pattern `{pattern}` matches no layer; closest layer names: {closest:?}")]
    UnknownLayer {
        /// The pattern from the config.
        pattern: String,
        /// Up to three layer names closest to the pattern.
        closest: Vec<String>,
    },
    /// Reading or writing a file failed at the operating-system level.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file that is truncated, corrupt or not what it claims to be.
    #[error("bad file {path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Something that is valid but not implemented (yet); the message says what.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// Another error, with the name of the tensor or layer it happened in.
    #[error("{context}: {source}")]
    Context {
        /// Where it happened, e.g. "tensor `layer1.0.conv1.weight`".
        context: String,
        /// The error itself.
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// The innermost error, with all [`Error::Context`] layers removed.
    pub fn root(&self) -> &Error {
        match self {
            Error::Context { source, .. } => source.root(),
            other => other,
        }
    }
}

/// Adds context (a tensor or layer name) to an error.
pub trait ResultExt<T> {
    /// Wraps the error, if any, in [`Error::Context`] with the given description.
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Context {
            context: context(),
            source: Box::new(source),
        })
    }
}
