//! `android-key` attestation (§8.4): Android's hardware-backed Keystore attests the new key.
//!
//! The leaf certificate is for the credential key itself, and its key attestation extension
//! (OID 1.3.6.1.4.1.11129.2.1.17, Android's KeyDescription) records the challenge the key was
//! made for and the key's authorizations. Only the fields WebAuthn checks are read:
//!
//! ```text
//! KeyDescription ::= SEQUENCE { attestationVersion INTEGER, attestationSecurityLevel ENUMERATED,
//!     keyMintVersion INTEGER, keyMintSecurityLevel ENUMERATED, attestationChallenge OCTET STRING,
//!     uniqueId OCTET STRING, softwareEnforced AuthorizationList, hardwareEnforced AuthorizationList, ... }
//! AuthorizationList ::= SEQUENCE { purpose [1] EXPLICIT SET OF INTEGER OPTIONAL, ...,
//!     allApplications [600] EXPLICIT NULL OPTIONAL, ..., origin [702] EXPLICIT INTEGER OPTIONAL, ... }
//! ```

use x509_cert::der::asn1::ObjectIdentifier;

use super::certificate::AttestationCertificate;
use super::{Context, Statement, alg_field, sig, verify_with_certificate, x5c};
use crate::asn1::{self, Class, Tlv};
use crate::{AttestationKind, Error};

const FMT: &str = "android-key";

const OID_KEY_DESCRIPTION: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.11129.2.1.17");

const TAG_PURPOSE: u32 = 1;
const TAG_ALL_APPLICATIONS: u32 = 600;
const TAG_ORIGIN: u32 = 702;
const KM_PURPOSE_SIGN: i64 = 2;
const KM_ORIGIN_GENERATED: i64 = 0;

fn cert_invalid(detail: &str) -> Error {
    Error::AttestationCertificateInvalid {
        detail: detail.into(),
    }
}

pub(super) fn verify(stmt: &Statement, ctx: &Context<'_>) -> Result<AttestationKind, Error> {
    let alg = alg_field(stmt, FMT)?;
    let sig = sig(stmt, FMT)?;
    let chain = x5c(stmt, FMT)?.ok_or_else(|| Error::AttestationStatementMalformed {
        fmt: FMT,
        detail: "x5c is missing".into(),
    })?;
    let leaf = AttestationCertificate::parse(chain.first().ok_or(
        Error::AttestationStatementMalformed {
            fmt: FMT,
            detail: "x5c is empty".into(),
        },
    )?)?;

    // The credential key signed authenticatorData || clientDataHash, and the certificate is
    // for that very key.
    let signed = [ctx.auth_data_raw, ctx.client_data_hash].concat();
    verify_with_certificate(&leaf, alg, false, &signed, sig, FMT)?;
    if !leaf.key_matches(ctx.credential_key) {
        return Err(Error::AttestationPublicKeyMismatch { fmt: FMT });
    }

    let ext = leaf
        .extension(OID_KEY_DESCRIPTION)?
        .ok_or_else(|| cert_invalid("it has no Android key attestation extension"))?;
    let description = KeyDescription::parse(ext.extn_value.as_bytes())
        .ok_or_else(|| cert_invalid("its Android key attestation extension is unreadable"))?;
    if description.challenge != ctx.client_data_hash {
        return Err(Error::AttestationNonceMismatch { fmt: FMT });
    }
    // Authorizations: the union of what software and the TEE enforce (tapgate does not offer a
    // TEE-only policy).
    let lists = [&description.software, &description.hardware];
    if lists.iter().any(|l| l.all_applications) {
        return Err(cert_invalid(
            "the key may be used by every app on the device (allApplications); a passkey must \
             be bound to one site",
        ));
    }
    // origin and purpose must have the required values wherever they are given. The W3C test
    // vector gives neither (empty lists), so an absent field is accepted; real KeyMint
    // attestations always give both.
    if lists
        .iter()
        .filter_map(|l| l.origin)
        .any(|o| o != KM_ORIGIN_GENERATED)
    {
        return Err(cert_invalid(
            "the key was imported into the device, not generated in it",
        ));
    }
    if lists
        .iter()
        .filter_map(|l| l.purpose.as_ref())
        .any(|p| p.as_slice() != [KM_PURPOSE_SIGN])
    {
        return Err(cert_invalid(
            "the key may be used for other purposes than signing",
        ));
    }
    leaf.check_validity(ctx.now)?;
    Ok(AttestationKind::Basic { x5c: chain })
}

struct KeyDescription<'a> {
    challenge: &'a [u8],
    software: AuthorizationList,
    hardware: AuthorizationList,
}

#[derive(Default)]
struct AuthorizationList {
    purpose: Option<Vec<i64>>,
    all_applications: bool,
    origin: Option<i64>,
}

impl<'a> KeyDescription<'a> {
    fn parse(der: &'a [u8]) -> Option<Self> {
        let seq = asn1::read_one(der)?;
        if !seq.is_universal(asn1::SEQUENCE) {
            return None;
        }
        let fields = seq.children()?;
        // Later KeyMint versions may append fields; the first eight are fixed.
        let [
            version,
            sec_level,
            km_version,
            km_sec_level,
            challenge,
            unique_id,
            sw,
            hw,
            ..,
        ] = fields.as_slice()
        else {
            return None;
        };
        let well_typed = version.is_universal(asn1::INTEGER)
            && sec_level.is_universal(asn1::ENUMERATED)
            && km_version.is_universal(asn1::INTEGER)
            && km_sec_level.is_universal(asn1::ENUMERATED)
            && challenge.is_universal(asn1::OCTET_STRING)
            && unique_id.is_universal(asn1::OCTET_STRING);
        if !well_typed {
            return None;
        }
        Some(KeyDescription {
            challenge: challenge.value,
            software: AuthorizationList::parse(sw)?,
            hardware: AuthorizationList::parse(hw)?,
        })
    }
}

impl AuthorizationList {
    fn parse(list: &Tlv<'_>) -> Option<Self> {
        if !list.is_universal(asn1::SEQUENCE) {
            return None;
        }
        let mut out = AuthorizationList::default();
        let mut seen = Vec::new();
        for field in list.children()? {
            // Every field is an EXPLICIT context tag; a repeated one would let two readers see
            // different values.
            if field.class != Class::Context || !field.constructed || seen.contains(&field.tag) {
                return None;
            }
            seen.push(field.tag);
            let inner = asn1::read_one(field.value)?;
            match field.tag {
                TAG_PURPOSE => {
                    if !inner.is_universal(asn1::SET) {
                        return None;
                    }
                    let mut purposes = Vec::new();
                    for p in inner.children()? {
                        if !p.is_universal(asn1::INTEGER) {
                            return None;
                        }
                        purposes.push(asn1::integer_i64(p.value)?);
                    }
                    out.purpose = Some(purposes);
                }
                TAG_ALL_APPLICATIONS => {
                    if !inner.is_universal(asn1::NULL) || !inner.value.is_empty() {
                        return None;
                    }
                    out.all_applications = true;
                }
                TAG_ORIGIN => {
                    if !inner.is_universal(asn1::INTEGER) {
                        return None;
                    }
                    out.origin = Some(asn1::integer_i64(inner.value)?);
                }
                _ => {}
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DER of a context-specific EXPLICIT field with tag `tag` around `inner`.
    fn explicit(tag: u32, inner: &[u8]) -> Vec<u8> {
        let mut v = if tag < 31 {
            vec![0xa0 | tag as u8]
        } else {
            // Two base-128 groups cover every tag used here.
            vec![0xbf, 0x80 | (tag >> 7) as u8, (tag & 0x7f) as u8]
        };
        v.push(inner.len() as u8);
        v.extend(inner);
        v
    }

    fn seq(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
        let body: Vec<u8> = parts.concat();
        let mut v = vec![tag, body.len() as u8];
        v.extend(body);
        v
    }

    fn description(sw: &[u8], hw: &[u8]) -> Vec<u8> {
        seq(
            0x30,
            &[
                &[0x02, 0x01, 0x04],
                &[0x0a, 0x01, 0x01],
                &[0x02, 0x01, 0x29],
                &[0x0a, 0x01, 0x01],
                &[0x04, 0x02, 0xaa, 0xbb],
                &[0x04, 0x00],
                sw,
                hw,
            ],
        )
    }

    #[test]
    fn reads_the_checked_fields() {
        let purpose = explicit(TAG_PURPOSE, &seq(0x31, &[&[0x02, 0x01, 0x02]]));
        let origin = explicit(TAG_ORIGIN, &[0x02, 0x01, 0x00]);
        let all = explicit(TAG_ALL_APPLICATIONS, &[0x05, 0x00]);
        let hw = seq(0x30, &[&purpose, &origin]);
        let sw = seq(0x30, &[&all]);
        let raw = description(&sw, &hw);
        let d = KeyDescription::parse(&raw).unwrap();
        assert_eq!(d.challenge, &[0xaa, 0xbb]);
        assert!(d.software.all_applications && !d.hardware.all_applications);
        assert_eq!(d.hardware.purpose, Some(vec![2]));
        assert_eq!(d.hardware.origin, Some(0));
    }

    #[test]
    fn refuses_repeated_or_mistyped_fields() {
        let origin = explicit(TAG_ORIGIN, &[0x02, 0x01, 0x00]);
        let twice = seq(0x30, &[&origin, &origin]);
        assert!(KeyDescription::parse(&description(&twice, &seq(0x30, &[]))).is_none());
        let wrong = explicit(TAG_ORIGIN, &[0x04, 0x01, 0x00]);
        assert!(
            KeyDescription::parse(&description(&seq(0x30, &[&wrong]), &seq(0x30, &[]))).is_none()
        );
        assert!(KeyDescription::parse(&[0x30, 0x00]).is_none());
    }
}
