-- 1. Whether a counted failure blocks is decided by the policy in force
-- (IDV_CODE_POLICY), not by V2's backfill, which hard-coded the default
-- table. A counted failure whose class was not recorded when it was
-- counted is NULL, and the worker classifies it with the current policy
-- whenever it recounts the subject; rows written from now on carry the
-- class the policy gave them when they were counted. V2 is not released
-- and its backfill cannot be told from the values written after it, so
-- every counted failure so far is reclassified.
ALTER TABLE events ALTER COLUMN blocking_attempt DROP NOT NULL;
ALTER TABLE events ALTER COLUMN blocking_attempt DROP DEFAULT;
UPDATE events SET blocking_attempt = NULL WHERE counted_attempt;

-- 2. Sessions mapped before V2 by the old rules.
-- A placeholder (a whole value in square brackets, such as "[redacted]")
-- is nobody's key: a session mapped to one is unmapped; its counted
-- failures stay in the inbox and count for its person once an event names
-- them (as for a session whose first event was a redacted copy).
UPDATE sessions SET subject_key = NULL, subject_key_rank = NULL, updated_at = now()
 WHERE subject_key ~ '^\[.*\]$';

-- A session mapped to its own id (no source named anybody) gets the
-- session id's rank, so the first event that names a person moves it
-- there. The session id ranks after every configured source whatever
-- IDV_SUBJECT_KEY says, and 32766 is after any of them (32767 is the
-- worker's "not mapped"); the worker writes the exact rank when an event
-- names the session id again.
UPDATE sessions SET subject_key_rank = 32766
 WHERE subject_key = id AND subject_key_rank IS NULL;

-- The placeholder subjects are now nobody's: deleted, with the strangers'
-- failures they added up. Their sessions' counters are recomputed from the
-- inbox when an event names their person, so no other subject's counters
-- change here.
DELETE FROM subjects s
 WHERE s.key ~ '^\[.*\]$'
   AND NOT EXISTS (SELECT 1 FROM sessions WHERE subject_key = s.key);
