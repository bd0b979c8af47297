//! The burn-tensor quantizer against the reference on real weights: the pretrained CIFAR-10
//! ResNet-20 in `../shared/weights` (skipped, with a message, where that folder is absent).

use std::path::PathBuf;

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};
use vitq_core::metrics::sqnr_db;
use vitq_core::uniform::{self, QuantParams};
use vitq_core::{CalibrationMethod, Granularity, QuantSpec, QuantizedTensor, Scheme};

fn checkpoint() -> Option<Vec<u8>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/weights/resnet20-cifar10/resnet20-12fca82f.safetensors");
    match std::fs::read(&path) {
        Ok(b) => Some(b),
        Err(_) => {
            eprintln!("skipping: {} is absent", path.display());
            None
        }
    }
}

#[test]
fn resnet20_conv_weights_tensor_path_matches_reference() {
    let Some(bytes) = checkpoint() else { return };
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let device = Default::default();
    let mut convs = 0;
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 || view.shape().len() != 4 {
            continue;
        }
        convs += 1;
        let shape = view.shape().to_vec();
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let dims: [usize; 4] = shape.clone().try_into().unwrap();
        for (bits, method) in [(8, CalibrationMethod::MinMax), (4, CalibrationMethod::Mse)] {
            for scheme in [Scheme::Symmetric, Scheme::Asymmetric] {
                let spec = QuantSpec::new(bits, scheme, Granularity::PerChannel { axis: 0 })
                    .unwrap()
                    .with_calibration(method);
                let p = QuantParams::calibrate(&data, &shape, &spec).unwrap();
                let x = Tensor::<Flex, 4>::from_data(TensorData::new(data.clone(), dims), &device);
                let codes: Vec<i32> = uniform::quantize_tensor(x, &p)
                    .unwrap()
                    .into_data()
                    .convert::<i32>()
                    .into_vec()
                    .unwrap();
                assert_eq!(
                    codes,
                    uniform::quantize_ref(&data, &p).unwrap(),
                    "{name} {bits} bits"
                );
                let back = QuantizedTensor::from_codes(&codes, &p)
                    .unwrap()
                    .dequantize()
                    .unwrap();
                let sqnr = sqnr_db(&data, &back);
                // 6.02 dB/bit minus the peak-to-RMS loss of conv filters (≈ 10–14 dB here).
                let floor = if bits == 8 { 33.0 } else { 13.0 };
                assert!(
                    sqnr > floor,
                    "{name} {bits} bits {scheme:?}: SQNR {sqnr:.1} dB"
                );
            }
        }
    }
    assert_eq!(convs, 19, "ResNet-20 has 19 conv layers");
}
