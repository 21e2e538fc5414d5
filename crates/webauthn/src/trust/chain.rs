//! Certification path building and validation (the parts of RFC 5280 §6 attestation chains
//! need): name chaining, every signature, validity at `now`, basicConstraints CA and
//! pathLenConstraint on issuers, keyUsage keyCertSign where present, and no unrecognised
//! critical extension anywhere on the path.
//!
//! Signatures are checked with aws-lc-rs. SHA-1 and RSA-PSS certificate signatures are not
//! accepted (no current attestation CA uses them; SHA-1 certificates can be forged).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{self, ParsedPublicKey, VerificationAlgorithm};
use x509_cert::Certificate;
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::der::{Decode as _, Encode as _};
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage};

use crate::asn1;
use crate::attestation::certificate::{OID_P256, OID_P384, OID_P521};
use crate::error::Excerpt;
use crate::{Error, trust::Anchor};

const OID_BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const OID_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
/// Extensions whose criticality this verifier honours: it processes the first two, and the
/// others constrain nothing an attestation chain relies on.
const UNDERSTOOD: [ObjectIdentifier; 7] = [
    OID_BASIC_CONSTRAINTS,
    OID_KEY_USAGE,
    ObjectIdentifier::new_unwrap("2.5.29.37"), // extKeyUsage
    ObjectIdentifier::new_unwrap("2.5.29.17"), // subjectAltName (TPM AIK certificates)
    ObjectIdentifier::new_unwrap("2.5.29.32"), // certificatePolicies (any policy accepted)
    ObjectIdentifier::new_unwrap("2.5.29.14"), // subjectKeyIdentifier
    ObjectIdentifier::new_unwrap("2.5.29.35"), // authorityKeyIdentifier
];

const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const OID_ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const OID_ECDSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4");
const OID_RSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const OID_RSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const OID_RSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");

/// At most this many certificates in x5c, and intermediates on a path.
pub(crate) const MAX_X5C: usize = 16;
const MAX_INTERMEDIATES: usize = 8;
/// Signature checks one verification may spend looking for a path.
const MAX_SIGNATURE_CHECKS: usize = 64;

/// A parsed certificate with the byte strings path building compares.
#[derive(Debug, Clone)]
pub(crate) struct Cert {
    pub der: Vec<u8>,
    pub cert: Certificate,
    /// The DER `tbsCertificate`, exactly as signed.
    tbs: Vec<u8>,
    subject: Vec<u8>,
    issuer: Vec<u8>,
    spki: Vec<u8>,
}

impl Cert {
    pub(crate) fn parse(der: &[u8]) -> Option<Cert> {
        let cert = Certificate::from_der(der).ok()?;
        let outer = asn1::read_one(der)?;
        let tbs = outer.children()?.first()?.raw.to_vec();
        let t = &cert.tbs_certificate;
        Some(Cert {
            der: der.to_vec(),
            tbs,
            subject: t.subject.to_der().ok()?,
            issuer: t.issuer.to_der().ok()?,
            spki: t.subject_public_key_info.to_der().ok()?,
            cert,
        })
    }

    /// The subject for messages (RFC 4514 form), escaped and shortened by the error type.
    pub(crate) fn subject_text(&self) -> String {
        let s = self.cert.tbs_certificate.subject.to_string();
        if s.is_empty() {
            "(no subject)".to_string()
        } else {
            s
        }
    }

    fn issuer_text(&self) -> String {
        self.cert.tbs_certificate.issuer.to_string()
    }

    fn is_self_issued(&self) -> bool {
        self.subject == self.issuer
    }

    fn valid_at(&self, now: Duration) -> bool {
        let v = &self.cert.tbs_certificate.validity;
        now >= v.not_before.to_unix_duration() && now <= v.not_after.to_unix_duration()
    }

    /// Every extension at most once, and no critical one this verifier does not understand.
    fn check_extensions(&self) -> Result<(), Error> {
        let exts = self
            .cert
            .tbs_certificate
            .extensions
            .as_deref()
            .unwrap_or_default();
        for (i, ext) in exts.iter().enumerate() {
            if exts.iter().skip(i + 1).any(|e| e.extn_id == ext.extn_id) {
                return Err(invalid(format!(
                    "\"{}\" has the extension {} twice",
                    Excerpt(&self.subject_text()),
                    ext.extn_id
                )));
            }
            if ext.critical && !UNDERSTOOD.contains(&ext.extn_id) {
                return Err(invalid(format!(
                    "\"{}\" has the critical extension {}, which this server does not understand",
                    Excerpt(&self.subject_text()),
                    ext.extn_id
                )));
            }
        }
        Ok(())
    }

    fn extension(&self, oid: ObjectIdentifier) -> Option<&[u8]> {
        self.cert
            .tbs_certificate
            .extensions
            .iter()
            .flatten()
            .find(|e| e.extn_id == oid)
            .map(|e| e.extn_value.as_bytes())
    }
}

fn invalid(detail: String) -> Error {
    Error::AttestationChainInvalid { detail }
}

fn untrusted(detail: String) -> Error {
    Error::AttestationUntrusted { detail }
}

/// How far a failed attempt got: the most informative failure is reported.
fn rank(e: &Error) -> u8 {
    match e {
        Error::AttestationChainExpired { .. } => 3,
        Error::AttestationChainInvalid { .. } => 2,
        _ => 1,
    }
}

/// The result of a successful search: the anchor the path ends at.
pub(crate) struct Found<'s> {
    pub anchor: &'s Anchor,
}

/// Finds a path from `x5c[0]` through certificates of `x5c[1..]` to one of `anchors`.
pub(crate) fn build<'s>(
    anchors: &'s [Anchor],
    x5c: &[Vec<u8>],
    now: SystemTime,
) -> Result<Found<'s>, Error> {
    if x5c.is_empty() {
        return Err(untrusted(
            "the authenticator sent no certificate chain".to_string(),
        ));
    }
    if x5c.len() > MAX_X5C {
        return Err(invalid(format!(
            "it holds {} certificates, more than the {MAX_X5C} accepted",
            x5c.len()
        )));
    }
    let certs = x5c
        .iter()
        .enumerate()
        .map(|(i, der)| {
            Cert::parse(der).ok_or_else(|| {
                invalid(format!(
                    "certificate {} of the chain is not a DER X.509 certificate",
                    i + 1
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let now = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let Some(leaf) = certs.first() else {
        return Err(untrusted(
            "the authenticator sent no certificate chain".into(),
        ));
    };
    // The operator may trust one exact certificate (a self-signed batch certificate).
    if let Some(anchor) = anchors.iter().find(|a| a.cert.der == leaf.der) {
        check_time(leaf, now)?;
        return Ok(Found { anchor });
    }
    check_time(leaf, now)?;
    leaf.check_extensions()?;
    let mut search = Search {
        anchors,
        certs: &certs,
        now,
        checks: 0,
        best: None,
    };
    let mut used = vec![0usize];
    if let Some(anchor) = search.from(leaf, &mut used) {
        return Ok(Found { anchor });
    }
    Err(search.best.unwrap_or_else(|| {
        untrusted(format!(
            "no trusted root issued \"{}\"",
            Excerpt(&leaf.issuer_text())
        ))
    }))
}

fn check_time(c: &Cert, now: Duration) -> Result<(), Error> {
    if c.valid_at(now) {
        Ok(())
    } else {
        Err(Error::AttestationChainExpired {
            subject: c.subject_text(),
        })
    }
}

struct Search<'s, 'c> {
    anchors: &'s [Anchor],
    certs: &'c [Cert],
    now: Duration,
    checks: usize,
    best: Option<Error>,
}

impl<'s> Search<'s, '_> {
    fn note(&mut self, e: Error) {
        if self.best.as_ref().is_none_or(|b| rank(&e) > rank(b)) {
            self.best = Some(e);
        }
    }

    /// Looks for an issuer of `child`; `used` holds the x5c indexes on the path so far (the
    /// leaf first), so `used.len() - 1` intermediates lie below a new issuer.
    fn from(&mut self, child: &Cert, used: &mut Vec<usize>) -> Option<&'s Anchor> {
        let below = used.len().saturating_sub(1);
        // A root in the store first: a copy of it in x5c adds nothing.
        let anchors = self.anchors;
        for anchor in anchors.iter().filter(|a| a.cert.subject == child.issuer) {
            if !self.signed_by(child, &anchor.cert, true) {
                continue;
            }
            match check_issuer(&anchor.cert, below, self.now, true) {
                Ok(()) => return Some(anchor),
                Err(e) => self.note(e),
            }
        }
        if below >= MAX_INTERMEDIATES {
            self.note(invalid(format!(
                "it is longer than the {MAX_INTERMEDIATES} intermediate certificates accepted"
            )));
            return None;
        }
        let certs = self.certs;
        for (i, candidate) in certs.iter().enumerate() {
            if used.contains(&i)
                || candidate.subject != child.issuer
                || anchors.iter().any(|a| a.cert.der == candidate.der)
            {
                continue;
            }
            if !self.signed_by(child, candidate, false) {
                continue;
            }
            if let Err(e) = check_issuer(candidate, below, self.now, false) {
                self.note(e);
                continue;
            }
            used.push(i);
            if let Some(anchor) = self.from(candidate, used) {
                return Some(anchor);
            }
            used.pop();
            if candidate.is_self_issued() {
                self.note(untrusted(format!(
                    "it ends at the self-signed certificate \"{}\", which is not a trusted root",
                    Excerpt(&candidate.subject_text())
                )));
            }
        }
        None
    }

    /// Did `issuer`'s key sign `child`? Failures are noted with the reason.
    fn signed_by(&mut self, child: &Cert, issuer: &Cert, issuer_is_anchor: bool) -> bool {
        if self.checks >= MAX_SIGNATURE_CHECKS {
            self.note(invalid("it offers too many candidate paths".to_string()));
            return false;
        }
        self.checks += 1;
        match verify_signature(child, issuer) {
            Ok(()) => true,
            Err(SignatureProblem::Unsupported(what)) => {
                self.note(invalid(format!(
                    "\"{}\" is signed with {what}, which this server does not accept",
                    Excerpt(&child.subject_text())
                )));
                false
            }
            Err(SignatureProblem::Bad) if issuer_is_anchor => {
                self.note(untrusted(format!(
                    "\"{}\" names the trusted root \"{}\" as issuer but was not signed by it",
                    Excerpt(&child.subject_text()),
                    Excerpt(&issuer.subject_text())
                )));
                false
            }
            Err(SignatureProblem::Bad) => {
                self.note(invalid(format!(
                    "the signature on \"{}\" does not verify with the key of \"{}\"",
                    Excerpt(&child.subject_text()),
                    Excerpt(&issuer.subject_text())
                )));
                false
            }
        }
    }
}

/// What an issuer must be: valid now, a CA (basicConstraints; a configured root may omit
/// it), within its path length, allowed to sign certificates when it states key usages, and
/// free of critical extensions this verifier does not understand.
fn check_issuer(c: &Cert, below: usize, now: Duration, is_anchor: bool) -> Result<(), Error> {
    check_time(c, now)?;
    c.check_extensions()?;
    let name = || Excerpt(&c.subject_text()).to_string();
    match c.extension(OID_BASIC_CONSTRAINTS) {
        Some(der) => {
            let bc = BasicConstraints::from_der(der)
                .map_err(|_| invalid(format!("\"{}\" has unreadable basicConstraints", name())))?;
            if !bc.ca {
                return Err(invalid(format!(
                    "\"{}\" issued a certificate but is not a CA",
                    name()
                )));
            }
            if let Some(max) = bc.path_len_constraint
                && below > usize::from(max)
            {
                return Err(invalid(format!(
                    "\"{}\" allows {max} intermediate certificate(s) below it, the chain has \
                     {below}",
                    name()
                )));
            }
        }
        None if is_anchor => {}
        None => {
            return Err(invalid(format!(
                "\"{}\" issued a certificate but has no basicConstraints marking it a CA",
                name()
            )));
        }
    }
    if let Some(der) = c.extension(OID_KEY_USAGE) {
        let ku = KeyUsage::from_der(der)
            .map_err(|_| invalid(format!("\"{}\" has an unreadable key usage", name())))?;
        if !ku.key_cert_sign() {
            return Err(invalid(format!(
                "the key usage of \"{}\" does not allow signing certificates",
                name()
            )));
        }
    }
    Ok(())
}

enum SignatureProblem {
    Unsupported(String),
    Bad,
}

/// Verifies `child`'s signature with `issuer`'s public key.
fn verify_signature(child: &Cert, issuer: &Cert) -> Result<(), SignatureProblem> {
    let outer = &child.cert.signature_algorithm;
    if *outer != child.cert.tbs_certificate.signature {
        // RFC 5280 §4.1.1.2: the two algorithm identifiers must be the same.
        return Err(SignatureProblem::Bad);
    }
    let key_info = &issuer.cert.tbs_certificate.subject_public_key_info;
    let key_alg = key_info.algorithm.oid;
    let curve = key_info
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
    let unsupported = || SignatureProblem::Unsupported(format!("the algorithm {}", outer.oid));
    let algorithm: &'static dyn VerificationAlgorithm = if key_alg == OID_RSA_ENCRYPTION {
        match outer.oid {
            o if o == OID_RSA_SHA256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            o if o == OID_RSA_SHA384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            o if o == OID_RSA_SHA512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            _ => return Err(unsupported()),
        }
    } else if key_alg == OID_EC_PUBLIC_KEY {
        let hash = match outer.oid {
            o if o == OID_ECDSA_SHA256 => 256,
            o if o == OID_ECDSA_SHA384 => 384,
            o if o == OID_ECDSA_SHA512 => 512,
            _ => return Err(unsupported()),
        };
        match (curve, hash) {
            (Some(c), 256) if c == OID_P256 => &signature::ECDSA_P256_SHA256_ASN1,
            (Some(c), 384) if c == OID_P256 => &signature::ECDSA_P256_SHA384_ASN1,
            (Some(c), 512) if c == OID_P256 => &signature::ECDSA_P256_SHA512_ASN1,
            (Some(c), 256) if c == OID_P384 => &signature::ECDSA_P384_SHA256_ASN1,
            (Some(c), 384) if c == OID_P384 => &signature::ECDSA_P384_SHA384_ASN1,
            (Some(c), 512) if c == OID_P384 => &signature::ECDSA_P384_SHA512_ASN1,
            (Some(c), 256) if c == OID_P521 => &signature::ECDSA_P521_SHA256_ASN1,
            (Some(c), 384) if c == OID_P521 => &signature::ECDSA_P521_SHA384_ASN1,
            (Some(c), 512) if c == OID_P521 => &signature::ECDSA_P521_SHA512_ASN1,
            _ => {
                return Err(SignatureProblem::Unsupported(
                    "an elliptic curve key of an unsupported curve".to_string(),
                ));
            }
        }
    } else if key_alg == OID_ED25519 && outer.oid == OID_ED25519 {
        &signature::ED25519
    } else {
        return Err(unsupported());
    };
    let key = ParsedPublicKey::new(algorithm, &issuer.spki).map_err(|_| SignatureProblem::Bad)?;
    let sig = child
        .cert
        .signature
        .as_bytes()
        .ok_or(SignatureProblem::Bad)?;
    if sig.is_empty() {
        return Err(SignatureProblem::Bad);
    }
    key.verify_sig(&child.tbs, sig)
        .map_err(|_| SignatureProblem::Bad)
}
