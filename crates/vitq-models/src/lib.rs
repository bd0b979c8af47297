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
//! | [`data`] | CIFAR-10 binary files, normalization |
//! | [`zoo`] | load any preset by name, run it, know its input size and normalization |
//! | [`metrics`] | top-1, top-5, weighted F1, per-class accuracy, confusion matrix |
//!
//! Status: the ResNet family, CIFAR-10 and metrics work; the ViT family, ImageFolder / JPEG
//! preprocessing and PyTorch `.pth` loading are not implemented yet (issue #3 continues).

#![deny(missing_docs)]

pub mod data;
pub mod error;
pub mod metrics;
pub mod pytorch;
pub mod resnet;
pub mod vit;
pub mod weights;
pub mod zoo;

pub use error::{Error, Result};
