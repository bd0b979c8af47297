//! [`QuantConfig`]: what a model quantization does, as plain data (TOML or JSON).
//!
//! A config has a default weight spec, an optional activation spec and per-layer overrides keyed
//! by module-path patterns. Weight specs use PyTorch's layout: axis 0 is the output channel of linear
//! (`[out, in]`) and conv (`[out, in, kh, kw]`) weights.
//!
//! Patterns are globs over module paths: `*` matches any run of characters (dots included), `?` one
//! character. Overrides apply in order and the last matching one wins, field by field.
//!
//! ```
//! use vitq_core::QuantConfig;
//!
//! let cfg: QuantConfig = QuantConfig::from_toml_str(r#"
//!     version = 1
//!     weights = { bits = 4, scheme = { kind = "symmetric" }, granularity = { kind = "per_channel", axis = 0 } }
//!     activations = { bits = 8, scheme = { kind = "asymmetric" } }
//!
//!     [[overrides]]
//!     pattern = "head"
//!     float = true
//!
//!     [[overrides]]
//!     pattern = "blocks.*.mlp.fc2"
//!     weights = { bits = 8 }
//! "#)?;
//! assert_eq!(cfg.resolve("blocks.3.mlp.fc2").weights.unwrap().bits.get(), 8);
//! assert_eq!(cfg.resolve("blocks.3.attn.qkv").weights.unwrap().bits.get(), 4);
//! assert!(cfg.resolve("head").weights.is_none());
//! assert_eq!(QuantConfig::preset("w4a8")?.weights.unwrap().bits.get(), 4);
//! # Ok::<(), vitq_core::Error>(())
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::spec::{CalibrationMethod, Granularity, QuantSpec, Rounding, Scheme};

/// The config format version this crate writes and reads.
pub const CONFIG_VERSION: u32 = 1;

/// The preset names accepted by [`QuantConfig::preset`].
pub const PRESETS: [&str; 8] = [
    "w8a8",
    "w6a6",
    "w4a8",
    "w4a4",
    "w8",
    "w4",
    "nf4",
    "int8-dynamic",
];

/// When activation scales are fixed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ActivationMode {
    /// Calibrated once on a calibration set, then fixed.
    #[default]
    Static,
    /// Recomputed from every batch at run time (min-max), as `torch.ao`'s `quantize_dynamic`.
    Dynamic,
}

/// How scales are chosen once calibration statistics are in.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum PtqMethod {
    /// Each tensor's own calibration method (the specs' `calibration`), nothing more.
    #[default]
    Plain,
    /// Similarity-aware scale search (Liu et al., "Post-Training Quantization for Vision Transformer",
    /// NeurIPS 2021, §3.2): for every linear layer with quantized weights and static activations, the
    /// weight and input scales are searched alternately over `candidates` multiples in `[0.5, 1.2]` of
    /// the calibrated ones, maximizing the cosine similarity between the layer's float and quantized outputs
    /// on rows of its calibration inputs (see [`crate::search`]).
    ///
    /// With `attention` (the default), the operand quantizers of the attention matmuls are searched too
    /// (§3.3, [`crate::ranking`]): for `*.matmul_qk` the objective is the cosine similarity of the float
    /// and quantized attention scores minus `gamma` times the paper's ranking loss (a hinge of margin
    /// `theta` on sampled pairs of scores of one query, charging pairs whose order quantization flips or
    /// nearly flips), for the other matmuls (`softmax · V`, only `V`'s range searched) the similarity
    /// alone; `gamma = 0` turns the ranking loss off.
    /// The paper's bias correction is [`QuantConfig::bias_correction`], on by default for this method.
    /// The nuclear-norm bit allocation of §3.4 is `vitq_sensitivity::nuclear`, a config writer.
    SimilaritySearch {
        /// Candidates per search (the paper uses 100).
        #[serde(default = "default_candidates")]
        candidates: u32,
        /// Alternating weight / input rounds.
        #[serde(default = "default_rounds")]
        rounds: u32,
        /// Calibration rows kept per layer.
        #[serde(default = "default_rows")]
        rows: u32,
        /// Search the attention matmuls' operand scales too.
        #[serde(default = "default_attention")]
        attention: bool,
        /// Weight `γ` of the ranking loss (0: similarity only).
        #[serde(default = "default_gamma")]
        gamma: f32,
        /// Margin `θ` of the ranking loss's hinge `max(0, θ − p)`, in units of the mean gap between
        /// two float attention scores of one query (see [`crate::ranking`]).
        #[serde(default = "default_theta")]
        theta: f32,
    },
    /// PTQ4ViT (Yuan et al., ECCV 2022): twin-uniform quantizers for the post-softmax and post-GELU
    /// activations and a Hessian-guided, alternating search of the weight and input scales of every
    /// linear and attention-matmul layer (see [`crate::ptq4vit`]).
    Ptq4vit {
        /// Grid points in `range` beyond the first (the paper uses 100).
        #[serde(default = "crate::ptq4vit::default_candidates")]
        candidates: u32,
        /// The lowest and highest multiples of the calibrated scales searched (the authors'
        /// `eq_alpha`, `eq_beta`: `[0.01, 1.2]`).
        #[serde(default = "crate::ptq4vit::default_range")]
        range: [f32; 2],
        /// Alternating weight / input rounds (the paper uses 3).
        #[serde(default = "crate::ptq4vit::default_rounds")]
        rounds: u32,
        /// Calibration rows kept per layer.
        #[serde(default = "crate::ptq4vit::default_rows")]
        rows: u32,
        /// Twin-uniform quantizer on the softmax operand of each `attn.matmul_av`.
        #[serde(default = "crate::ptq4vit::default_true")]
        twin_softmax: bool,
        /// Twin-uniform quantizer on the post-GELU input of each `mlp.fc2`.
        #[serde(default = "crate::ptq4vit::default_true")]
        twin_gelu: bool,
        /// Where a twin quantizer is asked for, also search a plain uniform quantizer for that input
        /// and keep whichever has the smaller distance (an extension of the paper, which always uses
        /// the twin; see [`crate::ptq4vit`]). Off by default (the paper's method).
        #[serde(default)]
        twin_select: bool,
        /// With per-channel weights, let each output channel pick its own multiple of its scale (each
        /// channel's share of the distance depends on its own scale alone) instead of one multiple
        /// for the whole layer, in each layer where that choice, fitted on half of the calibration
        /// rows, wins on the other half (see [`crate::ptq4vit`]). Off by default: one multiple per
        /// layer, as in the paper's per-tensor setting.
        #[serde(default)]
        channel_search: bool,
        /// The distance minimized: `"hessian"` (the paper's) or `"mse"`.
        #[serde(default)]
        metric: crate::ptq4vit::SearchMetric,
        /// Random probes per calibration batch for the Hessian's diagonal (each one forward and backward
        /// pass of the float model; see [`crate::hessian`]).
        #[serde(default = "crate::ptq4vit::default_probes")]
        probes: u32,
    },
}

fn default_candidates() -> u32 {
    40
}
fn default_rounds() -> u32 {
    2
}
fn default_rows() -> u32 {
    1024
}
fn default_attention() -> bool {
    true
}
fn default_gamma() -> f32 {
    crate::ranking::DEFAULT_GAMMA
}
fn default_theta() -> f32 {
    crate::ranking::DEFAULT_THETA
}

impl PtqMethod {
    /// Similarity search with the default settings.
    pub fn similarity_search() -> Self {
        PtqMethod::SimilaritySearch {
            candidates: default_candidates(),
            rounds: default_rounds(),
            rows: default_rows(),
            attention: default_attention(),
            gamma: default_gamma(),
            theta: default_theta(),
        }
    }
}

fn is_plain(m: &PtqMethod) -> bool {
    *m == PtqMethod::Plain
}

/// A model-wide quantization config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantConfig {
    /// Format version; must be [`CONFIG_VERSION`].
    pub version: u32,
    /// A name for reports (the preset name for presets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Default weight spec; `None` keeps weights in float.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<QuantSpec>,
    /// Default activation spec (inputs of linear, conv and attention matmuls); `None` keeps them float.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activations: Option<QuantSpec>,
    /// Static or dynamic activation scales.
    #[serde(default)]
    pub activation_mode: ActivationMode,
    /// How scales are chosen after calibration.
    #[serde(default, skip_serializing_if = "is_plain")]
    pub method: PtqMethod,
    /// Bias correction (Nagel et al. 2019; part of Liu et al.'s method): each linear layer with quantized
    /// weights and static input quantization gets its bias corrected by the mean error its quantization
    /// leaves in the output, per output channel, on rows of its calibration inputs (see
    /// [`crate::search`]). `None` leaves it to the method ([`QuantConfig::bias_correction`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bias_correction: Option<bool>,
    /// Per-layer overrides, applied in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<LayerOverride>,
}

/// Changes to the defaults for the layers whose path matches `pattern`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerOverride {
    /// Glob over module paths (see the module docs).
    pub pattern: String,
    /// Keep matching layers entirely in float (weights and activations).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub float: bool,
    /// Replacement weight spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<QuantSpec>,
    /// Replacement activation spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activations: Option<QuantSpec>,
}

/// What one layer gets after overrides are applied.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerQuant {
    /// Weight spec, `None` for float.
    pub weights: Option<QuantSpec>,
    /// Activation spec, `None` for float.
    pub activations: Option<QuantSpec>,
}

fn spec(
    bits: u32,
    scheme: Scheme,
    granularity: Granularity,
    cal: CalibrationMethod,
) -> Result<QuantSpec> {
    Ok(QuantSpec {
        bits: crate::BitWidth::new(bits)?,
        scheme,
        granularity,
        calibration: cal,
        rounding: Rounding::NearestEven,
    })
}

impl QuantConfig {
    /// A config with the given defaults and no overrides.
    pub fn new(weights: Option<QuantSpec>, activations: Option<QuantSpec>) -> Self {
        Self {
            version: CONFIG_VERSION,
            name: None,
            weights,
            activations,
            activation_mode: ActivationMode::Static,
            method: PtqMethod::Plain,
            bias_correction: None,
            overrides: Vec::new(),
        }
    }

    /// Whether linear layers get their bias corrected: the `bias_correction` field, or by default the
    /// method's choice: on for [`PtqMethod::SimilaritySearch`] (Liu et al. correct the bias), off for
    /// [`PtqMethod::Plain`] and [`PtqMethod::Ptq4vit`] (whose papers do not).
    pub fn bias_correction(&self) -> bool {
        self.bias_correction
            .unwrap_or(matches!(self.method, PtqMethod::SimilaritySearch { .. }))
    }

    /// A named preset (one of [`PRESETS`]):
    ///
    /// | preset | weights | activations |
    /// |---|---|---|
    /// | `w8a8` | 8-bit symmetric per-channel, min-max | 8-bit asymmetric per-tensor, min-max |
    /// | `w6a6` | 6-bit symmetric per-channel, MSE | 6-bit asymmetric per-tensor, MSE |
    /// | `w4a8` | 4-bit symmetric per-channel, MSE | 8-bit asymmetric per-tensor, min-max |
    /// | `w4a4` | 4-bit symmetric per-channel, MSE | 4-bit asymmetric per-tensor, MSE |
    /// | `w8` | 8-bit symmetric per-channel, min-max | float |
    /// | `w4` | 4-bit symmetric per-channel, MSE | float |
    /// | `nf4` | NF4, blocks of 64, double quantization | float |
    /// | `int8-dynamic` | 8-bit symmetric per-channel, min-max | 8-bit asymmetric per-tensor, per batch |
    pub fn preset(name: &str) -> Result<Self> {
        use CalibrationMethod::{MinMax, Mse};
        let pc = Granularity::PerChannel { axis: 0 };
        let pt = Granularity::PerTensor;
        let w = |bits, cal| spec(bits, Scheme::Symmetric, pc, cal).map(Some);
        let a = |bits, cal| spec(bits, Scheme::Asymmetric, pt, cal).map(Some);
        let mut cfg = match name {
            "w8a8" => Self::new(w(8, MinMax)?, a(8, MinMax)?),
            "w6a6" => Self::new(w(6, Mse)?, a(6, Mse)?),
            "w4a8" => Self::new(w(4, Mse)?, a(8, MinMax)?),
            "w4a4" => Self::new(w(4, Mse)?, a(4, Mse)?),
            "w8" => Self::new(w(8, MinMax)?, None),
            "w4" => Self::new(w(4, Mse)?, None),
            "nf4" => Self::new(Some(QuantSpec::nf4(true)), None),
            "int8-dynamic" => {
                let mut c = Self::new(w(8, MinMax)?, a(8, MinMax)?);
                c.activation_mode = ActivationMode::Dynamic;
                c
            }
            other => {
                return Err(Error::Config(format!(
                    "unknown preset `{other}`; presets are {}",
                    PRESETS.join(", ")
                )));
            }
        };
        cfg.name = Some(name.to_string());
        Ok(cfg)
    }

    /// Parses TOML and validates.
    pub fn from_toml_str(s: &str) -> Result<Self> {
        let cfg: Self = toml::from_str(s).map_err(|e| Error::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses JSON and validates.
    pub fn from_json_str(s: &str) -> Result<Self> {
        let cfg: Self = serde_json::from_str(s).map_err(|e| Error::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Serializes to TOML.
    pub fn to_toml_string(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| Error::Config(e.to_string()))
    }

    /// Serializes to JSON.
    pub fn to_json_string(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| Error::Config(e.to_string()))
    }

    /// Reads a `.toml` or `.json` file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => Self::from_json_str(&text),
            _ => Self::from_toml_str(&text),
        }
    }

    /// A preset name, or else a path to a TOML / JSON file.
    pub fn from_preset_or_path(s: &str) -> Result<Self> {
        if PRESETS.contains(&s) {
            Self::preset(s)
        } else {
            Self::load(s)
        }
    }

    /// Checks the version and every spec.
    pub fn validate(&self) -> Result<()> {
        if self.version != CONFIG_VERSION {
            return Err(Error::Config(format!(
                "config version {} is not supported (this vitq reads version {CONFIG_VERSION})",
                self.version
            )));
        }
        let specs = self.weights.iter().chain(&self.activations).chain(
            self.overrides
                .iter()
                .flat_map(|o| o.weights.iter().chain(&o.activations)),
        );
        for s in specs {
            s.validate()?;
        }
        if let PtqMethod::SimilaritySearch { gamma, theta, .. } = self.method
            && !(gamma.is_finite() && gamma >= 0.0 && theta.is_finite() && theta >= 0.0)
        {
            return Err(Error::Config(format!(
                "similarity search: gamma = {gamma} and theta = {theta} must be finite and ≥ 0"
            )));
        }
        if let PtqMethod::Ptq4vit {
            range: [lo, hi], ..
        } = self.method
            && !(lo.is_finite() && hi.is_finite() && lo > 0.0 && lo < hi)
        {
            return Err(Error::Config(format!(
                "ptq4vit: range = [{lo}, {hi}] must be finite with 0 < low < high"
            )));
        }
        if let Some(a) = self
            .activations
            .iter()
            .chain(self.overrides.iter().flat_map(|o| &o.activations))
            .find(|a| !a.is_uniform())
        {
            return Err(Error::Config(format!(
                "activations cannot use {:?}",
                a.scheme
            )));
        }
        Ok(())
    }

    /// The specs for the layer at `path`, after overrides.
    pub fn resolve(&self, path: &str) -> LayerQuant {
        let mut out = LayerQuant {
            weights: self.weights,
            activations: self.activations,
        };
        for o in self
            .overrides
            .iter()
            .filter(|o| glob_match(&o.pattern, path))
        {
            if o.float {
                out = LayerQuant {
                    weights: None,
                    activations: None,
                };
            }
            if o.weights.is_some() {
                out.weights = o.weights;
            }
            if o.activations.is_some() {
                out.activations = o.activations;
            }
        }
        out
    }

    /// Whether [`crate::ptq::quantize`] needs calibration images: some activations are quantized with
    /// static (calibrated) scales.
    pub fn needs_calibration(&self) -> bool {
        self.activation_mode == ActivationMode::Static
            && (self.activations.is_some()
                || self.overrides.iter().any(|o| o.activations.is_some()))
    }

    /// Checks that every override pattern matches at least one of `layers`; the error for the first
    /// that does not lists the closest layer names.
    pub fn check_layers<S: AsRef<str>>(&self, layers: &[S]) -> Result<()> {
        for o in &self.overrides {
            if !layers.iter().any(|l| glob_match(&o.pattern, l.as_ref())) {
                let mut by_distance: Vec<(usize, &str)> = layers
                    .iter()
                    .map(|l| (edit_distance(&o.pattern, l.as_ref()), l.as_ref()))
                    .collect();
                by_distance.sort();
                return Err(Error::UnknownLayer {
                    pattern: o.pattern.clone(),
                    closest: by_distance
                        .iter()
                        .take(3)
                        .map(|(_, l)| l.to_string())
                        .collect(),
                });
            }
        }
        Ok(())
    }
}

/// Glob match: `*` any run of characters (including none and dots), `?` exactly one character.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Levenshtein distance, for "did you mean" lists.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("blocks.*.attn.qkv", "blocks.11.attn.qkv"));
        assert!(glob_match("*", "anything.at.all"));
        assert!(glob_match("layer?.0.conv1", "layer2.0.conv1"));
        assert!(!glob_match("blocks.*.attn.qkv", "blocks.1.attn.proj"));
        assert!(!glob_match("head", "head.fc"));
    }

    #[test]
    fn every_preset_round_trips_through_toml_and_json() {
        for name in PRESETS {
            let cfg = QuantConfig::preset(name).unwrap();
            assert_eq!(
                QuantConfig::from_toml_str(&cfg.to_toml_string().unwrap()).unwrap(),
                cfg
            );
            assert_eq!(
                QuantConfig::from_json_str(&cfg.to_json_string().unwrap()).unwrap(),
                cfg
            );
        }
        assert!(matches!(QuantConfig::preset("w3a3"), Err(Error::Config(_))));
    }

    #[test]
    fn bad_configs_are_errors() {
        let bad_bits = "version = 1\nweights = { bits = 12 }";
        let err = QuantConfig::from_toml_str(bad_bits)
            .unwrap_err()
            .to_string();
        assert!(err.contains("12"), "{err}");
        assert!(QuantConfig::from_toml_str("version = 2").is_err());
        assert!(QuantConfig::from_toml_str("version = 1\nwieghts = { bits = 4 }").is_err());
        let nf4_act = r#"version = 1
activations = { bits = 4, scheme = { kind = "nf4", double_quant = true }, granularity = { kind = "per_block", size = 64 } }"#;
        assert!(QuantConfig::from_toml_str(nf4_act).is_err());
    }

    #[test]
    fn bias_correction_defaults_to_the_method_and_can_be_set() {
        let base = "version = 1\nweights = { bits = 4 }\nactivations = { bits = 8 }\n";
        let parse = |extra: &str| QuantConfig::from_toml_str(&format!("{base}{extra}")).unwrap();
        assert!(!parse("").bias_correction());
        assert!(parse("method = { kind = \"similarity_search\" }").bias_correction());
        assert!(!parse("method = { kind = \"ptq4vit\" }").bias_correction());
        let on = parse("bias_correction = true");
        assert!(on.bias_correction());
        assert_eq!(
            QuantConfig::from_toml_str(&on.to_toml_string().unwrap()).unwrap(),
            on
        );
        let off = parse("bias_correction = false\nmethod = { kind = \"similarity_search\" }");
        assert!(!off.bias_correction());
    }

    #[test]
    fn ptq4vit_range_defaults_to_the_papers_and_is_checked() {
        let base = "version = 1\nweights = { bits = 4 }\nactivations = { bits = 8 }\n";
        let parse = |m: &str| QuantConfig::from_toml_str(&format!("{base}method = {m}\n"));
        let range = |c: QuantConfig| match c.method {
            PtqMethod::Ptq4vit { range, .. } => range,
            m => panic!("{m:?}"),
        };
        assert_eq!(range(parse("{ kind = \"ptq4vit\" }").unwrap()), [0.01, 1.2]);
        let narrow = parse("{ kind = \"ptq4vit\", range = [0.5, 1.2] }").unwrap();
        assert_eq!(
            QuantConfig::from_toml_str(&narrow.to_toml_string().unwrap()).unwrap(),
            narrow
        );
        assert_eq!(range(narrow), [0.5, 1.2]);
        for bad in ["[1.2, 0.5]", "[0.0, 1.2]", "[-0.5, 1.0]", "[0.5, inf]"] {
            let err = parse(&format!("{{ kind = \"ptq4vit\", range = {bad} }}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("range"), "{bad}: {err}");
        }
    }

    #[test]
    fn unknown_layers_list_the_closest_names() {
        let mut cfg = QuantConfig::preset("w8a8").unwrap();
        cfg.overrides.push(LayerOverride {
            pattern: "layer1.0.cnv1".into(),
            float: true,
            weights: None,
            activations: None,
        });
        let layers = ["conv1", "layer1.0.conv1", "layer1.0.conv2", "linear"];
        match cfg.check_layers(&layers) {
            Err(Error::UnknownLayer { closest, .. }) => assert_eq!(closest[0], "layer1.0.conv1"),
            other => panic!("expected UnknownLayer, got {other:?}"),
        }
        cfg.overrides[0].pattern = "layer1.*".into();
        cfg.check_layers(&layers).unwrap();
    }
}
