//! # vitq-models
//!
//! ViT, DeiT, DINOv2 and ResNet models built from vitq-core layers, checkpoint loading, preprocessing, datasets and metrics.
//!
//! **Status: not implemented yet.** This crate is a placeholder in the workspace layout of
//! `docs/architecture.md`; its contents land with issue #3. It exports nothing, so nothing here can
//! be mistaken for working code.

#![deny(missing_docs)]
