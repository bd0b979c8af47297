//! # vitq-energy
//!
//! How much arithmetic and memory traffic a vitq model needs per image, and what that costs in energy
//! at the bit-widths a [`vitq_core::QuantConfig`] gives each layer:
//!
//! `E = Σ_layers N_MAC · E_MAC(b_w, b_a) + Σ_tensors N_bits · E_mem`
//!
//! with a documented default table from Horowitz (ISSCC 2014, 45 nm) that users can replace with
//! their own TOML.
//!
//! | module | what |
//! |---|---|
//! | [`network`] | [`Network`]: the quantizable layers (convolutions, linear layers, attention matmuls) of any `vitq-models` preset at any input size, with their shapes and per-image [`Counts`] (MACs, weights, activations), derived from the config structs without loading weights |
//! | [`table`] | [`EnergyTable`]: pJ per operation and per memory access (Horowitz's defaults), `E_MAC` scaling with `b_w·b_a`, memory energy linear in bits, TOML loading with validation |
//! | [`estimate`](mod@estimate) | [`EnergyReport`]: per-layer bytes (codes, scales, biases, activations) and energy under a `QuantConfig`, totals, and the reduction against float 32 |
//! | [`error`] | the crate's [`Error`] |
//!
//! Layer names are the module paths the models give their layers (`layer1.0.conv1`,
//! `blocks.3.attn.matmul_qk`, `head`), so `QuantConfig` overrides apply here exactly as they do to the
//! model; a test builds every preset and compares. MAC counts match published figures (torchvision:
//! ViT-B/16 17.56 G, ViT-L/16 61.55 G, ResNet-18 1.81 G, ResNet-50 4.09 G; timm: DeiT-Ti 1.3 G;
//! ResNet-20 40.55 M; see `tests/known_figures.rs`). The model, its assumptions and a worked example
//! are in `docs/energy.md`.
//!
//! ```
//! use vitq_core::QuantConfig;
//! use vitq_energy::{EnergyReport, EnergyTable, Network};
//!
//! // CIFAR ResNet-20 at 32×32: 19 convolutions and the classifier.
//! let net = Network::from_preset("resnet20", None)?;
//! assert_eq!(net.layers.len(), 20);
//! assert_eq!(net.counts()?.macs, 40_551_040);
//!
//! let table = EnergyTable::default(); // Horowitz, 45 nm, weights and activations in DRAM
//! let w8a8 = EnergyReport::new(&net, &QuantConfig::preset("w8a8")?, &table)?;
//! let f32 = EnergyReport::float32(&net, &table)?;
//! println!(
//!     "{:.1} µJ → {:.1} µJ ({:.1}× less)",
//!     f32.energy_pj() / 1e6,
//!     w8a8.energy_pj() / 1e6,
//!     w8a8.reduction_from(&f32)
//! );
//! assert!(w8a8.reduction_from(&f32) > 3.0);
//! // Weights: 8-bit codes plus one f32 scale per output channel, instead of 4 bytes each.
//! assert!(w8a8.totals.weight_bytes * 3 < f32.totals.weight_bytes);
//! # Ok::<(), vitq_energy::Error>(())
//! ```
//!
//! # Crate features
//! - `cuda`, `wgpu`: forwarded to `vitq-core` and `vitq-models` (nothing here runs on a device).

#![deny(missing_docs)]

pub mod error;
pub mod estimate;
pub mod network;
pub mod table;

pub use error::{Error, Result};
pub use estimate::{EnergyReport, LayerCost, Totals, estimate, quantized_weight_bytes};
pub use network::{Counts, Layer, Network, Op};
pub use table::{EnergyTable, MemoryLevel, Precision, TABLE_VERSION};
