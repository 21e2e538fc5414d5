//! The attestation certificate checks a format asks for (§8.2.1 for packed). Chain building and
//! trust anchors are the caller's policy and are not done here.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_cert::Certificate;
use x509_cert::der::asn1::{
    Ia5StringRef, ObjectIdentifier, OctetString, PrintableStringRef, Utf8StringRef,
};
use x509_cert::der::{Decode as _, Encode as _};
use x509_cert::ext::pkix::BasicConstraints;

use crate::Error;

const OID_OU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.11");
const OID_BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
/// id-fido-gen-ce-aaguid: the authenticator model, in FIDO attestation certificates.
const OID_FIDO_AAGUID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.45724.1.1.4");

fn invalid(detail: impl Into<String>) -> Error {
    Error::AttestationCertificateInvalid {
        detail: detail.into(),
    }
}

/// A parsed attestation certificate and the DER of its public key.
pub(super) struct AttestationCertificate {
    cert: Certificate,
    spki_der: Vec<u8>,
}

impl AttestationCertificate {
    /// Parses one DER certificate (no trailing bytes).
    pub(super) fn parse(der: &[u8]) -> Result<Self, Error> {
        let cert =
            Certificate::from_der(der).map_err(|_| invalid("not a DER X.509 certificate"))?;
        let spki_der = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|_| invalid("unreadable public key"))?;
        Ok(AttestationCertificate { cert, spki_der })
    }

    pub(super) fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The certificate's validity period must contain `now`.
    pub(super) fn check_validity(&self, now: SystemTime) -> Result<(), Error> {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let validity = &self.cert.tbs_certificate.validity;
        if now < validity.not_before.to_unix_duration()
            || now > validity.not_after.to_unix_duration()
        {
            return Err(Error::AttestationCertificateExpired);
        }
        Ok(())
    }

    /// §8.2.1 requirements for a packed attestation leaf certificate.
    pub(super) fn check_packed_leaf(&self, aaguid: &[u8; 16]) -> Result<(), Error> {
        let tbs = &self.cert.tbs_certificate;
        if tbs.version != x509_cert::Version::V3 {
            return Err(invalid("it is not an X.509 version 3 certificate"));
        }
        let ou_ok = tbs
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

        let mut seen_bc = false;
        let mut seen_aaguid = false;
        for ext in tbs.extensions.iter().flatten() {
            if ext.extn_id == OID_BASIC_CONSTRAINTS {
                if std::mem::replace(&mut seen_bc, true) {
                    return Err(invalid("basicConstraints appears twice"));
                }
                let bc = BasicConstraints::from_der(ext.extn_value.as_bytes())
                    .map_err(|_| invalid("unreadable basicConstraints"))?;
                if bc.ca {
                    return Err(invalid("it is a CA certificate, not an authenticator's"));
                }
            } else if ext.extn_id == OID_FIDO_AAGUID {
                if std::mem::replace(&mut seen_aaguid, true) {
                    return Err(invalid("the AAGUID extension appears twice"));
                }
                // §8.2.1: this extension MUST NOT be marked critical.
                if ext.critical {
                    return Err(invalid("the AAGUID extension is marked critical"));
                }
                let inner = OctetString::from_der(ext.extn_value.as_bytes())
                    .map_err(|_| invalid("unreadable AAGUID extension"))?;
                if inner.as_bytes() != aaguid.as_slice() {
                    return Err(Error::AttestationAaguidMismatch);
                }
            }
        }
        // An absent basicConstraints extension means CA=false (RFC 5280 §4.2.1.9), which is
        // what §8.2.1 asks for; some authenticators omit it.
        Ok(())
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
