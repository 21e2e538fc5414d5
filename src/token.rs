//! Signed tokens: sessions (cookie or bearer), ceremony state (between
//! `options` and `verify`) and identity assertions for the upstream. All are
//! ES256 JWTs from one key ring, told apart by the `typ` header *and* the
//! audience, so that no token of one kind is ever accepted as another (an
//! upstream that receives an assertion must not be able to replay it to us
//! as a session).
//!
//! No IO, no clock: `now` (Unix seconds) is passed in.

use crate::model::{AuthnFacts, Email, Principal, Role, Subject};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::collections::HashMap;

pub const SESSION_TYP: &str = "tapgate-session+jwt";
pub const CEREMONY_TYP: &str = "tapgate-ceremony+jwt";
pub const ASSERTION_TYP: &str = "JWT";
/// Audience of session tokens: only tapgate itself consumes them.
pub const SESSION_AUD: &str = "tapgate-session";
pub const CEREMONY_AUD: &str = "tapgate-ceremony";
/// Clock skew tolerated between instances (and the upstream).
pub const LEEWAY_SECS: u64 = 30;

#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token is malformed or its signature does not verify")]
    Invalid,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (clock skew?)")]
    NotYetValid,
    #[error("the token was signed by a key this server does not know")]
    UnknownKey,
    #[error("the token is of the wrong kind for this use")]
    WrongKind,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the signing key is not a PEM-encoded PKCS#8 P-256 private key: {0}")]
    Parse(String),
}

/// One P-256 signing key with its key id.
pub struct SigningKey {
    pub kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// Public point coordinates, base64url, for the JWKS.
    x: String,
    y: String,
}

impl SigningKey {
    /// A new random key, as PKCS#8 PEM (for `tapgate keygen` and the demo).
    pub fn generate_pem() -> String {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        // Key generation only fails if the system RNG fails; nothing to recover.
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("P-256 key generation failed (system RNG unavailable?)");
        pem::encode(&pem::Pem::new("PRIVATE KEY", doc.as_ref().to_vec()))
    }

    pub fn from_pem(pem_text: &str) -> Result<SigningKey, KeyError> {
        let parsed = pem::parse(pem_text.trim()).map_err(|e| KeyError::Parse(e.to_string()))?;
        if parsed.tag() != "PRIVATE KEY" {
            return Err(KeyError::Parse(format!(
                "expected a \"PRIVATE KEY\" (PKCS#8) block, found {:?}",
                parsed.tag()
            )));
        }
        let der = parsed.contents();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|e| KeyError::Parse(e.to_string()))?;
        let public = pair.public_key().as_ref();
        // Uncompressed SEC1 point: 0x04 || X (32) || Y (32).
        if public.len() != 65 || public[0] != 4 {
            return Err(KeyError::Parse("unexpected public key encoding".into()));
        }
        let x = tapgate_webauthn::base64url(&public[1..33]);
        let y = tapgate_webauthn::base64url(&public[33..65]);
        // RFC 7638 thumbprint (required members in lexicographic order).
        let thumb_input = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid = tapgate_webauthn::base64url(&crate::crypto::sha256(thumb_input.as_bytes())[..16]);
        let decoding =
            DecodingKey::from_ec_components(&x, &y).map_err(|e| KeyError::Parse(e.to_string()))?;
        Ok(SigningKey {
            kid,
            encoding: EncodingKey::from_ec_der(der),
            decoding,
            x,
            y,
        })
    }

    fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "EC", "crv": "P-256", "x": self.x, "y": self.y,
            "kid": self.kid, "use": "sig", "alg": "ES256",
        })
    }
}

/// The active signing key plus any older keys still accepted for
/// verification (rotation: publish the new key, then switch).
pub struct KeyRing {
    active: SigningKey,
    retired: Vec<SigningKey>,
    issuer: String,
}

impl KeyRing {
    pub fn new(active: SigningKey, retired: Vec<SigningKey>, issuer: String) -> KeyRing {
        KeyRing {
            active,
            retired,
            issuer,
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The JWK Set published at `/.tapgate/jwks.json`.
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<_> = std::iter::once(&self.active)
            .chain(&self.retired)
            .map(SigningKey::jwk)
            .collect();
        serde_json::json!({ "keys": keys })
    }

    fn key(&self, kid: &str) -> Option<&SigningKey> {
        std::iter::once(&self.active)
            .chain(&self.retired)
            .find(|k| k.kid == kid)
    }

    fn sign<T: Serialize>(&self, typ: &str, claims: &T) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some(typ.to_owned());
        header.kid = Some(self.active.kid.clone());
        // Signing with a key that parsed at start-up and claims that
        // serialize (plain structs) cannot fail.
        jsonwebtoken::encode(&header, claims, &self.active.encoding).expect("ES256 signing failed")
    }

    fn verify<T: DeserializeOwned + Timed>(
        &self,
        token: &str,
        typ: &str,
        aud: &str,
        now: u64,
    ) -> Result<T, TokenError> {
        if token.len() > 8192 {
            return Err(TokenError::Invalid);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        // The algorithm is pinned: `alg: none`, HS256 with the public key as
        // secret and other confusions are refused here and by Validation.
        if header.alg != Algorithm::ES256 {
            return Err(TokenError::Invalid);
        }
        if header.typ.as_deref() != Some(typ) {
            return Err(TokenError::WrongKind);
        }
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let key = self.key(&kid).ok_or(TokenError::UnknownKey)?;
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&[aud]);
        v.set_issuer(&[&self.issuer]);
        // Time is checked below against the `now` we were given.
        v.validate_exp = false;
        v.required_spec_claims = ["exp", "iat", "aud", "iss"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let data =
            jsonwebtoken::decode::<T>(token, &key.decoding, &v).map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidAudience
                | jsonwebtoken::errors::ErrorKind::InvalidIssuer => TokenError::WrongKind,
                _ => TokenError::Invalid,
            })?;
        let claims = data.claims;
        if claims.exp().saturating_add(LEEWAY_SECS) <= now {
            return Err(TokenError::Expired);
        }
        if claims.iat() > now.saturating_add(LEEWAY_SECS) {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }

    // ---- sessions ----

    /// A session for `principal`, carrying the user's revocation `epoch`
    /// and active key count as they are now (from the store, read by the
    /// caller: see `login::start_session`).
    pub fn issue_session(
        &self,
        principal: &Principal,
        epoch: u64,
        keys: u32,
        now: u64,
        ttl_secs: u64,
    ) -> (String, SessionClaims) {
        let claims = SessionClaims {
            iss: self.issuer.clone(),
            aud: SESSION_AUD.into(),
            sub: principal.subject.clone(),
            email: principal.email.clone(),
            roles: principal.roles.clone(),
            iat: now,
            exp: now + ttl_secs,
            auth_time: principal.auth_time,
            cred: principal.cred.clone(),
            authn: principal.authn.clone(),
            sid: crate::crypto::random_token(12),
            ep: epoch,
            nk: keys,
        };
        (self.sign(SESSION_TYP, &claims), claims)
    }

    pub fn verify_session(&self, token: &str, now: u64) -> Result<SessionClaims, TokenError> {
        self.verify(token, SESSION_TYP, SESSION_AUD, now)
    }

    // ---- ceremony state ----

    pub fn seal_ceremony(&self, state: &CeremonyState) -> String {
        self.sign(CEREMONY_TYP, state)
    }

    pub fn open_ceremony(&self, token: &str, now: u64) -> Result<CeremonyState, TokenError> {
        let state: CeremonyState = self.verify(token, CEREMONY_TYP, CEREMONY_AUD, now)?;
        // No leeway for ceremonies: the challenge lifetime is the contract.
        if state.exp <= now {
            return Err(TokenError::Expired);
        }
        Ok(state)
    }

    // ---- upstream assertions ----

    pub fn issue_assertion(
        &self,
        session: &SessionClaims,
        audience: &str,
        now: u64,
        ttl_secs: u64,
    ) -> String {
        let claims = AssertionClaims {
            iss: &self.issuer,
            aud: audience,
            sub: &session.sub,
            email: &session.email,
            roles: &session.roles,
            iat: now,
            exp: now + ttl_secs.min(crate::config::MAX_ASSERTION_TTL.as_secs()),
            auth_time: session.auth_time,
            amr: session.authn.amr(),
            cred: &session.cred,
            authn: &session.authn,
        };
        self.sign(ASSERTION_TYP, &claims)
    }

    /// Verify an assertion as an upstream would (used by the echo app and
    /// tests; upstreams use any JWT library with the JWKS).
    pub fn verify_assertion(
        &self,
        token: &str,
        audience: &str,
        now: u64,
    ) -> Result<serde_json::Value, TokenError> {
        #[derive(Deserialize)]
        struct Any {
            exp: u64,
            iat: u64,
            #[serde(flatten)]
            rest: serde_json::Map<String, serde_json::Value>,
        }
        impl Timed for Any {
            fn exp(&self) -> u64 {
                self.exp
            }
            fn iat(&self) -> u64 {
                self.iat
            }
        }
        let any: Any = self.verify(token, ASSERTION_TYP, audience, now)?;
        let mut map = any.rest;
        map.insert("exp".into(), any.exp.into());
        map.insert("iat".into(), any.iat.into());
        Ok(serde_json::Value::Object(map))
    }
}

trait Timed {
    fn exp(&self) -> u64;
    fn iat(&self) -> u64;
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionClaims {
    pub iss: String,
    pub aud: String,
    pub sub: Subject,
    pub email: Email,
    pub roles: Vec<Role>,
    pub iat: u64,
    pub exp: u64,
    pub auth_time: u64,
    pub cred: String,
    pub authn: AuthnFacts,
    /// Session id: names this session in logs.
    pub sid: String,
    /// The user's revocation epoch when this session was issued: a session
    /// whose `ep` is below the user's current one is revoked (see
    /// `crate::revocation`). Absent in tokens from before epochs: 0.
    #[serde(default)]
    pub ep: u64,
    /// How many active keys the user had when this session was issued
    /// (re-issued when they add or revoke one), so that a route can ask for
    /// a backup key without a lookup.
    #[serde(default)]
    pub nk: u32,
}

impl Timed for SessionClaims {
    fn exp(&self) -> u64 {
        self.exp
    }
    fn iat(&self) -> u64 {
        self.iat
    }
}

impl SessionClaims {
    pub fn principal(&self) -> Principal {
        Principal {
            subject: self.sub.clone(),
            email: self.email.clone(),
            roles: self.roles.clone(),
            auth_time: self.auth_time,
            cred: self.cred.clone(),
            authn: self.authn.clone(),
            keys: self.nk,
        }
    }
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a Subject,
    email: &'a Email,
    roles: &'a [Role],
    iat: u64,
    exp: u64,
    auth_time: u64,
    amr: Vec<&'static str>,
    cred: &'a str,
    authn: &'a AuthnFacts,
}

/// What a ceremony needs to remember between `options` and `verify`.
/// Signed (not encrypted): it holds nothing secret — the invite token is
/// only present as its hash.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CeremonyState {
    pub iss: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
    pub kind: CeremonyKind,
    /// The challenge, base64url.
    pub challenge: String,
    /// Registration: the user being registered (new or existing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<Subject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Email>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<Role>,
    /// Registration from an invite: SHA-256 hex of the invite token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite: Option<String>,
    /// Login: where to go afterwards (already checked to be same-origin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rd: Option<String>,
}

impl Timed for CeremonyState {
    fn exp(&self) -> u64 {
        self.exp
    }
    fn iat(&self) -> u64 {
        self.iat
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum CeremonyKind {
    Register,
    Login,
    /// A key added to an existing user: from a signed-in session (with a
    /// recent tap), or from a recovery invite (`invite` is then set).
    AddKey,
}

impl CeremonyState {
    pub fn new(
        ring: &KeyRing,
        kind: CeremonyKind,
        challenge: &[u8],
        now: u64,
        ttl_secs: u64,
    ) -> CeremonyState {
        CeremonyState {
            iss: ring.issuer.clone(),
            aud: CEREMONY_AUD.into(),
            iat: now,
            exp: now + ttl_secs,
            kind,
            challenge: tapgate_webauthn::base64url(challenge),
            sub: None,
            email: None,
            roles: Vec::new(),
            invite: None,
            rd: None,
        }
    }
}

/// Verified sessions, with the assertion last signed for each: the hot
/// path does a map lookup and a comparison instead of an ES256 verify plus
/// an ES256 sign per request.
///
/// Entries are found by the token's signature segment (86 characters that
/// differ for every token we sign) and accepted only if the whole token is
/// the one that was verified: a forged token that reuses a real signature
/// finds the entry, fails the comparison, and is verified (and refused).
/// Hashing 86 characters and comparing the rest costs less than a SHA-256
/// of the whole token did. The comparisons need not be constant-time: the
/// map finds an entry only for a signature that is already known (a keyed
/// hash decides which entries a key is compared with), and the header and
/// payload compared after it are not secret.
///
/// Tokens refused for good (expired, signature or claims wrong) are kept
/// too, found and compared the same way, so that a browser that keeps
/// sending an expired cookie costs a lookup rather than a verify per
/// request. This assumes the key ring does not change over the cache's
/// life, as the server's does not. A token that is not valid *yet* (clock
/// skew) is not kept: it will be.
pub struct SessionCache {
    shards: Vec<std::sync::RwLock<HashMap<Box<str>, std::sync::Arc<CachedSession>>>>,
    max_per_shard: usize,
    refused: Vec<std::sync::Mutex<HashMap<Box<str>, Refused>>>,
}

struct Refused {
    token: Box<str>,
    error: TokenError,
}

pub struct CachedSession {
    /// The token as verified, compared in full on every lookup.
    token: Box<str>,
    pub claims: SessionClaims,
    pub principal: Principal,
    /// `X-Tapgate-User/Email/Roles` values, built once per session rather
    /// than per request. `None` if a value is not a valid header (then no
    /// identity is sent rather than a wrong one).
    pub identity: Option<IdentityHeaders>,
    assertion: std::sync::Mutex<Option<(axum::http::HeaderValue, u64)>>,
}

pub struct IdentityHeaders {
    pub user: axum::http::HeaderValue,
    pub email: axum::http::HeaderValue,
    pub roles: axum::http::HeaderValue,
}

impl IdentityHeaders {
    fn of(p: &Principal) -> Option<IdentityHeaders> {
        use axum::http::HeaderValue;
        Some(IdentityHeaders {
            user: HeaderValue::from_str(p.subject.as_str()).ok()?,
            email: HeaderValue::from_str(p.email.as_str()).ok()?,
            roles: HeaderValue::from_str(&p.roles_csv()).ok()?,
        })
    }
}

impl CachedSession {
    /// The assertion to send upstream: reused until half its lifetime has
    /// passed, so the upstream always gets at least `ttl/2` of validity.
    pub fn assertion(
        &self,
        ring: &KeyRing,
        audience: &str,
        now: u64,
        ttl_secs: u64,
    ) -> axum::http::HeaderValue {
        // A poisoned lock only means another thread panicked mid-update; the
        // cached value is still a complete (value, time) pair.
        let mut slot = self.assertion.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((value, refresh_at)) = slot.as_ref()
            && now < *refresh_at
        {
            return value.clone();
        }
        let jwt = ring.issue_assertion(&self.claims, audience, now, ttl_secs);
        // A JWT is base64url segments and dots: always a valid header value.
        let value = axum::http::HeaderValue::from_str(&jwt).expect("JWT is ASCII");
        *slot = Some((value.clone(), now + ttl_secs / 2));
        value
    }
}

impl Default for SessionCache {
    fn default() -> Self {
        SessionCache::new(64 * 1024)
    }
}

impl SessionCache {
    const SHARDS: usize = 16;
    /// Refused tokens kept per shard (1,024 in all) and the longest kept:
    /// at most ≈ 4 MiB however many garbage tokens arrive.
    const REFUSED_PER_SHARD: usize = 64;
    const REFUSED_MAX_LEN: usize = 4096;

    pub fn new(capacity: usize) -> SessionCache {
        SessionCache {
            shards: (0..Self::SHARDS).map(|_| Default::default()).collect(),
            max_per_shard: (capacity / Self::SHARDS).max(1),
            refused: (0..Self::SHARDS).map(|_| Default::default()).collect(),
        }
    }

    /// Verify `token` (or find it verified already) and return the session.
    pub fn verify(
        &self,
        ring: &KeyRing,
        token: &str,
        now: u64,
    ) -> Result<std::sync::Arc<CachedSession>, TokenError> {
        // "header.payload.signature": the part after the last dot. A token
        // without one is refused by the verification below.
        let signature = token.rsplit_once('.').map_or(token, |(_, s)| s);
        let index = usize::from(signature.as_bytes().first().copied().unwrap_or(0)) % Self::SHARDS;
        let shard = &self.shards[index];
        if let Some(hit) = shard
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(signature)
            && *hit.token == *token
            && hit.claims.exp.saturating_add(LEEWAY_SECS) > now
        {
            return Ok(hit.clone());
        }
        let refused = &self.refused[index];
        if let Some(r) = refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(signature)
            && *r.token == *token
        {
            return Err(r.error);
        }
        let claims = match ring.verify_session(token, now) {
            Ok(claims) => claims,
            Err(error) => {
                let for_good = matches!(
                    error,
                    TokenError::Invalid | TokenError::Expired | TokenError::WrongKind
                );
                if for_good && token.len() <= Self::REFUSED_MAX_LEN {
                    let mut map = refused.lock().unwrap_or_else(|e| e.into_inner());
                    if map.len() >= Self::REFUSED_PER_SHARD {
                        map.clear();
                    }
                    map.insert(
                        signature.into(),
                        Refused {
                            token: token.into(),
                            error,
                        },
                    );
                }
                return Err(error);
            }
        };
        let principal = claims.principal();
        let entry = std::sync::Arc::new(CachedSession {
            token: token.into(),
            identity: IdentityHeaders::of(&principal),
            principal,
            claims,
            assertion: std::sync::Mutex::new(None),
        });
        let mut map = shard.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.max_per_shard {
            map.retain(|_, s| s.claims.exp.saturating_add(LEEWAY_SECS) > now);
            if map.len() >= self.max_per_shard {
                // Still full of live sessions: start over rather than grow
                // without bound; evicted sessions just verify again.
                map.clear();
            }
        }
        map.insert(signature.into(), entry.clone());
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> KeyRing {
        KeyRing::new(
            SigningKey::from_pem(&SigningKey::generate_pem()).unwrap(),
            vec![],
            "http://localhost:8080".into(),
        )
    }

    fn principal() -> Principal {
        Principal {
            subject: Subject("u_test".into()),
            email: Email::parse("ann@example.com").unwrap(),
            roles: vec![Role::parse("admin").unwrap()],
            auth_time: 1_000,
            cred: "abc".into(),
            authn: AuthnFacts {
                uv: true,
                synced: false,
                attested: false,
                aaguid: "00".into(),
                root: None,
            },
            keys: 0,
        }
    }

    #[test]
    fn session_round_trip_and_expiry() {
        let r = ring();
        let (tok, claims) = r.issue_session(&principal(), 0, 1, 1_000, 3600);
        assert_eq!(r.verify_session(&tok, 1_500).unwrap(), claims);
        assert_eq!(
            r.verify_session(&tok, 1_000 + 3600 + LEEWAY_SECS),
            Err(TokenError::Expired)
        );
        assert_eq!(
            r.verify_session(&tok, 1_000 - LEEWAY_SECS - 1),
            Err(TokenError::NotYetValid)
        );
    }

    #[test]
    fn token_kinds_are_not_interchangeable() {
        let r = ring();
        let (session, claims) = r.issue_session(&principal(), 0, 1, 1_000, 3600);
        let assertion = r.issue_assertion(&claims, "http://localhost:8080", 1_000, 60);
        assert_eq!(
            r.verify_session(&assertion, 1_001),
            Err(TokenError::WrongKind)
        );
        assert!(r.open_ceremony(&session, 1_001).is_err());
        let state = CeremonyState::new(&r, CeremonyKind::Login, b"challenge", 1_000, 120);
        let sealed = r.seal_ceremony(&state);
        assert_eq!(r.verify_session(&sealed, 1_001), Err(TokenError::WrongKind));
        assert_eq!(r.open_ceremony(&sealed, 1_001).unwrap(), state);
        assert_eq!(r.open_ceremony(&sealed, 1_120), Err(TokenError::Expired));
    }

    #[test]
    fn tokens_from_another_key_are_refused() {
        let (tok, _) = ring().issue_session(&principal(), 0, 1, 1_000, 3600);
        assert_eq!(
            ring().verify_session(&tok, 1_001),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn tampered_tokens_are_refused() {
        let r = ring();
        let (tok, _) = r.issue_session(&principal(), 0, 1, 1_000, 3600);
        let mut parts: Vec<String> = tok.split('.').map(String::from).collect();
        // Swap the payload for one claiming another subject.
        let forged = principal();
        let (other, _) = ring().issue_session(
            &Principal {
                subject: Subject("u_admin".into()),
                ..forged
            },
            0,
            1,
            1_000,
            3600,
        );
        parts[1] = other.split('.').nth(1).unwrap().to_owned();
        assert_eq!(
            r.verify_session(&parts.join("."), 1_001),
            Err(TokenError::Invalid)
        );
        // Truncated signature.
        assert!(r.verify_session(&tok[..tok.len() - 4], 1_001).is_err());
        // alg: none.
        let none = format!(
            "{}.{}.",
            tapgate_webauthn::base64url(br#"{"alg":"none","typ":"tapgate-session+jwt"}"#),
            tok.split('.').nth(1).unwrap()
        );
        assert!(r.verify_session(&none, 1_001).is_err());
    }

    #[test]
    fn assertion_claims_and_ttl_cap() {
        let r = ring();
        let (_, claims) = r.issue_session(&principal(), 0, 1, 1_000, 3600);
        let jwt = r.issue_assertion(&claims, "https://aud.example", 1_000, 10_000);
        let v = r
            .verify_assertion(&jwt, "https://aud.example", 1_001)
            .unwrap();
        assert_eq!(v["exp"].as_u64().unwrap() - v["iat"].as_u64().unwrap(), 300);
        assert_eq!(v["sub"], "u_test");
        assert_eq!(v["amr"], serde_json::json!(["hwk", "user", "mfa"]));
        assert_eq!(v["authn"]["uv"], true);
        assert!(
            r.verify_assertion(&jwt, "https://other.example", 1_001)
                .is_err()
        );
    }

    #[test]
    fn cache_reuses_assertions_until_half_life() {
        let r = ring();
        let cache = SessionCache::new(64);
        let (tok, _) = r.issue_session(&principal(), 0, 1, 1_000, 3600);
        let s1 = cache.verify(&r, &tok, 1_000).unwrap();
        let a1 = s1.assertion(&r, "aud", 1_000, 60);
        let s2 = cache.verify(&r, &tok, 1_010).unwrap();
        assert!(std::sync::Arc::ptr_eq(&s1, &s2));
        assert_eq!(s2.assertion(&r, "aud", 1_029, 60), a1);
        assert_ne!(s2.assertion(&r, "aud", 1_030, 60), a1);
        assert!(cache.verify(&r, "garbage", 1_000).is_err());
    }

    #[test]
    fn cache_hit_needs_the_whole_token() {
        use base64::Engine as _;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let r = ring();
        let cache = SessionCache::new(64);
        let (tok, _) = r.issue_session(&principal(), 0, 1, 1_000, 3600);
        cache.verify(&r, &tok, 1_000).unwrap();
        // A payload of someone else's (here: admin, another subject) under
        // the cached token's real signature must not be taken from cache.
        let (header, rest) = tok.split_once('.').unwrap();
        let (payload, signature) = rest.rsplit_once('.').unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        let mut forged_claims = claims.clone();
        forged_claims["sub"] = "u_other".into();
        let forged_payload =
            tapgate_webauthn::base64url(&serde_json::to_vec(&forged_claims).unwrap());
        let forged = format!("{header}.{forged_payload}.{signature}");
        assert_eq!(
            cache.verify(&r, &forged, 1_001).err(),
            Some(TokenError::Invalid)
        );
        // Nor a token the cached one is a prefix or extension of.
        assert!(cache.verify(&r, &format!("x{tok}"), 1_001).is_err());
        // The real one still is.
        assert!(cache.verify(&r, &tok, 1_002).is_ok());
    }

    #[test]
    fn refusals_for_good_are_remembered_and_not_yet_valid_is_not() {
        let r = ring();
        // Another ring: what verifying again would say (unknown key), so a
        // remembered refusal is told apart from a new verification.
        let other = ring();
        let cache = SessionCache::new(64);
        let (tok, _) = r.issue_session(&principal(), 0, 1, 1_000, 60);
        let late = 1_000 + 60 + LEEWAY_SECS;
        assert_eq!(
            cache.verify(&r, &tok, late).err(),
            Some(TokenError::Expired)
        );
        assert_eq!(
            cache.verify(&other, &tok, late).err(),
            Some(TokenError::Expired)
        );
        // Refused under a real signature: the real token is not refused.
        let (good, _) = r.issue_session(&principal(), 0, 1, 1_000, 3600);
        let (head, sig) = good.rsplit_once('.').unwrap();
        let forged = format!("{head}x.{sig}");
        assert!(cache.verify(&r, &forged, 1_001).is_err());
        assert!(cache.verify(&r, &good, 1_001).is_ok());
        // Issued in the future (clock skew): refused now, fine later.
        let (early, _) = r.issue_session(&principal(), 0, 1, 2_000, 3600);
        assert_eq!(
            cache.verify(&r, &early, 1_000).err(),
            Some(TokenError::NotYetValid)
        );
        assert!(cache.verify(&r, &early, 2_000).is_ok());
    }

    #[test]
    fn refusals_stay_bounded() {
        let r = ring();
        let cache = SessionCache::new(16);
        for i in 0..5_000 {
            let _ = cache.verify(&r, &format!("garbage.{i:05}"), 1_000);
        }
        // One oversized token is refused but not kept.
        let _ = cache.verify(&r, &"y".repeat(SessionCache::REFUSED_MAX_LEN + 1), 1_000);
        let total: usize = cache.refused.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(total <= 16 * SessionCache::REFUSED_PER_SHARD, "{total}");
    }

    #[test]
    fn cache_stays_bounded() {
        let r = ring();
        let cache = SessionCache::new(16);
        for i in 0..100 {
            let (tok, _) = r.issue_session(&principal(), 0, 1, 1_000 + i, 3600);
            cache.verify(&r, &tok, 1_000 + i).unwrap();
        }
        let total: usize = cache.shards.iter().map(|s| s.read().unwrap().len()).sum();
        assert!(total <= 16, "{total}");
    }
}
