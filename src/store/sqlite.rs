//! SQLite store (the embedded default): one file, WAL mode, one writer.

use super::{
    CredentialRecord, InviteRecord, Store, StoreError, UserRecord, join, split, split_roles,
};
use crate::model::{CredentialId, Email, Subject};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};
use std::str::FromStr;
use std::time::Duration;

pub struct SqliteStore {
    pool: SqlitePool,
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
        Ok(SqliteStore { pool })
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
        Ok(SqliteStore { pool })
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
    })
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
            "INSERT INTO invites (token_hash, email, roles, created, expires, created_by) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&invite.token_hash)
        .bind(invite.email.as_str())
        .bind(join(invite.roles.iter().map(|r| r.as_str())))
        .bind(invite.created as i64)
        .bind(invite.expires as i64)
        .bind(&invite.created_by)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn invite(&self, token_hash: &str, now: u64) -> Result<Option<InviteRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT * FROM invites WHERE token_hash = ? AND used_at IS NULL AND expires > ?",
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
            "UPDATE invites SET used_at = ?, used_by = ? WHERE token_hash = ? AND used_at IS NULL AND expires > ?",
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
}

async fn insert_credential(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    c: &CredentialRecord,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO credentials (id, subject, public_key, alg, sign_count, aaguid, transports, backup_eligible, \
         backup_state, attestation_fmt, attested, nickname, created, last_used, revoked) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
