//! ResNets: the CIFAR family (`resnet20/32/44/56`, He et al. 2016 §4.2, option-A shortcuts) and the
//! ImageNet family (`resnet18/34/50`, torchvision / timm layout), built from `vitq-core` layers.
//!
//! BatchNorm is folded into the preceding convolution when weights are loaded (`w' = w·γ/√(σ²+ε)`,
//! `b' = β - μ·γ/√(σ²+ε)`, ε = 1e-5), so the inference model is convolutions, ReLUs and one linear
//! layer, which is also what quantization sees.
//!
//! Checkpoint keys are PyTorch's: `conv1`, `bn1`, `layer{i}.{j}.{conv1,bn1,conv2,bn2[,conv3,bn3]}`,
//! `layer{i}.0.downsample.{0,1}` (ImageNet projection shortcuts), and `linear` (CIFAR, Idelbayev's
//! `pytorch_resnet_cifar10`) or `fc` (torchvision / timm).
//!
//! # Shapes
//! - input `[batch, 3, h, w]` (normalized) → logits `[batch, classes]`

use burn::module::Module;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::module::adaptive_avg_pool2d;
use burn::tensor::{Tensor, TensorData, s};
use vitq_core::layers::{LayerMut, LayerState, QConv2d, QLinear};

use crate::error::{Error, Result};
use crate::weights::WeightMap;

/// BatchNorm epsilon of PyTorch's `BatchNorm2d` default.
pub const BN_EPS: f32 = 1e-5;

/// Which ResNet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ResNetKind {
    /// CIFAR ResNet-(6n+2): 3 stages of 16/32/64 channels with `n` basic blocks each, option-A shortcuts.
    Cifar {
        /// Blocks per stage (`n`).
        blocks: usize,
    },
    /// ImageNet ResNet: 7×7 stem, max-pool, 4 stages of `width`·(1, 2, 4, 8) planes.
    ImageNet {
        /// Blocks per stage.
        layers: [usize; 4],
        /// Bottleneck blocks (expansion 4) instead of basic blocks.
        bottleneck: bool,
        /// Stem channels and planes of the first stage (64 for the standard models).
        width: usize,
    },
}

/// A ResNet preset.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResNetConfig {
    /// Preset name, e.g. `resnet20`.
    pub name: String,
    /// Architecture.
    pub kind: ResNetKind,
    /// Output classes.
    pub num_classes: usize,
}

/// The ResNet presets.
pub const RESNET_PRESETS: [&str; 7] = [
    "resnet20", "resnet32", "resnet44", "resnet56", "resnet18", "resnet34", "resnet50",
];

impl ResNetConfig {
    /// A preset by name (see [`RESNET_PRESETS`]) with the usual class count (10 for CIFAR, 1000 for
    /// ImageNet).
    pub fn preset(name: &str) -> Result<Self> {
        let kind = match name {
            // He et al. 2016, §4.2: 6n+2 layers.
            "resnet20" => ResNetKind::Cifar { blocks: 3 },
            "resnet32" => ResNetKind::Cifar { blocks: 5 },
            "resnet44" => ResNetKind::Cifar { blocks: 7 },
            "resnet56" => ResNetKind::Cifar { blocks: 9 },
            // torchvision.models.resnet18/34/50.
            "resnet18" => ResNetKind::ImageNet {
                layers: [2, 2, 2, 2],
                bottleneck: false,
                width: 64,
            },
            "resnet34" => ResNetKind::ImageNet {
                layers: [3, 4, 6, 3],
                bottleneck: false,
                width: 64,
            },
            "resnet50" => ResNetKind::ImageNet {
                layers: [3, 4, 6, 3],
                bottleneck: true,
                width: 64,
            },
            other => {
                return Err(Error::UnknownModel {
                    name: other.into(),
                    known: RESNET_PRESETS.join(", "),
                });
            }
        };
        let num_classes = if matches!(kind, ResNetKind::Cifar { .. }) {
            10
        } else {
            1000
        };
        Ok(Self {
            name: name.into(),
            kind,
            num_classes,
        })
    }

    /// Returns a copy with another class count.
    pub fn with_classes(mut self, num_classes: usize) -> Self {
        self.num_classes = num_classes;
        self
    }
}

/// One residual block (basic if `conv3` is `None`, bottleneck otherwise).
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    conv1: QConv2d<B>,
    conv2: QConv2d<B>,
    conv3: Option<QConv2d<B>>,
    downsample: Option<QConv2d<B>>,
    /// Option-A shortcut: zero channels padded on each side after stride-2 subsampling (0 = none).
    #[module(skip)]
    pad_channels: usize,
}

impl<B: Backend> Block<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut out = self.conv2.forward(relu(self.conv1.forward(x.clone())));
        if let Some(c3) = &self.conv3 {
            out = c3.forward(relu(out));
        }
        let shortcut = if let Some(ds) = &self.downsample {
            ds.forward(x)
        } else if self.pad_channels > 0 {
            option_a(x, self.pad_channels)
        } else {
            x
        };
        relu(out + shortcut)
    }
}

/// `F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, p, p))`: stride-2 subsampling, `p` zero channels each side.
fn option_a<B: Backend>(x: Tensor<B, 4>, p: usize) -> Tensor<B, 4> {
    let x = x.slice(s![.., .., ..;2, ..;2]);
    let [n, _, h, w] = x.dims();
    let zeros = Tensor::<B, 4>::zeros([n, p, h, w], &x.device());
    Tensor::cat(vec![zeros.clone(), x, zeros], 1)
}

/// A ResNet (inference, BatchNorm folded).
#[derive(Module, Debug)]
pub struct ResNet<B: Backend> {
    conv1: QConv2d<B>,
    blocks: Vec<Block<B>>,
    fc: QLinear<B>,
    #[module(skip)]
    max_pool: bool,
}

/// Loads `prefix.conv` with `prefix.bn` folded into it.
fn conv_bn<B: Backend>(
    w: &mut WeightMap,
    conv: &str,
    bn: &str,
    shape: [usize; 4],
    stride: usize,
    padding: usize,
    device: &B::Device,
) -> QConv2d<B> {
    let weight = w.take_vec(&format!("{conv}.weight"), &shape);
    let c = shape[0];
    let gamma = w.take_vec(&format!("{bn}.weight"), &[c]);
    let beta = w.take_vec(&format!("{bn}.bias"), &[c]);
    let mean = w.take_vec(&format!("{bn}.running_mean"), &[c]);
    let var = w.take_vec(&format!("{bn}.running_var"), &[c]);
    let (weight, bias) = fold_batchnorm(&weight, &gamma, &beta, &mean, &var, BN_EPS);
    QConv2d::new(
        conv,
        Tensor::from_data(TensorData::new(weight, shape), device),
        Some(Tensor::from_data(TensorData::new(bias, [c]), device)),
        stride,
        padding,
    )
}

/// Folds BatchNorm `(γ, β, μ, σ²)` into a bias-free conv weight `[c, ...]` (row-major): returns the new
/// weight and bias. Computed in f64.
pub fn fold_batchnorm(
    weight: &[f32],
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f32,
) -> (Vec<f32>, Vec<f32>) {
    let c = gamma.len();
    let per = weight.len() / c.max(1);
    let scale: Vec<f64> = (0..c)
        .map(|i| f64::from(gamma[i]) / (f64::from(var[i]) + f64::from(eps)).sqrt())
        .collect();
    let w = weight
        .iter()
        .enumerate()
        .map(|(k, v)| (f64::from(*v) * scale[k / per]) as f32)
        .collect();
    let b = (0..c)
        .map(|i| (f64::from(beta[i]) - f64::from(mean[i]) * scale[i]) as f32)
        .collect();
    (w, b)
}

impl<B: Backend> ResNet<B> {
    /// Builds the model from a checkpoint; every missing, unexpected or misshapen key is reported in one
    /// [`Error::Keys`].
    pub fn from_weights(
        config: &ResNetConfig,
        mut w: WeightMap,
        device: &B::Device,
    ) -> Result<Self> {
        let model = Self::build(config, &mut w, device);
        w.finish(&config.name)?;
        Ok(model)
    }

    /// The model with every parameter zero (to be filled from a quantized file).
    pub(crate) fn skeleton(config: &ResNetConfig, device: &B::Device) -> Self {
        Self::build(config, &mut WeightMap::empty(), device)
    }

    fn build(config: &ResNetConfig, w: &mut WeightMap, device: &B::Device) -> Self {
        let mut blocks = Vec::new();
        match config.kind {
            ResNetKind::Cifar { blocks: n } => {
                let conv1 = conv_bn(w, "conv1", "bn1", [16, 3, 3, 3], 1, 1, device);
                let mut cin = 16;
                for (stage, planes) in [16usize, 32, 64].into_iter().enumerate() {
                    for j in 0..n {
                        let stride = if stage > 0 && j == 0 { 2 } else { 1 };
                        let p = format!("layer{}.{j}", stage + 1);
                        blocks.push(Block {
                            conv1: conv_bn(
                                w,
                                &format!("{p}.conv1"),
                                &format!("{p}.bn1"),
                                [planes, cin, 3, 3],
                                stride,
                                1,
                                device,
                            ),
                            conv2: conv_bn(
                                w,
                                &format!("{p}.conv2"),
                                &format!("{p}.bn2"),
                                [planes, planes, 3, 3],
                                1,
                                1,
                                device,
                            ),
                            conv3: None,
                            downsample: None,
                            pad_channels: if stride != 1 || cin != planes {
                                planes / 4
                            } else {
                                0
                            },
                        });
                        cin = planes;
                    }
                }
                let fc = QLinear::from_torch(
                    "linear",
                    w.take("linear.weight", [config.num_classes, 64], device),
                    Some(w.take("linear.bias", [config.num_classes], device)),
                );
                Self {
                    conv1,
                    blocks,
                    fc,
                    max_pool: false,
                }
            }
            ResNetKind::ImageNet {
                layers,
                bottleneck,
                width,
            } => {
                let conv1 = conv_bn(w, "conv1", "bn1", [width, 3, 7, 7], 2, 3, device);
                let expansion = if bottleneck { 4 } else { 1 };
                let mut cin = width;
                for (stage, (&n, mult)) in layers.iter().zip([1usize, 2, 4, 8]).enumerate() {
                    let planes = width * mult;
                    for j in 0..n {
                        let stride = if stage > 0 && j == 0 { 2 } else { 1 };
                        let p = format!("layer{}.{j}", stage + 1);
                        let cout = planes * expansion;
                        let downsample = (stride != 1 || cin != cout).then(|| {
                            conv_bn(
                                w,
                                &format!("{p}.downsample.0"),
                                &format!("{p}.downsample.1"),
                                [cout, cin, 1, 1],
                                stride,
                                0,
                                device,
                            )
                        });
                        let c = |w: &mut WeightMap, i: usize, shape, stride, pad| {
                            conv_bn(
                                w,
                                &format!("{p}.conv{i}"),
                                &format!("{p}.bn{i}"),
                                shape,
                                stride,
                                pad,
                                device,
                            )
                        };
                        let block = if bottleneck {
                            // torchvision v1.5: the stride sits on the 3×3 conv.
                            Block {
                                conv1: c(w, 1, [planes, cin, 1, 1], 1, 0),
                                conv2: c(w, 2, [planes, planes, 3, 3], stride, 1),
                                conv3: Some(c(w, 3, [cout, planes, 1, 1], 1, 0)),
                                downsample,
                                pad_channels: 0,
                            }
                        } else {
                            Block {
                                conv1: c(w, 1, [planes, cin, 3, 3], stride, 1),
                                conv2: c(w, 2, [planes, planes, 3, 3], 1, 1),
                                conv3: None,
                                downsample,
                                pad_channels: 0,
                            }
                        };
                        blocks.push(block);
                        cin = cout;
                    }
                }
                let fc = QLinear::from_torch(
                    "fc",
                    w.take("fc.weight", [config.num_classes, cin], device),
                    Some(w.take("fc.bias", [config.num_classes], device)),
                );
                Self {
                    conv1,
                    blocks,
                    fc,
                    max_pool: true,
                }
            }
        }
    }

    /// Logits `[batch, classes]` of a normalized image batch `[batch, 3, h, w]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let features = self.features(x);
        self.fc.forward(features)
    }

    /// Globally pooled features before the classifier, `[batch, channels]`.
    pub fn features(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let mut x = relu(self.conv1.forward(x));
        if self.max_pool {
            x = vitq_core::host::max_pool2d(x, [3, 3], [2, 2], [1, 1], [1, 1]);
        }
        for b in &self.blocks {
            x = b.forward(x);
        }
        let [n, c, _, _] = x.dims();
        adaptive_avg_pool2d(x, [1, 1]).reshape([n, c])
    }
}

impl<B: Backend> vitq_core::ptq::Quantizable<B> for ResNet<B> {
    fn layers_mut(&mut self) -> Vec<LayerMut<'_, B>> {
        let mut out = vec![LayerMut::Conv(&mut self.conv1)];
        for b in &mut self.blocks {
            out.push(LayerMut::Conv(&mut b.conv1));
            out.push(LayerMut::Conv(&mut b.conv2));
            out.extend(b.conv3.as_mut().map(LayerMut::Conv));
            out.extend(b.downsample.as_mut().map(LayerMut::Conv));
        }
        out.push(LayerMut::Linear(&mut self.fc));
        out
    }

    fn layer_states(&self) -> Vec<(&str, &LayerState)> {
        let s = QConv2d::named_state;
        let mut out = vec![s(&self.conv1)];
        for b in &self.blocks {
            out.extend([s(&b.conv1), s(&b.conv2)]);
            out.extend(b.conv3.as_ref().map(s));
            out.extend(b.downsample.as_ref().map(s));
        }
        out.push(self.fc.named_state());
        out
    }

    fn calibration_step(&self, batch: Tensor<B, 4>) -> vitq_core::Result<()> {
        let _ = self.forward(batch);
        Ok(())
    }
}
