//! The one error type of `vitq-energy`.

use std::path::PathBuf;

/// Result alias of `vitq-energy`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `vitq-energy`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A model preset that does not exist.
    #[error("unknown model `{name}`; known models: {known}")]
    UnknownModel {
        /// What was asked for.
        name: String,
        /// The presets that exist.
        known: String,
    },
    /// An input size the model cannot take (zero, or not a multiple of a ViT's patch size).
    #[error("{model} cannot take a {}×{} input: {reason}", size[0], size[1])]
    InputSize {
        /// The model.
        model: String,
        /// The input `[height, width]`.
        size: [usize; 2],
        /// Why not.
        reason: String,
    },
    /// A model description that is inconsistent (zero widths, heads not dividing the width, a layer
    /// whose output would be empty, ...).
    #[error("invalid model description {model}: {reason}")]
    InvalidModel {
        /// The model or layer.
        model: String,
        /// What is wrong.
        reason: String,
    },
    /// A count that does not fit in 64 bits (an absurd input size).
    #[error("the {what} of layer `{layer}` overflow 64 bits")]
    Overflow {
        /// The layer.
        layer: String,
        /// Which count.
        what: String,
    },
    /// An energy-table entry that is negative, NaN, infinite or out of range.
    #[error("invalid energy table: `{field}` = {value}: {reason}")]
    InvalidTable {
        /// The table field, as written in TOML.
        field: String,
        /// The rejected value.
        value: f64,
        /// What is allowed.
        reason: String,
    },
    /// An energy table that is not valid TOML or has unknown / mistyped fields.
    #[error("cannot parse energy table{}: {message}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    TableParse {
        /// The file, if it came from one.
        path: Option<PathBuf>,
        /// The parser's message.
        message: String,
    },
    /// A precision the energy model does not price (e.g. a 0-bit or 64-bit integer).
    #[error("unsupported precision: {0}")]
    Precision(String),
    /// Quantization parameters that do not fit a layer's weight (e.g. a group size that does not
    /// divide the axis), with the layer.
    #[error("layer `{layer}`: {source}")]
    Layer {
        /// The layer.
        layer: String,
        /// The cause.
        #[source]
        source: vitq_core::Error,
    },
    /// A `QuantConfig` problem (e.g. an override pattern that matches no layer of the model).
    #[error(transparent)]
    Config(#[from] vitq_core::Error),
    /// Reading a file failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}
