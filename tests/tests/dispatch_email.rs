//! The e-mail sink against a real PostgreSQL, RabbitMQ and SMTP server
//! (aiosmtpd on loopback): what each outcome tells the person, where the
//! address comes from, that no identity data ever reaches an e-mail, a
//! server that is down or refuses, and templates overridden from a
//! directory.
#![allow(clippy::unwrap_used)] // test code: a failed step should stop the test loudly

use std::sync::Arc;
use std::time::Duration;

use idv_tests::broker::TestBroker;
use idv_tests::database::TestDatabase;
use idv_tests::dispatch_world::*;
use idv_tests::smtp::{Received, SmtpServer};
use idv_tests::worker_world::*;
use serde_json::{Value, json};
use worker::dispatch::Dispatcher;
use worker::dispatch::email::{message_id, words::what_went_wrong};
use worker::metrics::{ActionLabels, Metrics};
use worker::settings::Settings;
use worker::store::Store;

const DEADLINE: Duration = Duration::from_secs(30);
const FROM: &str = "identity@example.com";
/// Every e-mail row (the outcome message rows are settled alongside).
const EMAIL_ROWS: &str = "%:notify_user_%";

/// A test's services, store and dispatcher, e-mailing through `smtp`.
struct World {
    _broker: TestBroker,
    _db: TestDatabase,
    settings: Settings,
    store: Store,
    client: tokio_postgres::Client,
    dispatcher: Dispatcher,
    metrics: Arc<Metrics>,
}

impl World {
    async fn new(smtp: &SmtpServer, extra: &[(&str, &str)]) -> Self {
        let broker = TestBroker::new().await;
        let db = TestDatabase::new().await;
        let url = smtp.url();
        let mut pairs = vec![("SMTP_URL", url.as_str()), ("EMAIL_FROM", FROM)];
        pairs.extend(FAST_DISPATCH);
        pairs.extend(extra);
        let settings = settings(Some(&broker), &db, &pairs);
        let store = store(&settings).await;
        let client = db.client().await;
        let (dispatcher, metrics) = dispatcher(&settings).await;
        Self {
            _broker: broker,
            _db: db,
            settings,
            store,
            client,
            dispatcher,
            metrics,
        }
    }

    async fn apply(&self, bodies: &[Vec<u8>]) {
        apply_each(&self.store, &self.settings, bodies).await;
    }

    /// Dispatches until no e-mail row is pending.
    async fn settle(&self) -> Vec<OutboxState> {
        dispatch_until(
            &self.dispatcher,
            &self.client,
            EMAIL_ROWS,
            DEADLINE,
            |rows| !rows.is_empty() && rows.iter().all(|r| r.status != "pending"),
        )
        .await
    }

    async fn contact(&self, subject: &str, email: &str) {
        self.client
            .execute(
                "INSERT INTO subject_contacts (subject_key, email) VALUES ($1, $2)",
                &[&subject, &email],
            )
            .await
            .unwrap();
    }
}

/// A unique address at example.com.
fn address(prefix: &str) -> String {
    format!("{}@example.com", unique(prefix))
}

/// `session` with `provided_details.email` and/or `metadata.email`.
fn with_email(mut session: Value, provided: Option<&str>, metadata: Option<&str>) -> Value {
    if let Some(email) = provided {
        session["provided_details"] = json!({ "email": email });
    }
    if let Some(email) = metadata {
        session["metadata"]["email"] = json!(email);
    }
    session
}

fn verified(user: &str, vs: &str, created: i64, email: Option<&str>) -> Vec<u8> {
    let session = with_email(session(vs, "verified", Some(user), None), email, None);
    event(&unique("evt_"), "verified", created, session)
}

fn failure(user: &str, vs: &str, created: i64, code: &str, email: Option<&str>) -> Vec<u8> {
    let session = with_email(
        session(vs, "requires_input", Some(user), Some(code)),
        email,
        None,
    );
    event(&unique("evt_"), "requires_input", created, session)
}

fn status_of<'a>(rows: &'a [OutboxState], kind: &str) -> &'a OutboxState {
    rows.iter()
        .find(|r| r.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} row in {rows:#?}"))
}

/// The only e-mail received, after `rows` settled.
async fn the_one_email(smtp: &SmtpServer) -> Received {
    let mut messages = smtp.wait_for(1, DEADLINE).await;
    assert_eq!(messages.len(), 1, "exactly one e-mail: {messages:#?}");
    messages.remove(0)
}

#[tokio::test]
async fn a_verified_person_gets_one_you_are_verified_email_carrying_the_rows_key() {
    let smtp = SmtpServer::start().await;
    let world = World::new(&smtp, &[]).await;
    let (user, vs, to) = (unique("user_"), unique("vs_"), address("person-"));
    world
        .apply(&[verified(&user, &vs, 1_700_000_000, Some(&to))])
        .await;

    let rows = world.settle().await;
    let row = status_of(&rows, "notify_user_verified");
    assert_eq!(row.status, "sent", "{rows:#?}");
    let email = the_one_email(&smtp).await;
    assert_eq!(email.header("To"), Some(to.as_str()));
    assert_eq!(email.header("From"), Some(FROM));
    assert_eq!(email.subject(), "You are verified");
    assert_eq!(email.content_type, "multipart/alternative");
    assert!(
        email.text().contains("You are verified"),
        "{}",
        email.text()
    );
    assert!(
        email.html().contains("<strong>You are verified</strong>"),
        "{}",
        email.html()
    );
    let key = format!("{vs}:verified:notify_user_verified");
    assert_eq!(row.idempotency_key, key);
    assert_eq!(email.header("X-Idempotency-Key"), Some(key.as_str()));
    assert_eq!(email.header("Message-ID"), Some(message_id(&key).as_str()));
}

#[tokio::test]
async fn a_failure_is_told_in_plain_words_with_the_attempts_left_never_in_stripes_words() {
    let smtp = SmtpServer::start().await;
    let world = World::new(&smtp, &[]).await;
    let (user, vs, to) = (unique("user_"), unique("vs_"), address("person-"));
    let stripes_words = "Stripe's own words about this document";
    let mut first = session(&vs, "requires_input", Some(&user), Some("document_expired"));
    first["last_error"]["reason"] = json!(stripes_words);
    let first = with_email(first, Some(&to), None);
    world
        .apply(&[event(
            &unique("evt_"),
            "requires_input",
            1_700_000_000,
            first,
        )])
        .await;
    assert_eq!(
        status_of(&world.settle().await, "notify_user_retry").status,
        "sent"
    );
    let email = the_one_email(&smtp).await;
    assert_eq!(email.subject(), "We could not verify your identity yet");
    for part in [email.text(), email.html()] {
        assert!(part.contains(what_went_wrong("document_expired")), "{part}");
        assert!(part.contains("Attempts left: 2 of 3"), "{part}");
        assert!(
            part.contains("document_expired"),
            "the code, for support: {part}"
        );
        assert!(!part.contains(stripes_words), "Stripe's reason: {part}");
        assert!(!part.contains("reason for"), "Stripe's reason: {part}");
    }

    // A second failure, of another family, from the same session.
    world
        .apply(&[failure(
            &user,
            &vs,
            1_700_000_100,
            "selfie_face_mismatch",
            Some(&to),
        )])
        .await;
    world.settle().await;
    let messages = smtp.wait_for(2, DEADLINE).await;
    assert_eq!(messages.len(), 2);
    let second = messages
        .iter()
        .find(|m| m.header("Message-ID") != email.header("Message-ID"))
        .unwrap();
    assert!(
        second
            .text()
            .contains(what_went_wrong("selfie_face_mismatch")),
        "{}",
        second.text()
    );
    assert!(
        second.text().contains("Attempts left: 1 of 3"),
        "{}",
        second.text()
    );
    assert!(!second.raw.contains("reason for"), "{}", second.raw);
}

#[tokio::test]
async fn at_the_limit_the_person_is_offered_another_way_once() {
    let smtp = SmtpServer::start().await;
    let world = World::new(&smtp, &[]).await;
    let (user, to) = (unique("user_"), address("person-"));
    // Three sessions, only the second naming an address (in its metadata):
    // the subject-level row finds it among the subject's sessions.
    let sessions: Vec<String> = (0..3).map(|_| unique("vs_")).collect();
    let bodies: Vec<Vec<u8>> = sessions
        .iter()
        .zip(0..)
        .map(|(vs, n)| {
            let mut session = session(vs, "requires_input", Some(&user), Some("document_expired"));
            if n == 1 {
                session = with_email(session, None, Some(&to));
            }
            event(
                &unique("evt_"),
                "requires_input",
                1_700_000_000 + n,
                session,
            )
        })
        .collect();
    world.apply(&bodies).await;

    let rows = world.settle().await;
    assert_eq!(
        status_of(&rows, "notify_user_alternative").status,
        "sent",
        "{rows:#?}"
    );
    for row in rows.iter().filter(|r| r.kind == "notify_user_retry") {
        assert_eq!(row.status, "superseded", "{rows:#?}");
    }
    let email = the_one_email(&smtp).await;
    assert_eq!(email.header("To"), Some(to.as_str()));
    assert_eq!(
        email.subject(),
        "We will offer you another way to verify your identity"
    );
    assert!(
        email.text().contains("We will offer you"),
        "{}",
        email.text()
    );
    let key = format!("{user}:manual_review:notify_user_alternative");
    assert_eq!(email.header("X-Idempotency-Key"), Some(key.as_str()));
}

#[tokio::test]
async fn the_platforms_contact_address_comes_before_the_sessions_own() {
    let smtp = SmtpServer::start().await;
    let world = World::new(&smtp, &[]).await;
    let (user, vs) = (unique("user_"), unique("vs_"));
    let (contact, provided) = (address("contact-"), address("provided-"));
    world.contact(&user, &contact).await;
    world
        .apply(&[verified(&user, &vs, 1_700_000_000, Some(&provided))])
        .await;

    world.settle().await;
    let email = the_one_email(&smtp).await;
    assert_eq!(email.header("To"), Some(contact.as_str()));
    assert!(!email.raw.contains(&provided), "{}", email.raw);
}

#[tokio::test]
async fn no_address_or_an_invalid_one_is_skipped_and_counted_not_failed() {
    let smtp = SmtpServer::start().await;
    let world = World::new(&smtp, &[]).await;
    let (nobody, nobodys) = (unique("user_"), unique("vs_"));
    let (invalid, invalids) = (unique("user_"), unique("vs_"));
    world
        .apply(&[
            verified(&nobody, &nobodys, 1_700_000_000, None),
            verified(
                &invalid,
                &invalids,
                1_700_000_000,
                Some("Jane Doe, 17 Larkspur Lane"),
            ),
        ])
        .await;

    let rows = world.settle().await;
    let mut why: Vec<(&str, Option<&str>)> = rows
        .iter()
        .map(|r| (r.status.as_str(), r.last_error.as_deref()))
        .collect();
    why.sort();
    assert_eq!(
        why,
        [
            ("skipped", Some("invalid e-mail address")),
            ("skipped", Some("no e-mail address"))
        ],
        "{rows:#?}"
    );
    let skipped = world
        .metrics
        .outbox_actions
        .get_or_create(&ActionLabels {
            kind: "notify_user_verified".to_owned(),
            result: "skipped".to_owned(),
        })
        .get();
    assert_eq!(skipped, 2);
    assert!(smtp.messages().await.is_empty(), "no e-mail");
}

/// Identity data Stripe may send: verified outputs, provided details,
/// metadata, and a reason text that quotes them.
const IDENTITY: [&str; 9] = [
    "Zebulon",
    "Quackenbush",
    "1961",
    "Z98765432",
    "Larkspur",
    "Wexford",
    "Y35 XK20",
    "5550123",
    "expired on",
];

/// Whether `needle` is in `text`. A short number counts only standing
/// alone (not inside a longer run of letters and digits): the message's
/// ids, `Message-ID` hash and the SMTP peer's port are random, and `…1961…`
/// can turn up inside them. A longer one (the phone number's `5550123`,
/// inside `+15555550123`) is as unlikely by chance as a word.
fn leaks(text: &str, needle: &str) -> bool {
    if needle.len() > 5 || !needle.bytes().all(|b| b.is_ascii_digit()) {
        return text.contains(needle);
    }
    text.match_indices(needle).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + needle.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

fn with_identity(mut session: Value) -> Value {
    session["verified_outputs"] = json!({
        "first_name": "Zebulon",
        "last_name": "Quackenbush",
        "dob": {"day": 7, "month": 3, "year": 1961},
        "id_number": "Z98765432",
        "id_number_type": "us_ssn",
        "address": {"line1": "17 Larkspur Lane", "city": "Wexford",
                    "postal_code": "Y35 XK20", "country": "IE"},
    });
    session["provided_details"]["phone"] = json!("+15555550123");
    session["metadata"]["full_name"] = json!("Zebulon Quackenbush");
    session["metadata"]["dob"] = json!("1961-03-07");
    session["metadata"]["id_number"] = json!("Z98765432");
    if session["last_error"].is_object() {
        session["last_error"]["reason"] =
            json!("The document of Zebulon Quackenbush (Z98765432) expired on 1961-03-07.");
    }
    session
}

#[tokio::test]
async fn no_identity_data_reaches_any_email() {
    let smtp = SmtpServer::start().await;
    let world = World::new(&smtp, &[]).await;
    // One person fails once and is then verified; another reaches the limit.
    let (told, vs, told_to) = (unique("user_"), unique("vs_"), address("told-"));
    let (limited, limited_to) = (unique("user_"), address("limited-"));
    let failed_once = with_identity(with_email(
        session(&vs, "requires_input", Some(&told), Some("document_expired")),
        Some(&told_to),
        Some(&told_to),
    ));
    world
        .apply(&[event(
            &unique("evt_"),
            "requires_input",
            1_700_000_000,
            failed_once,
        )])
        .await;
    world.settle().await;
    let now_verified = with_identity(with_email(
        session(&vs, "verified", Some(&told), None),
        Some(&told_to),
        None,
    ));
    let limit: Vec<Vec<u8>> = (0..3)
        .map(|n| {
            let session = with_identity(with_email(
                session(
                    &unique("vs_"),
                    "requires_input",
                    Some(&limited),
                    Some("id_number_mismatch"),
                ),
                None,
                Some(&limited_to),
            ));
            event(
                &unique("evt_"),
                "requires_input",
                1_700_000_010 + n,
                session,
            )
        })
        .collect();
    world
        .apply(
            &[
                vec![event(
                    &unique("evt_"),
                    "verified",
                    1_700_000_100,
                    now_verified,
                )],
                limit,
            ]
            .concat(),
        )
        .await;
    world.settle().await;

    let messages = smtp.wait_for(3, DEADLINE).await;
    let mut subjects: Vec<&str> = messages.iter().map(Received::subject).collect();
    subjects.sort_unstable();
    assert_eq!(
        subjects,
        [
            "We could not verify your identity yet",
            "We will offer you another way to verify your identity",
            "You are verified",
        ]
    );
    for email in &messages {
        let to = email.header("To").unwrap_or_default().to_owned();
        assert!(to == told_to || to == limited_to, "{to}");
        // The address only where the envelope needs it.
        let rest = email.everything_except(&["To", "X-RcptTo"]);
        assert!(!rest.contains(&to), "the address outside To: {rest}");
        for needle in IDENTITY {
            assert!(!leaks(&rest, needle), "{needle:?} in an e-mail: {rest}");
        }
    }
}

#[tokio::test]
async fn while_the_smtp_server_is_down_the_row_is_retried_then_sent_once_it_is_back() {
    let mut smtp = SmtpServer::down();
    let world = World::new(&smtp, &[]).await;
    let (user, vs, to) = (unique("user_"), unique("vs_"), address("person-"));
    world
        .apply(&[verified(&user, &vs, 1_700_000_000, Some(&to))])
        .await;

    let rows = dispatch_until(
        &world.dispatcher,
        &world.client,
        EMAIL_ROWS,
        DEADLINE,
        |rows| {
            rows.iter()
                .any(|r| r.attempts >= 2 || r.status != "pending")
        },
    )
    .await;
    let row = status_of(&rows, "notify_user_verified");
    assert_eq!(row.status, "pending", "{rows:#?}");
    assert_eq!(
        row.last_error.as_deref(),
        Some("could not talk to the SMTP server")
    );

    smtp.resume().await;
    let rows = world.settle().await;
    assert_eq!(status_of(&rows, "notify_user_verified").status, "sent");
    let email = the_one_email(&smtp).await;
    assert_eq!(email.subject(), "You are verified");
}

#[tokio::test]
async fn a_permanent_refusal_fails_the_row_without_quoting_the_server() {
    let smtp = SmtpServer::start().await;
    let world = World::new(&smtp, &[]).await;
    let (user, vs, to) = (unique("user_"), unique("vs_"), address("refuse-"));
    world.contact(&user, &to).await;
    world
        .apply(&[verified(&user, &vs, 1_700_000_000, None)])
        .await;

    let rows = world.settle().await;
    let row = status_of(&rows, "notify_user_verified");
    assert_eq!(row.status, "failed", "{rows:#?}");
    assert_eq!(row.attempts, 1, "not retried: {rows:#?}");
    assert_eq!(
        row.last_error.as_deref(),
        Some("the SMTP server refused the e-mail: 550")
    );
    assert!(smtp.messages().await.is_empty());
}

#[tokio::test]
async fn a_retry_notice_for_a_verified_person_is_superseded_and_not_sent() {
    let smtp = SmtpServer::start().await;
    let world = World::new(&smtp, &[]).await;
    let (user, to) = (unique("user_"), address("person-"));
    // The failed session stays as it was: the person was verified in a
    // second one before the notice's turn came.
    let (failed_vs, verified_vs) = (unique("vs_"), unique("vs_"));
    world
        .apply(&[
            failure(
                &user,
                &failed_vs,
                1_700_000_000,
                "document_expired",
                Some(&to),
            ),
            verified(&user, &verified_vs, 1_700_000_100, Some(&to)),
        ])
        .await;

    let rows = world.settle().await;
    assert_eq!(status_of(&rows, "notify_user_retry").status, "superseded");
    assert_eq!(status_of(&rows, "notify_user_verified").status, "sent");
    let email = the_one_email(&smtp).await;
    assert_eq!(email.subject(), "You are verified");
}

#[tokio::test]
async fn templates_in_email_templates_dir_replace_the_built_in_ones() {
    let dir = std::env::temp_dir().join(unique("idv-email-templates-"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("verified.txt"),
        "Subject: Welcome aboard ({{outcome}})\n\nOur own words: {{outcome}}.\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("verified.html"),
        "<p>Our own HTML: {{outcome}}</p>\n",
    )
    .unwrap();
    let dir_text = dir.to_string_lossy().into_owned();
    let smtp = SmtpServer::start().await;
    let world = World::new(&smtp, &[("EMAIL_TEMPLATES_DIR", dir_text.as_str())]).await;
    let (user, vs, to) = (unique("user_"), unique("vs_"), address("person-"));
    world
        .apply(&[verified(&user, &vs, 1_700_000_000, Some(&to))])
        .await;

    world.settle().await;
    let email = the_one_email(&smtp).await;
    assert_eq!(email.subject(), "Welcome aboard (verified)");
    assert_eq!(email.text(), "Our own words: verified.\n");
    assert_eq!(email.html(), "<p>Our own HTML: verified</p>\n");

    // A template with a variable that does not exist stops the start.
    std::fs::write(
        dir.join("manual_review.txt"),
        "Subject: Hi {{first_name}}\n",
    )
    .unwrap();
    let error = Dispatcher::new(
        &world.settings,
        worker::store::connect_pool(&world.settings.database_url, 1)
            .await
            .unwrap(),
        Arc::new(Metrics::default()),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("EMAIL_TEMPLATES_DIR"), "{error}");
    assert!(error.contains("manual_review.txt"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_redacted_session_is_written_to_only_at_the_platforms_contact_address() {
    let smtp = SmtpServer::start().await;
    let world = World::new(&smtp, &[]).await;
    let (user, contact) = (unique("user_"), address("contact-"));
    let (erased, kept) = (unique("vs_"), unique("vs_"));
    let redacted = |vs: &str| {
        let mut session = session(vs, "verified", Some("[redacted]"), None);
        session["redaction"] = json!({"status": "redacted"});
        event(&unique("evt_"), "redacted", 1_700_000_200, session)
    };
    // A person with no contact row: the session's own address is gone.
    let nobody = unique("user_");
    world
        .apply(&[
            verified(&nobody, &erased, 1_700_000_000, Some(&address("erased-"))),
            redacted(&erased),
            verified(&user, &kept, 1_700_000_000, Some(&address("erased-"))),
            redacted(&kept),
        ])
        .await;
    world.contact(&user, &contact).await;

    let rows = world.settle().await;
    let by_session = |vs: &str| {
        rows.iter()
            .find(|r| r.idempotency_key.starts_with(vs))
            .unwrap()
            .clone()
    };
    assert_eq!(by_session(&erased).status, "skipped", "{rows:#?}");
    assert_eq!(by_session(&kept).status, "sent", "{rows:#?}");
    let email = the_one_email(&smtp).await;
    assert_eq!(email.header("To"), Some(contact.as_str()));
}
