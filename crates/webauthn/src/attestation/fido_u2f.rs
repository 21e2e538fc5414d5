//! `fido-u2f` attestation (§8.6): what CTAP1/U2F security keys produce.
//!
//! The U2F signature covers `0x00 || rpIdHash || clientDataHash || credentialId || publicKey`,
//! not the whole authenticator data: flags and counter are not attested by this format.

use super::certificate::AttestationCertificate;
use super::{Context, Statement, sig, x5c};
use crate::cose::{Alg, PublicKey};
use crate::{AttestationKind, Error};

const FMT: &str = "fido-u2f";

pub(super) fn verify(stmt: &Statement, ctx: &Context<'_>) -> Result<AttestationKind, Error> {
    let bad = |detail: &str| Error::AttestationStatementMalformed {
        fmt: FMT,
        detail: detail.into(),
    };
    let sig = sig(stmt, FMT)?;
    let chain = x5c(stmt, FMT)?.ok_or_else(|| bad("x5c is missing"))?;
    let [leaf_der] = chain.as_slice() else {
        return Err(bad("x5c must hold exactly one certificate"));
    };
    let leaf = AttestationCertificate::parse(leaf_der)?;
    let not_p256 = || Error::AttestationCertificateInvalid {
        detail: "its key is not an EC P-256 key".into(),
    };
    if !leaf.key_fits(Alg::Es256.cose()) {
        return Err(not_p256());
    }
    let cert_key = PublicKey::from_spki(leaf.spki_der(), Alg::Es256).map_err(|()| not_p256())?;

    let attested = ctx
        .auth_data
        .attested
        .as_ref()
        .ok_or(Error::AttestedCredentialDataMissing)?;
    // The AAGUID is not checked: U2F devices have none and clients usually send zeros, but
    // §8.6 does not require it (the W3C vector carries a random one), and the U2F signature
    // does not cover it, so for this format it proves nothing either way.
    let point = match (ctx.credential_key.alg(), ctx.credential_key.sec1_point()) {
        (Alg::Es256, Some(p)) => p,
        _ => {
            return Err(Error::PublicKeyInvalid {
                detail: "a fido-u2f credential must be an ES256 (P-256) key".into(),
            });
        }
    };
    let signed = [
        &[0x00],
        ctx.auth_data.rp_id_hash,
        ctx.client_data_hash,
        attested.credential_id,
        point,
    ]
    .concat();
    cert_key
        .verify(&signed, sig)
        .map_err(|()| Error::AttestationSignatureInvalid { fmt: FMT })?;
    leaf.check_validity(ctx.now)?;
    Ok(AttestationKind::Basic { x5c: chain })
}
