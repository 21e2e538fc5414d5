-- tapgate schema v1 (PostgreSQL). Same tables and meaning as the SQLite
-- schema, so export/import between the two is a column-for-column copy.
-- Times are Unix seconds (BIGINT: u64 values stored as i64).
CREATE TABLE users (
    subject      TEXT PRIMARY KEY,
    email        TEXT NOT NULL UNIQUE,    -- stored lowercased (Email::parse)
    display_name TEXT NOT NULL,
    roles        TEXT NOT NULL,           -- comma-separated Role values
    disabled     BOOLEAN NOT NULL DEFAULT FALSE,
    created      BIGINT NOT NULL
);

CREATE TABLE credentials (
    id              BYTEA PRIMARY KEY,
    subject         TEXT NOT NULL REFERENCES users(subject),
    public_key      BYTEA NOT NULL,       -- COSE_Key
    alg             BIGINT NOT NULL,
    sign_count      BIGINT NOT NULL,      -- u32 needs more than INTEGER's range
    aaguid          TEXT NOT NULL,
    transports      TEXT NOT NULL,        -- comma-separated
    backup_eligible BOOLEAN NOT NULL,
    backup_state    BOOLEAN NOT NULL,
    attestation_fmt TEXT NOT NULL,
    attested        BOOLEAN NOT NULL,
    nickname        TEXT NOT NULL,
    created         BIGINT NOT NULL,
    last_used       BIGINT,
    revoked         BIGINT
);
CREATE INDEX credentials_by_subject ON credentials(subject);

CREATE TABLE invites (
    token_hash TEXT PRIMARY KEY,          -- SHA-256 hex of the token; the token itself is never stored
    email      TEXT NOT NULL,
    roles      TEXT NOT NULL,
    created    BIGINT NOT NULL,
    expires    BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    used_at    BIGINT,
    used_by    TEXT
);

CREATE TABLE consumed_challenges (
    digest  BYTEA PRIMARY KEY,            -- SHA-256 of the challenge
    expires BIGINT NOT NULL
);
CREATE INDEX consumed_challenges_by_expiry ON consumed_challenges(expires);
