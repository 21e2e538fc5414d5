//! `packed` attestation (§8.2): self attestation (signed by the new credential's own key) or
//! basic attestation (signed by a certificate's key, the x5c leaf).

use ciborium::Value;

use super::certificate::AttestationCertificate;
use super::{Context, Statement, sig, x5c};
use crate::cose::{Alg, PublicKey};
use crate::{AttestationKind, Error};

const FMT: &str = "packed";

pub(super) fn verify(stmt: &Statement, ctx: &Context<'_>) -> Result<AttestationKind, Error> {
    let bad = |detail: &str| Error::AttestationStatementMalformed {
        fmt: FMT,
        detail: detail.into(),
    };
    let alg = match stmt.get("alg") {
        Some(Value::Integer(i)) => i64::try_from(*i).map_err(|_| bad("alg is out of range"))?,
        Some(_) => return Err(bad("alg is not an integer")),
        None => return Err(bad("alg is missing")),
    };
    let sig = sig(stmt, FMT)?;
    if stmt.get("ecdaaKeyId").is_some() {
        // ECDAA was removed from WebAuthn Level 2 on; nobody ships it.
        return Err(bad("ECDAA attestation is not supported"));
    }
    // The signature covers authenticatorData || SHA-256(clientDataJSON).
    let signed = [ctx.auth_data_raw, ctx.client_data_hash].concat();

    match x5c(stmt, FMT)? {
        Some(chain) => {
            let alg = Alg::from_cose(alg).ok_or(Error::AlgorithmUnsupported { alg: Some(alg) })?;
            let leaf_der = chain.first().ok_or_else(|| bad("x5c is empty"))?;
            let leaf = AttestationCertificate::parse(leaf_der)?;
            // The rest of the chain is returned for the caller's trust policy; it must at
            // least be certificates.
            for c in chain.iter().skip(1) {
                AttestationCertificate::parse(c)?;
            }
            let key = PublicKey::from_spki(leaf.spki_der(), alg).map_err(|()| {
                Error::AttestationCertificateInvalid {
                    detail: format!(
                        "its public key does not fit the statement's algorithm {}",
                        alg.cose()
                    ),
                }
            })?;
            key.verify(&signed, sig)
                .map_err(|()| Error::AttestationSignatureInvalid { fmt: FMT })?;
            let aaguid = ctx
                .auth_data
                .attested
                .as_ref()
                .map(|a| a.aaguid)
                .unwrap_or_default();
            leaf.check_packed_leaf(&aaguid)?;
            leaf.check_validity(ctx.now)?;
            Ok(AttestationKind::Basic { x5c: chain })
        }
        None => {
            // Self attestation: the statement must name the credential's own algorithm.
            let key_alg = ctx.credential_key.alg().cose();
            if alg != key_alg {
                return Err(Error::AttestationAlgorithmMismatch {
                    statement_alg: alg,
                    key_alg,
                });
            }
            ctx.credential_key
                .verify(&signed, sig)
                .map_err(|()| Error::AttestationSignatureInvalid { fmt: FMT })?;
            Ok(AttestationKind::SelfAttestation)
        }
    }
}
