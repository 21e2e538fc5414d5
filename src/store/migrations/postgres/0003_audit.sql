-- Audit events of every instance in one ordered record (issue 5).
-- Writers take `LOCK TABLE audit_events IN EXCLUSIVE MODE` and number their
-- batch after the largest `seq`, so `seq` is gap-free and follows commit
-- order: the order a hash chain over the record will use.
CREATE TABLE audit_events (
    seq      BIGINT PRIMARY KEY,
    -- unique per event (process tag, trail, counter): a batch retried after a lost commit acknowledgement
    -- is not stored twice.
    id       TEXT NOT NULL UNIQUE,
    time_ms  BIGINT NOT NULL,
    instance TEXT NOT NULL,
    event    TEXT NOT NULL,
    outcome  TEXT NOT NULL,
    subject  TEXT,
    -- The event's JSON exactly as it was logged.
    record   TEXT NOT NULL
);
CREATE INDEX audit_events_subject ON audit_events (subject, seq);
CREATE INDEX audit_events_time ON audit_events (time_ms);

-- Every instance LISTENs on tapgate_revocations and reads the feed as soon
-- as an entry commits (NOTIFY is delivered at commit), instead of waiting
-- for its next poll.
CREATE FUNCTION tapgate_revocations_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tapgate_revocations', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER revocations_notify AFTER INSERT ON revocations
    FOR EACH STATEMENT EXECUTE FUNCTION tapgate_revocations_notify();
