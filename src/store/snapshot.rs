//! The whole state of a store as one JSON document (`tapgate admin export`
//! / `import`): users (with their revocation epoch), credentials, invites
//! the revocation feed and the audit record, column for column, so SQLite and PostgreSQL
//! round-trip losslessly. Consumed challenges are left out on purpose: they
//! only live for a ceremony's few minutes, and a ceremony begun before the
//! move cannot finish after it anyway (its state is bound to the old store's
//! instances and expires).
//!
//! Byte strings (credential ids, public keys) are base64url without padding.

use super::{AuditEntry, CredentialRecord, InviteRecord, Revocation, Revoked, UserRecord};
use crate::model::{CredentialId, Email, Role, Subject};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};

/// The `format` every snapshot carries.
pub const FORMAT: &str = "tapgate-state";
/// The snapshot layout version this build writes. Version 1 (before the
/// audit record was stored) is still read: it simply has no audit events.
pub const VERSION: u32 = 2;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub format: String,
    pub version: u32,
    /// Ordered by subject.
    pub users: Vec<UserState>,
    /// Ordered by id (bytewise).
    pub credentials: Vec<CredentialState>,
    /// Ordered by token hash.
    pub invites: Vec<InviteState>,
    /// Ordered by seq; seq values are kept.
    pub revocations: Vec<RevocationState>,
    /// Ordered by seq. Imported after whatever the target already holds
    /// (into an empty target the seq values stay the same).
    #[serde(default)]
    pub audit: Vec<AuditEntry>,
}

impl Snapshot {
    pub fn new(
        users: Vec<UserState>,
        credentials: Vec<CredentialState>,
        invites: Vec<InviteState>,
        revocations: Vec<RevocationState>,
        audit: Vec<AuditEntry>,
    ) -> Snapshot {
        Snapshot {
            format: FORMAT.into(),
            version: VERSION,
            users,
            credentials,
            invites,
            revocations,
            audit,
        }
    }

    /// Refuse documents this build does not understand.
    pub fn check(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "not a tapgate state export (format {:?}, expected {FORMAT:?})",
                self.format
            ));
        }
        if !(1..=VERSION).contains(&self.version) {
            return Err(format!(
                "state export version {} is not supported (this tapgate reads versions 1 to {VERSION})",
                self.version
            ));
        }
        for c in &self.credentials {
            c.record()?;
        }
        for u in &self.users {
            u.record()?;
        }
        for i in &self.invites {
            i.record()?;
        }
        for r in &self.revocations {
            if r.epoch.is_some() == r.credential.is_some() {
                return Err(format!(
                    "revocation {}: exactly one of epoch and credential must be set",
                    r.seq
                ));
            }
        }
        let mut ids = std::collections::HashSet::new();
        for pair in self.audit.windows(2) {
            if pair[1].seq <= pair[0].seq {
                return Err(format!(
                    "audit events are not in seq order ({} after {})",
                    pair[1].seq, pair[0].seq
                ));
            }
        }
        for a in &self.audit {
            if !ids.insert(a.id.as_str()) {
                return Err(format!("audit event id {:?} appears twice", a.id));
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserState {
    pub subject: String,
    pub email: String,
    pub display_name: String,
    pub roles: Vec<String>,
    pub disabled: bool,
    pub created: u64,
    pub epoch: u64,
}

impl UserState {
    pub fn from_record(u: &UserRecord, epoch: u64) -> UserState {
        UserState {
            subject: u.subject.as_str().to_owned(),
            email: u.email.as_str().to_owned(),
            display_name: u.display_name.clone(),
            roles: u.roles.iter().map(|r| r.as_str().to_owned()).collect(),
            disabled: u.disabled,
            created: u.created,
            epoch,
        }
    }

    pub fn record(&self) -> Result<UserRecord, String> {
        Ok(UserRecord {
            subject: Subject(self.subject.clone()),
            email: Email(self.email.clone()),
            display_name: self.display_name.clone(),
            roles: self
                .roles
                .iter()
                .map(|r| Role::parse(r).map_err(|e| format!("user {}: role: {e}", self.email)))
                .collect::<Result<_, _>>()?,
            disabled: self.disabled,
            created: self.created,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialState {
    /// base64url
    pub id: String,
    pub subject: String,
    /// COSE_Key, base64url
    pub public_key: String,
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
    pub attestation_root: Option<String>,
}

impl CredentialState {
    pub fn from_record(c: &CredentialRecord) -> CredentialState {
        CredentialState {
            id: B64.encode(&c.id.0),
            subject: c.subject.as_str().to_owned(),
            public_key: B64.encode(&c.public_key),
            alg: c.alg,
            sign_count: c.sign_count,
            aaguid: c.aaguid.clone(),
            transports: c.transports.clone(),
            backup_eligible: c.backup_eligible,
            backup_state: c.backup_state,
            attestation_fmt: c.attestation_fmt.clone(),
            attested: c.attested,
            nickname: c.nickname.clone(),
            created: c.created,
            last_used: c.last_used,
            revoked: c.revoked,
            attestation_root: c.attestation_root.clone(),
        }
    }

    pub fn record(&self) -> Result<CredentialRecord, String> {
        let bytes = |what: &str, s: &str| {
            B64.decode(s)
                .map_err(|e| format!("credential {}: {what} is not base64url: {e}", self.id))
        };
        Ok(CredentialRecord {
            id: CredentialId(bytes("id", &self.id)?),
            subject: Subject(self.subject.clone()),
            public_key: bytes("public_key", &self.public_key)?,
            alg: self.alg,
            sign_count: self.sign_count,
            aaguid: self.aaguid.clone(),
            transports: self.transports.clone(),
            backup_eligible: self.backup_eligible,
            backup_state: self.backup_state,
            attestation_fmt: self.attestation_fmt.clone(),
            attested: self.attested,
            nickname: self.nickname.clone(),
            created: self.created,
            last_used: self.last_used,
            revoked: self.revoked,
            attestation_root: self.attestation_root.clone(),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InviteState {
    pub token_hash: String,
    pub email: String,
    pub roles: Vec<String>,
    pub created: u64,
    pub expires: u64,
    pub created_by: String,
    pub used_at: Option<u64>,
    pub used_by: Option<String>,
    pub subject: Option<String>,
    pub revoke_other_keys: bool,
    pub cancelled: Option<u64>,
}

impl InviteState {
    pub fn from_record(i: &InviteRecord) -> InviteState {
        InviteState {
            token_hash: i.token_hash.clone(),
            email: i.email.as_str().to_owned(),
            roles: i.roles.iter().map(|r| r.as_str().to_owned()).collect(),
            created: i.created,
            expires: i.expires,
            created_by: i.created_by.clone(),
            used_at: i.used_at,
            used_by: i.used_by.as_ref().map(|s| s.as_str().to_owned()),
            subject: i.subject.as_ref().map(|s| s.as_str().to_owned()),
            revoke_other_keys: i.revoke_other_keys,
            cancelled: i.cancelled,
        }
    }

    pub fn record(&self) -> Result<InviteRecord, String> {
        Ok(InviteRecord {
            token_hash: self.token_hash.clone(),
            email: Email(self.email.clone()),
            roles: self
                .roles
                .iter()
                .map(|r| {
                    Role::parse(r).map_err(|e| format!("invite for {}: role: {e}", self.email))
                })
                .collect::<Result<_, _>>()?,
            created: self.created,
            expires: self.expires,
            created_by: self.created_by.clone(),
            used_at: self.used_at,
            used_by: self.used_by.clone().map(Subject),
            subject: self.subject.clone().map(Subject),
            revoke_other_keys: self.revoke_other_keys,
            cancelled: self.cancelled,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationState {
    pub seq: u64,
    pub subject: String,
    /// Sessions whose epoch is below this are revoked…
    pub epoch: Option<u64>,
    /// …or sessions made with the credential of this digest.
    pub credential: Option<String>,
    pub time: u64,
}

impl RevocationState {
    pub fn from_record(r: &Revocation) -> RevocationState {
        let (epoch, credential) = match &r.what {
            Revoked::SessionsBefore(e) => (Some(*e), None),
            Revoked::Credential(c) => (None, Some(c.clone())),
        };
        RevocationState {
            seq: r.seq,
            subject: r.subject.as_str().to_owned(),
            epoch,
            credential,
            time: r.time,
        }
    }
}
