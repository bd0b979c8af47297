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

use crate::data::{Normalize, Preprocess};
use crate::error::{Error, Result};
use crate::resnet::{RESNET_PRESETS, ResNet, ResNetConfig, ResNetKind};
use crate::vit::{VIT_PRESETS, ViT, ViTConfig};
use crate::weights::WeightMap;

/// A loaded model of any supported family (cloning shares the tensors' storage).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Model<B: Backend> {
    /// A ResNet.
    ResNet {
        /// Its preset.
        config: ResNetConfig,
        /// The network.
        model: Box<ResNet<B>>,
    },
    /// A ViT, DeiT or DINOv2.
    ViT {
        /// Its config.
        config: ViTConfig,
        /// The network.
        model: Box<ViT<B>>,
    },
}

/// What a forward pass returns.
#[derive(Debug)]
pub enum Output<B: Backend> {
    /// Class logits `[batch, classes]`.
    Logits(Tensor<B, 2>),
    /// A backbone's token features after the final norm, `[batch, tokens, dim]`.
    LastHiddenState(Tensor<B, 3>),
}

/// All model preset names.
pub fn presets() -> Vec<&'static str> {
    RESNET_PRESETS
        .iter()
        .chain(VIT_PRESETS.iter())
        .copied()
        .collect()
}

impl<B: Backend> Model<B> {
    /// Loads preset `name` with the weights in `path` (safetensors or PyTorch), strictly. The class
    /// count comes from the checkpoint (a ViT checkpoint without a head loads as a backbone).
    pub fn load(name: &str, path: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        let weights = WeightMap::load(path)?;
        Self::from_weights(name, weights, device)
    }

    /// Builds preset `name` from an already-read checkpoint (e.g. one embedded in a binary), strictly.
    pub fn from_checkpoint(
        name: &str,
        ckpt: vitq_core::checkpoint::Checkpoint,
        device: &B::Device,
    ) -> Result<Self> {
        Self::from_weights(name, WeightMap::from_checkpoint(ckpt), device)
    }

    /// Loads a checkpoint whose architecture is inferred from its tensor names and shapes: a CIFAR ResNet
    /// (`linear` head; depth from the number of blocks), an ImageNet ResNet (`fc` head, `layer4`) or a
    /// ViT (see [`ViTConfig::infer`]).
    pub fn load_inferred(path: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        let weights = WeightMap::load(path)?;
        let has = |k: &str| weights.shape(k).is_some();
        let blocks = |stage: usize| {
            (0..)
                .take_while(|j| has(&format!("layer{stage}.{j}.conv1.weight")))
                .count()
        };
        let name = if has("linear.weight") && has("layer1.0.conv1.weight") {
            format!("resnet{}", 6 * blocks(1) + 2)
        } else if has("fc.weight") && has("layer4.0.conv1.weight") {
            let bottleneck = has("layer1.0.conv3.weight");
            match (bottleneck, [1, 2, 3, 4].map(blocks)) {
                (false, [2, 2, 2, 2]) => "resnet18".into(),
                (false, [3, 4, 6, 3]) => "resnet34".into(),
                (true, [3, 4, 6, 3]) => "resnet50".into(),
                (_, layers) => {
                    return Err(Error::UnknownModel {
                        name: format!("ResNet with blocks {layers:?}"),
                        known: presets().join(", "),
                    });
                }
            }
        } else {
            let config = ViTConfig::infer(&weights)?;
            let model = ViT::from_weights(&config, weights, device)?;
            return Ok(Model::ViT {
                config,
                model: Box::new(model),
            });
        };
        Self::from_weights(&name, weights, device)
    }

    fn from_weights(name: &str, weights: WeightMap, device: &B::Device) -> Result<Self> {
        if VIT_PRESETS.contains(&name) {
            let classes = ViTConfig::infer(&weights)?.num_classes;
            let config = ViTConfig::preset(name)?.with_classes(classes);
            let model = ViT::from_weights(&config, weights, device)?;
            return Ok(Model::ViT {
                config,
                model: Box::new(model),
            });
        }
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
            return Ok(Model::ResNet {
                config,
                model: Box::new(model),
            });
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
            Model::ViT { config, .. } => &config.name,
        }
    }

    /// Output classes.
    pub fn num_classes(&self) -> usize {
        match self {
            Model::ResNet { config, .. } => config.num_classes,
            Model::ViT { config, .. } => config.num_classes,
        }
    }

    /// Input side length the model was trained at.
    pub fn input_size(&self) -> usize {
        match self {
            Model::ResNet { config, .. } => match config.kind {
                ResNetKind::Cifar { .. } => 32,
                ResNetKind::ImageNet { .. } => 224,
            },
            Model::ViT { config, .. } => config.img_size,
        }
    }

    /// Input normalization the model was trained with (from [`Preprocess::for_model`]; the ImageNet
    /// statistics for presets it does not list, such as the CIFAR ViTs).
    pub fn normalize(&self) -> Normalize {
        self.preprocess().normalize
    }

    /// timm's evaluation preprocessing for this model ([`Preprocess::for_model`]), or bicubic resize
    /// to `input_size / 0.875` and center crop with ImageNet statistics for presets it does not list.
    pub fn preprocess(&self) -> Preprocess {
        Preprocess::for_model(self.name()).unwrap_or_else(|_| {
            let mut p = Preprocess::imagenet(self.input_size());
            p.normalize = Normalize::IMAGENET;
            p
        })
    }

    /// Runs the model: logits, or the token features of a backbone without a head. Checks the shape.
    pub fn predict(&self, x: Tensor<B, 4>) -> Result<Output<B>> {
        match self {
            Model::ViT { config, model } if config.num_classes == 0 => {
                model.check_input(&x.dims())?;
                let y = model.forward_features(x);
                match vitq_core::ptq::take_fault(self) {
                    Some(fault) => Err(fault.into()),
                    None => Ok(Output::LastHiddenState(y)),
                }
            }
            _ => self.forward(x).map(Output::Logits),
        }
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
        let y = match self {
            Model::ResNet { model, .. } => model.forward(x),
            Model::ViT { model, .. } => model.try_forward(x)?,
        };
        match vitq_core::ptq::take_fault(self) {
            Some(fault) => Err(fault.into()),
            None => Ok(y),
        }
    }
}
