-- The dispatcher performs outbox rows (issue 8). A row is pending until it
-- is performed (sent), found untrue when its turn came (superseded), not
-- performable for a reason that is nobody's fault, such as no e-mail
-- address (skipped), or given up on after its attempts or a permanent
-- refusal (failed). Only pending rows are ever claimed.
ALTER TABLE outbox
    ADD COLUMN status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sent', 'superseded', 'skipped', 'failed')),
    -- Performances begun (claims), whatever their result.
    ADD COLUMN attempts integer NOT NULL DEFAULT 0,
    -- When the row is next due. A cancel waiting for its session to come
    -- back to requires_input is due again when an event moves it there, or
    -- after five minutes in any case.
    ADD COLUMN due_at timestamptz NOT NULL DEFAULT now(),
    -- A claim: the dispatcher that holds it performs the row until then; a
    -- dispatcher that died loses the row to the next claim after its lease.
    ADD COLUMN claimed_until timestamptz,
    ADD COLUMN claim_token text,
    -- Why the last attempt did not succeed, or why the row was superseded,
    -- skipped or failed: a short, data-free text.
    ADD COLUMN last_error text,
    -- When the row left pending.
    ADD COLUMN done_at timestamptz,
    -- A row a subject at its limit calls for (tell the platform and the
    -- person, cancel each session): reconciled with the subject's state, so
    -- a pending one its state no longer calls for is deleted.
    ADD COLUMN from_limit boolean NOT NULL DEFAULT false,
    -- A cancel re-armed by an event while a dispatcher held it: the wait
    -- that dispatcher records becomes "due now".
    ADD COLUMN rearmed boolean NOT NULL DEFAULT false;

-- Subject-level rows (the limit reached) name no session of their own.
ALTER TABLE outbox ALTER COLUMN session_id DROP NOT NULL;

-- Rows the worker wrote before the dispatcher existed were never
-- performed, were derived from the path events took rather than from the
-- events, and have payloads of another shape: none is performed (telling
-- every person ever verified "you are verified" on the day of the upgrade
-- would be wrong). They stay, superseded, as the record of what was decided.
UPDATE outbox SET status = 'superseded', done_at = now(),
       last_error = 'written before migration V4: not performed'
 WHERE dispatched_at IS NULL;
UPDATE outbox SET status = 'sent', done_at = dispatched_at
 WHERE dispatched_at IS NOT NULL;

DROP INDEX outbox_pending;
CREATE INDEX outbox_due ON outbox (due_at) WHERE status = 'pending';
CREATE INDEX outbox_subject_key ON outbox (subject_key);

-- Where to write to a person: filled by the platform, used before the
-- session's own provided_details.email or metadata.email.
CREATE TABLE subject_contacts (
    subject_key text PRIMARY KEY,
    email       text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- What the platform expects a person's verified identity to be, for the
-- comparison of verified outputs (IDV_EXPECTED_MATCHING=on). Filled by
-- the platform; read only.
CREATE TABLE expected_identity (
    subject_key   text PRIMARY KEY,
    first_name    text,
    last_name     text,
    dob           date,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- The result of each comparison: never the verified values, only whether
-- they matched and which fields differed.
CREATE TABLE verified_output_checks (
    session_id    text PRIMARY KEY,
    subject_key   text NOT NULL,
    matched       boolean NOT NULL,
    -- e.g. {first_name,dob}; empty when matched.
    differing     text[] NOT NULL DEFAULT '{}',
    checked_at    timestamptz NOT NULL DEFAULT now()
);

-- A mismatch puts the subject in manual review whatever its events say;
-- the worker's recount keeps it there (NULL: no mismatch).
ALTER TABLE subjects ADD COLUMN mismatch_session text;
