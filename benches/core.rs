//! Quantize, dequantize and pack on a ViT-B/16 MLP weight (fc1: 3072 × 768, 2.36 M values).
//! Throughput is reported in bytes of f32 input (quantize, pack: codes) per second.
//!
//! `cargo bench -p vitq-benches --bench core`
//!
//! Also: the W8A8 integer linear and convolution layers against f32 on ViT-B/16 and ResNet-20 shapes.

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use vitq_core::synth::Rng;
use vitq_core::uniform::{self, QuantParams};
use vitq_core::{BitWidth, Granularity, QuantSpec, QuantizedTensor, Scheme, pack};

const ROWS: usize = 3072;
const COLS: usize = 768;

fn bench(c: &mut Criterion) {
    let device = Default::default();
    let data: Vec<f32> = Rng::new(1)
        .gaussian_vec(ROWS * COLS)
        .iter()
        .map(|v| v * 0.02)
        .collect();
    let x = Tensor::<Flex, 2>::from_data(TensorData::new(data.clone(), [ROWS, COLS]), &device);
    let f32_bytes = (4 * ROWS * COLS) as u64;

    let mut g = c.benchmark_group("vit_b16_fc1_3072x768");
    g.sample_size(20);
    g.throughput(Throughput::Bytes(f32_bytes));
    for bits in [8, 4] {
        let spec =
            QuantSpec::new(bits, Scheme::Symmetric, Granularity::PerChannel { axis: 0 }).unwrap();
        let p = QuantParams::calibrate(&data, &[ROWS, COLS], &spec).unwrap();
        g.bench_function(format!("quantize_tensor_int{bits}_per_channel"), |b| {
            b.iter(|| {
                uniform::quantize_tensor(black_box(x.clone()), &p)
                    .unwrap()
                    .into_data()
            })
        });
        g.bench_function(format!("quantize_ref_int{bits}_per_channel"), |b| {
            b.iter(|| uniform::quantize_ref(black_box(&data), &p).unwrap())
        });
        let codes = uniform::quantize_tensor(x.clone(), &p).unwrap();
        g.bench_function(format!("dequantize_tensor_int{bits}_per_channel"), |b| {
            b.iter(|| {
                uniform::dequantize_tensor(black_box(codes.clone()), &p)
                    .unwrap()
                    .into_data()
            })
        });
        let q = QuantizedTensor::from_tensor(&x, &spec).unwrap();
        g.bench_function(format!("quantized_tensor_to_tensor_int{bits}"), |b| {
            b.iter(|| q.to_tensor::<Flex, 2>(&device).unwrap().into_data())
        });
    }
    g.bench_function("calibrate_minmax_per_channel", |b| {
        let spec =
            QuantSpec::new(8, Scheme::Symmetric, Granularity::PerChannel { axis: 0 }).unwrap();
        b.iter(|| QuantParams::calibrate(black_box(&data), &[ROWS, COLS], &spec).unwrap())
    });
    g.bench_function("nf4_quantize_double", |b| {
        b.iter(|| vitq_core::nf4::quantize(black_box(&data), 64, true).unwrap())
    });
    g.finish();

    let mut g = c.benchmark_group("pack_3072x768");
    g.sample_size(20);
    for bits in [2u32, 3, 4, 6, 8] {
        let b = BitWidth::new(bits).unwrap();
        let codes: Vec<u8> = (0..ROWS * COLS).map(|i| (i % (1 << bits)) as u8).collect();
        let packed = pack::pack(&codes, b).unwrap();
        g.throughput(Throughput::Bytes((ROWS * COLS) as u64));
        g.bench_function(format!("pack_int{bits}"), |bch| {
            bch.iter(|| pack::pack(black_box(&codes), b).unwrap())
        });
        g.bench_function(format!("unpack_int{bits}"), |bch| {
            bch.iter(|| pack::unpack(black_box(&packed), ROWS * COLS, b).unwrap())
        });
    }
    g.finish();
}

/// A W8A8 linear layer at ViT-B/16 fc1 shapes (197 tokens × 768 → 3072) in integers (activation
/// quantization, i8 GEMM, rescale included) against the f32 layer on burn's Flex backend.
fn bench_w8a8_linear(c: &mut Criterion) {
    use vitq_core::kernels::{IntWeight, Kernel, gemm_i8_with};
    use vitq_core::layers::{ActQuant, QLinear};
    use vitq_core::{Granularity, QuantSpec, QuantizedTensor, Scheme};
    let (m, d_in, d_out) = (197, 768, 3072);
    let device = Default::default();
    let mut rng = Rng::new(2);
    let w: Vec<f32> = (0..d_out * d_in).map(|_| rng.gaussian() * 0.02).collect();
    let x: Vec<f32> = rng.gaussian_vec(m * d_in);
    let f32_layer = QLinear::<Flex>::from_torch(
        "fc1",
        Tensor::from_data(TensorData::new(w.clone(), [d_out, d_in]), &device),
        None,
    );
    let xt = Tensor::<Flex, 2>::from_data(TensorData::new(x.clone(), [m, d_in]), &device);
    let wspec = QuantSpec::new(8, Scheme::Symmetric, Granularity::PerChannel { axis: 0 }).unwrap();
    let aspec = QuantSpec::new(8, Scheme::Asymmetric, Granularity::PerTensor).unwrap();
    let qw = QuantizedTensor::quantize(&w, &[d_out, d_in], &wspec).unwrap();
    let codes: Vec<i8> = qw.codes().unwrap().into_iter().map(|c| c as i8).collect();
    let mut int8 = QLinear::<Flex>::from_torch(
        "fc1",
        Tensor::from_data(TensorData::new(w.clone(), [d_out, d_in]), &device),
        None,
    );
    // Dynamic activation quantization: the per-batch min-max pass is part of the measured time.
    let act = ActQuant {
        spec: aspec,
        params: None,
    };
    int8.set_quantized(Some(qw), Some(act)).unwrap();
    let xq: Vec<i8> = x
        .iter()
        .map(|v| (v * 30.0).clamp(-128.0, 127.0) as i8)
        .collect();

    let mut g = c.benchmark_group("linear_vit_b16_fc1_197x768x3072");
    g.sample_size(20);
    g.throughput(Throughput::Elements((m * d_in * d_out) as u64));
    g.bench_function("f32_flex", |b| {
        b.iter(|| f32_layer.forward(black_box(xt.clone())).into_data())
    });
    g.bench_function("w8a8_int", |b| {
        b.iter(|| int8.forward(black_box(xt.clone())).into_data())
    });
    // Weight-only layers: float activations, weights dequantized tile by tile inside the matmul.
    let weight_only: Vec<(&str, QLinear<Flex>)> = [
        ("w8_weight_only", wspec),
        (
            "w4_weight_only",
            QuantSpec::new(4, Scheme::Symmetric, Granularity::PerChannel { axis: 0 }).unwrap(),
        ),
        ("nf4_weight_only", QuantSpec::nf4(true)),
    ]
    .into_iter()
    .map(|(name, spec)| {
        let mut l = QLinear::<Flex>::from_torch(
            "fc1",
            Tensor::from_data(TensorData::new(w.clone(), [d_out, d_in]), &device),
            None,
        );
        let q = QuantizedTensor::quantize(&w, &[d_out, d_in], &spec).unwrap();
        l.set_quantized(Some(q), None).unwrap();
        (name, l)
    })
    .collect();
    for (name, layer) in &weight_only {
        g.bench_function(*name, |b| {
            b.iter(|| layer.forward(black_box(xt.clone())).into_data())
        });
    }
    for kernel in Kernel::ALL.into_iter().filter(|k| k.is_available()) {
        g.bench_function(format!("gemm_i8_{kernel:?}"), |b| {
            b.iter(|| gemm_i8_with(kernel, black_box(&xq), &codes, m, d_out, d_in).unwrap())
        });
        // The weight laid out for the kernel once, as the quantized layers hold it.
        let w = IntWeight::new(codes.clone(), vec![1.0; d_out], d_out, d_in)
            .unwrap()
            .with_kernel(kernel)
            .unwrap();
        g.bench_function(format!("gemm_i8_{kernel:?}_prepacked"), |b| {
            b.iter(|| w.gemm(black_box(&xq), m).unwrap())
        });
    }
    g.finish();

    // One token (m = 1): the weight read dominates, so the codes' smaller size can show.
    let x1 = xt.clone().slice([0..1, 0..d_in]);
    let mut g = c.benchmark_group("linear_vit_b16_fc1_1x768x3072");
    g.sample_size(30);
    g.throughput(Throughput::Elements((d_in * d_out) as u64));
    g.bench_function("f32_flex", |b| {
        b.iter(|| f32_layer.forward(black_box(x1.clone())).into_data())
    });
    for (name, layer) in &weight_only {
        g.bench_function(*name, |b| {
            b.iter(|| layer.forward(black_box(x1.clone())).into_data())
        });
    }
    g.finish();
}

/// ResNet-20's 3×3 convolutions (CIFAR-10, batch 100, padding 1): f32 against W8A8 with static
/// activation parameters, as `vitq demo`'s w8a8 row runs them.
fn bench_w8a8_conv(c: &mut Criterion) {
    use vitq_core::layers::{ActQuant, QConv2d};
    let device = Default::default();
    for (name, batch, ch, size) in [
        ("conv_resnet20_layer1_100x16x32x32", 100, 16, 32),
        ("conv_resnet20_layer3_100x64x8x8", 100, 64, 8),
    ] {
        let mut rng = Rng::new(3);
        let w: Vec<f32> = (0..ch * ch * 9).map(|_| rng.gaussian() * 0.1).collect();
        // Post-ReLU inputs, as in ResNet: non-negative.
        let x: Vec<f32> = (0..batch * ch * size * size)
            .map(|_| rng.gaussian().max(0.0))
            .collect();
        let wt =
            || Tensor::<Flex, 4>::from_data(TensorData::new(w.clone(), [ch, ch, 3, 3]), &device);
        let f32_layer = QConv2d::new("conv", wt(), None, 1, 1);
        let mut int8 = QConv2d::new("conv", wt(), None, 1, 1);
        let wspec =
            QuantSpec::new(8, Scheme::Symmetric, Granularity::PerChannel { axis: 0 }).unwrap();
        let aspec = QuantSpec::new(8, Scheme::Asymmetric, Granularity::PerTensor).unwrap();
        let qw = QuantizedTensor::quantize(&w, &[ch, ch, 3, 3], &wspec).unwrap();
        let act = ActQuant {
            spec: aspec,
            params: Some((4.0 / 255.0, 0)),
        };
        int8.set_quantized(Some(qw), Some(act)).unwrap();
        let xt = Tensor::<Flex, 4>::from_data(TensorData::new(x, [batch, ch, size, size]), &device);
        let mut g = c.benchmark_group(name);
        g.sample_size(20);
        g.throughput(Throughput::Elements(
            (batch * size * size * ch * ch * 9) as u64,
        ));
        g.bench_function("f32", |b| {
            b.iter(|| f32_layer.forward(black_box(xt.clone())).into_data())
        });
        g.bench_function("w8a8_int", |b| {
            b.iter(|| int8.forward(black_box(xt.clone())).into_data())
        });
        g.finish();
    }
}

criterion_group!(benches, bench, bench_w8a8_linear, bench_w8a8_conv);
criterion_main!(benches);
