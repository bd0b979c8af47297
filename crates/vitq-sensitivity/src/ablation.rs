//! What one evaluation of a sweep quantizes: a base [`Setting`] (a preset or config file), an ablation
//! [`Mode`] and, for mixed precision, a [`Candidate`] bit-width, turned into a [`QuantConfig`] by
//! [`Job::config`].
//!
//! | mode | what is quantized |
//! |---|---|
//! | [`Mode::Uniform`] | every layer, as the setting says (the reference for the two ablations) |
//! | [`Mode::QuantizeOnly`] | only the job's layer (with the setting's specs, or the candidate's bits); all others float |
//! | [`Mode::FloatOnly`] | every layer but the job's, which stays float (weights and input activations) |
//!
//! A candidate changes only the number of bits: scheme, granularity, calibration method and rounding
//! stay the setting's (so `w8` from a `w4a8` base is 8-bit symmetric per-channel weights calibrated
//! with MSE, as `w4a8`'s 4-bit weights are).
//!
//! ```
//! use vitq_sensitivity::{Candidate, Job, Mode, Setting};
//!
//! let base = Setting::parse("w4a8")?;
//! let job = Job::new(&base, Mode::QuantizeOnly, Some("layer1.0.conv1"), Some(Candidate::weights(6)));
//! let cfg = job.config()?;
//! assert_eq!(cfg.resolve("layer1.0.conv1").weights.unwrap().bits.get(), 6);
//! assert_eq!(cfg.resolve("layer1.0.conv1").activations.unwrap().bits.get(), 8);
//! assert!(cfg.resolve("layer1.0.conv2").weights.is_none());
//! assert_eq!(job.bits()?, (Some(6), Some(8)));
//! # Ok::<(), vitq_sensitivity::Error>(())
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use vitq_core::{BitWidth, LayerOverride, QuantConfig, QuantSpec};

use crate::error::{Error, Result};

/// A base setting: a named config. Presets keep their name (`w4a4`); files are named by their stem and
/// a hash of their contents, so an edited file is a new setting when results are resumed.
#[derive(Clone, Debug, PartialEq)]
pub struct Setting {
    /// The name records are filed under.
    pub name: String,
    /// The config.
    pub config: QuantConfig,
}

impl Setting {
    /// A setting from a config and a name.
    pub fn new(name: impl Into<String>, config: QuantConfig) -> Self {
        Self {
            name: name.into(),
            config,
        }
    }

    /// A setting named `name` followed by a hash of the config, so that two different configs never
    /// share results in a [`crate::Store`].
    pub fn hashed(name: &str, config: QuantConfig) -> Result<Self> {
        let hash = fnv1a(config.to_json_string()?.as_bytes());
        Ok(Self::new(format!("{name}-{:08x}", hash as u32), config))
    }

    /// A preset name (see [`vitq_core::config::PRESETS`]) or a TOML / JSON config file.
    pub fn parse(s: &str) -> Result<Self> {
        if vitq_core::config::PRESETS.contains(&s) {
            return Ok(Self::new(s, QuantConfig::preset(s)?));
        }
        let config = QuantConfig::load(s)?;
        let stem = std::path::Path::new(s)
            .file_stem()
            .and_then(|n| n.to_str())
            .unwrap_or("config");
        Self::hashed(stem, config)
    }
}

/// 64-bit FNV-1a (stable across Rust versions, unlike `DefaultHasher`).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Which layers an evaluation quantizes (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Mode {
    /// Every layer quantized as the setting says.
    Uniform,
    /// Only the job's layer quantized.
    QuantizeOnly,
    /// Every layer but the job's quantized.
    FloatOnly,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Uniform => "uniform",
            Mode::QuantizeOnly => "quantize-only",
            Mode::FloatOnly => "float-only",
        })
    }
}

/// Bit-widths to try on a layer: weight bits, and activation bits or `None` for the setting's.
/// Written `6` or `w6` (weights only) and `w6a8` (both).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Candidate {
    /// Weight bits (2–8).
    pub weight_bits: u32,
    /// Activation bits (2–8), or `None` to keep the setting's.
    pub activation_bits: Option<u32>,
}

impl Candidate {
    /// Weights at `bits`, activations as the setting says.
    pub fn weights(bits: u32) -> Self {
        Self {
            weight_bits: bits,
            activation_bits: None,
        }
    }

    /// Weights at `w`, activations at `a` bits.
    pub fn both(w: u32, a: u32) -> Self {
        Self {
            weight_bits: w,
            activation_bits: Some(a),
        }
    }

    fn validate(self) -> Result<Self> {
        BitWidth::new(self.weight_bits)?;
        if let Some(a) = self.activation_bits {
            BitWidth::new(a)?;
        }
        Ok(self)
    }

    /// A comma-separated list (`2,3,4,6,8` or `w4a8,w8a8`).
    pub fn parse_list(s: &str) -> Result<Vec<Self>> {
        let list = s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::parse)
            .collect::<Result<Vec<Self>>>()?;
        if list.is_empty() {
            return Err(Error::Invalid("no candidate bit-widths given".into()));
        }
        Ok(list)
    }
}

impl FromStr for Candidate {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::Invalid(format!(
                "candidate `{s}`: write weight bits (`4`, `w4`) or weight and activation bits (`w4a8`)"
            ))
        };
        let t = s.trim();
        let t = t.strip_prefix('w').unwrap_or(t);
        let (w, a) = match t.split_once('a') {
            Some((w, a)) => (w, Some(a)),
            None => (t, None),
        };
        let w: u32 = w.parse().map_err(|_| bad())?;
        let a: Option<u32> = a.map(|a| a.parse().map_err(|_| bad())).transpose()?;
        Self {
            weight_bits: w,
            activation_bits: a,
        }
        .validate()
    }
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.activation_bits {
            Some(a) => write!(f, "w{}a{a}", self.weight_bits),
            None => write!(f, "w{}", self.weight_bits),
        }
    }
}

impl TryFrom<String> for Candidate {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Candidate> for String {
    fn from(c: Candidate) -> String {
        c.to_string()
    }
}

/// `spec` with `bits` bits (validated: NF4 stays 4-bit only).
fn with_bits(spec: &QuantSpec, bits: u32) -> Result<QuantSpec> {
    let mut s = *spec;
    s.bits = BitWidth::new(bits)?;
    s.validate()?;
    Ok(s)
}

/// The specs `candidate` gives a layer that `base` quantizes with `weights` / `activations`.
pub(crate) fn candidate_specs(
    setting: &str,
    layer: &str,
    lq: vitq_core::LayerQuant,
    candidate: Candidate,
) -> Result<(Option<QuantSpec>, Option<QuantSpec>)> {
    let w = match lq.weights {
        Some(w) => Some(with_bits(&w, candidate.weight_bits)?),
        None => {
            return Err(Error::Layer {
                layer: layer.into(),
                reason: format!(
                    "setting {setting} keeps its weights in float; candidate {candidate} needs a weight spec"
                ),
            });
        }
    };
    let a = match (candidate.activation_bits, lq.activations) {
        (None, a) => a,
        (Some(bits), Some(a)) => Some(with_bits(&a, bits)?),
        (Some(_), None) => {
            return Err(Error::Layer {
                layer: layer.into(),
                reason: format!(
                    "setting {setting} keeps its activations in float; candidate {candidate} needs an activation spec"
                ),
            });
        }
    };
    Ok((w, a))
}

/// Checks that a layer name can be an override pattern that matches only itself.
pub(crate) fn check_name(layer: &str) -> Result<()> {
    if layer.is_empty() || layer.contains(['*', '?']) {
        return Err(Error::Layer {
            layer: layer.into(),
            reason: "layer names used as override patterns cannot be empty or contain `*` or `?`"
                .into(),
        });
    }
    Ok(())
}

/// One evaluation of a sweep.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    /// The base setting.
    pub setting: Setting,
    /// Which layers are quantized.
    pub mode: Mode,
    /// The ablated layer (`None` for [`Mode::Uniform`]).
    pub layer: Option<String>,
    /// Other bits than the setting's: for the ablated layer ([`Mode::QuantizeOnly`]) or for every
    /// layer ([`Mode::Uniform`]); ignored by [`Mode::FloatOnly`].
    pub candidate: Option<Candidate>,
}

impl Job {
    /// A job.
    pub fn new(
        setting: &Setting,
        mode: Mode,
        layer: Option<&str>,
        candidate: Option<Candidate>,
    ) -> Self {
        Self {
            setting: setting.clone(),
            mode,
            layer: layer.map(str::to_string),
            candidate: if mode == Mode::FloatOnly {
                None
            } else {
                candidate
            },
        }
    }

    fn layer(&self) -> Result<&str> {
        let layer = self
            .layer
            .as_deref()
            .ok_or_else(|| Error::Invalid(format!("a {} ablation needs a layer", self.mode)))?;
        check_name(layer)?;
        Ok(layer)
    }

    /// The config this job evaluates.
    pub fn config(&self) -> Result<QuantConfig> {
        let base = &self.setting.config;
        let mut cfg = match self.mode {
            Mode::Uniform => match self.candidate {
                None => base.clone(),
                Some(c) => uniform_at(base, &self.setting.name, c)?,
            },
            Mode::QuantizeOnly => {
                let layer = self.layer()?;
                let lq = base.resolve(layer);
                let (weights, activations) = match self.candidate {
                    None => (lq.weights, lq.activations),
                    Some(c) => candidate_specs(&self.setting.name, layer, lq, c)?,
                };
                let mut cfg = QuantConfig::new(None, None);
                cfg.activation_mode = base.activation_mode;
                cfg.overrides.push(LayerOverride {
                    pattern: layer.to_string(),
                    float: false,
                    weights,
                    activations,
                });
                cfg
            }
            Mode::FloatOnly => {
                let layer = self.layer()?;
                let mut cfg = base.clone();
                cfg.overrides.push(LayerOverride {
                    pattern: layer.to_string(),
                    float: true,
                    weights: None,
                    activations: None,
                });
                cfg
            }
        };
        cfg.name = Some(self.to_string());
        cfg.validate()?;
        Ok(cfg)
    }

    /// The weight and activation bits the job is filed under: the ablated layer's for
    /// [`Mode::QuantizeOnly`], the config's defaults otherwise (`None` = float).
    pub fn bits(&self) -> Result<(Option<u32>, Option<u32>)> {
        let cfg = self.config()?;
        let lq = match (self.mode, &self.layer) {
            (Mode::QuantizeOnly, Some(l)) => cfg.resolve(l),
            _ => vitq_core::LayerQuant {
                weights: cfg.weights,
                activations: cfg.activations,
            },
        };
        Ok((
            lq.weights.map(|s| s.bits.get()),
            lq.activations.map(|s| s.bits.get()),
        ))
    }
}

impl fmt::Display for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.setting.name, self.mode)?;
        if let Some(l) = &self.layer {
            write!(f, " {l}")?;
        }
        if let Some(c) = self.candidate {
            write!(f, " {c}")?;
        }
        Ok(())
    }
}

/// `base` with every weight (and, if the candidate says, activation) spec at the candidate's bits,
/// overrides included.
pub fn uniform_at(base: &QuantConfig, setting: &str, c: Candidate) -> Result<QuantConfig> {
    let mut cfg = base.clone();
    let w = base.weights.ok_or_else(|| {
        Error::Invalid(format!(
            "setting {setting} keeps its weights in float; candidate {c} needs a weight spec"
        ))
    })?;
    cfg.weights = Some(with_bits(&w, c.weight_bits)?);
    if let Some(a) = c.activation_bits {
        let spec = base.activations.ok_or_else(|| {
            Error::Invalid(format!(
                "setting {setting} keeps its activations in float; candidate {c} needs an activation spec"
            ))
        })?;
        cfg.activations = Some(with_bits(&spec, a)?);
    }
    for o in &mut cfg.overrides {
        if let Some(w) = &o.weights {
            o.weights = Some(with_bits(w, c.weight_bits)?);
        }
        if let (Some(a), Some(bits)) = (&o.activations, c.activation_bits) {
            o.activations = Some(with_bits(a, bits)?);
        }
    }
    cfg.name = Some(format!("{setting}@{c}"));
    Ok(cfg)
}

/// The jobs of a per-layer ablation of `setting`: the uniform config, then for each layer
/// "quantize only this layer" and "keep only this layer float".
pub fn ablation_jobs<S: AsRef<str>>(setting: &Setting, layers: &[S]) -> Result<Vec<Job>> {
    let mut jobs = vec![Job::new(setting, Mode::Uniform, None, None)];
    for l in layers {
        check_name(l.as_ref())?;
        jobs.push(Job::new(
            setting,
            Mode::QuantizeOnly,
            Some(l.as_ref()),
            None,
        ));
        jobs.push(Job::new(setting, Mode::FloatOnly, Some(l.as_ref()), None));
    }
    Ok(jobs)
}

/// The jobs that measure each layer's sensitivity at each candidate: "quantize only this layer, at
/// these bits", for every layer and candidate.
pub fn candidate_jobs<S: AsRef<str>>(
    setting: &Setting,
    layers: &[S],
    candidates: &[Candidate],
) -> Result<Vec<Job>> {
    let mut jobs = Vec::new();
    for l in layers {
        check_name(l.as_ref())?;
        for c in candidates {
            jobs.push(Job::new(
                setting,
                Mode::QuantizeOnly,
                Some(l.as_ref()),
                Some(*c),
            ));
        }
    }
    Ok(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_parse_and_print() {
        assert_eq!("4".parse::<Candidate>().unwrap(), Candidate::weights(4));
        assert_eq!("w6".parse::<Candidate>().unwrap(), Candidate::weights(6));
        assert_eq!("w4a8".parse::<Candidate>().unwrap(), Candidate::both(4, 8));
        assert_eq!(Candidate::both(4, 8).to_string(), "w4a8");
        assert!("9".parse::<Candidate>().is_err());
        assert!("w4a1".parse::<Candidate>().is_err());
        assert!("four".parse::<Candidate>().is_err());
        assert!(Candidate::parse_list(" , ").is_err());
        assert_eq!(Candidate::parse_list("2,3, 8").unwrap().len(), 3);
    }

    #[test]
    fn ablation_configs_quantize_what_they_say() {
        let s = Setting::parse("w4a4").unwrap();
        let layers = ["conv1", "layer1.0.conv1", "linear"];
        let jobs = ablation_jobs(&s, &layers).unwrap();
        assert_eq!(jobs.len(), 1 + 2 * layers.len());
        let only = jobs[1].config().unwrap();
        assert_eq!(only.resolve("conv1").weights.unwrap().bits.get(), 4);
        assert_eq!(only.resolve("conv1").activations.unwrap().bits.get(), 4);
        assert!(only.resolve("linear").weights.is_none());
        assert!(only.resolve("linear").activations.is_none());
        assert!(only.needs_calibration());
        let all_but = jobs[2].config().unwrap();
        assert!(all_but.resolve("conv1").weights.is_none());
        assert!(all_but.resolve("conv1").activations.is_none());
        assert_eq!(all_but.resolve("linear").weights.unwrap().bits.get(), 4);
        assert_eq!(jobs[2].bits().unwrap(), (Some(4), Some(4)));
        assert!(
            jobs.iter()
                .all(|j| j.config().unwrap().check_layers(&layers).is_ok())
        );
    }

    #[test]
    fn candidates_keep_the_settings_scheme() {
        let s = Setting::parse("w4a8").unwrap();
        let j = Job::new(
            &s,
            Mode::QuantizeOnly,
            Some("linear"),
            Some(Candidate::both(2, 6)),
        );
        let lq = j.config().unwrap().resolve("linear");
        let base = s.config.resolve("linear");
        assert_eq!(lq.weights.unwrap().bits.get(), 2);
        assert_eq!(
            lq.weights.unwrap().calibration,
            base.weights.unwrap().calibration
        );
        assert_eq!(lq.activations.unwrap().bits.get(), 6);
        assert_eq!(j.bits().unwrap(), (Some(2), Some(6)));
        let u = Job::new(&s, Mode::Uniform, None, Some(Candidate::weights(6)));
        assert_eq!(u.bits().unwrap(), (Some(6), Some(8)));
        // Weight-only settings cannot take activation candidates; NF4 cannot change bits.
        let w4 = Setting::parse("w4").unwrap();
        assert!(
            Job::new(
                &w4,
                Mode::QuantizeOnly,
                Some("linear"),
                Some(Candidate::both(4, 8))
            )
            .config()
            .is_err()
        );
        let nf4 = Setting::parse("nf4").unwrap();
        assert!(
            Job::new(
                &nf4,
                Mode::QuantizeOnly,
                Some("linear"),
                Some(Candidate::weights(6))
            )
            .config()
            .is_err()
        );
    }

    #[test]
    fn glob_characters_in_layer_names_are_refused() {
        let s = Setting::parse("w8a8").unwrap();
        assert!(matches!(
            ablation_jobs(&s, &["layer*"]),
            Err(Error::Layer { .. })
        ));
    }
}
