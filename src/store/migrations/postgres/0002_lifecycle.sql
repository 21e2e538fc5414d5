-- tapgate schema v2 (PostgreSQL): the credential lifecycle (issue 4) and
-- the attestation root a credential chained to (issue 3). Same columns and
-- meaning as the SQLite migration.

-- Sessions carry the epoch their user had when they were issued; bumping it
-- revokes them all (disable, "sign out everywhere", a role taken away).
ALTER TABLE users ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;

-- SHA-256 hex of the attestation root, NULL when there was none.
ALTER TABLE credentials ADD COLUMN attestation_root TEXT;

-- Recovery invites name the existing user they add a key to.
ALTER TABLE invites ADD COLUMN subject TEXT REFERENCES users(subject);
ALTER TABLE invites ADD COLUMN revoke_other_keys BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE invites ADD COLUMN cancelled BIGINT;

-- The revocation feed every instance polls (`seq` after the last it saw).
-- Writers take `LOCK TABLE revocations IN EXCLUSIVE MODE` before inserting,
-- so entries commit in `seq` order: a reader that has seen seq N never
-- later finds a smaller one appear (sequence values are otherwise handed
-- out at INSERT time, not at COMMIT time).
CREATE TABLE revocations (
    seq        BIGSERIAL PRIMARY KEY,
    subject    TEXT NOT NULL,
    epoch      BIGINT,
    credential TEXT,
    time       BIGINT NOT NULL,
    CHECK ((epoch IS NULL) <> (credential IS NULL))
);
