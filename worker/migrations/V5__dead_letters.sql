-- Dead letters: the messages the worker could never apply, drained from
-- idv.events.dlq by the worker (acked only once the row is committed), so
-- that operators can list, filter, replay and purge them without touching
-- the queue. One row per dead-lettering: a redelivery of the same DLQ
-- message (the drain died between commit and ack) is the same row.
CREATE TABLE dead_letters (
    id                bigserial   PRIMARY KEY,
    -- sha256 of the body and the message's headers (all but the broker's
    -- x-delivery-count): the same dead-lettering always has the same one.
    fingerprint       bytea       NOT NULL UNIQUE,
    -- From the body when it could be read as an event; NULL otherwise.
    event_id          text,
    event_type        text,
    session_id        text,
    event_created     bigint,
    -- The routing key the message was first published with (the event's
    -- type, as ingest routes it), else the one it was dead-lettered with.
    routing_key       text        NOT NULL,
    -- The worker's x-idv-failure-reason (never payload text), or the
    -- broker's reason (delivery_limit, …).
    reason            text        NOT NULL,
    -- unparseable | unknown_type | status_mismatch | refused (the worker's)
    -- | delivery_limit | expired | rejected (the broker's) | unknown
    kind              text        NOT NULL,
    -- Failures (the worker's count) or deliveries (the broker's).
    attempts          integer     NOT NULL,
    first_failure_at  timestamptz NOT NULL,
    last_failure_at   timestamptz NOT NULL,
    -- When the drain took it from idv.events.dlq.
    dead_lettered_at  timestamptz NOT NULL DEFAULT now(),
    -- Set once `idvctl dlq replay` had the broker confirm the copy.
    replayed_at       timestamptz,
    -- The original bytes; NULL once the session is redacted.
    payload           bytea,
    payload_erased_at timestamptz
);

CREATE INDEX dead_letters_waiting ON dead_letters (dead_lettered_at) WHERE replayed_at IS NULL;
CREATE INDEX dead_letters_dead_lettered_at ON dead_letters (dead_lettered_at);
CREATE INDEX dead_letters_event_id ON dead_letters (event_id);
CREATE INDEX dead_letters_session_id ON dead_letters (session_id);
-- The filters of `idvctl dlq list | replay | purge`, newest first in each.
CREATE INDEX dead_letters_kind ON dead_letters (kind, dead_lettered_at);
CREATE INDEX dead_letters_event_type ON dead_letters (event_type, dead_lettered_at);

-- `idvctl events replay --since` and `idvctl prune` select inbox rows by
-- when they were received: without this, each run reads the whole inbox.
CREATE INDEX events_received_at ON events (received_at);
