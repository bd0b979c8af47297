//! The inputs of every linear and matmul layer and the gradient of the task loss with respect to its
//! output, from one forward and backward pass of the float model: what PTQ4ViT's Hessian-guided metric
//! needs (Yuan et al., ECCV 2022, §4.2; see [`crate::ptq4vit`]).
//!
//! The model runs on burn's `Autodiff` backend. A layer in capture mode ([`LayerState::start_capture`])
//! copies its inputs to the host and adds a zero *leaf* tensor that requires gradients to its output,
//! `y + probe` (burn-autodiff cannot mark a non-leaf tensor), so after `loss.backward()` the probe's
//! gradient is `∂L/∂y`. [`capture_gradients`] does the whole pass.
//!
//! # The loss
//! PTQ4ViT's code differentiates `KL(softmax(f(x)) ‖ softmax(model(x)))` with the float logits `f(x)` as
//! target; while the layers are float (its default, non-sequential calibration) the model *is* `f`, and
//! that gradient is zero up to rounding (upstream issue hahnyuan/PTQ4ViT#23). vitq uses the task loss of
//! a classifier instead: the cross-entropy of the logits against the float model's own top-1 prediction
//! (calibration images have no labels), averaged over the batch. Its squared gradient is the diagonal
//! Fisher approximation of the Hessian that the paper's derivation rests on.

use std::any::Any;

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};

use crate::error::{Error, Result};
use crate::layers::LayerState;
use crate::ptq::Quantizable;
use crate::uniform::tensor_to_vec;

/// A tensor on the host: row-major values and shape.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// Values, row-major.
    pub data: Vec<f32>,
    /// Shape.
    pub shape: Vec<usize>,
}

/// What one layer recorded in one capture pass.
#[derive(Clone, Debug)]
pub struct Capture {
    /// The layer's inputs (one for a linear layer, two for a matmul).
    pub inputs: Vec<HostTensor>,
    /// `∂L/∂y`, the gradient of the loss with respect to the layer's output (its shape).
    pub output_grad: HostTensor,
}

/// The capture state of a layer (inside [`LayerState`]).
#[derive(Default)]
pub struct CaptureSlot {
    active: bool,
    inputs: Vec<HostTensor>,
    /// The probe leaf (a `Tensor<B, 1>` of the autodiff backend) and the output shape.
    probe: Option<(Box<dyn Any + Send>, Vec<usize>)>,
    error: Option<Error>,
}

impl std::fmt::Debug for CaptureSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureSlot")
            .field("active", &self.active)
            .field("inputs", &self.inputs.len())
            .field("probe", &self.probe.as_ref().map(|(_, s)| s))
            .finish()
    }
}

impl LayerState {
    /// Starts capturing: the next forward pass records the inputs and probes the output. Meant for a
    /// float model (a quantized `QMatMul` runs its float product while capturing).
    pub fn start_capture(&self) {
        if let Ok(mut c) = self.capture.lock() {
            *c = CaptureSlot {
                active: true,
                ..Default::default()
            };
        }
    }

    /// Whether the layer is capturing; if so, copies `inputs` to the host (called by the layers'
    /// `forward`, which then calls [`LayerState::probe`] on the output).
    pub(crate) fn capture_inputs<B: Backend, const D: usize>(
        &self,
        name: &str,
        inputs: &[&Tensor<B, D>],
    ) -> bool {
        let Ok(mut c) = self.capture.lock() else {
            return false;
        };
        if !c.active {
            return false;
        }
        c.inputs.clear();
        for x in inputs {
            match tensor_to_vec(*x) {
                Ok((data, shape)) => c.inputs.push(HostTensor { data, shape }),
                Err(e) => {
                    c.error.get_or_insert(Error::Context {
                        context: format!("capturing the input of layer `{name}`"),
                        source: Box::new(e),
                    });
                }
            }
        }
        true
    }

    /// `y + probe`, with `probe` a zero leaf that requires gradients (kept for
    /// [`LayerState::finish_capture`]).
    pub(crate) fn probe<B: Backend, const D: usize>(&self, y: Tensor<B, D>) -> Tensor<B, D> {
        let dims = y.dims();
        let leaf =
            Tensor::<B, 1>::zeros([dims.iter().product::<usize>()], &y.device()).require_grad();
        if let Ok(mut c) = self.capture.lock() {
            c.probe = Some((Box::new(leaf.clone()), dims.to_vec()));
        }
        y + leaf.reshape(dims)
    }

    /// Ends capturing and returns what was recorded: `None` if the layer did not run (or was not
    /// capturing). `grads` are the gradients of the backward pass.
    pub fn finish_capture<B: AutodiffBackend>(
        &self,
        name: &str,
        grads: &B::Gradients,
    ) -> Result<Option<Capture>> {
        let slot = match self.capture.lock() {
            Ok(mut c) => std::mem::take(&mut *c),
            Err(_) => return Err(Error::Unsupported("capture lock poisoned".into())),
        };
        if let Some(e) = slot.error {
            return Err(e);
        }
        let Some((probe, shape)) = slot.probe else {
            return Ok(None);
        };
        let probe = probe.downcast::<Tensor<B, 1>>().map_err(|_| {
            Error::Unsupported(format!(
                "layer `{name}` was probed on another backend than the gradients'"
            ))
        })?;
        let numel = shape.iter().product::<usize>();
        // A layer the loss does not depend on has no gradient: zeros.
        let data = match probe.grad(grads) {
            Some(g) => tensor_to_vec(&g)?.0,
            None => vec![0.0; numel],
        };
        Ok(Some(Capture {
            inputs: slot.inputs,
            output_grad: HostTensor { data, shape },
        }))
    }
}

/// The mean cross-entropy of `logits` `[batch, classes]` against their own argmax (see the module
/// docs: the float model's top-1 prediction as the label).
pub fn pseudo_label_loss<B: Backend>(logits: Tensor<B, 2>) -> Tensor<B, 1> {
    let labels = logits.clone().argmax(1);
    log_softmax(logits, 1).gather(1, labels).mean().neg()
}

/// One capture pass: puts every layer of `model` (on an autodiff backend, in float mode) in capture
/// mode, runs `forward` on `batch` (logits `[batch, classes]`), back-propagates
/// [`pseudo_label_loss`] and returns each layer's [`Capture`] in the order of
/// [`Quantizable::layer_states`] (`None` for layers that did not run or are not captured, such as
/// convolutions).
pub fn capture_gradients<B, M>(
    model: &M,
    batch: Tensor<B, 4>,
    forward: impl FnOnce(&M, Tensor<B, 4>) -> Result<Tensor<B, 2>>,
) -> Result<Vec<Option<Capture>>>
where
    B: AutodiffBackend,
    M: Quantizable<B>,
{
    let states = model.layer_states();
    for (_, s) in &states {
        s.start_capture();
    }
    let result = forward(model, batch).map(|logits| pseudo_label_loss(logits).backward());
    let captures: Vec<Result<Option<Capture>>> = match &result {
        Ok(grads) => states
            .iter()
            .map(|(name, s)| s.finish_capture::<B>(name, grads))
            .collect(),
        Err(_) => Vec::new(),
    };
    // Whatever happened, no layer stays in capture mode.
    for (_, s) in &states {
        if let Ok(mut c) = s.capture.lock() {
            *c = CaptureSlot::default();
        }
    }
    result?;
    captures.into_iter().collect()
}

impl HostTensor {
    /// A burn tensor of rank `D` with these values (the shape must have `D` dimensions).
    pub fn to_tensor<B: Backend, const D: usize>(
        &self,
        device: &B::Device,
    ) -> Result<Tensor<B, D>> {
        let dims: [usize; D] =
            self.shape
                .clone()
                .try_into()
                .map_err(|s: Vec<usize>| Error::ShapeMismatch {
                    what: format!("rank of a captured tensor (expected {D})"),
                    expected: vec![D],
                    got: s,
                })?;
        Ok(Tensor::from_data(
            TensorData::new(self.data.clone(), dims),
            device,
        ))
    }
}
