//! WebAuthn Level 3 relying-party verification for tapgate: registration (§7.1) and
//! authentication (§7.2).
//!
//! The crate is pure: no IO, no clock (the caller passes `now`), no panics on any input.
//! Everything a browser sends is parsed here, at the edge, and every refusal is an [`Error`]
//! with a stable kebab-case [`Error::reason`] and a message a person can act on.
//!
//! What it deliberately does not do (the caller's job):
//! - remember challenges or make them single-use (pass the one you issued, then burn it);
//! - look the stored credential up (use [`AuthenticationResponseJson::credential_id`]);
//! - compare the returned user handle with the user you expected;
//! - decide which roots to trust: [`verify_registration`] returns the x5c chain and
//!   [`TrustStore::verify`] checks it against the roots the operator chose
//!   ([`TrustStore::builtin`] plus their own).
//!
//! Code map: `client_data` (clientDataJSON checks), `authenticator_data` (binary parser and
//! flag policy), `cose` (COSE_Key to a validated key), `attestation/` (one file per format),
//! `trust/` (roots, chain validation, AAGUID names), `asn1` (a small strict DER reader),
//! `json` (the L3 JSON shapes and base64url), `error`.

#![forbid(unsafe_code)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod asn1;
mod attestation;
mod authenticator_data;
mod client_data;
mod cose;
mod error;
mod json;
mod trust;

use std::time::SystemTime;

use aws_lc_rs::digest;

pub use cose::Alg;
pub use error::Error;
pub use json::{
    AuthenticationResponseJson, AuthenticatorAssertionResponseJson,
    AuthenticatorAttestationResponseJson, RegistrationResponseJson, base64url, base64url_decode,
};
pub use trust::{TrustPath, TrustStore, aaguid_string, authenticator_name};

use attestation::AttestationObject;
use authenticator_data::AuthenticatorData;
use client_data::Ceremony;
use cose::PublicKey;
use json::decode_field;

/// The site as WebAuthn sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelyingParty {
    /// RP id, e.g. `"localhost"` or `"app.example.com"`.
    pub id: String,
    /// The exact origins ceremonies may come from, e.g. `"http://localhost:8080"`.
    pub origins: Vec<String>,
    /// Whether the authenticator must verify the user (PIN, biometric).
    pub user_verification: UserVerification,
}

/// WebAuthn's `UserVerificationRequirement`. Only `Required` changes verification: the other
/// two accept a clear UV flag (the caller can still read [`Flags::uv`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserVerification {
    Required,
    Preferred,
    Discouraged,
}

/// The authenticator data flags callers may act on (§6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags {
    /// User present.
    pub up: bool,
    /// User verified.
    pub uv: bool,
    /// Backup eligible: a synced (multi-device) passkey.
    pub be: bool,
    /// Backed up right now.
    pub bs: bool,
}

/// What the attestation statement proved about the authenticator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttestationKind {
    /// `none`: nothing.
    None,
    /// `packed` signed by the credential itself: proves the key is held, nothing about the model.
    SelfAttestation,
    /// Signed or vouched for by an attestation certificate (`packed` and `fido-u2f` basic,
    /// `tpm` attestation CA, `android-key`, `apple` anonymization CA); `x5c` is the chain,
    /// leaf first, DER. Whether it ends at a trusted root is [`TrustStore::verify`]'s
    /// question.
    Basic { x5c: Vec<Vec<u8>> },
}

/// A verified new credential: store it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub credential_id: Vec<u8>,
    /// The COSE_Key exactly as the authenticator produced it; pass it back in
    /// [`StoredCredential::public_key`].
    pub public_key: Vec<u8>,
    /// COSE algorithm of the key (e.g. -7 for ES256).
    pub alg: i64,
    pub sign_count: u32,
    pub aaguid: [u8; 16],
    pub flags: Flags,
    /// The attestation statement format (`none`, `packed`, `fido-u2f`, `tpm`, `android-key`,
    /// `apple`).
    pub fmt: String,
    pub attestation: AttestationKind,
    /// Transport hints the browser reported (unverified, for later `allowCredentials`).
    pub transports: Vec<String>,
}

/// A credential as stored at registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredCredential<'a> {
    pub id: &'a [u8],
    /// [`Registration::public_key`].
    pub public_key: &'a [u8],
    /// The last counter value seen (registration or last sign-in).
    pub sign_count: u32,
    /// [`Registration::flags`]`.be`: whether the credential is a synced passkey.
    pub backup_eligible: bool,
}

/// A verified sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authentication {
    pub credential_id: Vec<u8>,
    /// The new counter value: store it.
    pub sign_count: u32,
    pub flags: Flags,
    /// The user handle a discoverable credential returned; compare it with the credential's
    /// user before trusting it.
    pub user_handle: Option<Vec<u8>>,
}

/// Verifies a registration response (WebAuthn L3 §7.1).
///
/// `expected_challenge` is the challenge issued for this ceremony; `now` is used only for
/// attestation certificate validity.
pub fn verify_registration(
    rp: &RelyingParty,
    expected_challenge: &[u8],
    response: &RegistrationResponseJson,
    now: SystemTime,
) -> Result<Registration, Error> {
    // §5.1: the credential type, and `id` must be the encoding of `rawId`.
    check_credential_type(&response.r#type)?;
    let raw_id = check_ids(&response.id, &response.raw_id)?;
    let client_data_json = decode_field(&response.response.client_data_json, "clientDataJSON")?;
    let attestation_object =
        decode_field(&response.response.attestation_object, "attestationObject")?;

    // Steps 5–11: clientDataJSON type, challenge, origin, and no embedding.
    client_data::verify(&client_data_json, Ceremony::Create, expected_challenge, rp)?;
    // Step 12.
    let client_data_hash = digest::digest(&digest::SHA256, &client_data_json);

    // Step 13: fmt, attStmt, authData.
    let object = AttestationObject::parse(&attestation_object)?;
    let auth_data = AuthenticatorData::parse(&object.auth_data)?;
    // Steps 14–18: RP id hash, UP, UV, BE/BS.
    auth_data.verify_policy(rp)?;
    let attested = auth_data
        .attested
        .as_ref()
        .ok_or(Error::AttestedCredentialDataMissing)?;
    // Step 23 (length) was checked by the parser; the id the browser reports must be the one
    // the authenticator created, or the caller would store a key under the wrong id.
    if attested.credential_id != raw_id.as_slice() {
        return Err(Error::CredentialIdMismatch);
    }
    // Step 20: the key's algorithm must be one we offered (all supported ones are offered).
    let credential_key = PublicKey::from_cose(attested.public_key)?;

    // Steps 21–22: the attestation statement.
    let attestation = attestation::verify(
        &object.fmt,
        &object.att_stmt,
        &attestation::Context {
            auth_data_raw: &object.auth_data,
            auth_data: &auth_data,
            client_data_hash: client_data_hash.as_ref(),
            credential_key: &credential_key,
            now,
        },
    )?;

    Ok(Registration {
        credential_id: raw_id,
        public_key: attested.public_key.to_vec(),
        alg: credential_key.alg().cose(),
        sign_count: auth_data.sign_count,
        aaguid: attested.aaguid,
        flags: auth_data.flags,
        fmt: object.fmt.clone(),
        attestation,
        transports: response.response.transports.clone().unwrap_or_default(),
    })
}

/// Verifies an authentication response (WebAuthn L3 §7.2) against the stored credential.
///
/// Look the credential up by [`AuthenticationResponseJson::credential_id`] first. `now` is
/// accepted for symmetry and future checks; assertions carry no certificates today.
pub fn verify_authentication(
    rp: &RelyingParty,
    expected_challenge: &[u8],
    response: &AuthenticationResponseJson,
    credential: &StoredCredential<'_>,
    now: SystemTime,
) -> Result<Authentication, Error> {
    let _ = now;
    check_credential_type(&response.r#type)?;
    let raw_id = check_ids(&response.id, &response.raw_id)?;
    // Step 5: the response must be for the credential the caller looked up.
    if raw_id != credential.id {
        return Err(Error::CredentialNotAllowed);
    }
    let user_handle = response.user_handle()?;
    let client_data_json = decode_field(&response.response.client_data_json, "clientDataJSON")?;
    let authenticator_data =
        decode_field(&response.response.authenticator_data, "authenticatorData")?;
    let signature = decode_field(&response.response.signature, "signature")?;

    // Steps 10–14: clientDataJSON type, challenge, origin, and no embedding.
    client_data::verify(&client_data_json, Ceremony::Get, expected_challenge, rp)?;

    // Steps 15–18: RP id hash, UP, UV, BE/BS.
    let auth_data = AuthenticatorData::parse(&authenticator_data)?;
    auth_data.verify_policy(rp)?;
    // Step 19: backup eligibility is fixed when a credential is created; a change means the
    // response is not from the credential we registered.
    if auth_data.flags.be != credential.backup_eligible {
        return Err(Error::BackupEligibilityChanged {
            stored: credential.backup_eligible,
            found: auth_data.flags.be,
        });
    }

    // Steps 20–21: the signature over authenticatorData || SHA-256(clientDataJSON).
    let key = PublicKey::from_cose(credential.public_key)?;
    let client_data_hash = digest::digest(&digest::SHA256, &client_data_json);
    let signed = [authenticator_data.as_slice(), client_data_hash.as_ref()].concat();
    key.verify(&signed, &signature)
        .map_err(|()| Error::SignatureInvalid)?;

    // Step 22: the counter must grow unless the authenticator does not keep one (both zero).
    if (credential.sign_count > 0 || auth_data.sign_count > 0)
        && auth_data.sign_count <= credential.sign_count
    {
        return Err(Error::SignCountRegressed {
            credential_id: raw_id,
            stored: credential.sign_count,
            found: auth_data.sign_count,
        });
    }

    Ok(Authentication {
        credential_id: raw_id,
        sign_count: auth_data.sign_count,
        flags: auth_data.flags,
        user_handle,
    })
}

/// Entry points for robustness tests and fuzzers: every parser of untrusted bytes, results
/// discarded. Not part of the API.
#[doc(hidden)]
pub mod fuzz {
    use super::*;

    /// Feeds `bytes` to each parser as if it were that parser's input.
    pub fn parsers(bytes: &[u8]) {
        let rp = RelyingParty {
            id: "localhost".into(),
            origins: vec!["http://localhost:8080".into()],
            user_verification: UserVerification::Preferred,
        };
        let _ = client_data::verify(bytes, Ceremony::Create, b"challenge", &rp);
        if let Ok(ad) = AuthenticatorData::parse(bytes) {
            let _ = ad.verify_policy(&rp);
        }
        let _ = AttestationObject::parse(bytes);
        let _ = PublicKey::from_cose(bytes);
        let _ = attestation::parse_certificate(bytes);
        let _ = asn1::read_all(bytes);
        let _ = TrustStore::empty().verify(&[bytes.to_vec()], SystemTime::UNIX_EPOCH);
        let _ = TrustStore::empty().add_pem("fuzz", &String::from_utf8_lossy(bytes));
        let _ = base64url_decode(&String::from_utf8_lossy(bytes));
    }
}

fn check_credential_type(found: &str) -> Result<(), Error> {
    if found == "public-key" {
        Ok(())
    } else {
        Err(Error::CredentialTypeInvalid {
            found: found.to_string(),
        })
    }
}

/// Decodes `rawId` and checks `id` names the same bytes (either may be padded).
fn check_ids(id: &str, raw_id: &str) -> Result<Vec<u8>, Error> {
    let raw = decode_field(raw_id, "rawId")?;
    let id = decode_field(id, "id")?;
    if id != raw {
        return Err(Error::IdMismatch);
    }
    Ok(raw)
}
