//! The batch applied in memory: duplicates, order, counting and the side
//! effects, without a database (the integration tests cover the SQL).

use super::*;
use crate::domain::state::Counted;
use crate::incoming::{Failure, Origin};
use crate::policy::CodeClass;

fn rules() -> Rules {
    Rules {
        max_failed_attempts: 3,
        sinks: crate::domain::outbox::Sinks {
            webhook: false,
            email: true,
            stripe_cancel: true,
            expected_matching: false,
        },
        policy: crate::policy::Policy::default(),
    }
}

fn event(id: &str, stage: Stage, created: i64, code: Option<&str>) -> Incoming {
    Incoming {
        event_id: id.to_owned(),
        event_type: format!("identity.verification_session.{stage}"),
        kind: EventKind::Lifecycle(stage),
        created,
        livemode: false,
        session_id: "vs_1".to_owned(),
        subject_key: Some("user_1".to_owned()),
        subject_key_rank: 0,
        failure: code.map(|code| Failure {
            code: code.to_owned(),
            reason: Some("a reason".to_owned()),
            class: CodeClass::Retryable,
            known: true,
        }),
        payload: serde_json::json!({}),
        received_at_ms: 0,
        origin: crate::incoming::Origin::Delivered,
    }
}

/// The rows a new session and subject have once the batch created them.
fn fresh() -> Locked {
    let mut locked = Locked::default();
    locked
        .sessions
        .insert("vs_1".to_owned(), SessionState::default());
    locked.subjects.insert(
        "user_1".to_owned(),
        SubjectState {
            status: "pending".to_owned(),
            decided_by: None,
            failed_attempts: 0,
            blocked: false,
            last_error_code: None,
            last_error_created: None,
            last_error_event_id: None,
            mismatch_session: None,
        },
    );
    locked
}

fn applied(plan: &Plan) -> Vec<Applied> {
    plan.outcomes.iter().map(|o| o.applied).collect()
}

#[test]
fn duplicates_in_the_batch_and_in_the_inbox_apply_once() {
    let (a, b) = (
        event("evt_a", Stage::Processing, 10, None),
        event("evt_b", Stage::Verified, 11, None),
    );
    let mut locked = fresh();
    locked.seen.insert("evt_b".to_owned());
    let plan = plan(&rules(), &[&a, &a, &b], locked).unwrap();
    assert_eq!(
        applied(&plan),
        [Applied::Applied, Applied::Duplicate, Applied::Duplicate]
    );
    assert_eq!(plan.events.len(), 1);
    assert_eq!(plan.events[0].index, 0);
}

#[test]
fn an_older_event_after_a_newer_one_is_stale_and_verified_at_is_kept() {
    let verified = event("evt_v", Stage::Verified, 20, None);
    let canceled = event("evt_c", Stage::Canceled, 21, None);
    let older = event("evt_p", Stage::Processing, 5, None);
    let plan = plan(&rules(), &[&verified, &canceled, &older], fresh()).unwrap();
    assert_eq!(
        applied(&plan),
        [Applied::Applied, Applied::Applied, Applied::Stale]
    );
    let write = &plan.sessions["vs_1"];
    let advance = write.advance.as_ref().unwrap();
    assert_eq!((advance.stage, advance.key.created), (Stage::Canceled, 21));
    assert!(write.verified && write.canceled);
    assert_eq!(write.subject_key.as_deref(), Some("user_1"));
    // The session now stands canceled (a later event), so the subject does;
    // the success was still notified when it applied.
    assert_eq!(plan.subjects["user_1"].status, "canceled");
    let rows: Vec<(&str, &str)> = plan
        .outbox
        .iter()
        .map(|r| (r.kind.as_str(), r.idempotency_key.as_str()))
        .collect();
    assert_eq!(
        rows,
        [
            ("outcome_message", "vs_1:verified:outcome_message"),
            ("notify_user_verified", "vs_1:verified:notify_user_verified"),
            ("outcome_message", "vs_1:canceled:outcome_message"),
        ]
    );
}

#[test]
fn three_failures_in_one_batch_reach_manual_review_once() {
    let failures: Vec<Incoming> = (0..4)
        .map(|i| {
            event(
                &format!("evt_f{i}"),
                Stage::RequiresInput,
                10 + i,
                Some("document_expired"),
            )
        })
        .collect();
    let refs: Vec<&Incoming> = failures.iter().collect();
    let plan = plan(&rules(), &refs, fresh()).unwrap();
    let reached: Vec<bool> = plan
        .outcomes
        .iter()
        .map(|o| o.reached_manual_review)
        .collect();
    assert_eq!(reached, [false, false, true, false]);
    let subject = &plan.subjects["user_1"];
    assert_eq!(
        (subject.status.as_str(), subject.failed_attempts),
        ("manual_review", 3)
    );
    assert_eq!(subject.last_error_event_id.as_deref(), Some("evt_f3"));
    let keys: Vec<&str> = plan
        .outbox
        .iter()
        .map(|r| r.idempotency_key.as_str())
        .collect();
    // Each failure is told (whether it still is true is the dispatcher's
    // call), then the limit: once per subject, and a cancel per session.
    let mut expected: Vec<String> = (0..4)
        .flat_map(|i| {
            ["outcome_message", "notify_user_retry"]
                .map(|kind| format!("vs_1:requires_input:evt_f{i}:{kind}"))
        })
        .collect();
    expected.extend([
        "user_1:manual_review:outcome_message".to_owned(),
        "user_1:manual_review:notify_user_alternative".to_owned(),
        "vs_1:cancel_stripe_session".to_owned(),
    ]);
    assert_eq!(keys, expected);
    assert_eq!(plan.reconciled, ["user_1"]);
    assert!(plan.outbox.iter().rev().take(3).all(|r| r.from_limit));
    assert!(plan.events.iter().all(|e| e.counted));
}

#[test]
fn an_older_failure_counts_but_keeps_the_newer_code() {
    let newer = event(
        "evt_n",
        Stage::RequiresInput,
        30,
        Some("selfie_face_mismatch"),
    );
    let older = event("evt_o", Stage::RequiresInput, 20, Some("document_expired"));
    let plan = plan(&rules(), &[&newer, &older], fresh()).unwrap();
    assert_eq!(applied(&plan), [Applied::Applied, Applied::Stale]);
    let subject = &plan.subjects["user_1"];
    assert_eq!(subject.failed_attempts, 2);
    assert_eq!(
        subject.last_error_code.as_deref(),
        Some("selfie_face_mismatch")
    );
    assert_eq!(subject.last_error_created, Some(30));
}

#[test]
fn a_redaction_keeps_later_payloads_out_and_is_erased_after_the_writes() {
    let failed = event("evt_f", Stage::RequiresInput, 10, Some("document_expired"));
    let mut redacted = event("evt_r", Stage::Created, 11, None);
    redacted.kind = EventKind::Redacted;
    redacted.subject_key = None;
    let later = event("evt_l", Stage::Verified, 12, None);
    let plan = plan(&rules(), &[&failed, &redacted, &later], fresh()).unwrap();
    assert_eq!(
        applied(&plan),
        [Applied::Applied, Applied::Redacted, Applied::Applied]
    );
    let keep: Vec<bool> = plan.events.iter().map(|e| e.keep_payload).collect();
    assert_eq!(keep, [true, false, false]);
    assert_eq!(plan.redacted, ["vs_1"]);
}

#[test]
fn a_subject_that_was_not_locked_is_an_error() {
    let mut locked = fresh();
    locked.subjects.clear();
    let a = event("evt_a", Stage::Processing, 10, None);
    assert!(plan(&rules(), &[&a], locked).is_err());
}

fn subject_row() -> SubjectState {
    SubjectState {
        status: "pending".to_owned(),
        decided_by: None,
        failed_attempts: 0,
        blocked: false,
        last_error_code: None,
        last_error_created: None,
        last_error_event_id: None,
        mismatch_session: None,
    }
}

#[test]
fn two_keys_for_a_new_session_in_one_batch_leave_no_phantom() {
    // The session id names it first, then `client_reference_id` (a lower
    // rank): it belongs to `user_1`, and the session-id subject is deleted.
    let mut by_session = event("evt_a", Stage::RequiresInput, 10, Some("document_expired"));
    by_session.subject_key = Some("vs_1".to_owned());
    by_session.subject_key_rank = 2;
    let named = event("evt_b", Stage::Processing, 11, None);
    let mut locked = fresh();
    locked.subjects.insert("vs_1".to_owned(), subject_row());
    let plan = plan(&rules(), &[&by_session, &named], locked).unwrap();
    assert_eq!(plan.deleted_subjects, ["vs_1"]);
    assert!(!plan.subjects.contains_key("vs_1"));
    let write = &plan.sessions["vs_1"];
    assert_eq!(
        (write.subject_key.as_deref(), write.subject_rank),
        (Some("user_1"), 0)
    );
    // The failure counted while the session was `vs_1`'s moved with it.
    let subject = &plan.subjects["user_1"];
    assert_eq!(subject.failed_attempts, 1);
    assert_eq!(subject.last_error_code.as_deref(), Some("document_expired"));
}

#[test]
fn a_redacted_copy_names_nobody_and_its_failure_waits_for_the_person() {
    let mut copy = event("evt_a", Stage::RequiresInput, 10, Some("document_expired"));
    copy.subject_key = None;
    let plan_alone = plan(&rules(), &[&copy], fresh()).unwrap();
    assert!(plan_alone.subjects.is_empty());
    assert_eq!(plan_alone.events.len(), 1);
    assert!(plan_alone.events[0].counted);
    // Once an event names the person, the recorded failure counts for them.
    let mut locked = fresh();
    locked.counted.insert(
        "vs_1".to_owned(),
        vec![Counted {
            event_id: "evt_a".to_owned(),
            created: 10,
            code: "document_expired".to_owned(),
            blocking: false,
        }],
    );
    let named = event("evt_b", Stage::Processing, 5, None);
    let plan = plan(&rules(), &[&named], locked).unwrap();
    assert_eq!(plan.subjects["user_1"].failed_attempts, 1);
}

/// The rows of vs_1 (of `user_1`) as `events` applied one by one left
/// them: what an inbox replay finds locked.
fn applied_before(events: &[&Incoming]) -> Locked {
    let mut locked = fresh();
    let first = plan(&rules(), events, fresh()).unwrap();
    for event in events {
        locked.seen.insert(event.event_id.clone());
    }
    let session = locked.sessions.get_mut("vs_1").unwrap();
    session.subject_key = Some("user_1".to_owned());
    session.subject_rank = 0;
    if let Some(advance) = &first.sessions["vs_1"].advance {
        session.stage = advance.stage;
        session.has_error = advance.code.is_some();
        session.last = Some(advance.key.clone());
    }
    let counted: Vec<Counted> = events
        .iter()
        .filter_map(|e| {
            let failure = e.failure.as_ref()?;
            Some(Counted {
                event_id: e.event_id.clone(),
                created: e.created,
                code: failure.code.clone(),
                blocking: false,
            })
        })
        .collect();
    locked.counted.insert("vs_1".to_owned(), counted);
    locked
        .subjects
        .insert("user_1".to_owned(), first.subjects["user_1"].clone());
    locked
}

fn keys(plan: &Plan) -> Vec<&str> {
    plan.outbox
        .iter()
        .map(|r| r.idempotency_key.as_str())
        .collect()
}

#[test]
fn an_inbox_replay_of_a_seen_event_derives_its_rows_and_changes_no_state() {
    let verified = event("evt_v", Stage::Verified, 20, None);
    let locked = applied_before(&[&verified]);
    let replayed = verified.clone().with_origin(Origin::InboxReplay);
    let plan = plan(&rules(), &[&replayed], locked).unwrap();
    assert_eq!(applied(&plan), [Applied::Replayed]);
    assert!(plan.events.is_empty(), "nothing new in the inbox");
    assert!(plan.sessions.is_empty() && plan.subjects.is_empty());
    assert!(plan.deleted_subjects.is_empty() && plan.rearmed.is_empty());
    assert_eq!(
        keys(&plan),
        [
            "vs_1:verified:outcome_message",
            "vs_1:verified:notify_user_verified"
        ]
    );
    assert!(
        plan.outbox
            .iter()
            .all(|r| r.subject_key.as_deref() == Some("user_1"))
    );
    // A replay decides no subject again: no limit rows reconciled (none
    // deleted).
    assert!(plan.reconciled.is_empty());

    // The same event delivered again without the header: a duplicate.
    let locked = applied_before(&[&verified]);
    let again = plan_of(&[&verified], locked);
    assert_eq!(applied(&again), [Applied::Duplicate]);
    assert!(again.outbox.is_empty() && again.reconciled.is_empty());
}

fn plan_of(events: &[&Incoming], locked: Locked) -> Plan {
    plan(&rules(), events, locked).unwrap()
}

/// Three counted failures of one session: the default limit.
fn three_failures() -> Vec<Incoming> {
    (0..3)
        .map(|i| {
            event(
                &format!("evt_f{i}"),
                Stage::RequiresInput,
                10 + i,
                Some("document_expired"),
            )
        })
        .collect()
}

#[test]
fn an_inbox_replay_at_the_limit_derives_the_limit_rows_with_the_sinks_of_now() {
    let failures = three_failures();
    let refs: Vec<&Incoming> = failures.iter().collect();
    let locked = applied_before(&refs);
    let stored = locked.subjects["user_1"].clone();
    assert_eq!(stored.status, "manual_review");
    let mut now = rules();
    now.sinks.webhook = true; // configured since the failures were applied
    let replayed = failures[1].clone().with_origin(Origin::InboxReplay);
    let plan = plan(&now, &[&replayed], locked).unwrap();
    assert_eq!(applied(&plan), [Applied::Replayed]);
    assert_eq!(
        plan.outcomes[0].counted_failure, None,
        "counted once, before"
    );
    assert!(!plan.outcomes[0].reached_manual_review);
    assert!(plan.events.is_empty() && plan.subjects.is_empty() && plan.sessions.is_empty());
    assert_eq!(
        keys(&plan),
        [
            "vs_1:requires_input:evt_f1:outcome_message",
            "vs_1:requires_input:evt_f1:outcome_webhook",
            "vs_1:requires_input:evt_f1:notify_user_retry",
            "user_1:manual_review:outcome_message",
            "user_1:manual_review:outcome_webhook",
            "user_1:manual_review:notify_user_alternative",
            "vs_1:cancel_stripe_session",
        ]
    );
    assert!(plan.reconciled.is_empty(), "added, never taken back");
}

#[test]
fn an_inbox_replay_after_the_limit_changed_follows_the_record_as_stored() {
    let failures = three_failures();
    let refs: Vec<&Incoming> = failures.iter().collect();

    // Limit raised from 3 to 5: the record still says manual review, and a
    // replay must neither take its limit rows back nor add them.
    let locked = applied_before(&refs);
    assert_eq!(locked.subjects["user_1"].status, "manual_review");
    let mut raised = rules();
    raised.max_failed_attempts = 5;
    let replayed = failures[2].clone().with_origin(Origin::InboxReplay);
    let after_raise = plan(&raised, &[&replayed], locked).unwrap();
    assert!(
        after_raise.reconciled.is_empty(),
        "pending limit rows not deleted"
    );
    assert!(
        keys(&after_raise)
            .iter()
            .all(|k| !k.contains("manual_review"))
    );

    // Limit lowered from 5 to 2 after two failures were applied under 5:
    // the record says requires_input, so no "manual review" is told and
    // no session canceled by a replay.
    let mut before = rules();
    before.max_failed_attempts = 5;
    let two = &refs[..2];
    let mut locked = applied_before(two);
    let first = plan(&before, two, fresh()).unwrap();
    locked
        .subjects
        .insert("user_1".to_owned(), first.subjects["user_1"].clone());
    assert_ne!(locked.subjects["user_1"].status, "manual_review");
    let mut lowered = rules();
    lowered.max_failed_attempts = 2;
    let replayed = failures[1].clone().with_origin(Origin::InboxReplay);
    let after_lower = plan(&lowered, &[&replayed], locked).unwrap();
    assert!(
        keys(&after_lower)
            .iter()
            .all(|k| !k.contains("manual_review") && !k.contains("cancel")),
        "{:?}",
        keys(&after_lower)
    );
}

#[test]
fn an_inbox_replay_of_an_event_the_inbox_has_not_seen_applies_normally() {
    let processing = event("evt_p", Stage::Processing, 10, None).with_origin(Origin::InboxReplay);
    let plan = plan_of(&[&processing], fresh());
    assert_eq!(applied(&plan), [Applied::Applied]);
    assert_eq!(plan.events.len(), 1);
    assert_eq!(plan.subjects["user_1"].status, "processing");
}
