//! Runnable examples of the vitq crates; see the `[[example]]` entries of this package:
//!
//! - `quantize_weights`: quantize a ViT-B/16 MLP weight with every preset, compare error and size, and
//!   save one to a safetensors file.
