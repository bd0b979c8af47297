//! Vision Transformers: ViT (Dosovitskiy et al. 2021), DeiT (Touvron et al. 2021) and DINOv2 (Oquab et
//! al. 2023) in timm's `VisionTransformer` layout, built from `vitq-core` layers.
//!
//! Every matrix product that quantization cares about is a `vitq-core` layer with its timm module path
//! as `name`: `patch_embed.proj` ([`QConv2d`], kernel = stride = patch), and per block
//! `blocks.{i}.attn.qkv`, `blocks.{i}.attn.matmul_qk` (`Q·Kᵀ`), `blocks.{i}.attn.matmul_av`
//! (`softmax·V`), `blocks.{i}.attn.proj`, `blocks.{i}.mlp.fc1`, `blocks.{i}.mlp.fc2` ([`QLinear`],
//! [`QMatMul`]), then `head`. The names are timm's whatever naming the checkpoint used.
//!
//! The blocks are pre-norm, `x + ls1(attn(norm1(x)))` then `x + ls2(mlp(norm2(x)))`, with LayerNorm
//! (ε from [`ViTConfig::ln_eps`]: 1e-6 for timm where burn's default is 1e-5), exact (erf) GELU,
//! attention scale `head_dim^-0.5`, and layer-scale (`ls1`, `ls2`) only when
//! [`ViTConfig::layer_scale`] is set (DINOv2, DeiT-3). The class token is prepended to the patch
//! tokens and the learned `pos_embed` added (its row 0 belongs to the class token); after the last
//! block a final norm, then the head on token 0 ([`Pooling::Cls`]) or on the mean of the patch tokens
//! ([`Pooling::Mean`]).
//!
//! # Checkpoints
//! [`ViT::from_weights`] reads three naming schemes, detected from the keys:
//! - **timm**: `cls_token`, `pos_embed`, `patch_embed.proj`, `blocks.{i}.{norm1, attn.qkv, attn.proj,
//!   ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma}`, `norm`, `head` (with [`Pooling::Mean`]: `fc_norm`
//!   after pooling instead of `norm` before it, as timm's `global_pool='avg'`). Old DeiT-3 names
//!   `blocks.{i}.gamma_1` / `gamma_2` are accepted for the layer-scales, and a `pos_embed` without a
//!   class-token row (timm's `no_embed_class=True`, DeiT-3) is detected from its shape.
//! - **Hugging Face ViT** (`ViTModel`, `ViTForImageClassification`): `[vit.]embeddings.{cls_token,
//!   position_embeddings, patch_embeddings.projection}`, `[vit.]encoder.layer.{i}.{layernorm_before,
//!   attention.attention.{query,key,value}, attention.output.dense, layernorm_after,
//!   intermediate.dense, output.dense}`, `[vit.]layernorm`, `classifier`; `embeddings.mask_token` and
//!   the unused `pooler.dense` are consumed and ignored. HF's own LayerNorm ε is 1e-12
//!   ([`ViTConfig::infer`] sets it).
//! - **Hugging Face DINOv2** (`Dinov2Model`): `[dinov2.]embeddings.*` as above,
//!   `[dinov2.]encoder.layer.{i}.{norm1, attention.attention.{query,key,value}, attention.output.dense,
//!   layer_scale1.lambda1, norm2, mlp.fc1, mlp.fc2, layer_scale2.lambda1}`, `[dinov2.]layernorm`;
//!   `embeddings.mask_token` is consumed and ignored. (`Dinov2ForImageClassification`'s head on the
//!   concatenated class and mean tokens is not supported.)
//!
//! The fused `qkv` weight is `[3·dim, dim]`: rows `0..dim` are q, then k, then v, and head `h` owns rows
//! `h·hd..(h+1)·hd` of each; Hugging Face's separate q, k, v are concatenated into that layout.
//!
//! # Position embeddings
//! The checkpoint's `pos_embed` grid is kept as stored (DINOv2: 37×37 for 518×518) and resampled at
//! forward time to the input's patch grid when they differ, with exactly timm's
//! `resample_abs_pos_embed(..., interpolation='bicubic', antialias=True)` (see
//! [`resample_abs_pos_embed`]); the class-token row is not resampled. For an input of the config's
//! `img_size` this equals timm's load-time resampling of a checkpoint made at another size.
//!
//! # Shapes
//! - input `[batch, in_chans, h, w]` (normalized), `h` and `w` multiples of `patch_size`
//! - tokens `[batch, 1 + (h/p)·(w/p), embed_dim]`: class token first, then the patches row-major
//!   (token `1 + row·(w/p) + col`)
//! - `forward` → logits `[batch, num_classes]`, or pooled features `[batch, embed_dim]` when
//!   `num_classes = 0` (backbones such as DINOv2)
//!
//! ```
//! use vitq_models::vit::{ViTConfig, resample_abs_pos_embed};
//!
//! let cfg = ViTConfig::preset("dinov2_small")?;
//! assert_eq!((cfg.patch_size, cfg.img_size / cfg.patch_size, cfg.num_classes), (14, 37, 0));
//! // A class-token row (9) and a 1×2 grid of width 1, resampled to 1×3: the middle is the mean.
//! let pos = resample_abs_pos_embed(&[9.0, 0.0, 1.0], 1, [1, 2], [1, 3], 1);
//! assert_eq!((pos.len(), pos[0], pos[2]), (4, 9.0, 0.5));
//! # Ok::<(), vitq_models::Error>(())
//! ```

use burn::module::{Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig};
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use vitq_core::host::gelu;
use vitq_core::layers::{LayerMut, LayerState, Mode, QConv2d, QLinear, QMatMul};

use crate::error::{Error, Result};
use crate::weights::WeightMap;

/// LayerNorm epsilon of timm's ViTs (`partial(nn.LayerNorm, eps=1e-6)`).
pub const TIMM_LN_EPS: f64 = 1e-6;

/// LayerNorm epsilon of Hugging Face's `ViTConfig` default (`layer_norm_eps=1e-12`).
pub const HF_VIT_LN_EPS: f64 = 1e-12;

/// What the head sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Pooling {
    /// The class token (timm `global_pool='token'`): final `norm` over all tokens, then token 0.
    Cls,
    /// The mean of the patch tokens (timm `global_pool='avg'`): no `norm` on the tokens, `fc_norm`
    /// after pooling (for Hugging Face checkpoints: `layernorm` on the tokens, then the mean).
    Mean,
}

/// A Vision Transformer configuration; field names follow timm's `VisionTransformer` arguments.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ViTConfig {
    /// Preset name, e.g. `deit_small_patch16_224`.
    pub name: String,
    /// Input size the model was made for (square); inputs of other sizes resample `pos_embed`.
    pub img_size: usize,
    /// Patch size (square; the patch-embedding kernel and stride).
    pub patch_size: usize,
    /// Input channels.
    pub in_chans: usize,
    /// Token width.
    pub embed_dim: usize,
    /// Number of blocks.
    pub depth: usize,
    /// Attention heads (`embed_dim` must be a multiple).
    pub num_heads: usize,
    /// Hidden width of the MLP (`mlp_ratio · embed_dim`, 4× for every preset).
    pub mlp_dim: usize,
    /// Output classes; 0 = no head (a backbone: `forward` returns the pooled features).
    pub num_classes: usize,
    /// Blocks have layer-scale `ls1`, `ls2` (timm's `init_values` is set: 1e-5 for DINOv2, 1e-6 for
    /// DeiT-3).
    pub layer_scale: bool,
    /// What the head sees.
    pub pooling: Pooling,
    /// LayerNorm epsilon ([`TIMM_LN_EPS`] for every preset).
    pub ln_eps: f64,
    /// `qkv` has a bias.
    pub qkv_bias: bool,
    /// How attention is computed (see [`AttentionImpl`]).
    #[serde(default)]
    pub attention: AttentionImpl,
    /// What [`AttentionImpl::Quantized`] quantizes besides Q and K: `P·V` and the output, each
    /// f32 (the default) or 8 bits (`vitq_attention::QuantizedSpec`). Ignored by the other
    /// implementations.
    #[serde(default)]
    pub quantized_attention: vitq_attention::QuantizedSpec,
}

/// How a [`ViT`] computes attention.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AttentionImpl {
    /// `Q·Kᵀ` → softmax → `·V` through the block's two [`QMatMul`] layers (`attn.matmul_qk`,
    /// `attn.matmul_av`), as timm computes it: the path whose activation quantizers calibrate and run
    /// when the model is quantized. The default.
    #[default]
    Layers,
    /// `vitq_attention::Strategy::Reference`.
    Reference,
    /// `vitq_attention::Strategy::Flash` (the CubeCL kernel; CUDA and wgpu builds only).
    Flash,
    /// `vitq_attention::Strategy::Quantized` (int8 Q·Kᵀ with per-token scales; `P·V` and the
    /// output as [`ViTConfig::quantized_attention`] says).
    Quantized,
    /// `vitq_attention::Strategy::Burn` (burn's own fused attention).
    Burn,
    /// `vitq_attention::Strategy::Auto` (the fastest for the backend).
    Auto,
}

impl AttentionImpl {
    /// The `vitq-attention` strategy, `None` for [`AttentionImpl::Layers`]; `quantized` is what
    /// [`AttentionImpl::Quantized`] quantizes besides Q and K. A strategy is used while the
    /// block's matmul layers are in float mode; once they calibrate or are quantized, their path
    /// runs instead so that their quantizers apply.
    pub fn strategy(
        self,
        quantized: vitq_attention::QuantizedSpec,
    ) -> Option<vitq_attention::Strategy> {
        use vitq_attention::Strategy as S;
        match self {
            AttentionImpl::Layers => None,
            AttentionImpl::Reference => Some(S::Reference),
            AttentionImpl::Flash => Some(S::Flash),
            AttentionImpl::Quantized => Some(S::Quantized(quantized)),
            AttentionImpl::Burn => Some(S::Burn),
            AttentionImpl::Auto => Some(S::Auto),
        }
    }
}

/// The ViT presets.
pub const VIT_PRESETS: [&str; 12] = [
    "vit_tiny_patch16_224",
    "vit_small_patch16_224",
    "vit_base_patch16_224",
    "vit_large_patch16_224",
    "deit_tiny_patch16_224",
    "deit_small_patch16_224",
    "deit_base_patch16_224",
    "dinov2_small",
    "dinov2_base",
    "vit_cifar_tiny",
    "vit_cifar_small",
    "vit_cifar_large",
];

impl ViTConfig {
    /// A timm-style ViT: 3 input channels, MLP 4×, 1000 classes, class-token pooling, no
    /// layer-scale, LN ε 1e-6, qkv bias.
    fn timm(
        name: &str,
        img_size: usize,
        patch_size: usize,
        embed_dim: usize,
        depth: usize,
        num_heads: usize,
    ) -> Self {
        Self {
            name: name.into(),
            img_size,
            patch_size,
            in_chans: 3,
            embed_dim,
            depth,
            num_heads,
            mlp_dim: 4 * embed_dim,
            num_classes: 1000,
            layer_scale: false,
            pooling: Pooling::Cls,
            ln_eps: TIMM_LN_EPS,
            qkv_bias: true,
            attention: AttentionImpl::Layers,
            quantized_attention: Default::default(),
        }
    }

    /// A DINOv2 backbone: layer-scale, input 518, no head.
    fn dinov2(self) -> Self {
        Self {
            layer_scale: true,
            ..self.with_classes(0)
        }
    }

    /// A preset by name (see [`VIT_PRESETS`]) with its usual class count (1000 for ImageNet, 0 for the
    /// DINOv2 backbones, 10 for the CIFAR ViTs).
    pub fn preset(name: &str) -> Result<Self> {
        let t = Self::timm;
        Ok(match name {
            // timm vision_transformer.py `vit_tiny_patch16_224`:
            // dict(patch_size=16, embed_dim=192, depth=12, num_heads=3).
            "vit_tiny_patch16_224" => t(name, 224, 16, 192, 12, 3),
            // `vit_small_patch16_224`: dict(patch_size=16, embed_dim=384, depth=12, num_heads=6).
            "vit_small_patch16_224" => t(name, 224, 16, 384, 12, 6),
            // `vit_base_patch16_224`: dict(patch_size=16, embed_dim=768, depth=12, num_heads=12).
            "vit_base_patch16_224" => t(name, 224, 16, 768, 12, 12),
            // `vit_large_patch16_224`: dict(patch_size=16, embed_dim=1024, depth=24, num_heads=16).
            "vit_large_patch16_224" => t(name, 224, 16, 1024, 24, 16),
            // timm deit.py `deit_tiny_patch16_224`: dict(patch_size=16, embed_dim=192, depth=12,
            // num_heads=3), a plain VisionTransformer (the distilled variants are not covered).
            "deit_tiny_patch16_224" => t(name, 224, 16, 192, 12, 3),
            // `deit_small_patch16_224`: dict(patch_size=16, embed_dim=384, depth=12, num_heads=6).
            "deit_small_patch16_224" => t(name, 224, 16, 384, 12, 6),
            // `deit_base_patch16_224`: dict(patch_size=16, embed_dim=768, depth=12, num_heads=12).
            "deit_base_patch16_224" => t(name, 224, 16, 768, 12, 12),
            // timm `vit_small_patch14_dinov2`: dict(patch_size=14, embed_dim=384, depth=12,
            // num_heads=6, init_values=1e-5); pretrained cfg `.lvd142m`: input 518, num_classes=0.
            "dinov2_small" => t(name, 518, 14, 384, 12, 6).dinov2(),
            // timm `vit_base_patch14_dinov2`: dict(patch_size=14, embed_dim=768, depth=12,
            // num_heads=12, init_values=1e-5); `.lvd142m`: input 518, num_classes=0.
            "dinov2_base" => t(name, 518, 14, 768, 12, 12).dinov2(),
            // CIFAR-10 ViTs (no timm counterpart; timm's VisionTransformer with img_size=32,
            // patch_size=4): ViT-Ti width, 12 blocks, 3 heads, MLP 768.
            "vit_cifar_tiny" => t(name, 32, 4, 192, 12, 3).with_classes(10),
            // ViT-S width: 384, 12 blocks, 6 heads, MLP 1536.
            "vit_cifar_small" => t(name, 32, 4, 384, 12, 6).with_classes(10),
            // 512 wide, 24 blocks, 8 heads, MLP 2048.
            "vit_cifar_large" => t(name, 32, 4, 512, 24, 8).with_classes(10),
            other => {
                return Err(Error::UnknownModel {
                    name: other.into(),
                    known: VIT_PRESETS.join(", "),
                });
            }
        })
    }

    /// Returns a copy with another class count (0 = backbone).
    pub fn with_classes(mut self, num_classes: usize) -> Self {
        self.num_classes = num_classes;
        self
    }

    /// Returns a copy with another input size.
    pub fn with_img_size(mut self, img_size: usize) -> Self {
        self.img_size = img_size;
        self
    }

    /// Channels per head.
    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads.max(1)
    }

    /// Infers a configuration from checkpoint shapes (any naming scheme of [`ViT::from_weights`]):
    /// `embed_dim`, `in_chans`, `patch_size` from the patch embedding, `depth` from the blocks present,
    /// `mlp_dim`, `qkv_bias`, `layer_scale`, `num_classes` (0 without a head), `pooling` (`Mean` if a
    /// timm `fc_norm` is present), `img_size` from the `pos_embed` grid, `ln_eps` from the naming
    /// (1e-12 for Hugging Face ViT, 1e-6 otherwise). The name is the first preset that matches in
    /// everything else, or `vit_d{dim}_l{depth}_p{patch}`.
    ///
    /// `num_heads` cannot be read from shapes: it is the presets' (192→3, 384→6, 512→8, 768→12,
    /// 1024→16), otherwise `embed_dim / 64`; override it if the checkpoint differs. An `embed_dim` that
    /// is not a multiple of 64 and not in that table, or a checkpoint without a patch embedding or
    /// `pos_embed`, gives [`Error::Shape`].
    pub fn infer(weights: &WeightMap) -> Result<Self> {
        let naming = Naming::detect(weights);
        let bad = |key: &str, expected: &str| Error::Shape {
            what: format!("ViT checkpoint tensor `{key}` (config inference)"),
            expected: expected.into(),
            got: weights
                .shape(key)
                .map(<[usize]>::to_vec)
                .unwrap_or_default(),
        };
        let proj = format!("{}.weight", naming.patch_proj());
        let Some(&[embed_dim, in_chans, patch_size, pw]) = weights.shape(&proj) else {
            return Err(bad(&proj, "[embed_dim, in_chans, patch, patch]"));
        };
        if patch_size != pw || patch_size == 0 {
            return Err(bad(&proj, "[embed_dim, in_chans, patch, patch]"));
        }
        let num_heads = match embed_dim {
            192 => 3,
            384 => 6,
            512 => 8,
            768 => 12,
            1024 => 16,
            d if d > 0 && d.is_multiple_of(64) => d / 64,
            _ => {
                return Err(Error::Shape {
                    what: "ViT embed_dim (the head count cannot be inferred)".into(),
                    expected: "192, 384, 512, 768, 1024 or a multiple of 64".into(),
                    got: vec![embed_dim],
                });
            }
        };
        let pos = naming.pos_embed();
        let grid = match weights.shape(&pos) {
            Some(&[1, n, d]) if d == embed_dim => {
                pos_grid(n, naming.allows_no_embed_class()).map(|(g, _)| g)
            }
            _ => None,
        };
        let Some(grid) = grid else {
            return Err(bad(&pos, "[1, 1 + g·g, embed_dim]"));
        };
        let depth = (0..)
            .take_while(|&i| {
                weights
                    .shape(&format!("{}.weight", naming.norm1(i)))
                    .is_some()
            })
            .count();
        let mlp_dim = weights
            .shape(&format!("{}.weight", naming.fc1(0)))
            .and_then(|s| s.first().copied())
            .unwrap_or(4 * embed_dim);
        let qkv_bias = match &naming {
            Naming::Timm => weights.shape("blocks.0.attn.qkv.bias").is_some(),
            _ => weights
                .shape(&format!("{}.query.bias", naming.qkv(0)))
                .is_some(),
        };
        let layer_scale = weights.shape(&naming.ls(weights, 0, 1)).is_some();
        let num_classes = weights
            .shape(&format!("{}.weight", naming.head()))
            .and_then(|s| s.first().copied())
            .unwrap_or(0);
        let pooling = if naming == Naming::Timm && weights.shape("fc_norm.weight").is_some() {
            Pooling::Mean
        } else {
            Pooling::Cls
        };
        let ln_eps = if matches!(naming, Naming::HfVit(_)) {
            HF_VIT_LN_EPS
        } else {
            TIMM_LN_EPS
        };
        let mut config = Self {
            name: format!("vit_d{embed_dim}_l{depth}_p{patch_size}"),
            img_size: grid * patch_size,
            patch_size,
            in_chans,
            embed_dim,
            depth,
            num_heads,
            mlp_dim,
            num_classes,
            layer_scale,
            pooling,
            ln_eps,
            qkv_bias,
            attention: AttentionImpl::Layers,
            quantized_attention: Default::default(),
        };
        if let Some(preset) = VIT_PRESETS
            .iter()
            .filter_map(|n| Self::preset(n).ok())
            .find(|p| {
                Self {
                    name: p.name.clone(),
                    ..config.clone()
                } == *p
            })
        {
            config.name = preset.name;
        }
        Ok(config)
    }
}

/// The checkpoint naming scheme, detected from the keys.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Naming {
    /// timm's `VisionTransformer` state dict.
    Timm,
    /// Hugging Face `ViTModel` / `ViTForImageClassification`, with the key prefix (`""` or `vit.`).
    HfVit(String),
    /// Hugging Face `Dinov2Model`, with the key prefix (`""` or `dinov2.`).
    HfDinov2(String),
}

impl Naming {
    fn detect(w: &WeightMap) -> Self {
        for p in ["", "vit.", "dinov2."] {
            if w.shape(&format!("{p}embeddings.cls_token")).is_some() {
                let hf_vit = w
                    .shape(&format!("{p}encoder.layer.0.layernorm_before.weight"))
                    .is_some();
                return if hf_vit {
                    Self::HfVit(p.into())
                } else {
                    Self::HfDinov2(p.into())
                };
            }
        }
        Self::Timm
    }

    fn prefix(&self) -> &str {
        match self {
            Self::Timm => "",
            Self::HfVit(p) | Self::HfDinov2(p) => p,
        }
    }

    /// timm's `no_embed_class=True` (a `pos_embed` without the class-token row) exists only in timm.
    fn allows_no_embed_class(&self) -> bool {
        *self == Self::Timm
    }

    fn cls_token(&self) -> String {
        match self {
            Self::Timm => "cls_token".into(),
            _ => format!("{}embeddings.cls_token", self.prefix()),
        }
    }

    fn pos_embed(&self) -> String {
        match self {
            Self::Timm => "pos_embed".into(),
            _ => format!("{}embeddings.position_embeddings", self.prefix()),
        }
    }

    fn patch_proj(&self) -> String {
        match self {
            Self::Timm => "patch_embed.proj".into(),
            _ => format!("{}embeddings.patch_embeddings.projection", self.prefix()),
        }
    }

    fn block(&self, i: usize) -> String {
        match self {
            Self::Timm => format!("blocks.{i}"),
            _ => format!("{}encoder.layer.{i}", self.prefix()),
        }
    }

    fn norm1(&self, i: usize) -> String {
        let b = self.block(i);
        match self {
            Self::HfVit(_) => format!("{b}.layernorm_before"),
            _ => format!("{b}.norm1"),
        }
    }

    fn norm2(&self, i: usize) -> String {
        let b = self.block(i);
        match self {
            Self::HfVit(_) => format!("{b}.layernorm_after"),
            _ => format!("{b}.norm2"),
        }
    }

    /// timm: the fused `qkv`; Hugging Face: the parent of `query`, `key`, `value`.
    fn qkv(&self, i: usize) -> String {
        let b = self.block(i);
        match self {
            Self::Timm => format!("{b}.attn.qkv"),
            _ => format!("{b}.attention.attention"),
        }
    }

    fn proj(&self, i: usize) -> String {
        let b = self.block(i);
        match self {
            Self::Timm => format!("{b}.attn.proj"),
            _ => format!("{b}.attention.output.dense"),
        }
    }

    fn fc1(&self, i: usize) -> String {
        let b = self.block(i);
        match self {
            Self::HfVit(_) => format!("{b}.intermediate.dense"),
            _ => format!("{b}.mlp.fc1"),
        }
    }

    fn fc2(&self, i: usize) -> String {
        let b = self.block(i);
        match self {
            Self::HfVit(_) => format!("{b}.output.dense"),
            _ => format!("{b}.mlp.fc2"),
        }
    }

    /// The full key of layer-scale `which` (1 or 2) of block `i`; timm's old DeiT-3 `gamma_{which}`
    /// if the checkpoint has it.
    fn ls(&self, w: &WeightMap, i: usize, which: usize) -> String {
        let b = self.block(i);
        match self {
            Self::Timm => {
                let old = format!("{b}.gamma_{which}");
                if w.shape(&old).is_some() {
                    old
                } else {
                    format!("{b}.ls{which}.gamma")
                }
            }
            _ => format!("{b}.layer_scale{which}.lambda1"),
        }
    }

    /// The norm on the tokens after the last block, and the one after pooling.
    fn final_norms(&self, pooling: Pooling) -> (Option<String>, Option<String>) {
        match (self, pooling) {
            (Self::Timm, Pooling::Cls) => (Some("norm".into()), None),
            (Self::Timm, Pooling::Mean) => (None, Some("fc_norm".into())),
            _ => (Some(format!("{}layernorm", self.prefix())), None),
        }
    }

    fn head(&self) -> String {
        match self {
            Self::Timm => "head".into(),
            _ => "classifier".into(),
        }
    }

    /// Keys that are consumed if present and not used.
    fn ignored(&self) -> Vec<String> {
        let p = self.prefix();
        match self {
            Self::Timm => Vec::new(),
            Self::HfVit(_) => vec![
                format!("{p}embeddings.mask_token"),
                format!("{p}pooler.dense.weight"),
                format!("{p}pooler.dense.bias"),
            ],
            Self::HfDinov2(_) => vec![format!("{p}embeddings.mask_token")],
        }
    }
}

/// The grid side `g` and whether there is a class-token row, for a `pos_embed` of `n` rows:
/// `1 + g²` rows (class token first), or `g²` rows if `no_embed_class` is allowed.
fn pos_grid(n: usize, allow_no_embed_class: bool) -> Option<(usize, bool)> {
    let side = |m: usize| {
        let g = (m as f64).sqrt().round() as usize;
        (g > 0 && g * g == m).then_some(g)
    };
    match (n.checked_sub(1).and_then(side), allow_no_embed_class) {
        (Some(g), _) => Some((g, true)),
        (None, true) => side(n).map(|g| (g, false)),
        (None, false) => None,
    }
}

/// The Keys cubic convolution kernel with `a = -0.5`, PyTorch's `aa_filter` for antialiased bicubic,
/// with the fused multiply-adds that PyTorch's x86-64 build contracts it to (bit-exact weights).
fn cubic_aa(x: f32) -> f32 {
    const A: f32 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        // ((A + 2)·x − (A + 3))·x·x + 1
        ((A + 2.0).mul_add(x, -(A + 3.0)) * x).mul_add(x, 1.0)
    } else if x < 2.0 {
        // ((A·x − 5A)·x + 8A)·x − 4A
        A.mul_add(x, -5.0 * A)
            .mul_add(x, 8.0 * A)
            .mul_add(x, -4.0 * A)
    } else {
        0.0
    }
}

/// Per output index: the first input index and the normalised tap weights of PyTorch's antialiased
/// bicubic resize (`align_corners=False`), computed in f32 as `_compute_indices_min_size_weights_aa`
/// does for float inputs (bit-exact against torch 2.15 on x86-64 for the tested sizes).
fn aa_bicubic_weights(n_in: usize, n_out: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = n_in as f32 / n_out as f32;
    let (support, invscale) = if scale >= 1.0 {
        (2.0 * scale, (1.0 / f64::from(scale)) as f32)
    } else {
        (2.0, 1.0)
    };
    (0..n_out)
        .map(|i| {
            // `scale * (i + 0.5)`: a double product stored as float.
            let center = (f64::from(scale) * (i as f64 + 0.5)) as f32;
            // `as i64` truncates toward zero, like C++'s static_cast.
            let xmin = ((f64::from(center) - f64::from(support) + 0.5) as i64).max(0) as usize;
            let xmax = ((f64::from(center) + f64::from(support) + 0.5) as i64)
                .min(n_in as i64)
                .max(0) as usize;
            let mut w: Vec<f32> = (xmin..xmax)
                .map(|j| cubic_aa((j as f32 - center + 0.5) * invscale))
                .collect();
            let total = w.iter().fold(0.0f32, |t, v| t + v);
            if total != 0.0 {
                w.iter_mut().for_each(|v| *v /= total);
            }
            (xmin, w)
        })
        .collect()
}

/// Resizes `src` `[rows, cols, c]` (row-major) along axis `axis` (0 = rows, 1 = cols) to `n_out`.
fn resize_axis(src: &[f32], shape: [usize; 3], axis: usize, n_out: usize) -> Vec<f32> {
    let [rows, cols, c] = shape;
    let weights = aa_bicubic_weights(shape[axis], n_out);
    let out_shape = if axis == 0 {
        [n_out, cols, c]
    } else {
        [rows, n_out, c]
    };
    let at = |r: usize, q: usize, ch: usize| src[(r * cols + q) * c + ch];
    let mut out = vec![0.0f32; out_shape.iter().product()];
    for r in 0..out_shape[0] {
        for q in 0..out_shape[1] {
            for ch in 0..c {
                let (start, w) = if axis == 0 { &weights[r] } else { &weights[q] };
                let tap = |j: usize| {
                    if axis == 0 {
                        at(start + j, q, ch)
                    } else {
                        at(r, start + j, ch)
                    }
                };
                // Tap by tap in f32, first term `x0·w0`, then fused multiply-adds, as PyTorch's
                // `interpolate_aa_single_dim` compiles on x86-64.
                let mut acc = 0.0f32;
                for (j, wj) in w.iter().enumerate() {
                    acc = if j == 0 {
                        tap(j) * wj
                    } else {
                        tap(j).mul_add(*wj, acc)
                    };
                }
                out[(r * out_shape[1] + q) * c + ch] = acc;
            }
        }
    }
    out
}

/// timm's `resample_abs_pos_embed(posemb, new_size, old_size, num_prefix_tokens,
/// interpolation='bicubic', antialias=True)` on host data: `pos` is `[num_prefix + gh·gw, dim]`
/// (row-major, grid rows row-major), the result `[num_prefix + new_h·new_w, dim]`.
///
/// The prefix rows (class token) are copied; the grid is resized with PyTorch's antialiased bicubic
/// (`F.interpolate(mode='bicubic', antialias=True, align_corners=False)`): Keys kernel with
/// `a = -0.5`, support widened by the downscale factor, taps renormalised to sum 1 at the edges
/// (no clamping), width first then height, weights and sums in f32. An axis whose size does not
/// change is left untouched. Against torch 2.15 (x86-64 CPU) this is bit-exact for 2→3, 5→8 and
/// 5×5→4×7, and within one f32 ulp for 5→3.
///
/// # Panics
/// If `pos.len() != (num_prefix + old[0]·old[1])·dim`.
pub fn resample_abs_pos_embed(
    pos: &[f32],
    dim: usize,
    old: [usize; 2],
    new: [usize; 2],
    num_prefix: usize,
) -> Vec<f32> {
    assert_eq!(
        pos.len(),
        (num_prefix + old[0] * old[1]) * dim,
        "pos_embed length for a {old:?} grid with {num_prefix} prefix rows of width {dim}"
    );
    let (prefix, grid) = pos.split_at(num_prefix * dim);
    let mut grid = grid.to_vec();
    let mut shape = [old[0], old[1], dim];
    if new[1] != old[1] {
        grid = resize_axis(&grid, shape, 1, new[1]);
        shape[1] = new[1];
    }
    if new[0] != old[0] {
        grid = resize_axis(&grid, shape, 0, new[0]);
    }
    let mut out = prefix.to_vec();
    out.extend(grid);
    out
}

/// The patch embedding: a convolution with kernel = stride = patch size, flattened row-major.
#[derive(Module, Debug)]
pub struct PatchEmbed<B: Backend> {
    proj: QConv2d<B>,
}

impl<B: Backend> PatchEmbed<B> {
    /// `[batch, c, h, w]` → tokens `[batch, (h/p)·(w/p), dim]`, row-major over the patch grid.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 3> {
        let y = self.proj.forward(x);
        let [b, d, gh, gw] = y.dims();
        y.reshape([b, d, gh * gw]).swap_dims(1, 2)
    }
}

/// Multi-head self-attention with a fused `qkv` projection.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    qkv: QLinear<B>,
    proj: QLinear<B>,
    matmul_qk: QMatMul,
    matmul_av: QMatMul,
    #[module(skip)]
    num_heads: usize,
    /// The `vitq-attention` strategy of float mode (`None`: the matmul layers' path).
    #[module(skip)]
    strategy: Option<vitq_attention::Strategy>,
}

impl<B: Backend> Attention<B> {
    /// `[batch, tokens, dim]` → `[batch, tokens, dim]` (the `proj` output).
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, n, _] = x.dims();
        let c = self.proj.d_out();
        let h = self.num_heads;
        let hd = c / h;
        let qkv = self.qkv.forward(x);
        // timm: reshape(B, N, 3, H, hd): q, k, v are consecutive blocks of `c` channels.
        let part = |i: usize| {
            qkv.clone()
                .narrow(2, i * c, c)
                .reshape([b, n, h, hd])
                .swap_dims(1, 2)
        };
        let float = matches!(self.matmul_qk.quant.mode(), Mode::Float)
            && matches!(self.matmul_av.quant.mode(), Mode::Float);
        let scale = vitq_attention::default_scale(hd);
        let merged = |out: Tensor<B, 4>| out.swap_dims(1, 2).reshape([b, n, c]);
        let fused = match self.strategy {
            // `attention_trusted` skips the NaN scan (a device-to-host read per call); NaN flows
            // through as in timm. An error (a strategy the backend cannot run) falls back to the
            // layers' path, which computes the same attention.
            Some(strategy) if float => {
                vitq_attention::attention_trusted(part(0), part(1), part(2), scale, None, strategy)
                    .ok()
                    .map(merged)
            }
            // The layers' path in float mode on the host: the same products without per-head copies.
            None if float => vitq_core::host::attention_packed(&qkv, h, scale),
            _ => None,
        };
        let out = fused.unwrap_or_else(|| {
            let q = part(0).mul_scalar((hd as f64).powf(-0.5));
            let attn = softmax(self.matmul_qk.forward(q, part(1).swap_dims(2, 3)), 3);
            merged(self.matmul_av.forward(attn, part(2)))
        });
        self.proj.forward(out)
    }
}

/// The MLP: `fc2(gelu(fc1(x)))` with exact (erf) GELU.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    fc1: QLinear<B>,
    fc2: QLinear<B>,
}

impl<B: Backend> Mlp<B> {
    /// `[batch, tokens, dim]` → `[batch, tokens, dim]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        // The erf form (`0.5·x·(1 + erf(x/√2))`), as PyTorch's `nn.GELU()`; vectorized on the host.
        self.fc2.forward(gelu(self.fc1.forward(x)))
    }
}

/// Per-channel layer-scale `x · gamma`.
#[derive(Module, Debug)]
pub struct LayerScale<B: Backend> {
    gamma: Param<Tensor<B, 1>>,
}

impl<B: Backend> LayerScale<B> {
    /// `[batch, tokens, dim]` scaled per channel.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [d] = self.gamma.dims();
        x * self.gamma.val().reshape([1, 1, d])
    }
}

/// One pre-norm transformer block.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    norm1: LayerNorm<B>,
    attn: Attention<B>,
    ls1: Option<LayerScale<B>>,
    norm2: LayerNorm<B>,
    mlp: Mlp<B>,
    ls2: Option<LayerScale<B>>,
}

impl<B: Backend> Block<B> {
    /// `x + ls1(attn(norm1(x)))`, then `x + ls2(mlp(norm2(x)))`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = x.clone() + self.attn_branch(x);
        let m = self.mlp.forward(self.norm2.forward(x.clone()));
        let m = match &self.ls2 {
            Some(ls) => ls.forward(m),
            None => m,
        };
        x + m
    }

    /// What the attention half adds to the residual stream: `ls1(attn(norm1(x)))` (timm's
    /// `blocks[i].ls1` output; `blocks[i].attn` output when there is no layer-scale).
    pub fn attn_branch(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let a = self.attn.forward(self.norm1.forward(x));
        match &self.ls1 {
            Some(ls) => ls.forward(a),
            None => a,
        }
    }
}

/// A Vision Transformer (inference).
#[derive(Module, Debug)]
pub struct ViT<B: Backend> {
    patch_embed: PatchEmbed<B>,
    /// `[1, 1, dim]`.
    cls_token: Param<Tensor<B, 3>>,
    /// `[1, (1 +) gh·gw, dim]` on the checkpoint's grid `pos_grid`.
    pos_embed: Param<Tensor<B, 3>>,
    blocks: Vec<Block<B>>,
    norm: Option<LayerNorm<B>>,
    fc_norm: Option<LayerNorm<B>>,
    head: Option<QLinear<B>>,
    /// The checkpoint's patch grid `[gh, gw]`.
    #[module(skip)]
    pos_grid: [usize; 2],
    /// `pos_embed` has a class-token row (timm `no_embed_class=False`).
    #[module(skip)]
    pos_embed_cls: bool,
    #[module(skip)]
    patch_size: usize,
    #[module(skip)]
    in_chans: usize,
    #[module(skip)]
    pooling: Pooling,
}

fn tensor<B: Backend, const D: usize>(
    data: Vec<f32>,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(data, shape), device)
}

fn layer_norm<B: Backend>(
    w: &mut WeightMap,
    key: &str,
    dim: usize,
    eps: f64,
    device: &B::Device,
) -> LayerNorm<B> {
    let mut ln = LayerNormConfig::new(dim).with_epsilon(eps).init(device);
    ln.gamma = Param::from_tensor(w.take(&format!("{key}.weight"), [dim], device));
    ln.beta = Some(Param::from_tensor(w.take(
        &format!("{key}.bias"),
        [dim],
        device,
    )));
    ln
}

fn linear<B: Backend>(
    w: &mut WeightMap,
    key: &str,
    name: String,
    [out, inp]: [usize; 2],
    device: &B::Device,
) -> QLinear<B> {
    QLinear::from_torch(
        name,
        w.take(&format!("{key}.weight"), [out, inp], device),
        Some(w.take(&format!("{key}.bias"), [out], device)),
    )
}

impl<B: Backend> ViT<B> {
    /// Builds the model from a checkpoint in timm or Hugging Face naming (detected from the keys; see
    /// the module docs); every missing, unexpected or misshapen key is reported in one
    /// [`Error::Keys`]. The `pos_embed` grid is taken from the checkpoint (square, `1 + g²` rows, or
    /// `g²` for timm's `no_embed_class`), whatever `config.img_size` says.
    pub fn from_weights(config: &ViTConfig, mut w: WeightMap, device: &B::Device) -> Result<Self> {
        let naming = Naming::detect(&w);
        let model = Self::build(config, &naming, &mut w, device);
        w.finish(&config.name)?;
        Ok(model)
    }

    /// The model with every parameter zero and a `pos_embed` of `pos_embed_shape` (to be filled from a
    /// quantized file).
    pub(crate) fn skeleton(
        config: &ViTConfig,
        pos_embed_shape: &[usize],
        device: &B::Device,
    ) -> Self {
        let mut w = WeightMap::empty();
        w.insert_zeros("pos_embed", pos_embed_shape);
        Self::build(config, &Naming::Timm, &mut w, device)
    }

    fn build(config: &ViTConfig, naming: &Naming, w: &mut WeightMap, device: &B::Device) -> Self {
        let d = config.embed_dim;
        let p = config.patch_size;
        let eps = config.ln_eps;
        for key in naming.ignored() {
            if let Some(shape) = w.shape(&key).map(<[usize]>::to_vec) {
                w.take_vec(&key, &shape);
            }
        }
        let proj = naming.patch_proj();
        let patch_embed = PatchEmbed {
            proj: QConv2d::new(
                "patch_embed.proj",
                w.take(
                    &format!("{proj}.weight"),
                    [d, config.in_chans, p, p],
                    device,
                ),
                Some(w.take(&format!("{proj}.bias"), [d], device)),
                p,
                0,
            ),
        };
        let cls_token = Param::from_tensor(w.take(&naming.cls_token(), [1, 1, d], device));
        let pos_key = naming.pos_embed();
        let g0 = config.img_size / p.max(1);
        let (grid, pos_embed_cls) = match w.shape(&pos_key) {
            Some(&[1, n, dd]) if dd == d => {
                pos_grid(n, naming.allows_no_embed_class()).unwrap_or((g0, true))
            }
            _ => (g0, true),
        };
        let rows = usize::from(pos_embed_cls) + grid * grid;
        let pos_embed = Param::from_tensor(w.take(&pos_key, [1, rows, d], device));

        let blocks = (0..config.depth)
            .map(|i| {
                let qkv_key = naming.qkv(i);
                let qkv_name = format!("blocks.{i}.attn.qkv");
                let qkv = match naming {
                    Naming::Timm => QLinear::from_torch(
                        qkv_name,
                        w.take(&format!("{qkv_key}.weight"), [3 * d, d], device),
                        config
                            .qkv_bias
                            .then(|| w.take(&format!("{qkv_key}.bias"), [3 * d], device)),
                    ),
                    _ => {
                        let mut weight = Vec::with_capacity(3 * d * d);
                        let mut bias = Vec::with_capacity(3 * d);
                        for part in ["query", "key", "value"] {
                            weight.extend(w.take_vec(&format!("{qkv_key}.{part}.weight"), &[d, d]));
                            if config.qkv_bias {
                                bias.extend(w.take_vec(&format!("{qkv_key}.{part}.bias"), &[d]));
                            }
                        }
                        QLinear::from_torch(
                            qkv_name,
                            tensor(weight, [3 * d, d], device),
                            config.qkv_bias.then(|| tensor(bias, [3 * d], device)),
                        )
                    }
                };
                let ls = |w: &mut WeightMap, which: usize| {
                    config.layer_scale.then(|| {
                        let key = naming.ls(w, i, which);
                        LayerScale {
                            gamma: Param::from_tensor(w.take(&key, [d], device)),
                        }
                    })
                };
                let prefix = format!("blocks.{i}");
                Block {
                    norm1: layer_norm(w, &naming.norm1(i), d, eps, device),
                    attn: Attention {
                        qkv,
                        proj: linear(
                            w,
                            &naming.proj(i),
                            format!("{prefix}.attn.proj"),
                            [d, d],
                            device,
                        ),
                        matmul_qk: QMatMul::new(format!("{prefix}.attn.matmul_qk")),
                        matmul_av: QMatMul::new(format!("{prefix}.attn.matmul_av")),
                        num_heads: config.num_heads,
                        strategy: config.attention.strategy(config.quantized_attention),
                    },
                    ls1: ls(w, 1),
                    norm2: layer_norm(w, &naming.norm2(i), d, eps, device),
                    mlp: Mlp {
                        fc1: linear(
                            w,
                            &naming.fc1(i),
                            format!("{prefix}.mlp.fc1"),
                            [config.mlp_dim, d],
                            device,
                        ),
                        fc2: linear(
                            w,
                            &naming.fc2(i),
                            format!("{prefix}.mlp.fc2"),
                            [d, config.mlp_dim],
                            device,
                        ),
                    },
                    ls2: ls(w, 2),
                }
            })
            .collect();
        let (norm_key, fc_norm_key) = naming.final_norms(config.pooling);
        let norm = norm_key.map(|k| layer_norm(w, &k, d, eps, device));
        let fc_norm = fc_norm_key.map(|k| layer_norm(w, &k, d, eps, device));
        let head = (config.num_classes > 0).then(|| {
            linear(
                w,
                &naming.head(),
                "head".into(),
                [config.num_classes, d],
                device,
            )
        });
        Self {
            patch_embed,
            cls_token,
            pos_embed,
            blocks,
            norm,
            fc_norm,
            head,
            pos_grid: [grid, grid],
            pos_embed_cls,
            patch_size: p,
            in_chans: config.in_chans,
            pooling: config.pooling,
        }
    }

    /// The blocks, in order.
    pub fn blocks(&self) -> &[Block<B>] {
        &self.blocks
    }

    /// The checkpoint's patch grid `[gh, gw]` (the `pos_embed` as stored).
    pub fn pos_grid(&self) -> [usize; 2] {
        self.pos_grid
    }

    /// Checks an input shape: `[batch ≥ 1, in_chans, h, w]` with `h`, `w` positive multiples of the
    /// patch size; otherwise [`Error::Shape`].
    pub fn check_input(&self, dims: &[usize]) -> Result<()> {
        let p = self.patch_size;
        let ok = matches!(*dims, [b, c, h, w]
            if b > 0 && c == self.in_chans && h >= p && w >= p && h.is_multiple_of(p) && w.is_multiple_of(p));
        if ok {
            Ok(())
        } else {
            Err(Error::Shape {
                what: "ViT input".into(),
                expected: format!(
                    "[N, {}, H, W] with H and W positive multiples of the patch size {p}",
                    self.in_chans
                ),
                got: dims.to_vec(),
            })
        }
    }

    /// [`ViT::forward`] after [`ViT::check_input`].
    pub fn try_forward(&self, x: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        self.check_input(&x.dims())?;
        Ok(self.forward(x))
    }

    /// Logits `[batch, classes]` (pooled features `[batch, dim]` for a backbone) of a normalized image
    /// batch `[batch, in_chans, h, w]`. The shape must be valid (see [`ViT::check_input`]; a size that
    /// is not a multiple of the patch size silently drops the remainder, as a strided convolution
    /// does); [`ViT::try_forward`] checks it.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward_head(self.forward_features(x))
    }

    /// All tokens after the last block and the final norm, `[batch, 1 + patches, dim]` (timm's
    /// `forward_features`, Hugging Face's `last_hidden_state`). With timm [`Pooling::Mean`] there is
    /// no norm here (it is `fc_norm`, after pooling).
    pub fn forward_features(&self, x: Tensor<B, 4>) -> Tensor<B, 3> {
        let mut x = self.embed(x);
        for block in &self.blocks {
            x = block.forward(x);
        }
        match &self.norm {
            Some(norm) => norm.forward(x),
            None => x,
        }
    }

    /// Pooling, `fc_norm` and head on the tokens of [`ViT::forward_features`]: `[batch, classes]`, or
    /// the pooled features `[batch, dim]` without a head.
    pub fn forward_head(&self, tokens: Tensor<B, 3>) -> Tensor<B, 2> {
        let [b, n, d] = tokens.dims();
        let pooled = match self.pooling {
            Pooling::Cls => tokens.narrow(1, 0, 1).reshape([b, d]),
            Pooling::Mean => tokens.narrow(1, 1, n - 1).mean_dim(1).reshape([b, d]),
        };
        let pooled = match &self.fc_norm {
            Some(norm) => norm.forward(pooled),
            None => pooled,
        };
        match &self.head {
            Some(head) => head.forward(pooled),
            None => pooled,
        }
    }

    /// The patch embedding alone: `[batch, c, h, w]` → `[batch, (h/p)·(w/p), dim]` (timm's
    /// `patch_embed` output, flattened row-major).
    pub fn patch_tokens(&self, x: Tensor<B, 4>) -> Tensor<B, 3> {
        self.patch_embed.forward(x)
    }

    /// The input of the first block: the class token prepended to the patch tokens, plus the position
    /// embedding resampled to the input's grid (timm's `pos_drop` output), `[batch, 1 + patches, dim]`.
    pub fn embed(&self, x: Tensor<B, 4>) -> Tensor<B, 3> {
        let [b, _, h, w] = x.dims();
        let p = self.patch_size;
        let patches = self.patch_embed.forward(x);
        let pos = self.pos_embed([h / p, w / p]);
        let cls = self.cls_token.val().repeat_dim(0, b);
        if self.pos_embed_cls {
            Tensor::cat(vec![cls, patches], 1) + pos
        } else {
            Tensor::cat(vec![cls, patches + pos], 1)
        }
    }

    /// Shape of the stored `pos_embed` parameter.
    pub fn pos_embed_shape(&self) -> [usize; 3] {
        self.pos_embed.dims()
    }

    /// The position embedding for a patch grid `[gh, gw]`: `[1, 1 + gh·gw, dim]` (`[1, gh·gw, dim]` for
    /// a timm `no_embed_class` checkpoint). The stored one if the grid is the checkpoint's, otherwise
    /// resampled on the host with [`resample_abs_pos_embed`] (the class-token row unchanged).
    pub fn pos_embed(&self, grid: [usize; 2]) -> Tensor<B, 3> {
        let pos = self.pos_embed.val();
        if grid == self.pos_grid {
            return pos;
        }
        let [_, _, d] = pos.dims();
        let device = pos.device();
        let prefix = usize::from(self.pos_embed_cls);
        // `iter` converts from any float dtype and cannot fail.
        let host: Vec<f32> = pos.into_data().iter::<f32>().collect();
        let out = resample_abs_pos_embed(&host, d, self.pos_grid, grid, prefix);
        tensor(out, [1, prefix + grid[0] * grid[1], d], &device)
    }
}

impl<B: Backend> vitq_core::ptq::Quantizable<B> for ViT<B> {
    fn layers_mut(&mut self) -> Vec<LayerMut<'_, B>> {
        let mut out = vec![LayerMut::Conv(&mut self.patch_embed.proj)];
        for b in &mut self.blocks {
            out.push(LayerMut::Linear(&mut b.attn.qkv));
            out.push(LayerMut::MatMul(&mut b.attn.matmul_qk));
            out.push(LayerMut::MatMul(&mut b.attn.matmul_av));
            out.push(LayerMut::Linear(&mut b.attn.proj));
            out.push(LayerMut::Linear(&mut b.mlp.fc1));
            out.push(LayerMut::Linear(&mut b.mlp.fc2));
        }
        out.extend(self.head.as_mut().map(LayerMut::Linear));
        out
    }

    fn layer_states(&self) -> Vec<(&str, &LayerState)> {
        let lin = QLinear::named_state;
        let mm = QMatMul::named_state;
        let mut out = vec![self.patch_embed.proj.named_state()];
        for b in &self.blocks {
            let (a, m) = (&b.attn, &b.mlp);
            out.extend([
                lin(&a.qkv),
                mm(&a.matmul_qk),
                mm(&a.matmul_av),
                lin(&a.proj),
                lin(&m.fc1),
                lin(&m.fc2),
            ]);
        }
        out.extend(self.head.as_ref().map(lin));
        out
    }

    fn calibration_step(&self, batch: Tensor<B, 4>) -> vitq_core::Result<()> {
        let _ = self.forward(batch);
        Ok(())
    }
}
