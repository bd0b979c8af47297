//! The quantizable layers that vitq's models are built from: [`QLinear`], [`QConv2d`] and
//! [`QMatMul`] (the attention matmuls).
//!
//! Models (in `vitq-models`) are made of these layers so that quantization transforms the very same
//! model rather than a copy per precision. Each layer has a module path (its `name`), set by the model,
//! which is what [`crate::QuantConfig`] patterns match, and a [`LayerState`] that selects its mode:
//!
//! | mode | what `forward` does |
//! |---|---|
//! | [`Mode::Float`] | the float layer |
//! | [`Mode::Calibrate`] | the float layer, and an [`Observer`] collects statistics of every input |
//! | [`Mode::Quantized`] | see below |
//!
//! In quantized mode the weight parameter holds the *dequantized* weights (so every path and backend can
//! run them) and the state keeps the [`QuantizedTensor`] that is saved. Then:
//! - **integer** ([`ExecPath::Integer`]): activations quantized per tensor (static scale, or per batch in
//!   dynamic mode) and weights symmetric per tensor or per output channel: `QLinear` and (one group)
//!   `QConv2d` run [`kernels::linear_i8`] on the host — i8 × i8 products accumulated in i32, then
//!   rescaled. This is exact integer arithmetic, not a float emulation.
//! - **simulated** ([`ExecPath::Simulated`]): quantized activations that the integer kernel cannot take
//!   (asymmetric or grouped weights, grouped convs, and the attention matmuls `QMatMul`) are
//!   fake-quantized (quantize → dequantize) and the float op runs on the dequantized operands. The
//!   result equals the integer computation up to float rounding.
//! - **weight-only** ([`ExecPath::WeightOnly`]): float activations and quantized weights (W8, W4, NF4).
//!   On the host backend (Flex) `QLinear` runs [`weight_only::linear`], which reads the weight codes and
//!   dequantizes them tile by tile inside the matmul; convolutions, and linears on other backends, run
//!   the float op on the dequantized weight parameter.
//! - **twin-uniform** inputs ([`Quantized::twins`], PTQ4ViT's post-softmax and post-GELU quantizers, see
//!   [`crate::twin`]) run the simulated path: the input is fake-quantized with its [`TwinQuant`] and the
//!   float op runs (no integer kernel takes two scales per tensor), so such a layer's path is
//!   [`ExecPath::Simulated`].
//!
//! Forward passes cannot return errors (they are burn modules); a failure inside a layer (NaN or Inf in
//! its input while calibrating or running in integers) is recorded in the layer's state and read with
//! [`LayerState::take_fault`] — `vitq-models`' `Model::forward` turns it into an error naming the layer.
//!
//! ```
//! use burn::backend::Flex;
//! use burn::tensor::Tensor;
//! use vitq_core::layers::QLinear;
//!
//! let device = Default::default();
//! // PyTorch layout: weight [out, in].
//! let w = Tensor::<Flex, 2>::from_floats([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]], &device);
//! let b = Tensor::<Flex, 1>::from_floats([0.5, 0.0], &device);
//! let fc = QLinear::from_torch("fc", w, Some(b));
//! let y = fc.forward(Tensor::<Flex, 2>::from_floats([[1.0, 2.0, 3.0]], &device));
//! assert_eq!(y.into_data().to_vec::<f32>().unwrap(), vec![7.5, -1.0]);
//! ```

use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::module::linear;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{ElementConversion, Tensor, TensorData};

use crate::error::{Error, Result, ResultExt};
use crate::host::is_host;
use crate::kernels::{self, ConvGeometry, IntWeight};
use crate::observer::{Observer, Range};
use crate::twin::TwinQuant;
use crate::uniform::{
    check_finite, dynamic_scale_and_zero_point, scale_and_zero_point, tensor_to_vec,
};
use crate::weight_only::{self, TiledWeight};
use crate::{QuantSpec, QuantizedTensor, Scheme};

/// How a layer's activations are quantized in quantized mode: the spec and, for static quantization,
/// the calibrated scale and zero point (`None`: computed from every batch, min-max — dynamic mode).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ActQuant {
    /// Per-tensor uniform spec.
    pub spec: QuantSpec,
    /// `(scale, zero_point)` when static.
    pub params: Option<(f32, i32)>,
}

impl ActQuant {
    /// Scale and zero point for this batch: the static ones, or min-max of `x`
    /// ([`dynamic_scale_and_zero_point`], as torch's dynamic quantization computes them).
    pub fn params_for(&self, x: &[f32]) -> (f32, i32) {
        self.params.unwrap_or_else(|| {
            let r = x.iter().fold(Range { min: 0.0, max: 0.0 }, |r, &v| Range {
                min: r.min.min(v),
                max: r.max.max(v),
            });
            dynamic_scale_and_zero_point(&self.spec, r)
        })
    }

    /// Quantize → dequantize on the tensor's device (the simulated path).
    pub fn fake_quant<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Result<Tensor<B, D>> {
        let (s, z) = match self.params {
            Some(p) => p,
            None => {
                let min = x.clone().min().into_scalar().elem::<f32>();
                let max = x.clone().max().into_scalar().elem::<f32>();
                dynamic_scale_and_zero_point(&self.spec, Range { min, max })
            }
        };
        let (qmin, qmax) = self.spec.qrange();
        let q = x.div_scalar(s);
        let q = match self.spec.rounding {
            crate::Rounding::NearestEven => q.round(),
            _ => q.clone().sign() * q.abs().add_scalar(0.5).floor(),
        };
        Ok(q.add_scalar(z)
            .clamp(qmin as f32, qmax as f32)
            .sub_scalar(z)
            .mul_scalar(s))
    }
}

/// Which arithmetic a quantized layer runs (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecPath {
    /// Not quantized.
    Float,
    /// i8 × i8 → i32 GEMM.
    Integer,
    /// Fake-quantized activations, float op on dequantized operands.
    Simulated,
    /// Float activations, dequantized weights.
    WeightOnly,
}

/// The host kernel a quantized layer runs (see [`LayerState::run`]).
enum HostKernel<'a> {
    /// Integer GEMM on quantized activations.
    Integer(&'a ActQuant, &'a IntWeight),
    /// Float activations, weight dequantized tile by tile.
    Tiled(&'a TiledWeight),
}

/// A layer in quantized mode.
#[derive(Clone, Debug)]
pub struct Quantized {
    /// The stored weight (PyTorch layout), `None` for float weights and for `QMatMul`.
    pub weight: Option<QuantizedTensor>,
    /// One entry per input (`QMatMul` has two); `None` keeps that input in float.
    pub inputs: Vec<Option<ActQuant>>,
    int_weight: Option<IntWeight>,
    tiled: Option<TiledWeight>,
    /// Twin-uniform quantizers that replace `inputs[i]` where `Some` (set with
    /// [`LayerState::set_twin`]); empty when there are none.
    pub twins: Vec<Option<TwinQuant>>,
}

impl Quantized {
    /// The weight kept in its codes for [`weight_only::linear`] (weight-only linears; `None` elsewhere).
    pub fn tiled_weight(&self) -> Option<&TiledWeight> {
        self.tiled.as_ref()
    }

    /// The arithmetic this layer runs.
    pub fn path(&self) -> ExecPath {
        if self.inputs.iter().all(Option::is_none) {
            if self.weight.is_some() {
                ExecPath::WeightOnly
            } else {
                ExecPath::Float
            }
        } else if self.int_weight.is_some() {
            ExecPath::Integer
        } else {
            ExecPath::Simulated
        }
    }

    /// The twin-uniform quantizer of input `i`, if any.
    pub fn twin(&self, i: usize) -> Option<&TwinQuant> {
        self.twins.get(i).and_then(Option::as_ref)
    }

    /// Fake-quantizes input `i` with its twin-uniform quantizer if it has one, else with `a`.
    fn fake_quant_input<B: Backend, const D: usize>(
        &self,
        i: usize,
        a: &ActQuant,
        x: Tensor<B, D>,
    ) -> Result<Tensor<B, D>> {
        match self.twin(i) {
            Some(t) => Ok(t.fake_quant(x)),
            None => a.fake_quant(x),
        }
    }
}

/// A layer's mode.
#[derive(Clone, Debug, Default)]
pub enum Mode {
    /// Float (the default).
    #[default]
    Float,
    /// Float, observing every input.
    Calibrate(Arc<Calibration>),
    /// Quantized.
    Quantized(Arc<Quantized>),
}

/// What a layer collects in calibrate mode: one observer per input and, if asked for, a sample of the
/// rows of its first input (`[rows, features]`, for searches that replay the layer).
#[derive(Debug)]
pub struct Calibration {
    observers: Vec<Mutex<Observer>>,
    samples: Mutex<Vec<f32>>,
    sample_rows: usize,
    pairs: Mutex<PairSample>,
}

/// Operand slices of a [`QMatMul`] kept in calibrate mode (one slice = one image and head): `a`
/// `[count, m, k]` and `b` `[count, k, n]`, row-major, for searches that replay the product.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PairSample {
    /// `[m, k, n]` of one slice.
    pub dims: [usize; 3],
    /// Slices kept.
    pub count: usize,
    /// First operands, `count · m · k` values.
    pub a: Vec<f32>,
    /// Second operands, `count · k · n` values.
    pub b: Vec<f32>,
}

/// Slices taken from one batch for [`PairSample`] (spread over the batch and heads).
const SAMPLE_PAIRS_PER_BATCH: usize = 4;

/// Rows taken from one batch for the sample of [`Calibration`] (spread over the batch).
const SAMPLE_ROWS_PER_BATCH: usize = 128;

/// The quantization state of one layer: its [`Mode`] and the first fault recorded during a forward pass.
#[derive(Clone, Debug, Default)]
pub struct LayerState {
    mode: Mode,
    fault: Arc<Mutex<Option<Error>>>,
    /// Inputs and an output-gradient probe recorded by [`crate::hessian`].
    pub(crate) capture: Arc<Mutex<crate::hessian::CaptureSlot>>,
}

impl LayerState {
    /// The current mode.
    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// The quantized state, if quantized.
    pub fn quantized(&self) -> Option<&Quantized> {
        match &self.mode {
            Mode::Quantized(q) => Some(q),
            _ => None,
        }
    }

    /// Takes the first error recorded since the last call (NaN/Inf inputs, shape problems).
    pub fn take_fault(&self) -> Option<Error> {
        self.fault.lock().ok().and_then(|mut f| f.take())
    }

    fn record(&self, name: &str, e: Error) {
        if let Ok(mut f) = self.fault.lock()
            && f.is_none()
        {
            *f = Some(Error::Context {
                context: format!("layer `{name}`"),
                source: Box::new(e),
            });
        }
    }

    fn observe<B: Backend, const D: usize>(&self, name: &str, input: usize, x: &Tensor<B, D>) {
        let Mode::Calibrate(cal) = &self.mode else {
            return;
        };
        let Some(o) = cal.observers.get(input) else {
            return;
        };
        let r = tensor_to_vec(x).and_then(|(data, shape)| {
            o.lock()
                .map_err(|_| Error::Unsupported("observer lock poisoned".into()))?
                .observe(&data, &shape)?;
            if input == 0 && cal.sample_rows > 0 {
                let k = shape.last().copied().unwrap_or(1).max(1);
                let rows = data.len() / k;
                let mut sample = cal
                    .samples
                    .lock()
                    .map_err(|_| Error::Unsupported("sample lock poisoned".into()))?;
                let step = rows.div_ceil(SAMPLE_ROWS_PER_BATCH).max(1);
                for row in data.chunks_exact(k).step_by(step) {
                    if sample.len() / k >= cal.sample_rows {
                        break;
                    }
                    sample.extend_from_slice(row);
                }
            }
            Ok(())
        });
        if let Err(e) = r {
            self.record(name, e);
        }
    }

    /// Starts calibrating: one observer per `Some(spec)` (a `None` input is not observed but keeps its
    /// slot), and a sample of up to `sample_rows` rows of the first input (0: none).
    pub fn start_calibration(
        &mut self,
        specs: &[Option<QuantSpec>],
        sample_rows: usize,
    ) -> Result<()> {
        let observers = specs
            .iter()
            .map(|s| {
                // Unquantized inputs get a cheap min-max observer whose result is never used.
                let spec = s.unwrap_or(QuantSpec::new(8, Scheme::Asymmetric, Default::default())?);
                Observer::new(spec).map(Mutex::new)
            })
            .collect::<Result<Vec<_>>>()?;
        self.mode = Mode::Calibrate(Arc::new(Calibration {
            observers,
            samples: Mutex::new(Vec::new()),
            sample_rows,
            pairs: Mutex::new(PairSample::default()),
        }));
        Ok(())
    }

    /// The rows of the first input sampled during calibration (row-major, `[rows, features]`).
    pub fn calibration_sample(&self) -> Vec<f32> {
        match &self.mode {
            Mode::Calibrate(cal) => cal.samples.lock().map(|s| s.clone()).unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// The operand slices sampled during calibration of a [`QMatMul`] (empty when not sampling).
    pub fn calibration_pairs(&self) -> PairSample {
        match &self.mode {
            Mode::Calibrate(cal) => cal.pairs.lock().map(|p| p.clone()).unwrap_or_default(),
            _ => PairSample::default(),
        }
    }

    /// Keeps a few `(a, b)` slices of a matmul's operands `[.., m, k]`, `[.., k, n]`, up to
    /// `max(8, ⌈sample_rows / m⌉)` slices in all (nothing when `sample_rows` is 0).
    fn sample_pair<B: Backend, const D: usize>(
        &self,
        name: &str,
        a: &Tensor<B, D>,
        b: &Tensor<B, D>,
    ) {
        let Mode::Calibrate(cal) = &self.mode else {
            return;
        };
        if cal.sample_rows == 0 || D < 2 {
            return;
        }
        let r = (|| -> Result<()> {
            let (da, sa) = tensor_to_vec(a)?;
            let (db, sb) = tensor_to_vec(b)?;
            let (m, k, n) = (sa[D - 2], sa[D - 1], sb[D - 1]);
            let slices = da.len() / (m * k).max(1);
            if sb[D - 2] != k || db.len() != slices * k * n || slices == 0 {
                return Err(Error::ShapeMismatch {
                    what: "matmul operands".into(),
                    expected: sa,
                    got: sb,
                });
            }
            let limit = cal.sample_rows.div_ceil(m.max(1)).max(8);
            let mut p = cal
                .pairs
                .lock()
                .map_err(|_| Error::Unsupported("pair sample lock poisoned".into()))?;
            if p.count > 0 && p.dims != [m, k, n] {
                return Ok(()); // another shape (another input size): keep the first one's
            }
            p.dims = [m, k, n];
            // Spread over the batch, shifted by one each time so that the slices are not all of
            // the same head when the head count divides the stride.
            let take = SAMPLE_PAIRS_PER_BATCH.min(slices);
            for j in 0..take {
                let i = (j * slices / take + j) % slices;
                if p.count >= limit {
                    break;
                }
                p.a.extend_from_slice(&da[i * m * k..][..m * k]);
                p.b.extend_from_slice(&db[i * k * n..][..k * n]);
                p.count += 1;
            }
            Ok(())
        })();
        if let Err(e) = r {
            self.record(name, e);
        }
    }

    /// The static activation quantizers from the observers of [`LayerState::start_calibration`], for
    /// the inputs whose `specs` entry is `Some`; [`Error::Empty`] if nothing was observed.
    pub fn finish_calibration(&self, specs: &[Option<QuantSpec>]) -> Result<Vec<Option<ActQuant>>> {
        let Mode::Calibrate(cal) = &self.mode else {
            return Err(Error::Unsupported(
                "finish_calibration on a layer that is not calibrating".into(),
            ));
        };
        specs
            .iter()
            .zip(cal.observers.iter())
            .map(|(spec, o)| {
                let Some(spec) = spec else { return Ok(None) };
                let o = o
                    .lock()
                    .map_err(|_| Error::Unsupported("observer lock poisoned".into()))?;
                let r = o.ranges()?;
                let (s, z) = scale_and_zero_point(spec, r[0]);
                Ok(Some(ActQuant {
                    spec: *spec,
                    params: Some((s, z)),
                }))
            })
            .collect()
    }

    /// One forward pass of a weighted layer with a single input in the current mode: `float` is the
    /// float op (on the dequantized weights in quantized mode), `host` the host kernels (integer GEMM,
    /// weight-only tiles). A failure of either quantized path is recorded as a fault and the float op
    /// runs instead.
    fn run<B: Backend, const D: usize>(
        &self,
        name: &str,
        x: Tensor<B, D>,
        float: impl Fn(Tensor<B, D>) -> Tensor<B, D>,
        host: impl FnOnce(&Tensor<B, D>, HostKernel<'_>) -> Result<Tensor<B, D>>,
    ) -> Tensor<B, D> {
        let quantized = match &self.mode {
            Mode::Float => return float(x),
            Mode::Calibrate(_) => {
                self.observe(name, 0, &x);
                return float(x);
            }
            Mode::Quantized(q) => match (&q.inputs[0], &q.int_weight, &q.tiled) {
                (None, _, Some(t)) if is_host::<B>() => host(&x, HostKernel::Tiled(t)),
                (None, _, _) => return float(x),
                (Some(a), Some(w), _) => host(&x, HostKernel::Integer(a, w)),
                (Some(a), None, _) => q.fake_quant_input(0, a, x.clone()).map(&float),
            },
        };
        quantized.unwrap_or_else(|e| {
            self.record(name, e);
            float(x)
        })
    }

    /// Gives input `input` of a quantized layer a twin-uniform quantizer (`None` removes it), which
    /// then replaces its [`ActQuant`] (kept for its spec); the layer runs the simulated path. Errors: the
    /// layer is not quantized, the input does not exist or is float, or `twin` is invalid.
    pub fn set_twin(&mut self, input: usize, twin: Option<TwinQuant>) -> Result<()> {
        let Mode::Quantized(q) = &mut self.mode else {
            return Err(Error::Unsupported(
                "a twin-uniform quantizer needs a layer in quantized mode".into(),
            ));
        };
        if !matches!(q.inputs.get(input), Some(Some(_))) {
            return Err(Error::ShapeMismatch {
                what: format!("quantized input {input} for a twin-uniform quantizer"),
                expected: vec![q.inputs.len()],
                got: vec![input],
            });
        }
        if let Some(t) = &twin {
            t.validate()?;
        }
        let q = Arc::make_mut(q);
        q.twins.resize(q.inputs.len(), None);
        q.twins[input] = twin;
        if q.twins.iter().any(Option::is_some) {
            q.int_weight = None;
        } else {
            q.twins.clear();
        }
        Ok(())
    }

    /// Back to float mode.
    pub fn reset(&mut self) {
        self.mode = Mode::Float;
    }
}

/// `w`ᵀ laid out row-major in its own buffer. A lazy `transpose()` view would be copied by burn's
/// `linear` on every call (Flex reshapes it to `[1, in, out]` through a contiguous copy: a third of
/// ViT-B's batch-1 forward time).
fn transposed<B: Backend>(w: Tensor<B, 2>) -> Tensor<B, 2> {
    let device = w.device();
    Tensor::from_data(w.transpose().into_data(), &device)
}

fn bias_vec<B: Backend>(bias: &Option<Param<Tensor<B, 1>>>) -> Result<Option<Vec<f32>>> {
    bias.as_ref()
        .map(|b| tensor_to_vec(&b.val()).map(|(v, _)| v))
        .transpose()
}

/// How a layer can run its integer path.
enum IntegerLayout {
    /// Not at all (the simulated path).
    None,
    /// A linear layer: codes `[out, in]`.
    Linear,
    /// A conv with `[in, kh, kw]` kernels: codes permuted for NHWC patches.
    ConvHwc([usize; 3]),
}

fn set_quantized(
    state: &mut LayerState,
    weight: Option<QuantizedTensor>,
    inputs: Vec<Option<ActQuant>>,
    layout: IntegerLayout,
) {
    let int_weight = match (&weight, inputs.first(), &layout) {
        (Some(w), Some(Some(_)), IntegerLayout::Linear) => IntWeight::from_quantized(w).ok(),
        (Some(w), Some(Some(_)), &IntegerLayout::ConvHwc([cin, kh, kw])) => {
            IntWeight::from_quantized(w)
                .and_then(|iw| iw.to_hwc(cin, kh, kw))
                .ok()
        }
        _ => None,
    };
    let tiled = match (&weight, &layout, inputs.iter().all(Option::is_none)) {
        (Some(w), IntegerLayout::Linear, true) => TiledWeight::from_quantized(w).ok(),
        _ => None,
    };
    state.mode = Mode::Quantized(Arc::new(Quantized {
        weight,
        inputs,
        int_weight,
        tiled,
        twins: Vec::new(),
    }));
}

/// A linear layer `y = x · Wᵀ + b` (weight stored in burn's `[in, out]` layout for a transpose-free
/// matmul; constructed from PyTorch's `[out, in]` with [`QLinear::from_torch`]).
///
/// # Shapes
/// - input `[..., in]` → output `[..., out]`
#[derive(Module, Debug)]
pub struct QLinear<B: Backend> {
    /// `[in, out]`.
    pub weight: Param<Tensor<B, 2>>,
    /// `[out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// Module path, e.g. `blocks.0.mlp.fc1`.
    #[module(skip)]
    pub name: String,
    /// Quantization state.
    #[module(skip)]
    pub quant: LayerState,
}

impl<B: Backend> QLinear<B> {
    /// From a PyTorch-layout weight `[out, in]` and optional bias `[out]`.
    pub fn from_torch(
        name: impl Into<String>,
        weight: Tensor<B, 2>,
        bias: Option<Tensor<B, 1>>,
    ) -> Self {
        Self {
            weight: Param::from_tensor(transposed(weight)),
            bias: bias.map(Param::from_tensor),
            name: name.into(),
            quant: LayerState::default(),
        }
    }

    /// The module path and quantization state.
    pub fn named_state(&self) -> (&str, &LayerState) {
        (&self.name, &self.quant)
    }

    /// Input features.
    pub fn d_in(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Output features.
    pub fn d_out(&self) -> usize {
        self.weight.dims()[1]
    }

    /// The weight in PyTorch layout `[out, in]`, row-major on the host.
    pub fn weight_torch(&self) -> Result<(Vec<f32>, Vec<usize>)> {
        tensor_to_vec(&self.weight.val().transpose())
    }

    /// The bias on the host, if the layer has one.
    pub fn bias_vec(&self) -> Result<Option<Vec<f32>>> {
        bias_vec(&self.bias)
    }

    /// Replaces the values of the bias (`[out]`; a layer without a bias is [`Error::Unsupported`]).
    pub fn set_bias(&mut self, values: &[f32]) -> Result<()> {
        let Some(bias) = &self.bias else {
            return Err(Error::Unsupported(format!("`{}` has no bias", self.name)));
        };
        if values.len() != self.d_out() {
            return Err(Error::ShapeMismatch {
                what: format!("bias of `{}`", self.name),
                expected: vec![self.d_out()],
                got: vec![values.len()],
            });
        }
        check_finite(values, &[values.len()])?;
        let t = Tensor::from_data(
            TensorData::new(values.to_vec(), [values.len()]),
            &bias.device(),
        );
        self.bias = Some(Param::from_tensor(t));
        Ok(())
    }

    /// Enters quantized mode: the weight parameter becomes `weight`'s dequantized values (PyTorch layout
    /// `[out, in]`; `None` keeps the float weight) and `input` quantizes the input (`None`: float).
    pub fn set_quantized(
        &mut self,
        weight: Option<QuantizedTensor>,
        input: Option<ActQuant>,
    ) -> Result<()> {
        if let Some(w) = &weight {
            let expected = [self.d_out(), self.d_in()];
            if w.shape() != expected {
                return Err(Error::ShapeMismatch {
                    what: format!("quantized weight of `{}`", self.name),
                    expected: expected.to_vec(),
                    got: w.shape().to_vec(),
                });
            }
            let t: Tensor<B, 2> = w.to_tensor(&self.weight.device())?;
            self.weight = Param::from_tensor(transposed(t));
        }
        set_quantized(&mut self.quant, weight, vec![input], IntegerLayout::Linear);
        Ok(())
    }

    /// Applies the layer in its current mode.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let float = |x| linear(x, self.weight.val(), self.bias.as_ref().map(|b| b.val()));
        let probed = self.quant.capture_inputs(&self.name, &[&x]);
        let y = self
            .quant
            .run(&self.name, x, float, |x, k| self.forward_host(x, k));
        if probed { self.quant.probe(y) } else { y }
    }

    fn forward_host<const D: usize>(
        &self,
        x: &Tensor<B, D>,
        kernel: HostKernel<'_>,
    ) -> Result<Tensor<B, D>> {
        let bias = bias_vec(&self.bias)?;
        let (y, shape) = crate::host::with_values(x, |data, shape| {
            let k = shape[D - 1];
            let m = data.len() / k.max(1);
            let (y, n) = match kernel {
                HostKernel::Integer(a, w) => {
                    let (s, z) = a.params_for(data);
                    let (xq, zq) = kernels::quantize_act(data, s, z, &a.spec);
                    (
                        kernels::linear_i8(&xq, zq, s, w, bias.as_deref(), m)?,
                        w.n(),
                    )
                }
                HostKernel::Tiled(w) => (weight_only::linear(data, m, w, bias.as_deref())?, w.n),
            };
            let mut shape = shape.to_vec();
            shape[D - 1] = n;
            Ok((y, shape))
        })?;
        Ok(Tensor::from_data(TensorData::new(y, shape), &x.device()))
    }
}

/// A 2-d convolution (PyTorch semantics and weight layout).
///
/// # Shapes
/// - weight `[out, in / groups, kh, kw]`
/// - input `[batch, in, h, w]` → output `[batch, out, h', w']`
#[derive(Module, Debug)]
pub struct QConv2d<B: Backend> {
    /// `[out, in / groups, kh, kw]`.
    pub weight: Param<Tensor<B, 4>>,
    /// `[out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// Stride `[sh, sw]`.
    #[module(skip)]
    pub stride: [usize; 2],
    /// Symmetric zero padding `[ph, pw]`.
    #[module(skip)]
    pub padding: [usize; 2],
    /// Dilation `[dh, dw]`.
    #[module(skip)]
    pub dilation: [usize; 2],
    /// Groups.
    #[module(skip)]
    pub groups: usize,
    /// Module path, e.g. `layer1.0.conv1`.
    #[module(skip)]
    pub name: String,
    /// Quantization state.
    #[module(skip)]
    pub quant: LayerState,
}

impl<B: Backend> QConv2d<B> {
    /// A convolution with the given weight, bias, stride and padding (dilation 1, one group).
    pub fn new(
        name: impl Into<String>,
        weight: Tensor<B, 4>,
        bias: Option<Tensor<B, 1>>,
        stride: usize,
        padding: usize,
    ) -> Self {
        Self {
            weight: Param::from_tensor(weight),
            bias: bias.map(Param::from_tensor),
            stride: [stride; 2],
            padding: [padding; 2],
            dilation: [1; 2],
            groups: 1,
            name: name.into(),
            quant: LayerState::default(),
        }
    }

    /// The module path and quantization state.
    pub fn named_state(&self) -> (&str, &LayerState) {
        (&self.name, &self.quant)
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.weight.dims()[0]
    }

    /// The weight `[out, in / groups, kh, kw]`, row-major on the host.
    pub fn weight_torch(&self) -> Result<(Vec<f32>, Vec<usize>)> {
        tensor_to_vec(&self.weight.val())
    }

    /// Enters quantized mode (see [`QLinear::set_quantized`]).
    pub fn set_quantized(
        &mut self,
        weight: Option<QuantizedTensor>,
        input: Option<ActQuant>,
    ) -> Result<()> {
        if let Some(w) = &weight {
            let expected = self.weight.dims();
            if w.shape() != expected {
                return Err(Error::ShapeMismatch {
                    what: format!("quantized weight of `{}`", self.name),
                    expected: expected.to_vec(),
                    got: w.shape().to_vec(),
                });
            }
            self.weight = Param::from_tensor(w.to_tensor(&self.weight.device())?);
        }
        let [_, cin, kh, kw] = self.weight.dims();
        let layout = if self.groups == 1 {
            IntegerLayout::ConvHwc([cin, kh, kw])
        } else {
            IntegerLayout::None
        };
        set_quantized(&mut self.quant, weight, vec![input], layout);
        Ok(())
    }

    /// Applies the convolution in its current mode.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let float = |x| {
            crate::host::conv2d(
                x,
                self.weight.val(),
                self.bias.as_ref().map(|b| b.val()),
                ConvOptions::new(self.stride, self.padding, self.dilation, self.groups),
            )
        };
        self.quant
            .run(&self.name, x, float, |x, kernel| match kernel {
                HostKernel::Integer(a, w) => self.forward_int(x, a, w),
                HostKernel::Tiled(_) => Err(Error::Unsupported(
                    "weight-only tiles for convolutions".into(),
                )),
            })
    }

    fn forward_int(&self, x: &Tensor<B, 4>, a: &ActQuant, w: &IntWeight) -> Result<Tensor<B, 4>> {
        let [_, _, kh, kw] = self.weight.dims();
        let bias = bias_vec(&self.bias)?;
        let (y, g, [oh, ow]) = crate::host::with_values(x, |data, shape| {
            let g = ConvGeometry {
                input: [shape[0], shape[1], shape[2], shape[3]],
                kernel: [kh, kw],
                stride: self.stride,
                padding: self.padding,
                dilation: self.dilation,
            };
            if shape[1] * kh * kw != w.k() {
                return Err(Error::ShapeMismatch {
                    what: format!("input channels of conv `{}`", self.name),
                    expected: vec![w.k() / (kh * kw).max(1)],
                    got: shape.to_vec(),
                });
            }
            let (s, z) = a.params_for(data);
            let (xq, zq) = kernels::quantize_act_nhwc(data, g.input, s, z, &a.spec)?;
            let (y, out) = kernels::conv2d_i8(&xq, &g, zq, s, w, bias.as_deref())?;
            Ok((y, g, out))
        })?;
        let n = g.input[0];
        // NHWC [n, oh·ow, out] → NCHW [n, out, oh·ow]
        let plane = oh * ow;
        let mut out = vec![0f32; y.len()];
        out.par_chunks_mut(plane.max(1))
            .enumerate()
            .for_each(|(bc, dst)| {
                let (b, c) = (bc / w.n(), bc % w.n());
                let src = &y[b * plane * w.n()..][..plane * w.n()];
                for (p, d) in dst.iter_mut().enumerate() {
                    *d = src[p * w.n() + c];
                }
            });
        Ok(Tensor::from_data(
            TensorData::new(out, [n, w.n(), oh, ow]),
            &x.device(),
        ))
    }
}

/// A batched matrix product of two activations (`Q·Kᵀ` and `softmax·V` in attention), with an
/// activation quantizer on each operand. In quantized mode it runs the simulated path (fake-quantized
/// operands, float matmul); integer attention is `vitq-attention`'s business.
///
/// # Shapes
/// - `[..., m, k]` × `[..., k, n]` → `[..., m, n]`
#[derive(Module, Clone, Debug)]
pub struct QMatMul {
    /// Module path, e.g. `blocks.0.attn.matmul_qk`.
    #[module(skip)]
    pub name: String,
    /// Quantization state.
    #[module(skip)]
    pub quant: LayerState,
}

impl QMatMul {
    /// A named matmul.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            quant: LayerState::default(),
        }
    }

    /// The module path and quantization state.
    pub fn named_state(&self) -> (&str, &LayerState) {
        (&self.name, &self.quant)
    }

    /// Enters quantized mode with one (optional) quantizer per operand.
    pub fn set_quantized(&mut self, a: Option<ActQuant>, b: Option<ActQuant>) {
        set_quantized(&mut self.quant, None, vec![a, b], IntegerLayout::None);
    }

    /// `a · b` in the current mode.
    pub fn forward<B: Backend, const D: usize>(
        &self,
        a: Tensor<B, D>,
        b: Tensor<B, D>,
    ) -> Tensor<B, D> {
        if self.quant.capture_inputs(&self.name, &[&a, &b]) {
            return self.quant.probe(a.matmul(b));
        }
        match &self.quant.mode {
            Mode::Float => a.matmul(b),
            Mode::Calibrate(_) => {
                self.quant.observe(&self.name, 0, &a);
                self.quant.observe(&self.name, 1, &b);
                self.quant.sample_pair(&self.name, &a, &b);
                a.matmul(b)
            }
            Mode::Quantized(q) => {
                let fq = |x: Tensor<B, D>, i: usize| match &q.inputs[i] {
                    None => x,
                    Some(aq) => q
                        .fake_quant_input(i, aq, x.clone())
                        .context(|| format!("operand {i}"))
                        .unwrap_or_else(|e| {
                            self.quant.record(&self.name, e);
                            x
                        }),
                };
                fq(a, 0).matmul(fq(b, 1))
            }
        }
    }
}

/// A mutable reference to one quantizable layer of a model (what [`crate::ptq::quantize`] walks).
#[derive(Debug)]
pub enum LayerMut<'a, B: Backend> {
    /// A linear layer.
    Linear(&'a mut QLinear<B>),
    /// A convolution.
    Conv(&'a mut QConv2d<B>),
    /// An activation × activation matmul.
    MatMul(&'a mut QMatMul),
}

impl<B: Backend> LayerMut<'_, B> {
    /// Module path.
    pub fn name(&self) -> &str {
        match self {
            LayerMut::Linear(l) => &l.name,
            LayerMut::Conv(l) => &l.name,
            LayerMut::MatMul(l) => &l.name,
        }
    }

    /// Quantization state.
    pub fn state(&self) -> &LayerState {
        match self {
            LayerMut::Linear(l) => &l.quant,
            LayerMut::Conv(l) => &l.quant,
            LayerMut::MatMul(l) => &l.quant,
        }
    }

    /// Mutable quantization state.
    pub fn state_mut(&mut self) -> &mut LayerState {
        match self {
            LayerMut::Linear(l) => &mut l.quant,
            LayerMut::Conv(l) => &mut l.quant,
            LayerMut::MatMul(l) => &mut l.quant,
        }
    }

    /// Number of activation inputs (2 for a matmul).
    pub fn num_inputs(&self) -> usize {
        match self {
            LayerMut::MatMul(_) => 2,
            _ => 1,
        }
    }

    /// The weight in PyTorch layout, `None` for a matmul.
    pub fn weight_torch(&self) -> Result<Option<(Vec<f32>, Vec<usize>)>> {
        match self {
            LayerMut::Linear(l) => l.weight_torch().map(Some),
            LayerMut::Conv(l) => l.weight_torch().map(Some),
            LayerMut::MatMul(_) => Ok(None),
        }
    }

    /// The bias, if any, on the host.
    pub fn bias(&self) -> Result<Option<Vec<f32>>> {
        match self {
            LayerMut::Linear(l) => l.bias_vec(),
            LayerMut::Conv(l) => bias_vec(&l.bias),
            LayerMut::MatMul(_) => Ok(None),
        }
    }

    /// Replaces the bias of a linear layer ([`QLinear::set_bias`]); other layers are
    /// [`Error::Unsupported`].
    pub fn set_bias(&mut self, values: &[f32]) -> Result<()> {
        match self {
            LayerMut::Linear(l) => l.set_bias(values),
            _ => Err(Error::Unsupported(format!(
                "bias correction of `{}`: only linear layers",
                self.name()
            ))),
        }
    }

    /// Enters quantized mode (for a matmul, `weight` must be `None`; `inputs` has
    /// [`LayerMut::num_inputs`] entries).
    pub fn set_quantized(
        &mut self,
        weight: Option<QuantizedTensor>,
        inputs: Vec<Option<ActQuant>>,
    ) -> Result<()> {
        if inputs.len() != self.num_inputs() {
            return Err(Error::ShapeMismatch {
                what: format!("activation quantizers of `{}`", self.name()),
                expected: vec![self.num_inputs()],
                got: vec![inputs.len()],
            });
        }
        match self {
            LayerMut::Linear(l) => l.set_quantized(weight, inputs[0]),
            LayerMut::Conv(l) => l.set_quantized(weight, inputs[0]),
            LayerMut::MatMul(l) => {
                if weight.is_some() {
                    return Err(Error::Unsupported(format!(
                        "`{}` is an activation matmul and has no weight",
                        l.name
                    )));
                }
                l.set_quantized(inputs[0], inputs[1]);
                Ok(())
            }
        }
    }
}
