//! A float copy of a [`Model`] on burn's autodiff backend, for the gradients PTQ4ViT's Hessian-guided
//! search needs ([`vitq_core::hessian`]).

use burn::backend::Autodiff;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn_store::ModuleSnapshot;
use vitq_core::hessian::{self, Capture};

use crate::error::{Error, Result};
use crate::resnet::ResNet;
use crate::vit::{AttentionImpl, ViT};
use crate::zoo::Model;

impl<B: Backend> Model<B> {
    /// The model's parameters on `Autodiff<B>` (on `device`), every layer in float mode. A ViT runs its
    /// attention through the `QMatMul` layers (so that they can be probed), whatever
    /// [`crate::vit::ViTConfig::attention`] says; the result is the same.
    pub fn to_autodiff(&self, device: &B::Device) -> Result<Model<Autodiff<B>>> {
        let (model, applied) = match self {
            Model::ViT { config, model } => {
                let mut config = config.clone();
                config.attention = AttentionImpl::Layers;
                let mut copy =
                    ViT::<Autodiff<B>>::skeleton(&config, &model.pos_embed_shape(), device);
                let applied = copy.apply(model.collect(None, None, false), None, None, false);
                (
                    Model::ViT {
                        config,
                        model: Box::new(copy),
                    },
                    applied,
                )
            }
            Model::ResNet { config, model } => {
                let mut copy = ResNet::<Autodiff<B>>::skeleton(config, device);
                let applied = copy.apply(model.collect(None, None, false), None, None, false);
                (
                    Model::ResNet {
                        config: config.clone(),
                        model: Box::new(copy),
                    },
                    applied,
                )
            }
        };
        if !applied.errors.is_empty() || !applied.missing.is_empty() || !applied.unused.is_empty() {
            return Err(Error::Core(vitq_core::Error::Unsupported(format!(
                "copying {} to the autodiff backend: missing {:?}, unused {:?}, errors {:?}",
                self.name(),
                applied.missing,
                applied.unused,
                applied.errors
            ))));
        }
        Ok(model)
    }

    /// [`vitq_core::ptq::Quantizable::capture_gradients`]: `probes` forward and backward passes of the
    /// float copy ([`Model::to_autodiff`]) over `batch`.
    pub(crate) fn capture(
        &self,
        batch: Tensor<B, 4>,
        probes: usize,
    ) -> vitq_core::Result<Vec<Option<Capture>>> {
        let copy = self.to_autodiff(&batch.device()).map_err(core_error)?;
        hessian::capture_gradients(&copy, Tensor::from_inner(batch), probes, |m, x| {
            m.forward(x).map_err(core_error)
        })
    }
}

fn core_error(e: Error) -> vitq_core::Error {
    match e {
        Error::Core(c) => c,
        other => vitq_core::Error::Unsupported(other.to_string()),
    }
}
