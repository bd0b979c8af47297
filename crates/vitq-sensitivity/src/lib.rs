//! # vitq-sensitivity
//!
//! Per-layer quantization sensitivity and mixed-precision allocation.
//!
//! **Status: not implemented yet.** This crate is a placeholder in the workspace layout of
//! `docs/architecture.md`; its contents land with issue #6. It exports nothing, so nothing here can
//! be mistaken for working code.

#![deny(missing_docs)]
