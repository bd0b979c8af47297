//! # vitq-models
//!
//! Vision models built from `vitq-core`'s quantizable layers, loading real checkpoints, with datasets
//! and metrics to evaluate them.
//!
//! | module | what |
//! |---|---|
//! | [`resnet`] | CIFAR ResNet-20/32/44/56 (option-A shortcuts) and ImageNet ResNet-18/34/50, BatchNorm folded |
//! | [`vit`] | ViT-Ti/S/B/L, DeiT-T/S/B, DINOv2-S/B (layer-scale, patch 14) and CIFAR ViTs from timm or Hugging Face checkpoints; timm's antialiased bicubic pos-embed resampling |
//! | [`weights`] | strict checkpoint loading (safetensors or PyTorch pickles): all missing / unexpected / misshapen keys in one error |
//! | [`pytorch`] | `.pth` / `.th` checkpoints through burn-store, nested `state_dict`s found |
//! | [`data`] | CIFAR-10 binary files, JPEG / PNG decoding with timm's eval preprocessing (a port of Pillow's resampler), ImageFolder and ImageNet-style folders, normalization |
//! | [`zoo`] | load any preset by name, run it, know its input size and normalization |
//! | [`quantized`] | `Model::quantize` (post-training quantization), and saving / loading a quantized model as one file |
//! | [`metrics`] | top-1, top-5, weighted F1, per-class accuracy, confusion matrix |
//!
//! Every model is checked against timm / torchvision on the same weights and inputs (fixtures from
//! `scripts/peer/export_model_fixtures.py`; max relative error ≤ 1e-4, measured ≤ 1.3e-6), and the real
//! CIFAR-10 ResNet-20 scores 915 / 1000 on `test_first1000.bin`, as PyTorch does.
//!
//! ```no_run
//! use burn::backend::Flex;
//! use vitq_models::data::Preprocess;
//! use vitq_models::zoo::Model;
//!
//! let device = Default::default();
//! let model = Model::<Flex>::load("deit_tiny_patch16_224", "deit_tiny.safetensors", &device)?;
//! let x = model.preprocess().load::<Flex>("cat.jpg", &device)?;
//! let logits = model.forward(x.unsqueeze())?;
//! # Ok::<(), vitq_models::Error>(())
//! ```

#![deny(missing_docs)]

mod autodiff;
pub mod data;
pub mod error;
pub mod metrics;
pub mod pytorch;
pub mod quantized;
pub mod resnet;
pub mod vit;
pub mod weights;
pub mod zoo;

pub use error::{Error, Result};
