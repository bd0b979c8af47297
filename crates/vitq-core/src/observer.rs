//! Calibration observers: they stream over batches and choose a clipping range per slice.
//!
//! One [`Observer`] serves every [`CalibrationMethod`]:
//!
//! | method | state kept | range chosen |
//! |---|---|---|
//! | `MinMax` | running min / max | the extremes seen |
//! | `MovingAverageMinMax` | EMA of each batch's min / max | the averaged extremes |
//! | `Percentile` | histogram | the `p`-th percentile of `|x|` (symmetric) or the `(100-p)`-th and `p`-th percentiles of `x` (asymmetric) |
//! | `Mse` | histogram | the range, among 100 shrinkings of the observed one, with the least expected quantization MSE (OMSE) |
//! | `Kl` | histogram | the range with the least KL divergence between the clipped histogram and its quantized version (TensorRT's entropy calibration) |
//!
//! Histograms have 2048 bins for per-tensor statistics and 512 per slice otherwise; symmetric specs
//! histogram `|x|`, asymmetric ones `x`. When a batch falls outside the current range the histogram is
//! widened and its counts are re-binned by bin centre (as PyTorch's and ONNX Runtime's histogram
//! observers do), so ranges are exact to about one bin width.
//!
//! ```
//! use vitq_core::{observer::Observer, CalibrationMethod, Granularity, QuantSpec, Scheme};
//!
//! let spec = QuantSpec::new(8, Scheme::Asymmetric, Granularity::PerTensor)?
//!     .with_calibration(CalibrationMethod::Percentile { percentile: 99.0 });
//! let mut obs = Observer::new(spec)?;
//! for batch in 0..4 {
//!     let data: Vec<f32> = (0..1000).map(|i| ((i * 37 + batch) % 1000) as f32 / 1000.0).collect();
//!     obs.observe(&data, &[10, 100])?;
//! }
//! let r = obs.ranges()?[0];
//! assert!(r.max > 0.97 && r.max < 1.0);
//! # Ok::<(), vitq_core::Error>(())
//! ```

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::spec::{CalibrationMethod, Granularity, Layout, QuantSpec, Scheme};
use crate::uniform::{check_finite, fake_quant, scale_and_zero_point, tensor_to_vec};

/// A clipping range `[min, max]`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Range {
    /// Lower end.
    pub min: f32,
    /// Upper end.
    pub max: f32,
}

impl Range {
    fn empty() -> Self {
        Self {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
        }
    }
    fn include(&mut self, v: f32) {
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }
    fn union(self, o: Range) -> Range {
        Range {
            min: self.min.min(o.min),
            max: self.max.max(o.max),
        }
    }
}

/// Histogram bins when one histogram covers the whole tensor.
pub const BINS_PER_TENSOR: usize = 2048;
/// Histogram bins per slice for per-channel, per-group and per-block statistics.
pub const BINS_PER_SLICE: usize = 512;
/// Number of candidate ranges tried by the MSE and (asymmetric) KL searches.
pub const SEARCH_STEPS: usize = 100;

/// A streaming calibration observer for one tensor (see the module docs).
#[derive(Clone, Debug)]
pub struct Observer {
    spec: QuantSpec,
    /// Shape that fixes the slices (all of it for per-group and per-block, the channel count for
    /// per-channel, nothing for per-tensor).
    key: Option<Vec<usize>>,
    state: State,
    batches: usize,
}

#[derive(Clone, Debug)]
enum State {
    Extremes(Vec<Range>),
    Histograms(Vec<Histogram>),
}

impl Observer {
    /// An observer for `spec` (validated).
    pub fn new(spec: QuantSpec) -> Result<Self> {
        spec.validate()?;
        let state = match spec.calibration {
            CalibrationMethod::MinMax | CalibrationMethod::MovingAverageMinMax { .. } => {
                State::Extremes(Vec::new())
            }
            _ => State::Histograms(Vec::new()),
        };
        Ok(Self {
            spec,
            key: None,
            state,
            batches: 0,
        })
    }

    /// The spec this observer calibrates for.
    pub fn spec(&self) -> &QuantSpec {
        &self.spec
    }

    /// Number of batches observed so far.
    pub fn batches(&self) -> usize {
        self.batches
    }

    /// Adds one batch given as row-major `data` of `shape`. Rejects NaN/Inf and shapes whose slices
    /// differ from the earlier batches'.
    pub fn observe(&mut self, data: &[f32], shape: &[usize]) -> Result<()> {
        let layout = Layout::new(shape, self.spec.granularity)?;
        if data.len() != layout.numel {
            return Err(Error::ShapeMismatch {
                what: "observed data length vs. shape".into(),
                expected: shape.to_vec(),
                got: vec![data.len()],
            });
        }
        check_finite(data, shape)?;
        let key = match self.spec.granularity {
            Granularity::PerTensor => vec![],
            Granularity::PerChannel { axis } => vec![shape[axis]],
            _ => shape.to_vec(),
        };
        match &self.key {
            Some(k) if *k != key => {
                return Err(Error::ShapeMismatch {
                    what: format!("batch slices for {} statistics", self.spec.granularity),
                    expected: k.clone(),
                    got: key,
                });
            }
            _ => self.key = Some(key),
        }
        let n = layout.num_slices();
        let mut batch = vec![Range::empty(); n];
        for (i, &v) in data.iter().enumerate() {
            batch[layout.slice_of(i)].include(v);
        }
        let symmetric = self.spec.scheme == Scheme::Symmetric;
        match &mut self.state {
            State::Extremes(ranges) => {
                if ranges.is_empty() {
                    *ranges = batch;
                } else if let CalibrationMethod::MovingAverageMinMax { momentum } =
                    self.spec.calibration
                {
                    for (r, b) in ranges.iter_mut().zip(&batch) {
                        r.min += momentum * (b.min - r.min);
                        r.max += momentum * (b.max - r.max);
                    }
                } else {
                    for (r, b) in ranges.iter_mut().zip(&batch) {
                        *r = r.union(*b);
                    }
                }
            }
            State::Histograms(hists) => {
                let bins = if n == 1 {
                    BINS_PER_TENSOR
                } else {
                    BINS_PER_SLICE
                };
                if hists.is_empty() {
                    *hists = vec![Histogram::new(bins); n];
                }
                let mut per_slice: Vec<Vec<f32>> = if n == 1 {
                    vec![]
                } else {
                    let mut v = vec![Vec::new(); n];
                    for (i, &x) in data.iter().enumerate() {
                        v[layout.slice_of(i)].push(x);
                    }
                    v
                };
                for (k, h) in hists.iter_mut().enumerate() {
                    let values: &[f32] = if n == 1 { data } else { &per_slice[k] };
                    let b = batch[k];
                    if symmetric {
                        let a = b.min.abs().max(b.max.abs());
                        h.add(values.iter().map(|v| v.abs()), Range { min: 0.0, max: a });
                    } else {
                        h.add(values.iter().copied(), b);
                    }
                }
                per_slice.clear();
            }
        }
        self.batches += 1;
        Ok(())
    }

    /// [`Observer::observe`] on a burn tensor (read back to the host).
    pub fn observe_tensor<B: Backend, const D: usize>(&mut self, x: &Tensor<B, D>) -> Result<()> {
        let (data, shape) = tensor_to_vec(x)?;
        self.observe(&data, &shape)
    }

    /// The clipping range of every slice; [`Error::Empty`] before the first batch.
    pub fn ranges(&self) -> Result<Vec<Range>> {
        if self.batches == 0 {
            return Err(Error::Empty {
                what: "calibration set".into(),
                shape: vec![0],
            });
        }
        let symmetric = self.spec.scheme == Scheme::Symmetric;
        Ok(match &self.state {
            State::Extremes(r) => r.clone(),
            State::Histograms(hists) => hists
                .iter()
                .map(|h| {
                    let r = match self.spec.calibration {
                        CalibrationMethod::Percentile { percentile } => {
                            h.percentile_range(percentile, symmetric)
                        }
                        CalibrationMethod::Mse => h.mse_range(&self.spec),
                        _ => h.kl_range(&self.spec),
                    };
                    if symmetric {
                        Range {
                            min: -r.max,
                            max: r.max,
                        }
                    } else {
                        r
                    }
                })
                .collect(),
        })
    }
}

/// A fixed-bin histogram over `[lo, hi]` that widens on demand.
#[derive(Clone, Debug)]
struct Histogram {
    range: Range,
    counts: Vec<f64>,
}

impl Histogram {
    fn new(bins: usize) -> Self {
        Self {
            range: Range::empty(),
            counts: vec![0.0; bins],
        }
    }

    fn bins(&self) -> usize {
        self.counts.len()
    }

    fn width(&self) -> f32 {
        (self.range.max - self.range.min) / self.bins() as f32
    }

    fn bin_of(&self, v: f32) -> usize {
        let w = self.width();
        if w <= 0.0 {
            return 0;
        }
        (((v - self.range.min) / w) as usize).min(self.bins() - 1)
    }

    fn center(&self, i: usize) -> f32 {
        self.range.min + (i as f32 + 0.5) * self.width()
    }

    fn add(&mut self, values: impl Iterator<Item = f32>, batch: Range) {
        let total: f64 = self.counts.iter().sum();
        let wider = self.range.union(batch);
        if total == 0.0 {
            self.range = wider;
        } else if wider != self.range {
            let old = std::mem::replace(
                self,
                Self {
                    range: wider,
                    counts: vec![0.0; self.bins()],
                },
            );
            for (i, c) in old.counts.iter().enumerate() {
                if *c > 0.0 {
                    let b = self.bin_of(old.center(i));
                    self.counts[b] += c;
                }
            }
        }
        for v in values {
            let b = self.bin_of(v);
            self.counts[b] += 1.0;
        }
    }

    /// Lower edge of the bin where the cumulative count first reaches `q` of the total.
    fn quantile_edge(&self, q: f64, upper: bool) -> f32 {
        let total: f64 = self.counts.iter().sum();
        let mut acc = 0.0;
        for (i, c) in self.counts.iter().enumerate() {
            acc += c;
            if acc >= q * total {
                let edge = if upper { i + 1 } else { i };
                return self.range.min + edge as f32 * self.width();
            }
        }
        self.range.max
    }

    fn percentile_range(&self, p: f64, symmetric: bool) -> Range {
        let hi = self.quantile_edge(p / 100.0, true).min(self.range.max);
        if symmetric {
            Range { min: 0.0, max: hi }
        } else {
            let lo = self
                .quantile_edge(1.0 - p / 100.0, false)
                .max(self.range.min);
            Range { min: lo, max: hi }
        }
    }

    /// The candidate range for shrink factor `alpha` (symmetric histograms hold `|x|`).
    fn shrunk(&self, alpha: f32) -> Range {
        Range {
            min: self.range.min * alpha,
            max: self.range.max * alpha,
        }
    }

    fn mse_range(&self, spec: &QuantSpec) -> Range {
        let symmetric = spec.scheme == Scheme::Symmetric;
        let mut best = (f64::INFINITY, self.range);
        for step in 1..=SEARCH_STEPS {
            let r = self.shrunk(step as f32 / SEARCH_STEPS as f32);
            let full = if symmetric {
                Range {
                    min: -r.max,
                    max: r.max,
                }
            } else {
                r
            };
            let (s, z) = scale_and_zero_point(spec, full);
            let err: f64 = self
                .counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0.0)
                .map(|(i, c)| {
                    let x = self.center(i);
                    let d = f64::from(x - fake_quant(x, s, z, spec));
                    c * d * d
                })
                .sum();
            if err < best.0 {
                best = (err, r);
            }
        }
        best.1
    }

    fn kl_range(&self, spec: &QuantSpec) -> Range {
        let bins = self.bins();
        let b = spec.bits.get();
        if spec.scheme == Scheme::Symmetric {
            // TensorRT: thresholds at bin edges i = levels..=bins of the |x| histogram.
            let levels = 1usize << (b - 1);
            if levels >= bins {
                return self.range;
            }
            let stride = ((bins - levels) / 256).max(1);
            let mut best = (f64::INFINITY, bins);
            let mut i = levels;
            while i <= bins {
                let kl = clipped_kl(&self.counts, 0, i, levels);
                if kl < best.0 {
                    best = (kl, i);
                }
                i += stride;
            }
            Range {
                min: 0.0,
                max: self.range.min + best.1 as f32 * self.width(),
            }
        } else {
            let levels = 1usize << b;
            let mut best = (f64::INFINITY, self.range);
            for step in 1..=SEARCH_STEPS {
                let r = self.shrunk(step as f32 / SEARCH_STEPS as f32);
                let start = self.bin_of(r.min);
                let end = (self.bin_of(r.max) + 1).min(bins);
                if end - start < levels {
                    continue;
                }
                let kl = clipped_kl(&self.counts, start, end, levels);
                if kl < best.0 {
                    best = (kl, r);
                }
            }
            best.1
        }
    }
}

/// KL(P ‖ Q) where P is `hist[start..end]` with the outliers folded into its end bins and Q is P
/// merged into `levels` bins and spread back over P's non-empty bins (TensorRT's procedure, with
/// MXNet's `_smooth_distribution` smoothing of zero bins, eps = 1e-4).
fn clipped_kl(hist: &[f64], start: usize, end: usize, levels: usize) -> f64 {
    let mut p: Vec<f64> = hist[start..end].to_vec();
    let n = p.len();
    p[0] += hist[..start].iter().sum::<f64>();
    p[n - 1] += hist[end..].iter().sum::<f64>();
    let merged = n / levels;
    let mut q = vec![0.0; n];
    for l in 0..levels {
        let lo = l * merged;
        let hi = if l == levels - 1 { n } else { lo + merged };
        let total: f64 = hist[start + lo..start + hi].iter().sum();
        let nonzero = p[lo..hi].iter().filter(|v| **v > 0.0).count();
        if nonzero > 0 {
            for j in lo..hi {
                if p[j] > 0.0 {
                    q[j] = total / nonzero as f64;
                }
            }
        }
    }
    match (smooth(&p), smooth(&q)) {
        (Some(p), Some(q)) => p
            .iter()
            .zip(&q)
            .filter(|(a, _)| **a > 0.0)
            .map(|(a, b)| a * (a / b).ln())
            .sum(),
        _ => f64::INFINITY,
    }
}

/// Normalises and moves `eps` of mass onto empty bins (MXNet / ONNX Runtime `smooth_distribution`).
fn smooth(d: &[f64]) -> Option<Vec<f64>> {
    const EPS: f64 = 1e-4;
    let total: f64 = d.iter().sum();
    if total <= 0.0 {
        return None;
    }
    let zeros = d.iter().filter(|v| **v == 0.0).count();
    let nonzeros = d.len() - zeros;
    if nonzeros == 0 {
        return None;
    }
    let eps1 = EPS * zeros as f64 / nonzeros as f64;
    if eps1 >= 1.0 {
        return None;
    }
    Some(
        d.iter()
            .map(|v| if *v == 0.0 { EPS } else { v / total - eps1 })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::Rng;

    fn spec(method: CalibrationMethod, scheme: Scheme) -> QuantSpec {
        QuantSpec::new(4, scheme, Granularity::PerTensor)
            .unwrap()
            .with_calibration(method)
    }

    #[test]
    fn min_max_streams_over_batches() {
        let mut o = Observer::new(spec(CalibrationMethod::MinMax, Scheme::Asymmetric)).unwrap();
        o.observe(&[1.0, 2.0, -0.5], &[3]).unwrap();
        o.observe(&[4.0, 0.0, -3.0, 1.0], &[2, 2]).unwrap();
        assert_eq!(
            o.ranges().unwrap(),
            vec![Range {
                min: -3.0,
                max: 4.0
            }]
        );
    }

    #[test]
    fn moving_average_weights_the_newest_batch() {
        let m = CalibrationMethod::MovingAverageMinMax { momentum: 0.5 };
        let mut o = Observer::new(spec(m, Scheme::Asymmetric)).unwrap();
        o.observe(&[0.0, 2.0], &[2]).unwrap();
        o.observe(&[-2.0, 4.0], &[2]).unwrap();
        assert_eq!(
            o.ranges().unwrap(),
            vec![Range {
                min: -1.0,
                max: 3.0
            }]
        );
    }

    #[test]
    fn empty_calibration_and_bad_batches_are_errors() {
        let mut o = Observer::new(spec(CalibrationMethod::Kl, Scheme::Symmetric)).unwrap();
        assert!(matches!(o.ranges(), Err(Error::Empty { .. })));
        assert!(matches!(
            o.observe(&[1.0, f32::NAN], &[2]),
            Err(Error::NonFinite { index: 1, .. })
        ));
        assert!(matches!(
            o.observe(&[1.0], &[2]),
            Err(Error::ShapeMismatch { .. })
        ));
        let pc = QuantSpec::new(8, Scheme::Symmetric, Granularity::PerChannel { axis: 1 }).unwrap();
        let mut o = Observer::new(pc).unwrap();
        o.observe(&[1.0; 6], &[2, 3]).unwrap();
        assert!(matches!(
            o.observe(&[1.0; 8], &[2, 4]),
            Err(Error::ShapeMismatch { .. })
        ));
        o.observe(&[1.0; 9], &[3, 3]).unwrap();
    }

    /// On a Gaussian with a few huge outliers, clipping methods must clip the outliers and keep the
    /// bulk at 4 bits: percentile, MSE and KL choose a range well inside the outliers; min-max does
    /// not. (At 8 bits the MSE optimum keeps these outliers: their clipping error would outweigh the
    /// finer step — a correct answer, so the test uses 4 bits.)
    #[test]
    fn clipping_methods_clip_outliers() {
        let mut rng = Rng::new(7);
        let mut data: Vec<f32> = (0..20_000).map(|_| rng.gaussian()).collect();
        data[17] = 60.0;
        data[9001] = -55.0;
        let methods = [
            CalibrationMethod::Percentile { percentile: 99.99 },
            CalibrationMethod::Mse,
            CalibrationMethod::Kl,
        ];
        for scheme in [Scheme::Symmetric, Scheme::Asymmetric] {
            let mut mm = Observer::new(spec(CalibrationMethod::MinMax, scheme)).unwrap();
            mm.observe(&data, &[data.len()]).unwrap();
            assert!(mm.ranges().unwrap()[0].max >= 60.0);
            for m in methods {
                let mut o = Observer::new(spec(m, scheme)).unwrap();
                for chunk in data.chunks(5000) {
                    o.observe(chunk, &[chunk.len()]).unwrap();
                }
                let r = o.ranges().unwrap()[0];
                assert!(r.max > 2.5 && r.max < 20.0, "{m:?} {scheme:?}: {r:?}");
                assert!(r.min < -2.5 && r.min > -20.0, "{m:?} {scheme:?}: {r:?}");
            }
        }
    }

    /// The MSE search must not be worse than min-max on the data it saw (min-max is one of its
    /// candidates, up to histogram resolution).
    #[test]
    fn mse_range_beats_min_max_on_laplacian() {
        let mut rng = Rng::new(3);
        let data: Vec<f32> = (0..50_000).map(|_| rng.laplacian()).collect();
        let mse_of = |method| {
            let s = QuantSpec::new(4, Scheme::Symmetric, Granularity::PerTensor)
                .unwrap()
                .with_calibration(method);
            let p = crate::uniform::QuantParams::calibrate(&data, &[data.len()], &s).unwrap();
            let codes = crate::uniform::quantize_ref(&data, &p).unwrap();
            let back = crate::uniform::dequantize_ref(&codes, &p).unwrap();
            crate::metrics::mse(&data, &back)
        };
        let (mse, minmax) = (
            mse_of(CalibrationMethod::Mse),
            mse_of(CalibrationMethod::MinMax),
        );
        assert!(mse < 0.5 * minmax, "mse {mse} vs min-max {minmax}");
    }

    #[test]
    fn kl_of_identical_distribution_is_zero() {
        let h = vec![1.0, 2.0, 3.0, 4.0];
        assert!(clipped_kl(&h, 0, 4, 4).abs() < 1e-12);
        assert!(clipped_kl(&h, 0, 4, 2) > 0.0);
    }
}
