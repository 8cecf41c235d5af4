//! Inline SVG charts for the HTML report, drawn from a section's rows as
//! its [`Chart`] describes: horizontal bars (rankings), columns per day
//! (stacked or side by side) and lines over time (one per series).
//!
//! The drawing is plain SVG elements with fixed coordinates (no script,
//! no fonts or images to fetch); every text is escaped. Each drawn value
//! carries `class="mark"` (only when it has a visible extent), which the
//! report's check script and the browser test count.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use super::html::escape;
use super::{Chart, ChartKind};

type R<T> = std::result::Result<T, ArrowError>;

/// Width of every chart (the viewBox; it scales down on narrow screens).
const WIDTH: f64 = 760.0;
/// Colour-blind-safe palette (Okabe and Ito), in order of use.
const PALETTE: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#8C6D31", "#999999",
];

/// A fixed colour for well-known series names, so severities and
/// lifecycle states look the same in every chart.
fn color(name: &str, index: usize) -> &'static str {
    match name {
        "critical" | "opened" => "#D55E00",
        "warning" => "#E69F00",
        "info" => "#0072B2",
        "suppressed" => "#999999",
        "resolved" => "#009E73",
        _ => PALETTE[index % PALETTE.len()],
    }
}

/// A number as a short label: integers without decimals, others with at
/// most three (trailing zeros dropped).
fn num(v: f64) -> String {
    if v.abs() >= 1000.0 || v.fract() == 0.0 {
        return format!("{v:.0}");
    }
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// `YYYY-MM-DDTHH:MM:SSZ` as `MM-DD HH:MM`; long labels cut to `max`
/// characters with an ellipsis; others unchanged.
fn short(label: &str, max: usize) -> String {
    let b = label.as_bytes();
    if b.len() >= 16 && b[4] == b'-' && b[10] == b'T' && label.is_ascii() {
        return format!("{} {}", &label[5..10], &label[11..16]);
    }
    if label.chars().count() > max {
        let cut: String = label.chars().take(max.saturating_sub(1)).collect();
        return format!("{cut}…");
    }
    label.to_owned()
}

/// A round step for about `target` ticks up to `max` (1, 2 or 5 × 10^k).
fn step(max: f64, target: f64) -> f64 {
    let raw = (max / target).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let m = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

/// The top of the value axis and its tick step: `fixed` when the data fit
/// under it, else `max` rounded up to a step.
fn axis(max: f64, fixed: Option<f64>) -> (f64, f64) {
    if let Some(f) = fixed {
        if max <= f {
            return (f, step(f, 5.0));
        }
    }
    let s = step(max, 5.0);
    ((max / s).ceil().max(1.0) * s, s)
}

/// The rows of a chart: labels of `x` (and of `series`), values of each
/// `y` as `f64`, and `x` as milliseconds when it is a time column.
struct Data {
    x: Vec<String>,
    x_ms: Option<Vec<Option<i64>>>,
    series: Option<Vec<String>>,
    ys: Vec<Vec<Option<f64>>>,
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> R<&'a dyn Array> {
    batch
        .column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| ArrowError::SchemaError(format!("chart column {name} is not in the result")))
}

fn labels(array: &dyn Array) -> R<Vec<String>> {
    let f = ArrayFormatter::try_new(array, &FormatOptions::default().with_null(""))?;
    Ok((0..array.len()).map(|i| f.value(i).to_string()).collect())
}

impl Data {
    fn of(chart: &Chart, batches: &[RecordBatch]) -> R<Data> {
        let batch = concat_batches(&batches[0].schema(), batches)?;
        let x = column(&batch, chart.x)?;
        let x_ms = match x.data_type() {
            DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => {
                let ts = cast(x, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
                let ms = cast(&ts, &DataType::Int64)?;
                let ms = ms.as_primitive::<Int64Type>();
                Some(ms.iter().collect())
            }
            _ => None,
        };
        let series = match chart.series {
            Some(s) => Some(labels(column(&batch, s)?)?),
            None => None,
        };
        let ys = chart
            .y
            .iter()
            .map(|name| {
                let c = cast(column(&batch, name)?, &DataType::Float64)?;
                Ok(c.as_primitive::<Float64Type>()
                    .iter()
                    .map(|v| v.filter(|v| v.is_finite()))
                    .collect())
            })
            .collect::<R<Vec<Vec<Option<f64>>>>>()?;
        Ok(Data {
            x: labels(x)?,
            x_ms,
            series,
            ys,
        })
    }
}

/// Draws `chart` of `batches` as an `<svg>` element; `None` when there is
/// nothing to draw (no rows, or no positive value).
pub(super) fn chart(chart: &Chart, title: &str, batches: &[RecordBatch]) -> R<Option<String>> {
    if batches.iter().map(RecordBatch::num_rows).sum::<usize>() == 0 {
        return Ok(None);
    }
    let data = Data::of(chart, batches)?;
    let max = data
        .ys
        .iter()
        .flatten()
        .flatten()
        .fold(0.0f64, |m, v| m.max(*v));
    if max <= 0.0 {
        return Ok(None);
    }
    Ok(Some(match chart.kind {
        ChartKind::Bars => bars(chart, title, &data),
        ChartKind::Columns { stacked } => columns(chart, title, &data, stacked),
        ChartKind::Lines => lines(chart, title, &data),
    }))
}

fn open(out: &mut String, title: &str, height: f64) {
    let _ = writeln!(
        out,
        "<svg class=\"chart\" role=\"img\" aria-label=\"{t}\" viewBox=\"0 0 {WIDTH} {height}\" width=\"{WIDTH}\" height=\"{height}\">\n<title>{t}</title>",
        t = escape(title)
    );
}

fn bars(chart: &Chart, title: &str, d: &Data) -> String {
    let (label_w, value_w, row, bar_h, top) = (240.0, 70.0, 22.0, 14.0, 6.0);
    let plot_w = WIDTH - label_w - value_w;
    let values: Vec<f64> = d.ys[0].iter().map(|v| v.unwrap_or(0.0).max(0.0)).collect();
    let max = values.iter().fold(0.0f64, |m, v| m.max(*v));
    let (top_v, tick) = axis(max, chart.y_max);
    let n = values.len() as f64;
    let bottom = top + n * row;
    let height = bottom + 34.0;
    let mut out = String::new();
    open(&mut out, title, height);
    let mut t = 0.0;
    while t <= top_v + tick / 2.0 {
        let x = label_w + t / top_v * plot_w;
        let _ = writeln!(
            out,
            "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{bottom}\"/><text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            bottom + 13.0,
            num(t)
        );
        t += tick;
    }
    for (i, (label, v)) in d.x.iter().zip(&values).enumerate() {
        let y = top + i as f64 * row;
        let w = v / top_v * plot_w;
        let class = if w > 0.0 { " class=\"mark\"" } else { "" };
        let _ = writeln!(
            out,
            "<g><title>{full}: {val}</title><text x=\"{lx:.1}\" y=\"{ty:.1}\" text-anchor=\"end\">{lab}</text>\
             <rect{class} x=\"{label_w}\" y=\"{ry:.1}\" width=\"{w:.1}\" height=\"{bar_h}\" fill=\"{c}\"/>\
             <text x=\"{vx:.1}\" y=\"{ty:.1}\">{val}</text></g>",
            full = escape(label),
            val = num(*v),
            lx = label_w - 8.0,
            ty = y + row / 2.0 + 4.0,
            lab = escape(&short(label, 36)),
            ry = y + (row - bar_h) / 2.0,
            c = PALETTE[0],
            vx = label_w + w + 4.0,
        );
    }
    let _ = writeln!(
        out,
        "<line class=\"axis\" x1=\"{label_w}\" y1=\"{top}\" x2=\"{label_w}\" y2=\"{bottom}\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n</svg>",
        label_w + plot_w,
        height - 4.0,
        escape(chart.unit)
    );
    out
}

/// A frame for columns and lines: legend rows on top, value axis with
/// grid lines on the left. Returns the plot area `(left, top, width,
/// height)`.
fn frame(
    out: &mut String,
    chart: &Chart,
    title: &str,
    names: &[String],
    top_v: f64,
    tick: f64,
) -> (f64, f64, f64, f64) {
    let (left, right, bottom, plot_h) = (56.0, 16.0, 40.0, 220.0);
    // Legend items wrap into rows the width of the chart.
    let mut items = Vec::new();
    let (mut x, mut y) = (left, 14.0);
    for (i, name) in names.iter().enumerate() {
        let w = 22.0 + 6.5 * name.chars().count() as f64;
        if x + w > WIDTH - right && x > left {
            x = left;
            y += 16.0;
        }
        items.push((x, y, color(name, i), name));
        x += w + 12.0;
    }
    let top = y + 16.0;
    let height = top + plot_h + bottom;
    open(out, title, height);
    for (x, y, c, name) in items {
        let _ = writeln!(
            out,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{c}\"/><text x=\"{:.1}\" y=\"{y:.1}\">{}</text>",
            y - 9.0,
            x + 14.0,
            escape(name)
        );
    }
    let plot_w = WIDTH - left - right;
    let mut t = 0.0;
    while t <= top_v + tick / 2.0 {
        let y = top + plot_h - t / top_v * plot_h;
        let _ = writeln!(
            out,
            "<line class=\"grid\" x1=\"{left}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            left + plot_w,
            left - 6.0,
            y + 4.0,
            num(t)
        );
        t += tick;
    }
    let _ = writeln!(
        out,
        "<line class=\"axis\" x1=\"{left}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
        top + plot_h,
        left + plot_w,
        top + plot_h,
        left + plot_w,
        height - 4.0,
        escape(chart.unit)
    );
    (left, top, plot_w, plot_h)
}

fn columns(chart: &Chart, title: &str, d: &Data, stacked: bool) -> String {
    let names: Vec<String> = chart.y.iter().map(|s| (*s).to_owned()).collect();
    let n = d.x.len();
    let value = |k: usize, i: usize| d.ys[k][i].unwrap_or(0.0).max(0.0);
    let max = (0..n)
        .map(|i| {
            let vals = (0..names.len()).map(|k| value(k, i));
            if stacked {
                vals.sum()
            } else {
                vals.fold(0.0, f64::max)
            }
        })
        .fold(0.0, f64::max);
    let (top_v, tick) = axis(max, chart.y_max);
    let mut out = String::new();
    let (left, top, plot_w, plot_h) = frame(&mut out, chart, title, &names, top_v, tick);
    let band = plot_w / n as f64;
    let bar_w = (band * 0.7).min(80.0);
    let every = n.div_ceil(12);
    for i in 0..n {
        let cx = left + band * (i as f64 + 0.5);
        let mut base = 0.0;
        for (k, name) in names.iter().enumerate() {
            let v = value(k, i);
            let h = v / top_v * plot_h;
            let (x, w, y) = if stacked {
                (
                    cx - bar_w / 2.0,
                    bar_w,
                    top + plot_h - (base + v) / top_v * plot_h,
                )
            } else {
                let w = bar_w / names.len() as f64;
                (cx - bar_w / 2.0 + w * k as f64, w, top + plot_h - h)
            };
            base += v;
            if h > 0.0 {
                let _ = writeln!(
                    out,
                    "<rect class=\"mark\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" fill=\"{c}\"><title>{day} {name}: {val}</title></rect>",
                    c = color(name, k),
                    day = escape(&d.x[i]),
                    name = escape(name),
                    val = num(v)
                );
            }
        }
        if i % every == 0 {
            let _ = writeln!(
                out,
                "<text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                top + plot_h + 14.0,
                escape(&short(&d.x[i], 12))
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

fn lines(chart: &Chart, title: &str, d: &Data) -> String {
    // (series name, column of y) pairs and their points (x position, y).
    let mut names: Vec<String> = Vec::new();
    let mut points: Vec<Vec<(f64, f64)>> = Vec::new();
    // x as a number: milliseconds for time columns, else the order of
    // first appearance.
    let mut ordinal: BTreeMap<&str, usize> = BTreeMap::new();
    let xs: Vec<Option<f64>> = (0..d.x.len())
        .map(|i| match &d.x_ms {
            Some(ms) => ms[i].map(|v| v as f64),
            None => {
                let next = ordinal.len();
                Some(*ordinal.entry(d.x[i].as_str()).or_insert(next) as f64)
            }
        })
        .collect();
    let mut add = |name: &str, x: f64, y: f64| {
        let k = match names.iter().position(|n| n == name) {
            Some(k) => k,
            None => {
                names.push(name.to_owned());
                points.push(Vec::new());
                names.len() - 1
            }
        };
        points[k].push((x, y));
    };
    for (i, x) in xs.iter().enumerate() {
        let Some(x) = *x else { continue };
        match &d.series {
            Some(series) => {
                if let Some(y) = d.ys[0][i] {
                    add(&series[i], x, y);
                }
            }
            None => {
                for (k, col) in chart.y.iter().enumerate() {
                    if let Some(y) = d.ys[k][i] {
                        add(col, x, y);
                    }
                }
            }
        }
    }
    let max = points.iter().flatten().fold(0.0f64, |m, p| m.max(p.1));
    let (top_v, tick) = axis(max, chart.y_max);
    let mut out = String::new();
    let (left, top, plot_w, plot_h) = frame(&mut out, chart, title, &names, top_v, tick);
    let (x0, x1) = xs
        .iter()
        .flatten()
        .fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(*x), b.max(*x)));
    let span = if x1 > x0 { x1 - x0 } else { 1.0 };
    let px = |x: f64| {
        if x1 > x0 {
            left + (x - x0) / span * plot_w
        } else {
            left + plot_w / 2.0
        }
    };
    let py = |y: f64| top + plot_h - y.max(0.0) / top_v * plot_h;
    // Ticks: up to 6 distinct x values, evenly spread, labelled as the
    // data labels them.
    let mut distinct: Vec<(f64, &str)> = xs
        .iter()
        .zip(&d.x)
        .filter_map(|(x, l)| x.map(|x| (x, l.as_str())))
        .collect();
    distinct.sort_by(|a, b| a.0.total_cmp(&b.0));
    distinct.dedup_by(|a, b| a.0 == b.0);
    let every = distinct.len().div_ceil(6).max(1);
    for (j, (x, label)) in distinct.iter().enumerate() {
        if j % every == 0 {
            let _ = writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                px(*x),
                top + plot_h + 14.0,
                escape(&short(label, 12))
            );
        }
    }
    for (k, (name, pts)) in names.iter().zip(points.iter_mut()).enumerate() {
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let c = color(name, k);
        let mut path = String::new();
        for (j, (x, y)) in pts.iter().enumerate() {
            let _ = write!(
                path,
                "{}{:.1},{:.1}",
                if j == 0 { "M" } else { " L" },
                px(*x),
                py(*y)
            );
        }
        let distinct_x = pts.windows(2).any(|w| w[0].0 != w[1].0);
        if distinct_x {
            let _ = writeln!(
                out,
                "<path class=\"mark\" d=\"{path}\" fill=\"none\" stroke=\"{c}\" stroke-width=\"2\"><title>{}</title></path>",
                escape(name)
            );
        } else if let Some((x, y)) = pts.first() {
            let _ = writeln!(
                out,
                "<circle class=\"mark\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{c}\"><title>{}: {}</title></circle>",
                px(*x),
                py(*y),
                escape(name),
                num(*y)
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_steps() {
        assert_eq!(num(3.0), "3");
        assert_eq!(num(99.9871), "99.987");
        assert_eq!(num(0.5), "0.5");
        assert_eq!(num(12345.6), "12346");
        assert_eq!(short("2026-11-03T04:00:00Z", 12), "11-03 04:00");
        assert_eq!(short("2026-11-03", 12), "2026-11-03");
        assert_eq!(short("abcdefghij", 5), "abcd…");
        assert_eq!(step(100.0, 5.0), 20.0);
        assert_eq!(step(7.0, 5.0), 2.0);
        assert_eq!(axis(57.0, Some(100.0)), (100.0, 20.0));
        assert_eq!(axis(140.0, Some(100.0)), (150.0, 50.0));
        assert_eq!(axis(3.0, None), (3.0, 1.0));
    }
}
