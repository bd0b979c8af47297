//! Helpers shared by the CLI tests: run the built `vitq` binary, read its JSON, find the assets.

#![allow(dead_code)] // each test file uses its own subset

use std::path::Path;
use std::process::{Command, Output};

/// Runs `vitq` with `args` and collects its output.
pub fn vitq(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vitq"))
        .args(args)
        .output()
        .expect("vitq runs")
}

/// The JSON object on the last line of a successful run's stdout (panics with stderr on failure).
pub fn last_json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().expect("output")).expect("JSON last line")
}

/// A path under the repository's `assets/`.
pub fn asset(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../assets")
        .join(rel)
        .to_string_lossy()
        .into_owned()
}
