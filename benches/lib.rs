//! Criterion benchmarks of the vitq crates: `cargo bench -p vitq-benches`.
//!
//! - `core`: quantize, dequantize and pack a ViT-B/16 MLP weight (3072 × 768).
