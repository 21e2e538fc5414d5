//! Administration: the actions behind `tapgate admin …` (CLI) and the
//! admin page's API (`api.rs`), written once. Each action is one store
//! call (one transaction) and one audit event naming the actor (`cli`, or
//! the administrator's subject) and the target.
//!
//! Lookups for people (by email, by key id or digest, by invite id prefix)
//! and the JSON shapes both front ends print live here too.

pub mod api;

use crate::audit::{Audit, AuditEvent, Outcome};
use crate::invite::NewInvite;
use crate::model::{CredentialId, Email, Role, Subject};
use crate::store::{CredentialRecord, InviteRecord, Store, StoreError, UserKeys, UserRecord};
use serde_json::{Value, json};
use std::time::Duration;

/// The longest an administrator's invite may stay valid.
pub const MAX_INVITE_TTL: Duration = Duration::from_secs(30 * 86400);
pub const MIN_INVITE_TTL: Duration = Duration::from_secs(60);

/// Who acts, with the request facts their events carry.
#[derive(Clone, Debug)]
pub struct Actor {
    name: String,
    base: AuditEvent,
}

impl Actor {
    /// The operator at the command line.
    pub fn cli() -> Actor {
        Actor {
            name: "cli".into(),
            base: AuditEvent::default(),
        }
    }

    /// A signed-in administrator; `base` holds the request's client facts.
    pub fn user(subject: &Subject, base: AuditEvent) -> Actor {
        Actor {
            name: subject.to_string(),
            base,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn event(&self, name: &'static str, target: String) -> AuditEvent {
        let mut ev = self.base.clone();
        ev.event = name;
        ev.outcome = Some(Outcome::Success);
        ev.actor = Some(self.name.clone());
        ev.target = Some(target);
        ev
    }

    fn about(&self, name: &'static str, user: &UserRecord) -> AuditEvent {
        let mut ev = self.event(name, format!("user {}", user.subject));
        ev.subject = Some(user.subject.to_string());
        ev.email = Some(user.email.to_string());
        ev
    }
}

/// The store, the audit log and who acts: what every action needs.
pub struct Admin<'a> {
    pub store: &'a dyn Store,
    pub audit: &'a Audit,
    pub actor: Actor,
}

impl Admin<'_> {
    /// Disable (every session ends within seconds) or enable a user.
    /// `false` if it already was so.
    pub async fn set_disabled(
        &self,
        user: &UserRecord,
        disabled: bool,
        now: u64,
    ) -> Result<bool, StoreError> {
        let changed = self
            .store
            .set_disabled(&user.subject, disabled, now)
            .await?;
        if changed {
            let name = if disabled {
                "user_disabled"
            } else {
                "user_enabled"
            };
            self.audit.record(self.actor.about(name, user));
        }
        Ok(changed)
    }

    /// End every session of the user. Returns the new epoch.
    pub async fn revoke_sessions(&self, user: &UserRecord, now: u64) -> Result<u64, StoreError> {
        let epoch = self.store.revoke_sessions(&user.subject, now).await?;
        let mut ev = self.actor.about("sessions_revoked", user);
        ev.detail = Some(format!("epoch {epoch}"));
        self.audit.record(ev);
        Ok(epoch)
    }

    /// Grant or take away one role (taking one away ends the user's
    /// sessions, which carry their roles). Returns the roles now held.
    pub async fn change_role(
        &self,
        user: &UserRecord,
        role: &Role,
        grant: bool,
        now: u64,
    ) -> Result<Vec<Role>, StoreError> {
        let one = std::slice::from_ref(role);
        let (g, r): (&[Role], &[Role]) = if grant { (one, &[]) } else { (&[], one) };
        let roles = self.store.change_roles(&user.subject, g, r, now).await?;
        if user.roles.contains(role) != grant {
            let name = if grant {
                "role_granted"
            } else {
                "role_revoked"
            };
            let mut ev = self.actor.about(name, user);
            ev.detail = Some(format!("role {role}"));
            self.audit.record(ev);
        }
        Ok(roles)
    }

    /// Revoke one key (kept, marked; its sessions end within seconds).
    /// `LastKey` unless `allow_last`; `false` if it was already revoked.
    pub async fn revoke_key(
        &self,
        user: &UserRecord,
        key: &CredentialRecord,
        allow_last: bool,
        now: u64,
    ) -> Result<bool, StoreError> {
        let done = self
            .store
            .revoke_credential(&user.subject, &key.id, allow_last, now)
            .await?;
        if done {
            let mut ev = self.actor.about("key_revoked", user);
            ev.credential = Some(key.id.digest());
            ev.target = Some(format!("key {}", key.id.digest()));
            self.audit.record(ev);
        }
        Ok(done)
    }

    /// A single-use invite for a new user.
    pub async fn invite(
        &self,
        public_origin: &str,
        email: Email,
        roles: Vec<Role>,
        ttl: Duration,
        now: u64,
    ) -> Result<NewInvite, StoreError> {
        let made = crate::invite::create(
            self.store,
            public_origin,
            email.clone(),
            roles.clone(),
            ttl,
            &self.actor.name,
            now,
        )
        .await?;
        let mut ev = self.actor.event("invite_created", invite_target(&made.id));
        ev.email = Some(email.to_string());
        ev.detail = Some(format!(
            "roles {}; expires in {}",
            roles_text(&roles),
            humantime::format_duration(ttl)
        ));
        self.audit.record(ev);
        Ok(made)
    }

    /// A recovery invite: adds a key to `user` (optionally revoking the
    /// others when it is used).
    pub async fn recovery_invite(
        &self,
        public_origin: &str,
        user: &UserRecord,
        revoke_other_keys: bool,
        ttl: Duration,
        now: u64,
    ) -> Result<NewInvite, StoreError> {
        let made = crate::invite::create_recovery(
            self.store,
            public_origin,
            user,
            revoke_other_keys,
            ttl,
            &self.actor.name,
            now,
        )
        .await?;
        let mut ev = self.actor.about("recovery_invite_created", user);
        ev.target = Some(invite_target(&made.id));
        ev.detail = Some(format!(
            "{}; expires in {}",
            if revoke_other_keys {
                "revokes the other keys when used"
            } else {
                "keeps the other keys"
            },
            humantime::format_duration(ttl)
        ));
        self.audit.record(ev);
        Ok(made)
    }

    /// Cancel a pending invite.
    pub async fn cancel_invite(&self, invite: &InviteRecord, now: u64) -> Result<(), StoreError> {
        self.store.cancel_invite(&invite.token_hash, now).await?;
        let mut ev = self
            .actor
            .event("invite_cancelled", invite_target(&invite.token_hash));
        ev.email = Some(invite.email.to_string());
        ev.subject = invite.subject.as_ref().map(Subject::to_string);
        self.audit.record(ev);
        Ok(())
    }
}

fn invite_target(id: &str) -> String {
    format!("invite {}", short_id(id))
}

/// The first 12 hex digits of an invite id: how people name it.
pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn roles_text(roles: &[Role]) -> String {
    if roles.is_empty() {
        "none".into()
    } else {
        roles.iter().map(Role::as_str).collect::<Vec<_>>().join(",")
    }
}

/// Parse an invite lifetime (`24h`, `15m`, `7d`) within the allowed range.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if (MIN_INVITE_TTL..=MAX_INVITE_TTL).contains(&d) => Ok(d),
        _ => Err(format!(
            "{text:?} must be a duration between 1m and 30d, like 24h"
        )),
    }
}

// ---- lookups ----

/// A user by email, with every key.
pub async fn user_by_email(
    store: &dyn Store,
    email: &Email,
) -> Result<Option<UserKeys>, StoreError> {
    match store.user_by_email(email).await? {
        Some(u) => store.user_with_keys(&u.subject).await,
        None => Ok(None),
    }
}

/// A key by its id (base64url, as the API uses it) or its digest (as
/// listings and the audit log show it), with its user.
pub async fn find_key(
    store: &dyn Store,
    key: &str,
) -> Result<Option<(UserKeys, CredentialRecord)>, StoreError> {
    if let Ok(raw) = tapgate_webauthn::base64url_decode(key)
        && !raw.is_empty()
        && let Some(c) = store.credential(&CredentialId(raw)).await?
        && let Some(u) = store.user_with_keys(&c.subject).await?
    {
        return Ok(Some((u, c)));
    }
    // A digest: keys are few, and the lookup is for people, not requests.
    for u in store.users_with_keys().await? {
        if let Some(c) = u.credentials.iter().find(|c| c.id.digest() == key).cloned() {
            return Ok(Some((u, c)));
        }
    }
    Ok(None)
}

/// Why an invite id prefix names no single invite.
#[derive(Debug, PartialEq, Eq)]
pub enum InviteLookup {
    NotFound,
    Ambiguous(usize),
}

/// An invite by its id or a unique prefix of it (at least 6 hex digits).
pub fn find_invite<'a>(
    invites: &'a [InviteRecord],
    id: &str,
) -> Result<&'a InviteRecord, InviteLookup> {
    let id = id.trim().to_ascii_lowercase();
    if id.len() < 6 {
        return Err(InviteLookup::NotFound);
    }
    let hits: Vec<&InviteRecord> = invites
        .iter()
        .filter(|i| i.token_hash.starts_with(&id))
        .collect();
    match hits.as_slice() {
        [one] => Ok(one),
        [] => Err(InviteLookup::NotFound),
        many => Err(InviteLookup::Ambiguous(many.len())),
    }
}

// ---- what listings show ----

pub fn user_json(u: &UserKeys) -> Value {
    json!({
        "subject": u.user.subject,
        "email": u.user.email,
        "display_name": u.user.display_name,
        "roles": u.user.roles,
        "disabled": u.user.disabled,
        "created": u.user.created,
        "epoch": u.epoch,
        "active_keys": u.active_keys(),
        "keys": u.credentials.iter().map(|c| crate::login::account::key_json(c, None)).collect::<Vec<_>>(),
    })
}

pub fn invite_json(i: &InviteRecord, now: u64) -> Value {
    json!({
        "id": i.token_hash,
        "short_id": short_id(&i.token_hash),
        "email": i.email,
        "roles": i.roles,
        "state": i.state(now),
        "created": i.created,
        "expires": i.expires,
        "created_by": i.created_by,
        "used_at": i.used_at,
        "used_by": i.used_by,
        "cancelled": i.cancelled,
        "recovery_for": i.subject,
        "revoke_other_keys": i.revoke_other_keys,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(hash: &str) -> InviteRecord {
        InviteRecord::new(
            hash.into(),
            Email::parse("a@example.com").unwrap(),
            vec![],
            1,
            2,
            "cli",
        )
    }

    #[test]
    fn invites_are_found_by_a_unique_prefix() {
        let all = [inv("abcdef0011"), inv("abcdef0022"), inv("123456ff")];
        assert_eq!(
            find_invite(&all, "ABCDEF0011").unwrap().token_hash,
            "abcdef0011"
        );
        assert_eq!(find_invite(&all, "123456").unwrap().token_hash, "123456ff");
        assert_eq!(find_invite(&all, "abcdef"), Err(InviteLookup::Ambiguous(2)));
        assert_eq!(
            find_invite(&all, "12345"),
            Err(InviteLookup::NotFound),
            "too short"
        );
        assert_eq!(find_invite(&all, "999999"), Err(InviteLookup::NotFound));
    }

    #[test]
    fn invite_lifetimes_are_bounded() {
        assert_eq!(parse_ttl("24h").unwrap(), Duration::from_secs(86400));
        assert!(parse_ttl("1s").is_err());
        assert!(parse_ttl("31d").is_err());
        assert!(parse_ttl("soon").is_err());
    }
}
