//! Quantize, dequantize and pack on a ViT-B/16 MLP weight (fc1: 3072 × 768, 2.36 M values).
//! Throughput is reported in bytes of f32 input (quantize, pack: codes) per second.
//!
//! `cargo bench -p vitq-benches --bench core`

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

criterion_group!(benches, bench);
criterion_main!(benches);
