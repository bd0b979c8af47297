//! Criterion benchmarks of the vitq crates: `cargo bench -p vitq-benches`.
//!
//! - `core`: quantize, dequantize and pack a ViT-B/16 MLP weight (3072 × 768); a W8A8 linear layer in
//!   integers against the f32 layer at ViT-B/16 fc1 shapes (197 × 768 → 3072).
