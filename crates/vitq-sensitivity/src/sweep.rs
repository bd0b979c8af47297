//! Running jobs: each [`Job`] is evaluated once by the caller's [`Evaluator`] (quantize the model with
//! the job's config, run the evaluation images), scored against the float logits, and filed in a
//! [`Store`]; jobs whose key the store already holds are skipped, which is how a sweep resumes.
//!
//! ```
//! use vitq_core::QuantConfig;
//! use vitq_sensitivity::{Evaluator, Logits, Setting, Store, ablation_jobs, run_jobs};
//!
//! /// A stand-in model: every quantized layer shifts the first logit.
//! struct Fake;
//! impl Evaluator for Fake {
//!     type Error = std::convert::Infallible;
//!     fn logits(&mut self, cfg: Option<&QuantConfig>) -> Result<Logits, Self::Error> {
//!         let layers = ["conv1", "linear"];
//!         let q = cfg.map_or(0, |c| layers.iter().filter(|l| c.resolve(l).weights.is_some()).count());
//!         Ok(Logits::new(vec![1.0 + 0.1 * q as f32, 0.0], 2, vec![0]).unwrap())
//!     }
//! }
//!
//! let jobs = ablation_jobs(&Setting::parse("w4a4")?, &["conv1", "linear"])?;
//! let mut store = Store::memory("fake");
//! let mut fake = Fake;
//! let reference = fake.logits(None).unwrap();
//! let records = run_jobs(&jobs, &mut fake, &reference, &mut store, &mut |_| {})?;
//! assert_eq!(records.len(), 5);
//! assert!(records[0].scores.kl > records[1].scores.kl); // uniform vs. one layer
//! // Nothing is evaluated twice.
//! let mut calls = 0;
//! run_jobs(&jobs, &mut fake, &reference, &mut store, &mut |p| calls += usize::from(!p.cached))?;
//! assert_eq!(calls, 0);
//! # Ok::<(), vitq_sensitivity::Error>(())
//! ```

use std::time::Instant;

use vitq_core::QuantConfig;

use crate::ablation::Job;
use crate::error::{Error, Result};
use crate::metrics::{Logits, Scores};
use crate::store::{Key, Record, Store};

/// The caller's model and evaluation images: logits of the model quantized with a config (`None` =
/// the float model), on the same images in the same order every time.
pub trait Evaluator {
    /// What can go wrong (quantizing, running the model).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Logits on the evaluation images with `config` applied (calibrating as the caller chooses).
    fn logits(&mut self, config: Option<&QuantConfig>) -> Result<Logits, Self::Error>;
}

/// Reported after each job.
#[derive(Clone, Copy, Debug)]
pub struct Progress<'a> {
    /// Jobs finished (cached ones included).
    pub done: usize,
    /// Jobs in all.
    pub total: usize,
    /// The job just finished.
    pub job: &'a Job,
    /// Its record.
    pub record: &'a Record,
    /// Whether it came from the store (not evaluated now).
    pub cached: bool,
}

/// The key a job's record is filed under.
pub fn key_of(job: &Job) -> Result<Key> {
    let (weight_bits, activation_bits) = job.bits()?;
    Ok(Key {
        setting: job.setting.name.clone(),
        mode: job.mode,
        layer: job.layer.clone(),
        weight_bits,
        activation_bits,
    })
}

/// Runs `jobs` not already in `store`, scoring each against `reference` (the float logits), and
/// returns the records of all jobs in order. Every config is built and checked before the first
/// evaluation, so a bad job fails fast.
pub fn run_jobs<E: Evaluator>(
    jobs: &[Job],
    evaluator: &mut E,
    reference: &Logits,
    store: &mut Store,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Vec<Record>> {
    let planned = jobs
        .iter()
        .map(|j| Ok((j, j.config()?, key_of(j)?)))
        .collect::<Result<Vec<_>>>()?;
    let mut out = Vec::with_capacity(jobs.len());
    for (i, (job, config, key)) in planned.into_iter().enumerate() {
        let cached = store.get(&key).cloned();
        let is_cached = cached.is_some();
        let record = match cached {
            Some(r) => r,
            None => {
                let start = Instant::now();
                let logits = evaluator
                    .logits(Some(&config))
                    .map_err(|e| Error::Evaluate {
                        what: job.to_string(),
                        source: Box::new(e),
                    })?;
                let scores = Scores::compare(reference, &logits).map_err(|e| match e {
                    Error::NonFinite { .. } => Error::NonFinite {
                        what: job.to_string(),
                    },
                    other => other,
                })?;
                let mut r = Record::new(
                    store.run(),
                    &key.setting,
                    key.mode,
                    key.layer.as_deref(),
                    (key.weight_bits, key.activation_bits),
                    scores,
                );
                r.seconds = start.elapsed().as_secs_f64();
                store.push(r.clone())?;
                r
            }
        };
        progress(Progress {
            done: i + 1,
            total: jobs.len(),
            job,
            record: &record,
            cached: is_cached,
        });
        out.push(record);
    }
    Ok(out)
}
