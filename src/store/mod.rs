//! The store: users, credentials, invites, single-use challenges and the
//! revocation feed. `Store` is the one interface; `sqlite.rs` is the
//! embedded default and `postgres.rs` the scale-out backend (same trait,
//! same conformance suite). Only this module contains SQL. The proxy hot
//! path never calls it: revocations reach it through the in-memory set that
//! `crate::revocation` refreshes from [`Store::revocations_since`].
//!
//! Every method that changes more than one record does so in one
//! transaction; every change that must end sessions writes its revocation
//! entry in that same transaction, so the feed never misses one.

mod postgres;
pub mod snapshot;
mod sqlite;

pub use postgres::PgStore;
pub use snapshot::Snapshot;
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
    /// Revoking this key would leave the user without any key.
    #[error("this is the user's last active key")]
    LastKey,
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
            // The SQLite file is locked by another writer (a backup, an
            // operator's open transaction) beyond the busy timeout: as
            // unavailable as a database server that is down.
            sqlx::Error::Database(db) if sqlite_busy(db.as_ref()) => {
                StoreError::Unavailable(e.to_string())
            }
            _ => StoreError::Other(e.to_string()),
        }
    }
}

/// SQLITE_BUSY (5) or SQLITE_LOCKED (6), in any of their extended forms
/// (the primary code is the low byte).
fn sqlite_busy(db: &dyn sqlx::error::DatabaseError) -> bool {
    db.try_downcast_ref::<sqlx::sqlite::SqliteError>()
        .and_then(sqlx::error::DatabaseError::code)
        .and_then(|c| c.parse::<i32>().ok())
        .is_some_and(|c| matches!(c & 0xff, 5 | 6))
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
    /// SHA-256 hex of the attestation root the credential chained to at
    /// registration (`None`: self or no attestation, or registered before
    /// roots were recorded).
    pub attestation_root: Option<String>,
}

impl CredentialRecord {
    pub fn is_active(&self) -> bool {
        self.revoked.is_none()
    }
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
    /// Who registered with it (the subject), once used.
    pub used_by: Option<Subject>,
    /// A recovery invite: registering with it adds a key to this existing
    /// user instead of creating one (`email` and `roles` are then the
    /// user's, for display only).
    pub subject: Option<Subject>,
    /// Recovery only: revoke the user's other keys when the new one is added.
    pub revoke_other_keys: bool,
    /// When an administrator cancelled it.
    pub cancelled: Option<u64>,
}

impl InviteRecord {
    /// A new, unused invite for a new user.
    pub fn new(
        token_hash: String,
        email: Email,
        roles: Vec<Role>,
        created: u64,
        expires: u64,
        created_by: &str,
    ) -> InviteRecord {
        InviteRecord {
            token_hash,
            email,
            roles,
            created,
            expires,
            created_by: created_by.to_owned(),
            used_at: None,
            used_by: None,
            subject: None,
            revoke_other_keys: false,
            cancelled: None,
        }
    }

    /// Unused, not cancelled and not expired at `now`.
    pub fn is_pending(&self, now: u64) -> bool {
        self.used_at.is_none() && self.cancelled.is_none() && self.expires > now
    }

    /// `pending`, `used`, `cancelled` or `expired` (for listings).
    pub fn state(&self, now: u64) -> &'static str {
        if self.used_at.is_some() {
            "used"
        } else if self.cancelled.is_some() {
            "cancelled"
        } else if self.expires <= now {
            "expired"
        } else {
            "pending"
        }
    }
}

/// A user with every key they ever registered (revoked ones included),
/// as listings need them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserKeys {
    pub user: UserRecord,
    /// The user's revocation epoch: sessions issued with a lower one are
    /// revoked.
    pub epoch: u64,
    pub credentials: Vec<CredentialRecord>,
}

impl UserKeys {
    pub fn active_keys(&self) -> usize {
        self.credentials.iter().filter(|c| c.is_active()).count()
    }
}

/// What a new session must carry about its user, read in one query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Standing {
    pub disabled: bool,
    /// The current revocation epoch (the session's `ep`).
    pub epoch: u64,
    /// Keys not revoked (the session's `nk`).
    pub active_keys: u32,
}

/// One entry of the revocation feed: either every session of `subject`
/// issued before `epoch`, or every session made with `credential`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// Increasing, gap-free in commit order: readers page with it.
    pub seq: u64,
    pub subject: Subject,
    pub what: Revoked,
    pub time: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revoked {
    /// Sessions whose `ep` is below this are revoked.
    SessionsBefore(u64),
    /// Sessions whose `cred` is this digest (`CredentialId::digest`).
    Credential(String),
}

/// One audit event as the store keeps it (issue 5: the events of every
/// instance in one ordered record). `record` is the event's JSON exactly as
/// it was logged; the other columns are copies for querying. A later issue
/// hash-chains the rows in `seq` order, which is why `seq` is gap-free and
/// follows commit order.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// Position in the one record; 0 until stored.
    pub seq: u64,
    /// Unique per event (process tag, trail, counter), so a batch retried after a
    /// lost commit acknowledgement is not stored twice.
    pub id: String,
    /// Unix milliseconds.
    pub time_ms: u64,
    pub instance: String,
    pub event: String,
    pub outcome: String,
    pub subject: Option<String>,
    pub record: String,
}

/// Signals that the revocation feed has new entries, pushed by the
/// database (PostgreSQL `LISTEN`) or by the store's own writes. Readers
/// still poll: a signal only makes them read sooner.
#[derive(Debug, Default)]
pub struct Changes {
    wake: tokio::sync::Notify,
    /// Whether pushed signals are flowing now (a PostgreSQL listener is
    /// connected). While not, readers poll at their fast rate.
    live: std::sync::atomic::AtomicBool,
}

impl Changes {
    /// Wake the reader (a stored permit if it is busy: nothing is missed).
    pub fn signal(&self) {
        self.wake.notify_one();
    }

    pub async fn wait(&self) {
        self.wake.notified().await;
    }

    pub fn is_live(&self) -> bool {
        self.live.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn set_live(&self, live: bool) {
        self.live.store(live, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What [`Store::add_key_with_invite`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    pub user: UserRecord,
    /// The keys revoked in the same transaction (recovery with
    /// `revoke_other_keys`).
    pub revoked: Vec<CredentialId>,
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

    // ---- lifecycle (issue 4) ----

    /// Every user with all their keys, ordered by email: two queries, not
    /// one per user.
    async fn users_with_keys(&self) -> Result<Vec<UserKeys>, StoreError>;
    /// One user with all their keys.
    async fn user_with_keys(&self, subject: &Subject) -> Result<Option<UserKeys>, StoreError>;
    /// What a session for `subject` must carry (epoch, active key count),
    /// and whether the user may have one at all.
    async fn standing(&self, subject: &Subject) -> Result<Option<Standing>, StoreError>;
    /// Add `grant` and remove `revoke` from the user's roles; removing a
    /// role the user had also ends their sessions (the roles live in the
    /// session). Returns the new roles. `NotFound` for an unknown user.
    async fn change_roles(
        &self,
        subject: &Subject,
        grant: &[Role],
        revoke: &[Role],
        now: u64,
    ) -> Result<Vec<Role>, StoreError>;
    /// Disable (ending every session) or enable a user. Returns whether
    /// anything changed.
    async fn set_disabled(
        &self,
        subject: &Subject,
        disabled: bool,
        now: u64,
    ) -> Result<bool, StoreError>;
    /// End every session of the user (bump the epoch). Returns the new epoch.
    async fn revoke_sessions(&self, subject: &Subject, now: u64) -> Result<u64, StoreError>;
    /// Add a key to an existing user (signed in with a recent tap).
    async fn add_credential(&self, credential: &CredentialRecord) -> Result<(), StoreError>;
    /// Rename one of the user's keys (`NotFound` if it is not theirs).
    async fn rename_credential(
        &self,
        subject: &Subject,
        id: &CredentialId,
        nickname: &str,
    ) -> Result<(), StoreError>;
    /// Revoke one of the user's keys: kept, marked, and its sessions end.
    /// `LastKey` if it is the only active key and `allow_last` is false;
    /// `NotFound` if it is not theirs. `false` if it was already revoked.
    async fn revoke_credential(
        &self,
        subject: &Subject,
        id: &CredentialId,
        allow_last: bool,
        now: u64,
    ) -> Result<bool, StoreError>;
    /// Every invite (used, expired and cancelled ones too), newest first.
    async fn invites(&self) -> Result<Vec<InviteRecord>, StoreError>;
    /// Cancel a pending invite. `NotFound` if it is not pending.
    async fn cancel_invite(&self, token_hash: &str, now: u64) -> Result<(), StoreError>;
    /// Atomically: use the recovery invite (bound to `credential.subject`),
    /// add the key, and, if the invite says so, revoke the user's other
    /// keys. `InviteUnavailable` if the invite is not a usable recovery
    /// invite for that user.
    async fn add_key_with_invite(
        &self,
        token_hash: &str,
        credential: &CredentialRecord,
        now: u64,
    ) -> Result<Recovered, StoreError>;
    /// Revocation feed entries after `after` (a `seq`), oldest first, at
    /// most `limit`.
    async fn revocations_since(
        &self,
        after: u64,
        limit: u32,
    ) -> Result<Vec<Revocation>, StoreError>;

    /// Where the feed signals new entries (see [`Changes`]).
    fn changes(&self) -> Arc<Changes>;

    // ---- audit (issue 5) ----

    /// Store a batch of events in one transaction, numbered after the
    /// newest (gap-free, in commit order, whichever instance writes).
    /// Events whose `id` is already stored are skipped: retrying a batch
    /// whose commit was not acknowledged stores nothing twice.
    async fn append_audit(&self, events: &[AuditEntry]) -> Result<(), StoreError>;
    /// Stored events after `after` (a `seq`), oldest first, at most `limit`.
    async fn audit_since(&self, after: u64, limit: u32) -> Result<Vec<AuditEntry>, StoreError>;

    // ---- export / import (issue 5) ----

    /// The schema version (the newest applied migration).
    async fn schema_version(&self) -> Result<i64, StoreError>;
    /// All state but consumed challenges, read from one consistent
    /// snapshot, in a stable order (see [`Snapshot`]).
    async fn export(&self) -> Result<Snapshot, StoreError>;
    /// Load `snapshot` in one transaction: all of it or nothing. A store
    /// that already holds users, invites or revocations is refused
    /// (`Other`) unless `replace`, which deletes them first in that same
    /// transaction. Revocation `seq` values are kept and the feed's
    /// sequence continues after the largest ever handed out (imported or
    /// not), so running instances miss no later entry.
    async fn import(&self, snapshot: &Snapshot, replace: bool) -> Result<(), StoreError>;
}

/// The refusal [`Store::import`] gives for a store that is not empty.
pub(crate) fn not_empty(users: i64, invites: i64, revocations: i64) -> StoreError {
    StoreError::Other(format!(
        "the target store is not empty ({users} users, {invites} invites, {revocations} \
         revocation entries); import replaces everything only with --force"
    ))
}

pub type DynStore = Arc<dyn Store>;

/// Open the store a configuration names (`store.url`, and for PostgreSQL
/// `store.password_file`), creating and migrating it.
pub async fn open_config(config: &crate::config::Config) -> Result<DynStore, StoreError> {
    open_with(
        &config.store_url,
        config.store_password.as_ref().map(|p| p.0.as_str()),
    )
    .await
}

/// Open the store named by a `store.url`, creating and migrating it.
pub async fn open(url: &str) -> Result<DynStore, StoreError> {
    open_with(url, None).await
}

async fn open_with(url: &str, password: Option<&str>) -> Result<DynStore, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::open_with(url, password).await?))
    } else {
        // Only the scheme is echoed: the rest may carry a password.
        let scheme = url.split(':').next().unwrap_or_default();
        Err(StoreError::Other(format!(
            "store.url scheme {scheme:?} is not supported (use sqlite://PATH or postgres://…)"
        )))
    }
}

/// Put each user's credentials beside them (the second half of the
/// two-query listing).
pub(crate) fn group(users: Vec<(UserRecord, u64)>, creds: Vec<CredentialRecord>) -> Vec<UserKeys> {
    let mut by_subject: std::collections::HashMap<Subject, Vec<CredentialRecord>> =
        std::collections::HashMap::new();
    for c in creds {
        by_subject.entry(c.subject.clone()).or_default().push(c);
    }
    users
        .into_iter()
        .map(|(user, epoch)| UserKeys {
            credentials: by_subject.remove(&user.subject).unwrap_or_default(),
            user,
            epoch,
        })
        .collect()
}

/// Apply a role change to a role list (sorted, without duplicates).
pub(crate) fn changed_roles(current: &[Role], grant: &[Role], revoke: &[Role]) -> Vec<Role> {
    let mut roles: Vec<Role> = current
        .iter()
        .chain(grant)
        .filter(|r| !revoke.contains(r))
        .cloned()
        .collect();
    roles.sort();
    roles.dedup();
    roles
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
