-- Audit events in one ordered record (issue 5); see the PostgreSQL
-- migration of the same number. SQLite serialises writers, so numbering a
-- batch after the largest `seq` inside the write transaction keeps `seq`
-- gap-free and in commit order.
CREATE TABLE audit_events (
    seq      INTEGER PRIMARY KEY,
    id       TEXT NOT NULL UNIQUE,
    time_ms  INTEGER NOT NULL,
    instance TEXT NOT NULL,
    event    TEXT NOT NULL,
    outcome  TEXT NOT NULL,
    subject  TEXT,
    record   TEXT NOT NULL
);
CREATE INDEX audit_events_subject ON audit_events (subject, seq);
CREATE INDEX audit_events_time ON audit_events (time_ms);
