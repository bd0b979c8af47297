//! Results of a sweep, one JSON object per line, so that a long sweep can stop and resume.
//!
//! Every record carries the run it belongs to (a string naming model, evaluation set and calibration
//! set, chosen by the caller) and its key: setting, mode, layer and the bits the ablated layer got.
//! [`Store::open`] reads an existing file, refuses records of another run
//! ([`Error::ResumeMismatch`]), drops a last line torn by a kill, and appends (and flushes) every new
//! record as soon as it is measured. The file is created only when the first record is written, so a
//! run that fails before measuring anything leaves no file behind.
//!
//! ```
//! use vitq_sensitivity::store::{Record, Store};
//! use vitq_sensitivity::{Mode, Scores};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("sens.jsonl");
//! let scores = Scores { images: 10, accuracy: 0.9, accuracy_drop: 1.0, kl: 0.01, sqnr_db: 20.0 };
//! let rec = Record::new("run", "w4a4", Mode::QuantizeOnly, Some("conv1"), (Some(4), Some(4)), scores);
//! let mut store = Store::open(&path, "run")?;
//! assert!(store.get(&rec.key()).is_none());
//! store.push(rec.clone())?;
//! let again = Store::open(&path, "run")?;
//! assert_eq!(again.get(&rec.key()), Some(&rec));
//! assert!(Store::open(&path, "another run").is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ablation::Mode;
use crate::error::{Error, Result};
use crate::metrics::Scores;

/// What a record is filed under: one evaluation per key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// Base setting name.
    pub setting: String,
    /// Ablation mode.
    pub mode: Mode,
    /// Ablated layer (`None` for uniform).
    pub layer: Option<String>,
    /// Weight bits (`None` = float).
    pub weight_bits: Option<u32>,
    /// Activation bits (`None` = float).
    pub activation_bits: Option<u32>,
}

/// One measured evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The run (model, evaluation and calibration data) it was measured in.
    pub run: String,
    /// Base setting name.
    pub setting: String,
    /// Ablation mode.
    pub mode: Mode,
    /// Ablated layer (`None` for uniform).
    #[serde(default)]
    pub layer: Option<String>,
    /// Weight bits of the ablated layer (of every layer for uniform; the others' for float-only).
    #[serde(default)]
    pub weight_bits: Option<u32>,
    /// Activation bits, likewise.
    #[serde(default)]
    pub activation_bits: Option<u32>,
    /// The scores against the float model.
    #[serde(flatten)]
    pub scores: Scores,
    /// Wall time of quantizing and evaluating, seconds.
    #[serde(default)]
    pub seconds: f64,
}

impl Record {
    /// A record (with `seconds` 0).
    pub fn new(
        run: &str,
        setting: &str,
        mode: Mode,
        layer: Option<&str>,
        (weight_bits, activation_bits): (Option<u32>, Option<u32>),
        scores: Scores,
    ) -> Self {
        Self {
            run: run.into(),
            setting: setting.into(),
            mode,
            layer: layer.map(str::to_string),
            weight_bits,
            activation_bits,
            scores,
            seconds: 0.0,
        }
    }

    /// Its key.
    pub fn key(&self) -> Key {
        Key {
            setting: self.setting.clone(),
            mode: self.mode,
            layer: self.layer.clone(),
            weight_bits: self.weight_bits,
            activation_bits: self.activation_bits,
        }
    }
}

/// Records of one run, in memory and (optionally) in a JSON-lines file.
#[derive(Debug)]
pub struct Store {
    run: String,
    path: Option<PathBuf>,
    /// Bytes of the file that hold whole records (a torn tail is cut off before appending).
    valid_len: u64,
    file: Option<std::fs::File>,
    records: BTreeMap<Key, Record>,
}

impl Store {
    /// A store that keeps records in memory only.
    pub fn memory(run: &str) -> Self {
        Self {
            run: run.into(),
            path: None,
            valid_len: 0,
            file: None,
            records: BTreeMap::new(),
        }
    }

    /// Reads `path` if it exists (records must belong to `run`), and appends new records to it.
    pub fn open(path: impl AsRef<Path>, run: &str) -> Result<Self> {
        let path = path.as_ref();
        let mut store = Self::memory(run);
        store.path = Some(path.to_path_buf());
        let text = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(store),
            Err(source) => {
                return Err(Error::Io {
                    path: path.into(),
                    source,
                });
            }
        };
        let mut offset = 0usize;
        let lines: Vec<&[u8]> = text.split_inclusive(|b| *b == b'\n').collect();
        for (i, line) in lines.iter().enumerate() {
            let complete = line.ends_with(b"\n");
            let body = String::from_utf8_lossy(line);
            let body = body.trim();
            if body.is_empty() {
                offset += line.len();
                continue;
            }
            let rec: Record = match serde_json::from_str(body) {
                Ok(r) if complete || i + 1 < lines.len() => r,
                // The last line, without its newline: the write was cut. Drop it.
                Ok(_) => break,
                Err(_) if !complete && i + 1 == lines.len() => break,
                Err(e) => {
                    return Err(Error::Corrupt {
                        path: path.into(),
                        line: i + 1,
                        message: e.to_string(),
                    });
                }
            };
            if rec.run != run {
                return Err(Error::ResumeMismatch {
                    path: path.into(),
                    line: i + 1,
                    found: rec.run,
                    expected: run.into(),
                });
            }
            offset += line.len();
            store.records.insert(rec.key(), rec);
        }
        store.valid_len = offset as u64;
        Ok(store)
    }

    /// The run this store holds.
    pub fn run(&self) -> &str {
        &self.run
    }

    /// The file, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The record filed under `key`.
    pub fn get(&self, key: &Key) -> Option<&Record> {
        self.records.get(key)
    }

    /// All records, in key order.
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.records.values()
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Adds a record (replacing one with the same key) and appends it to the file, flushed.
    pub fn push(&mut self, mut record: Record) -> Result<()> {
        record.run = self.run.clone();
        if let Some(path) = &self.path {
            let io = |source| Error::Io {
                path: path.clone(),
                source,
            };
            if self.file.is_none() {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(false)
                    .open(path)
                    .map_err(io)?;
                // Cut a torn last line so that the next record starts on a line of its own.
                f.set_len(self.valid_len).map_err(io)?;
                self.file = Some(f);
            }
            if let Some(f) = &mut self.file {
                use std::io::Seek;
                let mut line = serde_json::to_string(&record).map_err(|e| Error::Io {
                    path: path.clone(),
                    source: std::io::Error::other(e),
                })?;
                line.push('\n');
                f.seek(std::io::SeekFrom::End(0)).map_err(io)?;
                f.write_all(line.as_bytes()).map_err(io)?;
                f.flush().map_err(io)?;
                self.valid_len += line.len() as u64;
            }
        }
        self.records.insert(record.key(), record);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(layer: &str, bits: u32, kl: f64) -> Record {
        Record::new(
            "resnet20|test|calib",
            "w4a4",
            Mode::QuantizeOnly,
            Some(layer),
            (Some(bits), Some(4)),
            Scores {
                images: 100,
                accuracy: 0.9,
                accuracy_drop: 0.5,
                kl,
                sqnr_db: f64::INFINITY,
            },
        )
    }

    #[test]
    fn records_survive_a_restart_and_a_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.jsonl");
        let run = "resnet20|test|calib";
        let mut s = Store::open(&path, run).unwrap();
        assert!(!path.exists(), "nothing written before the first record");
        s.push(rec("conv1", 4, 0.1)).unwrap();
        s.push(rec("conv1", 6, 0.05)).unwrap();
        drop(s);
        // A kill in the middle of the third write.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(br#"{"run":"resnet20|test|calib","setting":"w4a4","mo"#)
            .unwrap();
        drop(f);
        let mut s = Store::open(&path, run).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s.get(&rec("conv1", 6, 0.0).key()).unwrap().scores.kl, 0.05);
        s.push(rec("linear", 4, 0.2)).unwrap();
        drop(s);
        let s = Store::open(&path, run).unwrap();
        assert_eq!(s.len(), 3);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(s.records().all(|r| r.scores.sqnr_db == f64::INFINITY));
    }

    #[test]
    fn other_runs_and_corrupt_lines_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.jsonl");
        let mut s = Store::open(&path, "resnet20|test|calib").unwrap();
        s.push(rec("conv1", 4, 0.1)).unwrap();
        drop(s);
        assert!(matches!(
            Store::open(&path, "resnet20|other|calib"),
            Err(Error::ResumeMismatch { line: 1, .. })
        ));
        std::fs::write(&path, "not json\n{}\n").unwrap();
        assert!(matches!(
            Store::open(&path, "x"),
            Err(Error::Corrupt { line: 1, .. })
        ));
    }

    #[test]
    fn memory_stores_replace_by_key() {
        let mut s = Store::memory("r");
        s.push(rec("conv1", 4, 0.1)).unwrap();
        s.push(rec("conv1", 4, 0.3)).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s.records().next().unwrap().run, "r");
    }
}
