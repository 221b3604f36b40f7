//! The Grafana dashboard's queries, as Grafana sends them to Prometheus:
//! every panel's target `expr` with Grafana's variables expanded the way
//! Grafana expands them.

use std::time::Duration;

use serde_json::Value;

/// One query of one panel.
#[derive(Debug, Clone)]
pub struct PanelQuery {
    /// `#3 "Webhook 503 share" (A)`: the panel's id, title and the target's refId.
    pub panel: String,
    /// The PromQL, variables expanded.
    pub expr: String,
}

/// What Grafana's built-in variables are for one view of the dashboard
/// (<https://grafana.com/docs/grafana/latest/datasources/prometheus/template-variables/>).
#[derive(Debug, Clone, Copy)]
pub struct GrafanaView {
    /// The datasource's scrape interval (`jsonData.timeInterval`): also the
    /// smallest `$__interval` Grafana uses.
    pub scrape_interval: Duration,
    /// `$__interval`: the dashboard's range over the panel's data points,
    /// never below the scrape interval.
    pub interval: Duration,
    /// `$__range`: the dashboard's time range.
    pub range: Duration,
}

impl GrafanaView {
    /// `$__rate_interval`: max(`$__interval` + scrape interval, 4 × scrape
    /// interval), so that a rate() always has at least four samples.
    pub fn rate_interval(&self) -> Duration {
        (self.interval + self.scrape_interval).max(self.scrape_interval * 4)
    }

    /// `expr` with every variable Grafana would expand expanded; an error
    /// names a variable this does not know (a dashboard variable such as
    /// `$job`: teach this function how Grafana expands it).
    pub fn expand(&self, expr: &str) -> Result<String, String> {
        let mut out = String::with_capacity(expr.len());
        let mut rest = expr;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let (name, used) = if let Some(braced) = after.strip_prefix('{') {
                let end = braced
                    .find('}')
                    .ok_or_else(|| format!("an unclosed ${{ in {expr:?}"))?;
                // `${name:format}`: a format changes nothing for these values.
                let name = braced[..end].split(':').next().unwrap_or_default();
                (name, end + 2)
            } else {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end)
            };
            match self.value_of(name) {
                Some(value) => out.push_str(&value),
                // `$1` in a label_replace() replacement is PromQL's, not a variable.
                None if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) => {
                    out.push('$');
                    rest = after;
                    continue;
                }
                None => {
                    return Err(format!(
                        "${name} in {expr:?} is a variable this test does not expand \
                         (tests/src/dashboard.rs, GrafanaView::expand): say how Grafana sets it"
                    ));
                }
            }
            rest = &after[used..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn value_of(&self, name: &str) -> Option<String> {
        let seconds = |d: Duration| format!("{}s", d.as_secs());
        let millis = |d: Duration| d.as_millis().to_string();
        Some(match name {
            "__rate_interval" => seconds(self.rate_interval()),
            "__rate_interval_ms" => millis(self.rate_interval()),
            "__interval" => seconds(self.interval),
            "__interval_ms" => millis(self.interval),
            "__range" => seconds(self.range),
            "__range_s" => self.range.as_secs().to_string(),
            "__range_ms" => millis(self.range),
            _ => return None,
        })
    }
}

/// Every shown target of every panel (rows' collapsed panels included),
/// expanded for `view`.
pub fn queries(dashboard: &Value, view: &GrafanaView) -> Result<Vec<PanelQuery>, String> {
    let mut found = Vec::new();
    collect(&dashboard["panels"], view, &mut found)?;
    Ok(found)
}

fn collect(panels: &Value, view: &GrafanaView, into: &mut Vec<PanelQuery>) -> Result<(), String> {
    for panel in panels.as_array().into_iter().flatten() {
        collect(&panel["panels"], view, into)?;
        for target in panel["targets"].as_array().into_iter().flatten() {
            let Some(expr) = target["expr"].as_str() else {
                continue;
            };
            if target["hide"].as_bool() == Some(true) {
                continue;
            }
            let name = format!(
                "#{} {:?} ({})",
                panel["id"],
                panel["title"].as_str().unwrap_or_default(),
                target["refId"].as_str().unwrap_or("?")
            );
            let expr = view.expand(expr).map_err(|e| format!("{name}: {e}"))?;
            into.push(PanelQuery { panel: name, expr });
        }
    }
    Ok(())
}

/// A duration as Grafana and Prometheus write one: `15s`, `1m`, `6h`, `2d`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let unit_at = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(unit_at);
    let number: u64 = number.parse().ok()?;
    let unit = match unit {
        "ms" => return Some(Duration::from_millis(number)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return None,
    };
    Some(Duration::from_secs(number * unit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> GrafanaView {
        GrafanaView {
            scrape_interval: Duration::from_secs(15),
            interval: Duration::from_secs(15),
            range: Duration::from_secs(6 * 3600),
        }
    }

    #[test]
    fn the_rate_interval_is_at_least_four_scrapes() {
        assert_eq!(view().rate_interval(), Duration::from_secs(60));
        let wide = GrafanaView {
            interval: Duration::from_secs(60),
            ..view()
        };
        assert_eq!(wide.rate_interval(), Duration::from_secs(75));
    }

    #[test]
    fn variables_are_expanded_and_promql_dollars_kept() {
        assert_eq!(
            view()
                .expand("rate(x[$__rate_interval]) + rate(y[${__interval}]) + z[$__range]")
                .as_deref(),
            Ok("rate(x[60s]) + rate(y[15s]) + z[21600s]")
        );
        assert_eq!(
            view()
                .expand(r#"label_replace(up, "a", "$1", "job", "(.*)")"#)
                .as_deref(),
            Ok(r#"label_replace(up, "a", "$1", "job", "(.*)")"#)
        );
        let unknown = view()
            .expand("up{job=~\"$job\"}")
            .expect_err("$job is not known");
        assert!(unknown.contains("$job"), "{unknown}");
    }

    #[test]
    fn durations_parse_as_grafana_writes_them() {
        assert_eq!(parse_duration("15s"), Some(Duration::from_secs(15)));
        assert_eq!(parse_duration("6h"), Some(Duration::from_secs(21_600)));
        assert_eq!(parse_duration("1x"), None);
        assert_eq!(parse_duration("s"), None);
    }
}
