//! Model descriptions: the quantizable layers of a network and their shapes, derived analytically from
//! the public config structs of `vitq-models` (no weights are loaded).
//!
//! A [`Network`] is an ordered list of [`Layer`]s, each a convolution, a linear layer or an attention
//! matmul ([`Op`]), named exactly as the model names the corresponding `vitq-core` layer (its `name`
//! field), which is what [`vitq_core::QuantConfig`] patterns match: `conv1`, `layer1.0.conv1`,
//! `layer2.0.downsample.0`, `linear` / `fc` for ResNets; `patch_embed.proj`,
//! `blocks.{i}.attn.{qkv, matmul_qk, matmul_av, proj}`, `blocks.{i}.mlp.{fc1, fc2}`, `head` for ViTs.
//! Layers are listed in execution order.
//!
//! Counts are for **one image** ([`Counts`]): multiply-accumulates of the layer's GEMM, weight and bias
//! elements, activation elements read (every input operand once) and written (the output once).
//! Everything else a forward pass does (ReLU, residual adds, pooling, LayerNorm, softmax, GELU,
//! position-embedding add; BatchNorm is folded into the convolutions) is not counted; see
//! `docs/energy.md` for how small it is.
//!
//! ```
//! use vitq_energy::Network;
//!
//! let net = Network::from_preset("deit_tiny_patch16_224", None)?;
//! assert_eq!(net.input, [224, 224]);
//! // patch embedding, 12 blocks of 6 layers, head
//! assert_eq!(net.layers.len(), 1 + 12 * 6 + 1);
//! assert_eq!(net.layers[2].name, "blocks.0.attn.matmul_qk");
//! // 197 tokens, 3 heads of 64 channels: Q·Kᵀ is 3 × 197 × 64 × 197 MACs.
//! assert_eq!(net.layers[2].counts()?.macs, 3 * 197 * 64 * 197);
//! # Ok::<(), vitq_energy::Error>(())
//! ```

use serde::Serialize;
use vitq_models::resnet::{ResNetConfig, ResNetKind};
use vitq_models::vit::ViTConfig;

use crate::error::{Error, Result};

/// What a layer computes (for one image).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Op {
    /// A 2-d convolution (`QConv2d`), PyTorch semantics; weight `[out, in / groups, kh, kw]`.
    Conv2d {
        /// Input channels.
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
        /// Kernel `[kh, kw]`.
        kernel: [usize; 2],
        /// Stride `[sh, sw]`.
        stride: [usize; 2],
        /// Zero padding `[ph, pw]` on each side.
        padding: [usize; 2],
        /// Groups (1 for every vitq model).
        groups: usize,
        /// Has a bias (every vitq convolution does: BatchNorm is folded into it).
        bias: bool,
        /// Input `[h, w]`.
        input_hw: [usize; 2],
        /// Output `[h', w']`.
        output_hw: [usize; 2],
    },
    /// A linear layer (`QLinear`) applied to `rows` vectors (the tokens of a ViT, 1 for a head);
    /// weight `[out, in]`.
    Linear {
        /// Input features.
        in_features: usize,
        /// Output features.
        out_features: usize,
        /// Vectors it is applied to.
        rows: usize,
        /// Has a bias.
        bias: bool,
    },
    /// A batched product of two activations (`QMatMul`): `[batch, m, k] · [batch, k, n]`.
    #[serde(rename = "matmul")]
    MatMul {
        /// Independent products (attention heads).
        batch: usize,
        /// Rows of the left operand.
        m: usize,
        /// Inner dimension.
        k: usize,
        /// Columns of the right operand.
        n: usize,
    },
}

impl Op {
    /// A short human description, e.g. `conv 3×3/2 16→32` or `matmul 3×[197×64]·[64×197]`.
    pub fn describe(&self) -> String {
        match self {
            Op::Conv2d {
                in_channels,
                out_channels,
                kernel,
                stride,
                ..
            } => format!(
                "conv {}×{}/{} {in_channels}→{out_channels}",
                kernel[0], kernel[1], stride[0]
            ),
            Op::Linear {
                in_features,
                out_features,
                rows,
                ..
            } => format!("linear {rows}×[{in_features}→{out_features}]"),
            Op::MatMul { batch, m, k, n } => format!("matmul {batch}×[{m}×{k}]·[{k}×{n}]"),
        }
    }
}

/// Element counts of one layer for one image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Multiply-accumulates of the GEMM.
    pub macs: u64,
    /// Weight elements (0 for a matmul of two activations).
    pub weights: u64,
    /// Bias elements.
    pub biases: u64,
    /// Activation elements read: the input (both operands for a matmul), each once.
    pub inputs: u64,
    /// Activation elements written: the output, once.
    pub outputs: u64,
}

impl Counts {
    /// Element-wise sum; `None` on overflow.
    pub fn checked_add(self, o: Counts) -> Option<Counts> {
        Some(Counts {
            macs: self.macs.checked_add(o.macs)?,
            weights: self.weights.checked_add(o.weights)?,
            biases: self.biases.checked_add(o.biases)?,
            inputs: self.inputs.checked_add(o.inputs)?,
            outputs: self.outputs.checked_add(o.outputs)?,
        })
    }
}

/// One quantizable layer: its module path and what it computes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Layer {
    /// Module path, e.g. `layer1.0.conv1` (the `name` the model gives the layer).
    pub name: String,
    /// What it computes.
    #[serde(flatten)]
    pub op: Op,
}

/// Output length of a convolution along one axis, `None` if the window does not fit.
fn conv_out(input: usize, kernel: usize, stride: usize, padding: usize) -> Option<usize> {
    let padded = input.checked_add(padding.checked_mul(2)?)?;
    if stride == 0 || kernel == 0 || padded < kernel {
        return None;
    }
    Some((padded - kernel) / stride + 1)
}

/// The product of `xs` as a `u64`, or [`Error::Overflow`].
fn product(layer: &str, what: &str, xs: &[usize]) -> Result<u64> {
    xs.iter()
        .try_fold(1u64, |acc, &x| acc.checked_mul(u64::try_from(x).ok()?))
        .ok_or_else(|| Error::Overflow {
            layer: layer.into(),
            what: what.into(),
        })
}

impl Layer {
    /// A square-kernel convolution (one group) on an `input_hw` input; errors if a size is zero or
    /// the kernel does not fit the padded input.
    #[allow(clippy::too_many_arguments)]
    pub fn conv2d(
        name: impl Into<String>,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        input_hw: [usize; 2],
        bias: bool,
    ) -> Result<Self> {
        let name = name.into();
        let bad = |reason: String| Error::InvalidModel {
            model: format!("layer `{name}`"),
            reason,
        };
        if in_channels == 0 || out_channels == 0 {
            return Err(bad(format!(
                "channels {in_channels} → {out_channels} must be positive"
            )));
        }
        let out = |i: usize| conv_out(i, kernel, stride, padding);
        let (Some(oh), Some(ow)) = (out(input_hw[0]), out(input_hw[1])) else {
            return Err(bad(format!(
                "a {kernel}×{kernel} kernel with stride {stride} and padding {padding} does not fit a {}×{} input",
                input_hw[0], input_hw[1]
            )));
        };
        Ok(Self {
            name,
            op: Op::Conv2d {
                in_channels,
                out_channels,
                kernel: [kernel; 2],
                stride: [stride; 2],
                padding: [padding; 2],
                groups: 1,
                bias,
                input_hw,
                output_hw: [oh, ow],
            },
        })
    }

    /// A linear layer `in_features → out_features` applied to `rows` vectors.
    pub fn linear(
        name: impl Into<String>,
        in_features: usize,
        out_features: usize,
        rows: usize,
        bias: bool,
    ) -> Self {
        Self {
            name: name.into(),
            op: Op::Linear {
                in_features,
                out_features,
                rows,
                bias,
            },
        }
    }

    /// A batched matmul `[batch, m, k] · [batch, k, n]` of two activations.
    pub fn matmul(name: impl Into<String>, batch: usize, m: usize, k: usize, n: usize) -> Self {
        Self {
            name: name.into(),
            op: Op::MatMul { batch, m, k, n },
        }
    }

    /// The weight's shape in PyTorch's layout (`[out, in / groups, kh, kw]` or `[out, in]`, axis 0 the
    /// output channel, as [`vitq_core::QuantConfig`] granularities see it); `None` for a matmul.
    pub fn weight_shape(&self) -> Option<Vec<usize>> {
        match &self.op {
            Op::Conv2d {
                in_channels,
                out_channels,
                kernel,
                groups,
                ..
            } => Some(vec![
                *out_channels,
                in_channels / (*groups).max(1),
                kernel[0],
                kernel[1],
            ]),
            Op::Linear {
                in_features,
                out_features,
                ..
            } => Some(vec![*out_features, *in_features]),
            Op::MatMul { .. } => None,
        }
    }

    /// Element counts for one image; [`Error::Overflow`] if one exceeds 64 bits, and
    /// [`Error::InvalidModel`] for a convolution whose groups do not divide its channels.
    pub fn counts(&self) -> Result<Counts> {
        let p = |what: &str, xs: &[usize]| product(&self.name, what, xs);
        match &self.op {
            Op::Conv2d {
                in_channels,
                out_channels,
                kernel,
                groups,
                bias,
                input_hw,
                output_hw,
                ..
            } => {
                let g = *groups;
                if g == 0 || !in_channels.is_multiple_of(g) || !out_channels.is_multiple_of(g) {
                    return Err(Error::InvalidModel {
                        model: format!("layer `{}`", self.name),
                        reason: format!(
                            "{g} groups do not divide {in_channels} → {out_channels} channels"
                        ),
                    });
                }
                let per_out = [in_channels / g, kernel[0], kernel[1]];
                let [oh, ow] = *output_hw;
                Ok(Counts {
                    macs: p("MACs", &[&[oh, ow, *out_channels][..], &per_out].concat())?,
                    weights: p("weights", &[&[*out_channels][..], &per_out].concat())?,
                    biases: if *bias {
                        p("biases", &[*out_channels])?
                    } else {
                        0
                    },
                    inputs: p("inputs", &[*in_channels, input_hw[0], input_hw[1]])?,
                    outputs: p("outputs", &[*out_channels, oh, ow])?,
                })
            }
            Op::Linear {
                in_features,
                out_features,
                rows,
                bias,
            } => Ok(Counts {
                macs: p("MACs", &[*rows, *in_features, *out_features])?,
                weights: p("weights", &[*in_features, *out_features])?,
                biases: if *bias {
                    p("biases", &[*out_features])?
                } else {
                    0
                },
                inputs: p("inputs", &[*rows, *in_features])?,
                outputs: p("outputs", &[*rows, *out_features])?,
            }),
            Op::MatMul { batch, m, k, n } => {
                let a = p("inputs", &[*batch, *m, *k])?;
                let b = p("inputs", &[*batch, *k, *n])?;
                Ok(Counts {
                    macs: p("MACs", &[*batch, *m, *k, *n])?,
                    weights: 0,
                    biases: 0,
                    inputs: a.checked_add(b).ok_or_else(|| Error::Overflow {
                        layer: self.name.clone(),
                        what: "inputs".into(),
                    })?,
                    outputs: p("outputs", &[*batch, *m, *n])?,
                })
            }
        }
    }

    /// A short human description ([`Op::describe`]).
    pub fn describe(&self) -> String {
        self.op.describe()
    }
}

/// The quantizable layers of a model at one input size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Network {
    /// Model name (the preset name for presets).
    pub name: String,
    /// Input `[height, width]`.
    pub input: [usize; 2],
    /// The layers, in execution order.
    pub layers: Vec<Layer>,
}

impl Network {
    /// A network from its layers; checks that names are unique and that every count fits in 64 bits.
    pub fn new(name: impl Into<String>, input: [usize; 2], layers: Vec<Layer>) -> Result<Self> {
        let net = Self {
            name: name.into(),
            input,
            layers,
        };
        let mut names: Vec<&str> = net.layer_names();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::InvalidModel {
                model: net.name.clone(),
                reason: format!("two layers are named `{}`", w[0]),
            });
        }
        net.counts()?;
        Ok(net)
    }

    /// A preset of `vitq-models` (see [`vitq_models::zoo::presets`]) at a square input of
    /// `input_size` pixels, or at the size it was made for (32 for the CIFAR ResNets, 224 for the
    /// ImageNet ResNets, the config's `img_size` for ViTs) when `None`. Class counts are the presets'
    /// (10 for CIFAR, 1000 for ImageNet, no head for DINOv2).
    pub fn from_preset(name: &str, input_size: Option<usize>) -> Result<Self> {
        if let Ok(cfg) = ResNetConfig::preset(name) {
            let s = input_size.unwrap_or(match cfg.kind {
                ResNetKind::Cifar { .. } => 32,
                ResNetKind::ImageNet { .. } => 224,
            });
            return Self::resnet(&cfg, [s, s]);
        }
        if let Ok(cfg) = ViTConfig::preset(name) {
            let s = input_size.unwrap_or(cfg.img_size);
            return Self::vit(&cfg, [s, s]);
        }
        Err(Error::UnknownModel {
            name: name.into(),
            known: vitq_models::zoo::presets().join(", "),
        })
    }

    /// A ResNet at input `[h, w]` (layers as `vitq_models::resnet::ResNet` builds them).
    pub fn resnet(cfg: &ResNetConfig, input: [usize; 2]) -> Result<Self> {
        if input[0] == 0 || input[1] == 0 {
            return Err(Error::InputSize {
                model: cfg.name.clone(),
                size: input,
                reason: "sizes must be positive".into(),
            });
        }
        if cfg.num_classes == 0 {
            return Err(Error::InvalidModel {
                model: cfg.name.clone(),
                reason: "a ResNet needs at least one class".into(),
            });
        }
        let mut layers = Vec::new();
        let (head, cin) = match cfg.kind {
            ResNetKind::Cifar { blocks } => {
                let conv1 = Layer::conv2d("conv1", 3, 16, 3, 1, 1, input, true)?;
                let mut hw = out_hw(&conv1);
                layers.push(conv1);
                let mut cin = 16;
                for (stage, planes) in [16usize, 32, 64].into_iter().enumerate() {
                    for j in 0..blocks {
                        let stride = if stage > 0 && j == 0 { 2 } else { 1 };
                        let p = format!("layer{}.{j}", stage + 1);
                        let c1 = Layer::conv2d(
                            format!("{p}.conv1"),
                            cin,
                            planes,
                            3,
                            stride,
                            1,
                            hw,
                            true,
                        )?;
                        let h1 = out_hw(&c1);
                        let c2 =
                            Layer::conv2d(format!("{p}.conv2"), planes, planes, 3, 1, 1, h1, true)?;
                        hw = out_hw(&c2);
                        layers.extend([c1, c2]);
                        cin = planes;
                    }
                }
                ("linear", cin)
            }
            ResNetKind::ImageNet {
                layers: stages,
                bottleneck,
                width,
            } => {
                if width == 0 {
                    return Err(Error::InvalidModel {
                        model: cfg.name.clone(),
                        reason: "width must be positive".into(),
                    });
                }
                let conv1 = Layer::conv2d("conv1", 3, width, 7, 2, 3, input, true)?;
                let c1 = out_hw(&conv1);
                layers.push(conv1);
                // max_pool2d(kernel 3, stride 2, padding 1): never empty for a non-empty input.
                let mut hw = c1.map(|i| conv_out(i, 3, 2, 1).unwrap_or(1));
                let expansion = if bottleneck { 4 } else { 1 };
                let mut cin = width;
                for (stage, (&n, mult)) in stages.iter().zip([1usize, 2, 4, 8]).enumerate() {
                    let planes = width * mult;
                    let cout = planes * expansion;
                    for j in 0..n {
                        let stride = if stage > 0 && j == 0 { 2 } else { 1 };
                        let p = format!("layer{}.{j}", stage + 1);
                        let conv = |i: usize, cin, cout, k, s, pad, hw| {
                            Layer::conv2d(format!("{p}.conv{i}"), cin, cout, k, s, pad, hw, true)
                        };
                        let block_in = hw;
                        if bottleneck {
                            // torchvision v1.5: the stride sits on the 3×3 conv.
                            let c1 = conv(1, cin, planes, 1, 1, 0, hw)?;
                            let c2 = conv(2, planes, planes, 3, stride, 1, out_hw(&c1))?;
                            let c3 = conv(3, planes, cout, 1, 1, 0, out_hw(&c2))?;
                            hw = out_hw(&c3);
                            layers.extend([c1, c2, c3]);
                        } else {
                            let c1 = conv(1, cin, planes, 3, stride, 1, hw)?;
                            let c2 = conv(2, planes, planes, 3, 1, 1, out_hw(&c1))?;
                            hw = out_hw(&c2);
                            layers.extend([c1, c2]);
                        }
                        if stride != 1 || cin != cout {
                            layers.push(Layer::conv2d(
                                format!("{p}.downsample.0"),
                                cin,
                                cout,
                                1,
                                stride,
                                0,
                                block_in,
                                true,
                            )?);
                        }
                        cin = cout;
                    }
                }
                ("fc", cin)
            }
        };
        layers.push(Layer::linear(head, cin, cfg.num_classes, 1, true));
        Self::new(cfg.name.clone(), input, layers)
    }

    /// A Vision Transformer at input `[h, w]` (layers as `vitq_models::vit::ViT` builds them): `h` and
    /// `w` must be positive multiples of the patch size ([`Error::InputSize`] otherwise). Tokens are
    /// the class token plus `(h/p)·(w/p)` patches.
    pub fn vit(cfg: &ViTConfig, input: [usize; 2]) -> Result<Self> {
        let bad = |reason: String| Error::InvalidModel {
            model: cfg.name.clone(),
            reason,
        };
        let p = cfg.patch_size;
        let d = cfg.embed_dim;
        let h = cfg.num_heads;
        if p == 0 || d == 0 || h == 0 || cfg.in_chans == 0 || cfg.mlp_dim == 0 {
            return Err(bad(format!(
                "patch size {p}, width {d}, heads {h}, input channels {} and MLP width {} must be positive",
                cfg.in_chans, cfg.mlp_dim
            )));
        }
        if !d.is_multiple_of(h) {
            return Err(bad(format!("{h} heads do not divide the width {d}")));
        }
        if input.iter().any(|&s| s < p || !s.is_multiple_of(p)) {
            return Err(Error::InputSize {
                model: cfg.name.clone(),
                size: input,
                reason: format!("sizes must be positive multiples of the patch size {p}"),
            });
        }
        let grid = [input[0] / p, input[1] / p];
        let tokens = grid[0]
            .checked_mul(grid[1])
            .and_then(|g| g.checked_add(1))
            .ok_or_else(|| Error::Overflow {
                layer: "patch_embed.proj".into(),
                what: "tokens".into(),
            })?;
        let hd = d / h;
        let mut layers = vec![Layer::conv2d(
            "patch_embed.proj",
            cfg.in_chans,
            d,
            p,
            p,
            0,
            input,
            true,
        )?];
        for i in 0..cfg.depth {
            let b = format!("blocks.{i}");
            layers.extend([
                Layer::linear(format!("{b}.attn.qkv"), d, 3 * d, tokens, cfg.qkv_bias),
                Layer::matmul(format!("{b}.attn.matmul_qk"), h, tokens, hd, tokens),
                Layer::matmul(format!("{b}.attn.matmul_av"), h, tokens, tokens, hd),
                Layer::linear(format!("{b}.attn.proj"), d, d, tokens, true),
                Layer::linear(format!("{b}.mlp.fc1"), d, cfg.mlp_dim, tokens, true),
                Layer::linear(format!("{b}.mlp.fc2"), cfg.mlp_dim, d, tokens, true),
            ]);
        }
        if cfg.num_classes > 0 {
            layers.push(Layer::linear("head", d, cfg.num_classes, 1, true));
        }
        Self::new(cfg.name.clone(), input, layers)
    }

    /// The layer names, in execution order.
    pub fn layer_names(&self) -> Vec<&str> {
        self.layers.iter().map(|l| l.name.as_str()).collect()
    }

    /// The layer called `name`.
    pub fn layer(&self, name: &str) -> Option<&Layer> {
        self.layers.iter().find(|l| l.name == name)
    }

    /// Counts summed over all layers.
    pub fn counts(&self) -> Result<Counts> {
        self.layers.iter().try_fold(Counts::default(), |acc, l| {
            acc.checked_add(l.counts()?).ok_or_else(|| Error::Overflow {
                layer: l.name.clone(),
                what: "network totals".into(),
            })
        })
    }
}

/// Output `[h, w]` of a convolution built by [`Layer::conv2d`].
fn out_hw(layer: &Layer) -> [usize; 2] {
    match layer.op {
        Op::Conv2d { output_hw, .. } => output_hw,
        _ => [0, 0],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_output_sizes_follow_pytorch() {
        assert_eq!(conv_out(32, 3, 1, 1), Some(32));
        assert_eq!(conv_out(32, 3, 2, 1), Some(16));
        assert_eq!(conv_out(33, 3, 2, 1), Some(17));
        assert_eq!(conv_out(224, 7, 2, 3), Some(112));
        assert_eq!(conv_out(1, 7, 2, 3), Some(1));
        assert_eq!(conv_out(0, 3, 1, 0), None);
        assert_eq!(conv_out(4, 3, 0, 1), None);
    }

    #[test]
    fn layer_counts() {
        let c = Layer::conv2d("c", 16, 32, 3, 2, 1, [32, 32], true).unwrap();
        assert_eq!(
            c.counts().unwrap(),
            Counts {
                macs: 16 * 16 * 32 * 16 * 9,
                weights: 32 * 16 * 9,
                biases: 32,
                inputs: 16 * 32 * 32,
                outputs: 32 * 16 * 16,
            }
        );
        assert_eq!(c.weight_shape(), Some(vec![32, 16, 3, 3]));
        let l = Layer::linear("l", 8, 4, 3, false);
        assert_eq!(
            l.counts().unwrap(),
            Counts {
                macs: 96,
                weights: 32,
                biases: 0,
                inputs: 24,
                outputs: 12,
            }
        );
        let m = Layer::matmul("m", 2, 5, 3, 7);
        assert_eq!(
            m.counts().unwrap(),
            Counts {
                macs: 210,
                weights: 0,
                biases: 0,
                inputs: 2 * 15 + 2 * 21,
                outputs: 70,
            }
        );
        assert_eq!(m.weight_shape(), None);
    }

    #[test]
    fn bad_shapes_are_errors_not_panics() {
        assert!(matches!(
            Layer::conv2d("c", 3, 16, 7, 1, 0, [3, 3], true),
            Err(Error::InvalidModel { .. })
        ));
        assert!(matches!(
            Layer::conv2d("c", 0, 16, 3, 1, 1, [8, 8], true),
            Err(Error::InvalidModel { .. })
        ));
        assert!(matches!(
            Layer::linear("l", usize::MAX, 2, 2, true).counts(),
            Err(Error::Overflow { .. })
        ));
        let dup = vec![
            Layer::linear("a", 1, 1, 1, true),
            Layer::linear("a", 1, 1, 1, true),
        ];
        assert!(matches!(
            Network::new("n", [1, 1], dup),
            Err(Error::InvalidModel { .. })
        ));
        assert!(matches!(
            Network::from_preset("resnet20", Some(0)),
            Err(Error::InputSize { .. })
        ));
        assert!(matches!(
            Network::from_preset("vit_base_patch16_224", Some(100)),
            Err(Error::InputSize { .. })
        ));
        assert!(matches!(
            Network::from_preset("vit_base_patch16_224", Some(8)),
            Err(Error::InputSize { .. })
        ));
        assert!(matches!(
            Network::from_preset("vit_base_patch16_224", Some(1 << 40)),
            Err(Error::Overflow { .. })
        ));
        match Network::from_preset("resnet21", None) {
            Err(Error::UnknownModel { known, .. }) => assert!(known.contains("resnet20")),
            other => panic!("expected UnknownModel, got {other:?}"),
        }
        let mut cfg = ViTConfig::preset("vit_tiny_patch16_224").unwrap();
        cfg.num_heads = 5;
        assert!(matches!(
            Network::vit(&cfg, [224, 224]),
            Err(Error::InvalidModel { .. })
        ));
    }

    #[test]
    fn every_preset_builds_at_its_own_size() {
        for name in vitq_models::zoo::presets() {
            let net = Network::from_preset(name, None).unwrap();
            assert!(!net.layers.is_empty(), "{name}");
            assert!(net.counts().unwrap().macs > 0, "{name}");
        }
    }

    #[test]
    fn resnets_take_odd_input_sizes() {
        // 33 → 17 → 9 in the CIFAR stages; 225 → 113 → 57 … in the ImageNet ones.
        let net = Network::from_preset("resnet20", Some(33)).unwrap();
        assert!(matches!(
            net.layer("layer3.2.conv2").unwrap().op,
            Op::Conv2d {
                output_hw: [9, 9],
                ..
            }
        ));
        let net = Network::from_preset("resnet50", Some(225)).unwrap();
        assert!(matches!(
            net.layer("layer4.2.conv3").unwrap().op,
            Op::Conv2d {
                output_hw: [8, 8],
                ..
            }
        ));
        // The smallest input: everything collapses to 1×1 but stays defined.
        Network::from_preset("resnet18", Some(1)).unwrap();
    }
}
