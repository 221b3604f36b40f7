//! The SVG writer's output parsed back with a strict little XML reader:
//! well formed, one polyline per series and panel with every point, a
//! logarithmic y axis, one legend entry per label, text escaped.

use super::*;

/// An element's name and attributes, in document order.
#[derive(Debug)]
struct Element {
    name: String,
    attributes: Vec<(String, String)>,
    /// Text directly inside it (for `<text>`), entities decoded.
    text: String,
}

impl Element {
    fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn decode(text: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let end = rest[at..].find(';').ok_or("unterminated entity")? + at;
        out.push(match &rest[at + 1..end] {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            other => return Err(format!("unknown entity &{other};")),
        });
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn attributes(mut rest: &str) -> Result<Vec<(String, String)>, String> {
    let mut found: Vec<(String, String)> = Vec::new();
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return Ok(found);
        }
        let eq = rest
            .find('=')
            .ok_or(format!("attribute without value: {rest}"))?;
        let name = rest[..eq].trim().to_owned();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(format!("bad attribute name {name:?}"));
        }
        let value = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or(format!("unquoted value of {name}"))?;
        let close = value
            .find('"')
            .ok_or(format!("unterminated value of {name}"))?;
        if found.iter().any(|(n, _)| *n == name) {
            return Err(format!("attribute {name} twice"));
        }
        found.push((name, decode(&value[..close])?));
        rest = &value[close + 1..];
    }
}

/// Every element of a well-formed document, or what is wrong with it.
fn parse(xml: &str) -> Result<Vec<Element>, String> {
    let mut rest = xml
        .strip_prefix("<?xml")
        .and_then(|r| r.split_once("?>"))
        .map(|(_, r)| r)
        .ok_or("no XML declaration")?;
    let (mut elements, mut open): (Vec<Element>, Vec<(String, usize)>) = (vec![], vec![]);
    let mut roots = 0;
    while let Some(at) = rest.find('<') {
        let text = decode(&rest[..at])?;
        if let Some((_, index)) = open.last() {
            elements[*index].text.push_str(&text);
        } else if !text.trim().is_empty() {
            return Err(format!("text outside the root: {text:?}"));
        }
        let end = rest[at..].find('>').ok_or("unterminated tag")? + at;
        let tag = &rest[at + 1..end];
        if tag.contains('<') {
            return Err(format!("'<' inside a tag: {tag}"));
        }
        if let Some(name) = tag.strip_prefix('/') {
            let (expected, _) = open.pop().ok_or(format!("</{name}> closes nothing"))?;
            if expected != name {
                return Err(format!("<{expected}> closed by </{name}>"));
            }
        } else {
            let (body, closes) = match tag.strip_suffix('/') {
                Some(body) => (body, true),
                None => (tag, false),
            };
            let name_end = body.find(char::is_whitespace).unwrap_or(body.len());
            if open.is_empty() {
                roots += 1;
            }
            elements.push(Element {
                name: body[..name_end].to_owned(),
                attributes: attributes(&body[name_end..])?,
                text: String::new(),
            });
            if !closes {
                open.push((body[..name_end].to_owned(), elements.len() - 1));
            }
        }
        rest = &rest[end + 1..];
    }
    if !open.is_empty() || roots != 1 || !rest.trim().is_empty() {
        return Err(format!("unclosed {open:?} or {roots} roots"));
    }
    Ok(elements)
}

fn figure() -> Figure {
    let series = |label: &str, points: &[(f64, f64)]| Series {
        label: label.to_owned(),
        points: points.to_vec(),
    };
    Figure {
        title: "Latency <against> offered load & more".to_owned(),
        x_label: "offered load (events/s)".to_owned(),
        y_label: "latency (ms, log scale)".to_owned(),
        panels: vec![
            Panel {
                title: "ingest".to_owned(),
                series: vec![
                    series("p50", &[(1000.0, 1.0), (2000.0, 10.0), (3000.0, 100.0)]),
                    series("p99", &[(1000.0, 2.0), (2000.0, 20.0), (3000.0, 400.0)]),
                ],
            },
            Panel {
                title: "pipeline".to_owned(),
                series: vec![
                    series("p50", &[(400.0, 5.0), (800.0, 9.0)]),
                    series("p99", &[(400.0, 30.0), (800.0, 0.0)]),
                ],
            },
        ],
    }
}

fn points(polyline: &Element) -> Vec<(f64, f64)> {
    polyline
        .attribute("points")
        .unwrap_or_default()
        .split_whitespace()
        .map(|pair| {
            let (x, y) = pair.split_once(',').unwrap();
            (x.parse().unwrap(), y.parse().unwrap())
        })
        .collect()
}

#[test]
fn the_plot_is_well_formed_with_a_polyline_per_series_and_panel() {
    let elements = parse(&render(&figure())).unwrap();
    assert_eq!(elements[0].name, "svg");
    let panels: Vec<&str> = elements
        .iter()
        .filter_map(|e| e.attribute("data-panel"))
        .collect();
    assert_eq!(panels, ["ingest", "pipeline"]);
    let lines: Vec<&Element> = elements.iter().filter(|e| e.name == "polyline").collect();
    let labels: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.attribute("data-series"))
        .collect();
    assert_eq!(labels, ["p50", "p99", "p50", "p99"]);
    // Every point drawn, except the one a log axis cannot show (0 ms).
    let counts: Vec<usize> = lines.iter().map(|l| points(l).len()).collect();
    assert_eq!(counts, [3, 3, 2, 1]);
    assert_eq!(elements.iter().filter(|e| e.name == "circle").count(), 9);
    // The title kept its '<' and '&' as text.
    assert!(
        elements
            .iter()
            .any(|e| e.text == "Latency <against> offered load & more")
    );
    // Axis labels and decade ticks, 1 ms to 1 s (0.4 s is the highest).
    for label in [
        "offered load (events/s)",
        "latency (ms, log scale)",
        "1 ms",
        "100 ms",
        "1 s",
    ] {
        assert!(elements.iter().any(|e| e.text == label), "no {label:?}");
    }
    // One legend entry per label, in the same colour as its lines.
    let legend: Vec<&str> = elements
        .iter()
        .skip_while(|e| e.attribute("class") != Some("legend"))
        .filter(|e| e.name == "text")
        .map(|e| e.text.as_str())
        .collect();
    assert_eq!(legend, ["p50", "p99"]);
    assert_eq!(lines[0].attribute("stroke"), lines[2].attribute("stroke"));
    assert_ne!(lines[0].attribute("stroke"), lines[1].attribute("stroke"));
}

#[test]
fn latency_is_on_a_log_scale_and_load_on_a_linear_one() {
    let elements = parse(&render(&figure())).unwrap();
    let p50 = points(elements.iter().find(|e| e.name == "polyline").unwrap());
    // 1, 10, 100 ms: equal steps up; 1000, 2000, 3000 events/s: equal steps right.
    let (up1, up2) = (p50[0].1 - p50[1].1, p50[1].1 - p50[2].1);
    assert!(up1 > 10.0 && (up1 - up2).abs() < 0.2, "{p50:?}");
    let (right1, right2) = (p50[1].0 - p50[0].0, p50[2].0 - p50[1].0);
    assert!(right1 > 10.0 && (right1 - right2).abs() < 0.2, "{p50:?}");
}

#[test]
fn the_checker_refuses_what_is_not_well_formed() {
    assert!(parse(r#"<?xml version="1.0"?><svg><g></svg>"#).is_err());
    assert!(parse(r#"<?xml version="1.0"?><svg a=1/>"#).is_err());
    assert!(parse(r#"<?xml version="1.0"?><svg>a & b</svg>"#).is_err());
    assert!(parse(r#"<?xml version="1.0"?><svg/><svg/>"#).is_err());
    assert!(parse(r#"<?xml version="1.0"?><svg a="1" a="2"/>"#).is_err());
    assert!(parse(r#"<?xml version="1.0"?><svg a="x &lt; y"><t>1 &amp; 2</t></svg>"#).is_ok());
}

#[test]
fn ticks_and_labels() {
    assert_eq!(
        linear_ticks(4300.0),
        [0.0, 1000.0, 2000.0, 3000.0, 4000.0, 5000.0]
    );
    assert_eq!(linear_ticks(230.0), [0.0, 50.0, 100.0, 150.0, 200.0, 250.0]);
    assert_eq!(short_number(2500.0), "2.5k");
    assert_eq!(short_number(12000.0), "12k");
    assert_eq!(decade_label(-1), "0.1 ms");
    assert_eq!(decade_label(2), "100 ms");
    assert_eq!(decade_label(4), "10 s");
    let axis = LogAxis::covering([0.0, 3.0, 70.0].into_iter());
    assert_eq!((axis.low_decade, axis.high_decade), (0, 2));
}
