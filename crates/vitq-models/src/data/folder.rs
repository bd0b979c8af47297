//! Image datasets on disk: [`ImageFolder`] (torchvision's class-per-sub-folder layout) and
//! [`ImageNetFolder`] (a flat folder of `<synset>_<anything>.JPEG` files with a `synsets.txt`).
//!
//! Both list their files once when opened (sorted, so labels and order are reproducible) and decode
//! lazily: [`LabeledImages::load`] / [`LabeledImages::batch`] read, decode and preprocess on each call.
//! Only `.jpg`, `.jpeg` and `.png` files (any case) are images; other files are ignored.
//!
//! ```no_run
//! use burn::backend::Flex;
//! use vitq_models::data::{ImageNetFolder, Preprocess};
//! let data = ImageNetFolder::open("imagenet-sample")?;
//! let (x, labels) = data.batch::<Flex>(0..8, &Preprocess::imagenet(224), &Default::default())?;
//! assert_eq!(x.dims(), [8, 3, 224, 224]);
//! # Ok::<(), vitq_models::Error>(())
//! ```

use std::collections::HashMap;
use std::ffi::OsString;
use std::ops::Range;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::image::{Preprocess, decode};
use crate::error::{Error, Result};

/// File extensions read as images (compared case-insensitively).
pub const EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// Sub-folder depth below which [`ImageFolder`] stops descending (guards against symlink cycles).
const MAX_DEPTH: usize = 32;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// `(name, path, is_dir)` of a folder's entries, sorted by name; symlinks are followed.
fn entries(dir: &Path) -> Result<Vec<(OsString, PathBuf, bool)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let path = entry.path();
        // `Path::is_dir` follows symlinks (torchvision walks with `followlinks=True`).
        out.push((entry.file_name(), path.clone(), path.is_dir()));
    }
    out.sort();
    Ok(out)
}

/// The labelled image files of a dataset and their decoding, shared by [`ImageFolder`] and
/// [`ImageNetFolder`] (both dereference to it).
#[derive(Clone, Debug)]
pub struct LabeledImages {
    root: PathBuf,
    items: Vec<(PathBuf, usize)>,
}

impl LabeledImages {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// `true` if there are no images (never, for an opened folder).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Label of image `i` (`None` past the end).
    pub fn label(&self, i: usize) -> Option<usize> {
        self.items.get(i).map(|(_, l)| *l)
    }

    /// Labels of a range of images (clamped to the dataset).
    pub fn labels(&self, range: Range<usize>) -> Vec<usize> {
        let range = range.start.min(self.len())..range.end.min(self.len());
        self.items[range].iter().map(|(_, l)| *l).collect()
    }

    /// File of image `i` (`None` past the end).
    pub fn path(&self, i: usize) -> Option<&Path> {
        self.items.get(i).map(|(p, _)| p.as_path())
    }

    /// Image `i`, decoded and preprocessed: `[3, size, size]`. An index out of range is
    /// [`Error::Shape`]; a bad file [`Error::Data`] naming it.
    pub fn load<B: Backend>(
        &self,
        i: usize,
        pre: &Preprocess,
        device: &B::Device,
    ) -> Result<Tensor<B, 3>> {
        let (path, _) = self.items.get(i).ok_or_else(|| Error::Shape {
            what: format!("image index {i} of {}", self.root.display()),
            expected: format!("an index below {}", self.len()),
            got: vec![i],
        })?;
        pre.load(path, device)
    }

    /// Images `range` (clamped to the dataset) as a `[n, 3, size, size]` batch, with their labels.
    pub fn batch<B: Backend>(
        &self,
        range: Range<usize>,
        pre: &Preprocess,
        device: &B::Device,
    ) -> Result<(Tensor<B, 4>, Vec<usize>)> {
        pre.check()?;
        let range = range.start.min(self.len())..range.end.min(self.len());
        let s = pre.size;
        let mut out = Vec::with_capacity(range.len() * 3 * s * s);
        let mut labels = Vec::with_capacity(range.len());
        for (path, label) in &self.items[range.clone()] {
            let crop = pre.resize_crop(&decode(path)?)?;
            out.extend(pre.normalize_values(&crop));
            labels.push(*label);
        }
        let x = Tensor::from_data(TensorData::new(out, [range.len(), 3, s, s]), device);
        Ok((x, labels))
    }
}

/// torchvision's `ImageFolder`: `root/<class>/…/<file>.jpg`. Classes are the sub-folders of `root`
/// sorted by name (label = index); each class's images are found recursively, ordered as torchvision's
/// `sorted(os.walk(…))` then `sorted(files)` orders them (by folder path, then by file name).
///
/// Like torchvision, every sub-folder is a class (hidden ones too), and a class without any image is an
/// error.
#[derive(Clone, Debug)]
pub struct ImageFolder {
    classes: Vec<String>,
    items: LabeledImages,
}

impl ImageFolder {
    /// Lists `root`. Errors: `root` unreadable ([`Error::Io`]), no sub-folder, or a class without
    /// images ([`Error::Data`]).
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref();
        let mut classes = Vec::new();
        let mut items = Vec::new();
        for (name, dir, is_dir) in entries(root)? {
            if !is_dir {
                continue;
            }
            let label = classes.len();
            let mut files = Vec::new();
            walk(&dir, 0, &mut files)?;
            if files.is_empty() {
                return Err(Error::Data {
                    path: dir,
                    reason: format!(
                        "class folder without images (extensions {})",
                        EXTENSIONS.join(", ")
                    ),
                });
            }
            files.sort();
            items.extend(files.into_iter().map(|(_, _, p)| (p, label)));
            classes.push(name.to_string_lossy().into_owned());
        }
        if classes.is_empty() {
            return Err(Error::Data {
                path: root.to_path_buf(),
                reason: "no class sub-folders (ImageFolder expects root/<class>/<image>)".into(),
            });
        }
        Ok(Self {
            classes,
            items: LabeledImages {
                root: root.to_path_buf(),
                items,
            },
        })
    }

    /// Class names in label order.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }
}

/// Image files below `dir`, as `(folder, file name, path)`, so that sorting orders them as torchvision
/// does: by the folder's path as a string (not component-wise), then by file name.
fn walk(dir: &Path, depth: usize, out: &mut Vec<(OsString, OsString, PathBuf)>) -> Result<()> {
    for (name, path, is_dir) in entries(dir)? {
        if is_dir {
            if depth < MAX_DEPTH {
                walk(&path, depth + 1, out)?;
            }
        } else if is_image(&path) {
            out.push((dir.as_os_str().to_owned(), name, path));
        }
    }
    Ok(())
}

/// A flat ImageNet-style folder: `root/synsets.txt` lists the synsets (`n01440764`, …) one per line in
/// class order (label = line index, counting non-empty lines; anything after the first word of a line,
/// such as a class name, is ignored), and every image is `root/<synset>_<anything>.<jpg|jpeg|png>`,
/// e.g. `n01440764_tench.JPEG` (label 0). Images are sorted by file name.
///
/// This is the layout of `../shared/data/imagenet-sample/` (one image of each of the first 100 classes).
/// Errors: missing or empty `synsets.txt`, duplicate synsets, an image whose name does not start with a
/// listed synset, and a folder without images are [`Error::Data`].
#[derive(Clone, Debug)]
pub struct ImageNetFolder {
    synsets: Vec<String>,
    items: LabeledImages,
}

impl ImageNetFolder {
    /// The synset list's file name.
    pub const SYNSETS: &'static str = "synsets.txt";

    /// Reads `root/synsets.txt` and lists the images.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref();
        let list = root.join(Self::SYNSETS);
        let text = match std::fs::read_to_string(&list) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Data {
                    path: list,
                    reason: "missing: an ImageNet folder needs synsets.txt, the synsets one per line in class order"
                        .into(),
                });
            }
            Err(e) => return Err(io_err(&list)(e)),
        };
        let synsets: Vec<String> = text
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect();
        let bad = |path: &Path, reason: String| Error::Data {
            path: path.to_path_buf(),
            reason,
        };
        if synsets.is_empty() {
            return Err(bad(&list, "no synsets listed".into()));
        }
        let mut index = HashMap::with_capacity(synsets.len());
        for (i, s) in synsets.iter().enumerate() {
            if let Some(j) = index.insert(s.as_str(), i) {
                return Err(bad(
                    &list,
                    format!("synset {s} listed twice (lines {} and {})", j + 1, i + 1),
                ));
            }
        }
        let mut items = Vec::new();
        for (name, path, is_dir) in entries(root)? {
            if is_dir || !is_image(&path) {
                continue;
            }
            let name = name.to_string_lossy();
            let Some((synset, _)) = name.split_once('_') else {
                return Err(bad(&path, "image name is not <synset>_<anything>".into()));
            };
            let Some(&label) = index.get(synset) else {
                return Err(bad(
                    &path,
                    format!("synset `{synset}` is not listed in {}", list.display()),
                ));
            };
            items.push((path, label));
        }
        if items.is_empty() {
            return Err(bad(
                root,
                format!("no images (extensions {})", EXTENSIONS.join(", ")),
            ));
        }
        Ok(Self {
            synsets,
            items: LabeledImages {
                root: root.to_path_buf(),
                items,
            },
        })
    }

    /// The synsets in label order.
    pub fn synsets(&self) -> &[String] {
        &self.synsets
    }

    /// Number of classes (lines of `synsets.txt`), not all of which need images.
    pub fn num_classes(&self) -> usize {
        self.synsets.len()
    }
}

impl std::ops::Deref for ImageFolder {
    type Target = LabeledImages;
    fn deref(&self) -> &LabeledImages {
        &self.items
    }
}

impl std::ops::Deref for ImageNetFolder {
    type Target = LabeledImages;
    fn deref(&self) -> &LabeledImages {
        &self.items
    }
}
