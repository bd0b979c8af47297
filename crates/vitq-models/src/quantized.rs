//! Quantizing a [`Model`] and shipping it as one file.
//!
//! [`Model::quantize`] runs [`vitq_core::ptq::quantize`] (BatchNorm is already folded into the convs of a
//! ResNet when it is loaded). [`Model::save_quantized`] writes one safetensors file
//! ([`vitq_core::io::QuantFile`]):
//!
//! | entry | what |
//! |---|---|
//! | `{layer}.weight` | each quantized weight: packed codes and their scales / zero points or NF4 constants |
//! | `float.{path}` | every other parameter (biases, norms, embeddings, float layers), by burn module path |
//! | metadata `config` | the [`QuantConfig`] |
//! | metadata `user.model` | the architecture (family and config, JSON) |
//! | metadata `user.layers` | every quantizable layer: name, its activation quantizers and twin-uniform quantizers (JSON) |
//!
//! [`Model::load_quantized`] rebuilds the architecture and checks that the file is complete and made for
//! it: every layer name, every parameter path and shape must match, or the load fails with
//! [`Error::Keys`].
//!
//! ```no_run
//! use burn::backend::Flex;
//! use vitq_core::QuantConfig;
//! use vitq_models::zoo::Model;
//! let device = Default::default();
//! let model = Model::<Flex>::load("resnet20", "resnet20.safetensors", &device)?;
//! let calib: Vec<burn::tensor::Tensor<Flex, 4>> = Vec::new(); // normalized [N, 3, 32, 32] batches
//! let config = QuantConfig::preset("int8-dynamic")?; // dynamic: no calibration batches needed
//! let q = model.quantize(&config, calib, &mut |_| {})?;
//! q.save_quantized("resnet20-int8.safetensors", &config)?;
//! let (back, _config) = Model::<Flex>::load_quantized("resnet20-int8.safetensors", &device)?;
//! # Ok::<(), vitq_models::Error>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use burn::module::ParamId;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use burn_store::{ModuleSnapshot, TensorSnapshot};
use serde::{Deserialize, Serialize};
use vitq_core::io::{QuantFile, StoredTensor};
use vitq_core::layers::{ActQuant, LayerMut, LayerState};
use vitq_core::ptq::{self, Quantizable};
use vitq_core::twin::TwinQuant;
use vitq_core::{QuantConfig, QuantizedTensor};

use crate::error::{Error, Mismatch, Result};
use crate::resnet::{ResNet, ResNetConfig};
use crate::vit::{ViT, ViTConfig};
use crate::zoo::Model;

/// The architecture recorded in a quantized file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "snake_case")]
enum Architecture {
    ResNet {
        config: ResNetConfig,
    },
    Vit {
        config: ViTConfig,
        pos_embed: Vec<usize>,
    },
}

/// One quantizable layer as recorded in a quantized file.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct LayerRecord {
    name: String,
    /// One entry per input; `null` = float.
    inputs: Vec<Option<ActQuant>>,
    /// Twin-uniform quantizers replacing some of `inputs` (PTQ4ViT); absent when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    twins: Vec<Option<TwinQuant>>,
}

const FLOAT_PREFIX: &str = "float.";

impl<B: Backend> Quantizable<B> for Model<B> {
    fn layers_mut(&mut self) -> Vec<LayerMut<'_, B>> {
        match self {
            Model::ResNet { model, .. } => model.layers_mut(),
            Model::ViT { model, .. } => model.layers_mut(),
        }
    }

    fn layer_states(&self) -> Vec<(&str, &LayerState)> {
        match self {
            Model::ResNet { model, .. } => model.layer_states(),
            Model::ViT { model, .. } => model.layer_states(),
        }
    }

    fn calibration_step(&self, batch: Tensor<B, 4>) -> vitq_core::Result<()> {
        self.forward(batch).map(|_| ()).map_err(|e| match e {
            Error::Core(c) => c,
            other => vitq_core::Error::Unsupported(other.to_string()),
        })
    }

    fn capture_gradients(
        &self,
        batch: Tensor<B, 4>,
        probes: usize,
    ) -> vitq_core::Result<Vec<Option<vitq_core::hessian::Capture>>> {
        self.capture(batch, probes)
    }
}

impl<B: Backend> Model<B> {
    /// Quantizes the model as `config` says, calibrating on `batches` (normalized `[N, 3, H, W]`; all of
    /// them are used). See [`vitq_core::ptq::quantize`].
    pub fn quantize<I>(
        self,
        config: &QuantConfig,
        batches: I,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Self>
    where
        I: IntoIterator<Item = Tensor<B, 4>>,
    {
        Ok(ptq::quantize(self, config, batches, progress)?)
    }

    /// The names of the quantizable layers, in forward order (what config patterns match).
    pub fn layer_names(&self) -> Vec<String> {
        self.layer_states()
            .iter()
            .map(|(n, _)| n.to_string())
            .collect()
    }

    /// Bits of the stored weights and activations of each quantizable layer: `(name, weight bits,
    /// activation bits)`, `None` for float.
    pub fn layer_bits(&self) -> Vec<(String, Option<u32>, Option<u32>)> {
        self.layer_states()
            .into_iter()
            .map(|(name, s)| {
                let q = s.quantized();
                let w = q
                    .and_then(|q| q.weight.as_ref())
                    .map(|w| w.spec().bits.get());
                let a = q
                    .and_then(|q| q.inputs.iter().flatten().next())
                    .map(|a| a.spec.bits.get());
                (name.to_string(), w, a)
            })
            .collect()
    }

    fn architecture(&self) -> Architecture {
        match self {
            Model::ResNet { config, .. } => Architecture::ResNet {
                config: config.clone(),
            },
            Model::ViT { config, model } => Architecture::Vit {
                config: config.clone(),
                pos_embed: model.pos_embed_shape().to_vec(),
            },
        }
    }

    fn snapshots(&self) -> Vec<TensorSnapshot> {
        match self {
            Model::ResNet { model, .. } => model.collect(None, None, false),
            Model::ViT { model, .. } => model.collect(None, None, false),
        }
    }

    /// The parameter ids of the weights that are stored quantized.
    fn quantized_weight_ids(&mut self) -> BTreeSet<ParamId> {
        self.layers_mut()
            .iter()
            .filter_map(|l| {
                l.state().quantized()?.weight.as_ref()?;
                match l {
                    LayerMut::Linear(l) => Some(l.weight.id),
                    LayerMut::Conv(l) => Some(l.weight.id),
                    LayerMut::MatMul(_) => None,
                }
            })
            .collect()
    }

    /// The quantized file for this model (see the module docs).
    pub fn to_quant_file(&self, config: &QuantConfig) -> Result<QuantFile> {
        let mut file = QuantFile::new(Some(config.clone()));
        let mut records = Vec::new();
        for (name, state) in self.layer_states() {
            let q = state.quantized();
            if let Some(w) = q.and_then(|q| q.weight.clone()) {
                file.insert_quantized(format!("{name}.weight"), w);
            }
            records.push(LayerRecord {
                name: name.to_string(),
                inputs: q.map(|q| q.inputs.clone()).unwrap_or_default(),
                twins: q.map(|q| q.twins.clone()).unwrap_or_default(),
            });
        }
        let skip = self.clone().quantized_weight_ids();
        for snap in self.snapshots() {
            if snap.tensor_id.is_some_and(|id| skip.contains(&id)) {
                continue;
            }
            let path = snap.full_path();
            let data = snap.to_data().map_err(|e| Error::Data {
                path: path.clone().into(),
                reason: format!("reading parameter: {e:?}"),
            })?;
            let shape = data.shape.to_vec();
            let values: Vec<f32> = data.iter::<f32>().collect();
            file.insert_float(format!("{FLOAT_PREFIX}{path}"), shape, values)?;
        }
        file.metadata
            .insert("model".into(), to_json(&self.architecture())?);
        file.metadata.insert("layers".into(), to_json(&records)?);
        Ok(file)
    }

    /// Writes the quantized model to `path` (atomically: a temporary file, then a rename) and returns
    /// the file size in bytes.
    pub fn save_quantized(&self, path: impl AsRef<Path>, config: &QuantConfig) -> Result<u64> {
        let path = path.as_ref();
        self.to_quant_file(config)?.save(path)?;
        std::fs::metadata(path)
            .map(|m| m.len())
            .map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })
    }

    /// Reads a file written by [`Model::save_quantized`]: the model, in quantized mode, and its config.
    pub fn load_quantized(
        path: impl AsRef<Path>,
        device: &B::Device,
    ) -> Result<(Self, QuantConfig)> {
        let path = path.as_ref();
        let file = QuantFile::load(path)?;
        let bad = |reason: String| Error::Data {
            path: path.to_path_buf(),
            reason,
        };
        let meta = |key: &str| {
            file.metadata.get(key).ok_or_else(|| {
                bad(format!(
                    "not a vitq quantized model: metadata `user.{key}` is missing"
                ))
            })
        };
        let arch: Architecture = serde_json::from_str(meta("model")?)
            .map_err(|e| bad(format!("metadata `user.model`: {e}")))?;
        let records: Vec<LayerRecord> = serde_json::from_str(meta("layers")?)
            .map_err(|e| bad(format!("metadata `user.layers`: {e}")))?;
        let config = file
            .config
            .clone()
            .ok_or_else(|| bad("the file has no quantization config".into()))?;

        let mut model = match &arch {
            Architecture::ResNet { config } => Model::ResNet {
                config: config.clone(),
                model: Box::new(ResNet::skeleton(config, device)),
            },
            Architecture::Vit { config, pos_embed } => Model::ViT {
                config: config.clone(),
                model: Box::new(ViT::skeleton(config, pos_embed, device)),
            },
        };
        let model_name = model.name().to_string();
        let keys_error = |missing: Vec<String>, unexpected: Vec<String>, mismatched| Error::Keys {
            path: path.to_path_buf(),
            model: model_name.clone(),
            missing,
            unexpected,
            mismatched,
        };

        // The layers: same names in the same order.
        let names = model.layer_names();
        let recorded: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
        if names != recorded {
            let have: BTreeSet<&str> = recorded.iter().copied().collect();
            let want: BTreeSet<&str> = names.iter().map(String::as_str).collect();
            return Err(keys_error(
                want.difference(&have)
                    .map(|s| format!("layer {s}"))
                    .collect(),
                have.difference(&want)
                    .map(|s| format!("layer {s}"))
                    .collect(),
                Vec::new(),
            ));
        }

        // The quantized layers first: their weight parameters then hold the dequantized weights.
        let mut quantized: BTreeMap<String, QuantizedTensor> = BTreeMap::new();
        let mut floats = Vec::new();
        let mut unexpected = Vec::new();
        for (name, t) in file.tensors {
            match (name.strip_prefix(FLOAT_PREFIX), t) {
                (Some(p), StoredTensor::Float { shape, data }) => {
                    floats.push((p.to_string(), shape, data))
                }
                (None, StoredTensor::Quantized(q)) => {
                    quantized.insert(name, q);
                }
                (_, _) => unexpected.push(name),
            }
        }
        let mut mismatched: Vec<Mismatch> = Vec::new();
        for (mut layer, record) in model.layers_mut().into_iter().zip(&records) {
            let weight = quantized.remove(&format!("{}.weight", record.name));
            let n = layer.num_inputs();
            let inputs = match record.inputs.len() {
                0 => vec![None; n],
                len if len == n => record.inputs.clone(),
                len => {
                    return Err(bad(format!(
                        "layer `{}` has {len} activation quantizers, the model's has {n} inputs",
                        record.name
                    )));
                }
            };
            if weight.is_none() && inputs.iter().all(Option::is_none) {
                continue;
            }
            if let Err(e) = layer.set_quantized(weight, inputs) {
                mismatched.push(Mismatch {
                    name: format!("{}.weight ({e})", record.name),
                    expected: Vec::new(),
                    got: Vec::new(),
                });
                continue;
            }
            for (i, twin) in record.twins.iter().enumerate() {
                if twin.is_some() {
                    layer.state_mut().set_twin(i, *twin).map_err(|e| {
                        bad(format!("twin quantizer of layer `{}`: {e}", record.name))
                    })?;
                }
            }
        }
        unexpected.extend(quantized.into_keys());

        // Then every other parameter, by module path.
        let quantized_ids = model.quantized_weight_ids();
        let quantized_paths: BTreeSet<String> = model
            .snapshots()
            .into_iter()
            .filter(|s| s.tensor_id.is_some_and(|id| quantized_ids.contains(&id)))
            .map(|s| s.full_path())
            .collect();
        let snapshots = floats
            .into_iter()
            .map(|(p, shape, data)| {
                let parts: Vec<String> = p.split('.').map(str::to_string).collect();
                let containers = vec![String::new(); parts.len()];
                TensorSnapshot::from_data(
                    TensorData::new(data, shape),
                    parts,
                    containers,
                    ParamId::new(),
                )
            })
            .collect();
        let applied = match &mut model {
            Model::ResNet { model, .. } => model.apply(snapshots, None, None, false),
            Model::ViT { model, .. } => model.apply(snapshots, None, None, false),
        };
        unexpected.extend(
            applied
                .unused
                .into_iter()
                .map(|p| format!("{FLOAT_PREFIX}{p}")),
        );
        mismatched.extend(applied.errors.iter().map(|e| Mismatch {
            name: format!("{e:?}"),
            expected: Vec::new(),
            got: Vec::new(),
        }));
        let missing: Vec<String> = applied
            .missing
            .into_iter()
            .map(|(p, _)| p)
            .filter(|p| !quantized_paths.contains(p))
            .map(|p| format!("{FLOAT_PREFIX}{p}"))
            .collect();
        if !missing.is_empty() || !unexpected.is_empty() || !mismatched.is_empty() {
            return Err(keys_error(missing, unexpected, mismatched));
        }
        Ok((model, config))
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Core(vitq_core::Error::Config(e.to_string())))
}
