//! Post-training quantization of a whole model: [`quantize`].
//!
//! A model exposes its quantizable layers through [`Quantizable`]; `quantize` then
//! 1. checks the config against the layer names (unknown patterns list the closest names),
//! 2. quantizes every weight the config asks for (each with its spec's calibration method, on the
//!    weight itself),
//! 3. for static activation quantization, puts the layers in calibrate mode and runs the calibration
//!    batches through the float model (observers at every layer input), then fixes each input's scale and
//!    zero point from its observer,
//! 4. puts every layer in quantized mode ([`crate::layers`] explains what runs then).
//!
//! Dynamic activation quantization (`activation_mode = "dynamic"`) needs no calibration batches.
//! A fault in any layer (NaN or Inf in an activation) stops calibration with an error naming the layer.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::config::ActivationMode;
use crate::error::{Error, Result, ResultExt};
use crate::layers::{ActQuant, LayerMut, LayerState};
use crate::{PtqMethod, QuantConfig, QuantSpec, QuantizedTensor, search};

/// A model whose quantizable layers can be walked.
pub trait Quantizable<B: Backend> {
    /// Every quantizable layer, in forward order.
    fn layers_mut(&mut self) -> Vec<LayerMut<'_, B>>;

    /// The name and state of every quantizable layer, in the order of [`Quantizable::layers_mut`].
    fn layer_states(&self) -> Vec<(&str, &LayerState)>;

    /// One forward pass over a calibration batch `[batch, 3, h, w]` (outputs are discarded).
    fn calibration_step(&self, batch: Tensor<B, 4>) -> Result<()>;

    /// The inputs and output gradients of every layer (in the order of
    /// [`Quantizable::layer_states`]) for one batch through the float model, over `probes` random
    /// probes, for PTQ4ViT's Hessian-guided search: usually the model copied to burn's autodiff backend
    /// and run through [`crate::hessian::capture_gradients`]. The default is [`Error::Unsupported`].
    fn capture_gradients(
        &self,
        batch: Tensor<B, 4>,
        probes: usize,
    ) -> Result<Vec<Option<crate::hessian::Capture>>> {
        let _ = (batch, probes);
        Err(Error::Unsupported(
            "this model cannot capture output gradients (PTQ4ViT)".into(),
        ))
    }
}

/// The names of a model's quantizable layers, in forward order.
pub fn layer_names<B: Backend, M: Quantizable<B>>(model: &mut M) -> Vec<String> {
    model
        .layers_mut()
        .iter()
        .map(|l| l.name().to_string())
        .collect()
}

/// The first fault recorded by any layer since the last call (see [`crate::layers::LayerState::take_fault`]).
pub fn take_fault<B: Backend, M: Quantizable<B>>(model: &M) -> Option<Error> {
    model
        .layer_states()
        .iter()
        .filter_map(|(_, l)| l.take_fault())
        .next()
}

/// Calibration rows kept per linear layer for bias correction (outside the similarity search, which keeps
/// its own `rows`).
pub const BIAS_CORRECTION_ROWS: usize = 1024;

struct Plan {
    weight: Option<QuantizedTensor>,
    inputs: Vec<Option<QuantSpec>>,
}

/// Quantizes `model` as `config` says, calibrating static activation quantizers on `batches` (all of
/// them: the caller chooses how many images to use). `progress` is called with the number of images seen
/// after each batch.
///
/// Errors: an invalid config, a pattern that matches no layer, an empty calibration set when the config
/// has static activation quantizers, non-finite weights or activations (naming the layer).
pub fn quantize<B, M, I>(
    mut model: M,
    config: &QuantConfig,
    batches: I,
    progress: &mut dyn FnMut(usize),
) -> Result<M>
where
    B: Backend,
    M: Quantizable<B>,
    I: IntoIterator<Item = Tensor<B, 4>>,
{
    if let PtqMethod::Ptq4vit { .. } = config.method {
        return crate::ptq4vit::quantize(model, config, batches, progress);
    }
    config.validate()?;
    config.check_layers(&layer_names(&mut model))?;
    let dynamic = config.activation_mode == ActivationMode::Dynamic;
    let bias_correction = config.bias_correction();

    let mut plans = Vec::new();
    let mut calibrate = false;
    for layer in model.layers_mut().iter_mut() {
        let name = layer.name().to_string();
        let lq = config.resolve(&name);
        let weight = match (lq.weights, layer.weight_torch()?) {
            (Some(spec), Some((data, shape))) => Some(
                QuantizedTensor::quantize(&data, &shape, &spec)
                    .context(|| format!("weight of layer `{name}`"))?,
            ),
            _ => None,
        };
        let inputs = vec![lq.activations; layer.num_inputs()];
        let sample_rows = match (config.method, &*layer, &weight) {
            (PtqMethod::SimilaritySearch { rows, .. }, LayerMut::Linear(_), Some(_)) => {
                rows as usize
            }
            (_, LayerMut::Linear(_), Some(_)) if bias_correction => BIAS_CORRECTION_ROWS,
            (
                PtqMethod::SimilaritySearch {
                    rows,
                    attention: true,
                    ..
                },
                LayerMut::MatMul(_),
                _,
            ) => rows as usize,
            _ => 0,
        };
        if !dynamic && lq.activations.is_some() {
            layer.state_mut().start_calibration(&inputs, sample_rows)?;
            calibrate = true;
        } else {
            layer.state_mut().reset();
        }
        plans.push(Plan { weight, inputs });
    }

    let mut device = None;
    if calibrate {
        let mut images = 0;
        for batch in batches {
            let n = batch.dims()[0];
            device.get_or_insert_with(|| batch.device());
            let step = model.calibration_step(batch);
            if let Some(fault) = take_fault(&model) {
                reset_all(&mut model);
                return Err(fault).context(|| format!("calibration after {images} images"));
            }
            if let Err(e) = step {
                reset_all(&mut model);
                return Err(e);
            }
            images += n;
            progress(images);
        }
        if images == 0 {
            reset_all(&mut model);
            return Err(Error::Empty {
                what: "calibration set (the config quantizes activations statically)".into(),
                shape: vec![0],
            });
        }
    }

    for (mut layer, plan) in model.layers_mut().into_iter().zip(plans) {
        let name = layer.name().to_string();
        let quantized_inputs = plan.inputs.iter().any(Option::is_some);
        if plan.weight.is_none() && !quantized_inputs {
            layer.state_mut().reset();
            continue;
        }
        let mut weight = plan.weight;
        let mut inputs: Vec<Option<ActQuant>> = if dynamic || !quantized_inputs {
            plan.inputs
                .iter()
                .map(|s| s.map(|spec| ActQuant { spec, params: None }))
                .collect()
        } else {
            layer
                .state()
                .finish_calibration(&plan.inputs)
                .context(|| format!("activations of layer `{name}`"))?
        };
        if let (Some(w), Some(Some(a)), LayerMut::Linear(linear)) =
            (&weight, inputs.first(), &mut layer)
        {
            // Rows are kept only for the search and bias correction.
            let sample = linear.quant.calibration_sample();
            let (data, shape) = if sample.is_empty() {
                (Vec::new(), Vec::new())
            } else {
                linear.weight_torch()?
            };
            let bias = linear.bias_vec()?;
            if let &[n, k] = shape.as_slice() {
                let device = linear.weight.device();
                if let PtqMethod::SimilaritySearch {
                    candidates, rounds, ..
                } = config.method
                {
                    let options = search::SearchOptions {
                        candidates,
                        rounds,
                        bias_correction,
                    };
                    match search::search_linear::<B>(
                        &data,
                        bias.as_deref(),
                        [n, k],
                        &sample,
                        w,
                        a,
                        options,
                        &device,
                    ) {
                        Ok(found) => {
                            weight = Some(found.weight);
                            inputs[0] = Some(found.input);
                            if let Some(b) = found.bias {
                                linear.set_bias(&b)?;
                            }
                        }
                        // Layers the search cannot handle keep their calibrated scales.
                        Err(Error::Unsupported(_)) => {}
                        Err(e) => {
                            return Err(e).context(|| format!("scale search of layer `{name}`"));
                        }
                    }
                } else if let (true, Some(b)) = (bias_correction, &bias) {
                    let corrected = search::correct_bias::<B>(
                        &sample,
                        [&data, &w.dequantize()?],
                        b,
                        [n, k],
                        a,
                        &device,
                    )
                    .context(|| format!("bias correction of layer `{name}`"))?;
                    linear.set_bias(&corrected)?;
                }
            }
        }
        if let LayerMut::MatMul(mm) = &layer {
            crate::ranking::search_layer::<B>(mm, config.method, &mut inputs, device.as_ref())
                .context(|| format!("scale search of layer `{name}`"))?;
        }
        layer
            .set_quantized(weight, inputs)
            .context(|| format!("layer `{name}`"))?;
    }
    Ok(model)
}

fn reset_all<B: Backend, M: Quantizable<B>>(model: &mut M) {
    for mut l in model.layers_mut() {
        l.state_mut().reset();
    }
}
