//! The attestation certificate checks the formats ask for: §8.2.1 (packed), §8.3.1 (tpm AIK),
//! and the key and extension lookups of android-key and apple. Chain building and trust
//! anchors live in [`crate::trust`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_cert::Certificate;
use x509_cert::der::asn1::{
    Ia5StringRef, ObjectIdentifier, OctetString, PrintableStringRef, Utf8StringRef,
};
use x509_cert::der::{Decode as _, Encode as _, Tagged as _};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, SubjectAltName};

use crate::Error;
use crate::asn1;
use crate::cose::{KeyComponents, PublicKey};

const OID_OU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.11");
const OID_BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const OID_SUBJECT_ALT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");
const OID_EXTENDED_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
/// id-fido-gen-ce-aaguid: the authenticator model, in FIDO attestation certificates.
const OID_FIDO_AAGUID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.45724.1.1.4");
/// tcg-kp-AIKCertificate: the extended key usage of a TPM attestation identity key.
const OID_TCG_KP_AIK: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.8.3");
const OID_TCG_AT_TPM_MANUFACTURER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.2.1");
const OID_TCG_AT_TPM_MODEL: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.2.2");
const OID_TCG_AT_TPM_VERSION: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.2.3");

const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
pub(crate) const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
pub(crate) const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
pub(crate) const OID_P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

fn invalid(detail: impl Into<String>) -> Error {
    Error::AttestationCertificateInvalid {
        detail: detail.into(),
    }
}

/// A parsed attestation certificate and the DER of its public key.
pub(crate) struct AttestationCertificate {
    cert: Certificate,
    spki_der: Vec<u8>,
}

impl AttestationCertificate {
    /// Parses one DER certificate (no trailing bytes).
    pub(crate) fn parse(der: &[u8]) -> Result<Self, Error> {
        let cert =
            Certificate::from_der(der).map_err(|_| invalid("not a DER X.509 certificate"))?;
        let spki_der = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|_| invalid("unreadable public key"))?;
        Ok(AttestationCertificate { cert, spki_der })
    }

    pub(crate) fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// Does the certificate's key type (SubjectPublicKeyInfo algorithm and curve) fit COSE
    /// algorithm `alg`? Checked before the key is handed to aws-lc-rs, so a certificate cannot
    /// relabel its key.
    pub(crate) fn key_fits(&self, alg: i64) -> bool {
        let info = &self.cert.tbs_certificate.subject_public_key_info.algorithm;
        let curve = info
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
        if !self.key_parameters_ok() {
            return false;
        }
        match alg {
            -7 => info.oid == OID_EC_PUBLIC_KEY && curve == Some(OID_P256),
            -35 => info.oid == OID_EC_PUBLIC_KEY && curve == Some(OID_P384),
            -36 => info.oid == OID_EC_PUBLIC_KEY && curve == Some(OID_P521),
            -8 => info.oid == OID_ED25519,
            -257 | -258 | -259 | -37 | -38 | -39 | -65535 => info.oid == OID_RSA_ENCRYPTION,
            _ => false,
        }
    }

    /// The SubjectPublicKeyInfo parameters are the ones its algorithm requires: NULL for RSA
    /// (RFC 3279), absent for Ed25519 (RFC 8410); for EC keys the named curve is checked where
    /// the curve is compared.
    fn key_parameters_ok(&self) -> bool {
        let info = &self.cert.tbs_certificate.subject_public_key_info.algorithm;
        if info.oid == OID_RSA_ENCRYPTION {
            info.parameters
                .as_ref()
                .is_some_and(|p| p.tag() == x509_cert::der::Tag::Null && p.value().is_empty())
        } else if info.oid == OID_ED25519 {
            info.parameters.is_none()
        } else {
            true
        }
    }

    /// The certificate's validity period must contain `now`.
    pub(crate) fn check_validity(&self, now: SystemTime) -> Result<(), Error> {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let validity = &self.cert.tbs_certificate.validity;
        if now < validity.not_before.to_unix_duration()
            || now > validity.not_after.to_unix_duration()
        {
            return Err(Error::AttestationCertificateExpired);
        }
        Ok(())
    }

    /// The extension `oid`, if the certificate has it once; twice is refused (RFC 5280 §4.2).
    pub(crate) fn extension(&self, oid: ObjectIdentifier) -> Result<Option<&Extension>, Error> {
        let mut found = None;
        for ext in self.extensions() {
            if ext.extn_id == oid && found.replace(ext).is_some() {
                return Err(invalid(format!("the extension {oid} appears twice")));
            }
        }
        Ok(found)
    }

    fn extensions(&self) -> impl Iterator<Item = &Extension> {
        self.cert.tbs_certificate.extensions.iter().flatten()
    }

    /// basicConstraints, when present, must say CA=false. An absent extension means CA=false
    /// (RFC 5280 §4.2.1.9), which is what the formats ask for; some authenticators omit it.
    fn check_not_ca(&self) -> Result<(), Error> {
        if let Some(ext) = self.extension(OID_BASIC_CONSTRAINTS)? {
            let bc = BasicConstraints::from_der(ext.extn_value.as_bytes())
                .map_err(|_| invalid("unreadable basicConstraints"))?;
            if bc.ca {
                return Err(invalid("it is a CA certificate, not an authenticator's"));
            }
        }
        Ok(())
    }

    /// When the certificate names the authenticator model (id-fido-gen-ce-aaguid), it must be
    /// the model in the authenticator data.
    fn check_aaguid(&self, aaguid: &[u8; 16], forbid_critical: bool) -> Result<(), Error> {
        if let Some(ext) = self.extension(OID_FIDO_AAGUID)? {
            if forbid_critical && ext.critical {
                return Err(invalid("the AAGUID extension is marked critical"));
            }
            let inner = OctetString::from_der(ext.extn_value.as_bytes())
                .map_err(|_| invalid("unreadable AAGUID extension"))?;
            if inner.as_bytes() != aaguid.as_slice() {
                return Err(Error::AttestationAaguidMismatch);
            }
        }
        Ok(())
    }

    fn check_v3(&self) -> Result<(), Error> {
        if self.cert.tbs_certificate.version != x509_cert::Version::V3 {
            return Err(invalid("it is not an X.509 version 3 certificate"));
        }
        Ok(())
    }

    /// §8.2.1 requirements for a packed attestation leaf certificate.
    pub(crate) fn check_packed_leaf(&self, aaguid: &[u8; 16]) -> Result<(), Error> {
        self.check_v3()?;
        let ou_ok = self
            .cert
            .tbs_certificate
            .subject
            .0
            .iter()
            .flat_map(|rdn| rdn.0.iter())
            .any(|atv| {
                atv.oid == OID_OU
                    && attribute_text(&atv.value).as_deref() == Some("Authenticator Attestation")
            });
        if !ou_ok {
            return Err(invalid(
                "its subject OU is not \"Authenticator Attestation\"",
            ));
        }
        self.check_not_ca()?;
        // §8.2.1: the AAGUID extension MUST NOT be marked critical.
        self.check_aaguid(aaguid, true)
    }

    /// §8.3.1 requirements for a TPM attestation identity key (AIK) certificate.
    pub(crate) fn check_tpm_aik(&self, aaguid: &[u8; 16]) -> Result<(), Error> {
        self.check_v3()?;
        if !self.cert.tbs_certificate.subject.0.is_empty() {
            return Err(invalid("a TPM AIK certificate must have an empty subject"));
        }
        // The TPM's identity is in a directoryName of the subject alternative name (TCG EK
        // Credential Profile §3.2.9). TPMs put the three attributes in one RDN or in three;
        // either is read.
        let san = self
            .extension(OID_SUBJECT_ALT_NAME)?
            .ok_or_else(|| invalid("it has no subject alternative name naming the TPM"))?;
        let san = SubjectAltName::from_der(san.extn_value.as_bytes())
            .map_err(|_| invalid("unreadable subject alternative name"))?;
        let has = |oid: ObjectIdentifier| {
            san.0.iter().any(|name| match name {
                GeneralName::DirectoryName(dn) => {
                    dn.0.iter().flat_map(|rdn| rdn.0.iter()).any(|atv| {
                        atv.oid == oid && attribute_text(&atv.value).is_some_and(|t| !t.is_empty())
                    })
                }
                _ => false,
            })
        };
        for (oid, what) in [
            (OID_TCG_AT_TPM_MANUFACTURER, "manufacturer"),
            (OID_TCG_AT_TPM_MODEL, "model"),
            (OID_TCG_AT_TPM_VERSION, "version"),
        ] {
            if !has(oid) {
                return Err(invalid(format!(
                    "its subject alternative name does not give the TPM {what}"
                )));
            }
        }
        let eku = self
            .extension(OID_EXTENDED_KEY_USAGE)?
            .ok_or_else(|| invalid("it has no extended key usage"))?;
        let eku = ExtendedKeyUsage::from_der(eku.extn_value.as_bytes())
            .map_err(|_| invalid("unreadable extended key usage"))?;
        if !eku.0.contains(&OID_TCG_KP_AIK) {
            return Err(invalid(
                "its extended key usage is not tcg-kp-AIKCertificate (2.23.133.8.3)",
            ));
        }
        self.check_not_ca()?;
        self.check_aaguid(aaguid, false)
    }

    /// Is the certificate's public key exactly the credential's key? (android-key, apple)
    pub(crate) fn key_matches(&self, credential: &PublicKey) -> bool {
        if !self.key_parameters_ok() {
            return false;
        }
        let spki = &self.cert.tbs_certificate.subject_public_key_info;
        let Some(bits) = spki.subject_public_key.as_bytes() else {
            return false;
        };
        match credential.components() {
            Some(KeyComponents::Ec2 { crv, x, y }) => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
                let curve_crv = match curve {
                    Some(c) if c == OID_P256 => 1,
                    Some(c) if c == OID_P384 => 2,
                    Some(c) if c == OID_P521 => 3,
                    _ => return false,
                };
                spki.algorithm.oid == OID_EC_PUBLIC_KEY
                    && curve_crv == *crv
                    && bits.split_first().is_some_and(|(&tag, point)| {
                        tag == 0x04
                            && point.len() == x.len() + y.len()
                            && point == [&x[..], &y[..]].concat()
                    })
            }
            Some(KeyComponents::Ed25519 { x }) => {
                spki.algorithm.oid == OID_ED25519 && bits == x.as_slice()
            }
            Some(KeyComponents::Rsa { n, e }) => {
                spki.algorithm.oid == OID_RSA_ENCRYPTION
                    && rsa_numbers(bits)
                        .is_some_and(|(cn, ce)| cn == n.as_slice() && ce == e.as_slice())
            }
            None => false,
        }
    }
}

/// `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`, magnitudes.
fn rsa_numbers(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let seq = asn1::read_one(der)?;
    if !seq.is_universal(asn1::SEQUENCE) {
        return None;
    }
    match seq.children()?.as_slice() {
        [n, e] if n.is_universal(asn1::INTEGER) && e.is_universal(asn1::INTEGER) => Some((
            asn1::unsigned_integer(n.value)?,
            asn1::unsigned_integer(e.value)?,
        )),
        _ => None,
    }
}

/// The text of a directory string attribute, whichever string type the issuer used.
fn attribute_text(value: &x509_cert::der::Any) -> Option<String> {
    if let Ok(s) = value.decode_as::<Utf8StringRef<'_>>() {
        return Some(s.as_str().to_owned());
    }
    if let Ok(s) = value.decode_as::<PrintableStringRef<'_>>() {
        return Some(s.as_str().to_owned());
    }
    value
        .decode_as::<Ia5StringRef<'_>>()
        .ok()
        .map(|s| s.as_str().to_owned())
}
