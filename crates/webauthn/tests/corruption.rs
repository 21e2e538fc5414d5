//! Single-byte corruptions of every good vector are refused, except where the flipped byte is
//! provably not covered by anything the verifier checks; each such allowance is spelled out in
//! `allowed_registration_acceptance`. No corruption may panic.
//!
//! Certificate bytes are covered by the issuer's signature, which registration does not check
//! (the chain is the trust store's question). For vectors whose chain reaches a shipped root,
//! a corrupted registration that verifies must then be refused by `TrustStore::verify`; only
//! vectors from test CAs keep the "certificate bytes" allowance.

mod common;

use common::{
    Case, Field, Kind, field_bytes, fields_of, good_cases, mask, peek_attestation, positions,
    with_field,
};
use serde_json::Value as J;
use tapgate_webauthn::{
    AttestationKind, Registration, RelyingParty, StoredCredential, TrustStore, base64url_decode,
    verify_authentication, verify_registration,
};
use x509_cert::Certificate;
use x509_cert::der::{Decode as _, Encode as _};

/// What the verifier reads from clientDataJSON: type, challenge, origin, crossOrigin == true,
/// topOrigin present.
fn checked_client_data(raw: &[u8]) -> Option<(String, String, String, bool, bool)> {
    let v: J = serde_json::from_slice(raw).ok()?;
    Some((
        v.get("type")?.as_str()?.to_owned(),
        v.get("challenge")?.as_str()?.to_owned(),
        v.get("origin")?.as_str()?.to_owned(),
        v.get("crossOrigin") == Some(&J::Bool(true)),
        v.get("topOrigin").is_some_and(|t| !t.is_null()),
    ))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Byte ranges of the x5c certificates inside an attestation object.
fn x5c_ranges(att_obj: &[u8]) -> Vec<std::ops::Range<usize>> {
    let v: ciborium::Value = ciborium::de::from_reader(att_obj).unwrap();
    let stmt = v
        .as_map()
        .unwrap()
        .iter()
        .find(|(k, _)| k.as_text() == Some("attStmt"))
        .unwrap()
        .1
        .clone();
    let Some((_, x5c)) = stmt
        .as_map()
        .unwrap()
        .iter()
        .find(|(k, _)| k.as_text() == Some("x5c"))
    else {
        return vec![];
    };
    x5c.as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let c = c.as_bytes().unwrap();
            let at = find(att_obj, c).unwrap();
            at..at + c.len()
        })
        .collect()
}

fn spki(cert_der: &[u8]) -> Option<Vec<u8>> {
    Certificate::from_der(cert_der)
        .ok()?
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .ok()
}

/// Returns why an accepted corrupted registration is acceptable, or None if it is not.
fn allowed_registration_acceptance(
    case: &Case,
    shipped_root: bool,
    field: Field,
    pos: usize,
    original: &[u8],
    mutated: &[u8],
    reg: &Registration,
) -> Option<&'static str> {
    let Kind::Registration(resp) = &case.kind else {
        return None;
    };
    let att_obj = base64url_decode(&resp.response.attestation_object).unwrap();
    let peek = peek_attestation(&att_obj).unwrap();
    match field {
        Field::ClientDataJson => {
            // `none`: nothing signs clientDataJSON. A flip is harmless exactly when the
            // members the verifier checks are unchanged (e.g. inside "extraData", or renaming
            // "crossOrigin": false away, which means the same).
            (peek.fmt == "none" && checked_client_data(original) == checked_client_data(mutated))
                .then_some("none: clientDataJSON is unsigned and its checked members are unchanged")
        }
        Field::AttestationObject => {
            let ad = find(&att_obj, &peek.auth_data).unwrap();
            let cred_len =
                usize::from(u16::from_be_bytes([peek.auth_data[53], peek.auth_data[54]]));
            let key_start = ad + 55 + cred_len;
            let key = key_start..key_start + peek.cose_key.len();
            // flags (32), signCount (33..37), AAGUID (37..53) of authenticatorData.
            let header = ad + 32..ad + 53;
            if peek.fmt == "none" && header.contains(&pos) {
                // Nothing signs a `none` registration's authenticator data; the flags were
                // re-checked against policy and the counter and AAGUID are reported as sent.
                return Some("none: unsigned flags/counter/AAGUID");
            }
            if peek.fmt == "none" && key.contains(&pos) && reg.public_key == mutated[key.clone()] {
                // Nothing attests the key of a `none` registration; the verifier validated the
                // (different) key and returns exactly it, so it will verify nothing the
                // authenticator signs.
                return Some("none: unattested public key, validated and returned as sent");
            }
            let extensions = key.end..ad + peek.auth_data.len();
            if peek.fmt == "none" && extensions.contains(&pos) {
                // Unsigned extension outputs of a `none` registration: tapgate uses none of
                // them; they must only stay one well-formed CBOR map.
                return Some("none: unsigned, unused extension outputs");
            }
            if peek.fmt == "fido-u2f" && header.contains(&pos) {
                // U2F signs 0x00 || rpIdHash || clientDataHash || credentialId || point, not the
                // flags, counter or AAGUID.
                return Some("fido-u2f: flags/counter/AAGUID are outside the U2F signature");
            }
            let ranges = x5c_ranges(original);
            for (i, r) in ranges.iter().enumerate() {
                if !r.contains(&pos) {
                    continue;
                }
                let returned = match &reg.attestation {
                    AttestationKind::Basic { x5c } => x5c.get(i).cloned(),
                    _ => None,
                };
                if returned.as_deref() != Some(&mutated[r.clone()]) {
                    return None;
                }
                if shipped_root {
                    // The chain still verified to a shipped root: only a certificate the
                    // path does not use may differ, i.e. the copy of the root itself that
                    // some authenticators append (the store's copy is the one used).
                    let is_root_copy = TrustStore::builtin()
                        .verify(&[original[r.clone()].to_vec()], case.now)
                        .is_ok();
                    return is_root_copy.then_some(
                        "x5c: the root's own copy in x5c is not used (the store's copy is)",
                    );
                }
                // Test CAs: certificate fields other than the key and the checked leaf
                // requirements (serial, issuer, the issuer's signature, ...) are covered only by
                // chain validation to the test CA, which is not a shipped root. The signing key
                // must be unchanged.
                if i > 0 || spki(&mutated[r.clone()]) == spki(&original[r.clone()]) {
                    return Some(
                        "x5c (test CA, no shipped root): certificate bytes outside the key and \
                         leaf requirements, covered only by chain validation",
                    );
                }
            }
            None
        }
        _ => None,
    }
}

/// Does the case's registration carry a chain that verifies to a shipped root at its time?
fn chains_to_shipped_root(case: &Case, store: &TrustStore) -> bool {
    let Kind::Registration(resp) = &case.kind else {
        return false;
    };
    let rp = RelyingParty {
        id: case.rp_ids[0].clone(),
        origins: case.origins.clone(),
        user_verification: case.uv,
    };
    match verify_registration(&rp, &case.challenge, resp, case.now).map(|r| r.attestation) {
        Ok(AttestationKind::Basic { x5c }) => store.verify(&x5c, case.now).is_ok(),
        _ => false,
    }
}

#[test]
fn single_byte_corruptions_are_refused() {
    let cases = good_cases();
    let store = TrustStore::builtin();
    let mut refused_by_chain = 0usize;
    let mut tried = 0usize;
    let mut allowed: std::collections::BTreeMap<&str, usize> = Default::default();
    let mut failures = Vec::new();
    for case in &cases {
        let shipped_root = chains_to_shipped_root(case, &store);
        for &field in fields_of(case) {
            let original = field_bytes(case, field);
            for pos in positions(original.len()) {
                let mut mutated = original.clone();
                mutated[pos] ^= mask(pos);
                let m = with_field(case, field, &mutated);
                tried += 1;
                let rp = RelyingParty {
                    id: case.rp_ids[0].clone(),
                    origins: case.origins.clone(),
                    user_verification: case.uv,
                };
                // Cases with several RP ids pass with the first one (the matching one).
                let verdict = match &m.kind {
                    Kind::Registration(resp) => {
                        match verify_registration(&rp, &m.challenge, resp, m.now) {
                            Ok(reg) => match &reg.attestation {
                                // Accepted by registration: the trust store has the last word.
                                AttestationKind::Basic { x5c }
                                    if shipped_root && store.verify(x5c, m.now).is_err() =>
                                {
                                    refused_by_chain += 1;
                                    Ok(())
                                }
                                _ => Err(allowed_registration_acceptance(
                                    case,
                                    shipped_root,
                                    field,
                                    pos,
                                    &original,
                                    &mutated,
                                    &reg,
                                )),
                            },
                            Err(_) => Ok(()),
                        }
                    }
                    Kind::Authentication {
                        response,
                        stored_id,
                        public_key,
                        sign_count,
                        backup_eligible,
                    } => {
                        let stored = StoredCredential {
                            id: stored_id,
                            public_key,
                            sign_count: *sign_count,
                            backup_eligible: *backup_eligible,
                        };
                        // Every byte of clientDataJSON and authenticatorData is signed, and
                        // any change to a signature invalidates it: nothing is allowed.
                        match verify_authentication(&rp, &m.challenge, response, &stored, m.now) {
                            Ok(_) => Err(None),
                            Err(_) => Ok(()),
                        }
                    }
                };
                match verdict {
                    Ok(()) => {}
                    Err(Some(why)) => *allowed.entry(why).or_default() += 1,
                    Err(None) => failures.push(format!(
                        "{} / {}: {field:?} byte {pos} ^ {:#04x} was accepted",
                        case.file,
                        case.name,
                        mask(pos)
                    )),
                }
            }
        }
    }
    println!("{tried} corruptions of {} good vectors", cases.len());
    println!(
        "  refused by chain validation to a shipped root (registration alone accepts them): \
         {refused_by_chain}"
    );
    for (why, n) in &allowed {
        println!("  accepted by design {n}: {why}");
    }
    assert!(
        failures.is_empty(),
        "{} corruption(s) accepted:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(tried > 10_000);
}
