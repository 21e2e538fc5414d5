//! Attestation objects (WebAuthn L3 §6.5) and the attestation statement formats (§8).
//!
//! One file per format. A format gets the parsed statement and everything it may sign over,
//! and answers with the [`AttestationKind`] it proved. Formats tapgate does not verify are
//! refused with `attestation-format-unsupported` rather than accepted unverified: a relying
//! party that wants no attestation asks for `"none"`, and browsers then send `none`.
//!
//! Trust (does the x5c chain end at a root we trust?) is not decided here: the chain is
//! returned, and [`crate::trust::TrustStore::verify`] checks it against the operator's roots.
//!
//! `android-safetynet` is deliberately unsupported: Google deprecated SafetyNet and Android
//! now attests keys with `android-key`; browsers no longer produce it for new credentials.

mod android_key;
mod apple;
pub(crate) mod certificate;
mod fido_u2f;
mod none;
mod packed;
mod tpm;

use std::time::SystemTime;

use aws_lc_rs::digest;
use aws_lc_rs::signature::{self, ParsedPublicKey, VerificationAlgorithm};
use ciborium::Value;

use crate::authenticator_data::AuthenticatorData;
use crate::cose::PublicKey;
use crate::{AttestationKind, Error};

/// `attestationObject = { "fmt": tstr, "attStmt": map, "authData": bstr }`, owned because the
/// CBOR decoder produces owned values.
#[derive(Debug)]
pub(crate) struct AttestationObject {
    pub fmt: String,
    pub att_stmt: Statement,
    pub auth_data: Vec<u8>,
}

fn malformed(detail: &str) -> Error {
    Error::AttestationObjectMalformed {
        detail: detail.to_string(),
    }
}

impl AttestationObject {
    pub(crate) fn parse(raw: &[u8]) -> Result<Self, Error> {
        let mut rest = raw;
        let value: Value =
            ciborium::de::from_reader(&mut rest).map_err(|_| malformed("not CBOR"))?;
        if !rest.is_empty() {
            return Err(malformed("unexpected bytes after the CBOR map"));
        }
        let Value::Map(entries) = value else {
            return Err(malformed("not a CBOR map"));
        };
        let (mut fmt, mut att_stmt, mut auth_data) = (None, None, None);
        for (k, v) in entries {
            // Unknown members are ignored for forward compatibility; known ones must be
            // unique so no reader can pick a different copy than we verified.
            let slot_taken = match k.as_text() {
                Some("fmt") => fmt.replace(v).is_some(),
                Some("attStmt") => att_stmt.replace(v).is_some(),
                Some("authData") => auth_data.replace(v).is_some(),
                _ => false,
            };
            if slot_taken {
                return Err(malformed("a member appears twice"));
            }
        }
        let Some(Value::Text(fmt)) = fmt else {
            return Err(malformed("fmt is missing or not text"));
        };
        let Some(Value::Bytes(auth_data)) = auth_data else {
            return Err(malformed("authData is missing or not bytes"));
        };
        let Some(Value::Map(att_stmt)) = att_stmt else {
            return Err(malformed("attStmt is missing or not a map"));
        };
        Ok(AttestationObject {
            fmt,
            att_stmt: Statement::new(att_stmt)?,
            auth_data,
        })
    }
}

/// An attestation statement: a CBOR map with unique text keys.
#[derive(Debug)]
pub(crate) struct Statement(Vec<(String, Value)>);

impl Statement {
    fn new(entries: Vec<(Value, Value)>) -> Result<Self, Error> {
        let mut out: Vec<(String, Value)> = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            let Value::Text(k) = k else {
                return Err(malformed("attStmt has a non-text key"));
            };
            if out.iter().any(|(seen, _)| *seen == k) {
                return Err(malformed("attStmt has a key twice"));
            }
            out.push((k, v));
        }
        Ok(Statement(out))
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }
}

/// Parses a certificate as the formats do (for robustness tests).
pub(crate) fn parse_certificate(der: &[u8]) -> Result<(), Error> {
    certificate::AttestationCertificate::parse(der).map(|_| ())
}

/// Everything an attestation statement may sign or be checked against.
pub(crate) struct Context<'a> {
    pub auth_data_raw: &'a [u8],
    pub auth_data: &'a AuthenticatorData<'a>,
    pub client_data_hash: &'a [u8],
    pub credential_key: &'a PublicKey,
    pub now: SystemTime,
}

/// Verifies the statement of format `fmt` (§7.1 steps 21–22).
pub(crate) fn verify(
    fmt: &str,
    stmt: &Statement,
    ctx: &Context<'_>,
) -> Result<AttestationKind, Error> {
    match fmt {
        "none" => none::verify(stmt),
        "packed" => packed::verify(stmt, ctx),
        "fido-u2f" => fido_u2f::verify(stmt, ctx),
        "tpm" => tpm::verify(stmt, ctx),
        "android-key" => android_key::verify(stmt, ctx),
        "apple" => apple::verify(stmt, ctx),
        other => Err(Error::AttestationFormatUnsupported {
            fmt: other.to_string(),
        }),
    }
}

/// Reads `x5c`: a non-empty array of DER certificates, leaf first.
fn x5c(stmt: &Statement, fmt: &'static str) -> Result<Option<Vec<Vec<u8>>>, Error> {
    let bad = |detail: &str| Error::AttestationStatementMalformed {
        fmt,
        detail: detail.into(),
    };
    let Some(v) = stmt.get("x5c") else {
        return Ok(None);
    };
    let Value::Array(items) = v else {
        return Err(bad("x5c is not an array"));
    };
    if items.is_empty() {
        return Err(bad("x5c is empty"));
    }
    items
        .iter()
        .map(|c| match c {
            Value::Bytes(b) => Ok(b.clone()),
            _ => Err(bad("an x5c entry is not bytes")),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn sig<'s>(stmt: &'s Statement, fmt: &'static str) -> Result<&'s [u8], Error> {
    bytes_field(stmt, "sig", fmt)
}

/// A byte-string member of the statement.
fn bytes_field<'s>(stmt: &'s Statement, key: &str, fmt: &'static str) -> Result<&'s [u8], Error> {
    match stmt.get(key) {
        Some(Value::Bytes(b)) => Ok(b),
        Some(_) => Err(Error::AttestationStatementMalformed {
            fmt,
            detail: format!("{key} is not bytes"),
        }),
        None => Err(Error::AttestationStatementMalformed {
            fmt,
            detail: format!("{key} is missing"),
        }),
    }
}

/// The statement's `alg`: a COSE algorithm identifier.
fn alg_field(stmt: &Statement, fmt: &'static str) -> Result<i64, Error> {
    let bad = |detail: &str| Error::AttestationStatementMalformed {
        fmt,
        detail: detail.into(),
    };
    match stmt.get("alg") {
        Some(Value::Integer(i)) => i64::try_from(*i).map_err(|_| bad("alg is out of range")),
        Some(_) => Err(bad("alg is not an integer")),
        None => Err(bad("alg is missing")),
    }
}

/// RS1 (RSASSA-PKCS1-v1_5 with SHA-1): only TPMs still sign with it.
const COSE_RS1: i64 = -65535;

/// The signature algorithm an attestation statement's `alg` names, for a certificate's key.
/// RS1 is accepted only where the format allows it (`tpm`).
fn statement_algorithm(alg: i64, allow_rs1: bool) -> Option<&'static dyn VerificationAlgorithm> {
    Some(match alg {
        -7 => &signature::ECDSA_P256_SHA256_ASN1,
        -35 => &signature::ECDSA_P384_SHA384_ASN1,
        -36 => &signature::ECDSA_P521_SHA512_ASN1,
        -8 => &signature::ED25519,
        -257 => &signature::RSA_PKCS1_2048_8192_SHA256,
        -258 => &signature::RSA_PKCS1_2048_8192_SHA384,
        -259 => &signature::RSA_PKCS1_2048_8192_SHA512,
        -37 => &signature::RSA_PSS_2048_8192_SHA256,
        -38 => &signature::RSA_PSS_2048_8192_SHA384,
        -39 => &signature::RSA_PSS_2048_8192_SHA512,
        COSE_RS1 if allow_rs1 => &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
        _ => return None,
    })
}

/// The hash an attestation algorithm signs with (TPM extraData is this hash of the data).
fn statement_hash(alg: i64) -> Option<&'static digest::Algorithm> {
    Some(match alg {
        COSE_RS1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
        -7 | -257 | -37 => &digest::SHA256,
        -35 | -258 | -38 => &digest::SHA384,
        -36 | -259 | -39 => &digest::SHA512,
        _ => return None,
    })
}

/// Verifies `sig` over `message` with the attestation certificate's key and the statement's
/// algorithm `alg`.
fn verify_with_certificate(
    cert: &certificate::AttestationCertificate,
    alg: i64,
    allow_rs1: bool,
    message: &[u8],
    sig: &[u8],
    fmt: &'static str,
) -> Result<(), Error> {
    let algorithm = statement_algorithm(alg, allow_rs1)
        .ok_or(Error::AlgorithmUnsupported { alg: Some(alg) })?;
    let unfit = || Error::AttestationCertificateInvalid {
        detail: format!("its public key does not fit the statement's algorithm {alg}"),
    };
    if !cert.key_fits(alg) {
        return Err(unfit());
    }
    let key = ParsedPublicKey::new(algorithm, cert.spki_der()).map_err(|_| unfit())?;
    if sig.is_empty() || key.verify_sig(message, sig).is_err() {
        return Err(Error::AttestationSignatureInvalid { fmt });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cbor(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::ser::into_writer(v, &mut out).unwrap();
        out
    }

    fn t(s: &str) -> Value {
        Value::Text(s.into())
    }

    #[test]
    fn parses_the_three_members() {
        let raw = cbor(&Value::Map(vec![
            (t("fmt"), t("none")),
            (t("attStmt"), Value::Map(vec![])),
            (t("authData"), Value::Bytes(vec![1, 2])),
        ]));
        let ao = AttestationObject::parse(&raw).unwrap();
        assert_eq!(ao.fmt, "none");
        assert!(ao.att_stmt.is_empty());
        assert_eq!(ao.auth_data, vec![1, 2]);
    }

    #[test]
    fn refuses_malformed_objects() {
        let good = vec![
            (t("fmt"), t("none")),
            (t("attStmt"), Value::Map(vec![])),
            (t("authData"), Value::Bytes(vec![1, 2])),
        ];
        let mut dup = good.clone();
        dup.push((t("fmt"), t("packed")));
        let mut trailing = cbor(&Value::Map(good.clone()));
        trailing.push(0);
        let cases = vec![
            vec![],
            trailing,
            cbor(&Value::Map(dup)),
            cbor(&Value::Map(good[..2].to_vec())),
            cbor(&Value::Array(vec![])),
            cbor(&Value::Map(vec![
                (t("fmt"), Value::Integer(1.into())),
                (t("attStmt"), Value::Map(vec![])),
                (t("authData"), Value::Bytes(vec![])),
            ])),
            cbor(&Value::Map(vec![
                (t("fmt"), t("none")),
                (
                    t("attStmt"),
                    Value::Map(vec![(Value::Integer(1.into()), t("x"))]),
                ),
                (t("authData"), Value::Bytes(vec![])),
            ])),
        ];
        for c in cases {
            assert_eq!(
                AttestationObject::parse(&c).unwrap_err().reason(),
                "attestation-object-malformed",
                "{c:?}"
            );
        }
    }
}
