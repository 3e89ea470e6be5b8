//! A small, dependency-free SVG line-chart writer for the examples and tests.
//!
//! A [`Chart`] holds a title, axis labels, a linear or base-10 logarithmic
//! scale per axis and any number of [`Series`]; [`Chart::to_svg`] renders it
//! as a standalone SVG document, [`row_svg`] puts several charts side by side
//! in one document, and [`save_svg`] / [`Chart::save`] write a file
//! atomically (a `.tmp` sibling, then a rename).
//!
//! A series may carry a `(low, high)` range per point, drawn as a shaded
//! band ([`Series::band`]) or as error bars ([`Series::error_bars`]), under
//! every line; the axes extend to cover the ranges.
//!
//! Points whose coordinates are not finite (or not positive on a log axis)
//! are skipped and break the line, so a series with a hole draws as several
//! segments. Degenerate inputs (no series, no drawable point, a single point,
//! constant data) produce a valid chart with a padded range, never `NaN` in
//! the output.
//!
//! ```ignore
//! let chart = Chart::new("loss")
//!     .x_label("epoch")
//!     .y_log()
//!     .series(Series::from_y("train", &[2.3, 0.9, 0.4]))
//!     .series(Series::from_y("test", &[2.2, 1.0, 0.6]).dashed());
//! chart.save(Path::new("loss.svg"))?;
//! ```

use std::fmt::Write as _;
use std::path::Path;

/// How an axis maps data values to positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// Positions proportional to the value.
    Linear,
    /// Positions proportional to `log10(value)`; non-positive values are skipped.
    Log10,
}

/// How a series draws the range of values around each of its points (the
/// spread over seeds, say).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpreadStyle {
    /// A shaded band from the lower to the upper edge, under the line.
    Band,
    /// A vertical error bar with caps at each point.
    Bars,
}

/// One line of a chart: `(x, y)` points in drawing order.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend text; an empty label keeps the series out of the legend.
    pub label: String,
    /// The points, joined in this order.
    pub points: Vec<(f64, f64)>,
    /// Draw the line dashed.
    pub dashed: bool,
    /// Palette slot; `None` takes the series' position in the chart.
    pub colour: Option<usize>,
    /// `(low, high)` of the y range at each point, one per point, and how to
    /// draw it; a range with an undrawable end (non-finite, or not positive
    /// on a log axis) is left out.
    pub spread: Option<(SpreadStyle, Vec<(f64, f64)>)>,
}

impl Series {
    /// A solid series.
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            label: label.into(),
            points,
            dashed: false,
            colour: None,
            spread: None,
        }
    }

    /// A series with `x = 1, 2, 3, ...` (e.g. one value per epoch).
    pub fn from_y(label: impl Into<String>, ys: &[f64]) -> Self {
        let points = ys
            .iter()
            .enumerate()
            .map(|(i, &y)| ((i + 1) as f64, y))
            .collect();
        Series::new(label, points)
    }

    /// The same series drawn with a dashed line.
    pub fn dashed(mut self) -> Self {
        self.dashed = true;
        self
    }

    /// The same series in palette colour `slot` (to pair it with another).
    pub fn colour(mut self, slot: usize) -> Self {
        self.colour = Some(slot);
        self
    }

    /// The same series with a shaded band from `ranges[i].0` to
    /// `ranges[i].1` around point `i`.
    ///
    /// # Panics
    /// If `ranges` and the points differ in length.
    #[track_caller]
    pub fn band(self, ranges: Vec<(f64, f64)>) -> Self {
        self.with_spread(SpreadStyle::Band, ranges)
    }

    /// The same series with an error bar from `ranges[i].0` to `ranges[i].1`
    /// at point `i`.
    ///
    /// # Panics
    /// If `ranges` and the points differ in length.
    #[track_caller]
    pub fn error_bars(self, ranges: Vec<(f64, f64)>) -> Self {
        self.with_spread(SpreadStyle::Bars, ranges)
    }

    #[track_caller]
    fn with_spread(mut self, style: SpreadStyle, ranges: Vec<(f64, f64)>) -> Self {
        assert_eq!(
            ranges.len(),
            self.points.len(),
            "series {:?}: {} ranges for {} points",
            self.label,
            ranges.len(),
            self.points.len()
        );
        self.spread = Some((style, ranges));
        self
    }
}

/// A line chart: frame, title, axis labels, ticks, grid, legend and series.
#[derive(Clone, Debug)]
pub struct Chart {
    title: String,
    x_label: String,
    y_label: String,
    x_scale: Scale,
    y_scale: Scale,
    x_integer: bool,
    series: Vec<Series>,
    width: f64,
    height: f64,
}

/// Colour-blind-friendly palette (matplotlib's tab10), cycled over series.
const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// Values beyond this magnitude are treated like non-finite ones, so that
/// range arithmetic can never overflow to infinity.
const LIMIT: f64 = 1e300;
/// Series with at most this many points get a circle at each point.
const MARKER_MAX_POINTS: usize = 40;
const DEFAULT_WIDTH: f64 = 520.0;
const DEFAULT_HEIGHT: f64 = 360.0;
const TICK_FONT: f64 = 11.0;
const LABEL_FONT: f64 = 12.0;
const TITLE_FONT: f64 = 14.0;

impl Chart {
    /// An empty 520×360 chart with linear axes.
    pub fn new(title: impl Into<String>) -> Self {
        Chart {
            title: title.into(),
            x_label: String::new(),
            y_label: String::new(),
            x_scale: Scale::Linear,
            y_scale: Scale::Linear,
            x_integer: false,
            series: Vec::new(),
            width: DEFAULT_WIDTH,
            height: DEFAULT_HEIGHT,
        }
    }

    /// Text under the x axis.
    pub fn x_label(mut self, s: impl Into<String>) -> Self {
        self.x_label = s.into();
        self
    }

    /// Text left of the y axis (drawn rotated).
    pub fn y_label(mut self, s: impl Into<String>) -> Self {
        self.y_label = s.into();
        self
    }

    /// A base-10 logarithmic x axis.
    pub fn x_log(mut self) -> Self {
        self.x_scale = Scale::Log10;
        self
    }

    /// A base-10 logarithmic y axis.
    pub fn y_log(mut self) -> Self {
        self.y_scale = Scale::Log10;
        self
    }

    /// Linear x ticks at whole numbers only (epochs, steps, sizes).
    pub fn x_integer(mut self) -> Self {
        self.x_integer = true;
        self
    }

    /// The size in pixels; non-finite or non-positive values keep the default.
    pub fn size(mut self, w: f64, h: f64) -> Self {
        if w.is_finite() && w > 0.0 {
            self.width = w;
        }
        if h.is_finite() && h > 0.0 {
            self.height = h;
        }
        self
    }

    /// Adds a series; colours follow the order of the calls.
    pub fn series(mut self, s: Series) -> Self {
        self.series.push(s);
        self
    }

    /// A complete standalone SVG document.
    pub fn to_svg(&self) -> String {
        let (w, h) = (num(self.width), num(self.height));
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\">\n"
        );
        self.write_body(&mut s);
        s.push_str("</svg>\n");
        s
    }

    /// Writes [`Chart::to_svg`] to `path` atomically (see [`save_svg`]).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        save_svg(path, &self.to_svg())
    }

    /// The chart's elements, in a coordinate system with the origin at its
    /// top-left corner.
    fn write_body(&self, s: &mut String) {
        let (width, height) = (self.width, self.height);
        // The drawable points of each series, already transformed to axis
        // space, split into runs at skipped points.
        let runs: Vec<Vec<Vec<(f64, f64)>>> = self
            .series
            .iter()
            .map(|ser| {
                let mut runs = vec![Vec::new()];
                for &(x, y) in &ser.points {
                    match (transform(self.x_scale, x), transform(self.y_scale, y)) {
                        (Some(tx), Some(ty)) => runs.last_mut().unwrap().push((tx, ty)),
                        _ => {
                            if !runs.last().unwrap().is_empty() {
                                runs.push(Vec::new());
                            }
                        }
                    }
                }
                runs.retain(|r| !r.is_empty());
                runs
            })
            .collect();
        // The drawable ranges of each series in axis space, `(x, low, high)`
        // with `None` where a range is left out (it splits a band).
        let ranges: Vec<Vec<Option<(f64, f64, f64)>>> = self
            .series
            .iter()
            .map(|ser| {
                let Some((_, rs)) = &ser.spread else {
                    return Vec::new();
                };
                ser.points
                    .iter()
                    .zip(rs)
                    .map(|(&(x, _), &(a, b))| {
                        let tx = transform(self.x_scale, x)?;
                        let ta = transform(self.y_scale, a)?;
                        let tb = transform(self.y_scale, b)?;
                        Some((tx, ta.min(tb), ta.max(tb)))
                    })
                    .collect()
            })
            .collect();
        let all = runs.iter().flatten().flatten().copied();
        let range_ends = ranges
            .iter()
            .flatten()
            .flatten()
            .flat_map(|&(x, lo, hi)| [(x, lo), (x, hi)]);
        let x_axis = Axis::new(
            self.x_scale,
            min_max(all.clone().chain(range_ends.clone()).map(|p| p.0)),
            self.x_integer,
        );
        let y_axis = Axis::new(
            self.y_scale,
            min_max(all.chain(range_ends).map(|p| p.1)),
            false,
        );

        // Margins sized to the text around the plot area.
        let y_tick_w = y_axis.ticks.iter().map(|t| t.width).fold(0.0, f64::max);
        let left = 8.0 + y_tick_w + 6.0 + if self.y_label.is_empty() { 0.0 } else { 20.0 };
        let last_x_tick = x_axis.ticks.last().map_or(0.0, |t| t.width);
        let right = (last_x_tick / 2.0 + 4.0).max(14.0);
        let top = if self.title.is_empty() { 12.0 } else { 32.0 };
        let bottom = 6.0 + TICK_FONT + 6.0 + if self.x_label.is_empty() { 4.0 } else { 24.0 };
        let pw = (width - left - right).max(10.0);
        let ph = (height - top - bottom).max(10.0);
        let px = |t: f64| left + (t - x_axis.lo) / (x_axis.hi - x_axis.lo) * pw;
        let py = |t: f64| top + ph - (t - y_axis.lo) / (y_axis.hi - y_axis.lo) * ph;

        let _ = writeln!(
            s,
            "<rect width=\"{}\" height=\"{}\" fill=\"white\"/>",
            num(width),
            num(height)
        );

        // Grid lines and tick marks.
        let (x0, x1, y0, y1) = (left, left + pw, top, top + ph);
        s.push_str("<g stroke=\"#e6e6e6\" stroke-width=\"1\">\n");
        for t in &x_axis.ticks {
            let x = num(px(t.pos));
            let _ = writeln!(
                s,
                "<line x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\"/>",
                num(y0),
                num(y1)
            );
        }
        for t in &y_axis.ticks {
            let y = num(py(t.pos));
            let _ = writeln!(
                s,
                "<line x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\"/>",
                num(x0),
                num(x1)
            );
        }
        s.push_str("</g>\n<g stroke=\"#444\" stroke-width=\"1\">\n");
        for (t, len) in x_axis
            .ticks
            .iter()
            .map(|t| (t.pos, 5.0))
            .chain(x_axis.minor.iter().map(|&m| (m, 3.0)))
        {
            let x = num(px(t));
            let _ = writeln!(
                s,
                "<line x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\"/>",
                num(y1),
                num(y1 + len)
            );
        }
        for (t, len) in y_axis
            .ticks
            .iter()
            .map(|t| (t.pos, 5.0))
            .chain(y_axis.minor.iter().map(|&m| (m, 3.0)))
        {
            let y = num(py(t));
            let _ = writeln!(
                s,
                "<line x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\"/>",
                num(x0 - len),
                num(x0)
            );
        }
        s.push_str("</g>\n");

        // Spreads under every line: bands as one polygon per run of drawable
        // ranges (upper edge forward, lower edge back), bars as a vertical
        // line with caps. A band run of one point draws as a bar.
        let mut drawn: Vec<(f64, f64)> = Vec::new();
        for (i, (ser, rs)) in self.series.iter().zip(&ranges).enumerate() {
            let Some((style, _)) = &ser.spread else {
                continue;
            };
            let colour = PALETTE[ser.colour.unwrap_or(i) % PALETTE.len()];
            let pix: Vec<Option<(f64, f64, f64)>> = rs
                .iter()
                .map(|r| r.map(|(x, lo, hi)| (px(x), py(lo), py(hi))))
                .collect();
            let mut bars: Vec<(f64, f64, f64)> = Vec::new();
            for run in pix.split(Option::is_none) {
                let run: Vec<(f64, f64, f64)> = run.iter().flatten().copied().collect();
                if *style == SpreadStyle::Bars || run.len() == 1 {
                    bars.extend_from_slice(&run);
                    continue;
                }
                if run.is_empty() {
                    continue;
                }
                s.push_str("<polygon points=\"");
                let upper = run.iter().map(|&(x, _, hi)| (x, hi));
                let lower = run.iter().rev().map(|&(x, lo, _)| (x, lo));
                for (k, (x, y)) in upper.chain(lower).enumerate() {
                    if k > 0 {
                        s.push(' ');
                    }
                    let _ = write!(s, "{},{}", num(x), num(y));
                    drawn.push((x, y));
                }
                let _ = writeln!(
                    s,
                    "\" fill=\"{colour}\" fill-opacity=\"0.18\" stroke=\"none\"/>"
                );
            }
            if !bars.is_empty() {
                let _ = writeln!(s, "<g stroke=\"{colour}\" stroke-width=\"1.2\">");
                for (x, lo, hi) in bars {
                    let _ = writeln!(
                        s,
                        "<line x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\"/>",
                        num(lo),
                        num(hi),
                        x = num(x)
                    );
                    for y in [lo, hi] {
                        let _ = writeln!(
                            s,
                            "<line x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\"/>",
                            num(x - 3.0),
                            num(x + 3.0),
                            y = num(y)
                        );
                    }
                    drawn.extend_from_slice(&[(x, lo), (x, hi)]);
                }
                s.push_str("</g>\n");
            }
        }

        // Series: one polyline per run of drawable points.
        for (i, (ser, runs)) in self.series.iter().zip(&runs).enumerate() {
            let colour = PALETTE[ser.colour.unwrap_or(i) % PALETTE.len()];
            let dash = if ser.dashed {
                " stroke-dasharray=\"6 4\""
            } else {
                ""
            };
            let markers = ser.points.len() <= MARKER_MAX_POINTS;
            for run in runs {
                let pts: Vec<(f64, f64)> = run.iter().map(|&(x, y)| (px(x), py(y))).collect();
                if pts.len() >= 2 {
                    s.push_str("<polyline points=\"");
                    for (k, (x, y)) in pts.iter().enumerate() {
                        if k > 0 {
                            s.push(' ');
                        }
                        let _ = write!(s, "{},{}", num(*x), num(*y));
                    }
                    let _ = writeln!(
                        s,
                        "\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" stroke-linejoin=\"round\"{dash}/>"
                    );
                    // Sample along each segment so legend placement sees lines, not just vertices.
                    for w in pts.windows(2) {
                        for k in 0..8 {
                            let f = k as f64 / 8.0;
                            drawn.push((
                                w[0].0 + f * (w[1].0 - w[0].0),
                                w[0].1 + f * (w[1].1 - w[0].1),
                            ));
                        }
                    }
                }
                drawn.extend_from_slice(&pts);
                // An isolated point would be invisible as a one-point line.
                if markers || pts.len() == 1 {
                    for (x, y) in &pts {
                        let _ = writeln!(
                            s,
                            "<circle cx=\"{}\" cy=\"{}\" r=\"2.5\" fill=\"{colour}\"/>",
                            num(*x),
                            num(*y)
                        );
                    }
                }
            }
        }

        // Frame on top of the lines.
        let _ = writeln!(
            s,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#444\" stroke-width=\"1\"/>",
            num(x0),
            num(y0),
            num(pw),
            num(ph)
        );

        // Tick labels.
        let _ = writeln!(s, "<g font-size=\"{}\" fill=\"#222\">", num(TICK_FONT));
        for t in &x_axis.ticks {
            let _ = writeln!(
                s,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                num(px(t.pos)),
                num(y1 + 6.0 + TICK_FONT),
                t.markup
            );
        }
        for t in &y_axis.ticks {
            let _ = writeln!(
                s,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
                num(x0 - 7.0),
                num(py(t.pos) + TICK_FONT * 0.35),
                t.markup
            );
        }
        s.push_str("</g>\n");

        // Legend in the corner of the plot area that covers the fewest drawn points.
        let entries: Vec<(usize, &Series)> = self
            .series
            .iter()
            .enumerate()
            .filter(|(_, ser)| !ser.label.is_empty())
            .collect();
        if !entries.is_empty() {
            let row_h = 16.0;
            let text_w = entries
                .iter()
                .map(|(_, ser)| text_width(&ser.label, TICK_FONT))
                .fold(0.0, f64::max);
            let (bw, bh) = (
                8.0 + 22.0 + 6.0 + text_w + 8.0,
                6.0 + row_h * entries.len() as f64 + 2.0,
            );
            let inset = 8.0;
            let corners = [
                (x1 - inset - bw, y0 + inset),
                (x0 + inset, y0 + inset),
                (x1 - inset - bw, y1 - inset - bh),
                (x0 + inset, y1 - inset - bh),
            ];
            let covered = |&(bx, by): &(f64, f64)| {
                drawn
                    .iter()
                    .filter(|&&(x, y)| {
                        x >= bx - 3.0 && x <= bx + bw + 3.0 && y >= by - 3.0 && y <= by + bh + 3.0
                    })
                    .count()
            };
            // `min_by_key` keeps the first minimum, so top-right wins ties.
            let (bx, by) = *corners.iter().min_by_key(|c| covered(c)).unwrap();
            let _ = writeln!(
                s,
                "<g font-size=\"{}\" fill=\"#222\">\n<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"3\" fill=\"white\" fill-opacity=\"0.85\" stroke=\"#bbb\"/>",
                num(TICK_FONT),
                num(bx),
                num(by),
                num(bw),
                num(bh)
            );
            for (row, (i, ser)) in entries.iter().enumerate() {
                let colour = PALETTE[ser.colour.unwrap_or(*i) % PALETTE.len()];
                let dash = if ser.dashed {
                    " stroke-dasharray=\"6 4\""
                } else {
                    ""
                };
                let cy = by + 4.0 + row_h * (row as f64 + 0.5);
                let _ = writeln!(
                    s,
                    "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{colour}\" stroke-width=\"2\"{dash}/>",
                    num(bx + 8.0),
                    num(cy),
                    num(bx + 30.0),
                    num(cy)
                );
                let _ = writeln!(
                    s,
                    "<text x=\"{}\" y=\"{}\">{}</text>",
                    num(bx + 36.0),
                    num(cy + TICK_FONT * 0.35),
                    escape(&ser.label)
                );
            }
            s.push_str("</g>\n");
        }

        // Title and axis labels.
        if !self.title.is_empty() {
            let _ = writeln!(
                s,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"{}\" font-weight=\"bold\" fill=\"#222\">{}</text>",
                num(left + pw / 2.0),
                num(top - 11.0),
                num(TITLE_FONT),
                escape(&self.title)
            );
        }
        if !self.x_label.is_empty() {
            let _ = writeln!(
                s,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"{}\" fill=\"#222\">{}</text>",
                num(left + pw / 2.0),
                num(y1 + 6.0 + TICK_FONT + 4.0 + LABEL_FONT),
                num(LABEL_FONT),
                escape(&self.x_label)
            );
        }
        if !self.y_label.is_empty() {
            let (lx, ly) = (8.0 + LABEL_FONT * 0.8, top + ph / 2.0);
            let _ = writeln!(
                s,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"{}\" fill=\"#222\" transform=\"rotate(-90 {} {})\">{}</text>",
                num(lx),
                num(ly),
                num(LABEL_FONT),
                num(lx),
                num(ly),
                escape(&self.y_label)
            );
        }
    }
}

/// Several charts side by side (top-aligned) in one SVG document.
pub fn row_svg(charts: &[Chart]) -> String {
    let width: f64 = charts.iter().map(|c| c.width).sum();
    let height = charts.iter().map(|c| c.height).fold(0.0, f64::max);
    let (w, h) = (num(width), num(height));
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\">\n<rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n"
    );
    let mut x = 0.0;
    for c in charts {
        let _ = writeln!(
            s,
            "<svg x=\"{}\" y=\"0\" width=\"{}\" height=\"{}\">",
            num(x),
            num(c.width),
            num(c.height)
        );
        c.write_body(&mut s);
        s.push_str("</svg>\n");
        x += c.width;
    }
    s.push_str("</svg>\n");
    s
}

/// Writes `svg` to `path` atomically with the library's
/// [`write_atomic`](backprop::io::write_atomic) (a temporary file beside it,
/// then a rename), so readers never see a half-written file.
pub fn save_svg(path: &Path, svg: &str) -> std::io::Result<()> {
    backprop::io::write_atomic(path, svg.as_bytes()).map_err(|e| match e {
        backprop::io::IoError::Io { source, .. } => source,
        e => std::io::Error::other(e.to_string()),
    })
}

/// A value on an axis in axis space (`log10` of it on a log axis), or
/// `None` when it cannot be drawn.
fn transform(scale: Scale, v: f64) -> Option<f64> {
    if !v.is_finite() || v.abs() > LIMIT {
        return None;
    }
    match scale {
        Scale::Linear => Some(v),
        Scale::Log10 if v > 0.0 => Some(v.log10()),
        Scale::Log10 => None,
    }
}

fn min_max(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// A labelled tick at `pos` in axis space.
#[derive(Clone, Debug)]
struct Tick {
    pos: f64,
    /// Plain text of the label, e.g. `0.2` or `1e-5` (`10^-6` for
    /// superscripts); the tests read the labels through it.
    #[cfg_attr(not(test), allow(dead_code))]
    text: String,
    /// SVG markup of the label (escaped, possibly with a superscript `<tspan>`).
    markup: String,
    /// Estimated rendered width in pixels.
    width: f64,
}

impl Tick {
    fn plain(pos: f64, text: String) -> Self {
        Tick {
            pos,
            width: text_width(&text, TICK_FONT),
            markup: escape(&text),
            text,
        }
    }

    /// `10` with the exponent `k` as a superscript.
    fn decade(k: i32) -> Self {
        let exp = k.to_string();
        Tick {
            pos: k as f64,
            width: text_width("10", TICK_FONT) + text_width(&exp, TICK_FONT * 0.75),
            // `dy` rather than `baseline-shift`, which not every renderer supports;
            // nothing follows the superscript, so the shifted baseline is harmless.
            markup: format!(
                "10<tspan dy=\"{}\" font-size=\"75%\">{exp}</tspan>",
                num(-0.4 * TICK_FONT)
            ),
            text: format!("10^{exp}"),
        }
    }
}

/// An axis range in axis space with its ticks.
#[derive(Clone, Debug)]
struct Axis {
    lo: f64,
    hi: f64,
    ticks: Vec<Tick>,
    /// Unlabelled minor tick positions (log axes only).
    minor: Vec<f64>,
}

impl Axis {
    /// The axis for data spanning `range` (in axis space; `None` when no
    /// point is drawable).
    fn new(scale: Scale, range: Option<(f64, f64)>, integer: bool) -> Self {
        match scale {
            Scale::Linear => {
                let (lo, hi) = linear_range(range);
                let ticks = nice_ticks(lo, hi, if integer { 1.0 } else { 0.0 });
                Axis {
                    lo,
                    hi,
                    ticks,
                    minor: Vec::new(),
                }
            }
            Scale::Log10 => {
                let (lo, hi) = log_range(range);
                let (ticks, minor) = log_ticks(lo, hi);
                Axis {
                    lo,
                    hi,
                    ticks,
                    minor,
                }
            }
        }
    }
}

/// The padded linear axis range for data spanning `range`.
fn linear_range(range: Option<(f64, f64)>) -> (f64, f64) {
    let Some((a, b)) = range else {
        return (0.0, 1.0);
    };
    let span = b - a;
    if span <= a.abs().max(b.abs()) * 1e-12 {
        // Constant data: centre it in a band of ±10 % (±1 around zero).
        let mid = a / 2.0 + b / 2.0;
        let d = if mid == 0.0 { 1.0 } else { mid.abs() * 0.1 };
        (mid - d, mid + d)
    } else {
        (a - 0.05 * span, b + 0.05 * span)
    }
}

/// The log axis range (in decades) for data spanning `range` (in
/// decades): 5 % of the span beyond the data, or ±0.1 decade around
/// constant data.
fn log_range(range: Option<(f64, f64)>) -> (f64, f64) {
    let Some((a, b)) = range else {
        return (0.0, 1.0);
    };
    if b - a < 1e-9 {
        (a - 0.1, b + 0.1)
    } else {
        let pad = 0.05 * (b - a);
        (a - pad, b + pad)
    }
}

/// Ticks for a log axis spanning `lo..=hi` decades, and the unlabelled
/// minor tick positions:
/// - with three or more powers of ten in range, those (every n-th one if
///   there are more than 10), labelled `10` with a superscript exponent;
/// - otherwise the 1×, 2× and 5× values, labelled as plain numbers, if
///   that gives at least three labels (always the case over a decade);
/// - otherwise (less than about half a decade) "nice" linear values.
fn log_ticks(lo: f64, hi: f64) -> (Vec<Tick>, Vec<f64>) {
    let in_range = |p: f64| p >= lo - 1e-9 && p <= hi + 1e-9;
    // (position, mantissa, exponent) of m × 10^k in range, for each m in `ms`.
    let multiples = |ms: &[u32]| -> Vec<(f64, u32, i32)> {
        let mut out = Vec::new();
        for k in (lo.floor() as i32)..=(hi.ceil() as i32) {
            for &m in ms {
                let pos = k as f64 + (m as f64).log10();
                if in_range(pos) {
                    out.push((pos, m, k));
                }
            }
        }
        out
    };
    let decades = multiples(&[1]);
    if decades.len() >= 3 {
        let n = decades.len() as i32;
        let stride = (n + 9) / 10;
        let ticks = decades
            .iter()
            .filter(|d| d.2.rem_euclid(stride) == 0)
            .map(|d| Tick::decade(d.2))
            .collect();
        let minor = if stride == 1 {
            multiples(&[2, 3, 4, 5, 6, 7, 8, 9])
                .iter()
                .map(|t| t.0)
                .collect()
        } else {
            decades
                .iter()
                .filter(|d| d.2.rem_euclid(stride) != 0)
                .map(|d| d.0)
                .collect()
        };
        return (ticks, minor);
    }
    let one_two_five = multiples(&[1, 2, 5]);
    if one_two_five.len() >= 3 {
        let ticks = one_two_five
            .iter()
            .map(|&(pos, m, k)| Tick::plain(pos, format_decimal(m as i64, k)))
            .collect();
        let minor = multiples(&[3, 4, 6, 7, 8, 9]).iter().map(|t| t.0).collect();
        return (ticks, minor);
    }
    let linear: Vec<Tick> = nice_ticks(10f64.powf(lo), 10f64.powf(hi), 0.0)
        .into_iter()
        .filter(|t| t.pos > 0.0)
        .map(|t| Tick {
            pos: t.pos.log10(),
            ..t
        })
        .filter(|t| in_range(t.pos))
        .collect();
    if linear.len() >= 2 {
        (linear, Vec::new())
    } else {
        let ticks = one_two_five
            .iter()
            .map(|&(pos, m, k)| Tick::plain(pos, format_decimal(m as i64, k)))
            .collect();
        (ticks, Vec::new())
    }
}

/// "Nice" linear ticks in `lo..=hi`: multiples of 1, 2 or 5 × 10^k, about
/// five intervals, with a step of at least `min_step` (pass 1 for whole
/// numbers, 0 for no limit).
fn nice_ticks(lo: f64, hi: f64, min_step: f64) -> Vec<Tick> {
    let span = hi - lo;
    if !(span.is_finite() && span > 0.0) {
        return Vec::new();
    }
    let raw = span / 5.0;
    let mut e = raw.log10().floor() as i32;
    let norm = raw / 10f64.powi(e);
    let mut m: i64 = if norm < 1.5 {
        1
    } else if norm < 3.0 {
        2
    } else if norm < 7.0 {
        5
    } else {
        e += 1;
        1
    };
    if min_step > 0.0 && (m as f64) * 10f64.powi(e) < min_step {
        // Whole-number ticks: the step is 1.
        m = 1;
        e = 0;
    }
    let step = (m as f64) * 10f64.powi(e);
    let kmin = (lo / step - 1e-9).ceil();
    let kmax = (hi / step + 1e-9).floor();
    if !(kmin.is_finite() && kmax.is_finite()) || kmax - kmin > 100.0 {
        return Vec::new();
    }
    let (kmin, kmax) = (kmin as i64, kmax as i64);
    (kmin..=kmax)
        .map(|k| {
            let text = format_decimal(k * m, e);
            let pos = scaled(k * m, e);
            Tick::plain(pos, text)
        })
        .collect()
}

/// `mantissa × 10^exp`, computed so that the result is the double nearest
/// to the exact decimal (a division for negative exponents).
fn scaled(mantissa: i64, exp: i32) -> f64 {
    if exp >= 0 {
        mantissa as f64 * 10f64.powi(exp)
    } else {
        mantissa as f64 / 10f64.powi(-exp)
    }
}

/// `mantissa × 10^exp` as a compact label: plain (`0.2`, `150`) for
/// 1e-3 ≤ |v| < 1e5, scientific (`1e-5`, `2.5e6`) otherwise, `0` for zero.
fn format_decimal(mantissa: i64, exp: i32) -> String {
    let v = scaled(mantissa, exp);
    if v == 0.0 {
        "0".to_string()
    } else if v.abs() >= 1e5 || v.abs() < 1e-3 {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

/// A coordinate with at most two decimals (`12.5`, `3`, never `-0`); a
/// non-finite value, which the layout never produces, prints as `0` so the
/// document stays valid.
fn num(v: f64) -> String {
    if !v.is_finite() {
        return "0".to_string();
    }
    let r = (v * 100.0).round() / 100.0 + 0.0;
    format!("{r}")
}

/// Rough rendered width of `s` in a sans-serif font of `size` pixels.
fn text_width(s: &str, size: f64) -> f64 {
    s.chars()
        .map(|c| match c {
            '.' | ',' | ':' | ';' | 'i' | 'l' | 'j' | '|' | '\'' | ' ' => 0.3,
            'm' | 'w' | 'M' | 'W' | '%' => 0.85,
            c if c.is_ascii_uppercase() => 0.68,
            _ => 0.56,
        })
        .sum::<f64>()
        * size
}

/// Escapes text for SVG content and attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(ticks: &[Tick]) -> Vec<String> {
        ticks.iter().map(|t| t.text.clone()).collect()
    }

    /// No `NaN`/`inf` anywhere, balanced `<svg>` elements, and every
    /// polyline carries its points.
    fn assert_clean(svg: &str) {
        assert!(!svg.contains("NaN"), "NaN in {svg}");
        assert!(!svg.to_lowercase().contains("inf"), "inf in {svg}");
        assert_eq!(svg.matches("<svg").count(), svg.matches("</svg>").count());
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        for poly in svg.split("<polyline").skip(1) {
            let tag = &poly[..poly.find("/>").expect("polyline closed")];
            assert!(tag.contains("points=\""), "{tag}");
        }
        for poly in svg.split("<polygon points=\"").skip(1) {
            for xy in poly[..poly.find('"').unwrap()].split(' ') {
                for v in xy.split(',') {
                    assert!(v.parse::<f64>().is_ok(), "polygon point {xy}");
                    assert!(v.split('.').nth(1).map_or(0, str::len) <= 2, "{xy}");
                }
            }
        }
        // Every number in a coordinate attribute has at most 2 decimals.
        for attr in [
            " x=\"",
            " y=\"",
            " cx=\"",
            " cy=\"",
            " x1=\"",
            " y2=\"",
            " width=\"",
        ] {
            for part in svg.split(attr).skip(1) {
                let v = &part[..part.find('"').unwrap()];
                let dec = v.split('.').nth(1).map_or(0, str::len);
                assert!(dec <= 2, "{attr}{v}");
                assert!(v.parse::<f64>().is_ok(), "{attr}{v}");
            }
        }
    }

    fn normal_chart() -> Chart {
        Chart::new("Training loss")
            .x_label("epoch")
            .y_label("cross-entropy")
            .y_log()
            .series(Series::from_y("train", &[2.3, 1.1, 0.5, 0.3, 0.2]))
            .series(Series::from_y("test", &[2.2, 1.2, 0.7, 0.6, 0.55]).dashed())
    }

    #[test]
    fn normal_chart_is_well_formed() {
        let svg = normal_chart().to_svg();
        assert_clean(&svg);
        for text in [
            "Training loss",
            "epoch",
            "cross-entropy",
            ">train<",
            ">test<",
        ] {
            assert!(svg.contains(text), "{text} missing");
        }
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("stroke-dasharray").count(), 2); // line and legend swatch
        assert!(svg.contains("rotate(-90"));
        // Five points per series get markers.
        assert_eq!(svg.matches("<circle").count(), 10);
    }

    #[test]
    fn markers_only_for_short_series() {
        let ys: Vec<f64> = (0..100).map(|i| (i as f64).sin()).collect();
        let svg = Chart::new("long").series(Series::from_y("s", &ys)).to_svg();
        assert_clean(&svg);
        assert_eq!(svg.matches("<circle").count(), 0);
        assert_eq!(svg.matches("<polyline").count(), 1);
    }

    #[test]
    fn degenerate_charts_stay_clean() {
        let nan = f64::NAN;
        let inf = f64::INFINITY;
        let charts = [
            Chart::new("empty"),
            Chart::new("empty log").x_log().y_log(),
            Chart::new("empty series").series(Series::new("none", vec![])),
            Chart::new("all nan").series(Series::new(
                "nan",
                vec![(nan, 1.0), (1.0, nan), (inf, -inf)],
            )),
            Chart::new("single").series(Series::new("one", vec![(3.0, 4.0)])),
            Chart::new("single log")
                .x_log()
                .y_log()
                .series(Series::new("one", vec![(3.0, 4.0)])),
            Chart::new("zero").series(Series::new("zero", vec![(0.0, 0.0)])),
            Chart::new("constant").series(Series::from_y("c", &[0.5; 6])),
            Chart::new("constant log")
                .y_log()
                .series(Series::from_y("c", &[1.0; 6])),
            Chart::new("log with non-positive")
                .y_log()
                .series(Series::from_y("z", &[0.0, -1.0, 0.1, 0.0, 1e-3, -5.0])),
            Chart::new("all non-positive log")
                .y_log()
                .series(Series::from_y("z", &[0.0, -1.0])),
            Chart::new("huge").series(Series::new(
                "h",
                vec![(1.0, 1e308), (2.0, -1e308), (3.0, 1.0)],
            )),
            Chart::new("tiny span").series(Series::from_y("t", &[1e9, 1e9 + 1e-6])),
            Chart::new("nan mixed").series(Series::from_y("n", &[1.0, nan, 2.0, inf, 3.0])),
            Chart::new("bad size")
                .size(nan, -3.0)
                .series(Series::from_y("a", &[1.0, 2.0])),
            Chart::new("tiny size")
                .size(1.0, 1.0)
                .series(Series::from_y("a", &[1.0, 2.0])),
            Chart::new("undrawable band").y_log().series(
                Series::from_y("b", &[1.0, 2.0, 3.0]).band(vec![
                    (nan, nan),
                    (inf, -inf),
                    (-1.0, 0.0),
                ]),
            ),
            Chart::new("band only").series(
                Series::from_y("b", &[nan, nan]).error_bars(vec![(0.0, 1.0), (1e308, -1e308)]),
            ),
        ];
        for c in &charts {
            assert_clean(&c.to_svg());
        }
        assert_clean(&row_svg(&charts));
        assert_clean(&row_svg(&[]));
    }

    #[test]
    fn single_point_is_drawn_as_marker() {
        let svg = Chart::new("one")
            .series(Series::new("p", vec![(3.0, 4.0)]))
            .to_svg();
        assert_eq!(svg.matches("<circle").count(), 1);
        assert_eq!(svg.matches("<polyline").count(), 0);
        // An isolated point in a long series still shows.
        let mut ys = vec![f64::NAN; 60];
        ys[30] = 1.0;
        let svg = Chart::new("iso").series(Series::from_y("p", &ys)).to_svg();
        assert_eq!(svg.matches("<circle").count(), 1);
    }

    #[test]
    fn nan_splits_the_line() {
        let s = Series::from_y("split", &[1.0, 2.0, f64::NAN, 3.0, 4.0]);
        let svg = Chart::new("gap").series(s).to_svg();
        assert_clean(&svg);
        assert_eq!(svg.matches("<polyline").count(), 2);
        for poly in svg.split("<polyline points=\"").skip(1) {
            let pts = &poly[..poly.find('"').unwrap()];
            assert_eq!(pts.split(' ').count(), 2, "{pts}");
        }
        // Non-positive values split a line on a log axis too.
        let s = Series::from_y("log", &[1.0, 2.0, 0.0, 3.0, 4.0, -1.0, 5.0]);
        let svg = Chart::new("gap").y_log().series(s).to_svg();
        assert_clean(&svg);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 5);
    }

    #[test]
    fn text_is_escaped() {
        let svg = Chart::new("a < b & c > d")
            .x_label("x<1>")
            .y_label("\"q\"")
            .series(Series::from_y("R&D", &[1.0, 2.0]))
            .to_svg();
        assert!(svg.contains("a &lt; b &amp; c &gt; d"));
        assert!(svg.contains("x&lt;1&gt;"));
        assert!(svg.contains("&quot;q&quot;"));
        assert!(svg.contains("R&amp;D"));
        assert!(!svg.contains("R&D"));
        assert!(!svg.contains("a < b"));
    }

    #[test]
    fn nice_linear_ticks() {
        assert_eq!(
            labels(&nice_ticks(0.0, 1.0, 0.0)),
            ["0", "0.2", "0.4", "0.6", "0.8", "1"]
        );
        let t = nice_ticks(0.3, 0.7, 0.0);
        assert!((4..=7).contains(&t.len()), "{:?}", labels(&t));
        assert!(t
            .iter()
            .all(|t| t.pos >= 0.3 - 1e-12 && t.pos <= 0.7 + 1e-12));
        assert_eq!(labels(&t), ["0.3", "0.4", "0.5", "0.6", "0.7"]);
        for (lo, hi) in [
            (0.0, 1.0),
            (-3.7, 12.2),
            (1e-7, 3e-7),
            (0.1, 0.35),
            (95.0, 1e6),
            (-1e9, 1e9),
        ] {
            let t = nice_ticks(lo, hi, 0.0);
            assert!((3..=8).contains(&t.len()), "{lo}..{hi}: {:?}", labels(&t));
            for tick in &t {
                assert!(
                    tick.pos >= lo && tick.pos <= hi,
                    "{lo}..{hi}: {}",
                    tick.text
                );
                assert!(tick.text.len() <= 8, "{lo}..{hi}: {}", tick.text);
            }
        }
        assert_eq!(
            labels(&nice_ticks(1e-7, 3e-7, 0.0)),
            ["1e-7", "1.5e-7", "2e-7", "2.5e-7", "3e-7"]
        );
        assert_eq!(labels(&nice_ticks(0.0, 1e6, 0.0))[1], "2e5");
        assert_eq!(
            labels(&nice_ticks(-1.0, 1.0, 0.0)),
            ["-1", "-0.5", "0", "0.5", "1"]
        );
        // Whole-number ticks for epochs.
        assert_eq!(labels(&nice_ticks(0.95, 2.05, 1.0)), ["1", "2"]);
        assert_eq!(labels(&nice_ticks(0.9, 1.1, 1.0)), ["1"]);
        assert!(nice_ticks(1.0, 1.0, 0.0).is_empty());
        assert!(nice_ticks(f64::NAN, 1.0, 0.0).is_empty());
    }

    #[test]
    fn log_ticks_label_decades() {
        let (lo, hi) = log_range(Some((-6.0, 2.0)));
        assert!(lo <= -6.0 && hi >= 2.0);
        let (ticks, minor) = log_ticks(lo, hi);
        assert_eq!(
            labels(&ticks),
            ["10^-6", "10^-5", "10^-4", "10^-3", "10^-2", "10^-1", "10^0", "10^1", "10^2"]
        );
        assert!(!minor.is_empty());
        let svg = Chart::new("decades")
            .y_log()
            .series(Series::from_y("s", &[1e-6, 1e-3, 1e2]))
            .to_svg();
        assert_clean(&svg);
        assert!(svg.contains("10<tspan dy=\"-4.4\" font-size=\"75%\">-6</tspan>"));
        assert!(svg.contains("10<tspan dy=\"-4.4\" font-size=\"75%\">2</tspan>"));
        // Many decades: at most 10 labels.
        let (ticks, _) = log_ticks(-30.0, 30.0);
        assert!(
            ticks.len() <= 10 && ticks.len() >= 6,
            "{:?}",
            labels(&ticks)
        );
    }

    #[test]
    fn narrow_log_ranges_get_two_or_more_labels() {
        let ticks_for = |a: f64, b: f64| {
            let (lo, hi) = log_range(Some((a.log10(), b.log10())));
            assert!(lo <= a.log10() && hi >= b.log10());
            let ticks = log_ticks(lo, hi).0;
            assert!(ticks.len() >= 2, "{a}..{b}: {:?}", labels(&ticks));
            for t in &ticks {
                assert!(
                    t.pos >= lo - 1e-9 && t.pos <= hi + 1e-9,
                    "{a}..{b}: {}",
                    t.text
                );
            }
            labels(&ticks)
        };
        for (a, b) in [
            (0.3, 0.45),
            (0.2, 0.5),
            (2.0, 3.0),
            (1.0, 1.0),
            (0.15, 1.8),
            (7.0, 70.0),
            (1.0, 1.0001),
        ] {
            ticks_for(a, b);
        }
        // Spanning most of a decade: 1×, 2× and 5× values.
        assert_eq!(ticks_for(0.05, 0.3), ["0.05", "0.1", "0.2"]);
        assert_eq!(ticks_for(0.15, 1.8), ["0.2", "0.5", "1", "2"]);
        assert_eq!(ticks_for(0.077, 1.6), ["0.1", "0.2", "0.5", "1"]);
        assert_eq!(ticks_for(0.01, 1.0), ["10^-2", "10^-1", "10^0"]);
        // Narrower: nice linear values on the log scale.
        assert_eq!(ticks_for(0.3, 0.45), ["0.3", "0.35", "0.4", "0.45"]);
        assert_eq!(
            ticks_for(1e-5, 3e-5),
            ["1e-5", "1.5e-5", "2e-5", "2.5e-5", "3e-5"]
        );
    }

    #[test]
    fn numbers_are_compact() {
        assert_eq!(num(0.1 + 0.2), "0.3");
        assert_eq!(num(12.345678), "12.35");
        assert_eq!(num(-0.001), "0");
        assert_eq!(num(100.0), "100");
        assert_eq!(num(f64::NAN), "0");
        assert_eq!(format_decimal(3, -1), "0.3");
        assert_eq!(format_decimal(1, -5), "1e-5");
        assert_eq!(format_decimal(0, 3), "0");
    }

    #[test]
    fn row_places_charts_side_by_side() {
        let a = normal_chart();
        let b = Chart::new("accuracy")
            .size(300.0, 200.0)
            .series(Series::from_y("acc", &[50.0, 80.0]));
        let svg = row_svg(&[a, b]);
        assert_clean(&svg);
        assert_eq!(svg.matches("<svg").count(), 3);
        assert!(svg
            .starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"820\" height=\"360\""));
        assert!(svg.contains("<svg x=\"520\" y=\"0\" width=\"300\" height=\"200\">"));
        assert!(svg.contains("Training loss") && svg.contains("accuracy"));
    }

    #[test]
    fn legend_avoids_the_data() {
        // A rising line passes through the top-right corner; the legend moves.
        let rising = Chart::new("up").series(Series::from_y("rising", &[0.0, 1.0, 2.0, 3.0, 4.0]));
        let svg = rising.to_svg();
        let legend = &svg[svg.find("fill-opacity").unwrap()..];
        let box_x: f64 = svg[..svg.find("fill-opacity").unwrap()]
            .rsplit("<rect x=\"")
            .next()
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(legend.contains("rising"));
        assert!(box_x < 260.0, "legend at x = {box_x}, expected on the left");
        // No labels, no legend.
        let svg = Chart::new("anon")
            .series(Series::from_y("", &[1.0, 2.0]))
            .to_svg();
        assert!(!svg.contains("fill-opacity"));
    }

    /// The `(x, y)` pairs of every `<polygon>` in `svg`.
    fn polygons(svg: &str) -> Vec<Vec<(f64, f64)>> {
        svg.split("<polygon points=\"")
            .skip(1)
            .map(|p| {
                p[..p.find('"').unwrap()]
                    .split(' ')
                    .map(|xy| {
                        let (x, y) = xy.split_once(',').unwrap();
                        (x.parse().unwrap(), y.parse().unwrap())
                    })
                    .collect()
            })
            .collect()
    }

    /// The frame's `(x0, y0, x1, y1)`: the one `<rect>` with `fill="none"`.
    fn frame(svg: &str) -> (f64, f64, f64, f64) {
        let r = svg
            .split("<rect ")
            .map(|r| &r[..r.find("/>").unwrap_or(r.len())])
            .find(|r| r.contains("fill=\"none\""))
            .unwrap();
        let attr = |name: &str| -> f64 {
            let a = &r[r.find(&format!("{name}=\"")).unwrap() + name.len() + 2..];
            a[..a.find('"').unwrap()].parse().unwrap()
        };
        let (x, y) = (attr("x"), attr("y"));
        (x, y, x + attr("width"), y + attr("height"))
    }

    #[test]
    fn band_is_a_polygon_around_the_line_and_inside_the_frame() {
        let ys = [1.0, 2.0, 3.0, 4.0];
        let ranges = vec![(0.5, 1.5), (1.0, 3.0), (2.5, 3.5), (0.0, 9.0)];
        let svg = Chart::new("band")
            .series(Series::from_y("mean", &ys).band(ranges))
            .to_svg();
        assert_clean(&svg);
        let polys = polygons(&svg);
        assert_eq!(polys.len(), 1);
        // Upper edge forward, lower edge back: 2 points per data point.
        let p = &polys[0];
        assert_eq!(p.len(), 8);
        assert!(p[..4].windows(2).all(|w| w[0].0 < w[1].0), "{p:?}");
        assert!(p[4..].windows(2).all(|w| w[0].0 > w[1].0), "{p:?}");
        // Upper above lower (smaller SVG y) at each x.
        for k in 0..4 {
            assert_eq!(p[k].0, p[7 - k].0);
            assert!(p[k].1 < p[7 - k].1, "{p:?}");
        }
        // The axis covers the band (0 … 9), not only the line (1 … 4).
        let (x0, y0, x1, y1) = frame(&svg);
        for &(x, y) in p {
            assert!(
                x >= x0 && x <= x1 && y >= y0 && y <= y1,
                "({x}, {y}) outside"
            );
        }
        assert!(svg.contains(">8<"), "a tick near the band's top");
        // The band is drawn before (under) the line.
        assert!(svg.find("<polygon").unwrap() < svg.find("<polyline").unwrap());
    }

    #[test]
    fn band_splits_at_undrawable_ranges_and_a_lone_range_is_a_bar() {
        let ys = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let nan = f64::NAN;
        // Ranges 0-1 form a band, 2 is undrawable, 3 is alone, 4 has a
        // non-positive end (undrawable on the log axis), 5 is alone.
        let ranges = vec![
            (0.5, 1.5),
            (1.5, 2.5),
            (nan, 3.0),
            (3.5, 4.5),
            (0.0, 5.5),
            (5.5, 6.5),
        ];
        let svg = Chart::new("split")
            .y_log()
            .series(Series::from_y("s", &ys).band(ranges))
            .to_svg();
        assert_clean(&svg);
        let polys = polygons(&svg);
        assert_eq!(polys.len(), 1);
        assert_eq!(polys[0].len(), 4);
        // The two lone ranges: a vertical line and two caps each.
        let bars = &svg[svg.find("stroke-width=\"1.2\"").unwrap()..];
        let bars = &bars[..bars.find("</g>").unwrap()];
        assert_eq!(bars.matches("<line").count(), 6);
    }

    #[test]
    fn error_bars_have_caps_and_extend_the_axis() {
        let pts = vec![(1.0, 10.0), (10.0, 50.0), (100.0, 90.0)];
        let ranges = vec![(5.0, 12.0), (10.0, 80.0), (88.0, 99.0)];
        let svg = Chart::new("bars")
            .x_log()
            .series(Series::new("acc", pts).error_bars(ranges))
            .series(Series::from_y("plain", &[1.0, 2.0]))
            .to_svg();
        assert_clean(&svg);
        assert_eq!(polygons(&svg).len(), 0);
        let g = &svg[svg.find("stroke-width=\"1.2\"").unwrap()..];
        let g = &g[..g.find("</g>").unwrap()];
        assert_eq!(g.matches("<line").count(), 9, "{g}");
        // Every bar end lies inside the frame: the y axis reaches 5 … 99.
        let (_, y0, _, y1) = frame(&svg);
        for part in g.split(" y1=\"").skip(1) {
            let y: f64 = part[..part.find('"').unwrap()].parse().unwrap();
            assert!(y >= y0 && y <= y1, "{y} outside {y0}..{y1}");
        }
        // A reversed range (high < low) draws the same bar.
        let rev = Chart::new("r")
            .series(Series::from_y("a", &[1.0, 2.0]).error_bars(vec![(2.0, 0.0), (3.0, 1.0)]))
            .to_svg();
        let fwd = Chart::new("r")
            .series(Series::from_y("a", &[1.0, 2.0]).error_bars(vec![(0.0, 2.0), (1.0, 3.0)]))
            .to_svg();
        assert_eq!(rev, fwd);
    }

    #[test]
    #[should_panic(expected = "2 ranges for 3 points")]
    fn spread_length_must_match_the_points() {
        let _ = Series::from_y("s", &[1.0, 2.0, 3.0]).band(vec![(0.0, 1.0); 2]);
    }

    #[test]
    fn save_is_atomic() {
        let dir = std::env::temp_dir();
        let name = format!(
            "backprop-plot-test-{}-{}.svg",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let path = dir.join(&name);
        let chart = normal_chart();
        chart.save(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), chart.to_svg());
        assert!(!dir.join(format!("{name}.tmp")).exists());
        // Overwrites an existing file.
        save_svg(&path, "<svg></svg>").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "<svg></svg>");
        assert!(!dir.join(format!("{name}.tmp")).exists());
        std::fs::remove_file(&path).unwrap();
        // A missing directory is an error, and leaves nothing behind.
        let bad = dir.join(format!("{name}-missing-dir")).join("x.svg");
        assert!(save_svg(&bad, "x").is_err());
    }
}
