//! The one error type of this crate.
//!
//! Every rejection is a variant with a stable kebab-case [`Error::reason`] code (shared by
//! logs, audit events and the JSON error body) and a `Display` message written for the person
//! in front of the browser or the operator reading the log. Messages never echo more than a
//! short, escaped excerpt of attacker-controlled input.

use std::fmt;

/// Why a registration or authentication response was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A field that must be base64url was not (`field` names it).
    Base64Invalid { field: &'static str },
    /// The credential's `type` is not `"public-key"`.
    CredentialTypeInvalid { found: String },
    /// The response's `id` is not the base64url encoding of its `rawId`.
    IdMismatch,
    /// At registration: `rawId` is not the credential id the authenticator put in its data.
    CredentialIdMismatch,
    /// At authentication: the response is for another credential than the stored one.
    CredentialNotAllowed,
    /// The credential id is longer than the 1023 bytes WebAuthn allows.
    CredentialIdTooLong { len: usize },

    /// clientDataJSON is not UTF-8 JSON of the expected shape.
    ClientDataMalformed { detail: String },
    /// clientDataJSON `type` is not the ceremony's (`webauthn.create` / `webauthn.get`).
    ClientDataTypeWrong {
        expected: &'static str,
        found: String,
    },
    /// clientDataJSON `challenge` is not the one this server issued.
    ChallengeMismatch,
    /// clientDataJSON `origin` is not one of the site's origins.
    OriginMismatch { found: String, allowed: Vec<String> },
    /// clientDataJSON says the ceremony ran in a cross-origin iframe.
    CrossOriginRefused,
    /// clientDataJSON names a top-level origin: the page was embedded in another site.
    TopOriginRefused { top_origin: String },

    /// authenticatorData is truncated, has trailing bytes or bad embedded CBOR.
    AuthenticatorDataMalformed { detail: String },
    /// authenticatorData is for another relying party id.
    RpIdMismatch { expected: String },
    /// The authenticator did not report user presence (UP flag).
    UserNotPresent,
    /// User verification was required but the UV flag is clear.
    UserNotVerified,
    /// The BS (backed up) flag is set without BE (backup eligible): impossible for a real
    /// authenticator.
    BackupStateInvalid,
    /// The BE flag differs from the one recorded when the credential was registered.
    BackupEligibilityChanged { stored: bool, found: bool },
    /// A registration without attested credential data (AT flag clear).
    AttestedCredentialDataMissing,

    /// The credential public key is not a well-formed COSE_Key.
    PublicKeyMalformed { detail: String },
    /// The COSE_Key is well-formed but unusable (curve/key type does not fit its algorithm,
    /// point not on the curve, RSA key too small).
    PublicKeyInvalid { detail: String },
    /// The key's COSE algorithm is one this server does not verify.
    AlgorithmUnsupported { alg: Option<i64> },

    /// attestationObject is not the CBOR map WebAuthn defines.
    AttestationObjectMalformed { detail: String },
    /// An attestation statement format this server does not verify.
    AttestationFormatUnsupported { fmt: String },
    /// The attestation statement does not have the fields its format requires.
    AttestationStatementMalformed { fmt: &'static str, detail: String },
    /// The attestation statement's `alg` does not fit the key that signed it.
    AttestationAlgorithmMismatch { statement_alg: i64, key_alg: i64 },
    /// The attestation signature does not verify.
    AttestationSignatureInvalid { fmt: &'static str },
    /// The attestation certificate does not meet the format's requirements.
    AttestationCertificateInvalid { detail: String },
    /// The attestation certificate is not valid at the verification time.
    AttestationCertificateExpired,
    /// The AAGUID in the attestation certificate is not the one in authenticatorData.
    AttestationAaguidMismatch,
    /// The key the attestation vouches for (certificate key, TPM key area) is not the new
    /// credential's key.
    AttestationPublicKeyMismatch { fmt: &'static str },
    /// The attestation was made over other data than this registration: the nonce, challenge
    /// or TPM extraData does not match authenticatorData and clientDataJSON.
    AttestationNonceMismatch { fmt: &'static str },
    /// The x5c chain does not lead to a root in the trust store.
    AttestationUntrusted { detail: String },
    /// A certificate on the x5c chain is not acceptable (issuer not a CA, path too long, bad
    /// signature, unsupported algorithm, unrecognised critical extension, unreadable).
    AttestationChainInvalid { detail: String },
    /// A certificate on the chain, or the root, is not valid at the verification time.
    AttestationChainExpired { subject: String },
    /// An operator-supplied trusted root could not be read.
    TrustAnchorInvalid { name: String, detail: String },

    /// The assertion signature is empty or does not verify with the stored key.
    SignatureInvalid,
    /// The signature counter did not increase: the authenticator may have been cloned.
    SignCountRegressed {
        credential_id: Vec<u8>,
        stored: u32,
        found: u32,
    },
}

impl Error {
    /// Stable kebab-case reason code. Logs, audit events and JSON errors use it; never change
    /// an existing code.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Base64Invalid { .. } => "base64url-invalid",
            Error::CredentialTypeInvalid { .. } => "credential-type-invalid",
            Error::IdMismatch => "credential-id-raw-id-mismatch",
            Error::CredentialIdMismatch => "credential-id-mismatch",
            Error::CredentialNotAllowed => "credential-not-allowed",
            Error::CredentialIdTooLong { .. } => "credential-id-too-long",
            Error::ClientDataMalformed { .. } => "client-data-malformed",
            Error::ClientDataTypeWrong { .. } => "client-data-type-wrong",
            Error::ChallengeMismatch => "challenge-mismatch",
            Error::OriginMismatch { .. } => "origin-mismatch",
            Error::CrossOriginRefused => "cross-origin-refused",
            Error::TopOriginRefused { .. } => "top-origin-refused",
            Error::AuthenticatorDataMalformed { .. } => "authenticator-data-malformed",
            Error::RpIdMismatch { .. } => "rp-id-mismatch",
            Error::UserNotPresent => "user-not-present",
            Error::UserNotVerified => "user-not-verified",
            Error::BackupStateInvalid => "backup-state-invalid",
            Error::BackupEligibilityChanged { .. } => "backup-eligibility-changed",
            Error::AttestedCredentialDataMissing => "attested-credential-data-missing",
            Error::PublicKeyMalformed { .. } => "public-key-malformed",
            Error::PublicKeyInvalid { .. } => "public-key-invalid",
            Error::AlgorithmUnsupported { .. } => "algorithm-unsupported",
            Error::AttestationObjectMalformed { .. } => "attestation-object-malformed",
            Error::AttestationFormatUnsupported { .. } => "attestation-format-unsupported",
            Error::AttestationStatementMalformed { .. } => "attestation-statement-malformed",
            Error::AttestationAlgorithmMismatch { .. } => "attestation-algorithm-mismatch",
            Error::AttestationSignatureInvalid { .. } => "attestation-signature-invalid",
            Error::AttestationCertificateInvalid { .. } => "attestation-certificate-invalid",
            Error::AttestationCertificateExpired => "attestation-certificate-expired",
            Error::AttestationAaguidMismatch => "attestation-aaguid-mismatch",
            Error::AttestationPublicKeyMismatch { .. } => "attestation-public-key-mismatch",
            Error::AttestationNonceMismatch { .. } => "attestation-nonce-mismatch",
            Error::AttestationUntrusted { .. } => "attestation-untrusted",
            Error::AttestationChainInvalid { .. } => "attestation-chain-invalid",
            Error::AttestationChainExpired { .. } => "attestation-chain-expired",
            Error::TrustAnchorInvalid { .. } => "trust-anchor-invalid",
            Error::SignatureInvalid => "signature-invalid",
            Error::SignCountRegressed { .. } => "sign-count-regressed",
        }
    }

    /// Every reason code this crate can return, for docs and for tests that check codes stay
    /// kebab-case and unique.
    pub const REASONS: &'static [&'static str] = &[
        "base64url-invalid",
        "credential-type-invalid",
        "credential-id-raw-id-mismatch",
        "credential-id-mismatch",
        "credential-not-allowed",
        "credential-id-too-long",
        "client-data-malformed",
        "client-data-type-wrong",
        "challenge-mismatch",
        "origin-mismatch",
        "cross-origin-refused",
        "top-origin-refused",
        "authenticator-data-malformed",
        "rp-id-mismatch",
        "user-not-present",
        "user-not-verified",
        "backup-state-invalid",
        "backup-eligibility-changed",
        "attested-credential-data-missing",
        "public-key-malformed",
        "public-key-invalid",
        "algorithm-unsupported",
        "attestation-object-malformed",
        "attestation-format-unsupported",
        "attestation-statement-malformed",
        "attestation-algorithm-mismatch",
        "attestation-signature-invalid",
        "attestation-certificate-invalid",
        "attestation-certificate-expired",
        "attestation-aaguid-mismatch",
        "attestation-public-key-mismatch",
        "attestation-nonce-mismatch",
        "attestation-untrusted",
        "attestation-chain-invalid",
        "attestation-chain-expired",
        "trust-anchor-invalid",
        "signature-invalid",
        "sign-count-regressed",
    ];
}

/// Attacker-controlled text shown in a message: at most 100 characters, control characters
/// escaped, so a hostile origin cannot forge log lines or flood a page.
pub(crate) struct Excerpt<'a>(pub &'a str);

impl fmt::Display for Excerpt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 100;
        for (i, c) in self.0.chars().enumerate() {
            if i == MAX {
                return f.write_str("…");
            }
            if c.is_control() {
                write!(f, "{}", c.escape_unicode())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Base64Invalid { field } => write!(
                f,
                "the {field} the browser sent is not base64url; send the credential as \
                 PublicKeyCredential.toJSON() produces it"
            ),
            Error::CredentialTypeInvalid { found } => write!(
                f,
                "the credential type is \"{}\", not \"public-key\"; only passkeys and security \
                 keys can be used here",
                Excerpt(found)
            ),
            Error::IdMismatch => f.write_str(
                "the credential's id and rawId differ; the response was altered on its way \
                 from the browser, try again",
            ),
            Error::CredentialIdMismatch => f.write_str(
                "the credential id sent by the browser is not the one the authenticator \
                 created; the response was altered, try registering again",
            ),
            Error::CredentialNotAllowed => f.write_str(
                "this passkey is not the one expected for this sign-in; choose another \
                 passkey or register this one first",
            ),
            Error::CredentialIdTooLong { len } => write!(
                f,
                "the authenticator made a credential id of {len} bytes, more than the 1023 \
                 WebAuthn allows; use another authenticator"
            ),
            Error::ClientDataMalformed { detail } => write!(
                f,
                "the browser's client data is not valid ({detail}); use an up-to-date browser \
                 and try again"
            ),
            Error::ClientDataTypeWrong { expected, found } => write!(
                f,
                "the browser answered a \"{}\" ceremony where \"{expected}\" was expected; \
                 start again from the page",
                Excerpt(found)
            ),
            Error::ChallengeMismatch => f.write_str(
                "the response does not answer the challenge this server issued (it may be \
                 stale or from another tab); reload the page and try again",
            ),
            Error::OriginMismatch { found, allowed } => {
                write!(
                    f,
                    "the response came from origin {}, but this site is ",
                    Excerpt(found)
                )?;
                match allowed.as_slice() {
                    [one] => write!(f, "{one}")?,
                    many => write!(f, "one of {}", many.join(", "))?,
                }
                f.write_str("; open the page from the site's own address")
            }
            Error::CrossOriginRefused => f.write_str(
                "the passkey prompt ran inside a frame of another site, which this site does \
                 not allow; open the site's own page directly",
            ),
            Error::TopOriginRefused { top_origin } => write!(
                f,
                "the passkey prompt ran inside a page of {}, which this site does not allow; \
                 open the site's own page directly",
                Excerpt(top_origin)
            ),
            Error::AuthenticatorDataMalformed { detail } => write!(
                f,
                "the authenticator's data is malformed ({detail}); try again or use another \
                 authenticator"
            ),
            Error::RpIdMismatch { expected } => write!(
                f,
                "the passkey was used for another site than {expected}; open the page from \
                 the site's own address"
            ),
            Error::UserNotPresent => f.write_str(
                "the authenticator did not confirm that a person was present; touch or \
                 unlock the authenticator when it asks",
            ),
            Error::UserNotVerified => f.write_str(
                "this site requires user verification (PIN, fingerprint or face) and the \
                 authenticator did not perform it; set up a PIN or biometric on the \
                 authenticator and try again",
            ),
            Error::BackupStateInvalid => f.write_str(
                "the authenticator claims the credential is backed up but not backup \
                 eligible, which is impossible; the response was altered or the authenticator \
                 is faulty",
            ),
            Error::BackupEligibilityChanged { stored, found } => write!(
                f,
                "the credential was registered as {} but now reports itself as {}; a \
                 credential cannot change this, so the response was refused — register the \
                 passkey again",
                if *stored { "syncable" } else { "device-bound" },
                if *found { "syncable" } else { "device-bound" },
            ),
            Error::AttestedCredentialDataMissing => f.write_str(
                "the authenticator did not include the new credential in its response; try \
                 again or use another authenticator",
            ),
            Error::PublicKeyMalformed { detail } => write!(
                f,
                "the credential public key is malformed ({detail}); use another authenticator"
            ),
            Error::PublicKeyInvalid { detail } => write!(
                f,
                "the credential public key cannot be used ({detail}); use another authenticator"
            ),
            Error::AlgorithmUnsupported { alg } => {
                match alg {
                    Some(alg) => write!(f, "the key uses COSE algorithm {alg}, ")?,
                    None => f.write_str("the key names no COSE algorithm, ")?,
                }
                f.write_str(
                    "which this site does not support (supported: ES256, ES384, ES512, EdDSA \
                     Ed25519, RS256, PS256); use another authenticator",
                )
            }
            Error::AttestationObjectMalformed { detail } => write!(
                f,
                "the authenticator's attestation is malformed ({detail}); try again or use \
                 another authenticator"
            ),
            Error::AttestationFormatUnsupported { fmt } => write!(
                f,
                "the authenticator sent a \"{}\" attestation, a format this site does not \
                 verify (supported: none, packed, fido-u2f, tpm, android-key, apple); register \
                 with attestation \"none\" or use another authenticator",
                Excerpt(fmt)
            ),
            Error::AttestationStatementMalformed { fmt, detail } => write!(
                f,
                "the \"{fmt}\" attestation statement is malformed ({detail}); use another \
                 authenticator"
            ),
            Error::AttestationAlgorithmMismatch {
                statement_alg,
                key_alg,
            } => write!(
                f,
                "the attestation says it was signed with COSE algorithm {statement_alg} but \
                 the signing key uses {key_alg}; the response was altered or the \
                 authenticator is faulty"
            ),
            Error::AttestationSignatureInvalid { fmt } => write!(
                f,
                "the \"{fmt}\" attestation signature does not verify; the response was \
                 altered on its way, try registering again"
            ),
            Error::AttestationCertificateInvalid { detail } => write!(
                f,
                "the authenticator's attestation certificate is not acceptable ({detail}); \
                 use another authenticator"
            ),
            Error::AttestationCertificateExpired => f.write_str(
                "the authenticator's attestation certificate is not valid at this time (check \
                 the server clock); otherwise use another authenticator",
            ),
            Error::AttestationAaguidMismatch => f.write_str(
                "the attestation certificate names another authenticator model (AAGUID) than \
                 the authenticator data; the response was altered or the authenticator is \
                 faulty",
            ),
            Error::AttestationPublicKeyMismatch { fmt } => write!(
                f,
                "the \"{fmt}\" attestation vouches for another key than the new credential's; \
                 the response was altered or the authenticator is faulty"
            ),
            Error::AttestationNonceMismatch { fmt } => write!(
                f,
                "the \"{fmt}\" attestation was made for another registration than this one; the \
                 response was altered or replayed, try registering again"
            ),
            Error::AttestationUntrusted { detail } => write!(
                f,
                "the authenticator's attestation does not lead to a trusted manufacturer root \
                 ({detail}); use an authenticator this site accepts, or ask the operator to add \
                 its manufacturer's root certificate"
            ),
            Error::AttestationChainInvalid { detail } => write!(
                f,
                "the authenticator's attestation certificate chain is not valid ({detail}); use \
                 another authenticator"
            ),
            Error::AttestationChainExpired { subject } => write!(
                f,
                "the attestation certificate \"{}\" is not valid at this time (check the server \
                 clock); otherwise use another authenticator",
                Excerpt(subject)
            ),
            Error::TrustAnchorInvalid { name, detail } => write!(
                f,
                "the trusted root \"{}\" could not be read ({detail}); give it as PEM \
                 certificates (-----BEGIN CERTIFICATE----- ...)",
                Excerpt(name)
            ),
            Error::SignatureInvalid => f.write_str(
                "the sign-in signature does not verify with this passkey's public key; try \
                 again, and if it keeps failing, remove and re-register the passkey",
            ),
            Error::SignCountRegressed { stored, found, .. } => write!(
                f,
                "the authenticator's signature counter went from {stored} to {found} instead \
                 of increasing, a sign that it may have been cloned; the sign-in was refused — \
                 contact an administrator"
            ),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_codes_are_kebab_case_and_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for r in Error::REASONS {
            assert!(
                r.chars()
                    .all(|c| c.is_ascii_lowercase() || c == '-' || c.is_ascii_digit()),
                "{r}"
            );
            assert!(
                !r.starts_with('-') && !r.ends_with('-') && !r.contains("--"),
                "{r}"
            );
            assert!(seen.insert(*r), "duplicate {r}");
        }
    }

    #[test]
    fn origin_message_names_both_origins() {
        let e = Error::OriginMismatch {
            found: "https://evil.example".into(),
            allowed: vec!["https://app.example.com".into()],
        };
        assert_eq!(
            e.to_string(),
            "the response came from origin https://evil.example, but this site is \
             https://app.example.com; open the page from the site's own address"
        );
        assert!(Error::REASONS.contains(&e.reason()));
    }

    #[test]
    fn excerpt_escapes_and_truncates() {
        let s = format!("a\nb{}", "x".repeat(200));
        let shown = Excerpt(&s).to_string();
        assert!(!shown.contains('\n'));
        assert!(shown.ends_with('…'));
        assert!(shown.chars().count() < 120);
    }
}
