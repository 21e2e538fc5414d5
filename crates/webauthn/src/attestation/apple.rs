//! `apple` anonymous attestation (§8.8): Apple's anonymization CA issues a certificate for the
//! credential key itself, with SHA-256(authenticatorData || clientDataHash) in the extension
//! 1.2.840.113635.100.8.2 as `SEQUENCE { [1] EXPLICIT OCTET STRING nonce }`.
//!
//! There is no signature in the statement: the binding is the certificate alone, so until the
//! chain is checked against Apple's root ([`crate::trust::TrustStore::verify`]) anyone can
//! mint such a certificate.

use aws_lc_rs::digest;
use x509_cert::der::asn1::ObjectIdentifier;

use super::certificate::AttestationCertificate;
use super::{Context, Statement, alg_field, x5c};
use crate::asn1::{self, Class};
use crate::error::Excerpt;
use crate::{AttestationKind, Error};

const FMT: &str = "apple";

const OID_APPLE_NONCE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113635.100.8.2");

pub(super) fn verify(stmt: &Statement, ctx: &Context<'_>) -> Result<AttestationKind, Error> {
    let malformed = |detail: &str| Error::AttestationStatementMalformed {
        fmt: FMT,
        detail: detail.into(),
    };
    // §8.8 defines only x5c. Some iOS versions also sent the credential's alg: it is accepted
    // when it names the credential key's algorithm. Anything else would be unverified data.
    for key in stmt.keys() {
        if key != "x5c" && key != "alg" {
            return Err(malformed(&format!("unexpected member {}", Excerpt(key))));
        }
    }
    if stmt.get("alg").is_some() {
        let alg = alg_field(stmt, FMT)?;
        let key_alg = ctx.credential_key.alg().cose();
        if alg != key_alg {
            return Err(Error::AttestationAlgorithmMismatch {
                statement_alg: alg,
                key_alg,
            });
        }
    }
    let chain = x5c(stmt, FMT)?.ok_or_else(|| malformed("x5c is missing"))?;
    let cred_cert =
        AttestationCertificate::parse(chain.first().ok_or_else(|| malformed("x5c is empty"))?)?;

    let ext = cred_cert.extension(OID_APPLE_NONCE)?.ok_or_else(|| {
        Error::AttestationCertificateInvalid {
            detail: "it has no Apple nonce extension".into(),
        }
    })?;
    let nonce = nonce_of(ext.extn_value.as_bytes()).ok_or_else(|| {
        Error::AttestationCertificateInvalid {
            detail: "its Apple nonce extension is unreadable".into(),
        }
    })?;
    let expected = digest::digest(
        &digest::SHA256,
        &[ctx.auth_data_raw, ctx.client_data_hash].concat(),
    );
    if nonce != expected.as_ref() {
        return Err(Error::AttestationNonceMismatch { fmt: FMT });
    }
    if !cred_cert.key_matches(ctx.credential_key) {
        return Err(Error::AttestationPublicKeyMismatch { fmt: FMT });
    }
    cred_cert.check_validity(ctx.now)?;
    Ok(AttestationKind::Basic { x5c: chain })
}

/// `SEQUENCE { [1] EXPLICIT OCTET STRING }`: exactly one [1] element; others are ignored.
fn nonce_of(der: &[u8]) -> Option<&[u8]> {
    let seq = asn1::read_one(der)?;
    if !seq.is_universal(asn1::SEQUENCE) {
        return None;
    }
    let mut found = None;
    for field in seq.children()? {
        if field.class == Class::Context && field.tag == 1 {
            if !field.constructed || found.is_some() {
                return None;
            }
            let inner = asn1::read_one(field.value)?;
            if !inner.is_universal(asn1::OCTET_STRING) {
                return None;
            }
            found = Some(inner.value);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_nonce() {
        let mut der = vec![0x30, 0x24, 0xa1, 0x22, 0x04, 0x20];
        der.extend([7u8; 32]);
        assert_eq!(nonce_of(&der), Some(&[7u8; 32][..]));
        assert_eq!(nonce_of(&der[..10]), None);
        // Two [1] elements are ambiguous.
        let twice = [0x30, 0x08, 0xa1, 0x02, 0x04, 0x00, 0xa1, 0x02, 0x04, 0x00];
        assert_eq!(nonce_of(&twice), None);
        assert_eq!(nonce_of(&[0x30, 0x00]), None);
    }
}
