//! The crate's one error type.

use crate::Strategy;

/// Everything that can go wrong in this crate. No public function panics on bad input; it
/// returns one of these instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Query, key and value do not have compatible shapes. `q`, `k`, `v` are
    /// `[batch, heads, tokens, head_dim]`.
    #[error(
        "attention shapes do not match: q {q:?}, k {k:?}, v {v:?} (expected q [b, h, n_q, d], k [b, h, n_k, d], v [b, h, n_k, d_v])"
    )]
    ShapeMismatch {
        /// Query shape.
        q: [usize; 4],
        /// Key shape.
        k: [usize; 4],
        /// Value shape.
        v: [usize; 4],
    },
    /// The mask's shape is not `[batch, heads, n_q, n_k]` (or broadcastable to it over
    /// batch and heads, i.e. with 1 there).
    #[error("attention mask has shape {mask:?}, expected [{b}|1, {h}|1, {n_q}, {n_k}]")]
    MaskShape {
        /// The mask's shape.
        mask: [usize; 4],
        /// Batch size of q.
        b: usize,
        /// Heads of q.
        h: usize,
        /// Query tokens.
        n_q: usize,
        /// Key tokens.
        n_k: usize,
    },
    /// A dimension is zero (no tokens, no heads, empty head dim).
    #[error("attention input has an empty dimension: q {q:?}, k {k:?}")]
    Empty {
        /// Query shape.
        q: [usize; 4],
        /// Key shape.
        k: [usize; 4],
    },
    /// The scale is not a finite positive number.
    #[error("attention scale must be finite and > 0, got {0}")]
    BadScale(f32),
    /// An input holds NaN or ±Inf.
    #[error("attention input `{tensor}` contains NaN or infinite values")]
    NonFinite {
        /// `"q"`, `"k"` or `"v"`.
        tensor: &'static str,
    },
    /// The head dimension is not one the flash kernel is compiled for (32, 64, 128), or value
    /// and key head dims differ.
    #[error(
        "flash attention supports head_dim 32, 64 or 128 with d_v = d, got d = {d}, d_v = {d_v}"
    )]
    UnsupportedHeadDim {
        /// Head dimension of q and k.
        d: usize,
        /// Head dimension of v.
        d_v: usize,
    },
    /// The element type is not supported by the strategy (e.g. f64 in the flash kernel).
    #[error("{strategy:?} does not support element type {dtype}")]
    UnsupportedDType {
        /// The strategy asked for.
        strategy: Strategy,
        /// The input dtype, as burn prints it.
        dtype: String,
    },
    /// The strategy cannot run on this backend (e.g. `Flash` on the Flex CPU backend, or on a
    /// build without the `cuda` / `wgpu` feature).
    #[error("{strategy:?} attention is not available on backend {backend}: {reason}")]
    UnsupportedBackend {
        /// The strategy asked for.
        strategy: Strategy,
        /// `B::name()` of the backend.
        backend: String,
        /// Why.
        reason: &'static str,
    },
    /// The strategy does not support an option that was given (e.g. a mask with `Flash`).
    #[error("{strategy:?} attention does not support {what}")]
    Unsupported {
        /// The strategy asked for.
        strategy: Strategy,
        /// What it does not support.
        what: &'static str,
    },
    /// The kernel could not be launched (e.g. not enough shared memory on the device).
    #[error("flash attention kernel launch failed: {0}")]
    Launch(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = core::result::Result<T, Error>;
