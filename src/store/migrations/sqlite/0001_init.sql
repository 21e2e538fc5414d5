-- tapgate schema v1 (SQLite). Times are Unix seconds.
CREATE TABLE users (
    subject      TEXT PRIMARY KEY,
    email        TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    roles        TEXT NOT NULL,           -- comma-separated Role values
    disabled     INTEGER NOT NULL DEFAULT 0,
    created      INTEGER NOT NULL
);

CREATE TABLE credentials (
    id              BLOB PRIMARY KEY,
    subject         TEXT NOT NULL REFERENCES users(subject),
    public_key      BLOB NOT NULL,        -- COSE_Key
    alg             INTEGER NOT NULL,
    sign_count      INTEGER NOT NULL,
    aaguid          TEXT NOT NULL,
    transports      TEXT NOT NULL,        -- comma-separated
    backup_eligible INTEGER NOT NULL,
    backup_state    INTEGER NOT NULL,
    attestation_fmt TEXT NOT NULL,
    attested        INTEGER NOT NULL,
    nickname        TEXT NOT NULL,
    created         INTEGER NOT NULL,
    last_used       INTEGER,
    revoked         INTEGER
);
CREATE INDEX credentials_by_subject ON credentials(subject);

CREATE TABLE invites (
    token_hash TEXT PRIMARY KEY,          -- SHA-256 hex of the token; the token itself is never stored
    email      TEXT NOT NULL,
    roles      TEXT NOT NULL,
    created    INTEGER NOT NULL,
    expires    INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    used_at    INTEGER,
    used_by    TEXT
);

CREATE TABLE consumed_challenges (
    digest  BLOB PRIMARY KEY,             -- SHA-256 of the challenge
    expires INTEGER NOT NULL
);
CREATE INDEX consumed_challenges_by_expiry ON consumed_challenges(expires);
