-- A session whose events name different subject keys (a source missing
-- from some of them, a redacted copy) belongs to the key of lowest
-- (rank, key), whatever order the events arrive in; the rank is the
-- source's place in IDV_SUBJECT_KEY (the session id ranks last). Sessions
-- mapped before this column existed have none and keep their subject.
ALTER TABLE sessions ADD COLUMN subject_key_rank smallint;

-- A counted failed submission whose code retrying cannot fix (the policy's
-- class when it was counted): a subject's counters are recomputed from its
-- sessions' counted events whenever a session joins or leaves it.
ALTER TABLE events ADD COLUMN blocking_attempt boolean NOT NULL DEFAULT false;
UPDATE events SET blocking_attempt = true
 WHERE counted_attempt
   AND error_code IN ('under_supported_age', 'country_not_supported', 'consent_declined');
