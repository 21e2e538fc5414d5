//! SQLite store (the embedded default): one file, WAL mode, one writer.

use super::snapshot::{CredentialState, InviteState, RevocationState, Snapshot, UserState};
use super::{
    AuditEntry, Changes, CredentialRecord, InviteRecord, Recovered, Revocation, Revoked, Standing,
    Store, StoreError, UserKeys, UserRecord, changed_roles, group, join, split, split_roles,
};
use crate::model::{CredentialId, Email, Role, Subject};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};
use std::str::FromStr;
use std::time::Duration;

pub struct SqliteStore {
    pool: SqlitePool,
    /// Signalled after this process commits a revocation, so its own
    /// instance applies it at once. (Other processes on the same file, such
    /// as the admin CLI, are seen by polling.)
    changes: std::sync::Arc<Changes>,
}

impl SqliteStore {
    /// Open (creating the file and its folder if needed) and migrate.
    pub async fn open(url: &str) -> Result<SqliteStore, StoreError> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Other(format!("bad sqlite url {url:?}: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Full sync: a committed registration survives a power cut.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        if let Some(dir) = opts.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Other(format!("cannot create {}: {e}", dir.display())))?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(opts)
            .await?;
        sqlx::migrate!("src/store/migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Other(format!("migration failed: {e}")))?;
        Ok(SqliteStore {
            pool,
            changes: Default::default(),
        })
    }

    /// Close every connection: later calls fail as in an outage (tests).
    #[cfg(test)]
    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }

    /// A private in-memory database (tests).
    pub async fn memory() -> Result<SqliteStore, StoreError> {
        let opts = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(|e| StoreError::Other(e.to_string()))?
            .foreign_keys(true);
        // One connection: every connection to :memory: is its own database.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await?;
        sqlx::migrate!("src/store/migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Other(format!("migration failed: {e}")))?;
        Ok(SqliteStore {
            pool,
            changes: Default::default(),
        })
    }
}

fn user_from(row: &SqliteRow) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        subject: Subject(row.try_get("subject")?),
        email: Email(row.try_get("email")?),
        display_name: row.try_get("display_name")?,
        roles: split_roles(row.try_get("roles")?),
        disabled: row.try_get("disabled")?,
        created: row.try_get::<i64, _>("created")? as u64,
    })
}

fn credential_from(row: &SqliteRow) -> Result<CredentialRecord, StoreError> {
    Ok(CredentialRecord {
        id: CredentialId(row.try_get("id")?),
        subject: Subject(row.try_get("subject")?),
        public_key: row.try_get("public_key")?,
        alg: row.try_get("alg")?,
        sign_count: row.try_get::<i64, _>("sign_count")? as u32,
        aaguid: row.try_get("aaguid")?,
        transports: split(row.try_get("transports")?),
        backup_eligible: row.try_get("backup_eligible")?,
        backup_state: row.try_get("backup_state")?,
        attestation_fmt: row.try_get("attestation_fmt")?,
        attested: row.try_get("attested")?,
        nickname: row.try_get("nickname")?,
        created: row.try_get::<i64, _>("created")? as u64,
        last_used: row
            .try_get::<Option<i64>, _>("last_used")?
            .map(|v| v as u64),
        revoked: row.try_get::<Option<i64>, _>("revoked")?.map(|v| v as u64),
        attestation_root: row.try_get("attestation_root")?,
    })
}

fn invite_from(row: &SqliteRow) -> Result<InviteRecord, StoreError> {
    Ok(InviteRecord {
        token_hash: row.try_get("token_hash")?,
        email: Email(row.try_get("email")?),
        roles: split_roles(row.try_get("roles")?),
        created: row.try_get::<i64, _>("created")? as u64,
        expires: row.try_get::<i64, _>("expires")? as u64,
        created_by: row.try_get("created_by")?,
        used_at: row.try_get::<Option<i64>, _>("used_at")?.map(|v| v as u64),
        used_by: row.try_get::<Option<String>, _>("used_by")?.map(Subject),
        subject: row.try_get::<Option<String>, _>("subject")?.map(Subject),
        revoke_other_keys: row.try_get("revoke_other_keys")?,
        cancelled: row
            .try_get::<Option<i64>, _>("cancelled")?
            .map(|v| v as u64),
    })
}

fn revocation_from(row: &SqliteRow) -> Result<Revocation, StoreError> {
    let epoch: Option<i64> = row.try_get("epoch")?;
    let credential: Option<String> = row.try_get("credential")?;
    let what = match (epoch, credential) {
        (Some(e), _) => Revoked::SessionsBefore(e as u64),
        (None, Some(c)) => Revoked::Credential(c),
        // The table's CHECK constraint rules this out.
        (None, None) => return Err(StoreError::Other("revocation without a target".into())),
    };
    Ok(Revocation {
        seq: row.try_get::<i64, _>("seq")? as u64,
        subject: Subject(row.try_get("subject")?),
        what,
        time: row.try_get::<i64, _>("time")? as u64,
    })
}

type Tx<'a> = sqlx::Transaction<'a, sqlx::Sqlite>;

fn audit_from(row: &SqliteRow) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        seq: row.try_get::<i64, _>("seq")? as u64,
        id: row.try_get("id")?,
        time_ms: row.try_get::<i64, _>("time_ms")? as u64,
        instance: row.try_get("instance")?,
        event: row.try_get("event")?,
        outcome: row.try_get("outcome")?,
        subject: row.try_get("subject")?,
        record: row.try_get("record")?,
    })
}

/// Append `events` after the newest stored one. Each INSERT is a write
/// from its first statement on (no read-then-write upgrade), numbers
/// itself in the same statement, and an event already stored (by id) is
/// skipped without using a number.
async fn insert_audit(tx: &mut Tx<'_>, events: &[AuditEntry]) -> Result<(), StoreError> {
    for e in events {
        sqlx::query(
            "INSERT OR IGNORE INTO audit_events \
             (seq, id, time_ms, instance, event, outcome, subject, record) \
             VALUES ((SELECT COALESCE(MAX(seq), 0) + 1 FROM audit_events), ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&e.id)
        .bind(e.time_ms as i64)
        .bind(&e.instance)
        .bind(&e.event)
        .bind(&e.outcome)
        .bind(&e.subject)
        .bind(&e.record)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Take the write lock (a no-op write to the user's row) before reading
/// anything: a deferred SQLite transaction that reads first and writes
/// later could fail to upgrade when another writer got in between.
/// `NotFound` for an unknown user.
async fn lock_user(tx: &mut Tx<'_>, subject: &Subject) -> Result<(), StoreError> {
    let r = sqlx::query("UPDATE users SET epoch = epoch WHERE subject = ?")
        .bind(subject.as_str())
        .execute(&mut **tx)
        .await?;
    if r.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Bump the user's epoch and publish it on the feed.
async fn bump_epoch(tx: &mut Tx<'_>, subject: &Subject, now: u64) -> Result<u64, StoreError> {
    let epoch: i64 =
        sqlx::query_scalar("UPDATE users SET epoch = epoch + 1 WHERE subject = ? RETURNING epoch")
            .bind(subject.as_str())
            .fetch_optional(&mut **tx)
            .await?
            .ok_or(StoreError::NotFound)?;
    sqlx::query("INSERT INTO revocations (subject, epoch, time) VALUES (?, ?, ?)")
        .bind(subject.as_str())
        .bind(epoch)
        .bind(now as i64)
        .execute(&mut **tx)
        .await?;
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
        "UPDATE credentials SET revoked = ? WHERE id = ? AND subject = ? AND revoked IS NULL",
    )
    .bind(now as i64)
    .bind(&id.0)
    .bind(subject.as_str())
    .execute(&mut **tx)
    .await?;
    if r.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query("INSERT INTO revocations (subject, credential, time) VALUES (?, ?, ?)")
        .bind(subject.as_str())
        .bind(id.digest())
        .bind(now as i64)
        .execute(&mut **tx)
        .await?;
    Ok(true)
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn count_users(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    async fn user(&self, subject: &Subject) -> Result<Option<UserRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM users WHERE subject = ?")
            .bind(subject.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_from).transpose()
    }

    async fn user_by_email(&self, email: &Email) -> Result<Option<UserRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM users WHERE email = ?")
            .bind(email.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_from).transpose()
    }

    async fn credential(&self, id: &CredentialId) -> Result<Option<CredentialRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM credentials WHERE id = ?")
            .bind(&id.0)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(credential_from).transpose()
    }

    async fn credentials_of(&self, subject: &Subject) -> Result<Vec<CredentialRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM credentials WHERE subject = ? ORDER BY created, id")
            .bind(subject.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(credential_from).collect()
    }

    async fn create_invite(&self, invite: &InviteRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO invites (token_hash, email, roles, created, expires, created_by, subject, \
             revoke_other_keys) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
                e.into()
            }
        })?;
        Ok(())
    }

    async fn invite(&self, token_hash: &str, now: u64) -> Result<Option<InviteRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT * FROM invites WHERE token_hash = ? AND used_at IS NULL AND cancelled IS NULL \
             AND expires > ?",
        )
        .bind(token_hash)
        .bind(now as i64)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(invite_from).transpose()
    }

    async fn register_with_invite(
        &self,
        token_hash: &str,
        user: &UserRecord,
        c: &CredentialRecord,
        now: u64,
    ) -> Result<(), StoreError> {
        // BEGIN IMMEDIATE semantics: the first write takes the lock, so two
        // registrations racing for one invite serialize here.
        let mut tx = self.pool.begin().await?;
        let used = sqlx::query(
            "UPDATE invites SET used_at = ?, used_by = ? WHERE token_hash = ? AND used_at IS NULL \
             AND cancelled IS NULL AND subject IS NULL AND expires > ?",
        )
        .bind(now as i64)
        .bind(user.subject.as_str())
        .bind(token_hash)
        .bind(now as i64)
        .execute(&mut *tx)
        .await?;
        if used.rows_affected() != 1 {
            return Err(StoreError::InviteUnavailable);
        }
        sqlx::query("INSERT INTO users (subject, email, display_name, roles, disabled, created) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(user.subject.as_str())
            .bind(user.email.as_str())
            .bind(&user.display_name)
            .bind(join(user.roles.iter().map(|r| r.as_str())))
            .bind(user.disabled)
            .bind(user.created as i64)
            .execute(&mut *tx)
            .await
            .map_err(|e| if is_unique_violation(&e) { StoreError::EmailTaken } else { e.into() })?;
        insert_credential(&mut tx, c).await.map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::DuplicateCredential
            } else {
                e.into()
            }
        })?;
        tx.commit().await?;
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
            "UPDATE credentials SET sign_count = ?, backup_state = ?, last_used = ? WHERE id = ?",
        )
        .bind(i64::from(sign_count))
        .bind(backup_state)
        .bind(now as i64)
        .bind(&id.0)
        .execute(&self.pool)
        .await?;
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
        sqlx::query("DELETE FROM consumed_challenges WHERE expires < ?")
            .bind(now as i64)
            .execute(&self.pool)
            .await?;
        let r = sqlx::query("INSERT INTO consumed_challenges (digest, expires) VALUES (?, ?) ON CONFLICT DO NOTHING")
            .bind(digest)
            .bind(expires as i64)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn users_with_keys(&self) -> Result<Vec<UserKeys>, StoreError> {
        // One read transaction: both queries see the same snapshot.
        let mut tx = self.pool.begin().await?;
        let users = sqlx::query("SELECT * FROM users ORDER BY email")
            .fetch_all(&mut *tx)
            .await?;
        let creds = sqlx::query("SELECT * FROM credentials ORDER BY subject, created, id")
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let users = users
            .iter()
            .map(|r| Ok((user_from(r)?, r.try_get::<i64, _>("epoch")? as u64)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let creds = creds
            .iter()
            .map(credential_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(group(users, creds))
    }

    async fn user_with_keys(&self, subject: &Subject) -> Result<Option<UserKeys>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let Some(row) = sqlx::query("SELECT * FROM users WHERE subject = ?")
            .bind(subject.as_str())
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let creds = sqlx::query("SELECT * FROM credentials WHERE subject = ? ORDER BY created, id")
            .bind(subject.as_str())
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(UserKeys {
            user: user_from(&row)?,
            epoch: row.try_get::<i64, _>("epoch")? as u64,
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
             FROM users u WHERE subject = ?",
        )
        .bind(subject.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Standing {
                disabled: r.try_get("disabled")?,
                epoch: r.try_get::<i64, _>("epoch")? as u64,
                active_keys: r.try_get::<i64, _>("active")? as u32,
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
        let mut tx = self.pool.begin().await?;
        lock_user(&mut tx, subject).await?;
        let current: String = sqlx::query_scalar("SELECT roles FROM users WHERE subject = ?")
            .bind(subject.as_str())
            .fetch_one(&mut *tx)
            .await?;
        let current = split_roles(&current);
        let roles = changed_roles(&current, grant, revoke);
        sqlx::query("UPDATE users SET roles = ? WHERE subject = ?")
            .bind(join(roles.iter().map(|r| r.as_str())))
            .bind(subject.as_str())
            .execute(&mut *tx)
            .await?;
        if current.iter().any(|r| !roles.contains(r)) {
            bump_epoch(&mut tx, subject, now).await?;
        }
        tx.commit().await?;
        self.changes.signal();
        Ok(roles)
    }

    async fn set_disabled(
        &self,
        subject: &Subject,
        disabled: bool,
        now: u64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        lock_user(&mut tx, subject).await?;
        let r = sqlx::query("UPDATE users SET disabled = ? WHERE subject = ? AND disabled <> ?")
            .bind(disabled)
            .bind(subject.as_str())
            .bind(disabled)
            .execute(&mut *tx)
            .await?;
        let changed = r.rows_affected() == 1;
        if changed && disabled {
            bump_epoch(&mut tx, subject, now).await?;
        }
        tx.commit().await?;
        self.changes.signal();
        Ok(changed)
    }

    async fn revoke_sessions(&self, subject: &Subject, now: u64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let epoch = bump_epoch(&mut tx, subject, now).await?;
        tx.commit().await?;
        self.changes.signal();
        Ok(epoch)
    }

    async fn add_credential(&self, c: &CredentialRecord) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        lock_user(&mut tx, &c.subject).await?;
        insert_credential(&mut tx, c).await.map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::DuplicateCredential
            } else {
                e.into()
            }
        })?;
        tx.commit().await?;
        Ok(())
    }

    async fn rename_credential(
        &self,
        subject: &Subject,
        id: &CredentialId,
        nickname: &str,
    ) -> Result<(), StoreError> {
        let r = sqlx::query("UPDATE credentials SET nickname = ? WHERE id = ? AND subject = ?")
            .bind(nickname)
            .bind(&id.0)
            .bind(subject.as_str())
            .execute(&self.pool)
            .await?;
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
        let mut tx = self.pool.begin().await?;
        lock_user(&mut tx, subject).await?;
        let rows = sqlx::query("SELECT id, revoked FROM credentials WHERE subject = ?")
            .bind(subject.as_str())
            .fetch_all(&mut *tx)
            .await?;
        let mut found = None;
        let mut active = 0;
        for r in &rows {
            let rid: Vec<u8> = r.try_get("id")?;
            let revoked: Option<i64> = r.try_get("revoked")?;
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
        tx.commit().await?;
        self.changes.signal();
        Ok(done)
    }

    async fn invites(&self) -> Result<Vec<InviteRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM invites ORDER BY created DESC, token_hash")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(invite_from).collect()
    }

    async fn cancel_invite(&self, token_hash: &str, now: u64) -> Result<(), StoreError> {
        let r = sqlx::query(
            "UPDATE invites SET cancelled = ? WHERE token_hash = ? AND used_at IS NULL \
             AND cancelled IS NULL AND expires > ?",
        )
        .bind(now as i64)
        .bind(token_hash)
        .bind(now as i64)
        .execute(&self.pool)
        .await?;
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
        let mut tx = self.pool.begin().await?;
        let revoke_others: Option<bool> = sqlx::query_scalar(
            "UPDATE invites SET used_at = ?, used_by = subject WHERE token_hash = ? \
             AND subject = ? AND used_at IS NULL AND cancelled IS NULL AND expires > ? \
             RETURNING revoke_other_keys",
        )
        .bind(now as i64)
        .bind(token_hash)
        .bind(c.subject.as_str())
        .bind(now as i64)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(revoke_others) = revoke_others else {
            return Err(StoreError::InviteUnavailable);
        };
        insert_credential(&mut tx, c).await.map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::DuplicateCredential
            } else {
                e.into()
            }
        })?;
        let mut revoked = Vec::new();
        if revoke_others {
            let others: Vec<Vec<u8>> = sqlx::query_scalar(
                "SELECT id FROM credentials WHERE subject = ? AND id <> ? AND revoked IS NULL \
                 ORDER BY created, id",
            )
            .bind(c.subject.as_str())
            .bind(&c.id.0)
            .fetch_all(&mut *tx)
            .await?;
            for id in others {
                let id = CredentialId(id);
                if revoke_key(&mut tx, &c.subject, &id, now).await? {
                    revoked.push(id);
                }
            }
        }
        let row = sqlx::query("SELECT * FROM users WHERE subject = ?")
            .bind(c.subject.as_str())
            .fetch_one(&mut *tx)
            .await?;
        let user = user_from(&row)?;
        tx.commit().await?;
        self.changes.signal();
        Ok(Recovered { user, revoked })
    }

    async fn revocations_since(
        &self,
        after: u64,
        limit: u32,
    ) -> Result<Vec<Revocation>, StoreError> {
        let rows = sqlx::query("SELECT * FROM revocations WHERE seq > ? ORDER BY seq LIMIT ?")
            .bind(after as i64)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(revocation_from).collect()
    }

    fn changes(&self) -> std::sync::Arc<Changes> {
        self.changes.clone()
    }

    async fn append_audit(&self, events: &[AuditEntry]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        insert_audit(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn audit_since(&self, after: u64, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query("SELECT * FROM audit_events WHERE seq > ? ORDER BY seq LIMIT ?")
            .bind(after as i64)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(audit_from).collect()
    }

    async fn schema_version(&self) -> Result<i64, StoreError> {
        let v: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await?;
        Ok(v.unwrap_or(0))
    }

    async fn export(&self) -> Result<Snapshot, StoreError> {
        // One read transaction: every table from the same snapshot.
        let mut tx = self.pool.begin().await?;
        let users = sqlx::query("SELECT * FROM users ORDER BY subject")
            .fetch_all(&mut *tx)
            .await?;
        let creds = sqlx::query("SELECT * FROM credentials ORDER BY id")
            .fetch_all(&mut *tx)
            .await?;
        let invites = sqlx::query("SELECT * FROM invites ORDER BY token_hash")
            .fetch_all(&mut *tx)
            .await?;
        let revs = sqlx::query("SELECT * FROM revocations ORDER BY seq")
            .fetch_all(&mut *tx)
            .await?;
        let audit = sqlx::query("SELECT * FROM audit_events ORDER BY seq")
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Snapshot::new(
            users
                .iter()
                .map(|r| {
                    Ok(UserState::from_record(
                        &user_from(r)?,
                        r.try_get::<i64, _>("epoch")? as u64,
                    ))
                })
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
        let mut tx = self.pool.begin().await?;
        // Take the write lock first (see `lock_user`).
        sqlx::query("UPDATE users SET epoch = epoch WHERE 0")
            .execute(&mut *tx)
            .await?;
        let (users, invites, revs): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM users), (SELECT COUNT(*) FROM invites), \
             (SELECT COUNT(*) FROM revocations)",
        )
        .fetch_one(&mut *tx)
        .await?;
        if users + invites + revs > 0 {
            if !replace {
                return Err(super::not_empty(users, invites, revs));
            }
            for table in ["revocations", "invites", "credentials", "users"] {
                sqlx::query(&format!("DELETE FROM {table}"))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        for u in &snap.users {
            let r = u.record().map_err(StoreError::Other)?;
            sqlx::query(
                "INSERT INTO users (subject, email, display_name, roles, disabled, created, epoch) \
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(r.subject.as_str())
            .bind(r.email.as_str())
            .bind(&r.display_name)
            .bind(join(r.roles.iter().map(|r| r.as_str())))
            .bind(r.disabled)
            .bind(r.created as i64)
            .bind(u.epoch as i64)
            .execute(&mut *tx)
            .await?;
        }
        for c in &snap.credentials {
            let c = c.record().map_err(StoreError::Other)?;
            insert_credential(&mut tx, &c).await?;
        }
        for i in &snap.invites {
            let i = i.record().map_err(StoreError::Other)?;
            sqlx::query(
                "INSERT INTO invites (token_hash, email, roles, created, expires, created_by, \
                 used_at, used_by, subject, revoke_other_keys, cancelled) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            .await?;
        }
        // An explicit seq also advances AUTOINCREMENT's counter.
        for r in &snap.revocations {
            sqlx::query(
                "INSERT INTO revocations (seq, subject, epoch, credential, time) \
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(r.seq as i64)
            .bind(&r.subject)
            .bind(r.epoch.map(|v| v as i64))
            .bind(&r.credential)
            .bind(r.time as i64)
            .execute(&mut *tx)
            .await?;
        }
        // The audit record is never replaced: the imported events follow
        // whatever this store already recorded.
        insert_audit(&mut tx, &snap.audit).await?;
        tx.commit().await?;
        self.changes.signal();
        Ok(())
    }
}

async fn insert_credential(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    c: &CredentialRecord,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO credentials (id, subject, public_key, alg, sign_count, aaguid, transports, backup_eligible, \
         backup_state, attestation_fmt, attested, nickname, created, last_used, revoked, \
         attestation_root) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
    #[tokio::test]
    async fn conformance_sqlite_memory() {
        let store = super::SqliteStore::memory().await.unwrap();
        crate::store::conformance::run(&store).await;
    }

    #[tokio::test]
    async fn audit_sqlite_memory() {
        let store = super::SqliteStore::memory().await.unwrap();
        crate::store::conformance::audit(&store).await;
    }

    #[tokio::test]
    async fn audit_sqlite_file_with_concurrent_connections() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/a.db", dir.path().display());
        let store = super::SqliteStore::open(&url).await.unwrap();
        crate::store::conformance::audit(&store).await;
    }

    #[tokio::test]
    async fn lifecycle_sqlite_memory() {
        let store = super::SqliteStore::memory().await.unwrap();
        crate::store::conformance::lifecycle(&store).await;
    }

    #[tokio::test]
    async fn export_import_sqlite_round_trip() {
        let a = super::SqliteStore::memory().await.unwrap();
        let b = super::SqliteStore::memory().await.unwrap();
        crate::store::conformance::export_import(&a, &b).await;
    }

    #[tokio::test]
    async fn conformance_sqlite_file_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/nested/t.db", dir.path().display());
        let store = super::SqliteStore::open(&url).await.unwrap();
        crate::store::conformance::run(&store).await;
        drop(store);
        let again = super::SqliteStore::open(&url).await.unwrap();
        use crate::store::Store;
        assert_eq!(again.count_users().await.unwrap(), 1);
    }
}
