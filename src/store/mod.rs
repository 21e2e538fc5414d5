//! The store: users, credentials, invites and single-use challenges.
//! `Store` is the one interface; `sqlite.rs` is the embedded default and
//! `postgres.rs` the scale-out backend (same trait, same conformance suite).
//! Only this module contains SQL. The proxy hot path never calls it.

mod postgres;
mod sqlite;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use crate::model::{CredentialId, Email, Role, Subject};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The invite does not exist, was used, or expired.
    #[error("the invite is unknown, already used or expired")]
    InviteUnavailable,
    #[error("a user with this email already exists")]
    EmailTaken,
    #[error("this credential is already registered")]
    DuplicateCredential,
    #[error("no such record")]
    NotFound,
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("store error: {0}")]
    Other(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                StoreError::Unavailable(e.to_string())
            }
            _ => StoreError::Other(e.to_string()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    pub subject: Subject,
    pub email: Email,
    pub display_name: String,
    pub roles: Vec<Role>,
    pub disabled: bool,
    pub created: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialRecord {
    pub id: CredentialId,
    pub subject: Subject,
    pub public_key: Vec<u8>,
    pub alg: i64,
    pub sign_count: u32,
    pub aaguid: String,
    pub transports: Vec<String>,
    pub backup_eligible: bool,
    pub backup_state: bool,
    pub attestation_fmt: String,
    pub attested: bool,
    pub nickname: String,
    pub created: u64,
    pub last_used: Option<u64>,
    pub revoked: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InviteRecord {
    pub token_hash: String,
    pub email: Email,
    pub roles: Vec<Role>,
    pub created: u64,
    pub expires: u64,
    /// Who made it: a subject, or `cli` / `demo`.
    pub created_by: String,
    pub used_at: Option<u64>,
}

#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Readiness: can we reach the database?
    async fn ping(&self) -> Result<(), StoreError>;
    async fn count_users(&self) -> Result<u64, StoreError>;
    async fn user(&self, subject: &Subject) -> Result<Option<UserRecord>, StoreError>;
    async fn user_by_email(&self, email: &Email) -> Result<Option<UserRecord>, StoreError>;
    async fn credential(&self, id: &CredentialId) -> Result<Option<CredentialRecord>, StoreError>;
    async fn credentials_of(&self, subject: &Subject) -> Result<Vec<CredentialRecord>, StoreError>;
    async fn create_invite(&self, invite: &InviteRecord) -> Result<(), StoreError>;
    /// A usable (unused, unexpired) invite by token hash.
    async fn invite(&self, token_hash: &str, now: u64) -> Result<Option<InviteRecord>, StoreError>;
    /// Atomically: use the invite (single use), create the user, add the
    /// credential. Nothing is written if any step fails.
    async fn register_with_invite(
        &self,
        token_hash: &str,
        user: &UserRecord,
        credential: &CredentialRecord,
        now: u64,
    ) -> Result<(), StoreError>;
    /// After a successful assertion: new counter, backup state, last used.
    async fn record_use(
        &self,
        id: &CredentialId,
        sign_count: u32,
        backup_state: bool,
        now: u64,
    ) -> Result<(), StoreError>;
    /// Mark a challenge as used. `true` the first time, `false` on every
    /// later call for the same challenge, on any instance.
    async fn consume_challenge(
        &self,
        challenge: &[u8],
        expires: u64,
        now: u64,
    ) -> Result<bool, StoreError>;
}

pub type DynStore = Arc<dyn Store>;

/// Open the store named by a `store.url`, creating and migrating it.
pub async fn open(url: &str) -> Result<DynStore, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::open(url).await?))
    } else {
        // Only the scheme is echoed: the rest may carry a password.
        let scheme = url.split(':').next().unwrap_or_default();
        Err(StoreError::Other(format!(
            "store.url scheme {scheme:?} is not supported (use sqlite://PATH or postgres://…)"
        )))
    }
}

pub(crate) fn join(items: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    items
        .into_iter()
        .map(|s| s.as_ref().to_owned())
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) fn split_roles(s: &str) -> Vec<Role> {
    s.split(',')
        .filter(|r| !r.is_empty())
        .filter_map(|r| Role::parse(r).ok())
        .collect()
}

pub(crate) fn split(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
pub(crate) mod conformance;
