//! A small SVG line plot, written by hand rather than with a plotting crate:
//! panels side by side, each with a linear x axis (offered load) and a
//! shared logarithmic y axis (latency), one polyline with markers per
//! series, decade ticks, axis labels and one legend.

use std::fmt::Write as _;

const PANEL_WIDTH: f64 = 460.0;
const HEIGHT: f64 = 400.0;
/// Room left of each plot area for the y tick labels, and so on.
const LEFT: f64 = 72.0;
const RIGHT: f64 = 18.0;
const TOP: f64 = 44.0;
const BOTTOM: f64 = 64.0;
/// Below the panels, for the legend.
const LEGEND_HEIGHT: f64 = 34.0;
/// Colours of the series, by position (the same label, the same colour,
/// in every panel).
const COLOURS: [&str; 5] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"];

/// One line: a label and its (x, y) points, y > 0 (log scale).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// One panel of the figure.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub title: String,
    pub series: Vec<Series>,
}

/// The whole figure's labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub title: String,
    pub x_label: String,
    /// The y unit is milliseconds.
    pub y_label: String,
    pub panels: Vec<Panel>,
}

/// A y value in milliseconds mapped on a log10 axis between two decades.
#[derive(Debug, Clone, Copy, PartialEq)]
struct LogAxis {
    low_decade: i32,
    high_decade: i32,
}

impl LogAxis {
    fn covering(values: impl Iterator<Item = f64>) -> Self {
        let (mut low, mut high) = (f64::INFINITY, f64::NEG_INFINITY);
        for value in values.filter(|v| *v > 0.0 && v.is_finite()) {
            low = low.min(value);
            high = high.max(value);
        }
        if !low.is_finite() {
            return Self {
                low_decade: 0,
                high_decade: 1,
            };
        }
        let low_decade = low.log10().floor() as i32;
        let high_decade = (high.log10().ceil() as i32).max(low_decade + 1);
        Self {
            low_decade,
            high_decade,
        }
    }

    /// 0.0 at the bottom decade, 1.0 at the top one.
    fn fraction(self, value: f64) -> f64 {
        let span = f64::from(self.high_decade - self.low_decade);
        (value.log10() - f64::from(self.low_decade)) / span
    }
}

/// Tick positions for a linear axis from 0 to at least `max`: steps of
/// 1, 2 or 5 × 10^k, about five of them.
fn linear_ticks(max: f64) -> Vec<f64> {
    let max = if max > 0.0 && max.is_finite() {
        max
    } else {
        1.0
    };
    let rough = max / 5.0;
    let magnitude = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|step| *step >= rough)
        .unwrap_or(10.0 * magnitude);
    let count = (max / step).ceil() as usize;
    (0..=count).map(|i| i as f64 * step).collect()
}

/// `2k`, `12.5k`, `800`.
fn short_number(value: f64) -> String {
    if value >= 1000.0 {
        let thousands = value / 1000.0;
        if (thousands - thousands.round()).abs() < 1e-9 {
            format!("{thousands:.0}k")
        } else {
            format!("{thousands:.1}k")
        }
    } else {
        format!("{value:.0}")
    }
}

/// `0.1 ms`, `10 ms`, `1 s`.
fn decade_label(decade: i32) -> String {
    if decade >= 3 {
        format!("{} s", 10f64.powi(decade - 3))
    } else if decade >= 0 {
        format!("{} ms", 10f64.powi(decade))
    } else {
        let digits = usize::try_from(-decade).unwrap_or(0);
        format!("{:.*} ms", digits, 10f64.powi(decade))
    }
}

/// Text safe inside an element or a quoted attribute.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The figure as a standalone SVG document.
pub fn render(figure: &Figure) -> String {
    let panels = figure.panels.len().max(1) as f64;
    let width = PANEL_WIDTH * panels;
    let height = HEIGHT + LEGEND_HEIGHT;
    let axis = LogAxis::covering(
        figure
            .panels
            .iter()
            .flat_map(|p| p.series.iter())
            .flat_map(|s| s.points.iter().map(|(_, y)| *y)),
    );
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">
<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>
<text x="{}" y="18" text-anchor="middle" font-size="15">{}</text>"#,
        width / 2.0,
        escape(&figure.title)
    );
    let labels = labels(figure);
    for (n, panel) in figure.panels.iter().enumerate() {
        render_panel(
            &mut svg,
            figure,
            panel,
            n as f64 * PANEL_WIDTH,
            axis,
            &labels,
        );
    }
    render_legend(&mut svg, &labels, width);
    svg.push_str("</svg>\n");
    svg
}

/// Every series label once, in order of appearance: a label's position
/// is its colour in every panel and in the legend.
fn labels(figure: &Figure) -> Vec<String> {
    let mut labels: Vec<String> = Vec::new();
    for series in figure.panels.iter().flat_map(|p| p.series.iter()) {
        if !labels.contains(&series.label) {
            labels.push(series.label.clone());
        }
    }
    labels
}

fn colour(labels: &[String], label: &str) -> &'static str {
    let at = labels.iter().position(|l| l == label).unwrap_or(0);
    COLOURS[at % COLOURS.len()]
}

fn render_panel(
    svg: &mut String,
    figure: &Figure,
    panel: &Panel,
    left: f64,
    axis: LogAxis,
    labels: &[String],
) {
    let (x0, x1) = (left + LEFT, left + PANEL_WIDTH - RIGHT);
    let (y0, y1) = (HEIGHT - BOTTOM, TOP);
    let x_max = panel
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|(x, _)| *x))
        .fold(0.0, f64::max);
    let ticks = linear_ticks(x_max);
    let x_end = ticks.last().copied().unwrap_or(1.0).max(f64::MIN_POSITIVE);
    let px = |x: f64| x0 + (x1 - x0) * x / x_end;
    let py = |y: f64| y0 - (y0 - y1) * axis.fraction(y);
    let _ = writeln!(
        svg,
        r##"<g class="panel" data-panel="{title}">
<text x="{cx}" y="{ty}" text-anchor="middle" font-size="13">{title}</text>
<rect x="{x0}" y="{y1}" width="{w}" height="{h}" fill="none" stroke="#444"/>"##,
        title = escape(&panel.title),
        cx = (x0 + x1) / 2.0,
        ty = TOP - 10.0,
        w = x1 - x0,
        h = y0 - y1,
    );
    for tick in &ticks {
        let x = px(*tick);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{y1}" stroke="#ddd"/><text x="{x:.1}" y="{ly}" text-anchor="middle">{label}</text>"##,
            ly = y0 + 16.0,
            label = short_number(*tick)
        );
    }
    for decade in axis.low_decade..=axis.high_decade {
        let y = py(10f64.powi(decade));
        let _ = writeln!(
            svg,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#ccc"/><text x="{lx}" y="{ty:.1}" text-anchor="end">{label}</text>"##,
            lx = x0 - 6.0,
            ty = y + 4.0,
            label = decade_label(decade)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{cx}" y="{ly}" text-anchor="middle">{x_label}</text>
<text x="{lx}" y="{cy}" text-anchor="middle" transform="rotate(-90 {lx} {cy})">{y_label}</text>"#,
        cx = (x0 + x1) / 2.0,
        ly = y0 + 38.0,
        x_label = escape(&figure.x_label),
        lx = left + 16.0,
        cy = (y0 + y1) / 2.0,
        y_label = escape(&figure.y_label),
    );
    for series in &panel.series {
        let colour = colour(labels, &series.label);
        let points: Vec<(f64, f64)> = series
            .points
            .iter()
            .filter(|(x, y)| *y > 0.0 && y.is_finite() && x.is_finite())
            .map(|(x, y)| (px(*x), py(*y)))
            .collect();
        let path: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{x:.1},{y:.1}"))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline class="series" data-series="{label}" points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
            label = escape(&series.label),
            path = path.join(" "),
        );
        for (x, y) in points {
            let _ = writeln!(
                svg,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{colour}"/>"#
            );
        }
    }
    svg.push_str("</g>\n");
}

/// One legend for all panels: each series label once, in its colour.
fn render_legend(svg: &mut String, labels: &[String], width: f64) {
    let entry = 110.0;
    let start = (width - entry * labels.len() as f64) / 2.0;
    let y = HEIGHT + LEGEND_HEIGHT / 2.0 - 6.0;
    svg.push_str("<g class=\"legend\">\n");
    for (n, label) in labels.iter().enumerate() {
        let x = start + entry * n as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{x}" y1="{y}" x2="{x2}" y2="{y}" stroke="{colour}" stroke-width="3"/><text x="{tx}" y="{ty}">{label}</text>"#,
            x2 = x + 24.0,
            colour = colour(labels, label),
            tx = x + 30.0,
            ty = y + 4.0,
            label = escape(label),
        );
    }
    svg.push_str("</g>\n");
}

#[cfg(test)]
#[path = "svg_tests.rs"]
mod tests;
