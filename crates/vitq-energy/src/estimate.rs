//! Per-layer bytes and energy of a [`Network`] under a [`QuantConfig`] and an [`EnergyTable`]:
//! `E = Σ N_MAC · E_MAC(b_w, b_a) + Σ N_mem · E_mem(b)`.
//!
//! For each layer, [`QuantConfig::resolve`] gives the weight and activation specs (`None` = float 32):
//! - **MACs** are priced at [`EnergyTable::mac_pj`] of the weight and activation precisions; for an
//!   attention matmul both operands are activations.
//! - **Weight bytes** are what `vitq-core` stores: packed codes (`⌈n·b/8⌉`) plus 4 bytes per scale and
//!   per zero point (asymmetric) at the spec's granularity, or NF4's block constants — exactly
//!   [`vitq_core::QuantizedTensor::size_in_bytes`]; 4 bytes per element for float weights.
//!   **Bias bytes** are 4 per element (f32, or i32 in an integer pipeline). Both are read once.
//! - **Activation bytes**: the input (both operands of a matmul) is read once at the layer's activation
//!   bit-width, and the output written once at the same width — the output is requantized for the
//!   next layer, as integer pipelines (TFLite, ONNX Runtime QDQ) do; float activations move 32 bits.
//!   Activation scales and zero points (one pair per tensor) are not counted.
//! - **Memory energy** is linear in bits, at the level [`EnergyTable::weights_from`] /
//!   [`EnergyTable::activations_from`] says (DRAM by default).
//!
//! ```
//! use vitq_core::QuantConfig;
//! use vitq_energy::{EnergyReport, EnergyTable, Network};
//!
//! let net = Network::from_preset("resnet20", None)?;
//! let table = EnergyTable::default();
//! let w4a8 = EnergyReport::new(&net, &QuantConfig::preset("w4a8")?, &table)?;
//! let conv = &w4a8.layers[1]; // layer1.0.conv1: 16 → 16, 3×3, at 32×32
//! assert_eq!(conv.name, "layer1.0.conv1");
//! assert_eq!(conv.weight_bytes, 16 * 16 * 9 / 2 + 16 * 4); // 4-bit codes + one f32 scale per channel
//! assert_eq!(conv.act_read_bytes, 16 * 32 * 32); // 8-bit activations
//! let f32 = EnergyReport::float32(&net, &table)?;
//! assert!(w4a8.reduction_from(&f32) > 4.0);
//! # Ok::<(), vitq_energy::Error>(())
//! ```

use serde::Serialize;
use vitq_core::pack::packed_len_bits;
use vitq_core::{Layout, QuantConfig, QuantSpec, Scheme};

use crate::error::{Error, Result};
use crate::network::{Layer, Network, Op};
use crate::table::{EnergyTable, Precision};

/// Bytes, MACs and energy of one layer for one image.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerCost {
    /// Module path.
    pub name: String,
    /// What it computes.
    pub op: Op,
    /// Weight precision (`None` for a matmul of two activations).
    pub weight_precision: Option<Precision>,
    /// Activation precision (inputs read and output written).
    pub activation_precision: Precision,
    /// Multiply-accumulates.
    pub macs: u64,
    /// Weight bytes: codes plus quantization constants (or f32 values).
    pub weight_bytes: u64,
    /// Bias bytes (4 per element).
    pub bias_bytes: u64,
    /// Activation bytes read.
    pub act_read_bytes: u64,
    /// Activation bytes written.
    pub act_write_bytes: u64,
    /// Energy of one MAC, pJ.
    pub mac_pj: f64,
    /// `macs · mac_pj`, pJ.
    pub mac_energy_pj: f64,
    /// Energy of reading the weights and biases, pJ.
    pub weight_energy_pj: f64,
    /// Energy of reading and writing the activations, pJ.
    pub activation_energy_pj: f64,
    /// The layer's total, pJ.
    pub energy_pj: f64,
}

/// Sums over all layers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Totals {
    /// Multiply-accumulates.
    pub macs: u64,
    /// Weight bytes (codes and quantization constants).
    pub weight_bytes: u64,
    /// Bias bytes.
    pub bias_bytes: u64,
    /// Activation bytes read.
    pub act_read_bytes: u64,
    /// Activation bytes written.
    pub act_write_bytes: u64,
    /// Arithmetic energy, pJ.
    pub mac_energy_pj: f64,
    /// Weight and bias traffic energy, pJ.
    pub weight_energy_pj: f64,
    /// Activation traffic energy, pJ.
    pub activation_energy_pj: f64,
    /// Total energy, pJ.
    pub energy_pj: f64,
}

/// The energy estimate of one network under one config and table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EnergyReport {
    /// Model name.
    pub model: String,
    /// Input `[height, width]`.
    pub input: [usize; 2],
    /// The config's name, if it has one.
    pub config: Option<String>,
    /// The table's name.
    pub table: String,
    /// Per layer, in execution order.
    pub layers: Vec<LayerCost>,
    /// Sums.
    pub totals: Totals,
}

/// Bytes a weight of `shape` takes when quantized with `spec`, as `vitq-core` stores it
/// ([`vitq_core::QuantizedTensor::size_in_bytes`]): packed codes plus scales (and zero points for the
/// asymmetric scheme), or NF4 codes plus their block constants.
pub fn quantized_weight_bytes(shape: &[usize], spec: &QuantSpec) -> vitq_core::Result<u64> {
    spec.validate()?;
    let layout = Layout::new(shape, spec.granularity)?;
    let codes = packed_len_bits(layout.numel, spec.bits.get());
    let slices = layout.num_slices();
    let constants = match spec.scheme {
        Scheme::Symmetric => 4 * slices,
        Scheme::Asymmetric => 8 * slices,
        Scheme::Nf4 {
            double_quant: false,
        } => 4 * slices,
        // int8 codes of the absmax constants, one f32 scale per block of them, one f32 offset.
        Scheme::Nf4 { double_quant: true } => {
            slices + 4 * slices.div_ceil(vitq_core::nf4::DOUBLE_QUANT_BLOCK) + 4
        }
        other => {
            return Err(vitq_core::Error::Unsupported(format!(
                "weight storage of scheme {other:?}"
            )));
        }
    };
    Ok((codes + constants) as u64)
}

/// `⌈n·bits/8⌉` with overflow checked.
fn bytes_of(layer: &str, what: &str, n: u64, bits: u32) -> Result<u64> {
    n.checked_mul(u64::from(bits))
        .map(|b| b.div_ceil(8))
        .ok_or_else(|| Error::Overflow {
            layer: layer.into(),
            what: what.into(),
        })
}

fn layer_cost(layer: &Layer, config: &QuantConfig, table: &EnergyTable) -> Result<LayerCost> {
    let n = layer.counts()?;
    let q = config.resolve(&layer.name);
    let act = Precision::from_spec(q.activations.as_ref());
    let name = layer.name.as_str();
    let (weight_precision, weight_bytes) = match layer.weight_shape() {
        None => (None, 0),
        Some(shape) => match &q.weights {
            None => (
                Some(Precision::F32),
                bytes_of(name, "weight bytes", n.weights, 32)?,
            ),
            Some(spec) => (
                Some(Precision::from_spec(Some(spec))),
                quantized_weight_bytes(&shape, spec).map_err(|source| Error::Layer {
                    layer: layer.name.clone(),
                    source,
                })?,
            ),
        },
    };
    let mac_pj = table.mac_pj(weight_precision.unwrap_or(act), act)?;
    let bias_bytes = bytes_of(name, "bias bytes", n.biases, 32)?;
    let act_read_bytes = bytes_of(name, "activation bytes read", n.inputs, act.bits())?;
    let act_write_bytes = bytes_of(name, "activation bytes written", n.outputs, act.bits())?;
    let mac_energy_pj = n.macs as f64 * mac_pj;
    let weight_energy_pj =
        8.0 * (weight_bytes as f64 + bias_bytes as f64) * table.pj_per_bit(table.weights_from);
    let activation_energy_pj = 8.0
        * (act_read_bytes as f64 + act_write_bytes as f64)
        * table.pj_per_bit(table.activations_from);
    Ok(LayerCost {
        name: layer.name.clone(),
        op: layer.op.clone(),
        weight_precision,
        activation_precision: act,
        macs: n.macs,
        weight_bytes,
        bias_bytes,
        act_read_bytes,
        act_write_bytes,
        mac_pj,
        mac_energy_pj,
        weight_energy_pj,
        activation_energy_pj,
        energy_pj: mac_energy_pj + weight_energy_pj + activation_energy_pj,
    })
}

impl EnergyReport {
    /// Estimates `network` under `config` with `table`. Errors: an invalid table, a config whose
    /// override patterns match no layer of the network (a typo; see
    /// [`QuantConfig::check_layers`]), a granularity that does not fit a layer's weight, or a count
    /// that overflows.
    pub fn new(network: &Network, config: &QuantConfig, table: &EnergyTable) -> Result<Self> {
        table.validate()?;
        config.validate()?;
        config.check_layers(&network.layer_names())?;
        let layers = network
            .layers
            .iter()
            .map(|l| layer_cost(l, config, table))
            .collect::<Result<Vec<_>>>()?;
        let mut totals = Totals::default();
        for l in &layers {
            let overflow = || Error::Overflow {
                layer: l.name.clone(),
                what: "network totals".into(),
            };
            let add = |a: u64, b: u64| a.checked_add(b).ok_or_else(overflow);
            totals.macs = add(totals.macs, l.macs)?;
            totals.weight_bytes = add(totals.weight_bytes, l.weight_bytes)?;
            totals.bias_bytes = add(totals.bias_bytes, l.bias_bytes)?;
            totals.act_read_bytes = add(totals.act_read_bytes, l.act_read_bytes)?;
            totals.act_write_bytes = add(totals.act_write_bytes, l.act_write_bytes)?;
            totals.mac_energy_pj += l.mac_energy_pj;
            totals.weight_energy_pj += l.weight_energy_pj;
            totals.activation_energy_pj += l.activation_energy_pj;
            totals.energy_pj += l.energy_pj;
        }
        Ok(Self {
            model: network.name.clone(),
            input: network.input,
            config: config.name.clone(),
            table: table.name.clone(),
            layers,
            totals,
        })
    }

    /// The same network with nothing quantized (weights and activations in float 32).
    pub fn float32(network: &Network, table: &EnergyTable) -> Result<Self> {
        let mut none = QuantConfig::new(None, None);
        none.name = Some("f32".into());
        Self::new(network, &none, table)
    }

    /// How many times less energy this takes than `baseline`: `E_baseline / E_self` (infinite if
    /// this takes none).
    pub fn reduction_from(&self, baseline: &EnergyReport) -> f64 {
        baseline.totals.energy_pj / self.totals.energy_pj
    }

    /// Total energy, pJ.
    pub fn energy_pj(&self) -> f64 {
        self.totals.energy_pj
    }
}

/// [`EnergyReport::new`].
pub fn estimate(
    network: &Network,
    config: &QuantConfig,
    table: &EnergyTable,
) -> Result<EnergyReport> {
    EnergyReport::new(network, config, table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vitq_core::{Granularity, LayerOverride, QuantizedTensor};

    #[test]
    fn weight_bytes_equal_what_vitq_core_stores() {
        let mut rng = vitq_core::synth::Rng::new(7);
        let specs = [
            QuantSpec::new(8, Scheme::Symmetric, Granularity::PerChannel { axis: 0 }).unwrap(),
            QuantSpec::new(4, Scheme::Asymmetric, Granularity::PerTensor).unwrap(),
            QuantSpec::new(
                3,
                Scheme::Symmetric,
                Granularity::PerGroup { axis: 1, size: 4 },
            )
            .unwrap(),
            QuantSpec::new(6, Scheme::Asymmetric, Granularity::PerChannel { axis: 0 }).unwrap(),
            QuantSpec::nf4(true),
            QuantSpec::nf4(false),
        ];
        for shape in [vec![24, 8, 3, 3], vec![40, 16]] {
            let n: usize = shape.iter().product();
            let data = rng.gaussian_vec(n);
            for spec in &specs {
                let q = QuantizedTensor::quantize(&data, &shape, spec).unwrap();
                assert_eq!(
                    quantized_weight_bytes(&shape, spec).unwrap(),
                    q.size_in_bytes() as u64,
                    "{shape:?} {spec:?}"
                );
            }
        }
        // NF4 double quantization with more than one block of constants.
        let shape = [300, 128];
        let data = rng.gaussian_vec(300 * 128);
        let spec = QuantSpec::nf4(true);
        let q = QuantizedTensor::quantize(&data, &shape, &spec).unwrap();
        assert_eq!(
            quantized_weight_bytes(&shape, &spec).unwrap(),
            q.size_in_bytes() as u64
        );
    }

    fn small_net() -> Network {
        Network::new(
            "toy",
            [8, 8],
            vec![
                Layer::conv2d("conv", 3, 8, 3, 1, 1, [8, 8], true).unwrap(),
                Layer::matmul("mm", 2, 4, 4, 4),
                Layer::linear("fc", 8, 10, 1, true),
            ],
        )
        .unwrap()
    }

    #[test]
    fn float32_energy_by_hand() {
        let net = small_net();
        let t = EnergyTable::default();
        let r = EnergyReport::float32(&net, &t).unwrap();
        let bit = 1300.0 / 64.0;
        // conv: 8·8·8·27 MACs, 8·27 weights + 8 biases, 3·64 in, 8·64 out, all 32-bit.
        let conv = &r.layers[0];
        let e = 8.0 * 8.0 * 8.0 * 27.0 * 4.6
            + 32.0 * bit * (8.0 * 27.0 + 8.0 + 3.0 * 64.0 + 8.0 * 64.0);
        assert!(
            (conv.energy_pj - e).abs() < 1e-9 * e,
            "{} vs {e}",
            conv.energy_pj
        );
        assert_eq!(conv.weight_precision, Some(Precision::F32));
        // matmul: no weights; reads 2·(16 + 16), writes 2·16.
        let mm = &r.layers[1];
        assert_eq!(
            (mm.weight_bytes, mm.act_read_bytes, mm.act_write_bytes),
            (0, 256, 128)
        );
        assert_eq!(mm.weight_precision, None);
        let sum: f64 = r.layers.iter().map(|l| l.energy_pj).sum();
        assert!((r.energy_pj() - sum).abs() < 1e-9 * sum);
        assert_eq!(r.totals.macs, net.counts().unwrap().macs);
        assert_eq!(r.reduction_from(&r), 1.0);
    }

    #[test]
    fn quantized_layers_use_their_resolved_bits() {
        let net = small_net();
        let t = EnergyTable::default();
        let mut cfg = QuantConfig::preset("w4a8").unwrap();
        cfg.overrides.push(LayerOverride {
            pattern: "fc".into(),
            float: true,
            weights: None,
            activations: None,
        });
        let r = EnergyReport::new(&net, &cfg, &t).unwrap();
        let [conv, mm, fc] = &r.layers[..] else {
            panic!("three layers")
        };
        assert_eq!(conv.weight_precision, Some(Precision::Int(4)));
        assert_eq!(conv.activation_precision, Precision::Int(8));
        assert!((conv.mac_pj - 0.2).abs() < 1e-12);
        assert_eq!(conv.weight_bytes, (8 * 27 / 2 + 8 * 4) as u64);
        assert_eq!(conv.act_read_bytes, 3 * 64);
        assert_eq!(conv.act_write_bytes, 8 * 64);
        // Both operands of the matmul are 8-bit activations.
        assert!((mm.mac_pj - 0.3).abs() < 1e-12);
        assert_eq!(fc.weight_precision, Some(Precision::F32));
        assert_eq!(fc.activation_precision, Precision::F32);
        assert_eq!(fc.weight_bytes, 8 * 10 * 4);
        let f32 = EnergyReport::float32(&net, &t).unwrap();
        assert!(r.reduction_from(&f32) > 1.0);
    }

    #[test]
    fn config_and_table_problems_are_errors() {
        let net = small_net();
        let t = EnergyTable::default();
        let mut cfg = QuantConfig::preset("w8a8").unwrap();
        cfg.overrides.push(LayerOverride {
            pattern: "fcc".into(),
            float: true,
            weights: None,
            activations: None,
        });
        assert!(matches!(
            EnergyReport::new(&net, &cfg, &t),
            Err(Error::Config(vitq_core::Error::UnknownLayer { .. }))
        ));
        // A group size that does not divide the conv's 3 input channels.
        let mut cfg = QuantConfig::preset("w8a8").unwrap();
        cfg.weights = Some(
            QuantSpec::new(
                4,
                Scheme::Symmetric,
                Granularity::PerGroup { axis: 1, size: 2 },
            )
            .unwrap(),
        );
        match EnergyReport::new(&net, &cfg, &t) {
            Err(Error::Layer { layer, .. }) => assert_eq!(layer, "conv"),
            other => panic!("expected a layer error, got {other:?}"),
        }
        let bad = EnergyTable {
            fp32_mult_pj: f64::NAN,
            ..EnergyTable::default()
        };
        assert!(matches!(
            EnergyReport::float32(&net, &bad),
            Err(Error::InvalidTable { .. })
        ));
    }
}
