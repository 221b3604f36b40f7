-- The worker's record: the inbox (events), one row per VerificationSession
-- (sessions), one row per person being verified (subjects), and the side
-- effects still to perform (outbox). These tables are the integration
-- surface for the platform's own code: read them, never write them.

CREATE TABLE subjects (
    -- client_reference_id, else metadata.user_id, else the session id.
    key                 text        PRIMARY KEY,
    status              text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'processing', 'requires_input',
                          'verified', 'manual_review', 'canceled')),
    -- Distinct failed submissions (one per event id), capped at the limit.
    failed_attempts     integer     NOT NULL DEFAULT 0 CHECK (failed_attempts >= 0),
    -- A code retrying cannot fix was seen (under_supported_age, ...).
    blocked             boolean     NOT NULL DEFAULT false,
    -- Code of the most recent failed submission, and its event's order key.
    last_error_code     text,
    last_error_created  bigint,
    last_error_event_id text,
    -- The session whose state decided `status`.
    decided_by_session  text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sessions (
    id                  text        PRIMARY KEY,
    -- NULL until an event that names the person arrives (redacted events do not).
    subject_key         text        REFERENCES subjects (key),
    status              text        NOT NULL DEFAULT 'created'
        CHECK (status IN ('created', 'processing', 'requires_input', 'verified', 'canceled')),
    last_error_code     text,
    -- Stripe's text; erased on redaction.
    last_error_reason   text,
    -- The last applied event: sessions only move forward by
    -- (last_event_created, last_event_rank, last_event_id).
    last_event_id       text,
    last_event_created  bigint,
    last_event_rank     smallint,
    verified_at         timestamptz,
    canceled_at         timestamptz,
    redacted_at         timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX sessions_subject_key ON sessions (subject_key);

CREATE TABLE events (
    -- Stripe's event id: the primary key is the deduplication.
    id                  text        PRIMARY KEY,
    type                text        NOT NULL,
    session_id          text        NOT NULL,
    created             bigint      NOT NULL,
    livemode            boolean     NOT NULL,
    -- applied | stale | recorded (redacted: orthogonal to the lifecycle)
    outcome             text        NOT NULL,
    -- This event was a failed submission and counted once.
    counted_attempt     boolean     NOT NULL DEFAULT false,
    error_code          text,
    received_at         timestamptz NOT NULL,
    -- When this event was applied (clock time, not the transaction start).
    processed_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- The raw event for audit and replay; NULL once the session is redacted.
    payload             jsonb
);

CREATE INDEX events_session_id ON events (session_id);

CREATE TABLE outbox (
    id                  bigserial   PRIMARY KEY,
    -- notify_user_verified | platform_follow_up | fetch_verified_outputs |
    -- notify_user_retry | cancel_stripe_session | notify_user_alternative |
    -- alert_reviewers
    kind                text        NOT NULL,
    -- Derived from the transition, so that two events for one change write one row.
    idempotency_key     text        NOT NULL UNIQUE,
    subject_key         text,
    session_id          text        NOT NULL,
    payload             jsonb       NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    -- Set by the dispatcher (a later issue).
    dispatched_at       timestamptz
);

CREATE INDEX outbox_pending ON outbox (id) WHERE dispatched_at IS NULL;
CREATE INDEX outbox_session_id ON outbox (session_id);
