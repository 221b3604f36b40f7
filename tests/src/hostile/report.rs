//! The run's table, and every way it falls short of the promise: each bad
//! request refused, nothing of them published, each good event answered
//! 200 and in the queue exactly once.

use std::fmt::Write as _;

use super::run::Report;

impl Report {
    /// The table: one line per family, a total, and the good stream.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<20} {:>8} {:<28} {:>7} {:>12} {:>10}",
            "family", "requests", "answered 4xx (by status)", "closed", "not refused", "published"
        );
        let mut total = (0, 0, 0, 0, 0);
        for (family, tally) in &self.families {
            let answered: Vec<String> = tally
                .statuses
                .iter()
                .map(|(status, count)| format!("{status}: {count}"))
                .collect();
            let published = self.published.hostile.get(family).copied().unwrap_or(0);
            let answered_4xx: usize = tally
                .statuses
                .iter()
                .filter(|(status, _)| (400..500).contains(*status))
                .map(|(_, count)| count)
                .sum();
            total.0 += tally.requests;
            total.1 += answered_4xx;
            total.2 += tally.closed;
            total.3 += tally.not_refused;
            total.4 += published;
            let _ = writeln!(
                out,
                "{:<20} {:>8} {:<28} {:>7} {:>12} {:>10}",
                family.code(),
                tally.requests,
                answered.join(", "),
                tally.closed,
                tally.not_refused,
                published
            );
        }
        let _ = writeln!(
            out,
            "{:<20} {:>8} {:<28} {:>7} {:>12} {:>10}",
            "total",
            total.0,
            format!("4xx: {}", total.1),
            total.2,
            total.3,
            total.4
        );
        let _ = writeln!(
            out,
            "corpus sent in {:.1} s ({:.0} requests/s)",
            self.attack_elapsed.as_secs_f64(),
            total.0 as f64 / self.attack_elapsed.as_secs_f64().max(0.001)
        );
        let _ = writeln!(out);
        for good in [&self.baseline, &self.under_attack] {
            let _ = writeln!(out, "{}", good.phase);
        }
        let _ = writeln!(
            out,
            "good stream p99 under attack / alone: {:.2}  (p50 {:.2})",
            ratio(&self.under_attack, &self.baseline, 0.99),
            ratio(&self.under_attack, &self.baseline, 0.50),
        );
        out
    }

    /// Every broken promise, in words; empty when the run passed.
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        for (family, tally) in &self.families {
            if tally.not_refused > 0 {
                failures.push(format!(
                    "{}: {} of {} not refused as expected, e.g. {}",
                    family.code(),
                    tally.not_refused,
                    tally.requests,
                    tally.examples.join("; ")
                ));
            }
        }
        for (family, count) in &self.published.hostile {
            failures.push(format!("{}: {count} published", family.code()));
        }
        if self.published.unreadable > 0 {
            failures.push(format!(
                "{} messages without a readable id published",
                self.published.unreadable
            ));
        }
        for good in [&self.baseline, &self.under_attack] {
            if let Some((id, why)) = good.refused.first() {
                failures.push(format!(
                    "{}: {} good events not answered 200, first {id}: {why}",
                    good.phase.name,
                    good.refused.len()
                ));
            }
        }
        let mut expected = std::collections::HashSet::new();
        for id in self
            .baseline
            .accepted
            .iter()
            .chain(&self.under_attack.accepted)
        {
            expected.insert(id.as_str());
            match self.published.by_id.get(id) {
                Some(1) => {}
                copies => failures.push(format!(
                    "good event {id} answered 200 is in the queues {} times",
                    copies.copied().unwrap_or(0)
                )),
            }
        }
        for id in self.published.by_id.keys() {
            if !expected.contains(id.as_str()) {
                failures.push(format!(
                    "{id} published but no good event answered 200 had it"
                ));
            }
        }
        failures.truncate(40);
        failures
    }
}

fn ratio(
    over: &super::good_stream::GoodResult,
    under: &super::good_stream::GoodResult,
    q: f64,
) -> f64 {
    let base = under.phase.quantile(q).as_secs_f64();
    if base > 0.0 {
        over.phase.quantile(q).as_secs_f64() / base
    } else {
        0.0
    }
}
