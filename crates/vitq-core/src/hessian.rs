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
//! that gradient is zero up to rounding (upstream issue hahnyuan/PTQ4ViT#23). What the paper's metric
//! wants is the Hessian of that loss, and at the float point it is the Gauss–Newton matrix `Jᵀ F J` with
//! `F = diag(p) − p pᵀ` (`p` the float softmax, `J` the Jacobian of the logits with respect to the layer's
//! output). [`fisher_probe_loss`] estimates its diagonal with one random probe per image: it
//! back-propagates `⟨logits, v⟩` with `v = √p ⊙ z − p·⟨√p, z⟩`, `z ~ N(0, I)` held constant, whose
//! covariance is `F`, so `E[(Jᵀ v)²] = diag(Jᵀ F J)` exactly.
//!
//! The earlier choice, the cross-entropy against the float model's own top-1 (the *empirical* Fisher), put
//! almost all the weight on that one class's logit whenever the softmax is flat (`∂L/∂logit ≈ −1` there,
//! `≈ 1/classes` elsewhere): the search then kept the top-1 logit and let the runner-ups drift, and on
//! random-init `deit_tiny_patch16_224` at W4A8 PTQ4ViT lost top-1 agreement against min-max (501
//! against 567 of 968 upsampled CIFAR-10 images). The probe weighs every class by its probability, as
//! `F` does; on a peaked softmax (a trained model) both concentrate on the confident classes.
use std::any::Any;

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
    /// `∂L/∂y`, the gradient of the loss with respect to the layer's output (its shape); from
    /// [`capture_gradients`], its root mean square over the probes (magnitudes only).
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

/// The seed of the first probe of [`capture_gradients`].
pub const PROBE_SEED: u64 = 0x5eed_f15e;

/// `⟨logits, v⟩ / batch` with, for each row, `v = √p ⊙ z − p·⟨√p, z⟩` held constant (`p` the softmax of
/// the row, `z` standard normal): its gradient `Jᵀ v` has covariance `Jᵀ F J`, the Gauss–Newton matrix of
/// the KL divergence to the float model (see the module docs). `z` comes from a generator seeded with
/// `seed`, so quantizing is reproducible.
pub fn fisher_probe_loss<B: Backend>(logits: Tensor<B, 2>, seed: u64) -> Result<Tensor<B, 1>> {
    let [batch, classes] = logits.dims();
    let (values, _) = tensor_to_vec(&logits)?;
    let mut rng = crate::synth::Rng::new(seed);
    let mut v = Vec::with_capacity(values.len());
    for row in values.chunks_exact(classes.max(1)) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f64> = row.iter().map(|&x| f64::from(x - max).exp()).collect();
        let total: f64 = e.iter().sum();
        let p: Vec<f64> = e.iter().map(|e| e / total).collect();
        let u: Vec<f64> = p
            .iter()
            .map(|p| p.sqrt() * f64::from(rng.gaussian()))
            .collect();
        // ⟨√p, z⟩ = Σ u.
        let proj: f64 = u.iter().sum();
        v.extend(p.iter().zip(&u).map(|(p, u)| (u - p * proj) as f32));
    }
    let v = Tensor::<B, 2>::from_data(TensorData::new(v, [batch, classes]), &logits.device());
    Ok((logits * v).sum().div_scalar(batch.max(1) as f32))
}

/// Captures every layer of `model` (on an autodiff backend, in float mode) over `probes` passes: each
/// puts the layers in capture mode, runs `forward` on `batch` (logits `[batch, classes]`) and
/// back-propagates [`fisher_probe_loss`] with probe `p` (seed [`PROBE_SEED`]` + p`). Returns each
/// layer's [`Capture`] in the order of [`Quantizable::layer_states`] (`None` for layers that did not run
/// or are not captured, such as convolutions): the inputs of the first pass and, as `output_grad`, the
/// root mean square of `∂L/∂y` over the probes, whose square is the estimate of the Hessian's diagonal.
pub fn capture_gradients<B, M>(
    model: &M,
    batch: Tensor<B, 4>,
    probes: usize,
    forward: impl Fn(&M, Tensor<B, 4>) -> Result<Tensor<B, 2>>,
) -> Result<Vec<Option<Capture>>>
where
    B: AutodiffBackend,
    M: Quantizable<B>,
{
    let probes = probes.max(1);
    let states = model.layer_states();
    let mut out: Vec<Option<Capture>> = vec![None; states.len()];
    for p in 0..probes {
        for (_, s) in &states {
            s.start_capture();
        }
        let result = forward(model, batch.clone())
            .and_then(|logits| fisher_probe_loss(logits, PROBE_SEED + p as u64))
            .map(|loss| loss.backward());
        let captures: Result<Vec<Option<Capture>>> = match &result {
            Ok(grads) => states
                .iter()
                .map(|(name, s)| s.finish_capture::<B>(name, grads))
                .collect(),
            Err(_) => Ok(Vec::new()),
        };
        // Whatever happened, no layer stays in capture mode.
        for (_, s) in &states {
            if let Ok(mut c) = s.capture.lock() {
                *c = CaptureSlot::default();
            }
        }
        result?;
        // Sum the squared gradients (kept in `output_grad` until the root is taken).
        for (acc, c) in out.iter_mut().zip(captures?) {
            match (acc.as_mut(), c) {
                (None, Some(mut c)) => {
                    c.output_grad.data.iter_mut().for_each(|g| *g *= *g);
                    *acc = Some(c);
                }
                (Some(a), Some(c)) => {
                    for (s, g) in a.output_grad.data.iter_mut().zip(&c.output_grad.data) {
                        *s += g * g;
                    }
                }
                _ => {}
            }
        }
    }
    for c in out.iter_mut().flatten() {
        c.output_grad
            .data
            .iter_mut()
            .for_each(|s| *s = (*s / probes as f32).sqrt());
    }
    Ok(out)
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
