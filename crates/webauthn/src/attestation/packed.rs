//! `packed` attestation (§8.2): self attestation (signed by the new credential's own key) or
//! basic attestation (signed by a certificate's key, the x5c leaf).

use super::certificate::AttestationCertificate;
use super::{Context, Statement, alg_field, sig, verify_with_certificate, x5c};
use crate::{AttestationKind, Error};

const FMT: &str = "packed";

pub(super) fn verify(stmt: &Statement, ctx: &Context<'_>) -> Result<AttestationKind, Error> {
    let bad = |detail: &str| Error::AttestationStatementMalformed {
        fmt: FMT,
        detail: detail.into(),
    };
    let alg = alg_field(stmt, FMT)?;
    let sig = sig(stmt, FMT)?;
    if stmt.get("ecdaaKeyId").is_some() {
        // ECDAA was removed from WebAuthn Level 2 on; nobody ships it.
        return Err(bad("ECDAA attestation is not supported"));
    }
    // The signature covers authenticatorData || SHA-256(clientDataJSON).
    let signed = [ctx.auth_data_raw, ctx.client_data_hash].concat();

    match x5c(stmt, FMT)? {
        Some(chain) => {
            let leaf_der = chain.first().ok_or_else(|| bad("x5c is empty"))?;
            let leaf = AttestationCertificate::parse(leaf_der)?;
            // The rest of the chain is checked by `TrustStore::verify`; it must at least be
            // certificates.
            for c in chain.iter().skip(1) {
                AttestationCertificate::parse(c)?;
            }
            verify_with_certificate(&leaf, alg, false, &signed, sig, FMT)?;
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
