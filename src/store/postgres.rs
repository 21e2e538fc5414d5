//! PostgreSQL store (the scale-out backend): many tapgate instances share
//! one database, so every single-use rule (invites, challenges) is enforced
//! by the database itself, never by instance memory.

use super::snapshot::{CredentialState, InviteState, RevocationState, Snapshot, UserState};
use super::{
    AuditEntry, Changes, CredentialRecord, InviteRecord, Recovered, Revocation, Revoked, Standing,
    Store, StoreError, UserKeys, UserRecord, changed_roles, group, join, split, split_roles,
};
use crate::model::{CredentialId, Email, Role, Subject};
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, PgPool, Row};
use std::time::Duration;

static MIGRATOR: Migrator = sqlx::migrate!("src/store/migrations/postgres");

/// Pool size when the URL has no `pool_max`.
const DEFAULT_POOL_MAX: u32 = 10;
/// How long a caller waits for a connection before the store counts as
/// unavailable. Bounds a refused or silent server too: sqlx retries refused
/// connects until this deadline.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// The channel the revocation trigger (migration 0003) notifies.
const REVOCATIONS_CHANNEL: &str = "tapgate_revocations";
/// Pause before listening again after the listener's connection was lost.
const RELISTEN_AFTER: Duration = Duration::from_secs(1);

pub struct PgStore {
    pool: PgPool,
    changes: std::sync::Arc<Changes>,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PgStore {
    /// Connect (lazily) and migrate. `url` is a libpq-style URL; tapgate
    /// adds one parameter of its own, `pool_max` (connections per instance).
    /// Several instances may start at once: sqlx's migrator holds a
    /// PostgreSQL advisory lock while it migrates.
    pub async fn open(url: &str) -> Result<PgStore, StoreError> {
        PgStore::open_with(url, None).await
    }

    /// [`PgStore::open`] with the password given apart from the URL
    /// (`store.password_file`); it wins over one in the URL or `PGPASSWORD`.
    pub async fn open_with(url: &str, password: Option<&str>) -> Result<PgStore, StoreError> {
        let (mut opts, pool_max, target) = parse_url(url)?;
        if let Some(pw) = password {
            opts = opts.password(pw);
        }
        let pool = PgPoolOptions::new()
            .max_connections(pool_max)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(opts);
        if let Err(e) = MIGRATOR.run(&pool).await {
            // Closing drops the migrator's connection, and with it any
            // advisory lock a failed run left held, so other instances are
            // not left waiting on it.
            pool.close().await;
            return Err(match migrate_error(e) {
                StoreError::Unavailable(m) => StoreError::Unavailable(format!("{target}: {m}")),
                StoreError::Other(m) => StoreError::Other(format!("{target}: {m}")),
                other => other,
            });
        }
        let changes = std::sync::Arc::new(Changes::default());
        // The listener holds its connection for good: a pool of its own, so
        // it never takes one of the `pool_max` connections ceremonies use.
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(pool.connect_options().as_ref().clone());
        let listener = tokio::spawn(listen(listen_pool, changes.clone()));
        Ok(PgStore {
            pool,
            changes,
            listener,
        })
    }
}

/// LISTEN for new revocation feed entries and signal `changes` for each;
/// reconnect whenever the connection is lost. While not listening,
/// `changes` says so and readers poll at their fast rate; on every
/// (re)connection readers are signalled once, to catch up on whatever was
/// committed while nobody listened.
async fn listen(pool: PgPool, changes: std::sync::Arc<Changes>) {
    let mut failing = false;
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(error = %pg_error(e), "cannot LISTEN for revocations; polling the feed every second until the database is back");
                }
                tokio::time::sleep(RELISTEN_AFTER).await;
                continue;
            }
        };
        // A lost connection ends this listener: we reconnect ourselves, so
        // the time spent not listening is known.
        listener.eager_reconnect(false);
        if let Err(e) = listener.listen(REVOCATIONS_CHANNEL).await {
            if !std::mem::replace(&mut failing, true) {
                tracing::warn!(error = %pg_error(e), "cannot LISTEN for revocations; polling the feed every second until the database is back");
            }
            tokio::time::sleep(RELISTEN_AFTER).await;
            continue;
        }
        if std::mem::replace(&mut failing, false) {
            tracing::info!("listening for revocations again");
        }
        changes.set_live(true);
        changes.signal();
        while let Ok(Some(_)) = listener.try_recv().await {
            changes.signal();
        }
        changes.set_live(false);
        changes.signal();
        tracing::warn!(
            "lost the revocation listener's connection; polling the feed every second while reconnecting"
        );
        drop(listener);
        tokio::time::sleep(RELISTEN_AFTER).await;
    }
}

/// Split tapgate's own `pool_max` parameter off the URL (sqlx would only
/// warn about it) and describe the target without its password, for
/// messages.
fn parse_url(url: &str) -> Result<(PgConnectOptions, u32, String), StoreError> {
    let mut u = url::Url::parse(url)
        .map_err(|e| StoreError::Other(format!("store.url is not a valid postgres URL: {e}")))?;
    let mut pool_max = DEFAULT_POOL_MAX;
    let mut rest = Vec::new();
    for (k, v) in u.query_pairs() {
        if k == "pool_max" {
            pool_max = v.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                StoreError::Other(format!(
                    "store.url: pool_max={v:?} must be a whole number of at least 1"
                ))
            })?;
        } else {
            rest.push((k.into_owned(), v.into_owned()));
        }
    }
    if rest.is_empty() {
        u.set_query(None);
    } else {
        u.query_pairs_mut().clear().extend_pairs(rest);
    }
    let opts =
        PgConnectOptions::from_url(&u).map_err(|e| StoreError::Other(format!("store.url: {e}")))?;
    let target = format!(
        "PostgreSQL {}@{}/{}",
        opts.get_username(),
        opts.get_socket()
            .map(|s| s.display().to_string())
            .unwrap_or_else(|| format!("{}:{}", opts.get_host(), opts.get_port())),
        opts.get_database().unwrap_or("")
    );
    Ok((opts, pool_max, target))
}

/// Like `From<sqlx::Error>`, but knows PostgreSQL's own "cannot serve you
/// now" codes, so an outage, failover or restart reads as `Unavailable`
/// (503, retry later) rather than as an internal error.
fn pg_error(e: sqlx::Error) -> StoreError {
    let unavailable = match &e {
        sqlx::Error::PoolTimedOut => {
            return StoreError::Unavailable(format!(
                "no database connection within {}s (PostgreSQL down or unreachable, \
                 or every pooled connection busy)",
                ACQUIRE_TIMEOUT.as_secs()
            ));
        }
        sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        // 08: connection exception; 53: insufficient resources (too many
        // connections, out of memory/disk); 57: operator intervention
        // (shutdown, restart, statement timeout, database dropped).
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("53") || c.starts_with("57")),
        _ => false,
    };
    if unavailable {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Other(e.to_string())
    }
}

fn migrate_error(e: MigrateError) -> StoreError {
    match e {
        MigrateError::Execute(e) => match pg_error(e) {
            StoreError::Other(m) => StoreError::Other(format!("migration failed: {m}")),
            other => other,
        },
        MigrateError::ExecuteMigration(e, version) => match pg_error(e) {
            StoreError::Other(m) => StoreError::Other(format!("migration {version} failed: {m}")),
            other => other,
        },
        other => StoreError::Other(format!("migration failed: {other}")),
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

fn user_from(row: &PgRow) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        subject: Subject(row.try_get("subject").map_err(pg_error)?),
        email: Email(row.try_get("email").map_err(pg_error)?),
        display_name: row.try_get("display_name").map_err(pg_error)?,
        roles: split_roles(row.try_get("roles").map_err(pg_error)?),
        disabled: row.try_get("disabled").map_err(pg_error)?,
        created: row.try_get::<i64, _>("created").map_err(pg_error)? as u64,
    })
}

fn credential_from(row: &PgRow) -> Result<CredentialRecord, StoreError> {
    let opt_time = |col: &str| -> Result<Option<u64>, StoreError> {
        Ok(row
            .try_get::<Option<i64>, _>(col)
            .map_err(pg_error)?
            .map(|v| v as u64))
    };
    Ok(CredentialRecord {
        id: CredentialId(row.try_get("id").map_err(pg_error)?),
        subject: Subject(row.try_get("subject").map_err(pg_error)?),
        public_key: row.try_get("public_key").map_err(pg_error)?,
        alg: row.try_get("alg").map_err(pg_error)?,
        sign_count: row.try_get::<i64, _>("sign_count").map_err(pg_error)? as u32,
        aaguid: row.try_get("aaguid").map_err(pg_error)?,
        transports: split(row.try_get("transports").map_err(pg_error)?),
        backup_eligible: row.try_get("backup_eligible").map_err(pg_error)?,
        backup_state: row.try_get("backup_state").map_err(pg_error)?,
        attestation_fmt: row.try_get("attestation_fmt").map_err(pg_error)?,
        attested: row.try_get("attested").map_err(pg_error)?,
        nickname: row.try_get("nickname").map_err(pg_error)?,
        created: row.try_get::<i64, _>("created").map_err(pg_error)? as u64,
        last_used: opt_time("last_used")?,
        revoked: opt_time("revoked")?,
        attestation_root: row.try_get("attestation_root").map_err(pg_error)?,
    })
}

fn invite_from(row: &PgRow) -> Result<InviteRecord, StoreError> {
    Ok(InviteRecord {
        token_hash: row.try_get("token_hash").map_err(pg_error)?,
        email: Email(row.try_get("email").map_err(pg_error)?),
        roles: split_roles(row.try_get("roles").map_err(pg_error)?),
        created: row.try_get::<i64, _>("created").map_err(pg_error)? as u64,
        expires: row.try_get::<i64, _>("expires").map_err(pg_error)? as u64,
        created_by: row.try_get("created_by").map_err(pg_error)?,
        used_at: row
            .try_get::<Option<i64>, _>("used_at")
            .map_err(pg_error)?
            .map(|v| v as u64),
        used_by: row
            .try_get::<Option<String>, _>("used_by")
            .map_err(pg_error)?
            .map(Subject),
        subject: row
            .try_get::<Option<String>, _>("subject")
            .map_err(pg_error)?
            .map(Subject),
        revoke_other_keys: row.try_get("revoke_other_keys").map_err(pg_error)?,
        cancelled: row
            .try_get::<Option<i64>, _>("cancelled")
            .map_err(pg_error)?
            .map(|v| v as u64),
    })
}

fn revocation_from(row: &PgRow) -> Result<Revocation, StoreError> {
    let epoch: Option<i64> = row.try_get("epoch").map_err(pg_error)?;
    let credential: Option<String> = row.try_get("credential").map_err(pg_error)?;
    let what = match (epoch, credential) {
        (Some(e), _) => Revoked::SessionsBefore(e as u64),
        (None, Some(c)) => Revoked::Credential(c),
        // The table's CHECK constraint rules this out.
        (None, None) => return Err(StoreError::Other("revocation without a target".into())),
    };
    Ok(Revocation {
        seq: row.try_get::<i64, _>("seq").map_err(pg_error)? as u64,
        subject: Subject(row.try_get("subject").map_err(pg_error)?),
        what,
        time: row.try_get::<i64, _>("time").map_err(pg_error)? as u64,
    })
}

fn epoch_of(row: &PgRow) -> Result<u64, StoreError> {
    Ok(row.try_get::<i64, _>("epoch").map_err(pg_error)? as u64)
}

type Tx<'a> = sqlx::Transaction<'a, sqlx::Postgres>;

/// Row-lock the user for the rest of the transaction (concurrent changes
/// to the same user queue here). `NotFound` for an unknown user.
async fn lock_user(tx: &mut Tx<'_>, subject: &Subject) -> Result<(), StoreError> {
    let found = sqlx::query("SELECT 1 FROM users WHERE subject = $1 FOR UPDATE")
        .bind(subject.as_str())
        .fetch_optional(&mut **tx)
        .await
        .map_err(pg_error)?;
    found.map(|_| ()).ok_or(StoreError::NotFound)
}

/// The next feed number, taken under [`lock_feed`]: one more than the
/// largest committed, or than the high-water mark an import that replaced
/// the feed left in the column's sequence (see `import`). Never drawn from
/// the sequence: a value a transaction draws and then aborts (a killed
/// process) is not given back, and the feed would have a gap.
const NEXT_FEED_SEQ: &str = "(SELECT GREATEST(COALESCE(MAX(seq), 0), \
     (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM revocations_seq_seq)) + 1 \
     FROM revocations)";

/// Before inserting into the feed: entries must commit in `seq` order, or
/// a reader that already saw a later `seq` would skip an earlier one that
/// commits after it. Revocations are rare; serialising them is cheap.
/// (Plain SELECTs, i.e. readers of the feed, are not blocked.)
async fn lock_feed(tx: &mut Tx<'_>) -> Result<(), StoreError> {
    sqlx::query("LOCK TABLE revocations IN EXCLUSIVE MODE")
        .execute(&mut **tx)
        .await
        .map_err(pg_error)?;
    Ok(())
}

/// Bump the user's epoch and publish it on the feed.
async fn bump_epoch(tx: &mut Tx<'_>, subject: &Subject, now: u64) -> Result<u64, StoreError> {
    let epoch: i64 =
        sqlx::query_scalar("UPDATE users SET epoch = epoch + 1 WHERE subject = $1 RETURNING epoch")
            .bind(subject.as_str())
            .fetch_optional(&mut **tx)
            .await
            .map_err(pg_error)?
            .ok_or(StoreError::NotFound)?;
    lock_feed(tx).await?;
    sqlx::query(&format!(
        "INSERT INTO revocations (seq, subject, epoch, time) VALUES ({NEXT_FEED_SEQ}, $1, $2, $3)"
    ))
    .bind(subject.as_str())
    .bind(epoch)
    .bind(now as i64)
    .execute(&mut **tx)
    .await
    .map_err(pg_error)?;
    Ok(epoch as u64)
}

/// Mark one active key revoked and publish its digest on the feed.
/// `false` if it was not active.
async fn revoke_key(
    tx: &mut Tx<'_>,
    subject: &Subject,
    id: &CredentialId,
    now: u64,
) -> Result<bool, StoreError> {
    let r = sqlx::query(
        "UPDATE credentials SET revoked = $1 WHERE id = $2 AND subject = $3 AND revoked IS NULL",
    )
    .bind(now as i64)
    .bind(&id.0)
    .bind(subject.as_str())
    .execute(&mut **tx)
    .await
    .map_err(pg_error)?;
    if r.rows_affected() == 0 {
        return Ok(false);
    }
    lock_feed(tx).await?;
    sqlx::query(&format!(
        "INSERT INTO revocations (seq, subject, credential, time) \
         VALUES ({NEXT_FEED_SEQ}, $1, $2, $3)"
    ))
    .bind(subject.as_str())
    .bind(id.digest())
    .bind(now as i64)
    .execute(&mut **tx)
    .await
    .map_err(pg_error)?;
    Ok(true)
}

#[async_trait::async_trait]
impl Store for PgStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn count_users(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await
            .map_err(pg_error)?;
        Ok(n as u64)
    }

    async fn user(&self, subject: &Subject) -> Result<Option<UserRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM users WHERE subject = $1")
            .bind(subject.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(pg_error)?;
        row.as_ref().map(user_from).transpose()
    }

    async fn user_by_email(&self, email: &Email) -> Result<Option<UserRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM users WHERE email = $1")
            .bind(email.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(pg_error)?;
        row.as_ref().map(user_from).transpose()
    }

    async fn credential(&self, id: &CredentialId) -> Result<Option<CredentialRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM credentials WHERE id = $1")
            .bind(&id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(pg_error)?;
        row.as_ref().map(credential_from).transpose()
    }

    async fn credentials_of(&self, subject: &Subject) -> Result<Vec<CredentialRecord>, StoreError> {
        // BYTEA orders bytewise, like SQLite's BLOB: same order on both.
        let rows = sqlx::query("SELECT * FROM credentials WHERE subject = $1 ORDER BY created, id")
            .bind(subject.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(pg_error)?;
        rows.iter().map(credential_from).collect()
    }

    async fn create_invite(&self, invite: &InviteRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO invites (token_hash, email, roles, created, expires, created_by, \
             subject, revoke_other_keys) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&invite.token_hash)
        .bind(invite.email.as_str())
        .bind(join(invite.roles.iter().map(|r| r.as_str())))
        .bind(invite.created as i64)
        .bind(invite.expires as i64)
        .bind(&invite.created_by)
        .bind(invite.subject.as_ref().map(Subject::as_str))
        .bind(invite.revoke_other_keys)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if matches!(&e, sqlx::Error::Database(db) if db.is_foreign_key_violation()) {
                StoreError::NotFound
            } else {
                pg_error(e)
            }
        })?;
        Ok(())
    }

    async fn invite(&self, token_hash: &str, now: u64) -> Result<Option<InviteRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT * FROM invites WHERE token_hash = $1 AND used_at IS NULL \
             AND cancelled IS NULL AND expires > $2",
        )
        .bind(token_hash)
        .bind(now as i64)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_error)?;
        row.as_ref().map(invite_from).transpose()
    }

    async fn register_with_invite(
        &self,
        token_hash: &str,
        user: &UserRecord,
        c: &CredentialRecord,
        now: u64,
    ) -> Result<(), StoreError> {
        // READ COMMITTED is enough: the UPDATE row-locks the invite, a
        // racing registration waits for that lock and then re-checks
        // `used_at IS NULL` against the committed row, so it updates 0 rows.
        // Returning early drops `tx`, which rolls everything back.
        let mut tx = self.pool.begin().await.map_err(pg_error)?;
        let used = sqlx::query(
            "UPDATE invites SET used_at = $1, used_by = $2 \
             WHERE token_hash = $3 AND used_at IS NULL AND cancelled IS NULL \
             AND subject IS NULL AND expires > $1",
        )
        .bind(now as i64)
        .bind(user.subject.as_str())
        .bind(token_hash)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        if used.rows_affected() != 1 {
            return Err(StoreError::InviteUnavailable);
        }
        sqlx::query(
            "INSERT INTO users (subject, email, display_name, roles, disabled, created) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(user.subject.as_str())
        .bind(user.email.as_str())
        .bind(&user.display_name)
        .bind(join(user.roles.iter().map(|r| r.as_str())))
        .bind(user.disabled)
        .bind(user.created as i64)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::EmailTaken
            } else {
                pg_error(e)
            }
        })?;
        insert_credential(&mut tx, c).await.map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::DuplicateCredential
            } else {
                pg_error(e)
            }
        })?;
        tx.commit().await.map_err(pg_error)?;
        Ok(())
    }

    async fn record_use(
        &self,
        id: &CredentialId,
        sign_count: u32,
        backup_state: bool,
        now: u64,
    ) -> Result<(), StoreError> {
        let r = sqlx::query(
            "UPDATE credentials SET sign_count = $1, backup_state = $2, last_used = $3 WHERE id = $4",
        )
        .bind(i64::from(sign_count))
        .bind(backup_state)
        .bind(now as i64)
        .bind(&id.0)
        .execute(&self.pool)
        .await
        .map_err(pg_error)?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn consume_challenge(
        &self,
        challenge: &[u8],
        expires: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        let digest = crate::crypto::sha256(challenge).to_vec();
        // Expired entries can go: their ceremony state is refused anyway.
        // Several instances prune at once, so each takes only rows nobody
        // else has locked (no queueing behind, or deadlocking with, another
        // instance's prune), and a bounded batch keeps each call short.
        sqlx::query(
            "DELETE FROM consumed_challenges WHERE digest IN (\
               SELECT digest FROM consumed_challenges WHERE expires < $1 \
               LIMIT 1000 FOR UPDATE SKIP LOCKED)",
        )
        .bind(now as i64)
        .execute(&self.pool)
        .await
        .map_err(pg_error)?;
        // The primary key decides: of any number of concurrent inserts,
        // exactly one adds the row; the others wait for it and do nothing.
        let r = sqlx::query(
            "INSERT INTO consumed_challenges (digest, expires) VALUES ($1, $2) \
             ON CONFLICT DO NOTHING",
        )
        .bind(digest)
        .bind(expires as i64)
        .execute(&self.pool)
        .await
        .map_err(pg_error)?;
        Ok(r.rows_affected() == 1)
    }

    async fn users_with_keys(&self) -> Result<Vec<UserKeys>, StoreError> {
        // REPEATABLE READ: both queries see one snapshot.
        let mut tx = self.pool.begin().await.map_err(pg_error)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        let users = sqlx::query("SELECT * FROM users ORDER BY email")
            .fetch_all(&mut *tx)
            .await
            .map_err(pg_error)?;
        let creds = sqlx::query("SELECT * FROM credentials ORDER BY subject, created, id")
            .fetch_all(&mut *tx)
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        let users = users
            .iter()
            .map(|r| Ok((user_from(r)?, epoch_of(r)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let creds = creds
            .iter()
            .map(credential_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(group(users, creds))
    }

    async fn user_with_keys(&self, subject: &Subject) -> Result<Option<UserKeys>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(pg_error)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        let Some(row) = sqlx::query("SELECT * FROM users WHERE subject = $1")
            .bind(subject.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(pg_error)?
        else {
            return Ok(None);
        };
        let creds =
            sqlx::query("SELECT * FROM credentials WHERE subject = $1 ORDER BY created, id")
                .bind(subject.as_str())
                .fetch_all(&mut *tx)
                .await
                .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(Some(UserKeys {
            user: user_from(&row)?,
            epoch: epoch_of(&row)?,
            credentials: creds
                .iter()
                .map(credential_from)
                .collect::<Result<_, _>>()?,
        }))
    }

    async fn standing(&self, subject: &Subject) -> Result<Option<Standing>, StoreError> {
        let row = sqlx::query(
            "SELECT disabled, epoch, (SELECT COUNT(*) FROM credentials c \
             WHERE c.subject = u.subject AND c.revoked IS NULL) AS active \
             FROM users u WHERE subject = $1",
        )
        .bind(subject.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_error)?;
        row.map(|r| {
            Ok(Standing {
                disabled: r.try_get("disabled").map_err(pg_error)?,
                epoch: epoch_of(&r)?,
                active_keys: r.try_get::<i64, _>("active").map_err(pg_error)? as u32,
            })
        })
        .transpose()
    }

    async fn change_roles(
        &self,
        subject: &Subject,
        grant: &[Role],
        revoke: &[Role],
        now: u64,
    ) -> Result<Vec<Role>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(pg_error)?;
        lock_user(&mut tx, subject).await?;
        let current: String = sqlx::query_scalar("SELECT roles FROM users WHERE subject = $1")
            .bind(subject.as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(pg_error)?;
        let current = split_roles(&current);
        let roles = changed_roles(&current, grant, revoke);
        sqlx::query("UPDATE users SET roles = $1 WHERE subject = $2")
            .bind(join(roles.iter().map(|r| r.as_str())))
            .bind(subject.as_str())
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        if current.iter().any(|r| !roles.contains(r)) {
            bump_epoch(&mut tx, subject, now).await?;
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(roles)
    }

    async fn set_disabled(
        &self,
        subject: &Subject,
        disabled: bool,
        now: u64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(pg_error)?;
        lock_user(&mut tx, subject).await?;
        let r = sqlx::query("UPDATE users SET disabled = $1 WHERE subject = $2 AND disabled <> $1")
            .bind(disabled)
            .bind(subject.as_str())
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        let changed = r.rows_affected() == 1;
        if changed && disabled {
            bump_epoch(&mut tx, subject, now).await?;
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(changed)
    }

    async fn revoke_sessions(&self, subject: &Subject, now: u64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await.map_err(pg_error)?;
        let epoch = bump_epoch(&mut tx, subject, now).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(epoch)
    }

    async fn add_credential(&self, c: &CredentialRecord) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(pg_error)?;
        lock_user(&mut tx, &c.subject).await?;
        insert_credential(&mut tx, c).await.map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::DuplicateCredential
            } else {
                pg_error(e)
            }
        })?;
        tx.commit().await.map_err(pg_error)?;
        Ok(())
    }

    async fn rename_credential(
        &self,
        subject: &Subject,
        id: &CredentialId,
        nickname: &str,
    ) -> Result<(), StoreError> {
        let r = sqlx::query("UPDATE credentials SET nickname = $1 WHERE id = $2 AND subject = $3")
            .bind(nickname)
            .bind(&id.0)
            .bind(subject.as_str())
            .execute(&self.pool)
            .await
            .map_err(pg_error)?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn revoke_credential(
        &self,
        subject: &Subject,
        id: &CredentialId,
        allow_last: bool,
        now: u64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(pg_error)?;
        // The user's row lock serialises revocations of their keys, so two
        // concurrent "revoke" calls cannot each leave the other's key last.
        lock_user(&mut tx, subject).await?;
        let rows = sqlx::query("SELECT id, revoked FROM credentials WHERE subject = $1")
            .bind(subject.as_str())
            .fetch_all(&mut *tx)
            .await
            .map_err(pg_error)?;
        let mut found = None;
        let mut active = 0;
        for r in &rows {
            let rid: Vec<u8> = r.try_get("id").map_err(pg_error)?;
            let revoked: Option<i64> = r.try_get("revoked").map_err(pg_error)?;
            if revoked.is_none() {
                active += 1;
            }
            if rid == id.0 {
                found = Some(revoked.is_none());
            }
        }
        match found {
            None => return Err(StoreError::NotFound),
            Some(false) => return Ok(false),
            Some(true) if active == 1 && !allow_last => return Err(StoreError::LastKey),
            Some(true) => {}
        }
        let done = revoke_key(&mut tx, subject, id, now).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(done)
    }

    async fn invites(&self) -> Result<Vec<InviteRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM invites ORDER BY created DESC, token_hash")
            .fetch_all(&self.pool)
            .await
            .map_err(pg_error)?;
        rows.iter().map(invite_from).collect()
    }

    async fn cancel_invite(&self, token_hash: &str, now: u64) -> Result<(), StoreError> {
        let r = sqlx::query(
            "UPDATE invites SET cancelled = $1 WHERE token_hash = $2 AND used_at IS NULL \
             AND cancelled IS NULL AND expires > $1",
        )
        .bind(now as i64)
        .bind(token_hash)
        .execute(&self.pool)
        .await
        .map_err(pg_error)?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn add_key_with_invite(
        &self,
        token_hash: &str,
        c: &CredentialRecord,
        now: u64,
    ) -> Result<Recovered, StoreError> {
        let mut tx = self.pool.begin().await.map_err(pg_error)?;
        // As in `register_with_invite`: the UPDATE row-locks the invite, so
        // of two racing uses one updates a row and the other none.
        let revoke_others: Option<bool> = sqlx::query_scalar(
            "UPDATE invites SET used_at = $1, used_by = subject WHERE token_hash = $2 \
             AND subject = $3 AND used_at IS NULL AND cancelled IS NULL AND expires > $1 \
             RETURNING revoke_other_keys",
        )
        .bind(now as i64)
        .bind(token_hash)
        .bind(c.subject.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg_error)?;
        let Some(revoke_others) = revoke_others else {
            return Err(StoreError::InviteUnavailable);
        };
        lock_user(&mut tx, &c.subject).await?;
        insert_credential(&mut tx, c).await.map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::DuplicateCredential
            } else {
                pg_error(e)
            }
        })?;
        let mut revoked = Vec::new();
        if revoke_others {
            let others: Vec<Vec<u8>> = sqlx::query_scalar(
                "SELECT id FROM credentials WHERE subject = $1 AND id <> $2 AND revoked IS NULL \
                 ORDER BY created, id",
            )
            .bind(c.subject.as_str())
            .bind(&c.id.0)
            .fetch_all(&mut *tx)
            .await
            .map_err(pg_error)?;
            for id in others {
                let id = CredentialId(id);
                if revoke_key(&mut tx, &c.subject, &id, now).await? {
                    revoked.push(id);
                }
            }
        }
        let row = sqlx::query("SELECT * FROM users WHERE subject = $1")
            .bind(c.subject.as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(pg_error)?;
        let user = user_from(&row)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(Recovered { user, revoked })
    }

    async fn revocations_since(
        &self,
        after: u64,
        limit: u32,
    ) -> Result<Vec<Revocation>, StoreError> {
        let rows = sqlx::query("SELECT * FROM revocations WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(after as i64)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(pg_error)?;
        rows.iter().map(revocation_from).collect()
    }

    fn changes(&self) -> std::sync::Arc<Changes> {
        self.changes.clone()
    }

    async fn append_audit(&self, events: &[AuditEntry]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(pg_error)?;
        insert_audit(&mut tx, events).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(())
    }

    async fn audit_since(&self, after: u64, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query("SELECT * FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(after as i64)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(pg_error)?;
        rows.iter().map(audit_from).collect()
    }

    async fn schema_version(&self) -> Result<i64, StoreError> {
        let v: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await
                .map_err(pg_error)?;
        Ok(v.unwrap_or(0))
    }

    async fn export(&self) -> Result<Snapshot, StoreError> {
        // REPEATABLE READ: every table from the same snapshot.
        let mut tx = self.pool.begin().await.map_err(pg_error)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        let mut fetch = async |q: &str| sqlx::query(q).fetch_all(&mut *tx).await.map_err(pg_error);
        // COLLATE "C": byte order, as SQLite sorts text.
        let users = fetch("SELECT * FROM users ORDER BY subject COLLATE \"C\"").await?;
        let creds = fetch("SELECT * FROM credentials ORDER BY id").await?;
        let invites = fetch("SELECT * FROM invites ORDER BY token_hash COLLATE \"C\"").await?;
        let revs = fetch("SELECT * FROM revocations ORDER BY seq").await?;
        let audit = fetch("SELECT * FROM audit_events ORDER BY seq").await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(Snapshot::new(
            users
                .iter()
                .map(|r| Ok(UserState::from_record(&user_from(r)?, epoch_of(r)?)))
                .collect::<Result<_, StoreError>>()?,
            creds
                .iter()
                .map(|r| credential_from(r).map(|c| CredentialState::from_record(&c)))
                .collect::<Result<_, _>>()?,
            invites
                .iter()
                .map(|r| invite_from(r).map(|i| InviteState::from_record(&i)))
                .collect::<Result<_, _>>()?,
            revs.iter()
                .map(|r| revocation_from(r).map(|v| RevocationState::from_record(&v)))
                .collect::<Result<_, _>>()?,
            audit.iter().map(audit_from).collect::<Result<_, _>>()?,
        ))
    }

    async fn import(&self, snap: &Snapshot, replace: bool) -> Result<(), StoreError> {
        snap.check().map_err(StoreError::Other)?;
        let mut tx = self.pool.begin().await.map_err(pg_error)?;
        // Nobody writes these tables until we commit (readers may go on).
        sqlx::query("LOCK TABLE users, credentials, invites, revocations IN EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        let (users, invites, revs, feed_max): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM users), (SELECT COUNT(*) FROM invites), \
             (SELECT COUNT(*) FROM revocations), (SELECT COALESCE(MAX(seq), 0) FROM revocations)",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(pg_error)?;
        if users + invites + revs > 0 {
            if !replace {
                return Err(super::not_empty(users, invites, revs));
            }
            for table in ["revocations", "invites", "credentials", "users"] {
                sqlx::query(&format!("DELETE FROM {table}"))
                    .execute(&mut *tx)
                    .await
                    .map_err(pg_error)?;
            }
        }
        for u in &snap.users {
            let r = u.record().map_err(StoreError::Other)?;
            sqlx::query(
                "INSERT INTO users (subject, email, display_name, roles, disabled, created, epoch) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(r.subject.as_str())
            .bind(r.email.as_str())
            .bind(&r.display_name)
            .bind(join(r.roles.iter().map(|r| r.as_str())))
            .bind(r.disabled)
            .bind(r.created as i64)
            .bind(u.epoch as i64)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        }
        for c in &snap.credentials {
            let c = c.record().map_err(StoreError::Other)?;
            insert_credential(&mut tx, &c).await.map_err(pg_error)?;
        }
        for i in &snap.invites {
            let i = i.record().map_err(StoreError::Other)?;
            sqlx::query(
                "INSERT INTO invites (token_hash, email, roles, created, expires, created_by, \
                 used_at, used_by, subject, revoke_other_keys, cancelled) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(&i.token_hash)
            .bind(i.email.as_str())
            .bind(join(i.roles.iter().map(|r| r.as_str())))
            .bind(i.created as i64)
            .bind(i.expires as i64)
            .bind(&i.created_by)
            .bind(i.used_at.map(|v| v as i64))
            .bind(i.used_by.as_ref().map(Subject::as_str))
            .bind(i.subject.as_ref().map(Subject::as_str))
            .bind(i.revoke_other_keys)
            .bind(i.cancelled.map(|v| v as i64))
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        }
        for r in &snap.revocations {
            sqlx::query(
                "INSERT INTO revocations (seq, subject, epoch, credential, time) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(r.seq as i64)
            .bind(&r.subject)
            .bind(r.epoch.map(|v| v as i64))
            .bind(&r.credential)
            .bind(r.time as i64)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        }
        // The feed continues after the largest seq ever handed out (as
        // SQLite's AUTOINCREMENT does), so instances that already read past
        // the replaced or imported entries still see every later one: the
        // high-water mark is kept in the column's sequence (NEXT_FEED_SEQ).
        let imported_max = snap.revocations.iter().map(|r| r.seq).max().unwrap_or(0);
        let mark = feed_max.max(i64::try_from(imported_max).unwrap_or(i64::MAX));
        if mark > 0 {
            sqlx::query(
                "SELECT setval('revocations_seq_seq', GREATEST($1, \
                 (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM revocations_seq_seq)))",
            )
            .bind(mark)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        }
        // The audit record is never replaced: the imported events follow
        // whatever this store already recorded (an event already here, by
        // id, is skipped).
        insert_audit(&mut tx, &snap.audit).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(())
    }
}

fn audit_from(row: &PgRow) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        seq: row.try_get::<i64, _>("seq").map_err(pg_error)? as u64,
        id: row.try_get("id").map_err(pg_error)?,
        time_ms: row.try_get::<i64, _>("time_ms").map_err(pg_error)? as u64,
        instance: row.try_get("instance").map_err(pg_error)?,
        event: row.try_get("event").map_err(pg_error)?,
        outcome: row.try_get("outcome").map_err(pg_error)?,
        subject: row.try_get("subject").map_err(pg_error)?,
        record: row.try_get("record").map_err(pg_error)?,
    })
}

/// Append `events` after the newest stored one, in one statement. The
/// table lock makes `seq` follow commit order across instances (as the
/// revocation feed's does); events already stored (by id) are skipped
/// without leaving a gap.
async fn insert_audit(tx: &mut Tx<'_>, events: &[AuditEntry]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    sqlx::query("LOCK TABLE audit_events IN EXCLUSIVE MODE")
        .execute(&mut **tx)
        .await
        .map_err(pg_error)?;
    let col = |f: fn(&AuditEntry) -> String| events.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO audit_events (seq, id, time_ms, instance, event, outcome, subject, record) \
         SELECT base.max + ROW_NUMBER() OVER (ORDER BY e.ord), \
                e.id, e.time_ms, e.instance, e.event, e.outcome, e.subject, e.record \
         FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], \
                     $6::text[], $7::text[]) \
              WITH ORDINALITY AS e(id, time_ms, instance, event, outcome, subject, record, ord) \
         CROSS JOIN (SELECT COALESCE(MAX(seq), 0) AS max FROM audit_events) AS base \
         WHERE NOT EXISTS (SELECT 1 FROM audit_events a WHERE a.id = e.id) \
         ORDER BY e.ord",
    )
    .bind(col(|e| e.id.clone()))
    .bind(events.iter().map(|e| e.time_ms as i64).collect::<Vec<_>>())
    .bind(col(|e| e.instance.clone()))
    .bind(col(|e| e.event.clone()))
    .bind(col(|e| e.outcome.clone()))
    .bind(events.iter().map(|e| e.subject.clone()).collect::<Vec<_>>())
    .bind(col(|e| e.record.clone()))
    .execute(&mut **tx)
    .await
    .map_err(pg_error)?;
    Ok(())
}

async fn insert_credential(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    c: &CredentialRecord,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO credentials (id, subject, public_key, alg, sign_count, aaguid, transports, \
         backup_eligible, backup_state, attestation_fmt, attested, nickname, created, last_used, \
         revoked, attestation_root) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(&c.id.0)
    .bind(c.subject.as_str())
    .bind(&c.public_key)
    .bind(c.alg)
    .bind(i64::from(c.sign_count))
    .bind(&c.aaguid)
    .bind(join(&c.transports))
    .bind(c.backup_eligible)
    .bind(c.backup_state)
    .bind(&c.attestation_fmt)
    .bind(c.attested)
    .bind(&c.nickname)
    .bind(c.created as i64)
    .bind(c.last_used.map(|v| v as i64))
    .bind(c.revoked.map(|v| v as i64))
    .bind(&c.attestation_root)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    //! These run against a real PostgreSQL (`TAPGATE_TEST_POSTGRES_URL`,
    //! default the local `test` database). Each test gets its own schema,
    //! so tests run in parallel with each other and with other checkouts.
    //! Without a server they print SKIP and pass, unless
    //! `TAPGATE_REQUIRE_POSTGRES=1` (CI, after `scripts/ensure-postgres`).

    use super::*;
    use crate::store::conformance;
    use sqlx::Connection;
    use std::future::Future;
    use std::sync::Arc;
    use std::time::Instant;

    const DEFAULT_TEST_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

    fn base_url() -> String {
        std::env::var("TAPGATE_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_TEST_URL.into())
    }

    /// `url` with extra query parameters appended.
    fn with_params(url: &str, params: &str) -> String {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}{params}")
    }

    /// Run `body` with the URL of a fresh, empty schema (as its
    /// search_path), then drop the schema, whether `body` passed or not.
    async fn with_schema<F, Fut>(test: &str, body: F)
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let base = base_url();
        // One direct attempt, not a pool: a pool retries a refused
        // connection until its timeout, which would slow every skip.
        let connect = sqlx::PgConnection::connect(&base);
        let mut admin = match tokio::time::timeout(Duration::from_secs(3), connect).await {
            Ok(Ok(c)) => c,
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "no answer within 3s".into(),
                };
                if std::env::var("TAPGATE_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                    panic!("{test}: PostgreSQL at {base} is required but unreachable: {why}");
                }
                eprintln!(
                    "SKIP {test}: PostgreSQL at {base} is unreachable ({why}); \
                     run scripts/ensure-postgres, or set TAPGATE_REQUIRE_POSTGRES=1 to fail instead"
                );
                return;
            }
        };
        let schema = format!(
            "tg_test_{}",
            crate::crypto::random_bytes(8)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let url = with_params(&base, &format!("options=-c%20search_path%3D{schema}"));
        // A spawned task turns a panic into a JoinError, so cleanup runs.
        let outcome = tokio::spawn(body(url)).await;
        sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&mut admin)
            .await
            .unwrap();
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }

    #[tokio::test]
    async fn conformance_postgres_and_reopen() {
        with_schema("conformance_postgres_and_reopen", |url| async move {
            let store = PgStore::open(&url).await.unwrap();
            conformance::run(&store).await;
            drop(store);
            // Migrations already applied: reopening is a no-op and keeps data.
            let again = PgStore::open(&url).await.unwrap();
            assert_eq!(again.count_users().await.unwrap(), 1);
        })
        .await;
    }

    #[tokio::test]
    async fn export_import_postgres_round_trip() {
        with_schema("export_import_postgres_a", |url_a| async move {
            let a = PgStore::open(&url_a).await.unwrap();
            with_schema("export_import_postgres_b", |url_b| async move {
                let b = PgStore::open(&url_b).await.unwrap();
                conformance::export_import(&a, &b).await;
            })
            .await;
        })
        .await;
    }

    #[tokio::test]
    async fn export_import_sqlite_to_postgres_and_back() {
        with_schema("export_import_cross", |url| async move {
            let lite = crate::store::SqliteStore::memory().await.unwrap();
            let pg = PgStore::open(&url).await.unwrap();
            conformance::export_import(&lite, &pg).await;
            let back = crate::store::SqliteStore::memory().await.unwrap();
            back.import(&pg.export().await.unwrap(), false)
                .await
                .unwrap();
            assert_eq!(back.export().await.unwrap(), pg.export().await.unwrap());
        })
        .await;
    }

    #[tokio::test]
    async fn audit_postgres() {
        with_schema("audit_postgres", |url| async move {
            let store = PgStore::open(&url).await.unwrap();
            conformance::audit(&store).await;
        })
        .await;
    }

    /// A revocation committed through one instance's store signals every
    /// other instance's at once (LISTEN/NOTIFY through the trigger).
    #[tokio::test]
    async fn a_revocation_is_pushed_to_other_instances() {
        with_schema("revocation_notify", |url| async move {
            let a = PgStore::open(&url).await.unwrap();
            let b = PgStore::open(&url).await.unwrap();
            let changes = b.changes();
            let deadline = Instant::now() + Duration::from_secs(5);
            while !changes.is_live() {
                assert!(Instant::now() < deadline, "listener never connected");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            // The (re)connection's own catch-up signal.
            tokio::time::timeout(Duration::from_secs(1), changes.wait())
                .await
                .unwrap();
            let u = conformance_user(&a).await;
            let started = Instant::now();
            a.revoke_sessions(&u, 1_000).await.unwrap();
            tokio::time::timeout(Duration::from_secs(2), changes.wait())
                .await
                .expect("no NOTIFY within 2 s");
            let took = started.elapsed();
            assert!(took < Duration::from_millis(500), "{took:?}");
        })
        .await;
    }

    /// A user to revoke, made through the trait.
    async fn conformance_user(store: &PgStore) -> Subject {
        let user = conformance::user("u_notify", "notify@example.com");
        store
            .create_invite(&conformance::invite(
                "i_notify",
                "notify@example.com",
                u64::MAX / 2,
            ))
            .await
            .unwrap();
        let cred = conformance::credential(&[9, 9], "u_notify");
        store
            .register_with_invite("i_notify", &user, &cred, 2)
            .await
            .unwrap();
        user.subject
    }

    #[tokio::test]
    async fn tls_is_used_when_asked_and_an_unknown_issuer_is_refused() {
        with_schema("tls", |url| async move {
            match PgStore::open(&with_params(&url, "sslmode=require")).await {
                Ok(store) => {
                    let ssl: bool = sqlx::query_scalar(
                        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    )
                    .fetch_one(&store.pool)
                    .await
                    .unwrap();
                    assert!(ssl, "sslmode=require gave a plain connection");
                    store.ping().await.unwrap();
                }
                Err(e) if e.to_string().contains("TLS") || e.to_string().contains("SSL") => {
                    eprintln!("SKIP tls half: this PostgreSQL offers no TLS ({e})");
                    return;
                }
                Err(e) => panic!("sslmode=require: {e}"),
            }
            let dir = tempfile::tempdir().unwrap();
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let root = params.self_signed(&key).unwrap();
            let pem = dir.path().join("not-the-servers-root.pem");
            std::fs::write(&pem, root.pem()).unwrap();
            let strict = with_params(
                &url,
                &format!("sslmode=verify-ca&sslrootcert={}", pem.display()),
            );
            match PgStore::open(&strict).await {
                Ok(_) => panic!("a server certificate from an unknown issuer was accepted"),
                Err(e) => {
                    let m = e.to_string();
                    assert!(m.contains("certificate"), "{m}");
                    assert!(!m.contains("password"), "{m}");
                }
            }
        })
        .await;
    }

    #[tokio::test]
    async fn lifecycle_postgres() {
        with_schema("lifecycle_postgres", |url| async move {
            let store = PgStore::open(&url).await.unwrap();
            conformance::lifecycle(&store).await;
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn revocation_feed_has_no_gaps_under_concurrent_writers() {
        // Readers page the feed by `seq`; an entry that committed after a
        // later one was read would be skipped forever. Writers race here
        // while a reader pages, and the reader must end up with them all.
        with_schema("feed_no_gaps", |url| async move {
            let store = Arc::new(
                PgStore::open(&with_params(&url, "pool_max=12"))
                    .await
                    .unwrap(),
            );
            for i in 0..8u8 {
                let subject = format!("u_{i}");
                let invite = InviteRecord::new(
                    format!("i{i}"),
                    Email::parse(&format!("u{i}@example.com")).unwrap(),
                    vec![],
                    100,
                    10_000,
                    "cli",
                );
                store.create_invite(&invite).await.unwrap();
                let user = UserRecord {
                    subject: Subject(subject.clone()),
                    email: invite.email.clone(),
                    display_name: subject.clone(),
                    roles: vec![],
                    disabled: false,
                    created: 100,
                };
                let mut cred = crate::store::CredentialRecord {
                    id: CredentialId(vec![i]),
                    subject: Subject(subject),
                    public_key: vec![1],
                    alg: -7,
                    sign_count: 0,
                    aaguid: String::new(),
                    transports: vec![],
                    backup_eligible: false,
                    backup_state: false,
                    attestation_fmt: "none".into(),
                    attested: false,
                    nickname: String::new(),
                    created: 100,
                    last_used: None,
                    revoked: None,
                    attestation_root: None,
                };
                store
                    .register_with_invite(&invite.token_hash, &user, &cred, 100)
                    .await
                    .unwrap();
                cred.id = CredentialId(vec![i, 1]);
                store.add_credential(&cred).await.unwrap();
            }
            let writers: Vec<_> = (0..8u8)
                .map(|i| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        let subject = Subject(format!("u_{i}"));
                        for _ in 0..10 {
                            store.revoke_sessions(&subject, 200).await.unwrap();
                        }
                        store
                            .revoke_credential(&subject, &CredentialId(vec![i, 1]), false, 200)
                            .await
                            .unwrap();
                    })
                })
                .collect();
            let reader = {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut last = 0;
                    while seen.len() < 88 {
                        for r in store.revocations_since(last, 7).await.unwrap() {
                            last = r.seq;
                            seen.push(r);
                        }
                        tokio::task::yield_now().await;
                    }
                    seen
                })
            };
            for w in writers {
                w.await.unwrap();
            }
            let seen = tokio::time::timeout(Duration::from_secs(20), reader)
                .await
                .expect("the reader saw every entry")
                .unwrap();
            assert_eq!(seen.len(), 88);
            assert_eq!(seen, store.revocations_since(0, 1000).await.unwrap());
        })
        .await;
    }

    #[tokio::test]
    async fn an_aborted_revocation_leaves_no_gap_in_the_feed() {
        // A process killed in the middle of a revocation aborts its
        // transaction; a sequence value it drew is not given back, so the
        // feed's numbers must not come from one (found by the kill -9
        // test in tests/faults.rs).
        with_schema("aborted_revocation_no_gap", |url| async move {
            let store = PgStore::open(&url).await.unwrap();
            let invite = InviteRecord::new(
                "i".into(),
                Email::parse("ann@example.com").unwrap(),
                vec![],
                100,
                10_000,
                "cli",
            );
            store.create_invite(&invite).await.unwrap();
            let subject = Subject("u_ann".into());
            let user = UserRecord {
                subject: subject.clone(),
                email: invite.email.clone(),
                display_name: "Ann".into(),
                roles: vec![],
                disabled: false,
                created: 100,
            };
            let cred = crate::store::CredentialRecord {
                id: CredentialId(vec![7]),
                subject: subject.clone(),
                public_key: vec![1],
                alg: -7,
                sign_count: 0,
                aaguid: String::new(),
                transports: vec![],
                backup_eligible: false,
                backup_state: false,
                attestation_fmt: "none".into(),
                attested: false,
                nickname: String::new(),
                created: 100,
                last_used: None,
                revoked: None,
                attestation_root: None,
            };
            store
                .register_with_invite(&invite.token_hash, &user, &cred, 100)
                .await
                .unwrap();
            store.revoke_sessions(&subject, 200).await.unwrap();
            let mut tx = store.pool.begin().await.unwrap();
            bump_epoch(&mut tx, &subject, 201).await.unwrap();
            tx.rollback().await.unwrap();
            store.revoke_sessions(&subject, 202).await.unwrap();
            let seqs: Vec<u64> = store
                .revocations_since(0, 10)
                .await
                .unwrap()
                .iter()
                .map(|r| r.seq)
                .collect();
            assert_eq!(seqs, [1, 2]);
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_open_migrates_once() {
        with_schema("concurrent_open_migrates_once", |url| async move {
            let opens: Vec<_> = (0..4)
                .map(|_| {
                    let url = url.clone();
                    tokio::spawn(async move { crate::store::open(&url).await })
                })
                .collect();
            let mut stores = Vec::new();
            for o in opens {
                stores.push(o.await.unwrap().expect("every concurrent open succeeds"));
            }
            for s in &stores {
                assert_eq!(s.count_users().await.unwrap(), 0);
            }
            let pool = PgPool::connect(&url).await.unwrap();
            let applied: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            assert_eq!(applied as usize, MIGRATOR.iter().count());
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn challenge_is_consumed_exactly_once_under_concurrency() {
        with_schema("challenge_exactly_once", |url| async move {
            let store = Arc::new(
                PgStore::open(&with_params(&url, "pool_max=16"))
                    .await
                    .unwrap(),
            );
            // Several rounds: a race that is lost only sometimes still shows.
            for round in 0..5u8 {
                let challenge = [b'c', round];
                let tries: Vec<_> = (0..32)
                    .map(|_| {
                        let store = store.clone();
                        tokio::spawn(async move {
                            store.consume_challenge(&challenge, 10_000, 100).await
                        })
                    })
                    .collect();
                let mut wins = 0;
                for t in tries {
                    if t.await.unwrap().unwrap() {
                        wins += 1;
                    }
                }
                assert_eq!(wins, 1, "round {round}");
            }
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn invite_is_used_exactly_once_under_concurrency() {
        with_schema("invite_exactly_once", |url| async move {
            let store = Arc::new(PgStore::open(&url).await.unwrap());
            store
                .create_invite(&InviteRecord::new(
                    "race".into(),
                    Email::parse("race@example.com").unwrap(),
                    vec![],
                    100,
                    10_000,
                    "cli",
                ))
                .await
                .unwrap();
            let tries: Vec<_> = (0..16)
                .map(|i| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        let subject = Subject(format!("u_{i}"));
                        let user = UserRecord {
                            subject: subject.clone(),
                            email: Email::parse(&format!("r{i}@example.com")).unwrap(),
                            display_name: format!("racer {i}"),
                            roles: vec![],
                            disabled: false,
                            created: 100,
                        };
                        let cred = CredentialRecord {
                            id: CredentialId(vec![i]),
                            subject,
                            public_key: vec![1],
                            alg: -7,
                            sign_count: 0,
                            aaguid: String::new(),
                            transports: vec![],
                            backup_eligible: false,
                            backup_state: false,
                            attestation_fmt: "none".into(),
                            attested: false,
                            nickname: String::new(),
                            created: 100,
                            last_used: None,
                            revoked: None,
                            attestation_root: None,
                        };
                        (
                            i,
                            store.register_with_invite("race", &user, &cred, 200).await,
                        )
                    })
                })
                .collect();
            let mut winners = Vec::new();
            for t in tries {
                match t.await.unwrap() {
                    (i, Ok(())) => winners.push(i),
                    (_, Err(StoreError::InviteUnavailable)) => {}
                    (i, Err(e)) => panic!("racer {i}: unexpected {e:?}"),
                }
            }
            assert_eq!(winners.len(), 1, "exactly one registration wins");
            assert_eq!(store.count_users().await.unwrap(), 1);
            let w = winners[0];
            assert!(
                store
                    .user(&Subject(format!("u_{w}")))
                    .await
                    .unwrap()
                    .is_some()
            );
            // Losers left nothing behind, not even their credential.
            for i in (0..16u8).filter(|i| *i != w) {
                assert!(
                    store
                        .credential(&CredentialId(vec![i]))
                        .await
                        .unwrap()
                        .is_none()
                );
            }
            assert!(store.invite("race", 200).await.unwrap().is_none());
        })
        .await;
    }

    #[tokio::test]
    async fn unreachable_server_is_unavailable_not_a_hang() {
        // Needs no PostgreSQL: nothing listens on port 1.
        let started = Instant::now();
        let r = crate::store::open("postgres://postgres@127.0.0.1:1/test").await;
        let took = started.elapsed();
        match r {
            Err(StoreError::Unavailable(m)) => assert!(m.contains("127.0.0.1:1"), "{m}"),
            Err(e) => panic!("expected Unavailable, got {e:?}"),
            Ok(_) => panic!("expected Unavailable, got a store"),
        }
        assert!(took < Duration::from_secs(10), "took {took:?}");
    }

    /// A loopback TCP relay to the real server that can be cut and
    /// restored on the same port: a database outage without stopping the
    /// shared PostgreSQL.
    struct Relay {
        port: u16,
        task: tokio::task::JoinHandle<()>,
    }

    impl Relay {
        async fn start(port: u16, upstream: (String, u16)) -> Relay {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap();
            let port = listener.local_addr().unwrap().port();
            let task = tokio::spawn(async move {
                // Dropping the set (when this task is aborted) aborts every
                // relayed connection, so clients see their sockets close.
                let mut conns = tokio::task::JoinSet::new();
                loop {
                    let (mut inbound, _) = listener.accept().await.unwrap();
                    let upstream = upstream.clone();
                    conns.spawn(async move {
                        if let Ok(mut out) = tokio::net::TcpStream::connect(upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                        }
                    });
                }
            });
            Relay { port, task }
        }

        async fn cut(self) -> u16 {
            self.task.abort();
            let _ = self.task.await;
            self.port
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn outage_is_unavailable_and_recovers_without_reopen() {
        with_schema("outage_recovers", |url| async move {
            let opts = PgConnectOptions::from_url(&url::Url::parse(&url).unwrap()).unwrap();
            let upstream = (opts.get_host().to_owned(), opts.get_port());
            let relay = Relay::start(0, upstream.clone()).await;
            let mut via = url::Url::parse(&url).unwrap();
            via.set_host(Some("127.0.0.1")).unwrap();
            via.set_port(Some(relay.port)).unwrap();
            let store = PgStore::open(via.as_str()).await.unwrap();
            store.ping().await.unwrap();

            let port = relay.cut().await;
            let started = Instant::now();
            match store.count_users().await {
                Err(StoreError::Unavailable(_)) => {}
                other => panic!("expected Unavailable during the outage, got {other:?}"),
            }
            assert!(started.elapsed() < Duration::from_secs(10));

            let relay = Relay::start(port, upstream).await;
            assert_eq!(store.count_users().await.unwrap(), 0, "recovered");
            assert!(store.consume_challenge(b"after", 500, 100).await.unwrap());
            relay.cut().await;
        })
        .await;
    }

    #[test]
    fn pool_max_is_ours_and_checked() {
        let (opts, n, target) =
            parse_url("postgres://tg:secret@db.internal:6543/app?pool_max=3&sslmode=disable")
                .unwrap();
        assert_eq!(n, 3);
        assert_eq!(opts.get_port(), 6543);
        assert_eq!(target, "PostgreSQL tg@db.internal:6543/app");
        assert!(!target.contains("secret"));
        assert_eq!(parse_url("postgres://h/db").unwrap().1, DEFAULT_POOL_MAX);
        let (opts, _, _) = parse_url("postgresql:///app?host=/cloudsql/p:r:i").unwrap();
        assert_eq!(opts.get_socket().unwrap().to_str(), Some("/cloudsql/p:r:i"));
        assert_eq!(opts.get_database(), Some("app"));
        for bad in ["0", "-1", "many"] {
            assert!(matches!(
                parse_url(&format!("postgres://h/db?pool_max={bad}")),
                Err(StoreError::Other(_))
            ));
        }
    }
}
