//! Datasets and normalization.

pub mod cifar;
pub mod folder;
pub mod image;

pub use cifar::Cifar10;
pub use folder::{ImageFolder, ImageNetFolder, LabeledImages};
pub use image::{Interpolation, Preprocess, RgbImage};

/// Per-channel normalization `(x - mean) / std` of RGB values in `[0, 1]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalize {
    /// Channel means (R, G, B).
    pub mean: [f32; 3],
    /// Channel standard deviations (R, G, B).
    pub std: [f32; 3],
}

impl Normalize {
    /// ImageNet statistics (timm's `IMAGENET_DEFAULT_MEAN` / `_STD`), also used by the CIFAR ResNet-20 of
    /// `pytorch_resnet_cifar10`.
    pub const IMAGENET: Normalize = Normalize {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };

    /// Mean and std 0.5 (timm's `IMAGENET_INCEPTION_MEAN` / `_STD`, used by the AugReg `vit_*` weights).
    pub const INCEPTION: Normalize = Normalize {
        mean: [0.5; 3],
        std: [0.5; 3],
    };
}
