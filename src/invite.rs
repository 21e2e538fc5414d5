//! Invites: a single-use, expiring link that lets a person register a key
//! for a given email and roles. Only the token's SHA-256 is stored; the
//! token itself exists in the printed URL alone.

use crate::model::{Email, Role};
use crate::store::{InviteRecord, Store, StoreError};
use std::time::Duration;

pub struct NewInvite {
    pub url: String,
    pub expires: u64,
}

pub async fn create(
    store: &dyn Store,
    public_origin: &str,
    email: Email,
    roles: Vec<Role>,
    ttl: Duration,
    created_by: &str,
    now: u64,
) -> Result<NewInvite, StoreError> {
    let token = crate::crypto::random_token(32);
    let expires = now + ttl.as_secs();
    store
        .create_invite(&InviteRecord {
            token_hash: crate::crypto::sha256_hex(token.as_bytes()),
            email,
            roles,
            created: now,
            expires,
            created_by: created_by.to_owned(),
            used_at: None,
        })
        .await?;
    Ok(NewInvite {
        url: format!("{public_origin}/.tapgate/register?invite={token}"),
        expires,
    })
}

/// A QR code of `text` for the terminal (two rows per character).
pub fn terminal_qr(text: &str) -> Option<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::unicode::Dense1x2>()
            .quiet_zone(true)
            .build(),
    )
}
