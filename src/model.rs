//! The nouns of tapgate. Types carry meaning so that a subject is never
//! confused with an email, or a role with a route.
//!
//! No IO here; everything is plain data.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A stable, opaque user identifier (the `sub` claim). Random at creation,
/// never reused, never derived from the email (emails change).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Subject(pub String);

impl Subject {
    /// A fresh random subject: `u_` + 16 random bytes, base64url.
    pub fn generate() -> Subject {
        Subject(format!("u_{}", crate::crypto::random_token(16)))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A WebAuthn credential id (raw bytes; base64url on the wire).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CredentialId(pub Vec<u8>);

impl CredentialId {
    pub fn to_base64url(&self) -> String {
        tapgate_webauthn::base64url(&self.0)
    }
    /// A short, non-reversible tag for logs and the `cred` claim:
    /// base64url of the first 12 bytes of SHA-256(id).
    pub fn digest(&self) -> String {
        let d = crate::crypto::sha256(&self.0);
        tapgate_webauthn::base64url(&d[..12])
    }
}

impl fmt::Debug for CredentialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CredentialId({})", self.to_base64url())
    }
}

/// A role name as configured (`admin`, `member`, …). Lower-case ASCII,
/// digits, `-`, `_`, `.`; validated where it enters (config, invites).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Role(pub String);

impl Role {
    pub fn parse(s: &str) -> Result<Role, String> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
            });
        if ok {
            Ok(Role(s.to_owned()))
        } else {
            Err(format!(
                "role {s:?} is not valid: use 1-64 lower-case letters, digits, '-', '_' or '.'"
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An email address, lower-cased. Only loosely checked: the directory or
/// the admin who typed it is the authority, we only refuse obvious junk.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Email(pub String);

impl Email {
    pub fn parse(s: &str) -> Result<Email, String> {
        let s = s.trim();
        let valid = s.len() <= 254
            && s.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
            })
            && !s
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == ',');
        if valid {
            Ok(Email(s.to_lowercase()))
        } else {
            Err(format!(
                "{s:?} is not an email address like name@example.com"
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(_, d)| d)
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How presence was proven at the last tap: carried in the session so that
/// route decisions need no lookup, and sent upstream in the `authn` claim.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthnFacts {
    /// User verification (PIN, biometric) was performed.
    pub uv: bool,
    /// The credential is backup-eligible (a synced passkey).
    pub synced: bool,
    /// The credential was registered with a verifiable attestation.
    pub attested: bool,
    /// The authenticator model (AAGUID, hyphenated hex; all zeros if unknown).
    pub aaguid: String,
    /// SHA-256 (hex) of the attestation root the credential chained to at
    /// registration, if any: what `credentials = "hardware"` checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
}

impl AuthnFacts {
    /// RFC 8176 `amr` values for this proof.
    pub fn amr(&self) -> Vec<&'static str> {
        let mut amr = Vec::with_capacity(3);
        amr.push(if self.synced { "swk" } else { "hwk" });
        amr.push("user");
        if self.uv {
            // A PIN or biometric gate on the key: multi-factor.
            amr.push("mfa");
        }
        amr
    }
}

/// Who is making a request, as proven by a verified session token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub subject: Subject,
    pub email: Email,
    pub roles: Vec<Role>,
    /// Unix seconds of the last WebAuthn tap.
    pub auth_time: u64,
    /// `CredentialId::digest()` of the credential that tapped.
    pub cred: String,
    pub authn: AuthnFacts,
    /// Active keys the user had when the session was issued (`nk`), for
    /// `min_keys` rules. Ceremonies leave it 0: the store's count is what
    /// goes into the token.
    pub keys: u32,
}

impl Principal {
    pub fn has_role(&self, role: &Role) -> bool {
        self.roles.iter().any(|r| r == role)
    }
    pub fn roles_csv(&self) -> String {
        let mut s = String::new();
        for (i, r) in self.roles.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(r.as_str());
        }
        s
    }
}

/// Format a 16-byte AAGUID the usual way (8-4-4-4-12 hex).
pub fn format_aaguid(a: &[u8; 16]) -> String {
    let h: String = a.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Parse a hyphenated (or plain) hex AAGUID.
pub fn parse_aaguid(s: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = s.bytes().filter(|b| *b != b'-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_restricted_to_a_safe_alphabet() {
        assert!(Role::parse("admin").is_ok());
        assert!(Role::parse("team.deploy-prod_2").is_ok());
        assert!(Role::parse("").is_err());
        assert!(Role::parse("Admin").is_err());
        assert!(Role::parse("a,b").is_err());
    }

    #[test]
    fn emails_are_lowercased_and_junk_refused() {
        assert_eq!(
            Email::parse(" Ann@Example.COM ").unwrap().as_str(),
            "ann@example.com"
        );
        assert_eq!(
            Email::parse("ann@example.com").unwrap().domain(),
            "example.com"
        );
        for bad in [
            "",
            "ann",
            "@example.com",
            "ann@localhost",
            "a b@example.com",
            "a@b.com,c@d.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn amr_reflects_uv_and_sync() {
        let hw = AuthnFacts {
            uv: true,
            synced: false,
            attested: true,
            aaguid: String::new(),
            root: None,
        };
        assert_eq!(hw.amr(), vec!["hwk", "user", "mfa"]);
        let synced = AuthnFacts {
            uv: false,
            synced: true,
            ..Default::default()
        };
        assert_eq!(synced.amr(), vec!["swk", "user"]);
    }

    #[test]
    fn aaguid_format() {
        let mut a = [0u8; 16];
        a[0] = 0xcb;
        a[15] = 0x01;
        assert_eq!(format_aaguid(&a), "cb000000-0000-0000-0000-000000000001");
        assert_eq!(
            parse_aaguid("cb000000-0000-0000-0000-000000000001"),
            Some(a)
        );
        assert_eq!(parse_aaguid("cb00"), None);
        assert_eq!(parse_aaguid("zz000000-0000-0000-0000-000000000001"), None);
    }
}
