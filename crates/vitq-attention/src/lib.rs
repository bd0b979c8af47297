//! # vitq-attention
//!
//! Scaled-dot-product attention.
//!
//! **Status: not implemented yet.** This crate is a placeholder in the workspace layout of
//! `docs/architecture.md`; its contents land with issue # a reference and a fused CubeCL flash-attention kernel:5. It exports nothing, so nothing here can
//! be mistaken for working code.

#![deny(missing_docs)]
