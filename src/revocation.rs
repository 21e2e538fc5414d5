//! Revoked sessions, known to every instance within about a second, while
//! the session check itself stays stateless (no store access per request).
//!
//! A session token carries its user's revocation epoch (`ep`) and the
//! digest of the key that made it (`cred`). The store keeps a feed of
//! revocations — "sessions of user U below epoch E" (disable, sign out
//! everywhere, a role taken away) and "sessions made with key K" (a key
//! revoked). Each instance holds the feed as a small in-memory
//! [`Revocations`] set, swapped atomically by [`refresh`] as soon as the
//! store signals a new entry (PostgreSQL `NOTIFY`; see `store::Changes`)
//! and at least once per [`REFRESH_EVERY`] (no signals) or
//! [`FALLBACK_EVERY`] (signals flowing), and `gate::presented` looks every
//! session up in it:
//! two hash lookups after the cached signature check.
//!
//! Entries are dropped from memory once every session they could revoke
//! has expired anyway (`retention`): the set stays as small as the number
//! of revocations within one session lifetime.
//!
//! [`Revocations`] is plain data (no IO, time passed in); [`refresh`] is
//! the only part that reads the store.

use crate::model::Subject;
use crate::store::{Revocation, Revoked, Store, StoreError};
use crate::token::SessionClaims;
use std::collections::HashMap;
use std::time::Duration;

/// How often each instance reads the feed when the store does not push
/// change signals (SQLite; PostgreSQL while its listener reconnects). A
/// revocation then reaches every instance within this plus one store
/// round trip.
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// How often each instance reads the feed anyway while the store pushes
/// change signals (PostgreSQL `LISTEN`/`NOTIFY`, which delivers a
/// revocation within milliseconds of its commit).
pub const FALLBACK_EVERY: Duration = Duration::from_secs(5);

/// One feed read is bounded in time: a hung store must not stall the
/// refresher (it keeps the last known set and tries again).
const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// Feed entries read per query.
const PAGE: u32 = 1000;

/// Why a session is refused although its signature is good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The user's sessions were ended (disabled, signed out everywhere,
    /// a role taken away).
    Sessions,
    /// The key that made the session was revoked.
    Credential,
}

/// The revocations every instance knows: the minimum valid epoch per user
/// and the revoked key digests, each with the time it was recorded.
#[derive(Clone, Debug, Default)]
pub struct Revocations {
    /// subject → (minimum valid epoch, when recorded)
    epochs: HashMap<Subject, (u64, u64)>,
    /// credential digest → when recorded
    credentials: HashMap<String, u64>,
    /// The last feed `seq` applied.
    seq: u64,
    /// When old entries were last dropped.
    pruned: u64,
}

impl Revocations {
    /// `Some(why)` if the session was revoked.
    pub fn check(&self, claims: &SessionClaims) -> Option<Refused> {
        if let Some((min, _)) = self.epochs.get(&claims.sub)
            && claims.ep < *min
        {
            return Some(Refused::Sessions);
        }
        if self.credentials.contains_key(&claims.cred) {
            return Some(Refused::Credential);
        }
        None
    }

    /// The last feed entry applied (read the feed after it).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn len(&self) -> usize {
        self.epochs.len() + self.credentials.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy with `entries` (in feed order) applied, and everything older
    /// than `retention` before `now` dropped: every session issued before
    /// such an entry has expired (a session lives at most `session.ttl`
    /// plus the verification leeway).
    pub fn with(&self, entries: &[Revocation], now: u64, retention: Duration) -> Revocations {
        let mut next = self.clone();
        for e in entries {
            match &e.what {
                Revoked::SessionsBefore(epoch) => {
                    let slot = next.epochs.entry(e.subject.clone()).or_insert((0, 0));
                    // Epochs only grow; a replayed or reordered entry never
                    // lowers the bar.
                    if *epoch >= slot.0 {
                        *slot = (*epoch, e.time);
                    }
                }
                Revoked::Credential(digest) => {
                    next.credentials.insert(digest.clone(), e.time);
                }
            }
            next.seq = next.seq.max(e.seq);
        }
        let horizon = now.saturating_sub(retention.as_secs());
        next.epochs.retain(|_, (_, time)| *time >= horizon);
        next.credentials.retain(|_, time| *time >= horizon);
        next.pruned = now;
        next
    }
}

/// How long a feed entry matters: the longest a session issued before it
/// can still be accepted (lifetime, leeway, and a minute of clock skew
/// between the instance that issued it and this one).
pub fn retention(session_ttl: Duration) -> Duration {
    session_ttl + Duration::from_secs(crate::token::LEEWAY_SECS + 60)
}

/// Whether the last read of the feed failed: an outage is logged once
/// when it starts and once when it ends, not every second.
#[derive(Debug, Default)]
pub struct FeedHealth {
    failing: std::sync::atomic::AtomicBool,
}

/// Read the feed after the current set's `seq` and swap in the new set.
/// On a store failure the last known set stays in force and the next call
/// retries. Returns the number of entries applied.
pub async fn refresh(
    store: &dyn Store,
    current: &arc_swap::ArcSwap<Revocations>,
    health: &FeedHealth,
    now: u64,
    retention: Duration,
) -> Result<usize, StoreError> {
    use std::sync::atomic::Ordering;
    let result = read_feed(store, current.load().seq()).await;
    match result {
        Ok(entries) => {
            if health.failing.swap(false, Ordering::Relaxed) {
                tracing::info!("revocation feed readable again; revocations are current");
            }
            let set = current.load();
            // Prune at least once a minute even when nothing new arrives.
            let stale = !set.is_empty() && now >= set.pruned + 60;
            if !entries.is_empty() || stale {
                current.store(std::sync::Arc::new(set.with(&entries, now, retention)));
            }
            if !entries.is_empty() {
                tracing::debug!(
                    entries = entries.len(),
                    seq = current.load().seq(),
                    "revocations applied"
                );
            }
            Ok(entries.len())
        }
        Err(e) => {
            if !health.failing.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    error = %e,
                    "cannot read the revocation feed; keeping the last known revocations and retrying every second"
                );
            }
            Err(e)
        }
    }
}

async fn read_feed(store: &dyn Store, after: u64) -> Result<Vec<Revocation>, StoreError> {
    let mut all = Vec::new();
    let mut after = after;
    loop {
        let page = tokio::time::timeout(READ_TIMEOUT, store.revocations_since(after, PAGE))
            .await
            .map_err(|_| {
                StoreError::Unavailable("reading the revocation feed timed out".into())
            })??;
        let full = page.len() == PAGE as usize;
        if let Some(last) = page.last() {
            after = last.seq;
        }
        all.extend(page);
        if !full {
            return Ok(all);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AuthnFacts, Email};

    fn claims(sub: &str, ep: u64, cred: &str) -> SessionClaims {
        SessionClaims {
            iss: "i".into(),
            aud: "a".into(),
            sub: Subject(sub.into()),
            email: Email::parse("a@example.com").unwrap(),
            roles: vec![],
            iat: 1_000,
            exp: 4_600,
            auth_time: 1_000,
            cred: cred.into(),
            authn: AuthnFacts::default(),
            sid: "s".into(),
            ep,
            nk: 1,
        }
    }

    fn entry(seq: u64, sub: &str, what: Revoked, time: u64) -> Revocation {
        Revocation {
            seq,
            subject: Subject(sub.into()),
            what,
            time,
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn sessions_below_the_epoch_and_of_revoked_keys_are_refused() {
        let set = Revocations::default().with(
            &[
                entry(1, "u_ann", Revoked::SessionsBefore(2), 1_000),
                entry(2, "u_bob", Revoked::Credential("k_bob".into()), 1_001),
            ],
            1_001,
            HOUR,
        );
        assert_eq!(set.seq(), 2);
        assert_eq!(
            set.check(&claims("u_ann", 1, "k1")),
            Some(Refused::Sessions)
        );
        assert_eq!(set.check(&claims("u_ann", 2, "k1")), None, "issued after");
        assert_eq!(
            set.check(&claims("u_bob", 0, "k_bob")),
            Some(Refused::Credential)
        );
        assert_eq!(set.check(&claims("u_bob", 0, "k_bob2")), None);
        assert_eq!(set.check(&claims("u_cid", 0, "k_cid")), None);
        // The original is untouched: sets are swapped, never edited.
        assert!(Revocations::default().is_empty());
    }

    #[test]
    fn epochs_never_go_down() {
        let set = Revocations::default().with(
            &[
                entry(1, "u_ann", Revoked::SessionsBefore(3), 1_000),
                entry(2, "u_ann", Revoked::SessionsBefore(2), 1_000),
            ],
            1_000,
            HOUR,
        );
        assert_eq!(set.check(&claims("u_ann", 2, "k")), Some(Refused::Sessions));
    }

    #[test]
    fn entries_older_than_a_session_lifetime_are_forgotten() {
        let set = Revocations::default().with(
            &[
                entry(1, "u_ann", Revoked::SessionsBefore(1), 1_000),
                entry(2, "u_bob", Revoked::Credential("k".into()), 1_000),
                entry(3, "u_cid", Revoked::SessionsBefore(1), 4_000),
            ],
            4_000,
            HOUR,
        );
        assert_eq!(set.len(), 3);
        let later = set.with(&[], 1_000 + 3_601, HOUR);
        assert_eq!(later.len(), 1, "only u_cid's is recent enough");
        assert_eq!(later.seq(), 3, "the feed position is kept");
        assert_eq!(
            later.check(&claims("u_cid", 0, "x")),
            Some(Refused::Sessions)
        );
    }

    #[test]
    fn retention_covers_lifetime_leeway_and_skew() {
        assert_eq!(
            retention(HOUR),
            HOUR + Duration::from_secs(crate::token::LEEWAY_SECS + 60)
        );
    }

    #[tokio::test]
    async fn refresh_pages_through_the_feed_and_keeps_the_set_when_the_store_fails() {
        let store = crate::store::SqliteStore::memory().await.unwrap();
        let current = arc_swap::ArcSwap::from_pointee(Revocations::default());
        let health = FeedHealth::default();
        assert_eq!(
            refresh(&store, &current, &health, 1_000, HOUR)
                .await
                .unwrap(),
            0
        );
        crate::store::conformance::lifecycle(&store).await;
        let n = refresh(&store, &current, &health, 1_000, HOUR)
            .await
            .unwrap();
        assert!(n > 0);
        assert_eq!(
            refresh(&store, &current, &health, 1_001, HOUR)
                .await
                .unwrap(),
            0,
            "nothing new"
        );
        let seq = current.load().seq();
        assert_eq!(
            seq,
            store
                .revocations_since(0, 1000)
                .await
                .unwrap()
                .last()
                .unwrap()
                .seq
        );
        // An outage: a store whose connections are gone.
        let failing = crate::store::SqliteStore::memory().await.unwrap();
        failing.close().await;
        assert!(
            refresh(&failing, &current, &health, 1_002, HOUR)
                .await
                .is_err()
        );
        assert!(health.failing.load(std::sync::atomic::Ordering::Relaxed));
        assert_eq!(current.load().seq(), seq, "last known set kept");
        refresh(&store, &current, &health, 1_003, HOUR)
            .await
            .unwrap();
        assert!(!health.failing.load(std::sync::atomic::Ordering::Relaxed));
    }
}
