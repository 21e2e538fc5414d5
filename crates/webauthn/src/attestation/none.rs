//! `none` attestation (§8.7): the authenticator proves nothing about itself.

use super::Statement;
use crate::{AttestationKind, Error};

pub(super) fn verify(stmt: &Statement) -> Result<AttestationKind, Error> {
    // The statement must be empty: anything there would be unverified data a later reader
    // might mistake for proof.
    if !stmt.is_empty() {
        return Err(Error::AttestationStatementMalformed {
            fmt: "none",
            detail: format!(
                "the statement must be empty but has {}",
                stmt.keys().collect::<Vec<_>>().join(", ")
            ),
        });
    }
    Ok(AttestationKind::None)
}
