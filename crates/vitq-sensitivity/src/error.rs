//! The one error type of `vitq-sensitivity`.

use std::path::PathBuf;

/// Result alias of `vitq-sensitivity`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `vitq-sensitivity`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A quantization config or spec that `vitq-core` rejects.
    #[error(transparent)]
    Core(#[from] vitq_core::Error),
    /// Sizes or energies that `vitq-energy` cannot compute.
    #[error(transparent)]
    Energy(#[from] vitq_energy::Error),
    /// Reading or writing a file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A line of a results file that is not a record (the last line, if torn by a kill, is not an
    /// error: it is dropped).
    #[error("{}: line {line} is not a sensitivity record: {message}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The parser's message.
        message: String,
    },
    /// A results file written for another model, data set or calibration set than this run.
    #[error(
        "{}: line {line} was measured on `{found}`, this run is `{expected}`; use another results file",
        path.display()
    )]
    ResumeMismatch {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The run the record belongs to.
        found: String,
        /// This run.
        expected: String,
    },
    /// Logits of the wrong size, or a quantized run with other images than the float reference.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// Non-finite logits (NaN or infinity) from an evaluation.
    #[error("{what} has non-finite logits")]
    NonFinite {
        /// Which evaluation.
        what: String,
    },
    /// A layer name that the ablations or the allocation cannot use (unknown, or a glob character in
    /// the name).
    #[error("layer `{layer}`: {reason}")]
    Layer {
        /// The layer.
        layer: String,
        /// Why not.
        reason: String,
    },
    /// A mixed-precision problem with no solution (budget below the cheapest choice) or malformed
    /// input (no candidates, NaN costs, ...).
    #[error("mixed precision: {0}")]
    Allocation(String),
    /// A sensitivity that has not been measured (run the sweep for these candidates first).
    #[error("no measurement for layer `{layer}` at {candidate} (setting {setting})")]
    Missing {
        /// The layer.
        layer: String,
        /// The candidate bits, as written on the command line.
        candidate: String,
        /// The base setting.
        setting: String,
    },
    /// A bad argument (empty list, unknown name, out-of-range number).
    #[error("{0}")]
    Invalid(String),
    /// The evaluator (the caller's model and data) failed.
    #[error("evaluating {what}: {source}")]
    Evaluate {
        /// Which evaluation.
        what: String,
        /// The caller's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Drawing or encoding a plot.
    #[error("plot: {0}")]
    Plot(String),
}
