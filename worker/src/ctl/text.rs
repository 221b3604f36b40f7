//! Text for a terminal: one-line cells, dashes for nothing, aligned tables.

use std::fmt::Write as _;

/// `value` on one line of a terminal: texts from other services (an SMTP
/// reply in `last_error`) or from the platform (a subject key) may hold a
/// line break or an escape sequence.
pub fn one_line(value: Option<&str>) -> String {
    or_dash(value)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

pub fn or_dash(value: Option<&str>) -> &str {
    value.unwrap_or("-")
}

/// `rows` under `header`, each column as wide as its widest cell, two
/// spaces apart, no trailing blanks. Cells are used as given: pass them
/// through [`one_line`] first where they come from outside.
pub fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(|h| h.chars().count());
    for line in rows {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let header = header.map(str::to_owned);
    for line in std::iter::once(&header).chain(rows) {
        let mut out = String::new();
        for (cell, width) in line.iter().zip(widths) {
            let _ = write!(out, "{cell:<width$}  ");
        }
        text.push_str(out.trim_end());
        text.push('\n');
    }
    text.trim_end().to_owned()
}
