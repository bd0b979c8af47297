//! One entry point for every model preset: load by name and weights file, run, and know the input it
//! expects.
//!
//! ```no_run
//! use burn::backend::Flex;
//! use vitq_models::zoo::Model;
//! let model = Model::<Flex>::load("resnet20", "resnet20.safetensors", &Default::default())?;
//! assert_eq!(model.num_classes(), 10);
//! # Ok::<(), vitq_models::Error>(())
//! ```

use std::path::Path;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::data::Normalize;
use crate::error::{Error, Result};
use crate::resnet::{RESNET_PRESETS, ResNet, ResNetConfig, ResNetKind};
use crate::weights::WeightMap;

/// A loaded model of any supported family.
#[derive(Debug)]
#[non_exhaustive]
pub enum Model<B: Backend> {
    /// A ResNet.
    ResNet {
        /// Its preset.
        config: ResNetConfig,
        /// The network.
        model: ResNet<B>,
    },
}

/// All model preset names.
pub fn presets() -> Vec<&'static str> {
    RESNET_PRESETS.to_vec()
}

impl<B: Backend> Model<B> {
    /// Loads preset `name` with the weights in `path` (safetensors), strictly.
    pub fn load(name: &str, path: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        let weights = WeightMap::load(path)?;
        if RESNET_PRESETS.contains(&name) {
            let mut config = ResNetConfig::preset(name)?;
            let fc = if matches!(config.kind, ResNetKind::Cifar { .. }) {
                "linear.weight"
            } else {
                "fc.weight"
            };
            if let Some(&[classes, _]) = weights.shape(fc) {
                config = config.with_classes(classes);
            }
            let model = ResNet::from_weights(&config, weights, device)?;
            return Ok(Model::ResNet { config, model });
        }
        Err(Error::UnknownModel {
            name: name.into(),
            known: presets().join(", "),
        })
    }

    /// Preset name.
    pub fn name(&self) -> &str {
        match self {
            Model::ResNet { config, .. } => &config.name,
        }
    }

    /// Output classes.
    pub fn num_classes(&self) -> usize {
        match self {
            Model::ResNet { config, .. } => config.num_classes,
        }
    }

    /// Input side length the model was trained at.
    pub fn input_size(&self) -> usize {
        match self {
            Model::ResNet { config, .. } => match config.kind {
                ResNetKind::Cifar { .. } => 32,
                ResNetKind::ImageNet { .. } => 224,
            },
        }
    }

    /// Input normalization the model was trained with.
    pub fn normalize(&self) -> Normalize {
        Normalize::IMAGENET
    }

    /// Logits `[batch, classes]` of a normalized batch `[batch, 3, h, w]`; checks the shape.
    pub fn forward(&self, x: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        let [_, c, h, w] = x.dims();
        if c != 3 || h == 0 || w == 0 {
            return Err(Error::Shape {
                what: format!("{} input", self.name()),
                expected: "[N, 3, H, W]".into(),
                got: x.dims().to_vec(),
            });
        }
        match self {
            Model::ResNet { model, .. } => Ok(model.forward(x)),
        }
    }
}
