//! Attestation objects (WebAuthn L3 §6.5) and the attestation statement formats (§8).
//!
//! One file per format. A format gets the parsed statement and everything it may sign over,
//! and answers with the [`AttestationKind`] it proved. Formats tapgate does not verify are
//! refused with `attestation-format-unsupported` rather than accepted unverified: a relying
//! party that wants no attestation asks for `"none"`, and browsers then send `none`.
//!
//! Trust (does the x5c chain end at a root we trust?) is deliberately not decided here: the
//! chain is returned for the caller's policy.

mod certificate;
mod fido_u2f;
mod none;
mod packed;

use std::time::SystemTime;

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
    match stmt.get("sig") {
        Some(Value::Bytes(b)) => Ok(b),
        Some(_) => Err(Error::AttestationStatementMalformed {
            fmt,
            detail: "sig is not bytes".into(),
        }),
        None => Err(Error::AttestationStatementMalformed {
            fmt,
            detail: "sig is missing".into(),
        }),
    }
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
