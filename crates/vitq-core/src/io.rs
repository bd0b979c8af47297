//! Saving and loading quantized tensors (and the config that made them) in one safetensors file.
//!
//! # File layout
//! A standard safetensors file, readable by any safetensors reader. For a quantized tensor `name`:
//!
//! | tensor | dtype | shape |
//! |---|---|---|
//! | `name::codes` | U8 | `[packed bytes]` (see [`crate::pack`]) |
//! | `name::scales` | F32 | `[number of scales]` (uniform) |
//! | `name::zero_points` | I32 | `[number of scales]` (asymmetric only) |
//! | `name::absmax` | F32 | `[blocks]` (NF4) |
//! | `name::absmax_codes`, `name::absmax_scales` | I8, F32 | `[blocks]`, `[ceil(blocks/256)]` (NF4, double quantization) |
//!
//! A float tensor is stored under its own name as F32. The safetensors metadata holds `format`
//! (`vitq-quantized`), `format_version` (`1`), `tensors` (JSON: per name its kind, shape and spec),
//! `config` (the [`QuantConfig`] as JSON, if any) and user entries prefixed `user.`.
//!
//! Loading is strict: a missing or unexpected tensor, a wrong dtype or size, or a truncated or corrupt
//! file is an [`Error::Format`]. Saving writes a temporary file next to the target and renames it into
//! place, so a failed save never leaves a half-written file at the target path.
//!
//! ```
//! use vitq_core::{io::QuantFile, QuantConfig, QuantSpec, QuantizedTensor};
//!
//! let dir = std::env::temp_dir().join(format!("vitq-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("model.safetensors");
//!
//! let w: Vec<f32> = (0..128).map(|i| (i as f32 * 0.1).cos()).collect();
//! let mut file = QuantFile::new(Some(QuantConfig::preset("nf4")?));
//! file.insert_quantized("fc.weight", QuantizedTensor::quantize(&w, &[2, 64], &QuantSpec::nf4(true))?);
//! file.insert_float("fc.bias", vec![2], vec![0.5, -0.5])?;
//! file.save(&path)?;
//!
//! let back = QuantFile::load(&path)?;
//! assert_eq!(back, file);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), vitq_core::Error>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};

use crate::config::QuantConfig;
use crate::error::{Error, Result};
use crate::nf4::Absmax;
use crate::qtensor::{Encoding, QuantizedTensor};
use crate::spec::QuantSpec;

/// Value of the `format` metadata key.
pub const FORMAT: &str = "vitq-quantized";
/// Value of the `format_version` metadata key written by this crate.
pub const FORMAT_VERSION: &str = "1";

/// A tensor as stored in a [`QuantFile`].
#[derive(Clone, Debug, PartialEq)]
pub enum StoredTensor {
    /// Packed codes and parameters.
    Quantized(QuantizedTensor),
    /// A float tensor kept in full precision (biases, norms, layers left in float).
    Float {
        /// Its shape.
        shape: Vec<usize>,
        /// Row-major values.
        data: Vec<f32>,
    },
}

/// The contents of one quantized-model file.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct QuantFile {
    /// The config the tensors were quantized with.
    pub config: Option<QuantConfig>,
    /// Tensors by name.
    pub tensors: BTreeMap<String, StoredTensor>,
    /// Free-form metadata (stored with a `user.` prefix), e.g. the model preset.
    pub metadata: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
enum Entry {
    Quantized {
        shape: Vec<usize>,
        spec: QuantSpec,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        absmax_offset: Option<f32>,
    },
    Float {
        shape: Vec<usize>,
    },
}

impl QuantFile {
    /// An empty file with an optional config.
    pub fn new(config: Option<QuantConfig>) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// Adds (or replaces) a quantized tensor.
    pub fn insert_quantized(&mut self, name: impl Into<String>, t: QuantizedTensor) {
        self.tensors.insert(name.into(), StoredTensor::Quantized(t));
    }

    /// Adds (or replaces) a float tensor; the data length must match the shape.
    pub fn insert_float(
        &mut self,
        name: impl Into<String>,
        shape: Vec<usize>,
        data: Vec<f32>,
    ) -> Result<()> {
        let name = name.into();
        if shape.iter().product::<usize>() != data.len() {
            return Err(Error::ShapeMismatch {
                what: format!("float tensor `{name}`"),
                expected: shape,
                got: vec![data.len()],
            });
        }
        self.tensors
            .insert(name, StoredTensor::Float { shape, data });
        Ok(())
    }

    /// Total bytes of tensor data (what the file costs beyond its small header).
    pub fn size_in_bytes(&self) -> usize {
        self.tensors
            .values()
            .map(|t| match t {
                StoredTensor::Quantized(q) => q.size_in_bytes(),
                StoredTensor::Float { data, .. } => 4 * data.len(),
            })
            .sum()
    }

    /// Serializes to safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut blobs: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        let mut entries = BTreeMap::new();
        for (name, t) in &self.tensors {
            if name.contains("::") {
                return Err(Error::Config(format!(
                    "tensor name `{name}` may not contain `::`"
                )));
            }
            match t {
                StoredTensor::Float { shape, data } => {
                    blobs.push((name.clone(), Dtype::F32, shape.clone(), f32_bytes(data)));
                    entries.insert(
                        name.clone(),
                        Entry::Float {
                            shape: shape.clone(),
                        },
                    );
                }
                StoredTensor::Quantized(q) => {
                    let part = |p: &str| format!("{name}::{p}");
                    blobs.push((
                        part("codes"),
                        Dtype::U8,
                        vec![q.packed().len()],
                        q.packed().to_vec(),
                    ));
                    let mut absmax_offset = None;
                    match q.encoding() {
                        Encoding::Uniform {
                            scales,
                            zero_points,
                        } => {
                            blobs.push((
                                part("scales"),
                                Dtype::F32,
                                vec![scales.len()],
                                f32_bytes(scales),
                            ));
                            if q.spec().scheme == crate::Scheme::Asymmetric {
                                let z: Vec<u8> =
                                    zero_points.iter().flat_map(|z| z.to_le_bytes()).collect();
                                blobs.push((
                                    part("zero_points"),
                                    Dtype::I32,
                                    vec![zero_points.len()],
                                    z,
                                ));
                            }
                        }
                        Encoding::Nf4 {
                            absmax: Absmax::Full(a),
                        } => {
                            blobs.push((part("absmax"), Dtype::F32, vec![a.len()], f32_bytes(a)));
                        }
                        Encoding::Nf4 {
                            absmax:
                                Absmax::Double {
                                    codes,
                                    scales,
                                    offset,
                                },
                        } => {
                            let c: Vec<u8> = codes.iter().map(|&c| c as u8).collect();
                            blobs.push((part("absmax_codes"), Dtype::I8, vec![codes.len()], c));
                            blobs.push((
                                part("absmax_scales"),
                                Dtype::F32,
                                vec![scales.len()],
                                f32_bytes(scales),
                            ));
                            absmax_offset = Some(*offset);
                        }
                    }
                    entries.insert(
                        name.clone(),
                        Entry::Quantized {
                            shape: q.shape().to_vec(),
                            spec: *q.spec(),
                            absmax_offset,
                        },
                    );
                }
            }
        }
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), FORMAT.to_string());
        meta.insert("format_version".to_string(), FORMAT_VERSION.to_string());
        meta.insert("tensors".to_string(), json(&entries)?);
        if let Some(c) = &self.config {
            meta.insert("config".to_string(), json(c)?);
        }
        for (k, v) in &self.metadata {
            meta.insert(format!("user.{k}"), v.clone());
        }
        let views = blobs
            .iter()
            .map(|(n, d, s, b)| {
                Ok((
                    n.clone(),
                    TensorView::new(*d, s.clone(), b).map_err(st_err)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        safetensors::serialize(views, Some(meta)).map_err(st_err)
    }

    /// Writes the file atomically: a temporary file in the same folder, synced, then renamed.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = self.to_bytes()?;
        write_atomic(path, &bytes)
    }

    /// Reads and validates a file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses safetensors bytes; `path` is only used in error messages.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::Format {
            path: path.to_path_buf(),
            reason,
        };
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| bad(format!("unreadable header: {e}")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let get = |k: &str| {
            meta.get(k)
                .ok_or_else(|| bad(format!("metadata key `{k}` is missing")))
        };
        if get("format")? != FORMAT {
            return Err(bad(format!(
                "not a vitq quantized file (format `{}`)",
                get("format")?
            )));
        }
        if get("format_version")? != FORMAT_VERSION {
            return Err(bad(format!(
                "format version {} is not supported (this vitq reads {FORMAT_VERSION})",
                get("format_version")?
            )));
        }
        let entries: BTreeMap<String, Entry> = serde_json::from_str(get("tensors")?)
            .map_err(|e| bad(format!("metadata `tensors` is invalid: {e}")))?;
        let config = match meta.get("config") {
            Some(c) => Some(
                QuantConfig::from_json_str(c)
                    .map_err(|e| bad(format!("metadata `config`: {e}")))?,
            ),
            None => None,
        };
        let metadata = meta
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("user.").map(|k| (k.to_string(), v.clone())))
            .collect();

        let mut used = std::collections::BTreeSet::new();
        let mut take_shaped = |name: String, dtype: Dtype, shape: &[usize]| -> Result<Vec<u8>> {
            let view = st
                .tensor(&name)
                .map_err(|_| bad(format!("tensor `{name}` is missing")))?;
            if view.dtype() != dtype || view.shape() != shape {
                return Err(bad(format!(
                    "tensor `{name}` is {:?} {:?}, expected {dtype:?} {shape:?}",
                    view.dtype(),
                    view.shape()
                )));
            }
            used.insert(name);
            Ok(view.data().to_vec())
        };
        let mut tensors = BTreeMap::new();
        for (name, entry) in entries {
            let t = match entry {
                Entry::Float { shape } => {
                    let data = f32_from(&take_shaped(name.clone(), Dtype::F32, &shape)?);
                    StoredTensor::Float { shape, data }
                }
                Entry::Quantized {
                    shape,
                    spec,
                    absmax_offset,
                } => {
                    let mut take = |name, dtype, len| take_shaped(name, dtype, &[len]);
                    let layout = crate::spec::Layout::new(&shape, spec.granularity)
                        .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
                    let slices = layout.num_slices();
                    let part = |p: &str| format!("{name}::{p}");
                    let packed = take(
                        part("codes"),
                        Dtype::U8,
                        crate::pack::packed_len(layout.numel, spec.bits),
                    )?;
                    let encoding = if spec.is_uniform() {
                        let scales = f32_from(&take(part("scales"), Dtype::F32, slices)?);
                        let zero_points = if spec.scheme == crate::Scheme::Asymmetric {
                            take(part("zero_points"), Dtype::I32, slices)?
                                .chunks_exact(4)
                                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                                .collect()
                        } else {
                            vec![0; slices]
                        };
                        Encoding::Uniform {
                            scales,
                            zero_points,
                        }
                    } else if let Some(offset) = absmax_offset {
                        let codes = take(part("absmax_codes"), Dtype::I8, slices)?;
                        let scales = take(
                            part("absmax_scales"),
                            Dtype::F32,
                            slices.div_ceil(crate::nf4::DOUBLE_QUANT_BLOCK),
                        )?;
                        Encoding::Nf4 {
                            absmax: Absmax::Double {
                                codes: codes.into_iter().map(|c| c as i8).collect(),
                                scales: f32_from(&scales),
                                offset,
                            },
                        }
                    } else {
                        Encoding::Nf4 {
                            absmax: Absmax::Full(f32_from(&take(
                                part("absmax"),
                                Dtype::F32,
                                slices,
                            )?)),
                        }
                    };
                    let q = QuantizedTensor::from_parts(spec, shape, packed, encoding)
                        .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
                    StoredTensor::Quantized(q)
                }
            };
            tensors.insert(name, t);
        }
        if let Some(extra) = st.names().into_iter().find(|n| !used.contains(*n)) {
            return Err(bad(format!(
                "unexpected tensor `{extra}` not described in the metadata"
            )));
        }
        Ok(Self {
            config,
            tensors,
            metadata,
        })
    }
}

/// Writes `bytes` to `path` through a temporary sibling file and a rename; on failure the temporary
/// file is removed and `path` is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io_err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io { path: p, source }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"),
        })?
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io_err(path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Config(e.to_string()))
}

fn st_err(e: safetensors::SafeTensorError) -> Error {
    Error::Unsupported(format!("safetensors: {e}"))
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f32_from(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}
