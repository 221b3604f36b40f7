//! `idvctl scenario`: send a whole story of signed events to ingest, wait
//! for the worker, print the resulting subject record and say whether it
//! is what the rules predict.
//!
//! - [`story`] tells each scenario as events and a sending order,
//! - [`prediction`] says what each should leave in the record, from the
//!   rules as documented, not from the worker's code,
//! - [`wait`] watches the inbox until every event of the story is applied.

use std::io::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use serde::Serialize;
use shared::config::Env;

use super::test_event::{
    self, Answer, BuiltEvent, DEFAULT_INGEST_URL, EventSpec, Ingest, checks, ids,
};
use super::{CtlSettings, UsageError, client, subject_show, terminal};
use crate::store::read::{self, SubjectView};

pub mod prediction;
pub mod story;
pub mod wait;

use prediction::Outcome;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScenarioName {
    Happy,
    RetryThenVerified,
    AttemptsExhausted,
    NotRetryable,
    OutOfOrder,
    Duplicates,
    Redacted,
}

impl ScenarioName {
    /// The name as typed on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Happy => "happy",
            Self::RetryThenVerified => "retry-then-verified",
            Self::AttemptsExhausted => "attempts-exhausted",
            Self::NotRetryable => "not-retryable",
            Self::OutOfOrder => "out-of-order",
            Self::Duplicates => "duplicates",
            Self::Redacted => "redacted",
        }
    }
}

/// Longest `--timeout`: a day. Longer is a typo, not a wait.
const MAX_TIMEOUT_SECS: u64 = 86_400;

#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Signs with --secret, else STRIPE_WEBHOOK_SECRET; reads the record \
    from DATABASE_URL; expects the worker's IDV_MAX_FAILED_ATTEMPTS.\n\n\
    Stories (one new subject each):\n  \
    happy                created, processing, verified\n  \
    retry-then-verified  a failure that can be fixed, then a second session verified\n  \
    attempts-exhausted   IDV_MAX_FAILED_ATTEMPTS failed sessions: manual review\n  \
    not-retryable        one under_supported_age failure: manual review at once\n  \
    out-of-order         the happy story, newest event first\n  \
    duplicates           the happy story, each event sent twice\n  \
    redacted             the happy story, then the session redacted\n\n\
    Exit codes: 0 as the rules predict; 1 not as predicted, refused by ingest, or \
    not applied within --timeout; 2 bad flags or settings.\n\nExamples:\n  \
    idvctl scenario happy\n  \
    idvctl scenario attempts-exhausted --subject user_demo_1\n  \
    idvctl scenario out-of-order --to http://127.0.0.1:4242/webhook --json"
)]
pub struct Scenario {
    #[arg(value_enum)]
    pub name: ScenarioName,
    /// Who the story is about (a new `scenario_…` key if not given).
    #[arg(long, value_name = "KEY")]
    pub subject: Option<String>,
    /// Ingest's webhook URL.
    #[arg(long, value_name = "URL", default_value = DEFAULT_INGEST_URL)]
    pub to: String,
    /// The endpoint's signing secret (default: STRIPE_WEBHOOK_SECRET).
    #[arg(long, value_name = "whsec_…")]
    pub secret: Option<String>,
    /// How long to wait for the worker, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub timeout: u64,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// One delivery of the story, for `--json`.
#[derive(Debug, Serialize)]
struct Delivery<'a> {
    event_id: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    session: &'a str,
    code: Option<&'a str>,
    status: u16,
}

/// The whole run, for `--json`.
#[derive(Debug, Serialize)]
struct Report<'a> {
    scenario: &'static str,
    subject: &'a str,
    to: String,
    sent: Vec<Delivery<'a>>,
    applied_in_ms: u128,
    expected: &'a Outcome,
    found: Option<&'a Outcome>,
    as_predicted: bool,
    verdict: &'a str,
    record: Option<&'a SubjectView>,
}

pub async fn run(settings: &CtlSettings, env: &Env, args: &Scenario) -> anyhow::Result<String> {
    let subject = match args.subject.as_deref() {
        Some(raw) => checks::subject(raw)?,
        None => format!("scenario_{}", ids::fresh("", 12).to_ascii_lowercase()),
    };
    if !(1..=MAX_TIMEOUT_SECS).contains(&args.timeout) {
        return Err(UsageError(format!(
            "--timeout must be 1 to {MAX_TIMEOUT_SECS} seconds, found {}",
            args.timeout
        ))
        .into());
    }
    let ingest = Ingest::new(&args.to, args.secret.as_deref(), env)?;
    // Before anything is sent: a story nobody can check is not worth sending.
    let db = client(settings).await?;

    let max_attempts = settings.max_failed_attempts;
    let story = story::story(args.name, usize::try_from(max_attempts).unwrap_or(1));
    let events = build(&story, &subject, args.name);
    let mut sent = Vec::with_capacity(story.sending.len());
    for &index in &story.sending {
        let event = &events[index];
        let answer = ingest.send(event).await.with_context(|| {
            format!(
                "scenario {} stopped after {} deliveries",
                args.name.as_str(),
                sent.len()
            )
        })?;
        sent.push((event, answer));
    }

    let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    let bar = terminal::progress(
        u64::try_from(ids.len()).unwrap_or(u64::MAX),
        "events applied",
    );
    let waited = wait::until_applied(&db, &ids, Duration::from_secs(args.timeout), &bar).await;
    bar.finish_and_clear();
    let applied_in = match waited? {
        Ok(elapsed) => elapsed,
        Err(not_applied) => anyhow::bail!(timeout_message(args, &events, &not_applied)),
    };

    let record = read::subject(&db, &subject, max_attempts)
        .await
        .context("reading the subject")?;
    let expected = prediction::predict(args.name, max_attempts);
    let found = record.as_ref().map(prediction::found);
    let verdict = prediction::verdict(&expected, found.as_ref(), &subject);
    let line = match &verdict {
        Ok(line) | Err(line) => line.as_str(),
    };
    let output = if args.json {
        serde_json::to_string_pretty(&Report {
            scenario: args.name.as_str(),
            subject: &subject,
            to: ingest.shown_url(),
            sent: sent
                .iter()
                .map(|(event, answer)| delivery(event, answer))
                .collect(),
            applied_in_ms: applied_in.as_millis(),
            expected: &expected,
            found: found.as_ref(),
            as_predicted: verdict.is_ok(),
            verdict: line,
            record: record.as_ref(),
        })?
    } else {
        let mut text = format!(
            "scenario {}: sent {} deliveries of {} events for subject {subject} to {}; the \
             worker applied them within {:.1} s\n",
            args.name.as_str(),
            sent.len(),
            events.len(),
            ingest.shown_url(),
            applied_in.as_secs_f64(),
        );
        if record.is_some() {
            text.push_str(&subject_show(settings, &subject, false).await?);
            text.push('\n');
        }
        text
    };
    match verdict {
        Ok(_) if args.json => Ok(output),
        Ok(line) => Ok(format!("{output}{line}")),
        Err(line) => {
            // The record goes to stdout as on success; the verdict is the
            // error, so that the exit code says it.
            print_now(&output);
            anyhow::bail!(line)
        }
    }
}

/// The story's events, with fresh ids: one `vs_…` per session, each step
/// one second after the one before, the last one now.
fn build(story: &story::Story, subject: &str, name: ScenarioName) -> Vec<BuiltEvent> {
    let sessions: Vec<String> = (0..story.sessions()).map(|_| ids::session_id()).collect();
    let steps = i64::try_from(story.steps.len()).unwrap_or(0);
    let first = test_event::now_unix().saturating_sub(steps);
    let sent_by = format!("idvctl scenario {}", name.as_str());
    story
        .steps
        .iter()
        .zip(first..)
        .map(|(step, created)| {
            test_event::build(&EventSpec {
                kind: step.kind,
                session: &sessions[step.session],
                subject: Some(subject),
                code: step.code,
                created,
                session_created: first.saturating_sub(60),
                sent_by: &sent_by,
            })
        })
        .collect()
}

fn delivery<'a>(event: &'a BuiltEvent, answer: &Answer) -> Delivery<'a> {
    Delivery {
        event_id: &event.id,
        event_type: &event.event_type,
        session: &event.session,
        code: event.code.as_deref(),
        status: answer.status,
    }
}

fn timeout_message(
    args: &Scenario,
    events: &[BuiltEvent],
    not_applied: &wait::NotApplied,
) -> String {
    let missing: Vec<String> = not_applied
        .missing
        .iter()
        .map(|id| {
            let event_type = events
                .iter()
                .find(|e| &e.id == id)
                .map_or("", |e| e.event_type.as_str());
            format!("{id} ({event_type})")
        })
        .collect();
    let mut message = format!(
        "scenario {}: the worker applied {} of {} events within {} s (ingest took them all); \
         not applied: {}",
        args.name.as_str(),
        events.len() - not_applied.missing.len(),
        events.len(),
        args.timeout,
        missing.join(", ")
    );
    if not_applied.dead_lettered.is_empty() {
        message.push_str(
            ". Is idv-worker running, with this DATABASE_URL and AMQP_PREFIX? (--timeout waits longer)",
        );
    } else {
        let dead: Vec<String> = not_applied
            .dead_lettered
            .iter()
            .map(|(id, kind)| format!("{id} ({kind})"))
            .collect();
        message.push_str(&format!(
            ". Dead-lettered: {} (see `idvctl dlq list`)",
            dead.join(", ")
        ));
    }
    message
}

/// Writes `text` to stdout now (a closed stdout is no reason to fail).
fn print_now(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{}", text.trim_end());
    let _ = stdout.flush();
}
