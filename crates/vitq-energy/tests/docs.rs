//! `docs/energy.md` stays true: its default table is the code's, and the figures it quotes are what
//! the code computes.

use vitq_core::QuantConfig;
use vitq_energy::{EnergyReport, EnergyTable, MemoryLevel, Network};

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/energy.md");
    std::fs::read_to_string(path).expect("docs/energy.md")
}

#[test]
fn the_documented_table_is_the_default() {
    let text = doc();
    let start = text.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let len = text[start..].find("```").expect("closed");
    let table = EnergyTable::from_toml_str(&text[start..start + len]).unwrap();
    assert_eq!(table, EnergyTable::default());
}

fn reduction(preset: &str, config: &str, table: &EnergyTable) -> f64 {
    let net = Network::from_preset(preset, None).unwrap();
    let q = EnergyReport::new(&net, &QuantConfig::preset(config).unwrap(), table).unwrap();
    q.reduction_from(&EnergyReport::float32(&net, table).unwrap())
}

#[test]
fn the_documented_figures_are_computed() {
    let text = doc();
    let default = EnergyTable::default();
    let dram_high = EnergyTable {
        dram_access_64bit_pj: 2600.0,
        ..EnergyTable::default()
    };
    let sram = EnergyTable {
        activations_from: MemoryLevel::Sram,
        ..EnergyTable::default()
    };
    for (preset, config, table, quoted) in [
        ("resnet20", "w8a8", &default, "5.14×"),
        ("resnet20", "w8a8", &dram_high, "4.59×"),
        ("resnet20", "w8a8", &sram, "6.36×"),
        ("resnet20", "w4a4", &sram, "12.52×"),
        ("resnet18", "w4a8", &default, "9.13×"),
        ("vit_base_patch16_224", "w4a4", &default, "12.32×"),
        ("deit_tiny_patch16_224", "nf4", &default, "1.23×"),
    ] {
        let r = format!("{:.2}×", reduction(preset, config, table));
        assert_eq!(
            r, quoted,
            "{preset} {config} ({})",
            table.dram_access_64bit_pj
        );
        assert!(
            text.contains(quoted),
            "docs/energy.md does not quote {quoted}"
        );
    }
}
