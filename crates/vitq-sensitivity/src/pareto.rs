//! Pareto fronts of accuracy against model size and against modelled energy, as CSV and as a PNG
//! plot.
//!
//! A point is on a front when no other point is at least as accurate and at most as costly, with one
//! of the two strictly better.
//!
//! ```
//! use vitq_sensitivity::pareto::{Axis, Point, front};
//!
//! let p = |name: &str, acc: f64, bytes: u64| Point {
//!     name: name.into(), kind: "uniform".into(), accuracy: acc, weight_bytes: bytes,
//!     avg_weight_bits: 0.0, energy_pj: bytes as f64,
//! };
//! let pts = [p("a", 0.90, 100), p("b", 0.85, 120), p("c", 0.92, 200)];
//! assert_eq!(front(&pts, Axis::Bytes), vec![0, 2]); // b is worse and dearer than a
//! ```

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};

/// One evaluated config.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Point {
    /// Label (`w4a8`, `mixed 4.5 bits`, `f32`).
    pub name: String,
    /// `float`, `uniform` or `mixed` (drawn in different colours).
    pub kind: String,
    /// Top-1 accuracy in `[0, 1]`.
    pub accuracy: f64,
    /// Weight bytes of the quantizable layers (codes and scales).
    pub weight_bytes: u64,
    /// Average weight bits over the quantizable layers' weights.
    pub avg_weight_bits: f64,
    /// Modelled energy per image, pJ.
    pub energy_pj: f64,
}

/// The cost a front is taken against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Axis {
    /// Weight bytes.
    Bytes,
    /// Energy per image.
    Energy,
}

impl Axis {
    fn of(self, p: &Point) -> f64 {
        match self {
            Axis::Bytes => p.weight_bytes as f64,
            Axis::Energy => p.energy_pj,
        }
    }
}

/// Indices of the points on the front, by increasing cost.
pub fn front(points: &[Point], axis: Axis) -> Vec<usize> {
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by(|&a, &b| {
        axis.of(&points[a])
            .total_cmp(&axis.of(&points[b]))
            .then(points[b].accuracy.total_cmp(&points[a].accuracy))
    });
    let mut best = f64::NEG_INFINITY;
    order
        .into_iter()
        .filter(|&i| {
            let keep = points[i].accuracy > best;
            if keep {
                best = points[i].accuracy;
            }
            keep
        })
        .collect()
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The points as CSV, with whether each is on the size front and on the energy front.
pub fn to_csv(points: &[Point]) -> String {
    let (fb, fe) = (front(points, Axis::Bytes), front(points, Axis::Energy));
    let mut out = String::from(
        "name,kind,top1,weight_bytes,avg_weight_bits,energy_uj,front_bytes,front_energy\n",
    );
    for (i, p) in points.iter().enumerate() {
        out.push_str(&format!(
            "{},{},{:.4},{},{:.3},{:.4},{},{}\n",
            csv_field(&p.name),
            csv_field(&p.kind),
            100.0 * p.accuracy,
            p.weight_bytes,
            p.avg_weight_bits,
            p.energy_pj / 1e6,
            fb.contains(&i),
            fe.contains(&i)
        ));
    }
    out
}

/// Writes `bytes` to `path` through a temporary file in the same folder, so a failure leaves no
/// partial file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

/// The vendored font (DejaVu Sans, Bitstream Vera license: `assets/DejaVuSans-LICENSE.txt`).
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FAMILY: &str = "vitq-sans";

fn register_font() -> Result<()> {
    static DONE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        plotters::style::register_font(FAMILY, plotters::style::FontStyle::Normal, FONT).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(Error::Plot("the vendored font does not load".into()))
    }
}

/// Options of [`plot_png`].
#[derive(Clone, Debug)]
pub struct PlotOptions {
    /// Title above both panels.
    pub title: String,
    /// Image width and height in pixels.
    pub size: (u32, u32),
    /// Points below this accuracy (in `[0, 1]`) are left out of the plot (not of the CSV), so that a
    /// collapsed 2-bit model does not squash the interesting part.
    pub min_accuracy: f64,
}

impl Default for PlotOptions {
    fn default() -> Self {
        Self {
            title: "Accuracy against size and energy".into(),
            size: (1400, 620),
            min_accuracy: 0.0,
        }
    }
}

fn plot_err<E: std::fmt::Display>(e: E) -> Error {
    Error::Plot(e.to_string())
}

/// Draws accuracy against weight bytes (left) and against energy (right), both on log axes, with
/// each front as a line, and returns the PNG file's bytes.
pub fn plot_png(points: &[Point], opts: &PlotOptions) -> Result<Vec<u8>> {
    use plotters::prelude::*;

    register_font()?;
    let shown: Vec<Point> = points
        .iter()
        .filter(|p| p.accuracy >= opts.min_accuracy && p.weight_bytes > 0 && p.energy_pj > 0.0)
        .cloned()
        .collect();
    if shown.is_empty() {
        return Err(Error::Plot("no points to draw".into()));
    }
    let (w, h) = opts.size;
    if w < 400 || h < 300 || w > 8000 || h > 8000 {
        return Err(Error::Plot(format!(
            "image size {w}×{h} is not in 400×300..8000×8000"
        )));
    }
    let mut buf = vec![255u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let root = root
            .titled(&opts.title, (FAMILY, 24).into_font())
            .map_err(plot_err)?;
        let (left, right) = root.split_horizontally(w / 2);
        let acc: Vec<f64> = shown.iter().map(|p| 100.0 * p.accuracy).collect();
        let lo = acc.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = acc.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let pad = ((hi - lo) * 0.08).max(0.3);
        let y_range = (lo - pad)..(hi + pad);
        for (area, axis) in [(&left, Axis::Bytes), (&right, Axis::Energy)] {
            let scale = match axis {
                Axis::Bytes => 1.0 / 1024.0,
                Axis::Energy => 1e-6,
            };
            let x = |p: &Point| axis.of(p) * scale;
            let xlo = shown.iter().map(x).fold(f64::INFINITY, f64::min);
            let xhi = shown.iter().map(x).fold(f64::NEG_INFINITY, f64::max);
            let x_range = (xlo / 1.15)..(xhi * 1.3);
            let (xdesc, caption) = match axis {
                Axis::Bytes => ("weight bytes (KiB, log scale)", "accuracy vs. model size"),
                Axis::Energy => (
                    "energy per image (µJ, Horowitz 45 nm model, log scale)",
                    "accuracy vs. energy",
                ),
            };
            let mut chart = ChartBuilder::on(area)
                .caption(caption, (FAMILY, 19).into_font())
                .margin(18)
                .x_label_area_size(48)
                .y_label_area_size(60)
                .build_cartesian_2d(x_range.log_scale(), y_range.clone())
                .map_err(plot_err)?;
            chart
                .configure_mesh()
                .x_desc(xdesc)
                .y_desc("top-1 accuracy (%)")
                .label_style((FAMILY, 14).into_font())
                .axis_desc_style((FAMILY, 15).into_font())
                .x_label_formatter(&|v| format!("{v:.0}"))
                .y_label_formatter(&|v| format!("{v:.1}"))
                .light_line_style(WHITE.mix(0.0))
                .draw()
                .map_err(plot_err)?;
            let f = front(&shown, axis);
            let line: Vec<(f64, f64)> = f
                .iter()
                .map(|&i| (x(&shown[i]), 100.0 * shown[i].accuracy))
                .collect();
            let grey = RGBColor(120, 120, 120);
            chart
                .draw_series(LineSeries::new(line, grey.stroke_width(2)))
                .map_err(plot_err)?
                .label("Pareto front")
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 22, y)], grey.stroke_width(2))
                });
            let kinds = [
                ("float", RGBColor(0, 0, 0), "float 32"),
                ("uniform", RGBColor(31, 119, 180), "uniform"),
                ("mixed", RGBColor(214, 39, 40), "mixed precision (DP)"),
            ];
            for (kind, colour, label) in kinds {
                let pts: Vec<&Point> = shown.iter().filter(|p| p.kind == kind).collect();
                if pts.is_empty() {
                    continue;
                }
                let style = colour.filled();
                let mixed = kind == "mixed";
                chart
                    .draw_series(pts.iter().map(|p| {
                        let at = (x(p), 100.0 * p.accuracy);
                        if mixed {
                            TriangleMarker::new(at, 7, style).into_dyn()
                        } else {
                            Circle::new(at, 5, style).into_dyn()
                        }
                    }))
                    .map_err(plot_err)?
                    .label(label)
                    .legend(move |(x, y)| {
                        if mixed {
                            TriangleMarker::new((x + 11, y), 7, style).into_dyn()
                        } else {
                            Circle::new((x + 11, y), 5, style).into_dyn()
                        }
                    });
                // Labels beside the marker: above-right for mixed points, below-right otherwise,
                // so that the two kinds at one size do not overwrite each other.
                let offset = if mixed { (6, -18) } else { (7, 4) };
                chart
                    .draw_series(pts.iter().map(|p| {
                        EmptyElement::at((x(p), 100.0 * p.accuracy))
                            + Text::new(
                                p.name.clone(),
                                offset,
                                (FAMILY, 13).into_font().color(&colour),
                            )
                    }))
                    .map_err(plot_err)?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .label_font((FAMILY, 14).into_font())
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK)
                .draw()
                .map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    let mut png = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut png),
        &buf,
        w,
        h,
        image::ExtendedColorType::Rgb8,
    )
    .map_err(plot_err)?;
    Ok(png)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, kind: &str, acc: f64, bytes: u64, energy: f64) -> Point {
        Point {
            name: name.into(),
            kind: kind.into(),
            accuracy: acc,
            weight_bytes: bytes,
            avg_weight_bits: 0.0,
            energy_pj: energy,
        }
    }

    #[test]
    fn fronts_drop_dominated_points() {
        let pts = [
            p("f32", "float", 0.915, 1000, 50.0),
            p("w8a8", "uniform", 0.914, 300, 10.0),
            p("w4a8", "uniform", 0.898, 150, 9.0),
            p("mixed", "mixed", 0.905, 150, 9.5),
            p("w4a4", "uniform", 0.837, 150, 5.0),
        ];
        assert_eq!(front(&pts, Axis::Bytes), vec![3, 1, 0]);
        assert_eq!(front(&pts, Axis::Energy), vec![4, 2, 3, 1, 0]);
        let csv = to_csv(&pts);
        assert_eq!(csv.lines().count(), 6);
        assert!(
            csv.contains("mixed,mixed,90.5000,150,0.000,0.0000,true,true"),
            "{csv}"
        );
    }

    #[test]
    fn plots_are_pngs() {
        let pts = [
            p("f32", "float", 0.915, 1_000_000, 50e6),
            p("w8a8", "uniform", 0.914, 300_000, 10e6),
            p("mixed, 5 bits", "mixed", 0.905, 150_000, 9.5e6),
        ];
        let png = plot_png(&pts, &PlotOptions::default()).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        assert!(plot_png(&[], &PlotOptions::default()).is_err());
    }
}
