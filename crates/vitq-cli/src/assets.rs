//! What the binary embeds (vendored in `assets/`, with their licenses and attribution there).

/// The CIFAR-10 ResNet-20 (BSD-2-Clause, `assets/resnet20-cifar10/`).
pub const RESNET20: &[u8] =
    include_bytes!("../../../assets/resnet20-cifar10/resnet20-12fca82f.safetensors");
/// Display name of [`RESNET20`].
pub const RESNET20_NAME: &str = "assets/resnet20-cifar10/resnet20-12fca82f.safetensors (embedded)";
/// The first 1,000 CIFAR-10 test images (`assets/cifar10/`).
pub const CIFAR10_TEST: &[u8] = include_bytes!("../../../assets/cifar10/test_first1000.bin");
/// The first 512 CIFAR-10 training images, for calibration (`assets/cifar10/`).
pub const CIFAR10_CALIB: &[u8] = include_bytes!("../../../assets/cifar10/calib_first512.bin");
