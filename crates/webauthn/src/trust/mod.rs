//! Attestation trust: does an x5c chain lead to a root the operator trusts, and which
//! authenticator model is an AAGUID?
//!
//! [`TrustStore::builtin`] holds the roots tapgate ships (`data/roots/`, sources in
//! `data/README.md`); operators add their own with [`TrustStore::add_pem`]. A root is trusted
//! only because it is in the store: a self-signed certificate at the end of x5c proves
//! nothing, and a store root is used as stored, never the copy an authenticator sends.
//!
//! [`authenticator_name`] reads the shipped AAGUID list (`data/aaguids.tsv`). Names are for
//! people; an AAGUID alone proves nothing unless the attestation was verified to a root.

mod chain;

use std::fmt;
use std::time::SystemTime;

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::Error;
use crate::error::Excerpt;
use chain::Cert;

/// The roots shipped in `data/roots/`, with the name each is shown under.
const BUILTIN_ROOTS: &[(&str, &str)] = &[
    (
        "Yubico U2F Root CA Serial 457200631",
        include_str!("../../data/roots/yubico-u2f-root-ca-457200631.pem"),
    ),
    (
        "Yubico FIDO Root CA Serial 450203556",
        include_str!("../../data/roots/yubico-fido-root-ca-450203556.pem"),
    ),
    (
        "Yubico Attestation Root 1",
        include_str!("../../data/roots/yubico-attestation-root-1.pem"),
    ),
    (
        "Apple WebAuthn Root CA",
        include_str!("../../data/roots/apple-webauthn-root-ca.pem"),
    ),
    (
        "Google Hardware Attestation Root",
        include_str!("../../data/roots/google-hardware-attestation-roots.pem"),
    ),
    (
        "Microsoft TPM Root Certificate Authority 2014",
        include_str!("../../data/roots/microsoft-tpm-root-ca-2014.pem"),
    ),
];

/// AAGUID (lowercase, hyphenated) TAB name, one per line; `#` starts a comment line.
const AAGUIDS: &str = include_str!("../../data/aaguids.tsv");

/// A trusted root certificate and the name it is shown under.
#[derive(Clone)]
pub(crate) struct Anchor {
    name: String,
    fingerprint: String,
    cert: Cert,
}

/// The roots attestation chains may end at: each a DER certificate with a display name.
#[derive(Clone, Default)]
pub struct TrustStore {
    anchors: Vec<Anchor>,
}

/// Where a verified chain ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustPath {
    /// The name the root was added under (e.g. "Yubico U2F Root CA Serial 457200631").
    pub root_name: String,
    /// SHA-256 of the root certificate's DER, lowercase hex.
    pub root_fingerprint: String,
}

impl fmt::Debug for TrustStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.anchors.iter().map(|a| (&a.name, &a.fingerprint)))
            .finish()
    }
}

impl TrustStore {
    /// A store that trusts nothing.
    pub fn empty() -> TrustStore {
        TrustStore::default()
    }

    /// The roots tapgate ships: Yubico (U2F, FIDO, Attestation Root 1), Apple WebAuthn,
    /// Google Hardware Attestation (android-key) and Microsoft TPM (Windows Hello).
    pub fn builtin() -> TrustStore {
        let mut store = TrustStore::empty();
        for (name, pem) in BUILTIN_ROOTS {
            // The shipped files are checked by the tests; a bad one would only be left out.
            let _ = store.add_pem(name, pem);
        }
        store
    }

    /// Adds the certificates of a PEM text (one or more `-----BEGIN CERTIFICATE-----`
    /// blocks; text between blocks is ignored) under `name`. Returns how many were new; a
    /// certificate already in the store is not added twice. Nothing is added unless every
    /// block is a readable certificate.
    pub fn add_pem(&mut self, name: &str, pem: &str) -> Result<usize, Error> {
        let bad = |detail: String| Error::TrustAnchorInvalid {
            name: name.to_string(),
            detail,
        };
        let mut parsed = Vec::new();
        for (i, der) in pem_certificates(pem).map_err(bad)?.into_iter().enumerate() {
            let cert = Cert::parse(&der).ok_or_else(|| {
                bad(format!(
                    "certificate {} is not a DER X.509 certificate",
                    i + 1
                ))
            })?;
            parsed.push(cert);
        }
        let mut added = 0;
        for cert in parsed {
            if self.anchors.iter().any(|a| a.cert.der == cert.der) {
                continue;
            }
            self.anchors.push(Anchor {
                name: name.to_string(),
                fingerprint: hex(digest::digest(&digest::SHA256, &cert.der).as_ref()),
                cert,
            });
            added += 1;
        }
        Ok(added)
    }

    /// How many root certificates the store holds.
    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }

    /// The SHA-256 fingerprints (lowercase hex) of every root, as
    /// [`TrustPath::root_fingerprint`] reports them: what a relying party
    /// keeps to re-check, later, that a credential's root is still trusted.
    pub fn fingerprints(&self) -> Vec<&str> {
        self.anchors
            .iter()
            .map(|a| a.fingerprint.as_str())
            .collect()
    }

    /// The distinct root names, in the order they were added (for messages such as "accepted:
    /// …").
    pub fn root_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for a in &self.anchors {
            if !names.contains(&a.name.as_str()) {
                names.push(&a.name);
            }
        }
        names
    }

    /// Verifies an attestation chain (`x5c`, leaf first, as [`crate::AttestationKind::Basic`]
    /// returns it) against the store at time `now`.
    ///
    /// A path runs from the leaf through certificates of `x5c` (in any order) to a root in
    /// the store; the leaf may also be a root's direct child, or itself a stored certificate.
    /// Every signature on the path is checked, every certificate (root included) must be valid
    /// at `now`, every issuer must be a CA (basicConstraints; a stored root may omit it) within
    /// its pathLenConstraint and, when it lists key usages, allowed keyCertSign.
    pub fn verify(&self, x5c: &[Vec<u8>], now: SystemTime) -> Result<TrustPath, Error> {
        let found = chain::build(&self.anchors, x5c, now)?;
        Ok(TrustPath {
            root_name: found.anchor.name.clone(),
            root_fingerprint: found.anchor.fingerprint.clone(),
        })
    }
}

/// The name of the authenticator model `aaguid` identifies, from the shipped list, or `None`
/// (always for the all-zero AAGUID that `none` attestation and U2F keys report).
pub fn authenticator_name(aaguid: &[u8; 16]) -> Option<&'static str> {
    if aaguid == &[0; 16] {
        return None;
    }
    let key = aaguid_string(aaguid);
    AAGUIDS.lines().find_map(|line| {
        let (id, name) = line.split_once('\t')?;
        (id == key).then_some(name)
    })
}

/// An AAGUID in its usual text form, e.g. `cb69481e-8ff7-4039-93ec-0a2729a154a8`.
pub fn aaguid_string(aaguid: &[u8; 16]) -> String {
    let h = hex(aaguid);
    let part = |r: std::ops::Range<usize>| h.get(r).unwrap_or_default();
    format!(
        "{}-{}-{}-{}-{}",
        part(0..8),
        part(8..12),
        part(12..16),
        part(16..20),
        part(20..32)
    )
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The DER of each CERTIFICATE block of a PEM text.
fn pem_certificates(pem: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    let mut lines = pem.lines();
    while let Some(line) = lines.next() {
        let Some(label) = line
            .trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        if label != "CERTIFICATE" {
            return Err(format!(
                "it holds a \"{}\" block; only CERTIFICATE blocks are read",
                Excerpt(label)
            ));
        }
        let mut b64 = String::new();
        let mut closed = false;
        for line in lines.by_ref() {
            let line = line.trim();
            if line == "-----END CERTIFICATE-----" {
                closed = true;
                break;
            }
            if line.starts_with("-----") {
                break;
            }
            b64.push_str(line);
        }
        if !closed {
            return Err(format!("certificate {} is not closed", out.len() + 1));
        }
        let der = STANDARD
            .decode(b64.as_bytes())
            .map_err(|_| format!("certificate {} is not valid base64", out.len() + 1))?;
        out.push(der);
    }
    if out.is_empty() {
        return Err("it holds no -----BEGIN CERTIFICATE----- block".to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aaguid_text_form() {
        let a = [
            0xcb, 0x69, 0x48, 0x1e, 0x8f, 0xf7, 0x40, 0x39, 0x93, 0xec, 0x0a, 0x27, 0x29, 0xa1,
            0x54, 0xa8,
        ];
        assert_eq!(aaguid_string(&a), "cb69481e-8ff7-4039-93ec-0a2729a154a8");
        assert_eq!(authenticator_name(&a), Some("YubiKey 5 Series"));
        assert_eq!(authenticator_name(&[0; 16]), None);
        assert_eq!(authenticator_name(&[0xab; 16]), None);
    }

    #[test]
    fn pem_errors_are_specific() {
        assert!(pem_certificates("").unwrap_err().contains("no -----BEGIN"));
        assert!(
            pem_certificates("-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----")
                .unwrap_err()
                .contains("PRIVATE KEY")
        );
        assert!(
            pem_certificates("-----BEGIN CERTIFICATE-----\nAA==\n")
                .unwrap_err()
                .contains("not closed")
        );
        assert!(
            pem_certificates("-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----")
                .unwrap_err()
                .contains("base64")
        );
    }
}
