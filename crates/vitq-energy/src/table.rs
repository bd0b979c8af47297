//! The energy table: picojoules per arithmetic operation and per memory access, and the formulas
//! that turn them into the energy of one multiply-accumulate at given bit-widths and of moving one
//! bit.
//!
//! The default ([`EnergyTable::default`]) is Horowitz's 45 nm table (M. Horowitz, "Computing's
//! energy problem (and what we can do about it)", ISSCC 2014, pp. 10–14, Fig. 1.1.9):
//!
//! | operation | pJ | | operation | pJ |
//! |---|---|---|---|---|
//! | 8-bit integer add | 0.03 | | 8-bit integer multiply | 0.2 |
//! | 32-bit integer add | 0.1 | | 32-bit integer multiply | 3.1 |
//! | 16-bit float add | 0.4 | | 16-bit float multiply | 1.1 |
//! | 32-bit float add | 0.9 | | 32-bit float multiply | 3.7 |
//! | 64-bit read, 8 KB SRAM | 10 | | 64-bit DRAM access | 1300–2600 (default **1300**) |
//!
//! The DRAM default is the low end of Horowitz's range because it is the figure the model-compression
//! literature built on this table uses (Han et al., "Learning both weights and connections for
//! efficient neural networks", NeurIPS 2015: 640 pJ per 32-bit DRAM access, from the same source), so
//! results compare with theirs. The upper end makes memory a larger share and moves every config's
//! reduction towards its traffic reduction (ResNet-20 w8a8: 5.14× at 1.3 nJ, 4.59× at 2.6 nJ); see
//! `docs/energy.md`.
//!
//! # Formulas
//! With `p = b_w · b_a` the product of the operand widths:
//! - **integer multiply**: `E_mul(p)` is piecewise linear in `p` through `(0, 0)`,
//!   `(64, int8_mult_pj)` and `(1024, int32_mult_pj)` — the b² law of multiplier energy (an array
//!   multiplier's partial products grow with `b_w · b_a`). Between 0 and 64:
//!   `E_mul = int8_mult_pj · b_w·b_a / 64` (0.2 pJ at w8a8, 0.1 pJ at w4a8, 0.05 pJ at w4a4). The law
//!   predicts 3.2 pJ for a 32-bit multiply from the 8-bit point; Horowitz measured 3.1.
//! - **integer accumulate**: one add of `accumulator_bits` (default 32: vitq's int8 GEMM accumulates
//!   `i8 · i8` products in `i32`), linear in the width through `(0, 0)`, `(8, int8_add_pj)` and
//!   `(32, int32_add_pj)`: 0.1 pJ by default.
//! - **integer MAC** (both operands uniform integers): `E_MAC = E_mul(b_w·b_a) + E_add(accumulator_bits)`:
//!   0.3 pJ at w8a8, 0.2 pJ at w4a8, 0.15 pJ at w4a4.
//! - **float MAC** (either operand float or NF4, which is a codebook decoded to float before the
//!   multiply): `fp32_mult_pj + fp32_add_pj` = 4.6 pJ, or the fp16 pair (1.5 pJ) when one operand is
//!   fp16 and none is fp32.
//! - **memory**: linear in bits, `E_mem(b) = b · E_64 / 64` with `E_64` the 64-bit access energy of the
//!   level the tensor lives in ([`MemoryLevel`]; DRAM by default for weights and activations):
//!   20.3 pJ per bit of DRAM, 0.156 pJ per bit of SRAM.
//!
//! ```
//! use vitq_energy::{EnergyTable, MemoryLevel, Precision};
//!
//! let t = EnergyTable::default();
//! let int8 = t.mac_pj(Precision::Int(8), Precision::Int(8))?;
//! assert!((int8 - 0.3).abs() < 1e-12);
//! assert!((t.mac_pj(Precision::Int(4), Precision::F32)? - 4.6).abs() < 1e-12);
//! assert!((t.pj_per_bit(MemoryLevel::Dram) - 1300.0 / 64.0).abs() < 1e-12);
//!
//! // A user table: only the entries given change, the rest keep their defaults.
//! let mine = EnergyTable::from_toml_str("name = \"hbm\"\ndram_access_64bit_pj = 400.0")?;
//! assert_eq!((mine.dram_access_64bit_pj, mine.int8_mult_pj), (400.0, 0.2));
//! assert!(EnergyTable::from_toml_str("int8_mult_pj = -1.0").is_err());
//! # Ok::<(), vitq_energy::Error>(())
//! ```

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use vitq_core::{QuantSpec, Scheme};

use crate::error::{Error, Result};

/// The table format version this crate reads and writes.
pub const TABLE_VERSION: u32 = 1;

/// Where a tensor lives while the model runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MemoryLevel {
    /// Off-chip DRAM: every byte crosses the DRAM interface once (the default).
    #[default]
    Dram,
    /// On-chip SRAM (Horowitz's 8 KB figure).
    Sram,
}

impl fmt::Display for MemoryLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemoryLevel::Dram => "DRAM",
            MemoryLevel::Sram => "SRAM",
        })
    }
}

/// The number format of one GEMM operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Precision {
    /// A uniform (symmetric or asymmetric) integer code of this many bits.
    Int(u32),
    /// 4-bit NormalFloat: 4-bit codes stored, decoded to float for arithmetic.
    Nf4,
    /// IEEE half precision.
    F16,
    /// IEEE single precision (what `None` in a `QuantConfig` means).
    F32,
}

impl Precision {
    /// The precision a `QuantConfig` spec gives a tensor: `None` is float 32, NF4 is [`Precision::Nf4`],
    /// any other scheme an integer of `spec.bits`.
    pub fn from_spec(spec: Option<&QuantSpec>) -> Self {
        match spec {
            None => Precision::F32,
            Some(s) if matches!(s.scheme, Scheme::Nf4 { .. }) => Precision::Nf4,
            Some(s) => Precision::Int(s.bits.get()),
        }
    }

    /// Bits per stored element.
    pub fn bits(self) -> u32 {
        match self {
            Precision::Int(b) => b,
            Precision::Nf4 => 4,
            Precision::F16 => 16,
            Precision::F32 => 32,
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Precision::Int(b) => write!(f, "int{b}"),
            Precision::Nf4 => f.write_str("nf4"),
            Precision::F16 => f.write_str("fp16"),
            Precision::F32 => f.write_str("fp32"),
        }
    }
}

impl Serialize for Precision {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Energy per operation (pJ) and per memory access, plus where weights and activations live.
///
/// Every field has a default (Horowitz, 45 nm; see the [module docs](self)), so a TOML table only
/// needs the entries it changes; unknown field names are errors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnergyTable {
    /// Format version; must be [`TABLE_VERSION`].
    pub version: u32,
    /// A name for reports.
    pub name: String,
    /// 8-bit integer add.
    pub int8_add_pj: f64,
    /// 8-bit integer multiply.
    pub int8_mult_pj: f64,
    /// 32-bit integer add.
    pub int32_add_pj: f64,
    /// 32-bit integer multiply.
    pub int32_mult_pj: f64,
    /// 16-bit float add.
    pub fp16_add_pj: f64,
    /// 16-bit float multiply.
    pub fp16_mult_pj: f64,
    /// 32-bit float add.
    pub fp32_add_pj: f64,
    /// 32-bit float multiply.
    pub fp32_mult_pj: f64,
    /// One 64-bit read from an 8 KB SRAM.
    pub sram_read_64bit_pj: f64,
    /// One 64-bit DRAM access.
    pub dram_access_64bit_pj: f64,
    /// Width of the integer accumulator (1..=32).
    pub accumulator_bits: u32,
    /// Where weights (codes, quantization constants, biases) are read from.
    pub weights_from: MemoryLevel,
    /// Where activations are read from and written to.
    pub activations_from: MemoryLevel,
}

impl Default for EnergyTable {
    /// Horowitz, ISSCC 2014, 45 nm; DRAM at 1.3 nJ per 64 bits; 32-bit accumulators; weights and
    /// activations in DRAM.
    fn default() -> Self {
        Self {
            version: TABLE_VERSION,
            name: "horowitz-45nm".into(),
            int8_add_pj: 0.03,
            int8_mult_pj: 0.2,
            int32_add_pj: 0.1,
            int32_mult_pj: 3.1,
            fp16_add_pj: 0.4,
            fp16_mult_pj: 1.1,
            fp32_add_pj: 0.9,
            fp32_mult_pj: 3.7,
            sram_read_64bit_pj: 10.0,
            dram_access_64bit_pj: 1300.0,
            accumulator_bits: 32,
            weights_from: MemoryLevel::Dram,
            activations_from: MemoryLevel::Dram,
        }
    }
}

/// Linear interpolation through `(0, 0)` and the given points (increasing `x`), extrapolating the
/// last segment.
fn piecewise(x: f64, points: &[(f64, f64)]) -> f64 {
    let mut prev = (0.0, 0.0);
    for &(px, py) in points {
        if x <= px {
            return prev.1 + (py - prev.1) * (x - prev.0) / (px - prev.0);
        }
        prev = (px, py);
    }
    match points {
        [.., a, b] => b.1 + (b.1 - a.1) * (x - b.0) / (b.0 - a.0),
        _ => prev.1 * x / prev.0.max(f64::MIN_POSITIVE),
    }
}

impl EnergyTable {
    /// Parses TOML (missing entries keep their defaults) and validates.
    pub fn from_toml_str(s: &str) -> Result<Self> {
        let t: Self = toml::from_str(s).map_err(|e| Error::TableParse {
            path: None,
            message: e.to_string(),
        })?;
        t.validate()?;
        Ok(t)
    }

    /// Reads and validates a TOML file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let t: Self = toml::from_str(&text).map_err(|e| Error::TableParse {
            path: Some(path.to_path_buf()),
            message: e.to_string(),
        })?;
        t.validate()?;
        Ok(t)
    }

    /// The table as TOML (every entry written out: a template to edit).
    pub fn to_toml_string(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| Error::TableParse {
            path: None,
            message: e.to_string(),
        })
    }

    /// The energies with their TOML names.
    fn entries(&self) -> [(&'static str, f64); 10] {
        [
            ("int8_add_pj", self.int8_add_pj),
            ("int8_mult_pj", self.int8_mult_pj),
            ("int32_add_pj", self.int32_add_pj),
            ("int32_mult_pj", self.int32_mult_pj),
            ("fp16_add_pj", self.fp16_add_pj),
            ("fp16_mult_pj", self.fp16_mult_pj),
            ("fp32_add_pj", self.fp32_add_pj),
            ("fp32_mult_pj", self.fp32_mult_pj),
            ("sram_read_64bit_pj", self.sram_read_64bit_pj),
            ("dram_access_64bit_pj", self.dram_access_64bit_pj),
        ]
    }

    /// Checks the version, that every energy is finite and non-negative, and that the accumulator is
    /// 1 to 32 bits wide; the first problem is an [`Error::InvalidTable`].
    pub fn validate(&self) -> Result<()> {
        if self.version != TABLE_VERSION {
            return Err(Error::InvalidTable {
                field: "version".into(),
                value: f64::from(self.version),
                reason: format!("this vitq reads version {TABLE_VERSION}"),
            });
        }
        if let Some((field, value)) = self
            .entries()
            .into_iter()
            .find(|(_, v)| !(v.is_finite() && *v >= 0.0))
        {
            return Err(Error::InvalidTable {
                field: field.into(),
                value,
                reason: "energies must be finite and non-negative (picojoules)".into(),
            });
        }
        if !(1..=32).contains(&self.accumulator_bits) {
            return Err(Error::InvalidTable {
                field: "accumulator_bits".into(),
                value: f64::from(self.accumulator_bits),
                reason: "the accumulator must be 1 to 32 bits wide".into(),
            });
        }
        Ok(())
    }

    /// Integer multiply of a `b_w`-bit by a `b_a`-bit operand (see the module docs).
    pub fn int_mult_pj(&self, b_w: u32, b_a: u32) -> f64 {
        piecewise(
            f64::from(b_w) * f64::from(b_a),
            &[(64.0, self.int8_mult_pj), (1024.0, self.int32_mult_pj)],
        )
    }

    /// Integer add of `bits` bits (see the module docs).
    pub fn int_add_pj(&self, bits: u32) -> f64 {
        piecewise(
            f64::from(bits),
            &[(8.0, self.int8_add_pj), (32.0, self.int32_add_pj)],
        )
    }

    /// Energy of one multiply-accumulate of a `w` operand by an `a` operand (see the module docs);
    /// [`Error::Precision`] for an integer width outside 1..=32.
    pub fn mac_pj(&self, w: Precision, a: Precision) -> Result<f64> {
        for p in [w, a] {
            if let Precision::Int(b) = p
                && !(1..=32).contains(&b)
            {
                return Err(Error::Precision(format!(
                    "{b}-bit integers (the energy model prices 1 to 32 bits)"
                )));
            }
        }
        Ok(match (w, a) {
            (Precision::Int(bw), Precision::Int(ba)) => {
                self.int_mult_pj(bw, ba) + self.int_add_pj(self.accumulator_bits)
            }
            _ if w != Precision::F32 && a != Precision::F32 && [w, a].contains(&Precision::F16) => {
                self.fp16_mult_pj + self.fp16_add_pj
            }
            _ => self.fp32_mult_pj + self.fp32_add_pj,
        })
    }

    /// Energy of moving one bit to or from `level`: its 64-bit access energy / 64.
    pub fn pj_per_bit(&self, level: MemoryLevel) -> f64 {
        match level {
            MemoryLevel::Dram => self.dram_access_64bit_pj / 64.0,
            MemoryLevel::Sram => self.sram_read_64bit_pj / 64.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1.0)
    }

    #[test]
    fn mac_energies_follow_the_documented_formulas() {
        let t = EnergyTable::default();
        let mac = |w, a| t.mac_pj(w, a).unwrap();
        use Precision::*;
        assert!(close(mac(Int(8), Int(8)), 0.2 + 0.1));
        assert!(close(mac(Int(4), Int(8)), 0.1 + 0.1));
        assert!(close(mac(Int(4), Int(4)), 0.05 + 0.1));
        assert!(close(mac(Int(2), Int(6)), 0.2 * 12.0 / 64.0 + 0.1));
        // Between the 8-bit and 32-bit table points, linear in b_w·b_a.
        assert!(close(
            mac(Int(16), Int(16)),
            0.2 + (3.1 - 0.2) * 192.0 / 960.0 + 0.1
        ));
        assert!(close(mac(Int(32), Int(32)), 3.1 + 0.1));
        assert!(close(mac(F32, F32), 4.6));
        assert!(close(mac(Int(8), F32), 4.6));
        assert!(close(mac(Nf4, Int(8)), 4.6));
        assert!(close(mac(Nf4, F16), 1.5));
        assert!(close(mac(F16, Int(8)), 1.5));
        assert!(close(mac(F16, F32), 4.6));
        assert!(matches!(t.mac_pj(Int(0), Int(8)), Err(Error::Precision(_))));
        assert!(matches!(
            t.mac_pj(Int(8), Int(33)),
            Err(Error::Precision(_))
        ));
    }

    #[test]
    fn accumulator_width_scales_the_add() {
        let mut t = EnergyTable::default();
        assert!(close(t.int_add_pj(8), 0.03));
        assert!(close(t.int_add_pj(4), 0.015));
        assert!(close(t.int_add_pj(20), 0.03 + 0.07 * 0.5));
        t.accumulator_bits = 16;
        let expected = 0.2 + 0.03 + 0.07 * 8.0 / 24.0;
        assert!(close(
            t.mac_pj(Precision::Int(8), Precision::Int(8)).unwrap(),
            expected
        ));
    }

    #[test]
    fn memory_is_linear_in_bits() {
        let t = EnergyTable::default();
        assert!(close(t.pj_per_bit(MemoryLevel::Dram), 20.3125));
        assert!(close(t.pj_per_bit(MemoryLevel::Sram), 0.15625));
    }

    #[test]
    fn toml_round_trip_and_partial_tables() {
        let t = EnergyTable::default();
        let text = t.to_toml_string().unwrap();
        assert_eq!(EnergyTable::from_toml_str(&text).unwrap(), t);
        let partial = EnergyTable::from_toml_str(
            "dram_access_64bit_pj = 2600.0\nactivations_from = \"sram\"\naccumulator_bits = 24",
        )
        .unwrap();
        assert_eq!(partial.dram_access_64bit_pj, 2600.0);
        assert_eq!(partial.activations_from, MemoryLevel::Sram);
        assert_eq!(partial.weights_from, MemoryLevel::Dram);
        assert_eq!(partial.fp32_mult_pj, 3.7);
    }

    #[test]
    fn bad_tables_are_typed_errors() {
        let field_of = |s: &str| match EnergyTable::from_toml_str(s) {
            Err(Error::InvalidTable { field, .. }) => field,
            other => panic!("expected InvalidTable for {s:?}, got {other:?}"),
        };
        assert_eq!(field_of("int8_mult_pj = -0.2"), "int8_mult_pj");
        assert_eq!(field_of("fp32_add_pj = nan"), "fp32_add_pj");
        assert_eq!(
            field_of("dram_access_64bit_pj = inf"),
            "dram_access_64bit_pj"
        );
        assert_eq!(field_of("accumulator_bits = 0"), "accumulator_bits");
        assert_eq!(field_of("accumulator_bits = 64"), "accumulator_bits");
        assert_eq!(field_of("version = 2"), "version");
        for bad in [
            "int8_mul_pj = 0.2",        // typo: unknown field
            "int8_mult_pj = \"cheap\"", // wrong type
            "weights_from = \"l3\"",    // unknown level
            "accumulator_bits = -1",    // negative unsigned
            "this is not toml",
        ] {
            assert!(
                matches!(
                    EnergyTable::from_toml_str(bad),
                    Err(Error::TableParse { .. })
                ),
                "{bad}"
            );
        }
        let t = EnergyTable {
            sram_read_64bit_pj: -1.0,
            ..EnergyTable::default()
        };
        assert!(t.validate().is_err());
    }

    #[test]
    fn files_load_and_missing_files_are_io_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.toml");
        std::fs::write(&p, "name = \"x\"\nint8_mult_pj = 0.25\n").unwrap();
        let t = EnergyTable::load(&p).unwrap();
        assert_eq!((t.name.as_str(), t.int8_mult_pj), ("x", 0.25));
        assert!(matches!(
            EnergyTable::load(dir.path().join("missing.toml")),
            Err(Error::Io { .. })
        ));
        std::fs::write(&p, "int8_mult_pj = [").unwrap();
        match EnergyTable::load(&p) {
            Err(e @ Error::TableParse { .. }) => assert!(e.to_string().contains("t.toml"), "{e}"),
            other => panic!("expected TableParse, got {other:?}"),
        }
    }

    #[test]
    fn precision_from_config_specs() {
        let w8a8 = vitq_core::QuantConfig::preset("w8a8").unwrap();
        assert_eq!(
            Precision::from_spec(w8a8.weights.as_ref()),
            Precision::Int(8)
        );
        assert_eq!(Precision::from_spec(None), Precision::F32);
        let nf4 = QuantSpec::nf4(true);
        assert_eq!(Precision::from_spec(Some(&nf4)), Precision::Nf4);
        assert_eq!(Precision::Nf4.bits(), 4);
        assert_eq!(Precision::Int(6).to_string(), "int6");
    }
}
