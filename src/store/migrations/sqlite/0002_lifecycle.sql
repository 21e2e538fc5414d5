-- tapgate schema v2 (SQLite): the credential lifecycle (issue 4) and the
-- attestation root a credential chained to (issue 3).

-- Sessions carry the epoch their user had when they were issued; bumping it
-- revokes them all (disable, "sign out everywhere", a role taken away).
ALTER TABLE users ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;

-- SHA-256 hex of the attestation root, NULL when there was none.
ALTER TABLE credentials ADD COLUMN attestation_root TEXT;

-- Recovery invites name the existing user they add a key to.
ALTER TABLE invites ADD COLUMN subject TEXT REFERENCES users(subject);
ALTER TABLE invites ADD COLUMN revoke_other_keys INTEGER NOT NULL DEFAULT 0;
ALTER TABLE invites ADD COLUMN cancelled INTEGER;

-- The revocation feed every instance polls (`seq` after the last it saw).
-- One of `epoch` (sessions below it are revoked) or `credential` (a
-- CredentialId digest: sessions made with that key are revoked).
CREATE TABLE revocations (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    subject    TEXT NOT NULL,
    epoch      INTEGER,
    credential TEXT,
    time       INTEGER NOT NULL,
    CHECK ((epoch IS NULL) <> (credential IS NULL))
);
