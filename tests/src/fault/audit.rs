//! The audit after a fault run: the record read back with SQL of the
//! test's own and compared with the reference model, the webhook sink's
//! log with the outbox, and the dead letters with the poison sent. Every
//! difference is listed, none is fatal on its own: the run prints them
//! all, then fails.

use std::collections::{BTreeMap, BTreeSet};

use super::model::{ExpectedSubject, expected};
use super::stories::Story;

/// One request the outcome webhook sink received.
#[derive(Debug, Clone)]
pub struct WebhookRequest {
    /// The `Idempotency-Key` header.
    pub key: Option<String>,
    /// `idempotency_key` in the body.
    pub body_key: Option<String>,
}

/// What the audit reads besides the database.
#[derive(Debug)]
pub struct Inputs<'a> {
    pub stories: &'a [Story],
    pub max_attempts: i32,
    /// Event ids the sender saw answered 2xx.
    pub answered: &'a BTreeSet<String>,
    /// Event ids of the poison sent.
    pub poison: &'a BTreeSet<String>,
    pub webhook: &'a [WebhookRequest],
    /// Every dispatcher incarnation's stderr.
    pub dispatcher_log: &'a str,
    /// Event ids of what was left in the DLQ queue (not drained).
    pub dlq_queue: &'a [String],
}

/// The audit's figures and the differences it found.
#[derive(Debug, Default)]
pub struct Report {
    pub applied: usize,
    pub subjects: usize,
    pub outbox_rows: usize,
    pub webhook_rows_sent: usize,
    pub webhook_requests: usize,
    pub repeats: usize,
    /// Rows a dispatcher left performed but unmarked (killed, or its mark failed).
    pub interrupted_rows: usize,
    pub dead_letters: usize,
    pub discrepancies: Vec<String>,
}

impl Report {
    fn differ(&mut self, what: String) {
        self.discrepancies.push(what);
    }
}

/// Runs every check against `client`'s database.
pub async fn audit(client: &tokio_postgres::Client, inputs: &Inputs<'_>) -> Report {
    let mut report = Report::default();
    check_inbox(client, inputs, &mut report).await;
    check_record(client, inputs, &mut report).await;
    check_actions(client, inputs, &mut report).await;
    check_dead_letters(client, inputs, &mut report).await;
    report
}

async fn rows(client: &tokio_postgres::Client, sql: &str) -> Vec<tokio_postgres::Row> {
    client
        .query(sql, &[])
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"))
}

/// Every event answered 2xx is in the inbox, once (its primary key), and
/// nothing else is: no poison, nothing never sent.
async fn check_inbox(client: &tokio_postgres::Client, inputs: &Inputs<'_>, report: &mut Report) {
    let inbox: BTreeSet<String> = rows(client, "SELECT id FROM events")
        .await
        .iter()
        .map(|r| r.get(0))
        .collect();
    report.applied = inbox.len();
    let sent: BTreeSet<&str> = inputs
        .stories
        .iter()
        .flat_map(|s| &s.events)
        .map(|e| e.id.as_str())
        .collect();
    for id in &sent {
        if !inputs.answered.contains(*id) {
            report.differ(format!("{id}: never answered 2xx (the sender gave up?)"));
        }
    }
    for id in inputs.answered.difference(inputs.poison) {
        if !inbox.contains(id) {
            report.differ(format!("{id}: answered 2xx but not in the inbox (lost)"));
        }
    }
    for id in &inbox {
        if inputs.poison.contains(id) {
            report.differ(format!("{id}: poison, yet applied"));
        } else if !sent.contains(id.as_str()) {
            report.differ(format!("{id}: in the inbox but never sent"));
        }
    }
}

/// Every subject and session equals the model's.
async fn check_record(client: &tokio_postgres::Client, inputs: &Inputs<'_>, report: &mut Report) {
    let mut subjects: BTreeMap<String, tokio_postgres::Row> = rows(
        client,
        "SELECT key, status, failed_attempts, blocked, last_error_code, decided_by_session \
         FROM subjects",
    )
    .await
    .into_iter()
    .map(|r| (r.get(0), r))
    .collect();
    let sessions: BTreeMap<String, tokio_postgres::Row> = rows(
        client,
        "SELECT s.id, s.subject_key, s.status, s.redacted_at IS NOT NULL, \
         (SELECT count(*) FROM events e WHERE e.session_id = s.id), \
         (SELECT count(*) FILTER (WHERE counted_attempt) FROM events e WHERE e.session_id = s.id), \
         (SELECT count(*) FILTER (WHERE payload IS NOT NULL) FROM events e WHERE e.session_id = s.id) \
         FROM sessions s",
    )
    .await
    .into_iter()
    .map(|r| (r.get(0), r))
    .collect();
    report.subjects = inputs.stories.len();
    for story in inputs.stories {
        let want = expected(story, inputs.max_attempts);
        let Some(row) = subjects.remove(&story.subject) else {
            report.differ(format!(
                "{} ({:?}): no subject row",
                story.subject, story.plot
            ));
            continue;
        };
        let got = (
            row.get::<_, String>(1),
            row.get::<_, i32>(2),
            row.get::<_, bool>(3),
            row.get::<_, Option<String>>(4),
            row.get::<_, Option<String>>(5),
        );
        let wanted = (
            want.status.clone(),
            want.failed_attempts,
            want.blocked,
            want.last_error_code.clone(),
            want.decided_by_session.clone(),
        );
        if got != wanted {
            report.differ(format!(
                "{} ({:?}): (status, failed_attempts, blocked, last_error_code, decided_by) \
                 is {got:?}, the model says {wanted:?}",
                story.subject, story.plot
            ));
        }
        check_sessions(story, &want, &sessions, report);
    }
    for key in subjects.keys() {
        report.differ(format!("{key}: a subject no story has"));
    }
}

fn check_sessions(
    story: &Story,
    want: &ExpectedSubject,
    sessions: &BTreeMap<String, tokio_postgres::Row>,
    report: &mut Report,
) {
    for (id, session) in &want.sessions {
        let Some(row) = sessions.get(id) else {
            report.differ(format!("{id} ({:?}): no session row", story.plot));
            continue;
        };
        let got = (
            row.get::<_, Option<String>>(1),
            row.get::<_, String>(2),
            row.get::<_, bool>(3),
            row.get::<_, i64>(4),
            row.get::<_, i64>(5),
        );
        let wanted = (
            Some(story.subject.clone()),
            session.status.clone(),
            session.redacted,
            session.events,
            session.counted,
        );
        if got != wanted {
            report.differ(format!(
                "{id} ({:?}): (subject, status, redacted, events, counted) is {got:?}, \
                 the model says {wanted:?}",
                story.plot
            ));
        }
        let kept: i64 = row.get(6);
        if session.redacted && kept > 0 {
            report.differ(format!(
                "{id}: redacted, yet {kept} of its events keep their payload"
            ));
        }
    }
}

/// The rows a dispatcher performed and could not mark: named by the fail
/// point that killed it, or by its warning that the mark failed.
fn interrupted_rows(log: &str) -> BTreeMap<i64, usize> {
    let mut rows: BTreeMap<i64, usize> = BTreeMap::new();
    for line in log.lines() {
        let row = if let Some(rest) = line.split(", row ").nth(1)
            && line.starts_with("fail point: killing the process after perform")
        {
            rest.split(',').next().and_then(|n| n.trim().parse().ok())
        } else if line.contains("cannot mark the row") || line.contains("claim lost before marking")
        {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v["row"].as_i64())
        } else {
            None
        };
        if let Some(row) = row {
            *rows.entry(row).or_default() += 1;
        }
    }
    rows
}

/// The platform's messages are the model's; each webhook row sent was
/// received once, or once more per interruption between its perform and
/// its mark; nothing pending or failed is left.
async fn check_actions(client: &tokio_postgres::Client, inputs: &Inputs<'_>, report: &mut Report) {
    let outbox = rows(
        client,
        "SELECT id, kind, idempotency_key, status, coalesce(last_error, '') FROM outbox ORDER BY id",
    )
    .await;
    report.outbox_rows = outbox.len();
    let mut expected_keys = BTreeSet::new();
    for story in inputs.stories {
        for message in expected(story, inputs.max_attempts).messages {
            expected_keys.insert(format!("{message}:outcome_message"));
            expected_keys.insert(format!("{message}:outcome_webhook"));
        }
    }
    let interrupted = interrupted_rows(inputs.dispatcher_log);
    report.interrupted_rows = interrupted.values().sum();
    let mut received: BTreeMap<&str, usize> = BTreeMap::new();
    for request in inputs.webhook {
        match &request.key {
            Some(key) => *received.entry(key.as_str()).or_default() += 1,
            None => report.differ("a webhook request without an Idempotency-Key".to_owned()),
        }
        if request.key != request.body_key {
            report.differ(format!(
                "a webhook request whose Idempotency-Key {:?} is not its body's {:?}",
                request.key, request.body_key
            ));
        }
    }
    report.webhook_requests = inputs.webhook.len();
    report.repeats = received.values().map(|n| n.saturating_sub(1)).sum();
    let mut keys = BTreeSet::new();
    for row in &outbox {
        let (id, kind, key, status, error): (i64, String, String, String, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        keys.insert(key.clone());
        if !matches!(status.as_str(), "sent" | "superseded" | "skipped") {
            report.differ(format!("outbox {key}: left {status} ({error})"));
        }
        if kind != "outcome_webhook" {
            continue;
        }
        let times = received.remove(key.as_str()).unwrap_or(0);
        let again = interrupted.get(&id).copied().unwrap_or(0);
        let allowed = match status.as_str() {
            "sent" => 1..=1 + again,
            _ => 0..=again,
        };
        if status == "sent" {
            report.webhook_rows_sent += 1;
        }
        if !allowed.contains(&times) {
            report.differ(format!(
                "outbox {key} ({status}): received {times} times by the webhook; \
                 {again} interruptions between its perform and its mark allow {allowed:?}"
            ));
        }
    }
    for (key, times) in received {
        report.differ(format!(
            "webhook received {key} {times} times: no such outbox row"
        ));
    }
    for key in expected_keys.difference(&keys) {
        report.differ(format!(
            "outbox {key}: the model calls for it, it is missing"
        ));
    }
    for key in keys.difference(&expected_keys) {
        report.differ(format!("outbox {key}: the model does not call for it"));
    }
}

/// The dead letters (drained into the table or still in the DLQ) are the
/// poison sent, each once: nothing that should have been applied.
async fn check_dead_letters(
    client: &tokio_postgres::Client,
    inputs: &Inputs<'_>,
    report: &mut Report,
) {
    let mut dead: Vec<String> = crate::dead_letters::rows(client)
        .await
        .into_iter()
        .map(|row| row.event_id.unwrap_or_else(|| "(no event id)".to_owned()))
        .collect();
    dead.extend(inputs.dlq_queue.iter().cloned());
    report.dead_letters = dead.len();
    // A poison event may be dead-lettered twice (a worker killed after
    // its copy was confirmed and before the original's ack): at least once.
    let mut seen = BTreeSet::new();
    for id in &dead {
        if !inputs.poison.contains(id) {
            report.differ(format!(
                "{id}: dead-lettered, but it should have been applied"
            ));
        }
        seen.insert(id.clone());
    }
    for id in inputs.poison.difference(&seen) {
        report.differ(format!("{id}: poison, yet not dead-lettered"));
    }
}
