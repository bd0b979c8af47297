//! # vitq-sensitivity
//!
//! Which layers of a model suffer from quantization, and how to spend a bit budget where it matters:
//!
//! | module | what |
//! |---|---|
//! | [`ablation`] | the configs of per-layer ablations: quantize only layer L, keep only layer L float, or quantize only layer L at candidate bits ([`Job`], [`Setting`], [`Candidate`]) |
//! | [`metrics`] | [`Scores`] of a quantized model's logits against the float model's: accuracy drop, KL divergence, SQNR |
//! | [`sweep`] | [`run_jobs`]: one evaluation per job through the caller's [`Evaluator`], skipping what a [`Store`] already holds |
//! | [`store`] | [`Store`]: results as JSON lines, appended as they are measured, read back to resume |
//! | [`mixed`] | exact mixed-precision allocation under a byte, average-bit or energy budget ([`mixed::solve`], [`mixed::allocate`]) and the [`vitq_core::QuantConfig`] it writes |
//! | [`nuclear`] | Liu et al.'s nuclear-norm mixed precision: bits from the nuclear norms of the layers' outputs, no evaluation ([`nuclear::allocate_nuclear`]) |
//! | [`pareto`] | Pareto fronts of accuracy against size and energy, CSV and a PNG plot |
//! | [`error`] | the crate's [`Error`] |
//!
//! The crate does not know the model: an [`Evaluator`] (the `vitq` CLI's uses `vitq-models`) turns a
//! config into logits on a fixed evaluation set. Costs come from `vitq-energy`, so byte and energy
//! budgets mean what `vitq energy` prints. The measured ResNet-20 tables and the command lines are in
//! `docs/sensitivity.md`.
//!
//! ```
//! use vitq_core::QuantConfig;
//! use vitq_energy::{EnergyTable, Network};
//! use vitq_sensitivity::mixed::{Budget, Objective, Request, allocate, allocatable_layers};
//! use vitq_sensitivity::{Candidate, Evaluator, Logits, Setting, Store, candidate_jobs, run_jobs};
//!
//! // A stand-in for a model: each layer's logit error grows as its bits shrink, more for `linear`.
//! struct Fake(Vec<String>);
//! impl Evaluator for Fake {
//!     type Error = std::convert::Infallible;
//!     fn logits(&mut self, cfg: Option<&QuantConfig>) -> Result<Logits, Self::Error> {
//!         let mut err = 0.0;
//!         for (i, l) in self.0.iter().enumerate() {
//!             if let Some(w) = cfg.and_then(|c| c.resolve(l).weights) {
//!                 let weight = if l == "linear" { 4.0 } else { 1.0 + i as f32 / 20.0 };
//!                 err += weight * 2f32.powi(-(w.bits.get() as i32));
//!             }
//!         }
//!         Ok(Logits::new(vec![2.0 + err, 1.0], 2, vec![0]).unwrap())
//!     }
//! }
//!
//! let net = Network::from_preset("resnet20", None)?;
//! let setting = Setting::parse("w4a8")?;
//! let layers = allocatable_layers(&net, &setting);
//! let candidates = Candidate::parse_list("2,4,8")?;
//! let mut fake = Fake(layers.clone());
//! let reference = fake.logits(None).unwrap();
//! let mut store = Store::memory("fake run");
//! run_jobs(&candidate_jobs(&setting, &layers, &candidates)?, &mut fake, &reference, &mut store, &mut |_| {})?;
//!
//! let req = Request {
//!     network: &net,
//!     setting: &setting,
//!     candidates: &candidates,
//!     budget: Budget::AverageBits(4.0),
//!     objective: Objective::Noise,
//!     table: &EnergyTable::default(),
//! };
//! let alloc = allocate(&req, &store)?;
//! let linear = alloc.layers.iter().find(|p| p.layer == "linear").unwrap();
//! assert_eq!(linear.candidate.weight_bits, 8); // the sensitive, small classifier gets 8 bits
//! let cfg = QuantConfig::from_toml_str(&alloc.to_toml()?)?;
//! cfg.check_layers(&layers)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Crate features
//! - `cuda`, `wgpu`: forwarded to `vitq-core` and `vitq-energy` (nothing here runs on a device).

#![deny(missing_docs)]

pub mod ablation;
pub mod error;
pub mod metrics;
pub mod mixed;
pub mod nuclear;
pub mod pareto;
pub mod store;
pub mod sweep;

pub use ablation::{Candidate, Job, Mode, Setting, ablation_jobs, candidate_jobs, uniform_at};
pub use error::{Error, Result};
pub use metrics::{Logits, Scores};
pub use store::{Record, Store};
pub use sweep::{Evaluator, Progress, run_jobs};
