//! Invites: a single-use, expiring link that lets a person register a key
//! for a given email and roles — or, for a recovery invite, add a key to an
//! existing account. Only the token's SHA-256 is stored; the token itself
//! exists in the printed URL alone.

use crate::model::{Email, Role};
use crate::store::{InviteRecord, Store, StoreError, UserRecord};
use std::time::Duration;

pub struct NewInvite {
    pub url: String,
    pub expires: u64,
    /// The stored id of the invite (SHA-256 hex of its token), for
    /// listing and cancelling.
    pub id: String,
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
    let id = crate::crypto::sha256_hex(token.as_bytes());
    let expires = now + ttl.as_secs();
    store
        .create_invite(&InviteRecord::new(
            id.clone(),
            email,
            roles,
            now,
            expires,
            created_by,
        ))
        .await?;
    Ok(NewInvite {
        url: url(public_origin, &token),
        expires,
        id,
    })
}

/// A recovery invite: registering with it adds a key to `user` (who keeps
/// their subject, roles and history); with `revoke_other_keys` the user's
/// other keys are revoked in the same transaction.
pub async fn create_recovery(
    store: &dyn Store,
    public_origin: &str,
    user: &UserRecord,
    revoke_other_keys: bool,
    ttl: Duration,
    created_by: &str,
    now: u64,
) -> Result<NewInvite, StoreError> {
    let token = crate::crypto::random_token(32);
    let id = crate::crypto::sha256_hex(token.as_bytes());
    let expires = now + ttl.as_secs();
    let mut record = InviteRecord::new(
        id.clone(),
        user.email.clone(),
        user.roles.clone(),
        now,
        expires,
        created_by,
    );
    record.subject = Some(user.subject.clone());
    record.revoke_other_keys = revoke_other_keys;
    store.create_invite(&record).await?;
    Ok(NewInvite {
        url: url(public_origin, &token),
        expires,
        id,
    })
}

fn url(public_origin: &str, token: &str) -> String {
    format!("{public_origin}/.tapgate/register?invite={token}")
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

/// A QR code of `text` as an SVG image in a `data:` URL, for an `<img>` on
/// our pages (the CSP allows `img-src data:`; no script, no inline style).
/// One path of unit squares, with the standard 4-module quiet zone.
pub fn svg_data_url(text: &str) -> Option<String> {
    use base64::Engine as _;
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    let width = code.width();
    let colors = code.to_colors();
    let size = width + 8;
    // One rectangle per horizontal run of dark modules.
    let mut path = String::new();
    for (y, row) in colors.chunks(width).enumerate() {
        let mut x = 0;
        while x < width {
            if row[x] != qrcode::Color::Dark {
                x += 1;
                continue;
            }
            let run = row[x..]
                .iter()
                .take_while(|c| **c == qrcode::Color::Dark)
                .count();
            path.push_str(&format!("M{} {}h{run}v1h-{run}z", x + 4, y + 4));
            x += run;
        }
    }
    let svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {size} {size}\" \
         shape-rendering=\"crispEdges\"><rect width=\"{size}\" height=\"{size}\" fill=\"#fff\"/>\
         <path d=\"{path}\" fill=\"#000\"/></svg>"
    );
    Some(format!(
        "data:image/svg+xml;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(svg)
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn svg_qr_is_a_data_url_of_an_svg_image() {
        let url =
            super::svg_data_url("http://localhost:8080/.tapgate/register?invite=abc").unwrap();
        let b64 = url.strip_prefix("data:image/svg+xml;base64,").unwrap();
        use base64::Engine as _;
        let svg = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        )
        .unwrap();
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(
            svg.contains("<path d=\"M4 4h7v1h-7z"),
            "finder pattern at the corner"
        );
        assert!(!svg.contains("<script") && !svg.contains("style"));
    }
}
