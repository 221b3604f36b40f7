//! What Stripe would send for a crowd of people: each subject lives one
//! story (verified at once, failures with mixed codes then verified, the
//! attempt limit reached or passed, a code retrying cannot fix, canceled,
//! redacted, abandoned, an unknown code, still processing…), told as the
//! session events Stripe sends, each with its own id and `created` time.
//! A few poison events (a status that contradicts the type) go with them:
//! ingest takes them, the worker cannot apply them, and the DLQ must hold
//! exactly those.

use rand::Rng;
use rand::seq::IndexedRandom;
use serde_json::json;

use crate::worker_world::{event, session};

/// Codes the person can fix by trying again (README, "Attempts").
pub const RETRYABLE: [&str; 12] = [
    "document_expired",
    "document_unverified_other",
    "document_type_not_supported",
    "selfie_document_missing_photo",
    "selfie_face_mismatch",
    "selfie_unverified_other",
    "selfie_manipulated",
    "id_number_unverified_other",
    "id_number_insufficient_document_data",
    "id_number_mismatch",
    "device_not_supported",
    "email_unverified_other",
];

/// A code no policy names: treated as retryable.
pub const UNKNOWN_CODE: &str = "fault_run_code_from_the_future";

/// Codes that send the person to manual review at once.
pub const BLOCKING: [&str; 3] = [
    "under_supported_age",
    "country_not_supported",
    "consent_declined",
];

/// The user left without submitting: not an attempt.
pub const ABANDONED: &str = "abandoned";

/// One event Stripe sends about a session.
#[derive(Debug, Clone)]
pub struct StoryEvent {
    pub id: String,
    /// The part after `identity.verification_session.`.
    pub kind: &'static str,
    pub session: String,
    pub created: i64,
    /// `last_error.code` of a `requires_input`.
    pub code: Option<&'static str>,
    /// The signed body (what ingest publishes unchanged).
    pub body: Vec<u8>,
}

/// The shape of a subject's story, for the ledger and failure messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Plot {
    Verified,
    FailedThenVerified,
    LimitReached,
    LimitPassed,
    Blocked,
    FailedThenCanceled,
    CanceledThenVerified,
    VerifiedThenRedacted,
    FailedThenRedacted,
    Abandoned,
    UnknownCodes,
    LimitThenVerified,
    StillProcessing,
    FailedThenProcessing,
}

impl Plot {
    pub const ALL: [Self; 14] = [
        Self::Verified,
        Self::FailedThenVerified,
        Self::LimitReached,
        Self::LimitPassed,
        Self::Blocked,
        Self::FailedThenCanceled,
        Self::CanceledThenVerified,
        Self::VerifiedThenRedacted,
        Self::FailedThenRedacted,
        Self::Abandoned,
        Self::UnknownCodes,
        Self::LimitThenVerified,
        Self::StillProcessing,
        Self::FailedThenProcessing,
    ];
}

/// One subject and the events of its sessions, in the order they happened.
#[derive(Debug, Clone)]
pub struct Story {
    pub subject: String,
    pub plot: Plot,
    pub events: Vec<StoryEvent>,
}

/// Builds one story's events, one session at a time, one second or more apart.
struct Teller<'a, R: Rng> {
    rng: &'a mut R,
    subject: String,
    prefix: String,
    clock: i64,
    sessions: usize,
    events: Vec<StoryEvent>,
}

impl<R: Rng> Teller<'_, R> {
    fn new_session(&mut self) -> String {
        self.sessions += 1;
        format!("vs_{}_{}", self.prefix, self.sessions)
    }

    /// `kind` for `vs`, `gap` seconds after the previous event (0: the
    /// same second, where the rank breaks the tie).
    fn say(&mut self, vs: &str, kind: &'static str, code: Option<&'static str>, gap: i64) {
        self.clock += gap;
        let id = format!("evt_{}_{}", self.prefix, self.events.len() + 1);
        let body = match kind {
            "redacted" => redacted_event(&id, vs, self.status_of(vs), self.clock),
            "created" => event(
                &id,
                kind,
                self.clock,
                session(vs, "requires_input", Some(&self.subject), None),
            ),
            _ => event(
                &id,
                kind,
                self.clock,
                session(vs, kind, Some(&self.subject), code),
            ),
        };
        self.events.push(StoryEvent {
            id,
            kind,
            session: vs.to_owned(),
            created: self.clock,
            code,
            body,
        });
    }

    /// The status of `vs` after its events so far (what a redacted copy says).
    fn status_of(&self, vs: &str) -> &'static str {
        match self.events.iter().rev().find(|e| e.session == vs) {
            Some(e) if e.kind == "created" => "requires_input",
            Some(e) => e.kind,
            None => "requires_input",
        }
    }

    fn retryable(&mut self) -> &'static str {
        RETRYABLE.choose(self.rng).copied().unwrap_or(RETRYABLE[0])
    }

    /// `processing` then a failure of a retryable code (sometimes in the
    /// same second: the check fails within a second of the submission).
    fn fail(&mut self, vs: &str) {
        let code = self.retryable();
        let gap = i64::from(self.rng.random_bool(0.3));
        self.say(vs, "processing", None, 1);
        self.say(vs, "requires_input", Some(code), 1 - gap);
    }
}

/// The story of subject number `n` of the run tagged `tag`, whose events
/// start at `start` (unix seconds).
pub fn story<R: Rng>(rng: &mut R, tag: &str, n: usize, start: i64) -> Story {
    let plot = Plot::ALL[n % Plot::ALL.len()];
    let prefix = format!("{tag}_{n}");
    let mut t = Teller {
        rng,
        subject: format!("user_{prefix}"),
        prefix,
        clock: start,
        sessions: 0,
        events: Vec::new(),
    };
    let a = t.new_session();
    if t.rng.random_bool(0.5) {
        t.say(&a, "created", None, 0);
    }
    match plot {
        Plot::Verified => {
            t.say(&a, "processing", None, 1);
            t.say(&a, "verified", None, 1);
        }
        Plot::FailedThenVerified => {
            t.fail(&a);
            t.say(&a, "processing", None, 30);
            // Verified within the second of its processing: the rank decides.
            t.say(&a, "verified", None, 0);
        }
        Plot::LimitReached | Plot::LimitPassed => {
            let failures = if plot == Plot::LimitReached { 3 } else { 4 };
            for _ in 0..failures {
                t.fail(&a);
            }
        }
        Plot::Blocked => {
            let code = BLOCKING.choose(t.rng).copied().unwrap_or(BLOCKING[0]);
            t.say(&a, "processing", None, 1);
            t.say(&a, "requires_input", Some(code), 1);
        }
        Plot::FailedThenCanceled => {
            t.fail(&a);
            t.say(&a, "canceled", None, 60);
        }
        Plot::CanceledThenVerified => {
            t.say(&a, "processing", None, 1);
            t.say(&a, "canceled", None, 5);
            let b = t.new_session();
            t.say(&b, "processing", None, 60);
            t.say(&b, "verified", None, 2);
        }
        Plot::VerifiedThenRedacted => {
            t.say(&a, "processing", None, 1);
            t.say(&a, "verified", None, 1);
            t.say(&a, "redacted", None, 600);
        }
        Plot::FailedThenRedacted => {
            t.fail(&a);
            t.say(&a, "redacted", None, 600);
        }
        Plot::Abandoned => {
            t.say(&a, "processing", None, 1);
            t.say(&a, "requires_input", Some(ABANDONED), 1);
        }
        Plot::UnknownCodes => {
            t.say(&a, "processing", None, 1);
            t.say(&a, "requires_input", Some(UNKNOWN_CODE), 1);
            t.fail(&a);
        }
        Plot::LimitThenVerified => {
            for _ in 0..3 {
                t.fail(&a);
            }
            let b = t.new_session();
            t.say(&b, "processing", None, 3600);
            t.say(&b, "verified", None, 1);
        }
        Plot::StillProcessing => t.say(&a, "processing", None, 1),
        Plot::FailedThenProcessing => {
            t.fail(&a);
            t.say(&a, "processing", None, 20);
        }
    }
    Story {
        subject: t.subject,
        plot,
        events: t.events,
    }
}

/// A `redacted` event as Stripe sends it: the person's reference replaced,
/// the metadata erased, `redaction` set.
fn redacted_event(id: &str, vs: &str, status: &str, created: i64) -> Vec<u8> {
    let mut object = session(vs, status, Some("[redacted]"), None);
    object["redaction"] = json!({"status": "redacted"});
    event(id, "redacted", created, object)
}

/// `count` events ingest takes and the worker can never apply (a
/// `verified` whose session says `processing`): the DLQ's only rightful
/// content. Their ids.
pub fn poison(tag: &str, count: usize, created: i64) -> Vec<(String, Vec<u8>)> {
    (0..count)
        .map(|i| {
            let id = format!("evt_{tag}_poison_{i}");
            let vs = format!("vs_{tag}_poison_{i}");
            let user = format!("user_{tag}_poison_{i}");
            let body = event(
                &id,
                "verified",
                created,
                session(&vs, "processing", Some(&user), None),
            );
            (id, body)
        })
        .collect()
}
